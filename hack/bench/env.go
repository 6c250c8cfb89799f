package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/deployd/deployd/internal/githubtest"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/simcluster"
	"github.com/deployd/deployd/internal/webhook"
	"github.com/deployd/deployd/pkg/client"
)

// env is what every scenario runs against: a simulated cluster, a smart-HTTP git
// server, the GitHub stand-in, and the deployd binary under test.
type env struct {
	opts    options
	dir     string
	tb      *gittest.Standalone
	cluster *simcluster.Cluster
	kube    kubernetes.Interface
	git     *gittest.Server
	gh      *githubtest.Server
	secret  string
	kubectl string
	// idle is set while the harness runs at idle priority (scenario 6's pin).
	idle bool
}

func newEnv(ctx context.Context, opts options) (*env, error) {
	dir, err := os.MkdirTemp("", "deployd-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{opts: opts, dir: dir, tb: &gittest.Standalone{Dir: dir}, secret: "bench-webhook-secret"}
	copts := simcluster.DefaultOptions()
	copts.Progress = os.Stderr
	if e.cluster, err = simcluster.Start(ctx, copts); err != nil {
		return nil, err
	}
	cfg := *e.cluster.Config
	if e.kube, err = kubernetes.NewForConfig(&cfg); err != nil {
		return nil, err
	}
	bin, err := simcluster.Binaries(ctx, io.Discard)
	if err != nil {
		return nil, err
	}
	e.kubectl = filepath.Join(bin, "kubectl")
	e.git = gittest.NewServer(e.tb)
	e.gh = githubtest.New(e.tb)
	for name, content := range map[string]string{"secret": e.secret, "github-token": "bench-github-token"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *env) close() {
	e.tb.Close()
	if e.cluster != nil {
		_ = e.cluster.Stop()
	}
	if e.opts.keep {
		progress("kept %s (deployd logs in */deployd.log)", e.dir)
		return
	}
	_ = os.RemoveAll(e.dir)
}

// repoEntry is one repos.yaml entry.
type repoEntry struct {
	Name, URL, Namespace string
	Interval             time.Duration
}

func writeConfig(path string, repos []repoEntry) error {
	var b strings.Builder
	b.WriteString("defaults: {timeout: 5m}\nrepos:\n")
	for _, r := range repos {
		fmt.Fprintf(&b, "  - {name: %s, url: '%s', namespace: %s, environment: bench, interval: %s}\n", r.Name, r.URL, r.Namespace, r.Interval)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path) // deployd sees one complete change
}

// daemon is a running deployd binary.
type daemon struct {
	cmd     *exec.Cmd
	addr    string
	debug   string
	config  string
	log     string
	started time.Time
	api     *client.ClientWithResponses
}

// startDeployd runs the deployd binary with repos as its config, on free ports.
func (e *env) startDeployd(name string, repos []repoEntry, extra ...string) (*daemon, error) {
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d := &daemon{addr: freeAddr(), debug: freeAddr(), config: filepath.Join(dir, "repos.yaml"), log: filepath.Join(dir, "deployd.log")}
	if err := writeConfig(d.config, repos); err != nil {
		return nil, err
	}
	logFile, err := os.Create(d.log)
	if err != nil {
		return nil, err
	}
	args := append([]string{
		"--config", d.config, "--kubeconfig", e.cluster.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--namespace", "deployd", "--listen", d.addr, "--debug-listen", d.debug,
		"--webhook-secret-file", filepath.Join(e.dir, "secret"),
		"--github-token-file", filepath.Join(e.dir, "github-token"), "--github-api-url", e.gh.URL,
		"--log-format", "json", "--log-level", e.opts.logLevel,
	}, extra...)
	args = append(args, strings.Fields(e.opts.args)...)
	d.cmd = exec.Command(e.opts.deployd, args...)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // a killed harness leaves no deployd
	d.started = time.Now()
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", e.opts.deployd, err)
	}
	go func() { _ = d.cmd.Wait(); logFile.Close() }()
	if d.api, err = client.NewClientWithResponses("http://" + d.addr); err != nil {
		return nil, err
	}
	return d, nil
}

// stop ends deployd with SIGTERM, as Kubernetes would.
func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for d.cmd.ProcessState == nil {
			time.Sleep(50 * time.Millisecond) // the process' own Wait goroutine sets it
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		_ = d.cmd.Process.Kill()
	}
}

