package api

import (
	"context"
	"fmt"
	"net/http"
	"path"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/preview"
	"github.com/deployd/deployd/internal/view"
)

// Previews keeps pull request previews and previews a ref or a local tree on demand
// (preview.Service).
type Previews interface {
	List(repo string) []preview.Preview
	Get(repo string, number int) (preview.Preview, bool)
	Diff(ctx context.Context, entries []config.Repo, ref string, files preview.Uploaded) ([]preview.Result, error)
}

// MaxUpload is the largest body of POST .../diff: a local tree within the file limits
// of a deployment (10 MiB of files), as JSON.
const MaxUpload = 12 << 20

type previewsInput struct {
	RepoPath
}

type previewsOutput struct {
	Body struct {
		Previews []preview.Preview `json:"previews" nullable:"false" doc:"The previews of the repo's open pull requests, by number."`
	}
}

type previewInput struct {
	RepoPath
	Number      int    `path:"number" minimum:"1" doc:"The pull request's number."`
	Environment string `query:"environment" maxLength:"63" doc:"Only this environment."`
}

type previewOutput struct {
	Body preview.Preview
}

type diffInput struct {
	RepoPath
	Environment string `query:"environment" maxLength:"63" doc:"Only this environment."`
	Ref         string `query:"ref" maxLength:"250" doc:"The ref to preview (a branch, refs/tags/X or refs/pull/N/head), fetched from the repo's URL; the configured branch when neither it nor files is given."`
	Body        *struct {
		Files map[string]string `json:"files" maxProperties:"1000" doc:"A local tree's files, by path in the repo (deploy/manifests/app.yaml), to preview instead of a ref."`
	}
}

type diffOutput struct {
	Body struct {
		Changes      bool             `json:"changes" doc:"Whether anything would change in any environment."`
		Environments []preview.Result `json:"environments" nullable:"false" doc:"The preview of each environment."`
	}
}

func (s *Server) registerPreviews() {
	tags := []string{"previews"}
	huma.Register(s.api, huma.Operation{OperationID: "list-previews", Method: http.MethodGet, Path: "/deployment/{owner}/{repo}/previews",
		Summary: "Previews of a repo's pull requests", Description: "What merging each open pull request would change in each environment whose branch is its base: objects added, changed (field by field), pruned, images. Secret values are always redacted; ConfigMap data and containers' env values unless the request carries the API token. Kept in memory: a restart forgets them until the next event of the pull request.",
		Tags: tags, Errors: append(readErrors, http.StatusServiceUnavailable)}, s.listPreviews)
	huma.Register(s.api, huma.Operation{OperationID: "get-preview", Method: http.MethodGet, Path: "/deployment/{owner}/{repo}/previews/{number}",
		Summary: "A pull request's preview", Tags: tags, Errors: append(readErrors, http.StatusServiceUnavailable)}, s.getPreview)
	huma.Register(s.api, huma.Operation{OperationID: "diff", Method: http.MethodPost, Path: "/deployment/{owner}/{repo}/diff", MaxBodyBytes: MaxUpload,
		Summary:     "Preview a ref or a local tree",
		Description: "Renders a ref of the repo (fetched from its configured URL) or the uploaded files with deployment's limits, dry-runs them as the repo's identity and answers what would change. Nothing is applied.",
		Tags:        tags, Security: []map[string][]string{{"bearer": {}}}, Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusServiceUnavailable}}, s.diff)
}

// errNoPreviews answers when deployd runs without previews.
var errNoPreviews = huma.Error503ServiceUnavailable("pull request previews are off in this deployd")

func (s *Server) listPreviews(ctx context.Context, in *previewsInput) (*previewsOutput, error) {
	es, err := s.entries(in.Owner, in.Repo, "")
	if err == nil && s.deps.Previews == nil {
		err = errNoPreviews
	}
	if err != nil {
		return nil, err
	}
	out := &previewsOutput{}
	out.Body.Previews = s.deps.Previews.List(es[0].Repo.Name)
	for i := range out.Body.Previews {
		out.Body.Previews[i] = s.redactPreview(out.Body.Previews[i], in.Authorization)
	}
	return out, nil
}

func (s *Server) getPreview(ctx context.Context, in *previewInput) (*previewOutput, error) {
	es, err := s.entries(in.Owner, in.Repo, in.Environment)
	if err == nil && s.deps.Previews == nil {
		err = errNoPreviews
	}
	if err != nil {
		return nil, err
	}
	p, ok := s.deps.Previews.Get(es[0].Repo.Name, in.Number)
	if !ok {
		return nil, huma.Error404NotFound(fmt.Sprintf("no preview of pull request #%d of %s: it is closed, or no event of it came since deployd started", in.Number, es[0].Repo.Name))
	}
	if in.Environment != "" {
		var only []preview.Result
		for _, r := range p.Environments {
			if r.Environment == in.Environment {
				only = append(only, r)
			}
		}
		p.Environments = only
	}
	return &previewOutput{Body: s.redactPreview(p, in.Authorization)}, nil
}

func (s *Server) diff(ctx context.Context, in *diffInput) (*diffOutput, error) {
	es, err := s.entries(in.Owner, in.Repo, in.Environment)
	if err == nil && s.deps.Previews == nil {
		err = errNoPreviews
	}
	if err != nil {
		return nil, err
	}
	var files preview.Uploaded
	if in.Body != nil && in.Body.Files != nil {
		if in.Ref != "" {
			return nil, huma.Error400BadRequest("give ref or files, not both")
		}
		if files, err = uploaded(in.Body.Files); err != nil {
			return nil, err
		}
	}
	ref := in.Ref
	if ref == "" && files == nil {
		ref = "refs/heads/" + es[0].Repo.Branch
	}
	res, err := s.deps.Previews.Diff(ctx, entryRepos(es), ref, files)
	if err != nil {
		return nil, huma.Error503ServiceUnavailable(err.Error())
	}
	out := &diffOutput{}
	out.Body.Environments = res
	for _, r := range res {
		out.Body.Changes = out.Body.Changes || r.Any()
	}
	return out, nil
}

// redactPreview hides configuration values from a reader without the token, as getObject
// does: anyone may read what changes, only the token's holder the values.
func (s *Server) redactPreview(p preview.Preview, authorization string) preview.Preview {
	if s.authorize(authorization, true) == nil {
		return p
	}
	envs := make([]preview.Result, len(p.Environments))
	for i, r := range p.Environments {
		envs[i] = r.Redacted()
	}
	p.Environments = envs
	return p
}

func entryRepos(es []view.Entry) []config.Repo {
	out := make([]config.Repo, len(es))
	for i, e := range sortedEnvs(es) {
		out[i] = e.Repo
	}
	return out
}

// uploaded checks the uploaded files' paths: relative, clean, inside the repo.
func uploaded(in map[string]string) (preview.Uploaded, error) {
	out := preview.Uploaded{}
	for name, content := range in {
		if name == "" || len(name) > 1024 || path.IsAbs(name) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") {
			return nil, huma.Error400BadRequest(fmt.Sprintf("file %q: give paths relative to the repo's root, without .. or //", cutName(name)))
		}
		out[name] = []byte(content)
	}
	return out, nil
}

func cutName(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}
