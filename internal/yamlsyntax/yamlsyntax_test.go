package yamlsyntax

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestExplainNamesTheLine(t *testing.T) {
	tests := []struct {
		yaml     string
		wantLine int
	}{
		{"repos:\n  - name: a/b\n    url: [unclosed\n", 3},
		{"repos:\n  - name: a/b\n\turl: x\n", 3},
		{"a: b: c\n", 1},
		{"a:\n  - x\n  y: z\n", 3},
	}
	for _, tt := range tests {
		var n yaml.Node
		err := yaml.Unmarshal([]byte(tt.yaml), &n)
		if err == nil {
			t.Fatalf("%q: yaml.v3 accepted it", tt.yaml)
		}
		got := Explain([]byte(tt.yaml), err)
		if got.Line != tt.wantLine || got.Message == "" {
			t.Errorf("%q: Explain = line %d %q, want line %d", tt.yaml, got.Line, got.Message, tt.wantLine)
		}
	}
}

// TestExplainIsBounded: the fallback parser is not run on input too deep or too large for it,
// so hostile input costs a bounded amount of memory (allocated bytes, counted over the call).
func TestExplainIsBounded(t *testing.T) {
	atLimit := uniqueKeys(MaxExplainBytes-5) + "c: [\n"
	tests := []struct {
		name     string
		data     string
		wantLine int
	}{
		{"20 KB of [", strings.Repeat("[", 20<<10), 0},
		{"40 KB of [", strings.Repeat("[", 40<<10), 0},
		{"nesting one over the depth limit", strings.Repeat("[", MaxExplainDepth+1), 1},
		{"nesting at the depth limit", strings.Repeat("[", MaxExplainDepth), 1},
		{"a large file", strings.Repeat("key: value\nlist:\n - a\n - b\n", 20000) + "x: [\n", 80001},
		{"a file at the size limit (the exact line, from goccy)", atLimit, strings.Count(atLimit, "\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n yaml.Node
			err := yaml.Unmarshal([]byte(tt.data), &n)
			if err == nil {
				t.Fatal("yaml.v3 accepted it")
			}
			var got *Error
			allocated := allocatedBy(func() { got = Explain([]byte(tt.data), err) })
			if allocated > 32<<20 {
				t.Errorf("Explain allocated %d MB, want at most 32", allocated>>20)
			}
			if got.Message == "" || (tt.wantLine != 0 && got.Line != tt.wantLine) {
				t.Errorf("Explain = line %d %q, want line %d", got.Line, got.Message, tt.wantLine)
			}
		})
	}
}

func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// uniqueKeys is a mapping of n bytes, or a little less, with distinct keys.
func uniqueKeys(n int) string {
	var b strings.Builder
	for i := 0; b.Len()+20 < n; i++ {
		fmt.Fprintf(&b, "key%d: value\n", i)
	}
	return b.String() + strings.Repeat("#", n-b.Len()-1) + "\n"
}
