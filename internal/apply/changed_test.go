package apply

import "testing"

func TestChanged(t *testing.T) {
	applied := map[string]any{
		"metadata": map[string]any{"name": "web", "annotations": map[string]any{"deployd.dev/commit": "abc"}},
		"spec":     map[string]any{"replicas": int64(2), "ports": []any{map[string]any{"port": int64(80)}}},
	}
	live := func(edit func(o map[string]any)) map[string]any {
		o := map[string]any{
			"metadata": map[string]any{"name": "web", "resourceVersion": "1", "annotations": map[string]any{"deployd.dev/commit": "abc"}},
			"spec":     map[string]any{"replicas": int64(2), "ports": []any{map[string]any{"port": int64(80)}}, "revisionHistoryLimit": int64(10)},
			"status":   map[string]any{"readyReplicas": int64(1)},
		}
		if edit != nil {
			edit(o)
		}
		return o
	}
	for _, tc := range []struct {
		name  string
		after func(o map[string]any)
		want  bool
	}{
		{"nothing", nil, false},
		{"a controller's annotation and status", func(o map[string]any) {
			o["metadata"].(map[string]any)["annotations"].(map[string]any)["deployment.kubernetes.io/revision"] = "2"
			o["metadata"].(map[string]any)["resourceVersion"] = "7"
			o["status"] = map[string]any{"readyReplicas": int64(2)}
		}, false},
		{"a default the server set", func(o map[string]any) { o["spec"].(map[string]any)["revisionHistoryLimit"] = int64(5) }, false},
		{"an applied value", func(o map[string]any) { o["spec"].(map[string]any)["replicas"] = int64(3) }, true},
		{"an applied annotation", func(o map[string]any) {
			o["metadata"].(map[string]any)["annotations"].(map[string]any)["deployd.dev/commit"] = "def"
		}, true},
		{"an applied list", func(o map[string]any) { o["spec"].(map[string]any)["ports"] = []any{map[string]any{"port": int64(81)}} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := changed(applied, live(nil), live(tc.after)); got != tc.want {
				t.Errorf("changed = %v, want %v", got, tc.want)
			}
		})
	}
}
