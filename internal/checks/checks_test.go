package checks

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/githubtest"
	"github.com/deployd/deployd/internal/report"
)

const (
	head    = "0123456789abcdef0123456789abcdef01234567"
	details = "https://deployd.example.com/deployment/shop/web/previews/7"
	appID   = 7
)

func testOptions() Options {
	opts := DefaultOptions()
	opts.BackoffBase, opts.BackoffMax, opts.CallTimeout = 10*time.Millisecond, 50*time.Millisecond, 5*time.Second
	return opts
}

// newApp returns a Publisher authenticated as GitHub App 7 against gh.
func newApp(t testing.TB, gh *githubtest.Server, opts Options) *Publisher {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := NewForGitHub(report.ClientOptions{APIURL: gh.URL, AppID: appID, AppKeyFile: keyFile, InstallationID: 99}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newToken returns a Publisher with a plain token against gh.
func newToken(t testing.TB, gh *githubtest.Server, opts Options) *Publisher {
	t.Helper()
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("gh-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := NewForGitHub(report.ClientOptions{APIURL: gh.URL, TokenFile: token}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func preview(env, conclusion string) Report {
	return Report{Owner: "shop", Repo: "web", Environment: env, HeadSHA: head, PRNumber: 7, Conclusion: conclusion,
		Title: "1 changed, 1 added", Summary: "| Object | Change |\n| --- | --- |\n| Deployment/web | replicas 2 → 3 |\n", DetailsURL: details}
}

func annotations(n int) []Annotation {
	out := make([]Annotation, n)
	for i := range out {
		out[i] = Annotation{Path: "deploy/manifests/web.yaml", Line: i + 1, Message: fmt.Sprintf("error %d", i)}
	}
	return out
}

// requests are the calls made to GitHub's REST API, as "METHOD /path", leaving out
// installation token requests.
func requests(gh *githubtest.Server) []string {
	var out []string
	for _, c := range gh.Calls() {
		if !strings.HasPrefix(c.Path, "/app/") {
			out = append(out, c.Method+" "+c.Path)
		}
	}
	return out
}

func publish(t *testing.T, p *Publisher, r Report) {
	t.Helper()
	if err := p.Publish(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

func TestCheckRunIsCreatedThenUpdated(t *testing.T) {
	gh := githubtest.New(t)
	p := newApp(t, gh, testOptions())
	publish(t, p, preview("prod", "success"))
	second := preview("prod", "neutral")
	second.Title = "no changes"
	publish(t, p, second)
	publish(t, p, preview("staging", "success"))

	want := []string{
		"GET /repos/shop/web/commits/" + head + "/check-runs",
		"POST /repos/shop/web/check-runs",
		"GET /repos/shop/web/commits/" + head + "/check-runs",
		"PATCH /repos/shop/web/check-runs/1001",
		"GET /repos/shop/web/commits/" + head + "/check-runs",
		"POST /repos/shop/web/check-runs",
	}
	if diff := cmp.Diff(want, requests(gh)); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	var got []string
	for _, r := range gh.CheckRuns("shop", "web") {
		got = append(got, fmt.Sprintf("%s %s %s %s: %s (app %d) %s", r.Name, r.HeadSHA[:7], r.Status, r.Conclusion, r.Title, r.AppID, r.DetailsURL))
	}
	wantRuns := []string{
		"deployd / prod 0123456 completed neutral: no changes (app 7) " + details,
		"deployd / staging 0123456 completed success: 1 changed, 1 added (app 7) " + details,
	}
	if diff := cmp.Diff(wantRuns, got); diff != "" {
		t.Errorf("check runs (-want +got):\n%s", diff)
	}
	if err := p.Remove(context.Background(), "shop", "web", 7); err != nil {
		t.Fatal(err)
	}
	if n := len(requests(gh)); n != len(want) {
		t.Errorf("Remove of a check run made %d requests, want none", n-len(want))
	}
}

func TestAnnotationsAreSentInBatchesOf50(t *testing.T) {
	tests := []struct {
		name        string
		annotations int
		wantBatches []int // annotations per request, create first
		wantNote    bool  // the summary says some were left out
	}{
		{"none", 0, []int{0}, false},
		{"120: three requests", 120, []int{50, 50, 20}, false},
		{"500: all sent", 500, []int{50, 50, 50, 50, 50, 50, 50, 50, 50, 50}, false},
		{"501: one over the cap is left out and said so", 501, []int{50, 50, 50, 50, 50, 50, 50, 50, 50, 50}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gh := githubtest.New(t)
			p := newApp(t, gh, testOptions())
			r := preview("prod", "failure")
			r.Annotations = annotations(tt.annotations)
			publish(t, p, r)
			var batches []int
			for _, c := range gh.Calls() {
				if strings.Contains(c.Path, "/check-runs") && c.Method != http.MethodGet {
					out, _ := c.Body["output"].(map[string]any)
					anns, _ := out["annotations"].([]any)
					batches = append(batches, len(anns))
				}
			}
			if diff := cmp.Diff(tt.wantBatches, batches); diff != "" {
				t.Errorf("annotations per request (-want +got):\n%s", diff)
			}
			runs := gh.CheckRuns("shop", "web")
			if len(runs) != 1 {
				t.Fatalf("%d check runs, want 1", len(runs))
			}
			if got := runs[0].Annotations; len(got) > 0 {
				last := got[len(got)-1]
				wantLine := float64(min(tt.annotations, 500))
				if last["path"] != "deploy/manifests/web.yaml" || last["start_line"] != wantLine || last["annotation_level"] != "failure" {
					t.Errorf("last annotation %v, want deploy/manifests/web.yaml line %v at level failure", last, wantLine)
				}
			}
			note := fmt.Sprintf("**Showing 500 of %d annotations**; every error is in the full diff: %s", tt.annotations, details)
			if got := strings.Contains(runs[0].Summary, note); got != tt.wantNote {
				t.Errorf("summary says some were left out: %v, want %v:\n%s", got, tt.wantNote, runs[0].Summary)
			}
		})
	}
}

func TestARunWithAnnotationsIsNotReused(t *testing.T) {
	// GitHub only adds annotations to a run: updating one that has some would show the
	// old ones next to the new.
	gh := githubtest.New(t)
	p := newApp(t, gh, testOptions())
	r := preview("prod", "failure")
	r.Annotations = annotations(3)
	publish(t, p, r)
	r.Annotations = annotations(2)
	publish(t, p, r)
	runs := gh.CheckRuns("shop", "web")
	var got []int
	for _, run := range runs {
		got = append(got, len(run.Annotations))
	}
	if diff := cmp.Diff([]int{3, 2}, got); diff != "" {
		t.Errorf("annotations per run (-want +got):\n%s", diff)
	}
}

func TestAnotherAppsRunIsNotTouched(t *testing.T) {
	gh := githubtest.New(t)
	other := newApp(t, gh, testOptions())
	other.appID = 8 // lists as App 8: finds nothing of its own
	mine := newApp(t, gh, testOptions())
	publish(t, mine, preview("prod", "success"))
	publish(t, other, preview("prod", "neutral"))
	runs := gh.CheckRuns("shop", "web")
	if len(runs) != 2 || runs[0].Conclusion != "success" {
		t.Errorf("runs %+v: want App 7's run left as it was and a second one", runs)
	}
}

func TestSummaryIsCappedWithTheLink(t *testing.T) {
	note := "**… truncated; full diff: " + details + "**"
	tests := []struct {
		name    string
		summary string
		cut     bool
	}{
		{"at GitHub's limit: kept", strings.Repeat("x", maxSummary), false},
		{"one over: cut with the link", strings.Repeat("x", maxSummary+1), true},
		{"cut inside a code block: the block is closed", "```\n" + strings.Repeat("é", maxSummary), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gh := githubtest.New(t)
			p := newApp(t, gh, testOptions())
			r := preview("prod", "success")
			r.Summary = tt.summary
			publish(t, p, r)
			got := gh.CheckRuns("shop", "web")[0].Summary
			if len(got) > maxSummary {
				t.Errorf("summary has %d bytes, over GitHub's %d", len(got), maxSummary)
			}
			if cut := strings.HasSuffix(got, note+"\n"); cut != tt.cut {
				t.Errorf("summary ends with the note: %v, want %v: …%s", cut, tt.cut, got[max(len(got)-200, 0):])
			}
			if !tt.cut && got != tt.summary {
				t.Error("summary was changed though it fits")
			}
			if strings.Count(got, "```")%2 != 0 {
				t.Error("summary leaves a code block open")
			}
		})
	}
}

func TestTokenPathSetsAStatusAndEditsOneCommentPerEnvironment(t *testing.T) {
	gh := githubtest.New(t)
	p := newToken(t, gh, testOptions())
	publish(t, p, preview("prod", "success"))
	second := preview("prod", "neutral")
	second.Title = "no changes " + strings.Repeat("long ", 40)
	publish(t, p, second)
	publish(t, p, preview("staging", "failure"))

	want := []string{
		"POST /repos/shop/web/statuses/" + head,
		"GET /user",
		"GET /repos/shop/web/issues/7/comments",
		"POST /repos/shop/web/issues/7/comments",
		"POST /repos/shop/web/statuses/" + head,
		"GET /repos/shop/web/issues/7/comments",
		"PATCH /repos/shop/web/issues/comments/1001",
		"POST /repos/shop/web/statuses/" + head,
		"GET /repos/shop/web/issues/7/comments",
		"POST /repos/shop/web/issues/7/comments",
	}
	if diff := cmp.Diff(want, requests(gh)); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	var statuses []string
	for _, c := range gh.Calls() {
		if strings.Contains(c.Path, "/statuses/") {
			desc, _ := c.Body["description"].(string)
			statuses = append(statuses, fmt.Sprintf("%s %s %s (%d chars)", c.Body["context"], c.State(), c.Body["target_url"], len([]rune(desc))))
		}
	}
	wantStatuses := []string{
		"deployd / prod success " + details + " (18 chars)",
		"deployd / prod success " + details + " (140 chars)", // neutral: nothing would change, no reason to block a merge
		"deployd / staging failure " + details + " (18 chars)",
	}
	if diff := cmp.Diff(wantStatuses, statuses); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	comments := gh.Comments("shop", "web")
	if len(comments) != 2 {
		t.Fatalf("%d comments, want one per environment", len(comments))
	}
	for i, want := range []string{"<!-- deployd-preview:prod -->\n### ➖ deployd / prod: no changes", "<!-- deployd-preview:staging -->\n### ❌ deployd / staging: 1 changed"} {
		if c := comments[i]; !strings.HasPrefix(c.Body, want) || c.User != githubtest.TokenUser || !strings.Contains(c.Body, "[full diff]("+details+")") {
			t.Errorf("comment %d by %s:\n%s\nwant it to start with %q and link the diff", i, c.User, c.Body, want)
		}
	}
	publish(t, p, preview("staging", "failure"))
	if n := len(requests(gh)); n != len(want)+2 {
		t.Errorf("publishing the same again made %d requests, want 2 (the status, the list): the comment is unchanged", n-len(want))
	}
}

func TestRemoveSaysThePreviewWasRemoved(t *testing.T) {
	gh := githubtest.New(t)
	p := newToken(t, gh, testOptions())
	publish(t, p, preview("prod", "success"))
	publish(t, p, preview("staging", "success"))
	if err := p.Remove(context.Background(), "shop", "web", 7); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range gh.Comments("shop", "web") {
		got = append(got, c.Body)
	}
	want := []string{
		"<!-- deployd-preview:prod -->\n### deployd / prod: preview removed\n\nThis pull request was closed; deployd removed its preview.\n",
		"<!-- deployd-preview:staging -->\n### deployd / staging: preview removed\n\nThis pull request was closed; deployd removed its preview.\n",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("comments (-want +got):\n%s", diff)
	}
}

func TestOthersCommentsWithTheMarkerAreNotOurs(t *testing.T) {
	gh := githubtest.New(t)
	gh.AddComment("shop", "web", 7, "mallory", marker("prod")+"\nnot deployd's")
	p := newToken(t, gh, testOptions())
	publish(t, p, preview("prod", "success"))
	if err := p.Remove(context.Background(), "shop", "web", 7); err != nil {
		t.Fatal(err)
	}
	comments := gh.Comments("shop", "web")
	if len(comments) != 2 || comments[0].Body != marker("prod")+"\nnot deployd's" || comments[1].User != githubtest.TokenUser {
		t.Errorf("comments %+v: want mallory's untouched and deployd's own", comments)
	}
}

func TestCommentSearchIsPagedAndBounded(t *testing.T) {
	gh := githubtest.New(t)
	for i := range 150 {
		gh.AddComment("shop", "web", 7, "someone", fmt.Sprintf("comment %d", i))
	}
	opts := testOptions()
	opts.MaxCommentPages = 2
	p := newToken(t, gh, opts)
	publish(t, p, preview("prod", "success")) // ours is the 151st: on page 2
	publish(t, p, preview("prod", "failure"))
	if n := len(gh.Comments("shop", "web")); n != 151 {
		t.Errorf("%d comments, want 151: ours found on the second page and edited", n)
	}
	for i := range 50 {
		gh.AddComment("shop", "web", 7, "someone", fmt.Sprintf("more %d", i))
	}
	err := p.Publish(context.Background(), preview("staging", "success")) // 201 comments: three pages
	if err == nil || !strings.Contains(err.Error(), "list the pull request's comments: more than 200") {
		t.Errorf("error %v, want the bound named", err)
	}
}

func TestHostileTextIsEscaped(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain words", "plain words"},
		{"cc @admin and @org/team", "cc @\u200badmin and @\u200borg/team"},
		{"a|b` c", `a\|b\` + "`" + ` c`},
		{"<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"},
		{"&lt;", "&amp;lt;"},
		{"two\nlines\r\n| x |", `two lines \| x \|`},
		{"[click](https://evil.example)", `\[click\](https://evil.example)`},
		{"**bold** _it_ ~~s~~", `\*\*bold\*\* \_it\_ \~\~s\~\~`},
		{"fixes other/repo#1", "fixes other/repo#\u200b1"},
		{"nul\x00bell\x07", "nulbell"},
		{`back\slash`, `back\\slash`},
		{"$x^2$", `\$x^2\$`},
	}
	for _, tt := range tests {
		if got := Escape(tt.in); got != tt.want {
			t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}

	gh := githubtest.New(t)
	p := newToken(t, gh, testOptions())
	r := preview("prod", "failure")
	r.Title = "@everyone <b>"
	r.Annotations = []Annotation{
		{Path: "deploy/a|b.yaml", Line: 3, Message: "bad | value\n<script>alert(1)</script> @octocat"},
		{Path: "../../etc/passwd", Line: 1, Message: "escaped the repo @x"},
		{Path: "deploy/x.yaml", Line: 0, Message: "whole file"},
	}
	publish(t, p, r)
	body := gh.Comments("shop", "web")[0].Body
	for _, want := range []string{
		"### ❌ deployd / prod: @\u200beveryone &lt;b&gt;\n",
		"| deploy/a\\|b.yaml | 3 | bad \\| value &lt;script&gt;alert(1)&lt;/script&gt; @\u200boctocat |\n",
		"| deploy/x.yaml | 1 | whole file |\n",
		"**Errors without a file:**\n\n- escaped the repo @\u200bx\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("comment does not contain %q:\n%s", want, body)
		}
	}
	for _, bad := range []string{"<script", "@octocat", "@everyone", "etc/passwd |"} {
		if strings.Contains(body, bad) {
			t.Errorf("comment contains %q:\n%s", bad, body)
		}
	}
}

func TestGitHubFailing(t *testing.T) {
	t.Run("a 500 is tried again", func(t *testing.T) {
		gh := githubtest.New(t)
		p := newApp(t, gh, testOptions())
		gh.Fail(1)
		publish(t, p, preview("prod", "success"))
		if n := len(gh.CheckRuns("shop", "web")); n != 1 {
			t.Errorf("%d check runs, want 1", n)
		}
	})
	tests := []struct {
		name    string
		app     bool
		wantErr string
	}{
		{"check run", true, "shop/web#7 deployd / prod: list the commit's check runs: "},
		{"commit status", false, "shop/web#7 deployd / prod: set the commit status: "},
	}
	for _, tt := range tests {
		t.Run("down: "+tt.name+" fails saying what was being done", func(t *testing.T) {
			gh := githubtest.New(t)
			p := newToken(t, gh, testOptions())
			if tt.app {
				p = newApp(t, gh, testOptions())
			}
			gh.SetDown(true)
			err := p.Publish(context.Background(), preview("prod", "success"))
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "503") {
				t.Errorf("error %v\nwant it to start with %q and give GitHub's 503", err, tt.wantErr)
			}
			if n := len(gh.Calls()); tt.app && n < 3 || !tt.app && n != 3 {
				t.Errorf("%d calls, want 3 attempts", n)
			}
			if err != nil && strings.Contains(err.Error(), "gh-token") {
				t.Errorf("error shows the token: %v", err)
			}
		})
	}
	t.Run("rate limited: waits for the reset, then publishes", func(t *testing.T) {
		gh := githubtest.New(t)
		p := newToken(t, gh, testOptions())
		gh.RateLimit(1)
		publish(t, p, preview("prod", "success"))
		if n := len(gh.Comments("shop", "web")); n != 1 {
			t.Errorf("%d comments, want 1", n)
		}
	})
	t.Run("rate limited past MaxWait: fails at once", func(t *testing.T) {
		gh := githubtest.New(t)
		opts := testOptions()
		opts.MaxWait = 10 * time.Millisecond
		p := newToken(t, gh, opts)
		gh.RateLimit(1)
		err := p.Publish(context.Background(), preview("prod", "success"))
		if err == nil || !strings.Contains(err.Error(), "set the commit status: GitHub asks to wait") {
			t.Errorf("error %v, want the wait named", err)
		}
		if n := len(gh.Calls()); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
	})
	t.Run("a publish waiting behind a slow one gives up with its context", func(t *testing.T) {
		gh := githubtest.New(t)
		p := newToken(t, gh, testOptions())
		unlock, err := p.lock(context.Background(), "shop/web#7")
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err = p.Publish(ctx, preview("prod", "success"))
		if err == nil || !strings.Contains(err.Error(), "shop/web#7: waiting for the previous publish: context deadline exceeded") {
			t.Errorf("error %v", err)
		}
	})
}

func TestEmptyTitleAndSummaryGetDefaults(t *testing.T) {
	gh := githubtest.New(t)
	p := newApp(t, gh, testOptions())
	r := preview("prod", "neutral")
	r.Title, r.Summary = " \n ", ""
	publish(t, p, r)
	run := gh.CheckRuns("shop", "web")[0]
	if run.Title != "no changes" || run.Summary != "no changes" {
		t.Errorf("title %q, summary %q: want GitHub's required fields filled", run.Title, run.Summary)
	}
}

func TestInvalidReportsAreRefused(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Report)
		wantErr string
	}{
		{"short sha", func(r *Report) { r.HeadSHA = "0123456" }, `head "0123456" is not a full commit SHA`},
		{"owner with a slash", func(r *Report) { r.Owner = "shop/../x" }, `"shop/../x"/"web" is not a GitHub owner/repo`},
		{"repo ..", func(r *Report) { r.Repo = ".." }, `is not a GitHub owner/repo`},
		{"no pull request", func(r *Report) { r.PRNumber = 0 }, "pull request number 0 is not positive"},
		{"unknown conclusion", func(r *Report) { r.Conclusion = "cancelled" }, `conclusion "cancelled" is not success, failure or neutral`},
		{"bad environment", func(r *Report) { r.Environment = "Prod -->" }, "is not a valid environment name"},
		{"details URL breaking its link", func(r *Report) { r.DetailsURL = details + ") [x](https://evil" }, "is not an http(s) URL that can be linked"},
		{"details URL not http", func(r *Report) { r.DetailsURL = "javascript:alert(1)" }, "is not an http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gh := githubtest.New(t)
			p := newToken(t, gh, testOptions())
			r := preview("prod", "success")
			tt.edit(&r)
			err := p.Publish(context.Background(), r)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
			if n := len(gh.Calls()); n != 0 {
				t.Errorf("%d calls made for an invalid report", n)
			}
		})
	}
}

func TestConcurrentPublishesMakeOneComment(t *testing.T) {
	gh := githubtest.New(t)
	p := newToken(t, gh, testOptions())
	errs := make([]error, 5)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			r := preview("prod", "success")
			r.Title = fmt.Sprintf("publish %d", i)
			errs[i] = p.Publish(context.Background(), r)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(gh.Comments("shop", "web")); n != 1 {
		t.Errorf("%d comments, want 1", n)
	}
	if n := len(p.locks); n != 0 {
		t.Errorf("%d locks left after the publishes", n)
	}
}
