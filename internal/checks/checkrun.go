package checks

import (
	"context"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"
)

// maxNotes bounds what is added to a summary about annotations.
const maxNotes = 16 << 10

// summary is the caller's summary, capped, with the notes on annotations after it.
func summary(r Report, p placed) string {
	notes := capMarkdown(p.notes(r.DetailsURL), maxNotes, r.DetailsURL)
	if s := capMarkdown(r.Summary, maxSummary-len(notes), r.DetailsURL) + notes; strings.TrimSpace(s) != "" {
		return s
	}
	return Escape(r.title(255)) // GitHub needs a summary
}

var defaultTitle = map[string]string{"success": "would apply cleanly", "failure": "would not apply", "neutral": "no changes"}

// title is the report's title on one line of at most n characters; GitHub needs one.
func (r Report) title(n int) string {
	if t := oneLine(r.Title, n); t != "" {
		return t
	}
	return defaultTitle[r.Conclusion]
}

// publishCheckRun completes the environment's check run on the head commit: the one
// deployd already made there, or a new one. The first request carries the conclusion and
// the first 50 annotations; later requests add 50 more each, as GitHub allows.
func (p *Publisher) publishCheckRun(ctx context.Context, r Report) error {
	name := Name(r.Environment)
	pl := place(r.Annotations, p.opts.MaxAnnotations)
	title, sum := r.title(255), summary(r, pl)
	out := func(batch []*github.CheckRunAnnotation) *github.CheckRunOutput {
		return &github.CheckRunOutput{Title: github.String(title), Summary: github.String(sum), Annotations: batch}
	}
	batches := batch(pl.anns)
	id, err := p.findCheckRun(ctx, r, name)
	if err != nil {
		return err
	}
	now := &github.Timestamp{Time: time.Now()}
	var details *string
	if r.DetailsURL != "" {
		details = github.String(r.DetailsURL)
	}
	if id == 0 {
		err = p.call(ctx, "create the check run", func(ctx context.Context) (*github.Response, error) {
			run, resp, err := p.gh.Checks.CreateCheckRun(ctx, r.Owner, r.Repo, github.CreateCheckRunOptions{
				Name: name, HeadSHA: r.HeadSHA, DetailsURL: details, Status: github.String("completed"),
				Conclusion: github.String(r.Conclusion), CompletedAt: now, Output: out(batches[0])})
			id = run.GetID()
			return resp, err
		})
	} else {
		err = p.updateCheckRun(ctx, r, id, "update the check run", github.UpdateCheckRunOptions{
			Name: name, DetailsURL: details, Status: github.String("completed"),
			Conclusion: github.String(r.Conclusion), CompletedAt: now, Output: out(batches[0])})
	}
	if err != nil {
		return err
	}
	for _, b := range batches[1:] {
		err := p.updateCheckRun(ctx, r, id, "add annotations to the check run", github.UpdateCheckRunOptions{Name: name, Output: out(b)})
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *Publisher) updateCheckRun(ctx context.Context, r Report, id int64, what string, opts github.UpdateCheckRunOptions) error {
	return p.call(ctx, what, func(ctx context.Context) (*github.Response, error) {
		_, resp, err := p.gh.Checks.UpdateCheckRun(ctx, r.Owner, r.Repo, id, opts)
		return resp, err
	})
}

// findCheckRun returns the id of deployd's check run for name on the head commit that
// can be reused, or 0. GitHub only ever adds annotations to a run, so a run that has
// some is left as it is and a new one is made: the newest run of a name is the one shown.
func (p *Publisher) findCheckRun(ctx context.Context, r Report, name string) (int64, error) {
	var runs *github.ListCheckRunsResults
	err := p.call(ctx, "list the commit's check runs", func(ctx context.Context) (*github.Response, error) {
		var resp *github.Response
		var err error
		runs, resp, err = p.gh.Checks.ListCheckRunsForRef(ctx, r.Owner, r.Repo, r.HeadSHA, &github.ListCheckRunsOptions{
			CheckName: github.String(name), AppID: github.Int64(p.appID), ListOptions: github.ListOptions{PerPage: 100}})
		return resp, err
	})
	if err != nil {
		return 0, err
	}
	for _, run := range runs.CheckRuns {
		if run.GetName() == name && run.GetApp().GetID() == p.appID {
			if run.GetOutput().GetAnnotationsCount() > 0 {
				return 0, nil
			}
			return run.GetID(), nil
		}
	}
	return 0, nil
}

// batch cuts annotations into GitHub's requests of 50; there is always a first, maybe empty.
func batch(anns []*github.CheckRunAnnotation) [][]*github.CheckRunAnnotation {
	out := [][]*github.CheckRunAnnotation{anns[:min(batchSize, len(anns))]}
	for i := batchSize; i < len(anns); i += batchSize {
		out = append(out, anns[i:min(i+batchSize, len(anns))])
	}
	return out
}
