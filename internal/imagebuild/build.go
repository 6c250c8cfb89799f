package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// BuildOptions say where the build stage runs on the host.
type BuildOptions struct {
	// Context is the build context: the repository's root.
	Context string
	// Root stands for the build stage's filesystem: WORKDIR /src is Root/src, and the
	// artifacts the final stage copies from /out land in Root/out.
	Root string
	// Args override the Dockerfile's ARG defaults (VERSION, COMMIT).
	Args map[string]string
	// Output receives the RUN steps' output, for progress; discarded when nil.
	Output io.Writer
}

// RunBuildStage runs the recipe's build stage on the host: each COPY takes what the
// context's .dockerignore admits, each RUN runs under sh in the mapped WORKDIR with the
// ARGs declared so far. Absolute paths the final stage copies from are mapped into Root.
func RunBuildStage(ctx context.Context, r *Recipe, opts BuildOptions) error {
	if err := checkGo(ctx, r.Build.From); err != nil {
		return err
	}
	ignore, err := readIgnore(opts.Context)
	if err != nil {
		return err
	}
	b := &builder{r: r, opts: opts, ignore: ignore, workdir: "/", args: map[string]string{}}
	for _, s := range r.Build.Steps {
		if err := b.step(ctx, s); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", r.File, s.Line, strings.ToUpper(s.Op), err)
		}
	}
	return nil
}

type builder struct {
	r       *Recipe
	opts    BuildOptions
	ignore  *patternmatcher.PatternMatcher
	workdir string
	args    map[string]string
}

func (b *builder) step(ctx context.Context, s Step) error {
	switch s.Op {
	case "workdir":
		b.workdir = path.Join(b.workdir, s.Args[0])
		return os.MkdirAll(b.host(b.workdir), 0o755)
	case "arg":
		for _, a := range s.Args {
			k, v, _ := strings.Cut(a, "=")
			if o, ok := b.opts.Args[k]; ok {
				v = o
			}
			b.args[k] = v
		}
		return nil
	case "copy":
		if s.From != "" {
			return errors.New("COPY --from in the build stage is not followed by imagebuild")
		}
		return b.copyStep(s.Args)
	case "run":
		return b.run(ctx, s.Args[0])
	}
	return fmt.Errorf("not followed")
}

// host maps a path of the build stage to the host.
func (b *builder) host(p string) string {
	if !path.IsAbs(p) {
		p = path.Join(b.workdir, p)
	}
	return filepath.Join(b.opts.Root, filepath.FromSlash(p))
}

func (b *builder) copyStep(args []string) error {
	srcs, dst := args[:len(args)-1], args[len(args)-1]
	intoDir := len(srcs) > 1 || strings.HasSuffix(dst, "/")
	for _, src := range srcs {
		if strings.ContainsAny(src, "*?[") {
			return fmt.Errorf("%s: wildcards are not followed by imagebuild", src)
		}
		src = path.Clean(src)
		info, err := os.Stat(filepath.Join(b.opts.Context, filepath.FromSlash(src)))
		if err != nil {
			return fmt.Errorf("%s: not in the build context: %w", src, err)
		}
		target := dst
		if !info.IsDir() && intoDir {
			target = path.Join(dst, path.Base(src))
		}
		n, err := b.copyTree(src, b.host(target), info.IsDir())
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%s: excluded by .dockerignore, so not in the build context (add !%s/ to .dockerignore)", src, src)
		}
	}
	return nil
}

// copyTree copies src (a context path) to dst on the host, leaving out what .dockerignore
// excludes, and counts the files copied.
func (b *builder) copyTree(src, dst string, isDir bool) (int, error) {
	n := 0
	root := filepath.Join(b.opts.Context, filepath.FromSlash(src))
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(b.opts.Context, p)
		rel = filepath.ToSlash(rel)
		excluded, err := b.ignore.MatchesOrParentMatches(rel)
		if err != nil {
			return fmt.Errorf(".dockerignore: %w", err)
		}
		if d.IsDir() {
			if excluded && !b.ignore.Exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		if excluded || !d.Type().IsRegular() {
			return nil
		}
		target := dst
		if isDir {
			inner, _ := filepath.Rel(root, p)
			target = filepath.Join(dst, inner)
		}
		n++
		return copyFile(p, target)
	})
	if err != nil {
		return n, fmt.Errorf("%s: %w", src, err)
	}
	return n, nil
}

func copyFile(from, to string) error {
	info, err := os.Stat(from)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	return os.WriteFile(to, data, info.Mode().Perm())
}

func (b *builder) run(ctx context.Context, command string) error {
	for _, dir := range b.r.artifactDirs() {
		re := regexp.MustCompile(`(^|[\s="'])` + regexp.QuoteMeta(dir) + `(/|$|[\s"'])`)
		command = re.ReplaceAllString(command, "${1}"+filepath.Join(b.opts.Root, dir)+"${2}")
		if err := os.MkdirAll(filepath.Join(b.opts.Root, dir), 0o755); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Dir = b.host(b.workdir)
	cmd.Env = os.Environ()
	for k, v := range b.args {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := b.opts.Output
	if out == nil {
		out = io.Discard
	}
	var tail tailWriter
	cmd.Stdout, cmd.Stderr = io.MultiWriter(out, &tail), io.MultiWriter(out, &tail)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w\n%s", err, tail.String())
	}
	return nil
}

// artifactDirs are the top directories the final stage copies from the build stage ("/out").
func (r *Recipe) artifactDirs() []string {
	var dirs []string
	for _, s := range r.Final.Steps {
		if s.Op != "copy" || s.From == "" {
			continue
		}
		for _, src := range s.Args[:len(s.Args)-1] {
			if top := strings.SplitN(strings.TrimPrefix(src, "/"), "/", 2)[0]; path.IsAbs(src) && top != "" {
				dirs = append(dirs, "/"+top)
			}
		}
	}
	return dirs
}

// checkGo makes sure the host's Go is the one the build stage's golang image carries.
func checkGo(ctx context.Context, from string) error {
	want, ok := strings.CutPrefix(from, "golang:")
	if !ok {
		return fmt.Errorf("build stage FROM %s: imagebuild follows golang images only", from)
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output()
	if err != nil {
		return fmt.Errorf("finding the host's Go for the build stage: %w", err)
	}
	have := strings.TrimSpace(string(out))
	if have != "go"+want && !strings.HasPrefix(have, "go"+want+".") {
		return fmt.Errorf("the Dockerfile builds with %s but this machine has %s: install Go %s or change the Dockerfile", from, have, want)
	}
	return nil
}

func readIgnore(contextDir string) (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(filepath.Join(contextDir, ".dockerignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return patternmatcher.New(nil)
	}
	if err != nil {
		return nil, fmt.Errorf("reading .dockerignore: %w", err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	return pm, nil
}

// tailWriter keeps the last few KiB a command printed, for its error.
type tailWriter struct{ b []byte }

func (t *tailWriter) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - 4096; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tailWriter) String() string { return string(t.b) }
