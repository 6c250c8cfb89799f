package render

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkRender is the cost of one render of a small app: plain files in this process,
// and a kustomize overlay in a worker (with the spare started ahead, as in deployd).
func BenchmarkRender(b *testing.B) {
	plainRepo := map[string][]byte{"deploy/manifests/app.yaml": kustomizeRepo["deploy/base/deployment.yaml"]}
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if _, err := Render(context.Background(), plainRepo, "deploy/manifests", DefaultLimits()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kustomize in this process, unconfined, for comparison", func(b *testing.B) {
		for b.Loop() {
			if _, err, _ := build(request{Files: kustomizeRepo, Dir: "deploy/overlays/dev", Limits: DefaultLimits()}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kustomize", func(b *testing.B) {
		for b.Loop() {
			if _, err := Render(context.Background(), kustomizeRepo, "deploy/overlays/dev", DefaultLimits()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWorkerStart is what a build would wait without a spare: fork, exec and
// initialise a worker, until it exits on an empty request.
func BenchmarkWorkerStart(b *testing.B) {
	for b.Loop() {
		w, err := startWorker(DefaultLimits().MaxMemory)
		if err != nil {
			b.Fatal(err)
		}
		w.stdin.Close()
		if err := w.cmd.Wait(); err != nil {
			b.Fatal(err)
		}
	}
}

// chart50 is a chart of 50 templates, each a Deployment and a Service using the chart's
// helpers and values, with values per environment.
func chart50() map[string][]byte {
	files := map[string][]byte{
		"deploy/chart/Chart.yaml":             []byte("apiVersion: v2\nname: bench\nversion: 1.0.0\n"),
		"deploy/chart/values.yaml":            []byte("replicas: 1\nimage: {repository: nginx, tag: \"1.27\"}\nresources: {requests: {cpu: 10m, memory: 16Mi}}\nlabels: {team: shop}\n"),
		"deploy/chart/values-production.yaml": []byte("replicas: 3\n"),
		"deploy/chart/templates/_helpers.tpl": []byte("{{- define \"bench.labels\" -}}\napp.kubernetes.io/instance: {{ .Release.Name }}\n{{- range $k, $v := .Values.labels }}\n{{ $k }}: {{ $v | quote }}\n{{- end }}\n{{- end }}\n"),
	}
	for i := range 50 {
		files[fmt.Sprintf("deploy/chart/templates/app%02d.yaml", i)] = fmt.Appendf(nil, `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-%02[1]d
  labels:
    {{- include "bench.labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}-%02[1]d}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}-%02[1]d
        {{- include "bench.labels" . | nindent 8 }}
    spec:
      containers:
      - name: app
        image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
        resources:
          {{- toYaml .Values.resources | nindent 10 }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-%02[1]d
spec:
  selector: {app: {{ .Release.Name }}-%02[1]d}
  ports:
  - port: 80
`, i)
	}
	return files
}

// BenchmarkRenderChart is the cost of templating a chart of 50 templates (100 objects):
// in a worker, as deployd does (with the spare started ahead), and in this process.
func BenchmarkRenderChart(b *testing.B) {
	files := chart50()
	opts := Options{Limits: DefaultLimits(), Environment: "production", Namespace: "shop", ReleaseName: "web"}
	b.Run("50 templates in a worker", func(b *testing.B) {
		for b.Loop() {
			res, err := RenderWith(context.Background(), files, "deploy/chart", opts)
			if err != nil || len(res.Objects) != 100 {
				b.Fatal(len(res.Objects), err)
			}
		}
		b.ReportMetric(float64(lastPeakRSS.Load())/(1<<20), "worker-peak-MiB")
	})
	b.Run("50 templates in this process, unconfined, for comparison", func(b *testing.B) {
		hr := &helmRequest{Environment: "production", Namespace: "shop", ReleaseName: "web", SetJSON: []byte("null")}
		for b.Loop() {
			if objs, _, err, _ := helmBuild(request{Files: files, Dir: "deploy/chart", Limits: DefaultLimits(), Helm: hr}); err != nil || len(objs) != 100 {
				b.Fatal(len(objs), err)
			}
		}
	})
}
