package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/pkg/client"
)

// waitCmd follows a repo's events until the deployment of a commit ends: the commit's
// own, or that of a descendant deployd deployed instead (a newer push overtook it), which
// deployd names (see locate). Exit codes: 0 succeeded (or nothing to deploy), 1 failed,
// error, superseded by a deployment without the commit, or the commit is not on the
// branch, 2 timeout, 3 usage or deployd unreachable.
func waitCmd(args []string, stdout, stderr io.Writer) error {
	fs, cf := newClientFlags("wait", stderr)
	commit := fs.String("commit", "", "the commit SHA (or a prefix of at least 7) to wait for: its deployment, or that of a newer commit containing it")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait")
	owner, repo, err := parseRepo(fs, args)
	if err != nil {
		return err
	}
	if len(*commit) < 7 || len(*commit) > 40 || strings.Trim(strings.ToLower(*commit), "0123456789abcdef") != "" {
		return &usageError{errors.New("--commit needs the SHA, or at least its first 7 characters")}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	w := &waiter{c: c, cf: cf, owner: owner, repo: repo, commit: strings.ToLower(*commit), out: stdout}
	for {
		phase, msg, done, err := w.once(ctx)
		if done {
			return w.finish(phase, msg, stderr)
		}
		if errors.Is(err, errRecheck) {
			continue
		}
		if ctx.Err() != nil {
			if !w.reachable {
				fmt.Fprintf(stderr, "deployd: could not reach %s within %s: %v\n", cf.server, *timeout, err)
				return &ExitError{Code: exitUsage}
			}
			fmt.Fprintf(stderr, "deployd: the deployment of %s did not end within %s%s\n", source.ShortSHA(w.commit), *timeout, w.unseen())
			return &ExitError{Code: exitTimeout}
		}
		if err != nil {
			fmt.Fprintf(stdout, "connection to deployd lost (%v); reconnecting\n", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

type waiter struct {
	c                  *client.ClientWithResponses
	cf                 *clientFlags
	owner, repo        string
	commit             string
	out                io.Writer
	reachable, started bool
	lastPhase          string
	// carrier is the commit whose deployment is followed when it is not the one asked
	// for but a descendant of it; after is the number of a followed deployment that was
	// superseded: only newer ones count; checked is the newest record number that
	// locate was asked after; head is the branch head deployd last saw, and firstHead
	// the one it saw when the wait began.
	carrier         string
	after, checked  int
	head, firstHead string
	// outside is set when deployd read the whole history of head without the commit.
	outside bool
	// full is the commit's full SHA once deployd named it.
	full string
}

// shown is the commit as the output names it: its first 12 digits.
func (w *waiter) shown() string {
	if w.full != "" {
		return source.ShortSHA(w.full)
	}
	return source.ShortSHA(w.commit)
}

// errRecheck ends following the events to list the history and locate the commit again.
var errRecheck = errors.New("a new deployment: locate the commit again")

func (w *waiter) mine(r client.Record) bool {
	if r.Number <= int64(w.after) {
		return false
	}
	return strings.HasPrefix(r.Commit.Sha, w.commit) || (w.carrier != "" && r.Commit.Sha == w.carrier)
}

// once opens the event stream, checks the history (after: a change in between is in
// the stream), then follows the stream until the commit's deployment ends or it breaks.
func (w *waiter) once(ctx context.Context) (phase, msg string, done bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, phase, msg, done, err := w.open(ctx)
	if stream == nil {
		return phase, msg, done, err
	}
	defer stream.Close()
	res, err := w.c.ListHistoryWithResponse(ctx, w.owner, w.repo, &client.ListHistoryParams{Environment: w.cf.env()})
	if err != nil {
		w.reachable = false
		return "", "", false, err
	}
	w.reachable = true
	if res.JSON200 == nil {
		return "", apiError(res.StatusCode(), res.Body).Error(), res.StatusCode() == 404 || res.StatusCode() == 400, nil
	}
	newest, found := 0, false
	if recs := res.JSON200.Records; len(recs) > 0 {
		newest = int(recs[0].Number)
	}
	for _, r := range res.JSON200.Records {
		if w.mine(r) {
			found = true
			if p, m, d := w.show(r); d {
				return p, m, true, nil
			}
			break
		}
	}
	if !found {
		if p, m, d := w.locate(ctx, newest); d {
			return p, m, true, nil
		}
	}
	return w.follow(ctx, stream)
}

// locate asks deployd which deployment carries the commit (it, or a descendant deployd
// deployed instead), and follows that one; it ends the wait when deployd read the whole
// branch without it, or when the deployment that superseded the followed one lacks it.
func (w *waiter) locate(ctx context.Context, newest int) (string, string, bool) {
	w.checked = max(w.checked, newest)
	res, err := w.c.GetCommitDeploymentWithResponse(ctx, w.owner, w.repo, w.commit, &client.GetCommitDeploymentParams{Environment: w.cf.env()})
	if err != nil || res.JSON200 == nil {
		return "", "", false // an older deployd, or a blip: the events still tell of the commit itself
	}
	found := res.JSON200
	if found.Head != nil {
		w.head = *found.Head
		if w.firstHead == "" {
			w.firstHead = w.head
		}
	}
	w.outside = found.State == client.CommitDeploymentStateNotOnBranch
	if len(found.Commit) == 40 {
		w.full = found.Commit
	}
	switch {
	case found.State == client.CommitDeploymentStateCarried && found.Record != nil && found.Record.Number > int64(w.after):
		r := *found.Record
		if !strings.HasPrefix(r.Commit.Sha, w.commit) && r.Commit.Sha != w.carrier {
			w.carrier = r.Commit.Sha
			fmt.Fprintf(w.out, "%s is in %s, deployed as %s\n", w.shown(), source.ShortSHA(r.Commit.Sha), r.Name)
		}
		return w.show(r)
	case w.outside && w.head != w.firstHead:
		// Only once the branch moved since the wait began: the commit may have been pushed
		// after deployd's last look.
		return "not-on-branch", fmt.Sprintf("%s is not on the branch: deployd read the whole history of its head %s, and the commit is not in it (was the branch force-pushed?)",
			w.shown(), source.ShortSHA(w.head)), true
	case w.after > 0 && newest > w.after:
		return "superseded", fmt.Sprintf("superseded by deployment-%04d, whose commit does not contain %s as far as deployd knows", newest, w.shown()), true
	}
	return "", "", false
}

// unseen says, for a wait that timed out, where the commit stands.
func (w *waiter) unseen() string {
	switch {
	case w.started || w.head == "":
		return ""
	case w.outside:
		return fmt.Sprintf(": deployd has not seen it on the branch, whose head %s does not contain it", source.ShortSHA(w.head))
	}
	return fmt.Sprintf(": deployd has not seen it on the branch, whose head is %s (a commit below deployd's shallow fetch of an older head is not known)", source.ShortSHA(w.head))
}

// show prints a record's phase once, and says whether it is final.
func (w *waiter) show(r client.Record) (string, string, bool) {
	phase := string(r.Phase)
	if phase != w.lastPhase {
		fmt.Fprintf(w.out, "%s %s: %s\n", r.Name, source.ShortSHA(r.Commit.Sha), phase)
		w.lastPhase = phase
	}
	w.started = true
	msg := ""
	if r.Error != nil {
		msg = *r.Error
	}
	switch phase {
	case "superseded":
		// The newer deployment may carry the commit too: locate it once it exists.
		w.after, w.carrier, w.lastPhase = int(r.Number), "", ""
		return phase, msg, false
	case "succeeded", "failed", "error", "skipped-no-change", "blocked":
		return phase, msg, true
	}
	return phase, msg, false
}

// open opens the repo's event stream; without one it returns how once ends.
func (w *waiter) open(ctx context.Context) (io.ReadCloser, string, string, bool, error) {
	u := strings.TrimSuffix(w.cf.server, "/") + "/deployment/" + url.PathEscape(w.owner) + "/" + url.PathEscape(w.repo) + "/events"
	if w.cf.environment != "" {
		u += "?environment=" + url.QueryEscape(w.cf.environment)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if tok := w.token(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.reachable = false
		return nil, "", "", false, err
	}
	w.reachable = true
	if resp.StatusCode == http.StatusOK {
		return resp.Body, "", "", false, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusServiceUnavailable { // deployd serves as many streams as it may: try again
		return nil, "", "", false, apiError(resp.StatusCode, b)
	}
	return nil, "", apiError(resp.StatusCode, b).Error(), true, nil
}

// follow reads the event stream until the commit's deployment ends, a new deployment
// asks to locate the commit again, or the stream breaks.
func (w *waiter) follow(ctx context.Context, stream io.Reader) (string, string, bool, error) {
	sc := bufio.NewScanner(stream)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "event: "); ok {
			event = e
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		switch event {
		case "deployment":
			var ev client.DeploymentEvent
			if json.Unmarshal([]byte(data), &ev) != nil {
				continue
			}
			if w.mine(ev.Record) {
				if p, m, d := w.show(ev.Record); d {
					return p, m, true, nil
				}
				if w.after == int(ev.Record.Number) {
					return "", "", false, errRecheck // superseded
				}
				continue
			}
			if int(ev.Record.Number) > w.checked {
				return "", "", false, errRecheck
			}
		case "object":
			var ev client.ObjectEvent
			if w.started && json.Unmarshal([]byte(data), &ev) == nil {
				o := ev.Object
				ready := ""
				if o.Replicas != nil {
					ready = fmt.Sprintf(" %d/%d ready", o.Replicas.Available, o.Replicas.Desired)
				}
				fmt.Fprintf(w.out, "  %s %s: %s%s\n", o.Kind, o.Name, o.Status, ready)
			}
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return "", "", false, err
	}
	return "", "", false, errors.New("the event stream ended")
}

func (w *waiter) token() string {
	if w.cf.tokenFile != "" {
		b, _ := os.ReadFile(w.cf.tokenFile)
		return strings.TrimSpace(string(b))
	}
	return os.Getenv("DEPLOYD_TOKEN")
}

// finish maps the outcome to the exit code.
func (w *waiter) finish(phase, msg string, stderr io.Writer) error {
	if w.carrier != "" && phase != "" && phase != "not-on-branch" {
		fmt.Fprintf(w.out, "%s was deployed in %s\n", w.shown(), source.ShortSHA(w.carrier))
	}
	switch phase {
	case "succeeded":
		return nil
	case "skipped-no-change":
		fmt.Fprintln(w.out, "its manifests equal those already deployed: nothing to do")
		return nil
	case "":
		fmt.Fprintln(stderr, "deployd:", msg)
		return &ExitError{Code: exitUsage}
	case "not-on-branch":
		fmt.Fprintln(stderr, "deployd:", msg)
		return &ExitError{Code: exitFailed}
	}
	if msg == "" {
		msg = phase
	}
	fmt.Fprintf(stderr, "deployd: deployment %s: %s\n", phase, msg)
	return &ExitError{Code: exitFailed}
}
