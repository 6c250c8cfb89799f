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

// waitCmd follows a repo's events until the deployment of a commit ends. Exit codes:
// 0 succeeded (or nothing to deploy), 1 failed, error or superseded, 2 timeout,
// 3 usage or deployd unreachable.
func waitCmd(args []string, stdout, stderr io.Writer) error {
	fs, cf := newClientFlags("wait", stderr)
	commit := fs.String("commit", "", "the commit SHA (or a prefix of at least 7) to wait for")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait")
	owner, repo, err := parseRepo(fs, args)
	if err != nil {
		return err
	}
	if len(*commit) < 7 {
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
		if ctx.Err() != nil {
			if !w.reachable {
				fmt.Fprintf(stderr, "deployd: could not reach %s within %s: %v\n", cf.server, *timeout, err)
				return &ExitError{Code: exitUsage}
			}
			fmt.Fprintf(stderr, "deployd: the deployment of %s did not end within %s\n", source.ShortSHA(w.commit), *timeout)
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
}

func (w *waiter) mine(r client.Record) bool { return strings.HasPrefix(r.Commit.Sha, w.commit) }

// once checks the history, then follows the event stream until the commit's deployment
// ends or the stream breaks.
func (w *waiter) once(ctx context.Context) (phase, msg string, done bool, err error) {
	res, err := w.c.ListHistoryWithResponse(ctx, w.owner, w.repo, &client.ListHistoryParams{Environment: w.cf.env()})
	if err != nil {
		w.reachable = false
		return "", "", false, err
	}
	w.reachable = true
	if res.JSON200 == nil {
		return "", apiError(res.StatusCode(), res.Body).Error(), res.StatusCode() == 404 || res.StatusCode() == 400, nil
	}
	for _, r := range res.JSON200.Records {
		if w.mine(r) {
			if p, m, d := w.show(r); d {
				return p, m, true, nil
			}
			break
		}
	}
	return w.follow(ctx)
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
	case "succeeded", "failed", "error", "superseded", "skipped-no-change", "blocked":
		return phase, msg, true
	}
	return phase, msg, false
}

func (w *waiter) follow(ctx context.Context) (string, string, bool, error) {
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
		return "", "", false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable { // deployd serves as many streams as it may: try again
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return "", "", false, apiError(resp.StatusCode, b)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return "", apiError(resp.StatusCode, b).Error(), true, nil
	}
	sc := bufio.NewScanner(resp.Body)
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
			if json.Unmarshal([]byte(data), &ev) == nil && w.mine(ev.Record) {
				if p, m, d := w.show(ev.Record); d {
					return p, m, true, nil
				}
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
	switch phase {
	case "succeeded":
		return nil
	case "skipped-no-change":
		fmt.Fprintln(w.out, "its manifests equal those already deployed: nothing to do")
		return nil
	case "":
		fmt.Fprintln(stderr, "deployd:", msg)
		return &ExitError{Code: exitUsage}
	}
	if msg == "" {
		msg = phase
	}
	fmt.Fprintf(stderr, "deployd: deployment %s: %s\n", phase, msg)
	return &ExitError{Code: exitFailed}
}
