package promote

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-github/v60/github"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
)

func TestCompare(t *testing.T) {
	tests := []struct {
		name       string
		ran, would []string
		want       string
	}{
		{"same images", []string{"ghcr.io/acme/web:1.4.2", "busybox"}, []string{"busybox", "ghcr.io/acme/web:1.4.2"}, ""},
		{"another tag", []string{"ghcr.io/acme/web:1.4.2"}, []string{"ghcr.io/acme/web:1.4.3"},
			"image web: staging ran ghcr.io/acme/web:1.4.2, production would run ghcr.io/acme/web:1.4.3"},
		{"a digest instead of a tag", []string{"ghcr.io/acme/web:1.4.2"}, []string{"ghcr.io/acme/web@sha256:abc"},
			"image web: staging ran ghcr.io/acme/web:1.4.2, production would run ghcr.io/acme/web@sha256:abc"},
		{"an image more, one less", []string{"localhost:5000/db:1"}, []string{"localhost:5000/cache:2"},
			"image cache: staging ran no such image, production would run localhost:5000/cache:2; image db: staging ran localhost:5000/db:1, production would run no such image"},
		{"many differences are cut", []string{"a:1", "b:1", "c:1", "d:1", "e:1"}, []string{"a:2", "b:2", "c:2", "d:2", "e:2"},
			"image a: staging ran a:1, production would run a:2; image b: staging ran b:1, production would run b:2; image c: staging ran c:1, production would run c:2; and 2 more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := compare("staging", "production", tt.ran, tt.would); got != tt.want {
				t.Errorf("compare = %q\nwant      %q", got, tt.want)
			}
		})
	}
}

func TestLocalVerdict(t *testing.T) {
	rec := func(n int, sha string, phase history.Phase, images ...string) history.Record {
		return history.Record{Number: n, Commit: history.Commit{SHA: sha}, Phase: phase, Images: images, ImagesRecorded: images != nil, Error: map[bool]string{true: "Deployment/web: 0 of 1 ready"}[phase == history.Failed]}
	}
	recs := []history.Record{ // newest first
		rec(6, "f", history.Applying),
		rec(5, "e", history.SkippedNoChange),
		rec(4, "d", history.Failed),
		rec(3, "c", history.Succeeded, "web:2"),
		rec(2, "c", history.Failed),
		rec(1, "a", history.Succeeded),
	}
	tests := []struct {
		commit string
		want   Verdict
	}{
		{"c", Verdict{State: Succeeded, Images: []string{"web:2"}, ImagesKnown: true, Detail: "its deployment-0003 succeeded"}},
		{"d", Verdict{State: Failed, Detail: "its deployment-0004 failed: Deployment/web: 0 of 1 ready"}},
		{"e", Verdict{State: Succeeded, Images: []string{"web:2"}, ImagesKnown: true, Detail: "its deployment-0005 saw no manifest change from deployment-0003"}},
		{"f", Verdict{State: Pending, Detail: "it is deploying it (deployment-0006)"}},
		{"a", Verdict{State: Succeeded, Detail: "its deployment-0001 succeeded"}},
		{"z", Verdict{State: Pending, Detail: "it has not deployed it"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, localVerdict(recs, tt.commit)); diff != "" {
			t.Errorf("verdict of %s (-want +got):\n%s", tt.commit, diff)
		}
	}
}

// ledger is a GitHub with fixed deployments and statuses.
type ledger struct {
	deployments []*github.Deployment
	statuses    map[int64][]*github.DeploymentStatus
	err         error
}

func (l ledger) Deployments(ctx context.Context, owner, repo, sha, env string) ([]*github.Deployment, error) {
	return l.deployments, l.err
}

func (l ledger) Statuses(ctx context.Context, owner, repo string, id int64) ([]*github.DeploymentStatus, error) {
	return l.statuses[id], nil
}

func TestRemoteVerdict(t *testing.T) {
	repo := config.Repo{Name: "acme/web", Environment: "production", PromoteFrom: "staging"}
	sha := strings.Repeat("a", 40)
	dep := func(id int64, payload string) *github.Deployment {
		return &github.Deployment{ID: github.Int64(id), SHA: github.String(sha), Payload: []byte(payload)}
	}
	st := func(states ...string) []*github.DeploymentStatus { // newest first
		var out []*github.DeploymentStatus
		for _, s := range states {
			out = append(out, &github.DeploymentStatus{State: github.String(s), Description: github.String("rollout " + s)})
		}
		return out
	}
	tests := []struct {
		name string
		l    ledger
		want Verdict
	}{
		{"no deployment", ledger{}, Verdict{State: Pending, Detail: "GitHub has no deployment of it there"}},
		{"in progress", ledger{deployments: []*github.Deployment{dep(1, `{}`)}, statuses: map[int64][]*github.DeploymentStatus{1: st("in_progress", "queued")}},
			Verdict{State: Pending, Detail: "GitHub deployment 1 is in_progress"}},
		{"failed", ledger{deployments: []*github.Deployment{dep(1, `{}`)}, statuses: map[int64][]*github.DeploymentStatus{1: st("failure", "in_progress")}},
			Verdict{State: Failed, Detail: "GitHub deployment 1 is failure: rollout failure"}},
		{"an older deployment succeeded, then went inactive", ledger{
			deployments: []*github.Deployment{dep(2, `{}`), dep(1, `{"deployd":{"number":3,"images":["web:1"]}}`)},
			statuses:    map[int64][]*github.DeploymentStatus{2: st("error"), 1: st("inactive", "success", "in_progress")}},
			Verdict{State: Succeeded, Images: []string{"web:1"}, ImagesKnown: true, Detail: "GitHub deployment 1 succeeded"}},
		{"succeeded without images in the payload", ledger{deployments: []*github.Deployment{dep(1, `{"deployd":{"number":3}}`)}, statuses: map[int64][]*github.DeploymentStatus{1: st("success")}},
			Verdict{State: Succeeded, Detail: "GitHub deployment 1 succeeded"}},
		{"a payload over the bound is not read", ledger{deployments: []*github.Deployment{dep(1, `{"deployd":{"images":["`+strings.Repeat("x", maxPayload)+`"]}}`)}, statuses: map[int64][]*github.DeploymentStatus{1: st("success")}},
			Verdict{State: Succeeded, Detail: "GitHub deployment 1 succeeded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := remoteVerdict(context.Background(), tt.l, repo, sha)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := remoteVerdict(context.Background(), ledger{err: errors.New("503")}, repo, sha); err == nil || !strings.Contains(err.Error(), "asking GitHub how staging did with aaaaaaaaaaaa: 503") {
		t.Errorf("GitHub down: err = %v", err)
	}
}
