package apply

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/deployd/deployd/internal/config"
)

// inventoryKey is the ConfigMap data key holding the applied objects, as JSON.
const inventoryKey = "inventory"

// inventory is the set of objects deployd applied for one repo and environment, kept in
// a ConfigMap in deployd's namespace so a restarted deployd still knows what to prune.
type inventory struct {
	kube      kubernetes.Interface
	namespace string
	name      string
	repo      config.Repo
}

func newInventory(kube kubernetes.Interface, namespace string, repo config.Repo) *inventory {
	return &inventory{kube: kube, namespace: namespace, name: repo.StateName(), repo: repo}
}

func (inv *inventory) load(ctx context.Context) ([]Ref, error) {
	cm, err := inv.kube.CoreV1().ConfigMaps(inv.namespace).Get(ctx, inv.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading inventory ConfigMap/%s/%s: %w", inv.namespace, inv.name, err)
	}
	var refs []Ref
	if raw := cm.Data[inventoryKey]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &refs); err != nil {
			return nil, fmt.Errorf("inventory ConfigMap/%s/%s is not valid: %w", inv.namespace, inv.name, err)
		}
	}
	return refs, nil
}

// save writes refs, creating the ConfigMap or updating it under its resourceVersion.
func (inv *inventory) save(ctx context.Context, refs []Ref) error {
	raw, err := json.Marshal(refs)
	if err != nil {
		return err
	}
	cms := inv.kube.CoreV1().ConfigMaps(inv.namespace)
	for attempt := 0; ; attempt++ {
		cm, err := cms.Get(ctx, inv.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
				Name: inv.name, Namespace: inv.namespace,
				Labels:      map[string]string{LabelManagedBy: ManagedByValue, LabelRepo: repoLabel(inv.repo), LabelEnvironment: inv.repo.Environment},
				Annotations: map[string]string{"deployd.dev/repo-name": inv.repo.Name},
			}, Data: map[string]string{inventoryKey: string(raw)}}
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		case err == nil:
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			cm.Data[inventoryKey] = string(raw)
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		}
		if err == nil {
			return nil
		}
		if (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) && attempt < 5 {
			continue
		}
		return fmt.Errorf("saving inventory ConfigMap/%s/%s: %w", inv.namespace, inv.name, err)
	}
}
