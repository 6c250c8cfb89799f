package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse: the parser never panics, and every problem names the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte("repos:\n  - {name: a/b, url: 'https://h/a/b', namespace: ns}\n"))
	f.Add([]byte("defaults:\n  interval: 0\nrepos: []\n"))
	f.Add([]byte("repos:\n  - name: a/b\n    namspace: x\n    auth: {tokenFile: t, sshKeyFile: k}\n"))
	f.Add([]byte("a: &a [1]\nrepos: *a\n"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("repos.yaml", data, DefaultOptions())
		var cfgErr *Error
		switch {
		case err == nil && cfg == nil:
			t.Fatal("no config and no error")
		case err != nil && !errors.As(err, &cfgErr):
			t.Fatalf("error of type %T: %v", err, err)
		case err != nil:
			for _, p := range cfgErr.Problems {
				if !strings.HasPrefix(p.String(), "repos.yaml") {
					t.Errorf("problem without the file: %s", p)
				}
			}
		}
	})
}
