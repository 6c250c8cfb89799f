package imagebuild

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Recipe is what a two-stage Dockerfile says, as far as this package follows it.
type Recipe struct {
	// File is the Dockerfile's path, for messages.
	File string
	// Build is the first stage: it makes the artifacts.
	Build Stage
	// Final is the last stage: the image that runs.
	Final Stage
}

// Stage is one FROM and the instructions under it.
type Stage struct {
	// From is the base image, Name its AS name.
	From, Name string
	// Steps are the stage's instructions in order.
	Steps []Step
	// User, Entrypoint and Expose are the config instructions (the last of each wins).
	User       string
	Entrypoint []string
	Expose     []string
}

// Step is an instruction of a stage that does work: WORKDIR, ARG, COPY or RUN.
type Step struct {
	// Op is the instruction in lower case.
	Op string
	// Args are its words; for RUN one string, the shell command.
	Args []string
	// From is COPY's --from stage.
	From string
	// Line is where it starts in the Dockerfile.
	Line int
}

// ReadDockerfile reads a Dockerfile with BuildKit's parser and keeps what a build on the host
// needs. An instruction it cannot follow is an error naming its line, so the Dockerfile
// cannot grow a step the tests silently skip.
func ReadDockerfile(file string) (*Recipe, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("reading the Dockerfile: %w", err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var stages []*Stage
	for _, n := range res.AST.Children {
		op, args := strings.ToLower(n.Value), words(n)
		if op == "from" {
			st := &Stage{From: args[0]}
			if len(args) == 3 && strings.EqualFold(args[1], "as") {
				st.Name = args[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			return nil, fmt.Errorf("%s:%d: %s before the first FROM", file, n.StartLine, n.Value)
		}
		if err := stages[len(stages)-1].add(op, args, n); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, n.StartLine, err)
		}
	}
	if len(stages) != 2 {
		return nil, fmt.Errorf("%s: %d stages; imagebuild follows a build stage and a final stage", file, len(stages))
	}
	return &Recipe{File: file, Build: *stages[0], Final: *stages[1]}, nil
}

func (st *Stage) add(op string, args []string, n *parser.Node) error {
	step := Step{Op: op, Args: args, Line: n.StartLine}
	switch op {
	case "workdir", "arg", "run":
	case "copy":
		for _, fl := range n.Flags {
			from, ok := strings.CutPrefix(fl, "--from=")
			if !ok {
				return fmt.Errorf("COPY %s: flag not followed by imagebuild", fl)
			}
			step.From = from
		}
		if len(args) < 2 {
			return fmt.Errorf("COPY needs a source and a destination")
		}
	case "user":
		st.User = args[0]
		return nil
	case "expose":
		st.Expose = args
		return nil
	case "entrypoint":
		if !n.Attributes["json"] {
			return fmt.Errorf("ENTRYPOINT in shell form: the image has no shell, use the JSON form")
		}
		st.Entrypoint = args
		return nil
	default:
		return fmt.Errorf("%s is not followed by imagebuild: teach internal/imagebuild, or build with Docker", strings.ToUpper(op))
	}
	st.Steps = append(st.Steps, step)
	return nil
}

// words are an instruction's arguments; a shell-form RUN is one string.
func words(n *parser.Node) []string {
	var out []string
	for a := n.Next; a != nil; a = a.Next {
		out = append(out, a.Value)
	}
	return out
}

// Config is the final stage's runtime config as the image carries it.
func (r *Recipe) Config() (user string, entrypoint, ports []string) {
	for _, p := range r.Final.Expose {
		if !strings.Contains(p, "/") {
			p += "/tcp"
		}
		ports = append(ports, p)
	}
	return r.Final.User, r.Final.Entrypoint, ports
}

// String shows the recipe's steps, for test failures.
func (r *Recipe) String() string {
	b, _ := json.MarshalIndent(r, "", "  ")
	return string(b)
}
