package cli

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestReadTree reads a local tree as deployd reads a commit: .git, symlinks, binary files
// and files over 1 MiB left out; a tree over the upload bound refused as it is read.
func TestReadTree(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"deploy/manifests/a.yaml": "kind: ConfigMap\n", ".git/config": "[core]\n", "logo.png": "\x89PNG\x00\xff",
		"big.bin": strings.Repeat("x", 1<<20+1),
	} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, dir, name, content)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "deploy/manifests/link.yaml")); err != nil {
		t.Fatal(err)
	}
	files, err := readTree(dir)
	var names []string
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	if diff := cmp.Diff([]string{"deploy/manifests/a.yaml"}, names); diff != "" || err != nil {
		t.Errorf("files read (-want +got)\n%s%v", diff, err)
	}

	// 1 MiB files up to one step over the bound.
	for i := range maxUploadBytes>>20 + 1 {
		writeFile(t, dir, "asset"+strings.Repeat("x", i), strings.Repeat("y", 1<<20))
	}
	if _, err := readTree(dir); err == nil || !strings.Contains(err.Error(), "more than 10000 files or 8 MiB") {
		t.Errorf("a tree over the bound: %v", err)
	}
}
