package promote

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/render"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/internal/view"
)

// fakes is the gate's surroundings: histories per environment, the image each commit
// renders to here, and what was deployed, blocked and shown.
type fakes struct {
	mu       sync.Mutex
	history  map[string][]history.Record // by environment, newest first
	image    map[string]string           // commit → image it renders to here
	deployed []string
	blocked  []string
	shown    view.Promotion
	told     []string // Skipped and Refused calls
}

func (f *fakes) Skipped(ctx context.Context, d controller.Deployment) error {
	f.told = append(f.told, "skipped")
	return nil
}

func (f *fakes) Refused(ctx context.Context, d controller.Deployment, err error) error {
	f.told = append(f.told, "refused")
	return nil
}

func (f *fakes) List(ctx context.Context, repo config.Repo) ([]history.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.history[repo.Environment], nil
}

func (f *fakes) Objects(ctx context.Context, repo config.Repo, commit string) ([]render.Object, error) {
	pod := map[string]any{"kind": "Pod", "spec": map[string]any{"containers": []any{map[string]any{"name": "web", "image": f.image[commit]}}}}
	return []render.Object{{Unstructured: &unstructured.Unstructured{Object: pod}}}, nil
}

func (f *fakes) Blocked(ctx context.Context, d controller.Deployment, why string, images []string) (history.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocked = append(f.blocked, why)
	return history.Record{}, nil
}

func (f *fakes) Deploy(ctx context.Context, d controller.Deployment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deployed = append(f.deployed, d.Revision.Commit)
	return nil
}

func (f *fakes) SetPromotion(key config.Key, p view.Promotion) { f.shown = p }

func TestGate(t *testing.T) {
	staging := config.Repo{Name: "acme/web", Environment: "staging"}
	prod := config.Repo{Name: "acme/web", Environment: "production", PromoteFrom: "staging", Promotion: config.PromotionManual}
	cfg := &config.Config{Repos: []config.Repo{staging, prod}}
	ok := func(n int, sha string) history.Record {
		return history.Record{Number: n, Commit: history.Commit{SHA: sha}, Phase: history.Succeeded, Images: []string{"web:" + sha}, ImagesRecorded: true}
	}
	f := &fakes{history: map[string][]history.Record{"staging": {ok(1, "c1")}}, image: map[string]string{"c1": "web:c1", "c2": "web:c2"}}
	g := New(f, f, f, nil, func() *config.Config { return cfg }, f)
	deploy := func(repo config.Repo, trigger controller.Trigger, commit string) error {
		return g.Deploy(context.Background(), controller.Deployment{Repo: repo, Trigger: trigger, Revision: source.Revision{Commit: commit}})
	}
	held := func(err error) bool { var h *controller.HeldError; return errors.As(err, &h) }

	_ = g.Skipped(context.Background(), controller.Deployment{Repo: prod})
	_ = g.Refused(context.Background(), controller.Deployment{Repo: prod}, errors.New("over"))
	if !cmp.Equal(f.told, []string{"skipped", "refused"}) {
		t.Fatalf("the deployer behind the gate was told %v, want skipped and refused", f.told)
	}
	if err := deploy(staging, controller.TriggerPoll, "c9"); err != nil || len(f.deployed) != 1 {
		t.Fatalf("an entry without promoteFrom passes: %v %v", err, f.deployed)
	}
	f.deployed = nil
	t.Run("manual: a poll shows the ready commit waiting, and a commit not ready does not replace it", func(t *testing.T) {
		if err := deploy(prod, controller.TriggerPoll, "c1"); !held(err) {
			t.Fatalf("manual poll: %v", err)
		}
		if err := deploy(prod, controller.TriggerPoll, "c2"); !held(err) {
			t.Fatalf("manual poll: %v", err)
		}
		if p, _ := g.Waiting(prod.Key()); p.Commit != "c1" || !p.Ready || f.shown.Commit != "c1" {
			t.Errorf("waiting %+v, shown %+v; want c1, ready", p, f.shown)
		}
		if len(f.deployed)+len(f.blocked) != 0 {
			t.Errorf("a manual poll deployed %v or blocked %v", f.deployed, f.blocked)
		}
	})
	t.Run("manual: an explicit request deploys through the gate and clears the waiting commit", func(t *testing.T) {
		if err := deploy(prod, controller.TriggerPromote, "c1"); err != nil {
			t.Fatal(err)
		}
		if _, waiting := g.Waiting(prod.Key()); waiting || f.shown.Commit != "" || !cmp.Equal(f.deployed, []string{"c1"}) {
			t.Errorf("after the promotion: waiting %v, shown %+v, deployed %v", waiting, f.shown, f.deployed)
		}
	})
	t.Run("an explicit request is recorded each time it is blocked", func(t *testing.T) {
		for range 2 {
			if err := deploy(prod, controller.TriggerPromote, "c2"); !held(err) {
				t.Fatalf("promote c2: %v", err)
			}
		}
		want := "staging has not succeeded with c2: it has not deployed it"
		if !cmp.Equal(f.blocked, []string{want, want}) {
			t.Errorf("blocked %q, want twice %q", f.blocked, want)
		}
	})
	t.Run("auto: a refusal is recorded once; a commit that runs here already is not redeployed", func(t *testing.T) {
		auto := prod
		auto.Promotion = config.PromotionAuto
		f.blocked = nil
		f.history["staging"] = []history.Record{ok(2, "c2"), ok(1, "c1")}
		f.image["c2"] = "web:other"
		for range 2 {
			if err := deploy(auto, controller.TriggerPromoteAuto, "c2"); !held(err) {
				t.Fatalf("auto c2: %v", err)
			}
		}
		if want := []string{"image web: staging ran web:c2, production would run web:other"}; !cmp.Equal(f.blocked, want) {
			t.Errorf("blocked %q, want %q", f.blocked, want)
		}
		f.history["production"] = []history.Record{{Number: 1, Commit: history.Commit{SHA: "c1"}, Phase: history.Succeeded}}
		f.deployed = nil
		if err := deploy(auto, controller.TriggerPromoteAuto, "c1"); !held(err) || len(f.deployed) != 0 {
			t.Errorf("c1 again: %v, deployed %v", err, f.deployed)
		}
		if err := deploy(auto, controller.TriggerDrift, "c1"); err != nil || len(f.deployed) != 1 {
			t.Errorf("a drift correction passes: %v, deployed %v", err, f.deployed)
		}
	})
	t.Run("a source in another cluster without GitHub fails for good", func(t *testing.T) {
		remote := config.Repo{Name: "acme/api", Environment: "production", PromoteFrom: "staging"}
		var permanent *controller.PermanentError
		if err := deploy(remote, controller.TriggerPoll, "c1"); !errors.As(err, &permanent) {
			t.Errorf("err = %v, want a permanent error", err)
		}
	})
}
