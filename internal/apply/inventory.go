package apply

import (
	"context"
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/state"
)

// inventoryKey is the ConfigMap data key holding the applied objects, as JSON.
const inventoryKey = "inventory"

// inventory is the set of objects deployd applied for one repo and environment, kept in
// the repo's state ConfigMap in deployd's namespace so a restarted deployd still knows
// what to prune.
type inventory struct {
	states *state.Store
	repo   config.Repo
}

func newInventory(states *state.Store, repo config.Repo) *inventory {
	return &inventory{states: states, repo: repo}
}

// load returns the stored refs. stored is false when no inventory was saved in the state
// ConfigMap as it is now: the repo is new, or the ConfigMap was deleted (whatever wrote
// it first since, the history or this, created it without one). An empty inventory is
// stored, as "null".
func (inv *inventory) load(ctx context.Context) (refs []Ref, stored bool, err error) {
	cm, err := inv.states.Get(ctx, inv.repo.StateName())
	if err != nil || cm == nil {
		return nil, false, err
	}
	raw, ok := cm.Data[inventoryKey]
	if !ok || raw == "" {
		return nil, ok, nil
	}
	if err := json.Unmarshal([]byte(raw), &refs); err != nil {
		return nil, true, fmt.Errorf("inventory ConfigMap/%s/%s is not valid: %w", inv.states.Namespace(), cm.Name, err)
	}
	return refs, true, nil
}

// save writes refs (nothing when they are what is stored already).
func (inv *inventory) save(ctx context.Context, refs []Ref) error {
	raw, err := json.Marshal(refs)
	if err != nil {
		return err
	}
	meta := metav1.ObjectMeta{
		Labels:      map[string]string{LabelManagedBy: ManagedByValue, LabelRepo: repoLabel(inv.repo), LabelEnvironment: inv.repo.Environment},
		Annotations: map[string]string{"deployd.dev/repo-name": inv.repo.Name},
	}
	err = inv.states.Modify(ctx, inv.repo.StateName(), meta, func(data map[string]string) error {
		data[inventoryKey] = string(raw)
		return nil
	})
	if err != nil {
		return fmt.Errorf("saving the inventory: %w", err)
	}
	return nil
}
