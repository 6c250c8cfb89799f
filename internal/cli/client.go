package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	sigsyaml "sigs.k8s.io/yaml"

	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/pkg/client"
)

// Exit codes of the client commands.
const (
	exitFailed  = 1 // the deployment failed or errored
	exitTimeout = 2 // it did not end within --timeout
	exitUsage   = 3 // bad usage, or deployd could not be reached
)

// clientFlags are the flags every client command shares.
type clientFlags struct {
	server, tokenFile, environment string
}

func newClientFlags(name string, stderr io.Writer) (*flag.FlagSet, *clientFlags) {
	fs := flag.NewFlagSet("deployd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cf := &clientFlags{}
	server := os.Getenv("DEPLOYD_SERVER")
	if server == "" {
		server = "http://localhost:8080"
	}
	fs.StringVar(&cf.server, "server", server, "deployd's URL ($DEPLOYD_SERVER)")
	fs.StringVar(&cf.tokenFile, "token-file", "", "file with the API token (else $DEPLOYD_TOKEN)")
	fs.StringVar(&cf.environment, "environment", "", "the environment, when the repo has several")
	return fs, cf
}

func (cf *clientFlags) client() (*client.ClientWithResponses, error) {
	token := os.Getenv("DEPLOYD_TOKEN")
	if cf.tokenFile != "" {
		b, err := os.ReadFile(cf.tokenFile)
		if err != nil {
			return nil, &usageError{fmt.Errorf("--token-file: %w", err)}
		}
		token = strings.TrimSpace(string(b))
	}
	opts := []client.ClientOption{client.WithHTTPClient(&http.Client{Timeout: 30 * time.Second})}
	if token != "" {
		opts = append(opts, client.WithRequestEditorFn(func(ctx context.Context, req *http.Request) error {
			req.Header.Set("Authorization", "Bearer "+token)
			return nil
		}))
	}
	return client.NewClientWithResponses(strings.TrimSuffix(cf.server, "/"), opts...)
}

func (cf *clientFlags) env() *string {
	if cf.environment == "" {
		return nil
	}
	return &cf.environment
}

// usageError ends a client command with exit code 3.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// parseRepo parses flags given before or after the OWNER/REPO argument, and splits it.
func parseRepo(fs *flag.FlagSet, args []string) (string, string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return "", "", &usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		return "", "", &usageError{fmt.Errorf("give the repo as OWNER/REPO (see deployd %s --help)", strings.TrimPrefix(fs.Name(), "deployd "))}
	}
	owner, repo, ok := strings.Cut(positional[0], "/")
	if !ok || owner == "" || repo == "" || strings.Contains(repo, "/") {
		return "", "", &usageError{fmt.Errorf("%q is not OWNER/REPO", positional[0])}
	}
	return owner, repo, nil
}

// runClient runs a client command, mapping its errors to exit codes.
func runClient(err error, stderr io.Writer) error {
	var ue *usageError
	var exit *ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit):
		return err
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "deployd:", err)
		return &ExitError{Code: exitUsage}
	}
	fmt.Fprintln(stderr, "deployd:", err)
	return &ExitError{Code: exitUsage}
}

// apiError turns a non-2xx answer into an error with the server's message.
func apiError(code int, body []byte) error {
	var p struct {
		Detail string `json:"detail"`
	}
	if json.Unmarshal(body, &p) == nil && p.Detail != "" {
		return fmt.Errorf("%d: %s", code, p.Detail)
	}
	return fmt.Errorf("deployd answered %d", code)
}

func status(args []string, stdout, stderr io.Writer) error {
	fs, cf := newClientFlags("status", stderr)
	output := fs.String("o", "table", "output: table, json or yaml")
	owner, repo, err := parseRepo(fs, args)
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	res, err := c.GetDeploymentWithResponse(context.Background(), owner, repo, &client.GetDeploymentParams{Environment: cf.env()})
	if err != nil {
		return &usageError{fmt.Errorf("reaching deployd at %s: %w", cf.server, err)}
	}
	if res.JSON200 == nil {
		return &usageError{apiError(res.StatusCode(), res.Body)}
	}
	switch *output {
	case "json":
		_, err = stdout.Write(append(res.Body, '\n'))
		return err
	case "yaml":
		y, err := sigsyaml.JSONToYAML(res.Body)
		if err != nil {
			return err
		}
		_, err = stdout.Write(y)
		return err
	case "table":
		return statusTable(stdout, res.JSON200, colorOutput(stdout, os.Getenv, isTerminal))
	}
	return &usageError{fmt.Errorf("-o %q: use table, json or yaml", *output)}
}

// colorOutput says whether to colour what goes to w: only on a terminal, and not when
// NO_COLOR is set (https://no-color.org) or TERM is dumb. Colour only repeats what the
// text says.
func colorOutput(w io.Writer, getenv func(string) string, terminal func(io.Writer) bool) bool {
	if getenv("NO_COLOR") != "" || getenv("TERM") == "dumb" {
		return false
	}
	return terminal(w)
}

