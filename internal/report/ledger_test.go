package report

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/githubtest"
	"github.com/deployd/deployd/internal/history"
)

// TestImagesGoToGitHubAndBack: the GitHub deployment of a record carries its images in
// the payload, the Ledger finds it by commit and environment with its statuses newest
// first, and a blocked record is reported only on a GitHub deployment someone asked for.
func TestImagesGoToGitHubAndBack(t *testing.T) {
	gh := githubtest.New(t)
	r, _ := newReporter(t, gh, time.Minute)
	r.Start(context.Background())
	done := rec(1, history.Succeeded, "")
	done.Images, done.ImagesRecorded = []string{"ghcr.io/acme/web:1.4.2"}, true
	r.Record(repo, done, 0)
	blocked := rec(2, history.Blocked, "image web: staging ran a, prod would run b")
	r.Record(repo, blocked, 0)    // nobody asked on GitHub: not reported
	r.Record(repo, blocked, 4242) // a GitHub deployment asked: failure, with why
	r.Wait()

	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("gh-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := NewLedger(ClientOptions{APIURL: gh.URL, TokenFile: token})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := l.Deployments(context.Background(), "shop", "web", done.Commit.SHA, "prod")
	if err != nil || len(ds) != 1 {
		t.Fatalf("deployments %v, %v; want the one created", ds, err)
	}
	var p Payload
	if err := json.Unmarshal(ds[0].Payload, &p); err != nil || p.Deployd.Number != 1 || !cmp.Equal(p.Deployd.Images, done.Images) {
		t.Errorf("payload %s: %v", ds[0].Payload, err)
	}
	ss, err := l.Statuses(context.Background(), "shop", "web", ds[0].GetID())
	var states []string
	for _, s := range ss {
		states = append(states, s.GetState())
	}
	if err != nil || !cmp.Equal(states, []string{"success", "in_progress", "queued"}) {
		t.Errorf("statuses %v, %v; want newest first", states, err)
	}
	if got := gh.Statuses(4242); !cmp.Equal(got, []string{"failure"}) {
		t.Errorf("blocked on GitHub deployment 4242: %v, want failure", got)
	}
	if none, _ := l.Deployments(context.Background(), "shop", "web", done.Commit.SHA, "staging"); len(none) != 0 {
		t.Errorf("another environment listed %v", none)
	}
}

// TestLedgerBound: one question reads at most maxLedgerDeployments deployments, however
// many GitHub lists.
func TestLedgerBound(t *testing.T) {
	gh := githubtest.New(t)
	r, _ := newReporter(t, gh, time.Minute)
	r.Start(context.Background())
	for n := 1; n <= maxLedgerDeployments+1; n++ {
		r.Record(repo, rec(n, history.Succeeded, ""), 0)
	}
	r.Wait()
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("gh-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := NewLedger(ClientOptions{APIURL: gh.URL, TokenFile: token})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := l.Deployments(context.Background(), "shop", "web", rec(1, "", "").Commit.SHA, "prod")
	if err != nil || len(ds) != maxLedgerDeployments {
		t.Errorf("%d deployments read, %v; want %d of %d", len(ds), err, maxLedgerDeployments, maxLedgerDeployments+1)
	}
}
