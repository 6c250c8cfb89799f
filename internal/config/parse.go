package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/deployd/deployd/internal/yamlsyntax"
)

// Options control how a config file is read.
type Options struct {
	// DefaultEnvironment is the environment of repos that set none (deployd's --environment).
	DefaultEnvironment string
	// GitHub says deployd reports to GitHub: only then may promoteFrom name an
	// environment no entry of the file has (another cluster's deployd, asked through
	// GitHub's deployment statuses).
	GitHub bool
}

// DefaultOptions returns the options deployd uses when no flag says otherwise.
func DefaultOptions() Options {
	return Options{DefaultEnvironment: "production"}
}

// Load reads and validates the config file at path.
func Load(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data, opts)
}

// Parse validates data, the content of the config file named file. On failure the
// error is an *Error listing every problem found.
func Parse(file string, data []byte, opts Options) (*Config, error) {
	p := &parser{file: file, dir: filepath.Dir(file), opts: opts}
	cfg := p.parse(data)
	if len(p.problems) > 0 {
		sort.SliceStable(p.problems, func(i, j int) bool { return p.problems[i].Line < p.problems[j].Line })
		return nil, &Error{Problems: p.problems}
	}
	return cfg, nil
}

type parser struct {
	file     string
	dir      string
	opts     Options
	problems []Problem
	// promotionNode is the current repo entry's promotion value, for its line.
	promotionNode *yaml.Node
}

func (p *parser) add(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.problems = append(p.problems, Problem{File: p.file, Line: line, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (p *parser) syntaxError(data []byte, err error) {
	e := yamlsyntax.Explain(data, err)
	p.problems = append(p.problems, Problem{File: p.file, Line: e.Line, Message: "YAML syntax error: " + e.Message})
}

func (p *parser) parse(data []byte) *Config {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.add(nil, "", "file is empty: it needs a repos: list (see the commented repos.yaml in deployd's repository)")
		} else {
			p.syntaxError(data, err)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.add(&extra, "", "a second YAML document: repos.yaml holds one document; remove the '---' and what follows, or merge it")
	} else if !errors.Is(err, io.EOF) {
		p.syntaxError(data, err)
	}
	root := deref(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = deref(root.Content[0])
	}
	cfg := &Config{File: p.file, Defaults: Settings{
		Branch: DefaultBranch, Path: DefaultPath, Interval: DefaultInterval, Timeout: DefaultTimeout, Prune: DefaultPrune, DriftInterval: DefaultDriftInterval,
	}}
	var reposNode *yaml.Node
	p.mapping(root, "", map[string]func(k, v *yaml.Node){
		"defaults": func(k, v *yaml.Node) { p.settings(v, "defaults", &cfg.Defaults, nil) },
		"repos":    func(k, v *yaml.Node) { reposNode = v },
	})
	if reposNode == nil {
		if root.Kind == yaml.MappingNode {
			p.add(root, "repos", "missing: list the repositories to deploy under repos:")
		}
		return cfg
	}
	p.repos(reposNode, cfg)
	return cfg
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// mapping walks a mapping node, calling the handler of each known key and reporting
// unknown and repeated keys.
func (p *parser) mapping(n *yaml.Node, field string, handlers map[string]func(k, v *yaml.Node)) bool {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		what := "the file"
		if field != "" {
			what = field
		}
		p.add(n, field, "%s must be a mapping of fields (key: value), not %s", what, describe(n))
		return false
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		name := join(field, k.Value)
		if line, dup := seen[k.Value]; dup {
			p.add(k, name, "set twice (first at line %d); keep one", line)
			continue
		}
		seen[k.Value] = k.Line
		h, ok := handlers[k.Value]
		if !ok {
			p.add(k, name, "field not known%s; known fields here: %s", suggest(k.Value, handlers), known(handlers))
			continue
		}
		h(k, v)
	}
	return true
}

func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "empty"
		}
		return strconv.Quote(n.Value)
	}
	return "this"
}

func known[T any](handlers map[string]T) string {
	names := make([]string, 0, len(handlers))
	for k := range handlers {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func suggest[T any](got string, handlers map[string]T) string {
	best, bestDist := "", 3
	for name := range handlers {
		if strings.EqualFold(name, got) {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
		if d := levenshtein(strings.ToLower(got), strings.ToLower(name)); d < bestDist || (d == bestDist && name < best) {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// scalar returns a scalar's text, reporting anything else.
func (p *parser) scalar(n *yaml.Node, field, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.add(n, field, "must be %s, not %s", want, describe(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) duration(n *yaml.Node, field string, zeroOK bool, out *time.Duration) {
	s, ok := p.scalar(n, field, "a duration such as 30s, 1m or 1h30m")
	if !ok {
		return
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, numErr := strconv.ParseFloat(s, 64); numErr == nil && s != "0" {
			p.add(n, field, "%q has no unit: write it as a duration such as %ss or %sm", s, s, s)
			return
		}
		p.add(n, field, "%q is not a duration: write it like 30s, 1m or 1h30m", s)
		return
	}
	switch {
	case d < 0:
		p.add(n, field, "%s is negative: give a duration of 0 or more", s)
	case d == 0 && !zeroOK:
		p.add(n, field, "must be more than 0 (e.g. 5m)")
	default:
		*out = d
	}
}

func (p *parser) boolean(n *yaml.Node, field string, out *bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		p.add(n, field, "must be true or false, not %s", describe(n))
		return
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		p.add(n, field, "must be true or false, not %s", describe(n))
		return
	}
	*out = b
}
