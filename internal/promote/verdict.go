package promote

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/go-github/v60/github"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/report"
	"github.com/deployd/deployd/internal/source"
)

// State is how the source environment did with a commit.
type State int

// The states.
const (
	// Pending: not deployed there yet, or still deploying.
	Pending State = iota
	// Succeeded: it succeeded there (Verdict.Images ran).
	Succeeded
	// Failed: its newest deployment there ended without success.
	Failed
)

// Verdict is the source environment's answer for a commit.
type Verdict struct {
	State State
	// Images are the images that ran, when the state is Succeeded and ImagesKnown.
	Images      []string
	ImagesKnown bool
	// Detail says what the source has: "its deployment-0003 failed: …".
	Detail string
}

// Records reads an environment's deployment records, newest first (history.Store does).
type Records interface {
	List(ctx context.Context, repo config.Repo) ([]history.Record, error)
}

// localVerdict answers from the records of the source environment served by this deployd.
func localVerdict(recs []history.Record, commit string) Verdict {
	// Oldest first: a skipped-no-change record runs the images of the success before it.
	var last *history.Record
	var v Verdict
	found := false
	for i := len(recs) - 1; i >= 0; i-- {
		r := &recs[i]
		if r.Phase == history.Succeeded {
			last = r
		}
		if r.Commit.SHA != commit {
			continue
		}
		found = true
		switch {
		case r.Phase == history.Succeeded:
			v = Verdict{State: Succeeded, Images: r.Images, ImagesKnown: r.ImagesRecorded, Detail: "its " + r.Name() + " succeeded"}
		case r.Phase == history.SkippedNoChange && last != nil:
			v = Verdict{State: Succeeded, Images: last.Images, ImagesKnown: last.ImagesRecorded,
				Detail: fmt.Sprintf("its %s saw no manifest change from %s", r.Name(), last.Name())}
		case v.State == Succeeded:
			// a later redeploy that did not succeed does not undo that it ran
		case !r.Phase.Done():
			v = Verdict{State: Pending, Detail: "it is deploying it (" + r.Name() + ")"}
		default:
			v = Verdict{State: Failed, Detail: fmt.Sprintf("its %s %s", r.Name(), phaseWords(r))}
		}
	}
	if !found {
		return Verdict{State: Pending, Detail: "it has not deployed it"}
	}
	return v
}

func phaseWords(r *history.Record) string {
	s := string(r.Phase)
	if r.Phase == history.SkippedNoChange {
		s = "saw no manifest change, but nothing succeeded before it"
	}
	if r.Error != "" {
		s += ": " + firstLine(r.Error)
	}
	return s
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:199]) + "…"
	}
	return s
}

// Ledger reads GitHub's deployments and statuses (report.Ledger does).
type Ledger interface {
	Deployments(ctx context.Context, owner, repo, sha, environment string) ([]*github.Deployment, error)
	Statuses(ctx context.Context, owner, repo string, id int64) ([]*github.DeploymentStatus, error)
}

var _ Ledger = (*report.Ledger)(nil)

// maxPayload bounds the GitHub deployment payload read for images; anyone who may
// create deployments on the repo writes payloads.
const maxPayload = 256 << 10

// remoteVerdict answers from GitHub: another cluster's deployd reports its deployments of
// the commit to the source environment there, with the images in the payload.
func remoteVerdict(ctx context.Context, gh Ledger, repo config.Repo, commit string) (Verdict, error) {
	owner, name, _ := strings.Cut(repo.Name, "/")
	ds, err := gh.Deployments(ctx, owner, name, commit, repo.PromoteFrom)
	if err != nil {
		return Verdict{}, fmt.Errorf("asking GitHub how %s did with %s: %w", repo.PromoteFrom, source.ShortSHA(commit), err)
	}
	var newest *Verdict
	for _, d := range ds { // newest first
		if d.GetSHA() != "" && d.GetSHA() != commit {
			continue
		}
		ss, err := gh.Statuses(ctx, owner, name, d.GetID())
		if err != nil {
			return Verdict{}, fmt.Errorf("asking GitHub for the statuses of deployment %d: %w", d.GetID(), err)
		}
		v := statusVerdict(d, ss)
		if v.State == Succeeded {
			return v, nil
		}
		if newest == nil {
			newest = &v
		}
	}
	if newest == nil {
		return Verdict{State: Pending, Detail: "GitHub has no deployment of it there"}, nil
	}
	return *newest, nil
}

// statusVerdict is one GitHub deployment's verdict: succeeded when any status says
// success (a later one may be inactive: a newer deployment succeeded after it).
func statusVerdict(d *github.Deployment, ss []*github.DeploymentStatus) Verdict {
	for _, s := range ss {
		if s.GetState() == "success" {
			v := Verdict{State: Succeeded, Detail: fmt.Sprintf("GitHub deployment %d succeeded", d.GetID())}
			v.Images, v.ImagesKnown = payloadImages(d.Payload)
			return v
		}
	}
	if len(ss) == 0 {
		return Verdict{State: Pending, Detail: fmt.Sprintf("GitHub deployment %d has no status yet", d.GetID())}
	}
	switch st := ss[0].GetState(); st { // newest first
	case "queued", "in_progress", "pending":
		return Verdict{State: Pending, Detail: fmt.Sprintf("GitHub deployment %d is %s", d.GetID(), st)}
	default:
		detail := fmt.Sprintf("GitHub deployment %d is %s", d.GetID(), st)
		if desc := ss[0].GetDescription(); desc != "" {
			detail += ": " + firstLine(desc)
		}
		return Verdict{State: Failed, Detail: detail}
	}
}

// payloadImages reads the images deployd put in a GitHub deployment's payload.
func payloadImages(raw json.RawMessage) ([]string, bool) {
	if len(raw) == 0 || len(raw) > maxPayload {
		return nil, false
	}
	var p report.Payload
	if json.Unmarshal(raw, &p) != nil || p.Deployd.Images == nil {
		return nil, false
	}
	return p.Deployd.Images, true
}
