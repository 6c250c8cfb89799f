// Package version says which build of deployd is running: the release version and
// commit stamped in by the linker, or what the Go toolchain recorded.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by the build: -ldflags "-X github.com/deployd/deployd/internal/version.Version=v1.2.3 -X ...Commit=abc".
var (
	Version = "dev"
	Commit  = ""
)

// String returns "deployd <version> (commit <commit>, <go version>)".
func String() string {
	commit := Commit
	if commit == "" {
		commit = vcsRevision()
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("deployd %s (commit %s, %s)", Version, commit, runtime.Version())
}

func vcsRevision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}
