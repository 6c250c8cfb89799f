package deploy

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	kwait "k8s.io/apimachinery/pkg/util/wait"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/rollout"
	"github.com/deployd/deployd/internal/source"
)

// TestCRDRedefiningCRDIsAnErrorRecord deploys the set that used to end deployd (a CRD
// declaring the CustomResourceDefinition kind namespaced), then another repo through
// the same runner: the first record names the reason, the second deployment succeeds.
func TestCRDRedefiningCRDIsAnErrorRecord(t *testing.T) {
	hostile, err := os.ReadFile("../apply/testdata/crd-redefines-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, filesByCommit{"bad": {"deploy/crd.yaml": string(hostile)}, "ok": {"deploy/cm.yaml": configMap("a")}})
	f.repo.AllowClusterScoped = true
	err = f.runner.Deploy(context.Background(), controller.Deployment{Repo: f.repo, Revision: source.Revision{Commit: "bad"}, Trigger: controller.TriggerPoll})
	var permanent *controller.PermanentError
	if err == nil || !asPermanent(err, &permanent) {
		t.Fatalf("error %v, want a permanent one", err)
	}
	recs, _ := f.store.List(context.Background(), f.repo)
	if len(recs) != 1 || recs[0].Phase != history.Error || !strings.Contains(recs[0].Error, "a repo may never redefine it") {
		t.Errorf("records %+v", recs)
	}
	other := f.repo
	other.Name, other.Namespace = "shop/other", env.Namespace(t)
	if err := f.runner.Deploy(context.Background(), controller.Deployment{Repo: other, Revision: source.Revision{Commit: "ok"}, Trigger: controller.TriggerPoll}); err != nil {
		t.Fatal(err)
	}
	if e := f.waitEvent(t, 1, history.Succeeded); e.Repo.Name != "shop/other" {
		t.Errorf("succeeded: %s", e.Repo.Name)
	}
}

// panicking applies and waits by calling its function fields.
type panicking struct {
	apply func()
	wait  func()
}

func (p panicking) Apply(context.Context, apply.Request) (apply.Result, error) {
	p.apply()
	return apply.Result{}, nil
}

func (p panicking) Wait(context.Context, []rollout.Target, time.Duration) rollout.WaitResult {
	p.wait()
	return rollout.WaitResult{Outcome: rollout.Succeeded}
}

// TestPanicsAreErrorRecords makes the apply, a goroutine it starts, and the background
// wait panic: each ends the deployment with an error record and a stack for the debug
// log, and the process goes on.
func TestPanicsAreErrorRecords(t *testing.T) {
	var nilMap map[string]int
	tests := []struct {
		name      string
		p         panicking
		permanent bool
		want      string
	}{
		{"in the apply", panicking{apply: func() { nilMap["x"] = 1 }, wait: func() {}}, true,
			"deployd panicked: assignment to entry in nil map (a bug in deployd: the stack is in its debug log)"},
		{"in the background wait", panicking{apply: func() {}, wait: func() { panic("kstatus") }}, false,
			"waiting for the rollout: deployd panicked: kstatus (a bug in deployd: the stack is in its debug log)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, filesByCommit{"c": {"deploy/cm.yaml": configMap("a")}})
			f.runner.applier, f.runner.waiter = tt.p, tt.p
			err := f.runner.Deploy(context.Background(), controller.Deployment{Repo: f.repo, Revision: source.Revision{Commit: "c"}, Trigger: controller.TriggerPoll})
			var permanent *controller.PermanentError
			if got := err != nil && asPermanent(err, &permanent); got != tt.permanent {
				t.Fatalf("Deploy: %v, want permanent %v", err, tt.permanent)
			}
			e := f.waitEvent(t, 1, history.Error)
			if e.Record.Error != tt.want || !strings.Contains(string(e.Stack), "crash_test.go") {
				t.Errorf("error %q, want %q; stack:\n%s", e.Record.Error, tt.want, e.Stack)
			}
			recs, _ := f.store.List(context.Background(), f.repo)
			if len(recs) != 1 || recs[0].Error != tt.want {
				t.Errorf("stored %+v", recs)
			}
		})
	}
}

