package api

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/internal/view"
)

func sha(c byte) string { return strings.Repeat(string(c), 40) }

func rec(n int, commit string, phase history.Phase, parents ...string) history.Record {
	return history.Record{Number: n, Phase: phase, Commit: history.Commit{SHA: commit, Parents: parents, Root: parents == nil}}
}

func TestCarrier(t *testing.T) {
	// Deployed: root a; then c, whose parent b deployd never fetched; observed d, child of c.
	a, b, c, d, x := sha('a'), sha('b'), sha('c'), sha('d'), sha('e')
	recs := []history.Record{rec(2, c, history.Succeeded, b), rec(1, a, history.Succeeded)}
	entry := view.Entry{Records: recs, Observed: source.Revision{Commit: d, Parents: []string{c}}}
	tests := []struct {
		name   string
		entry  view.Entry
		prefix string
		want   CommitDeployment
		record int
	}{
		{"a deployed commit carries itself", entry, c, CommitDeployment{Commit: c, State: CommitCarried, Head: d}, 2},
		{"an overtaken commit is carried by its child's deployment", entry, b[:7], CommitDeployment{Commit: b, State: CommitCarried, Head: d}, 2},
		{"the observed head, not deployed yet", entry, d, CommitDeployment{Commit: d, State: CommitPending, Head: d}, 0},
		{"below the known history: unknown", entry, x, CommitDeployment{Commit: x, State: CommitUnknown, Head: d}, 0},
		{"a head whose whole history is known lacks it: not on the branch",
			view.Entry{Records: []history.Record{rec(1, a, history.Succeeded)}, Observed: source.Revision{Commit: a, Root: true}}, x,
			CommitDeployment{Commit: x, State: CommitNotOnBranch, Head: a}, 0},
		{"a record from before parents were kept is not a whole history",
			view.Entry{Records: []history.Record{{Number: 1, Phase: history.Succeeded, Commit: history.Commit{SHA: a}}}}, x,
			CommitDeployment{Commit: x, State: CommitUnknown}, 0},
		{"the newest record judges when nothing was observed (a follower)",
			view.Entry{Records: []history.Record{rec(2, c, history.Succeeded, a), rec(1, a, history.Succeeded)}}, x,
			CommitDeployment{Commit: x, State: CommitNotOnBranch, Head: c}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := carrier(tc.entry, tc.prefix)
			number := 0
			if got.Record != nil {
				number = got.Record.Number
			}
			got.Record = nil
			if diff := cmp.Diff(tc.want, got); diff != "" || number != tc.record {
				t.Errorf("record %d, want %d; (-want +got):\n%s", number, tc.record, diff)
			}
		})
	}
}
