package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"helm.sh/helm/v4/pkg/strvals"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/render"
	"github.com/deployd/deployd/internal/source"
)

// renderCmd prints the objects deployd would apply for a manifests directory of a local
// checkout: the same renderers, sandbox and limits as a deployment, without a cluster.
func renderCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("deployd render", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", ".", "the repo's top directory: paths below are relative to it")
	dir := fs.String("dir", config.DefaultPath, "the manifests path in the repo, as repos.yaml's path")
	env := fs.String("environment", "", "environment: replaces {environment} and picks a chart's values-{environment}.yaml")
	ns := fs.String("namespace", "default", "the namespace deployd would apply to (a chart's .Release.Namespace)")
	release := fs.String("release-name", "", "a chart's .Release.Name (default: the root directory's name)")
	var values []string
	fs.Func("values", "a values file in the repo for a chart, after values-{environment}.yaml (repeatable)", func(s string) error {
		values = append(values, s)
		return nil
	})
	set := map[string]any{}
	fs.Func("set", "a chart value, key=value as in helm --set, applied last (repeatable)", func(s string) error {
		return strvals.ParseInto(s, set)
	})
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: deployd render [--root .] [--dir deploy/manifests] [--environment E] [--namespace N] [--release-name R] [--values F]... [--set K=V]...\n\n"+
			"Prints the objects deployd would apply from a local checkout: plain files, a kustomization or a\n"+
			"Helm chart, rendered with the same limits and sandbox. A chart sees Helm's default .Capabilities.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	repo := config.Repo{Name: "local/" + filepath.Base(absPath(*root)), Environment: *env, Namespace: *ns, ReleaseName: *release, Values: values, Settings: config.Settings{Path: *dir}}
	files, err := localFiles(*root, repo.ManifestPath())
	if err != nil {
		return err
	}
	opts := render.Options{Limits: render.DefaultLimits(), Environment: *env, Namespace: *ns, ReleaseName: repo.HelmReleaseName(), Values: values, Set: set}
	rctx, cancel := context.WithTimeout(ctx, render.DefaultTimeout)
	defer cancel()
	res, err := render.RenderWith(rctx, files, repo.ManifestPath(), opts)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return &ExitError{Code: 1}
	}
	return printObjects(stdout, res)
}

func absPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// printObjects writes res's objects as YAML documents, each after a comment saying
// where it came from.
func printObjects(w io.Writer, res render.Result) error {
	what := res.Renderer
	if c := res.Chart; c != nil {
		what += fmt.Sprintf(" chart %s %s", c.Name, c.Version)
	}
	fmt.Fprintf(w, "# rendered by %s: %d object(s)\n", what, len(res.Objects))
	for _, o := range res.Objects {
		y, err := sigsyaml.Marshal(o.Object)
		if err != nil {
			return fmt.Errorf("%s: %w", o, err)
		}
		fmt.Fprintf(w, "---\n# Source: %s\n%s", o.Source, y)
	}
	return nil
}

// localFiles reads dir of the checkout at root as deployd reads a commit: the files
// under dir, or the whole repo when dir holds a kustomization or a chart (which may
// reach files elsewhere in it), within source.DefaultLimits. Symlinks are left out.
func localFiles(root, dir string) (map[string][]byte, error) {
	lim := source.DefaultLimits()
	files, err := readLocalTree(root, dir, lim)
	if err != nil {
		return nil, err
	}
	if render.IsChart(files, dir) || render.IsKustomization(files, dir) {
		lim.MaxFiles *= 10
		return readLocalTree(root, ".", lim)
	}
	return files, nil
}

func readLocalTree(root, dir string, lim source.Limits) (map[string][]byte, error) {
	files := map[string][]byte{}
	var total int64
	err := filepath.WalkDir(filepath.Join(root, filepath.FromSlash(dir)), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.Size() > lim.MaxFileBytes {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if total += info.Size(); total > lim.MaxTotalBytes || len(files) >= lim.MaxFiles {
			return &source.LimitError{Dir: dir, Files: len(files) + 1, Bytes: total, Limits: lim}
		}
		data, err := os.ReadFile(p)
		files[path.Clean(filepath.ToSlash(rel))] = data
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no such directory under %s", dir, root)
	}
	return files, err
}
