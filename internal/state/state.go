// Package state reads and writes deployd's state ConfigMaps (one per repo and environment,
// holding its history, inventory, pause and GitHub ids) and remembers the version it last
// saw, so a write costs one request and a restart reads them all with one list.
//
// The remembered version is only a guess: every write is conditional on its
// resourceVersion, and a conflicting, missing or already existing ConfigMap is read again
// and the change retried, so another writer (a second deployd, a person) is never overwritten.
// Reads answer from what this store last saw: another writer's change is seen at the next
// conflict, or when a watch hands it to Observe (replicas elect one writer, the leader;
// followers watch).
package state

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Store reads and writes the ConfigMaps of one namespace.
type Store struct {
	kube      kubernetes.Interface
	namespace string

	mu sync.Mutex
	// known maps a name to its last seen version; a nil value means it did not exist.
	known map[string]*corev1.ConfigMap
	// deleted holds the names this store saw deleted under it (see Deleted).
	deleted map[string]bool
}

// New returns a store for the ConfigMaps in namespace.
func New(kube kubernetes.Interface, namespace string) *Store {
	return &Store{kube: kube, namespace: namespace, known: map[string]*corev1.ConfigMap{}, deleted: map[string]bool{}}
}

// Namespace is where the store keeps its ConfigMaps.
func (s *Store) Namespace() string { return s.namespace }

// Preload reads every ConfigMap of the namespace with one list, and takes the names in
// names that were not listed as not existing: a restart then costs one request, not one
// per repo.
func (s *Store) Preload(ctx context.Context, names []string) error {
	list, err := s.kube.CoreV1().ConfigMaps(s.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing the state ConfigMaps in namespace %s: %w", s.namespace, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		s.known[n] = nil
	}
	for i := range list.Items {
		cm := list.Items[i]
		s.known[cm.Name] = slim(&cm)
	}
	return nil
}

// slim drops from cm what the store never reads or writes back: its managed fields (an
// update without them keeps the API server's). At 1,000 repos they were half a megabyte.
func slim(cm *corev1.ConfigMap) *corev1.ConfigMap {
	if cm != nil {
		cm.ManagedFields = nil
	}
	return cm
}

// Get returns a copy of the named ConfigMap, or nil when it does not exist.
func (s *Store) Get(ctx context.Context, name string) (*corev1.ConfigMap, error) {
	s.mu.Lock()
	cm, ok := s.known[name]
	s.mu.Unlock()
	if ok {
		return cm.DeepCopy(), nil
	}
	return s.read(ctx, name)
}

// read asks the API server and remembers the answer.
func (s *Store) read(ctx context.Context, name string) (*corev1.ConfigMap, error) {
	cm, err := s.kube.CoreV1().ConfigMaps(s.namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ConfigMap/%s/%s: %w", s.namespace, name, err)
	}
	s.remember(name, cm)
	return cm.DeepCopy(), nil
}

func (s *Store) remember(name string, cm *corev1.ConfigMap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.known[name] = slim(cm)
}

func (s *Store) forget(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.known, name)
}

// markDeleted notes that the named ConfigMap was deleted (by hand, most likely) after
// it was seen.
func (s *Store) markDeleted(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted[name] = true
}

// Deleted reports whether the named ConfigMap was deleted after this store had seen it:
// a write found it gone (and created it again, without what it held), or a watch told
// so. It stays true, so whoever writes the ConfigMap first after the deletion, the
// others can still tell what they find is not what they wrote. A ConfigMap missing when
// first read (a new repo, or one deleted while deployd was stopped) does not count.
func (s *Store) Deleted(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleted[name]
}

// Modify changes the named ConfigMap with change and writes it. A missing ConfigMap is
// created with meta's labels and annotations. change sees the current data (never nil)
// and may be called again after a conflict; when it leaves the data as it was, nothing
// is written.
func (s *Store) Modify(ctx context.Context, name string, meta metav1.ObjectMeta, change func(data map[string]string) error) error {
	cms := s.kube.CoreV1().ConfigMaps(s.namespace)
	for attempt := 0; ; attempt++ {
		cm, err := s.Get(ctx, name) // after forget, read afresh
		if err != nil {
			return err
		}
		if cm == nil {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.namespace, Labels: meta.Labels, Annotations: meta.Annotations}}
		}
		before := maps.Clone(cm.Data)
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		if err := change(cm.Data); err != nil {
			return err
		}
		if cm.ResourceVersion != "" && maps.Equal(before, cm.Data) {
			return nil
		}
		var out *corev1.ConfigMap
		if cm.ResourceVersion == "" {
			out, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		} else {
			out, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		}
		if err == nil {
			s.remember(name, out)
			return nil
		}
		if apierrors.IsNotFound(err) && cm.ResourceVersion != "" {
			s.markDeleted(name)
		}
		stale := apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err)
		if stale && attempt < 20 {
			s.forget(name)
			continue
		}
		s.forget(name) // whatever happened, the next write reads first
		return fmt.Errorf("writing ConfigMap/%s/%s: %w", s.namespace, name, err)
	}
}

// Observe takes cm, as a watch delivered it, for the latest version when it is newer
// than the one remembered, and reports whether it was: another replica's write is then
// read at once, not at the next conflict.
func (s *Store) Observe(cm *corev1.ConfigMap) bool {
	if cm == nil || cm.Namespace != s.namespace {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if known, ok := s.known[cm.Name]; ok && known != nil && !newer(cm.ResourceVersion, known.ResourceVersion) {
		return false
	}
	s.known[cm.Name] = slim(cm.DeepCopy())
	return true
}

// ObserveDeleted takes the named ConfigMap as gone.
func (s *Store) ObserveDeleted(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known[name] != nil {
		s.deleted[name] = true
	}
	s.known[name] = nil
}

// newer compares resourceVersions: etcd's are growing integers, which the API server
// documents as opaque; anything else different counts as newer.
func newer(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	if errA != nil || errB != nil {
		return a != b
	}
	return x > y
}
