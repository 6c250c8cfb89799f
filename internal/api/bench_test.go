package api

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/rollout"
	"github.com/deployd/deployd/internal/view"
)

// memStatuses answers every object as a rolled-out 3-replica workload, from memory.
type memStatuses struct{}

func (memStatuses) Get(r apply.Ref) rollout.Tracked {
	return rollout.Tracked{Found: true, Changed: time.Now().Add(-time.Minute), ObjectStatus: rollout.ObjectStatus{
		Status: rollout.Current, Message: "Deployment is available. Replicas: 3",
		Replicas: &rollout.Replicas{Desired: 3, Updated: 3, Ready: 3, Available: 3}, Images: []string{"nginx:1.27"}}}
}

func (memStatuses) Changed() <-chan struct{} { return nil }

func (memStatuses) Version() uint64 { return 0 }

// noLive has no cluster behind it: every object is gone.
type noLive struct{}

func (noLive) Live(_ context.Context, r apply.Ref) (*unstructured.Unstructured, error) {
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: strings.ToLower(r.Kind)}, r.Name)
}

// loaded returns a server whose view holds repos repos of objects objects each.
func loaded(b testing.TB, repos, objects int) *Server {
	cfg := &config.Config{}
	for i := range repos {
		cfg.Repos = append(cfg.Repos, config.Repo{Name: fmt.Sprintf("team%d/app%d", i%50, i), URL: "https://git.example/x.git", Namespace: fmt.Sprintf("app%d", i),
			Environment: "prod", Settings: config.Settings{Branch: "main", Path: "deploy/manifests", Timeout: time.Minute}})
	}
	v := view.New(50)
	v.SetConfig(cfg)
	for _, r := range cfg.Repos {
		rec := history.Record{Number: 7, Phase: history.Succeeded, Commit: history.Commit{SHA: "0123456789abcdef0123456789abcdef01234567", Message: "release"},
			Started: time.Now(), Ended: time.Now(), Trigger: "webhook"}
		for j := range objects {
			rec.Objects = append(rec.Objects, history.Object{Object: fmt.Sprintf("Deployment/%s/web%d", r.Namespace, j), APIVersion: "apps/v1",
				Kind: "Deployment", Namespace: r.Namespace, Name: fmt.Sprintf("web%d", j), Action: "unchanged", Status: "Current"})
		}
		v.Record(r.Key(), rec)
	}
	return New(Deps{View: v, Statuses: memStatuses{}, Objects: noLive{}}, Options{})
}

// BenchmarkGetDeployment is the status endpoint's handler alone, with 1,000 repos of
// 10 objects loaded: no Kubernetes or git call is involved.
func BenchmarkGetDeployment(b *testing.B) {
	h := loaded(b, 1000, 10).Handler()
	req := httptest.NewRequest(http.MethodGet, "/deployment/team7/app507", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req.WithContext(context.Background()))
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

func TestLoadedServerAnswers(t *testing.T) {
	h := loaded(t, 20, 10).Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/deployment/team7/app7", nil))
	if rec.Code != http.StatusOK || len(rec.Body.String()) < 1000 {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
}

// BenchmarkFanout is one status change of every object, at 1,000 repos of 10 objects,
// fanned out to 50 streams of every repo: the changes are found and encoded once.
func BenchmarkFanout(b *testing.B) {
	s := loaded(b, 1000, 10)
	statuses := &changingStatuses{message: "first"}
	s.deps.Statuses = statuses
	h := newHub(s, StreamOptions{}.orDefaults())
	h.once.Do(func() {})
	h.last = map[string]string{}
	h.diffObjects(false)
	subs := make([]*sub, 50)
	for i := range subs {
		subs[i] = h.subscribe(nil)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		statuses.set(fmt.Sprint("change ", n))
		h.diffObjects(true)
		for _, sb := range subs {
			for len(sb.ch) > 0 {
				<-sb.ch
			}
		}
	}
}

// requestConn is a connection whose client sends the same request n times and then
// hangs up, and whose answers are dropped (counted).
type requestConn struct {
	net.Conn // nil: only what serveFast calls is here
	req      []byte
	n        int
	answers  int
}

func (c *requestConn) Read(p []byte) (int, error) {
	if c.n == 0 {
		return 0, io.EOF
	}
	c.n--
	return copy(p, c.req), nil
}

func (c *requestConn) Write(p []byte) (int, error)      { c.answers++; return len(p), nil }
func (c *requestConn) SetReadDeadline(time.Time) error  { return nil }
func (c *requestConn) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkFastPath is the status endpoint's fast path alone (Listener): reading a
// client's request, answering it from the cache and writing it, with 1,000 repos of 10
// objects loaded; no socket, Kubernetes or git call is involved.
func BenchmarkFastPath(b *testing.B) {
	s := loaded(b, 1000, 10)
	l := s.Listener(nil, &http.Server{ReadHeaderTimeout: time.Second, IdleTimeout: time.Second, WriteTimeout: time.Second}).(*fastListener)
	rc := &requestConn{req: []byte("GET /deployment/team7/app507 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Go-http-client/1.1\r\n\r\n"), n: b.N}
	b.ReportAllocs()
	b.ResetTimer()
	if l.serveFast(&conn{Conn: rc}) {
		b.Fatal("handed on")
	}
	if rc.answers != b.N {
		b.Fatalf("%d answers to %d requests", rc.answers, b.N)
	}
}