// TestRecoverCountsCrashes: a commit left unfinished is redone with its crashes
// counted on, and at the second crash it is not redone; a graceful stop is no crash.
func TestRecoverCountsCrashes(t *testing.T) {
	tests := []struct {
		name    string
		left    history.Record
		redo    bool
		crashes int
		want    string
	}{
		{"killed once", history.Record{Phase: history.Applying}, true, 1, "interrupted: deployd was killed"},
		{"stopped", history.Record{Phase: history.Waiting, Stopped: true}, true, 0, "interrupted: deployd stopped"},
		{"stopped after a crash", history.Record{Phase: history.Waiting, Crashes: 1, Stopped: true}, true, 1, "interrupted: deployd stopped"},
		{"killed in the redo of a crash", history.Record{Phase: history.Applying, Crashes: 1}, false, 2,
			"crashed deployd twice: deployd was killed 2 times while deploying commit c (a crash or an out-of-memory kill), so it is not redone at start: push a new commit, or sync with force to try it again"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, filesByCommit{"c": {"deploy/cm.yaml": configMap("a")}})
			ctx := context.Background()
			tt.left.Commit, tt.left.Tree = history.Commit{SHA: "c"}, "tree-c"
			if _, err := f.store.Create(ctx, f.repo, tt.left); err != nil {
				t.Fatal(err)
			}
			rec, err := f.runner.Recover(ctx, f.repo)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Interrupted != tt.redo || (rec.CrashedTree == "tree-c") == tt.redo {
				t.Errorf("recovery %+v, want redo %v", rec, tt.redo)
			}
			stored, _ := f.store.List(ctx, f.repo)
			if got := stored[0]; got.Phase != history.Error || !strings.HasPrefix(got.Error, tt.want) || got.Crashes != tt.crashes || got.Stopped {
				t.Errorf("stored %+v\nwant error %q, %d crashes", got, tt.want, tt.crashes)
			}
			if !tt.redo {
				return
			}
			// The redo's record carries the count on; a later commit's would not.
			f.deploy(t, "c")
			if got := f.waitPhase(t, 2, history.Succeeded); got.Crashes != tt.crashes {
				t.Errorf("the redo's record counts %d crashes, want %d", got.Crashes, tt.crashes)
			}
		})
	}
}

// TestCloseMarksWaitsStopped stops the runner while a rollout is waited for, as a
// graceful shutdown does: the stored record stays unfinished and says it was stopped,
// and the next start redoes it without counting a crash.
func TestCloseMarksWaitsStopped(t *testing.T) {
	f := newFixture(t, filesByCommit{"stuck": {"deploy/web.yaml": workload("web", 1, true, 600)}})
	f.deploy(t, "stuck")
	f.waitPhase(t, 1, history.Waiting)
	f.runner.Close()
	ctx := context.Background()
	stored, _ := f.store.List(ctx, f.repo)
	if len(stored) != 1 || stored[0].Phase != history.Waiting || !stored[0].Stopped {
		t.Fatalf("stored %+v, want one waiting record marked stopped", stored)
	}
	rec, err := New(f.runner.files, f.runner.applier, f.runner.waiter, f.store, nil).Recover(ctx, f.repo)
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.Records[0]; !rec.Interrupted || got.Crashes != 0 || !strings.HasPrefix(got.Error, "interrupted: deployd stopped") {
		t.Errorf("recovery %+v", rec)
	}
}

// TestPanicTellingTheOutcomeIsAnErrorRecord makes the notification of a rollout's end
// panic (in the wait's goroutine, after the wait): deployd goes on, and the stored
// record says what happened.
func TestPanicTellingTheOutcomeIsAnErrorRecord(t *testing.T) {
	f := newFixture(t, filesByCommit{"c": {"deploy/cm.yaml": configMap("a")}})
	f.runner.notify = func(e Event) {
		if e.Record.Phase == history.Succeeded {
			panic("telling of the end")
		}
	}
	f.deploy(t, "c")
	want := "recording the rollout's outcome: deployd panicked: telling of the end"
	var stored []history.Record
	err := kwait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		stored, _ = f.store.List(ctx, f.repo)
		return len(stored) == 1 && stored[0].Phase == history.Error, nil
	})
	if err != nil || !strings.HasPrefix(stored[0].Error, want) {
		t.Errorf("stored %+v, want an error record saying %q", stored, want)
	}
}