// isTerminal says whether w is a character device, such as a terminal; a pipe or a file is not.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// colors maps phases and rollout statuses to ANSI colours: every code has two digits, so
// each coloured cell is 9 bytes longer than its text and tabwriter's columns stay aligned.
var colors = map[string]string{
	"succeeded": "32", "Current": "32",
	"queued": "33", "applying": "33", "waiting": "33", "InProgress": "33", "Terminating": "33", "PAUSED": "33", "OUT OF SYNC": "33",
	"failed": "31", "error": "31", "Failed": "31", "NotFound": "31",
	"superseded": "90", "skipped-no-change": "90",
}

// paint colours s when on, by its own text; text without a colour keeps the default one.
func paint(on bool, s string) string {
	if !on {
		return s
	}
	code, ok := colors[s]
	if !ok {
		code = "39"
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func statusTable(w io.Writer, st *client.RepoStatus, color bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\n", st.Repo)
	for _, e := range st.Environments {
		commit := "-"
		if e.DeployedCommit != nil {
			commit = source.ShortSHA(*e.DeployedCommit)
		}
		paused := ""
		if e.Paused {
			paused = "  " + paint(color, "PAUSED")
			if e.PauseReason != nil {
				paused += " (" + *e.PauseReason + ")"
			}
		}
		fmt.Fprintf(tw, "\nENVIRONMENT %s  namespace %s  commit %s  phase %s  rollout %s%s\n", e.Environment, e.Namespace, commit, paint(color, string(e.Phase)), paint(color, string(e.Rollout)), paused)
		if e.Current != nil && e.Current.Error != nil {
			fmt.Fprintf(tw, "  %s: %s\n", paint(color, "error"), *e.Current.Error)
		}
		promotionLine(tw, e.Promotion)
		if !e.InSync && e.DeployedCommit != nil {
			why := ""
			if e.DriftReason != nil {
				why = " (" + *e.DriftReason + ")"
			}
			fmt.Fprintf(tw, "  %s: the cluster drifted from the applied manifests%s\n", paint(color, "OUT OF SYNC"), why)
		}
		fmt.Fprintf(tw, "  KIND\tNAME\t%s\tREADY\tMESSAGE\n", paint(color, "STATUS"))
		for _, o := range e.Objects {
			ready, msg := "-", ""
			if o.Replicas != nil {
				ready = fmt.Sprintf("%d/%d", o.Replicas.Available, o.Replicas.Desired)
			}
			if o.Message != nil {
				msg = *o.Message
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", o.Kind, o.Name, paint(color, string(o.Status)), ready, msg)
			if o.Drift != nil {
				fmt.Fprintf(tw, "    drifted: %s\n", driftText(*o.Drift))
			}
		}
	}
	return tw.Flush()
}

// driftText says how an object drifted, e.g. ".spec.replicas by kubectl".
func driftText(d client.ObjectDrift) string {
	if d.Deleted {
		return "deleted"
	}
	var parts []string
	for _, f := range d.Fields {
		by := "another writer"
		if f.Manager != nil {
			by = *f.Manager
		}
		parts = append(parts, f.Path+" by "+by)
	}
	return strings.Join(parts, ", ")
}

// action runs sync, pause, resume or rollback.
func action(name string, args []string, stdout, stderr io.Writer) error {
	fs, cf := newClientFlags(name, stderr)
	force := fs.Bool("force", false, "sync: deploy even unchanged manifests")
	to := fs.Int("to", 0, "rollback: the number of the earlier successful deployment")
	reason := fs.String("reason", "", "pause: why")
	owner, repo, err := parseRepo(fs, args)
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	ctx := context.Background()
	var code int
	var body []byte
	switch name {
	case "sync":
		res, e := c.SyncWithResponse(ctx, owner, repo, &client.SyncParams{Environment: cf.env(), Force: force})
		err = e
		if res != nil {
			code, body = res.StatusCode(), res.Body
		}
	case "pause":
		var r *string
		if *reason != "" {
			r = reason
		}
		res, e := c.PauseWithResponse(ctx, owner, repo, &client.PauseParams{Environment: cf.env(), Reason: r})
		err = e
		if res != nil {
			code, body = res.StatusCode(), res.Body
		}
	case "resume":
		res, e := c.ResumeWithResponse(ctx, owner, repo, &client.ResumeParams{Environment: cf.env()})
		err = e
		if res != nil {
			code, body = res.StatusCode(), res.Body
		}
	case "rollback":
		if *to < 1 {
			return &usageError{errors.New("rollback needs --to N, the number of an earlier successful deployment")}
		}
		res, e := c.RollbackWithResponse(ctx, owner, repo, &client.RollbackParams{Environment: cf.env(), To: int64(*to)})
		err = e
		if res != nil {
			code, body = res.StatusCode(), res.Body
		}
	}
	if err != nil {
		return &usageError{fmt.Errorf("reaching deployd at %s: %w", cf.server, err)}
	}
	if code/100 != 2 {
		fmt.Fprintln(stderr, "deployd:", apiError(code, body))
		return &ExitError{Code: exitFailed}
	}
	var msg struct {
		Message string `json:"message"`
		Paused  *bool  `json:"paused"`
	}
	_ = json.Unmarshal(body, &msg)
	switch {
	case msg.Message != "":
		fmt.Fprintln(stdout, msg.Message)
	case msg.Paused != nil && *msg.Paused:
		fmt.Fprintf(stdout, "%s/%s paused\n", owner, repo)
	default:
		fmt.Fprintf(stdout, "%s/%s resumed\n", owner, repo)
	}
	return nil
}
