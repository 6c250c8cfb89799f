package source

import (
	"errors"
	"fmt"
	"strings"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/deployd/deployd/internal/config"
)

// MaxWalk bounds the commits Contains reads: the cache holds the branch heads deployd
// fetched (shallow, a few at most between re-clones), so a longer walk is not needed.
const MaxWalk = 1000

// Containment says which of a list of commits contains another, as far as the git cache
// knows their history.
type Containment struct {
	// Head is the first of the heads whose history holds the commit; empty when none does.
	Head string
	// Commit is the commit's full SHA once found (it may have been given as a prefix).
	Commit string
	// Complete is true when the heads' whole history was read (no shallow boundary, no
	// commit missing, within MaxWalk): a commit not found is then on none of them.
	Complete bool
}

// Contains reports which of heads (full SHAs, in the order to try) has prefix (a commit
// SHA or a prefix of at least 7 hex digits) in its history: equal to it, or an ancestor.
// It reads only the cache, never the network: deployd fetches the branch shallow, so
// the history known is the heads it fetched and their parents' SHAs, and a commit below
// that is not found (Complete false). The walk reads at most MaxWalk commits.
func (s *Source) Contains(repo config.Repo, heads []string, prefix string) (Containment, error) {
	return s.contains(repo, heads, prefix, MaxWalk)
}

func (s *Source) contains(repo config.Repo, heads []string, prefix string, maxWalk int) (Containment, error) {
	prefix = strings.ToLower(prefix)
	if len(prefix) < 7 || len(prefix) > 40 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return Containment{}, fmt.Errorf("%q is not a commit SHA: give 7 to 40 hex digits", prefix)
	}
	// A fresh read-only handle: the open one is the checks', which a fetch may be
	// adding a pack to.
	st := filesystem.NewStorage(osfs.New(s.dir(repo)), noObjects{})
	r, err := git.Open(st, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		return Containment{}, nil
	}
	if err != nil {
		return Containment{}, fmt.Errorf("%s: opening the git cache: %w", repo.Name, err)
	}
	w := walk{r: r, prefix: prefix, seen: map[plumbing.Hash]bool{}, max: maxWalk, complete: true}
	for _, head := range heads {
		if found := w.from(plumbing.NewHash(head)); found != "" {
			return Containment{Head: head, Commit: found}, nil
		}
	}
	return Containment{Complete: w.complete}, nil
}

// walk reads commits breadth first, each once over all heads.
type walk struct {
	r        *git.Repository
	prefix   string
	seen     map[plumbing.Hash]bool
	read     int
	max      int
	complete bool
}

// from walks head's history and returns the full SHA matching the prefix, or "".
func (w *walk) from(head plumbing.Hash) string {
	queue := []plumbing.Hash{head}
	for len(queue) > 0 {
		h := queue[0]
		queue = queue[1:]
		if w.seen[h] {
			continue
		}
		w.seen[h] = true
		if strings.HasPrefix(h.String(), w.prefix) {
			return h.String() // a parent's SHA is known even when the parent is not
		}
		if w.read >= w.max {
			w.complete = false
			return ""
		}
		w.read++
		c, err := w.r.CommitObject(h)
		if errors.Is(err, plumbing.ErrObjectNotFound) || err != nil {
			w.complete = false // below the shallow boundary, or a head the cache lost
			continue
		}
		queue = append(queue, c.ParentHashes...)
	}
	return ""
}
