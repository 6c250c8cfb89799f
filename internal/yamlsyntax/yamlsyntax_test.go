package yamlsyntax

import (
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
