package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/deployd/deployd/internal/controller"
)

// AnnotationRequests, on a repo's state ConfigMap, lists the requests (webhook pushes,
// API syncs) that followers received for the leader to act on.
const AnnotationRequests = "deployd.dev/requests"

// keep bounds the requests an annotation holds: the leader acts on each within moments,
// older ones are only there until the next write trims them.
const (
	keepRequests = 20
	keepFor      = 10 * time.Minute
)

// Handed is a request a follower handed over.
type Handed struct {
	// ID tells requests apart, so each is acted on once.
	ID string `json:"id"`
	// At is when the follower received it.
	At      time.Time          `json:"at"`
	Request controller.Request `json:"request"`
}

// Handoff writes requests into state ConfigMaps for the leader.
type Handoff struct {
	kube      kubernetes.Interface
	namespace string
	now       func() time.Time
}

// NewHandoff returns a Handoff writing to the state ConfigMaps in namespace.
func NewHandoff(kube kubernetes.Interface, namespace string) *Handoff {
	return &Handoff{kube: kube, namespace: namespace, now: time.Now}
}

// Hand adds req to the named state ConfigMap's requests, creating the ConfigMap with
// meta when the repo has none yet. The write is conditional: a concurrent one (the
// leader recording a deployment, another follower) is never overwritten.
func (h *Handoff) Hand(ctx context.Context, name string, meta metav1.ObjectMeta, req controller.Request) error {
	cms := h.kube.CoreV1().ConfigMaps(h.namespace)
	item := Handed{ID: newID(), At: h.now().UTC(), Request: req}
	for attempt := 0; ; attempt++ {
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		missing := apierrors.IsNotFound(err)
		if err != nil && !missing {
			return fmt.Errorf("handing the request to the leader: reading ConfigMap/%s/%s: %w", h.namespace, name, err)
		}
		if missing {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.namespace, Labels: meta.Labels, Annotations: map[string]string{}}}
			for k, v := range meta.Annotations {
				cm.Annotations[k] = v
			}
		}
		list := append(Requests(cm), item)
		list = trim(list, item.At)
		raw, err := json.Marshal(list)
		if err != nil {
			return err
		}
		if cm.Annotations == nil {
			cm.Annotations = map[string]string{}
		}
		cm.Annotations[AnnotationRequests] = string(raw)
		if missing {
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		} else {
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		}
		if err == nil {
			return nil
		}
		if (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err)) && attempt < 20 {
			continue
		}
		return fmt.Errorf("handing the request to the leader: writing ConfigMap/%s/%s: %w", h.namespace, name, err)
	}
}

// trim keeps the newest requests younger than keepFor.
func trim(list []Handed, now time.Time) []Handed {
	out := list[:0]
	for _, h := range list {
		if now.Sub(h.At) < keepFor {
			out = append(out, h)
		}
	}
	if len(out) > keepRequests {
		out = out[len(out)-keepRequests:]
	}
	return out
}

// Requests reads the requests a state ConfigMap holds; a damaged annotation holds none.
func Requests(cm *corev1.ConfigMap) []Handed {
	raw := cm.Annotations[AnnotationRequests]
	if raw == "" {
		return nil
	}
	var list []Handed
	if json.Unmarshal([]byte(raw), &list) != nil {
		return nil
	}
	return list
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Inbox hands the leader each request once.
type Inbox struct {
	since time.Time
	mu    sync.Mutex
	seen  map[string]time.Time // ID -> At, forgotten once older than keepFor
}

// NewInbox returns an inbox that takes requests received after since: a new leader
// passes the time it started leading less a lease duration, so requests handed to a
// leader that died before acting on them are acted on (some perhaps twice), and older
// ones, already acted on, are not.
func NewInbox(since time.Time) *Inbox {
	return &Inbox{since: since, seen: map[string]time.Time{}}
}

// Take returns the requests in cm not taken before.
func (in *Inbox) Take(cm *corev1.ConfigMap) []controller.Request {
	list := Requests(cm)
	if len(list) == 0 {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []controller.Request
	now := time.Now()
	for _, h := range list {
		if _, ok := in.seen[h.ID]; ok || h.At.Before(in.since) || now.Sub(h.At) > keepFor {
			continue
		}
		in.seen[h.ID] = h.At
		out = append(out, h.Request)
	}
	if len(in.seen) > 4096 {
		cutoff := now.Add(-2 * keepFor)
		for id, at := range in.seen {
			if at.Before(cutoff) {
				delete(in.seen, id)
			}
		}
	}
	return out
}
