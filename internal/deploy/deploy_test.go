package deploy

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/rollout"
	"github.com/deployd/deployd/internal/simcluster"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/internal/state"
)

var env *simcluster.Env

func TestMain(m *testing.M) { os.Exit(simcluster.Main(m, &env)) }

// filesByCommit serves each commit's files from memory.
type filesByCommit map[string]map[string]string

func (f filesByCommit) Files(_ config.Repo, commit, dir string, _ source.Limits) (map[string][]byte, error) {
	out := map[string][]byte{}
	for k, v := range f[commit] {
		out[k] = []byte(v)
	}
	return out, nil
}

func workload(name string, replicas int, crash bool, deadline int) string {
	labels := "app: " + name
	if crash {
		labels += ", " + simcluster.CrashLoopLabel + `: "true"`
	}
	return "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: " + name + "}\nspec:\n  replicas: " + string(rune('0'+replicas)) +
		"\n  progressDeadlineSeconds: " + itoa(deadline) + "\n  selector: {matchLabels: {app: " + name + "}}\n  template:\n    metadata: {labels: {" + labels +
		"}}\n    spec: {containers: [{name: web, image: \"nginx:1.27\"}]}\n"
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

type fixture struct {
	runner *Runner
	store  *history.Store
	repo   config.Repo
	events chan Event
	// stateNS holds the state ConfigMaps.
	stateNS string
}

func newFixture(t *testing.T, files Files) *fixture {
	t.Helper()
	ns := env.Namespace(t)
	states := state.New(env.Client, ns)
	opts := apply.DefaultOptions()
	opts.StateNamespace, opts.States = ns, states
	applier, err := apply.New(env.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	tracker, err := rollout.NewTracker(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tracker.Start(ctx)
	t.Cleanup(cancel)
	f := &fixture{store: history.NewStore(states, 50), events: make(chan Event, 100), stateNS: ns}
	f.runner = New(files, applier, tracker, f.store, func(e Event) { f.events <- e })
	t.Cleanup(f.runner.Close)
	f.repo = config.Repo{Name: "shop/web", Namespace: env.Namespace(t), Environment: "dev",
		Settings: config.Settings{Path: "deploy", Timeout: time.Minute, Prune: true}}
	return f
}

func (f *fixture) deploy(t *testing.T, commit string) {
	t.Helper()
	err := f.runner.Deploy(context.Background(), controller.Deployment{Repo: f.repo, Trigger: controller.TriggerWebhook,
		Revision: source.Revision{Commit: commit, Tree: "tree-" + commit, Message: "msg " + commit, Author: "A"}})
	if err != nil {
		t.Fatal(err)
	}
}

// waitPhase waits for record number n to reach phase.
func (f *fixture) waitPhase(t *testing.T, n int, phase history.Phase) history.Record {
	t.Helper()
	return f.waitEvent(t, n, phase).Record
}

// waitEvent waits for the event telling that record number n reached phase.
func (f *fixture) waitEvent(t *testing.T, n int, phase history.Phase) Event {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		select {
		case e := <-f.events:
			if e.Record.Number == n && e.Record.Phase == phase {
				return e
			}
		case <-deadline:
			recs, _ := f.store.List(context.Background(), f.repo)
			t.Fatalf("record %d never reached %s: %+v", n, phase, recs)
		}
	}
}

func TestSuccessRecordsCounts(t *testing.T) {
	f := newFixture(t, filesByCommit{"c1": {"deploy/web.yaml": workload("web", 3, false, 60)}})
	f.deploy(t, "c1")
	rec := f.waitPhase(t, 1, history.Succeeded)
	if len(rec.Objects) != 1 || rec.Objects[0].Status != "Current" || rec.Objects[0].Action != "created" || rec.Trigger != "webhook" || rec.Ended.IsZero() {
		t.Errorf("record %+v", rec)
	}
	stored, _ := f.store.List(context.Background(), f.repo)
	if stored[0].Phase != history.Succeeded || stored[0].Commit.Message != "msg c1" || stored[0].Tree != "tree-c1" {
		t.Errorf("stored %+v", stored[0])
	}
}

func TestFailedRolloutIsRecorded(t *testing.T) {
	f := newFixture(t, filesByCommit{"bad": {"deploy/web.yaml": workload("web", 2, true, 2)}})
	f.deploy(t, "bad")
	rec := f.waitPhase(t, 1, history.Failed)
	if rec.Error != "Deployment web: ProgressDeadlineExceeded" {
		t.Errorf("error %q", rec.Error)
	}
}

func TestTimeoutIsRecorded(t *testing.T) {
	f := newFixture(t, filesByCommit{"slow": {"deploy/web.yaml": workload("web", 3, true, 600)}})
	f.repo.Timeout = 2 * time.Second
	f.deploy(t, "slow")
	rec := f.waitPhase(t, 1, history.Failed)
	if rec.Error != "timed out after 2s waiting for Deployment web: 0 of 3 updated replicas available" {
		t.Errorf("error %q", rec.Error)
	}
}

func TestWaitingHoldsNoWorkerAndIsSuperseded(t *testing.T) {
	f := newFixture(t, filesByCommit{
		"stuck": {"deploy/web.yaml": workload("web", 1, true, 600)},
		"fix":   {"deploy/web.yaml": workload("web", 1, false, 600)},
	})
	// Deploy returns once applied: the rollout is waited for in the background.
	f.deploy(t, "stuck")
	f.waitPhase(t, 1, history.Waiting)
	f.deploy(t, "fix")
	old := f.waitPhase(t, 1, history.Superseded)
	if !strings.Contains(old.Error, "superseded by a newer deployment") {
		t.Errorf("superseded record's error %q", old.Error)
	}
	f.waitPhase(t, 2, history.Succeeded)
}

func TestBadManifestsAreAnErrorRecord(t *testing.T) {
	f := newFixture(t, filesByCommit{"c": {"deploy/x.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\n"}})
	err := f.runner.Deploy(context.Background(), controller.Deployment{Repo: f.repo, Revision: source.Revision{Commit: "c"}, Trigger: controller.TriggerPoll})
	var permanent *controller.PermanentError
	if err == nil || !asPermanent(err, &permanent) {
		t.Fatalf("error %v, want a permanent one", err)
	}
	recs, _ := f.store.List(context.Background(), f.repo)
	if len(recs) != 1 || recs[0].Phase != history.Error || !strings.Contains(recs[0].Error, `namespace "kube-system" is not the repo's namespace`) {
		t.Errorf("records %+v", recs)
	}
}

func TestRecoverMarksInterrupted(t *testing.T) {
	f := newFixture(t, filesByCommit{"ok": {"deploy/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"}})
	f.deploy(t, "ok")
	f.waitPhase(t, 1, history.Succeeded)
	// A deployd killed mid-deployment leaves a record like this one behind.
	if _, err := f.store.Create(context.Background(), f.repo, history.Record{Phase: history.Waiting, Tree: "tree-next"}); err != nil {
		t.Fatal(err)
	}
	rec, err := f.runner.Recover(context.Background(), f.repo)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Interrupted || rec.DeployedTree != "tree-ok" {
		t.Errorf("recovery %+v", rec)
	}
	recs, _ := f.store.List(context.Background(), f.repo)
	if recs[0].Phase != history.Error || !strings.HasPrefix(recs[0].Error, "interrupted") {
		t.Errorf("record %+v", recs[0])
	}
}

func asPermanent(err error, target **controller.PermanentError) bool {
	for e := err; e != nil; {
		if p, ok := e.(*controller.PermanentError); ok {
			*target = p
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

func TestTooManyObjectsAreRefused(t *testing.T) {
	var many strings.Builder
	for i := range 6 {
		fmt.Fprintf(&many, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c%d}\n", i)
	}
	f := newFixture(t, filesByCommit{"c": {"deploy/many.yaml": many.String()}})
	f.runner.MaxObjects = 5
	err := f.runner.Deploy(context.Background(), controller.Deployment{Repo: f.repo, Revision: source.Revision{Commit: "c"}, Trigger: controller.TriggerPoll})
	if err == nil || !strings.Contains(err.Error(), "renders to more than the limit of 5 objects per repo") {
		t.Fatalf("error %v", err)
	}
	recs, _ := f.store.List(context.Background(), f.repo)
	if len(recs) != 1 || recs[0].Phase != history.Error {
		t.Errorf("records %+v", recs)
	}
}

func TestDeletedStateConfigMapIsRebuiltFromLiveObjects(t *testing.T) {
	f := newFixture(t, filesByCommit{
		"c1": {"deploy/a.yaml": configMap("a"), "deploy/b.yaml": configMap("b")},
		"c2": {"deploy/a.yaml": configMap("a")},
	})
	ctx := context.Background()
	f.deploy(t, "c1")
	if rec := f.waitPhase(t, 1, history.Succeeded); rec.Note != "" {
		t.Errorf("first deployment's note %q", rec.Note)
	}
	if err := env.Client.CoreV1().ConfigMaps(f.stateNS).Delete(ctx, f.repo.StateName(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The history went with the ConfigMap: the next deployment is number 1 again.
	f.deploy(t, "c2")
	e := f.waitEvent(t, 1, history.Waiting)
	if e.Rebuilt == nil || e.Rebuilt.Objects != 2 || e.Rebuilt.Commit != "c1" {
		t.Fatalf("event rebuilt %+v, want 2 objects of commit c1", e.Rebuilt)
	}
	rec := f.waitPhase(t, 1, history.Succeeded)
	if rec.Commit.SHA != "c2" || !strings.Contains(rec.Note, "inventory rebuilt from 2 live objects") {
		t.Errorf("record of %s, note %q", rec.Commit.SHA, rec.Note)
	}
	var pruned []string
	for _, o := range rec.Objects {
		if o.Action == string(apply.Pruned) {
			pruned = append(pruned, o.Object)
		}
	}
	if want := "ConfigMap/" + f.repo.Namespace + "/b"; len(pruned) != 1 || pruned[0] != want {
		t.Errorf("pruned %v, want %s", pruned, want)
	}
	stored, err := f.store.List(ctx, f.repo)
	if err != nil || len(stored) != 1 || stored[0].Note != rec.Note {
		t.Errorf("stored %+v (%v): want the note kept", stored, err)
	}
	if _, err := env.Client.CoreV1().ConfigMaps(f.repo.Namespace).Get(ctx, "a", metav1.GetOptions{}); err != nil {
		t.Errorf("a: %v", err)
	}
}

func configMap(name string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata: {k: v}\n"
}

func TestFilesOverALimitAreAPermanentErrorRecord(t *testing.T) {
	repo := gittest.NewRepo(t, t.TempDir(), "web")
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\n"
	repo.Commit("main", "three manifests", map[string]string{
		"deploy/a.yaml": fmt.Sprintf(cm, "a"), "deploy/b.yaml": fmt.Sprintf(cm, "b"), "deploy/c.yaml": fmt.Sprintf(cm, "c"),
	})
	opts := source.DefaultOptions()
	opts.CacheDir = t.TempDir()
	src := source.New(opts)
	f := newFixture(t, src)
	f.repo.URL, f.repo.Branch = repo.FileURL(), "main"
	res, err := src.Check(context.Background(), f.repo)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		lim  func(*source.Limits)
		want string
	}{
		{"more files than the limit", func(l *source.Limits) { l.MaxFiles = 2 },
			"shop/web: deploy has 3 files, more than the limit of 2: keep only manifests there, or set path in repos.yaml to a directory that holds only manifests"},
		{"more bytes than the limit", func(l *source.Limits) { l.MaxTotalBytes = 100 },
			"shop/web: the files in deploy add up to 153 bytes, more than the limit of 100 bytes: keep only manifests there, or set path in repos.yaml to a directory that holds only manifests"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.runner.Limits = source.DefaultLimits()
			tc.lim(&f.runner.Limits)
			err := f.runner.Deploy(context.Background(), controller.Deployment{Repo: f.repo, Revision: res.Revision, Trigger: controller.TriggerPoll})
			var permanent *controller.PermanentError
			if err == nil || !asPermanent(err, &permanent) || err.Error() != tc.want {
				t.Fatalf("error %v\nwant a permanent %s", err, tc.want)
			}
			recs, _ := f.store.List(context.Background(), f.repo)
			if len(recs) != i+1 || recs[0].Phase != history.Error || recs[0].Error != tc.want || len(recs[0].Objects) != 0 {
				t.Errorf("records %+v\nwant the newest an error: %s", recs, tc.want)
			}
		})
	}
}
