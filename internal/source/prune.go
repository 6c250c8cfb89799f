package source

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/deployd/deployd/internal/config"
)

// cacheName matches the directories dir names: "<repo>@<environment>-<8 hex digits>".
var cacheName = regexp.MustCompile(`^[A-Za-z0-9._-]+@[A-Za-z0-9._-]*-[0-9a-f]{8}$`)

// Prune removes the caches of repos that are not in repos (they left the config, or
// their URL changed: the cache's name holds a hash of the URL) and returns their
// directories. Only directories named and laid out as deployd's caches are removed: a
// --cache-dir shared with other files loses none of them.
func (s *Source) Prune(repos []config.Repo) ([]string, error) {
	keep := map[string]bool{}
	for _, r := range repos {
		keep[filepath.Base(s.dir(r))] = true
	}
	entries, err := os.ReadDir(s.opts.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("pruning the git cache %s: %w", s.opts.CacheDir, err)
	}
	var removed []string
	for _, e := range entries {
		dir := filepath.Join(s.opts.CacheDir, e.Name())
		if !e.IsDir() || keep[e.Name()] || !cacheName.MatchString(e.Name()) || !isBare(dir) {
			continue
		}
		s.forget(dir)
		if err := os.RemoveAll(dir); err != nil {
			return removed, fmt.Errorf("pruning the git cache: removing %s: %w", dir, err)
		}
		removed = append(removed, dir)
	}
	s.mu.Lock()
	for dir := range s.refused {
		if !keep[filepath.Base(dir)] {
			delete(s.refused, dir)
		}
	}
	s.mu.Unlock()
	return removed, nil
}

// isBare reports whether dir holds a bare git repository.
func isBare(dir string) bool {
	for _, name := range []string{"HEAD", "objects", "refs"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return false
		}
	}
	return true
}

// DiskUse is the bytes the caches take on disk, walked at most every 30 s (metrics
// scrapes ask more often; a walk of 1,000 shallow caches stats about 10,000 files).
func (s *Source) DiskUse() int64 {
	s.use.Lock()
	defer s.use.Unlock()
	if time.Since(s.use.at) < 30*time.Second {
		return s.use.bytes
	}
	var n int64
	_ = filepath.WalkDir(s.opts.CacheDir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a cache removed during the walk
		}
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	s.use.bytes, s.use.at = n, time.Now()
	return n
}

// diskUsage is DiskUse's last walk.
type diskUsage struct {
	sync.Mutex
	bytes int64
	at    time.Time
}
