package main

import (
	"fmt"
	"strings"

	"github.com/deployd/deployd/internal/simcluster"
)

// appOptions shape a generated app.
type appOptions struct {
	// value is the settings ConfigMap's value: changing it changes one object.
	value string
	// replicas of the Deployment.
	replicas int
	// run, when set, is put on the pod template: changing it rolls the Deployment out.
	run string
	// recreate uses the Recreate strategy, so the rollout ends when the last new pod is Ready.
	recreate bool
	// small makes the app a Deployment and a ConfigMap only.
	small bool
	// readyAfter delays the pods' readiness, as a readiness probe does ("5s").
	readyAfter string
	// configOnly makes the app the settings ConfigMap alone: nothing to roll out.
	configOnly bool
}

// manifestsFile is where the apps keep their manifests (deployd's default path).
const manifestsFile = "deploy/manifests/app.yaml"

// app returns a 10-object app (ServiceAccount, ConfigMaps, Secret, Service, Deployment,
// Role, RoleBinding, PodDisruptionBudget), 2 objects when small, 1 when configOnly. The changed
// ConfigMap stands in the middle, so a tool applying in file order gets no head start.
func app(o appOptions) map[string]string {
	strategy := "RollingUpdate"
	if o.recreate {
		strategy = "Recreate"
	}
	deployment := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: %d
  strategy: {type: %s}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}, annotations: {bench/run: %q%s}}
    spec:
      serviceAccountName: web
      containers:
        - name: web
          image: nginx:1.27
          ports: [{containerPort: 80}]
          envFrom: [{configMapRef: {name: web-env}}]
          resources: {requests: {cpu: 10m, memory: 16Mi}}
`, o.replicas, strategy, o.run, readyAfter(o.readyAfter))
	settings := fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {value: %q}
`, o.value)
	if o.configOnly {
		return map[string]string{manifestsFile: settings}
	}
	if o.small {
		return map[string]string{manifestsFile: strings.Join([]string{settings, strings.Replace(deployment, "      serviceAccountName: web\n", "", 1)}, "---\n")}
	}
	docs := []string{
		"apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web}\n",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-env}\ndata: {LOG_LEVEL: info, PORT: \"80\"}\n",
		"apiVersion: v1\nkind: Secret\nmetadata: {name: web-credentials}\nstringData: {password: not-a-real-password}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: 80}]}\n",
		settings,
		deployment,
		"apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: web}\nrules: [{apiGroups: [\"\"], resources: [configmaps], verbs: [get, list, watch]}]\n",
		"apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: web}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: web}\nsubjects: [{kind: ServiceAccount, name: web}]\n",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-files}\ndata: {index.html: \"<h1>bench</h1>\", robots.txt: \"User-agent: *\"}\n",
		"apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec: {maxUnavailable: 1, selector: {matchLabels: {app: web}}}\n",
	}
	return map[string]string{manifestsFile: strings.Join(docs, "---\n")}
}

func readyAfter(d string) string {
	if d == "" {
		return ""
	}
	return fmt.Sprintf(", %s: %q", simcluster.ReadyAfterAnnotation, d)
}
