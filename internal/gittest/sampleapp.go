package gittest

import "strings"

// SampleApp is a small app's manifests: a Deployment and a Service named web (two
// replicas of nginx:1.27) and a ConfigMap named settings whose version is "VERSION".
const SampleApp = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {version: "VERSION"}
`

// SampleAppFiles returns the files of a commit deploying SampleApp at version.
func SampleAppFiles(version string) map[string]string {
	return map[string]string{"deploy/manifests/app.yaml": strings.ReplaceAll(SampleApp, "VERSION", version)}
}
