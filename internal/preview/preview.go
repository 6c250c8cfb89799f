// Package preview answers what merging a pull request (or pushing a ref, or a local
// tree) would change in the cluster: it renders the manifests with deployd's limits,
// runs a server-side dry run of the whole set as the repo's identity, and compares the
// result with the live objects. Nothing is ever applied from a preview.
package preview

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/deploy"
	"github.com/deployd/deployd/internal/panics"
	"github.com/deployd/deployd/internal/render"
	"github.com/deployd/deployd/internal/source"
)

// Fetcher fetches refs and reads their files (a source.Source of its own, so previews
// never fetch into the cache deployments use).
type Fetcher interface {
	FetchRef(ctx context.Context, repo config.Repo, ref string) (source.Revision, error)
	deploy.Files
}

// DryRunner dry-runs a set (apply.Applier does).
type DryRunner interface {
	DryRun(ctx context.Context, req apply.Request) (apply.DryRunResult, error)
}

var (
	_ Fetcher   = (*source.Source)(nil)
	_ DryRunner = (*apply.Applier)(nil)
)

// The states of a preview of one environment.
const (
	StatePending = "pending"
	StateDone    = "done"
	StateFailed  = "failed"
)

// Result is one environment's preview.
type Result struct {
	Environment string            `json:"environment" doc:"The environment (repos.yaml entry) previewed."`
	Namespace   string            `json:"namespace" doc:"The environment's namespace."`
	Ref         string            `json:"ref,omitempty" doc:"The ref previewed, e.g. refs/pull/7/head; empty for a local tree."`
	Commit      string            `json:"commit,omitempty" doc:"The commit previewed (the pull request's head)."`
	State       string            `json:"state" enum:"pending,done,failed" doc:"pending until the preview ran; failed when the manifests were refused or the preview could not run."`
	Error       string            `json:"error,omitempty" doc:"Why the preview failed."`
	Problems    []ManifestProblem `json:"problems,omitempty" doc:"Each refused manifest, with its file and line."`
	Changes
	Finished time.Time `json:"finished,omitzero" doc:"When the preview ended."`
}

// ManifestProblem is a manifest refused by validation or the dry run.
type ManifestProblem struct {
	File    string `json:"file,omitempty" doc:"The file in the repo."`
	Line    int    `json:"line,omitempty" doc:"The line, from 1."`
	Object  string `json:"object,omitempty" doc:"The object refused."`
	Message string `json:"message" doc:"What is wrong."`
}

// Conclusion is the check's conclusion: "failure" (refused or not run), "neutral" (no
// changes) or "success" (would apply cleanly).
func (r Result) Conclusion() string {
	switch {
	case r.State != StateDone:
		return "failure"
	case !r.Any():
		return "neutral"
	}
	return "success"
}

// Limits bound one preview as a deployment is bounded.
type Limits struct {
	// Files bound the files read (or uploaded).
	Files source.Limits
	// MaxObjects bounds the objects rendered.
	MaxObjects int
}

// DefaultLimits are a deployment's.
func DefaultLimits() Limits {
	return Limits{Files: source.DefaultLimits(), MaxObjects: deploy.DefaultMaxObjects}
}

// run previews repo at commit, reading its files from files; it never fails, the
// result says why it did (a panic included).
func run(ctx context.Context, files deploy.Files, dry DryRunner, repo config.Repo, ref, commit string, lim Limits) (res Result) {
	res = Result{Environment: repo.Environment, Namespace: repo.Namespace, Ref: ref, Commit: commit, State: StateFailed, Changes: noChanges()}
	defer func() {
		if v := recover(); v != nil {
			res.State, res.Error, res.Changes = StateFailed, "the preview failed: "+panics.New(v).Error(), noChanges()
		}
		res.Finished = time.Now().UTC()
	}()
	// A chart sees the cluster's capabilities when the dry runner can tell them (the
	// applier can), as a deployment's render does.
	cluster, _ := dry.(deploy.Cluster)
	rendered, err := deploy.Render(ctx, files, cluster, repo, commit, lim.Files, lim.MaxObjects)
	objs := rendered.Objects
	if err != nil {
		res.Error, res.Problems = cutError(err.Error()), renderProblems(err)
		return res
	}
	dr, err := dry.DryRun(ctx, apply.Request{Repo: repo, Commit: commit, Objects: objs})
	if err != nil {
		res.Error, res.Problems = cutError(err.Error()), validationProblems(err)
		return res
	}
	res.State, res.Changes = StateDone, Compare(dr)
	return res
}

// MaxError bounds the error kept with a preview; Problems list each one.
const MaxError = 4 << 10

func cutError(msg string) string {
	if len(msg) > MaxError {
		return msg[:MaxError] + "…"
	}
	return msg
}

func renderProblems(err error) []ManifestProblem {
	var bad *render.Error
	if !errors.As(err, &bad) {
		return nil
	}
	return []ManifestProblem{{File: bad.File, Line: bad.Line, Message: bad.Msg}}
}

func validationProblems(err error) []ManifestProblem {
	var verr *apply.ValidationError
	if !errors.As(err, &verr) {
		return nil
	}
	out := make([]ManifestProblem, len(verr.Issues))
	for i, is := range verr.Issues {
		file, line := splitSource(is.Source)
		out[i] = ManifestProblem{File: file, Line: line, Object: is.Object, Message: is.Message}
	}
	return out
}

// splitSource reads render.Object's Source, "file:line" (or "kustomize dir", no line).
func splitSource(src string) (string, int) {
	i := strings.LastIndexByte(src, ':')
	if i < 0 {
		return src, 0
	}
	n, err := strconv.Atoi(src[i+1:])
	if err != nil {
		return src, 0
	}
	return src[:i], n
}

// Uploaded are a local tree's files (repo path → content), read as a commit's would be:
// within the same limits, the same files kept.
type Uploaded map[string][]byte

// Files returns the files under dir, as source.Source.Files does.
func (u Uploaded) Files(repo config.Repo, commit, dir string, lim source.Limits) (map[string][]byte, error) {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	if dir == "." || dir == "" {
		prefix = ""
	}
	out := map[string][]byte{}
	over := &source.LimitError{Dir: dir, Limits: lim}
	for name, content := range u {
		if !strings.HasPrefix(name, prefix) || int64(len(content)) > lim.MaxFileBytes {
			continue
		}
		over.Files++
		over.Bytes += int64(len(content))
		out[name] = content
	}
	if over.Files > lim.MaxFiles || over.Bytes > lim.MaxTotalBytes {
		return nil, fmt.Errorf("%s: %w", repo.Name, over)
	}
	return out, nil
}
