package checks

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-github/v60/github"

	"github.com/deployd/deployd/internal/config"
)

// statusState maps a conclusion to a commit status state. Statuses have no "neutral";
// a preview with no changes is no reason to block a merge, so it is a success.
var statusState = map[string]string{"success": "success", "failure": "failure", "neutral": "success"}

var conclusionIcon = map[string]string{"success": "✅", "failure": "❌", "neutral": "➖"}

// markerPrefix starts each of deployd's preview comments, followed by the environment:
// one comment per pull request and environment, so environments never overwrite each
// other's section.
const markerPrefix = "<!-- deployd-preview:"

func marker(environment string) string { return markerPrefix + environment + " -->" }

// maxCommentRows bounds the table of errors in a comment.
const maxCommentRows = 50

// publishComment sets the environment's commit status and creates or edits its comment.
func (p *Publisher) publishComment(ctx context.Context, r Report) error {
	status := &github.RepoStatus{State: github.String(statusState[r.Conclusion]), Context: github.String(Name(r.Environment)),
		Description: github.String(r.title(maxDescription))}
	if r.DetailsURL != "" {
		status.TargetURL = github.String(r.DetailsURL)
	}
	err := p.call(ctx, "set the commit status", func(ctx context.Context) (*github.Response, error) {
		_, resp, err := p.gh.Repositories.CreateStatus(ctx, r.Owner, r.Repo, r.HeadSHA, status)
		return resp, err
	})
	if err != nil {
		return err
	}
	mark := marker(r.Environment)
	found, err := p.findComments(ctx, r.Owner, r.Repo, r.PRNumber, mark)
	if err != nil {
		return err
	}
	body := commentBody(r)
	if len(found) == 0 {
		return p.call(ctx, "create the pull request comment", func(ctx context.Context) (*github.Response, error) {
			_, resp, err := p.gh.Issues.CreateComment(ctx, r.Owner, r.Repo, r.PRNumber, &github.IssueComment{Body: github.String(body)})
			return resp, err
		})
	}
	return p.editComment(ctx, r.Owner, r.Repo, found[0], body)
}

func (p *Publisher) editComment(ctx context.Context, owner, repo string, c *github.IssueComment, body string) error {
	if c.GetBody() == body {
		return nil
	}
	return p.call(ctx, fmt.Sprintf("edit pull request comment %d", c.GetID()), func(ctx context.Context) (*github.Response, error) {
		_, resp, err := p.gh.Issues.EditComment(ctx, owner, repo, c.GetID(), &github.IssueComment{Body: github.String(body)})
		return resp, err
	})
}

// commentBody is a preview as a comment: the marker, a heading with the conclusion, the
// summary, a table of the errors, and the links.
func commentBody(r Report) string {
	pl := place(r.Annotations, maxCommentRows)
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n### %s %s: %s\n\n", marker(r.Environment), conclusionIcon[r.Conclusion], Name(r.Environment), Escape(r.title(255)))
	b.WriteString(r.Summary)
	if len(pl.anns) > 0 {
		b.WriteString("\n\n| File | Line | Error |\n| --- | --- | --- |\n")
		for _, a := range pl.anns {
			fmt.Fprintf(&b, "| %s | %d | %s |\n", Escape(a.GetPath()), a.GetStartLine(), Escape(truncateRunes(a.GetMessage(), 500)))
		}
	}
	b.WriteString(pl.notes(r.DetailsURL))
	fmt.Fprintf(&b, "\n\n<sub>Commit %s", r.HeadSHA[:12])
	if r.DetailsURL != "" {
		fmt.Fprintf(&b, " · [full diff](%s)", r.DetailsURL)
	}
	b.WriteString(" · deployd edits this comment as the pull request changes.</sub>\n")
	return capMarkdown(b.String(), maxComment, r.DetailsURL)
}

// removeComments edits each of deployd's preview comments on the pull request to say
// the preview was removed.
func (p *Publisher) removeComments(ctx context.Context, owner, repo string, pr int) error {
	found, err := p.findComments(ctx, owner, repo, pr, markerPrefix)
	if err != nil {
		return err
	}
	for _, c := range found {
		env, _, _ := strings.Cut(strings.TrimPrefix(c.GetBody(), markerPrefix), " -->")
		mark, heading := marker(env), Name(env)
		if config.CheckEnvironment(env) != "" {
			mark, heading = markerPrefix+"removed -->", "deployd"
		}
		body := fmt.Sprintf("%s\n### %s: preview removed\n\nThis pull request was closed; deployd removed its preview.\n", mark, heading)
		if err := p.editComment(ctx, owner, repo, c, body); err != nil {
			return err
		}
	}
	return nil
}

// findComments returns deployd's comments on a pull request whose body starts with
// prefix, searching at most Options.MaxCommentPages pages of 100. Only comments by
// deployd's own user count, so a comment quoting the marker is never taken for ours.
func (p *Publisher) findComments(ctx context.Context, owner, repo string, pr int, prefix string) ([]*github.IssueComment, error) {
	login, err := p.user(ctx)
	if err != nil {
		return nil, err
	}
	var found []*github.IssueComment
	opts := &github.IssueListCommentsOptions{ListOptions: github.ListOptions{PerPage: 100}}
	for page := 1; ; page++ {
		if page > p.opts.MaxCommentPages {
			return nil, fmt.Errorf("list the pull request's comments: more than %d, and deployd looks no further", p.opts.MaxCommentPages*100)
		}
		opts.Page = page
		var comments []*github.IssueComment
		var next int
		err := p.call(ctx, "list the pull request's comments", func(ctx context.Context) (*github.Response, error) {
			var resp *github.Response
			var err error
			comments, resp, err = p.gh.Issues.ListComments(ctx, owner, repo, pr, opts)
			if resp != nil {
				next = resp.NextPage
			}
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for _, c := range comments {
			if strings.HasPrefix(c.GetBody(), prefix) && (login == "" || c.GetUser().GetLogin() == login) {
				found = append(found, c)
			}
		}
		if next == 0 {
			return found, nil
		}
	}
}

// user returns the token's login, asked once. A token GitHub refuses to answer for (an
// Actions or App token) gets "": then the marker alone identifies deployd's comments.
func (p *Publisher) user(ctx context.Context) (string, error) {
	p.mu.Lock()
	login, known := p.login, p.loginKnown
	p.mu.Unlock()
	if known {
		return login, nil
	}
	err := p.call(ctx, "ask GitHub who the token is", func(ctx context.Context) (*github.Response, error) {
		u, resp, err := p.gh.Users.Get(ctx, "")
		login = u.GetLogin()
		return resp, err
	})
	var refused *github.ErrorResponse
	if err != nil && !errors.As(err, &refused) {
		return "", err
	}
	p.mu.Lock()
	p.login, p.loginKnown = login, true
	p.mu.Unlock()
	return login, nil
}
