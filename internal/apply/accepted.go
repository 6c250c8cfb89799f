package apply

import (
	"crypto/sha256"
	"encoding/json"
	"slices"
	"sync"

	"github.com/deployd/deployd/internal/config"
)

// digest identifies an object's content as applied, without deployd's annotations that
// change at every deployment (the commit and the deployment number), and the identity
// it is applied as.
type digest [16]byte

// accepted remembers, per repo, the objects of its last set the API server accepted
// whole (every object applied): an object rendered the same again was judged already, so
// the dry run is spent on what changed. Nothing is remembered across restarts: the first
// apply after a start dry-runs every object.
type accepted struct {
	mu   sync.Mutex
	sets map[config.Key]map[digest]struct{}
}

// digestOf is the object's digest as applied with identity (a ServiceAccount's, or "").
// encoding/json writes map keys sorted, so equal content gives equal digests.
func digestOf(identity string, it *item) (digest, error) {
	obj := it.obj.DeepCopy()
	ann := obj.GetAnnotations()
	delete(ann, AnnotationCommit)
	delete(ann, AnnotationDeployment)
	obj.SetAnnotations(ann)
	b, err := json.Marshal(obj.Object)
	if err != nil {
		return digest{}, err
	}
	h := sha256.New()
	h.Write([]byte(identity))
	h.Write([]byte{0})
	h.Write(b)
	var d digest
	copy(d[:], h.Sum(nil))
	return d, nil
}

// changed returns the items of p whose content the repo's last accepted set did not
// have, and every item's digest; an object that cannot be digested counts as changed.
func (a *accepted) changed(repo config.Repo, p *plan) (changed []*item, digests []digest) {
	identity := repo.ServiceAccount
	a.mu.Lock()
	set := a.sets[repo.Key()]
	a.mu.Unlock()
	for _, it := range p.all() {
		d, err := digestOf(identity, it)
		if err != nil {
			changed = append(changed, it)
			continue
		}
		digests = append(digests, d)
		if _, ok := set[d]; !ok {
			changed = append(changed, it)
		}
	}
	return changed, digests
}

// accept remembers digests as the repo's accepted set, replacing the one before.
func (a *accepted) accept(repo config.Repo, digests []digest) {
	set := make(map[digest]struct{}, len(digests))
	for _, d := range digests {
		set[d] = struct{}{}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sets == nil {
		a.sets = map[config.Key]map[digest]struct{}{}
	}
	a.sets[repo.Key()] = set
}

// forget drops the repo's accepted set: its next apply dry-runs every object.
func (a *accepted) forget(repo config.Repo) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.sets, repo.Key())
}

// aloneIn returns the one changed object when it may be applied alone in place of a dry
// run (if it can be read first): an object of the last stage (not a CRD or Namespace
// others wait for) whose kind is served.
func aloneIn(changed []*item, p *plan) *item {
	if len(changed) != 1 {
		return nil
	}
	it := changed[0]
	if it.mapping == nil || !slices.Contains(p.rest, it) {
		return nil
	}
	return it
}

// without returns the plan without it.
func (p *plan) without(it *item) *plan {
	drop := func(items []*item) []*item {
		return slices.DeleteFunc(slices.Clone(items), func(x *item) bool { return x == it })
	}
	return &plan{crds: drop(p.crds), namespaces: drop(p.namespaces), rest: drop(p.rest)}
}