// tail is the end of deployd's log, for error messages (the log goes with the harness).
func (d *daemon) tail() string {
	b, _ := os.ReadFile(d.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "deployd's log ends:\n  " + strings.Join(lines, "\n  ")
}

// summaries returns deployd's list of repos by name.
func (d *daemon) summaries(ctx context.Context) (map[string]client.Summary, error) {
	res, err := d.api.ListDeploymentsWithResponse(ctx, &client.ListDeploymentsParams{})
	if err != nil {
		return nil, err
	}
	if res.JSON200 == nil {
		return nil, fmt.Errorf("GET /deployments: %s", res.Status())
	}
	out := make(map[string]client.Summary, len(res.JSON200.Deployments))
	for _, s := range res.JSON200.Deployments {
		out[s.Repo] = s
	}
	return out, nil
}

// waitFor polls deployd's list every interval until done says so; it returns when
// done first held.
func (d *daemon) waitFor(ctx context.Context, interval time.Duration, done func(map[string]client.Summary) bool) (time.Time, error) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		s, err := d.summaries(ctx)
		if err == nil && done(s) {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%w (last error: %v)\n%s", ctx.Err(), err, d.tail())
		case <-tick.C:
		}
	}
}

// metric sums the samples of a Prometheus counter on deployd's /metrics.
func (d *daemon) metric(ctx context.Context, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum, sc.Err()
}

// push sends a signed GitHub push webhook for repo.
func (e *env) push(ctx context.Context, d *daemon, repo, sha string) error {
	code, err := e.deliver(ctx, http.DefaultClient, d, repo, sha)
	if err != nil {
		return err
	}
	if code/100 != 2 {
		return fmt.Errorf("webhook for %s answered %d %s", repo, code, http.StatusText(code))
	}
	return nil
}

// deliver sends a signed GitHub push webhook for repo through c and returns the answer's
// status code.
func (e *env) deliver(ctx context.Context, c *http.Client, d *daemon, repo, sha string) (int, error) {
	body := []byte(`{"ref":"refs/heads/main","after":"` + sha + `","repository":{"full_name":"` + repo + `"}}`)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+d.addr+"/webhooks/github", bytes.NewReader(body))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", webhook.Signature([]byte(e.secret), body))
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body) // so the connection is reused
	resp.Body.Close()
	return resp.StatusCode, nil
}

// deploymentEvent is what the harness reads of deployd's event stream.
type deploymentEvent struct {
	at     time.Time
	Repo   string `json:"repo"`
	Record struct {
		Number int    `json:"number"`
		Phase  string `json:"phase"`
		Commit struct {
			SHA string `json:"sha"`
		} `json:"commit"`
	} `json:"record"`
}

// follow reads a repo's Server-Sent Events until ctx ends, sending deployment events
// stamped with when they arrived.
func (d *daemon) follow(ctx context.Context, repo string) (<-chan deploymentEvent, error) {
	return d.followWith(ctx, http.DefaultClient, repo)
}

// followWith is follow through client c (one with its own source address, say).
func (d *daemon) followWith(ctx context.Context, c *http.Client, repo string) (<-chan deploymentEvent, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.addr+"/deployment/"+repo+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("events of %s: %s", repo, resp.Status)
	}
	out := make(chan deploymentEvent, 64)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "deployment":
				ev := deploymentEvent{at: time.Now()}
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev) == nil {
					select {
					case out <- ev:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	return out, nil
}

// githubSuccess returns when the stand-in received the success status of the GitHub
// deployment created for sha in repo.
func (e *env) githubSuccess(repo, sha string) (time.Time, bool) {
	calls := e.gh.Calls()
	var id int64
	for _, c := range calls {
		if c.Method == http.MethodPost && c.Path == "/repos/"+repo+"/deployments" && c.Body["ref"] == sha && c.DeploymentID != 0 {
			id = c.DeploymentID
		}
	}
	if id == 0 {
		return time.Time{}, false
	}
	path := fmt.Sprintf("/repos/%s/deployments/%d/statuses", repo, id)
	for _, c := range calls {
		if c.Method == http.MethodPost && c.Path == path && c.State() == "success" && !c.Refused {
			return c.Time, true
		}
	}
	return time.Time{}, false
}

// waitGitHub polls the stand-in's record (in-process, no network) for the success status.
func (e *env) waitGitHub(ctx context.Context, repo, sha string) (time.Time, error) {
	for {
		if t, ok := e.githubSuccess(repo, sha); ok {
			return t, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("no GitHub success status for %s@%s: %w", repo, sha[:12], ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// run runs a command, returning its combined output in the error.
func run(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}
