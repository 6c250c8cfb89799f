package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/deployd/deployd/internal/preview"
	"github.com/deployd/deployd/internal/render"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/pkg/client"
)

// Exit codes of deployd diff, as kubectl diff's.
const (
	diffNone    = 0
	diffChanges = 1
	diffError   = 2
)

// Bounds on the local tree diff uploads, under the API's upload limit: files over the
// deployment's file size limit are left out, as deployd leaves them out of a commit.
const (
	maxUploadFiles = 10_000
	maxUploadBytes = 8 << 20
)

// diffCmd prints what deploying a ref or a local tree would change. Exit codes: 0 no
// changes, 1 changes, 2 an error (the manifests refused, deployd unreachable, usage).
func diffCmd(args []string, stdout, stderr io.Writer) error {
	err := diff(args, stdout, stderr)
	var exit *ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit):
		return err
	}
	fmt.Fprintln(stderr, "deployd:", err)
	return &ExitError{Code: diffError}
}

func diff(args []string, stdout, stderr io.Writer) error {
	fs, cf := newClientFlags("diff", stderr)
	ref := fs.String("ref", "", "the ref to preview (a branch, refs/tags/X or refs/pull/N/head), fetched by deployd from the repo's URL")
	dir := fs.String("dir", "", "a local working tree (the repo's root) to preview: its manifests are uploaded to deployd and rendered there")
	owner, repo, err := parseRepo(fs, args)
	if err != nil {
		return err
	}
	if *ref != "" && *dir != "" {
		return errors.New("give --ref or --dir, not both")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	body := client.DiffJSONRequestBody{}
	if *dir != "" {
		if body.Files, err = localTree(ctx, c, cf, owner, repo, *dir); err != nil {
			return err
		}
	}
	params := &client.DiffParams{Environment: cf.env()}
	if *ref != "" {
		params.Ref = ref
	}
	var res *client.DiffResponse
	if body.Files != nil {
		res, err = c.DiffWithResponse(ctx, owner, repo, params, body)
	} else {
		res, err = c.DiffWithBodyWithResponse(ctx, owner, repo, params, "application/json", http.NoBody)
	}
	if err != nil {
		return fmt.Errorf("reaching deployd at %s: %w", cf.server, err)
	}
	if res.JSON200 == nil {
		return apiError(res.StatusCode(), res.Body)
	}
	var out struct {
		Environments []preview.Result `json:"environments"`
	}
	if err := json.Unmarshal(res.Body, &out); err != nil {
		return fmt.Errorf("reading deployd's answer: %w", err)
	}
	code := diffNone
	for _, r := range out.Environments {
		printPreview(stdout, r)
		switch {
		case r.State != preview.StateDone:
			code = diffError
		case r.Any() && code == diffNone:
			code = diffChanges
		}
	}
	if code != diffNone {
		return &ExitError{Code: code}
	}
	return nil
}

// localTree reads the files of dir deployd would read: those under each environment's
// manifests path, or the whole tree when one holds a kustomization (its bases may be
// anywhere). .git is left out, and so are symlinks and files that are not text.
func localTree(ctx context.Context, c *client.ClientWithResponses, cf *clientFlags, owner, repo, dir string) (map[string]string, error) {
	st, err := c.GetDeploymentWithResponse(ctx, owner, repo, &client.GetDeploymentParams{Environment: cf.env()})
	if err != nil {
		return nil, fmt.Errorf("reaching deployd at %s: %w", cf.server, err)
	}
	if st.JSON200 == nil {
		return nil, apiError(st.StatusCode(), st.Body)
	}
	files, err := readTree(dir)
	if err != nil {
		return nil, err
	}
	var paths []string
	whole := false
	for _, e := range st.JSON200.Environments {
		p := path.Clean(e.Path)
		whole = whole || p == "." || render.IsKustomization(files, p) || render.IsChart(files, p)
		paths = append(paths, p+"/")
	}
	out := map[string]string{}
	for name, content := range files {
		for _, p := range paths {
			if whole || strings.HasPrefix(name, p) {
				out[name] = string(content)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has no files under %s: give the repo's root to --dir", dir, strings.Join(paths, " or "))
	}
	return out, nil
}

// readTree reads dir's text files, by slash-separated path, within the upload bounds.
func readTree(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	var total int64
	maxFile := source.DefaultLimits().MaxFileBytes
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
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
		if err != nil || info.Size() > maxFile {
			return err
		}
		if total += info.Size(); total > maxUploadBytes || len(files) >= maxUploadFiles {
			return fmt.Errorf("%s holds more than %d files or %d MiB: run deployd diff on a tree of manifests, or use --ref", dir, maxUploadFiles, maxUploadBytes>>20)
		}
		b, err := os.ReadFile(p)
		if err != nil || !utf8.Valid(b) {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	return files, nil
}

// printPreview prints an environment's preview, one line per object and field.
func printPreview(w io.Writer, r preview.Result) {
	fmt.Fprintf(w, "%s (namespace %s", r.Environment, r.Namespace)
	if r.Commit != "" {
		fmt.Fprintf(w, ", commit %s", source.ShortSHA(r.Commit))
	}
	fmt.Fprintf(w, "): %s\n", preview.Title(r))
	if r.State != preview.StateDone {
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s:%d: %s: %s\n", p.File, p.Line, p.Object, p.Message)
		}
		if len(r.Problems) == 0 {
			fmt.Fprintf(w, "  %s\n", r.Error)
		}
		return
	}
	for _, o := range r.Added {
		fmt.Fprintf(w, "  + %s  (%s)\n", o.Object, strings.TrimSpace(o.Source+" "+o.Note))
	}
	for _, o := range r.Changed {
		fmt.Fprintf(w, "  ~ %s\n", o.Object)
		for _, f := range o.Fields {
			fmt.Fprintf(w, "      %s: %s → %s\n", f.Path, orNone(f.From), orNone(f.To))
		}
		if o.MoreFields > 0 {
			fmt.Fprintf(w, "      … %d more fields\n", o.MoreFields)
		}
	}
	for _, o := range r.Pruned {
		fmt.Fprintf(w, "  - %s\n", o.Object)
	}
	for _, o := range r.Kept {
		fmt.Fprintf(w, "  = %s kept: %s\n", o.Object, o.Note)
	}
	for _, im := range r.Images {
		fmt.Fprintf(w, "  image %s %s: %s → %s\n", im.Object, im.Container, orNone(im.From), im.To)
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
