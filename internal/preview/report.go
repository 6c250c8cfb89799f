package preview

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/deployd/deployd/internal/checks"
	"github.com/deployd/deployd/internal/source"
)

// Report is one environment's preview as published on the pull request: a check run
// "deployd / <environment>" with a GitHub App, a commit status and a comment with a token.
type Report = checks.Report

// Annotation is a problem at a file and line of the pull request's head.
type Annotation = checks.Annotation

// Publisher publishes previews on GitHub (checks.Publisher does).
type Publisher interface {
	// Publish creates or updates the environment's check (or status and comment).
	Publish(ctx context.Context, r Report) error
	// Remove is told that the pull request was closed.
	Remove(ctx context.Context, owner, repo string, prNumber int) error
}

// MaxAnnotations bounds the annotations of one report (GitHub takes 50 per request).
const MaxAnnotations = 50

// reportOf is the report of an environment's preview of pull request number of repo.
func reportOf(repoName string, number int, res Result, publicURL string) Report {
	owner, name, _ := strings.Cut(repoName, "/")
	r := Report{Owner: owner, Repo: name, Environment: res.Environment, HeadSHA: res.Commit, PRNumber: number,
		Conclusion: res.Conclusion(), Title: Title(res)}
	if publicURL != "" {
		r.DetailsURL = fmt.Sprintf("%s/deployment/%s/previews/%d?environment=%s", strings.TrimSuffix(publicURL, "/"), repoName, number, res.Environment)
	}
	r.Summary = Markdown(res, r.DetailsURL, DefaultSummaryBytes)
	for _, p := range res.Problems {
		if p.File == "" || len(r.Annotations) == MaxAnnotations {
			continue
		}
		msg := p.Message
		if p.Object != "" {
			msg = p.Object + ": " + msg
		}
		r.Annotations = append(r.Annotations, Annotation{Path: p.File, Line: max(p.Line, 1), Message: msg})
	}
	return r
}

// Title is the report's one line.
func Title(res Result) string {
	switch {
	case res.State == StatePending:
		return "preview pending"
	case res.State != StateDone && len(res.Problems) > 0:
		return strconv.Itoa(len(res.Problems)) + " manifest problem(s): nothing would be applied"
	case res.State != StateDone:
		return "preview failed: " + firstLine(res.Error)
	case !res.Any():
		return fmt.Sprintf("no changes (%d objects unchanged)", res.Unchanged)
	}
	return fmt.Sprintf("%d to add, %d to change, %d to prune, %d unchanged", len(res.Added), len(res.Changed), len(res.Pruned), res.Unchanged)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

// short is a commit's 12-character prefix.
func short(sha string) string { return source.ShortSHA(sha) }
