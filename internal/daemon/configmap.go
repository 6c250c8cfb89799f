package daemon

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/deployd/deployd/internal/config"
)

// configMapKey is the key of repos.yaml in the --config-configmap ConfigMap.
const configMapKey = "repos.yaml"

// configMapRef is a ConfigMap's NAMESPACE/NAME.
type configMapRef struct{ namespace, name string }

func parseConfigMapRef(s string) (configMapRef, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return configMapRef{}, fmt.Errorf("--config-configmap %q: want NAMESPACE/NAME, e.g. deployd/deployd-repos", s)
	}
	return configMapRef{ns, name}, nil
}

// source is how the watcher's errors cite the ConfigMap's repos.yaml.
func (r configMapRef) source() string {
	return fmt.Sprintf("configmap %s/%s %s", r.namespace, r.name, configMapKey)
}

// watchConfigMap offers the ConfigMap's repos.yaml to the watcher on each change seen
// through the API (at once, where a mounted ConfigMap waits for the kubelet's sync),
// until ctx ends. It watches that one object; a deleted ConfigMap or a missing key
// keeps the last good config.
func watchConfigMap(ctx context.Context, kube kubernetes.Interface, ref configMapRef, w *config.Watcher) error {
	lw := cache.NewListWatchFromClient(kube.CoreV1().RESTClient(), "configmaps", ref.namespace,
		fields.OneTermEqualSelector("metadata.name", ref.name))
	inf := cache.NewSharedIndexInformer(lw, &corev1.ConfigMap{}, 0, cache.Indexers{})
	src := ref.source()
	offer := func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok {
			return
		}
		data, ok := cm.Data[configMapKey]
		if !ok {
			w.Offer(src, nil, fmt.Errorf("configmap %s/%s has no key %s; the last good config stays in force", ref.namespace, ref.name, configMapKey))
			return
		}
		w.Offer(src, []byte(data), nil)
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    offer,
		UpdateFunc: func(_, obj any) { offer(obj) },
		DeleteFunc: func(any) {
			w.Offer(src, nil, fmt.Errorf("configmap %s/%s was deleted; the last good config stays in force until it is created again", ref.namespace, ref.name))
		},
	})
	if err != nil {
		return fmt.Errorf("watching configmap %s/%s: %w", ref.namespace, ref.name, err)
	}
	inf.Run(ctx.Done())
	return nil
}
