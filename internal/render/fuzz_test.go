package render

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzRender feeds arbitrary bytes as a manifest file and as a kustomization: rendering
// never panics, and every error names the file.
func FuzzRender(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Secret, metadata: {name: s}}]\n"), false)
	f.Add([]byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}}`), false)
	f.Add([]byte("resources: [a.yaml]\nnamePrefix: x-\n"), true)
	f.Add([]byte("a: &a [1]\nb: [*a, *a]\n"), false)
	f.Add([]byte("\t- bad"), false)
	f.Fuzz(func(t *testing.T, data []byte, asKustomization bool) {
		files := map[string][]byte{"m/a.yaml": data}
		if asKustomization {
			files = map[string][]byte{"m/kustomization.yaml": data, "m/a.yaml": []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")}
		}
		_, err := Render(context.Background(), files, "m", DefaultLimits())
		var re *Error
		if err != nil && !errors.As(err, &re) && !strings.HasPrefix(err.Error(), "m") {
			t.Errorf("error without a file: %v", err)
		}
	})
}

// TestBillionLaughsIsRefusedQuickly: alias expansion is bounded, not memory-eating.
func TestBillionLaughsIsRefusedQuickly(t *testing.T) {
	doc := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		doc += n + ": &" + n + " [" + strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ",") + "]\n"
		prev = n
	}
	done := make(chan error, 1)
	go func() {
		_, err := Render(context.Background(), map[string][]byte{"m/lol.yaml": []byte(doc)}, "m", DefaultLimits())
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "m/lol.yaml") || !strings.Contains(err.Error(), "aliasing") {
			t.Errorf("error %v, want the file and 'excessive aliasing'", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a billion-laughs document was not refused within 10s")
	}
}
