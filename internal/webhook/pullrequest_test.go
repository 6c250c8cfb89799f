package webhook

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/preview"
)

// previewQueue records the pull requests queued for previews.
type previewQueue struct{ got []preview.PullRequest }

func (q *previewQueue) Enqueue(pr preview.PullRequest) { q.got = append(q.got, pr) }

func TestPullRequest(t *testing.T) {
	raw, err := os.ReadFile("testdata/pull_request.json")
	if err != nil {
		t.Fatal(err)
	}
	edit := func(old, new string) []byte { return []byte(strings.Replace(string(raw), old, new, 1)) }
	type queued struct {
		Repo    string
		Number  int
		HeadSHA string
		Envs    []string
		Closed  bool
	}
	tests := []struct {
		name        string
		body        []byte
		off         bool
		wantStatus  int
		wantMessage string
		want        []queued
	}{
		{"a fork's push previews each entry deploying the base branch, by name and by URL; the fork's URL is not kept", raw, false, 202, "preview of pull request #7 queued",
			[]queued{{"haraldsk/an-application", 7, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", []string{"dev"}, false},
				{"other/byurl", 7, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", []string{"production"}, false}}},
		{"against the release branch, the entry deploying it", edit(`"ref": "main"`, `"ref": "release"`), false, 202, "preview of pull request #7 queued",
			[]queued{{"haraldsk/an-application", 7, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", []string{"prod"}, false}}},
		{"closed removes the preview", edit(`"action": "synchronize"`, `"action": "closed"`), false, 202, "pull request #7 closed: its preview is removed",
			[]queued{{"haraldsk/an-application", 7, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", []string{"dev"}, true},
				{"other/byurl", 7, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", []string{"production"}, true}}},
		{"a branch no entry deploys is ignored", edit(`"ref": "main"`, `"ref": "feature"`), false, 200, "no configured entry of haraldsk/an-application deploys branch feature; ignored", nil},
		{"other actions are ignored", edit(`"action": "synchronize"`, `"action": "labeled"`), false, 200, `pull request action "labeled" is not one deployd previews; ignored`, nil},
		{"a head that is not a full SHA is refused", edit(`0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c`, `0d1a26e`), false, 400, "pull_request payload lacks number or a full pull_request.head.sha", nil},
		{"without previews nothing is queued", raw, true, 200, "pull request previews are off; ignored", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newHandler(t, twoRepos)
			q := &previewQueue{}
			if !tt.off {
				h.SetPreviews(q)
			}
			rec, out := deliver(h, "pull_request", "application/json", tt.body, sign(tt.body, secret))
			if rec.Code != tt.wantStatus || out["message"] != tt.wantMessage {
				t.Errorf("answered %d %q, want %d %q", rec.Code, out["message"], tt.wantStatus, tt.wantMessage)
			}
			var got []queued
			for _, pr := range q.got {
				g := queued{pr.Repo, pr.Number, pr.HeadSHA, nil, pr.Closed}
				for _, e := range pr.Entries {
					g.Envs = append(g.Envs, e.Environment)
				}
				got = append(got, g)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("queued (-want +got)\n%s", diff)
			}
		})
	}
}
