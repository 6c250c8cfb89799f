package render

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// FuzzRender feeds arbitrary bytes as a manifest file and as a kustomization: rendering
// never panics, every error names the file, and no HTTP request leaves the process or
// its worker. "RECORDER" in the input (the seeds under testdata/fuzz/FuzzRender name it
// in every field kustomize fetched through) is a loopback server that counts requests;
// in this process, HTTP's default transport fails the test if it is used at all.
// A kustomization is also built by the worker alone, without the up-front check.
func FuzzRender(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Secret, metadata: {name: s}}]\n"), false)
	f.Add([]byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}}`), false)
	f.Add([]byte("resources: [a.yaml]\nnamePrefix: x-\n"), true)
	f.Add([]byte("a: &a [1]\nb: [*a, *a]\n"), false)
	f.Add([]byte("\t- bad"), false)
	f.Add([]byte("Resources: [a.yaml, http://RECORDER/r.yaml]\n"), true)
	srv := newRecorder(f, false)
	usedTransport := &countingTransport{}
	saved := http.DefaultTransport
	http.DefaultTransport = usedTransport
	f.Cleanup(func() { http.DefaultTransport = saved })
	f.Fuzz(func(t *testing.T, data []byte, asKustomization bool) {
		data = bytes.ReplaceAll(data, []byte("RECORDER"), []byte(srv.host()))
		files := map[string][]byte{"m/a.yaml": data}
		if asKustomization {
			files = map[string][]byte{"m/kustomization.yaml": data, "m/a.yaml": []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")}
		}
		ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
		defer cancel()
		_, err := Render(ctx, files, "m", DefaultLimits())
		var re *Error
		if err != nil && !errors.As(err, &re) && !strings.HasPrefix(err.Error(), "m") {
			t.Errorf("error without a file: %v", err)
		}
		if asKustomization {
			_, _ = workers.build(ctx, request{Files: files, Dir: "m", Limits: DefaultLimits()})
		}
		if n, m := srv.requests.Load(), usedTransport.n.Load(); n != 0 || m != 0 {
			t.Fatalf("HTTP requests: %d reached the loopback server, %d used this process's transport", n, m)
		}
	})
}

// countingTransport counts the requests made through it, and refuses them.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return nil, errors.New("no HTTP request may leave a render")
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
