// Package source fetches app repositories with go-git into a local cache and says which
// commit a branch is at and which tree its manifests path has there.
//
// A check costs one ref advertisement when nothing changed, and a poll (Poll) reads
// nothing of the cache then; objects are fetched only for a new commit. Caches that
// cannot be used are re-cloned once, and the result says why.
package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/deployd/deployd/internal/config"
)

func init() {
	// file:// is served in-process: go-git's default runs the git-upload-pack binary.
	client.InstallProtocol("file", server.NewClient(server.DefaultLoader))
	// A server that accepts the connection and then says nothing must not hang a fetch
	// past its context; this bounds the wait for response headers too.
	hc := &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
	}}
	hc.Transport = advertLimit{hc.Transport}
	client.InstallProtocol("http", githttp.NewClient(hc))
	client.InstallProtocol("https", githttp.NewClient(hc))
}

// maxAdvertisement bounds a remote's ref advertisement over HTTP(S). It lists every
// branch and tag of the repo (and, on GitHub, two refs per pull request), and go-git
// holds it whole, parsed, at every check: a repo that grows a million refs must not take
// deployd's memory with it. 16 MiB is some 250,000 refs.
var maxAdvertisement int64 = 16 << 20

// advertLimit bounds the body of every ref advertisement (GET .../info/refs).
type advertLimit struct{ next http.RoundTripper }

func (a advertLimit) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := a.next.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/info/refs") {
		return resp, err
	}
	resp.Body = &advertBody{ReadCloser: resp.Body, left: maxAdvertisement}
	return resp, nil
}

// advertBody fails a read past maxAdvertisement.
type advertBody struct {
	io.ReadCloser
	left int64
}

func (b *advertBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, &AdvertisementLimitError{Limit: maxAdvertisement}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// overLimit reports whether err is a fetch refused by one of deployd's bounds (the pack,
// an object, the ref advertisement): the remote's doing, neither the cache's nor the
// network's, so neither retried nor answered by cloning again.
func overLimit(err error) bool {
	var over *FetchLimitError
	var refs *AdvertisementLimitError
	return errors.As(err, &over) || errors.As(err, &refs)
}

// AdvertisementLimitError is a remote whose ref advertisement is over the bound: a
// problem of the repo, not of deployd's cache or the network.
type AdvertisementLimitError struct{ Limit int64 }

func (e *AdvertisementLimitError) Error() string {
	return fmt.Sprintf("the remote's ref advertisement is over %s, the most deployd reads: it lists every branch and tag of the repo (and pull request, on GitHub); delete the refs it no longer needs", formatBytes(e.Limit))
}

// Revision is a branch head and its manifests.
type Revision struct {
	// Commit is the commit's SHA.
	Commit string `json:"commit"`
	// Tree is the hash of the manifests path's tree at Commit; equal trees mean unchanged manifests.
	Tree string `json:"tree"`
	// Message is the first line of the commit message.
	Message string `json:"message"`
	// Author is the commit author's name.
	Author string `json:"author"`
	// Time is the commit's author time.
	Time time.Time `json:"time"`
	// Parents are the SHAs of the commit's parents (none for a root commit, and none
	// kept past MaxParents): what is known of the history below it, the cache being shallow.
	Parents []string `json:"parents,omitempty"`
	// Root is set when the commit has no parents.
	Root bool `json:"root,omitempty"`
}

// MaxParents bounds the parents a Revision keeps (they go into the deployment records):
// a repo's octopus merge of thousands of branches must not fill the state ConfigMap.
const MaxParents = 16

// Result is the outcome of a check.
type Result struct {
	Revision
	// Fetched is true when the branch head moved since the last check (its objects were
	// fetched unless the cache had them), false when it had not.
	Fetched bool
	// Recloned says why the cache was thrown away and cloned again; empty when it was not.
	Recloned string
}

// Options configure a Source.
type Options struct {
	// CacheDir holds one bare repository per configured repo.
	CacheDir string
	// Timeout bounds each network operation (ref listing, fetch).
	Timeout time.Duration
	// MaxFetchBytes bounds the pack one fetch may bring, counted as it is received
	// (0: no limit); a fetch over it is refused, for good for that commit.
	MaxFetchBytes int64
	// MaxObjectBytes bounds each object in a fetched pack, by its declared size, before
	// it is inflated (0: no limit): go-git holds an object whole in memory to index it.
	MaxObjectBytes int64
}

// DefaultMaxFetchBytes and DefaultMaxObjectBytes fit the 2 GiB cache volume of k8s/:
// a shallow fetch of an app repo's head is its code, not its history, and one repo
// may fill at most a sixteenth of the volume; manifests are far smaller than an object.
const (
	DefaultMaxFetchBytes  = 128 << 20
	DefaultMaxObjectBytes = 32 << 20
)

// DefaultOptions returns options with a 2-minute network timeout and the default
// fetch limits; CacheDir must be set.
func DefaultOptions() Options {
	return Options{Timeout: 2 * time.Minute, MaxFetchBytes: DefaultMaxFetchBytes, MaxObjectBytes: DefaultMaxObjectBytes}
}

// Source checks repos against their remotes.
type Source struct {
	opts Options

	mu sync.Mutex
	// open keeps each cache open between checks, by directory: reopening one reads its
	// pack indexes again, which was most of what a poll cost. The work queue never checks
	// one repo twice at once, and go-git adds what a fetch brings to the open indexes.
	open map[string]*git.Repository
	// last is the revision each cache and manifests path resolved to last: a head that
	// did not move is not read again.
	last map[string]Revision
	// compact holds the caches to clone afresh at their next check (see maxPacks).
	compact map[string]bool
	// refused holds, by cache, the branch head whose fetch was refused: it is not
	// fetched again while the branch stays there.
	refused map[string]*FetchLimitError
	// use is the cache's disk use, walked last.
	use diskUsage
	// inUse serializes go-git's use of each cache, by directory: a check, and reads of
	// its files (a deployment's render, the drift detector's), share the open repository,
	// whose object storage is not safe for concurrent use, and a check drops its pack
	// indexes when done.
	inUse map[string]*sync.Mutex
}

// lock takes the cache at dir for one check or read, and returns its release.
func (s *Source) lock(dir string) func() {
	s.mu.Lock()
	if s.inUse == nil {
		s.inUse = map[string]*sync.Mutex{}
	}
	m := s.inUse[dir]
	if m == nil {
		m = &sync.Mutex{}
		s.inUse[dir] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// maxPacks bounds the packfiles a cache collects, one per fetch that brought something:
// go-git keeps the index of every pack in memory while the repository is open (4–8 KB
// each), so a busy repo's cache would grow without end (50 pushes a second added 20 MB a
// minute). A cache with more is cloned afresh, shallow, at its next check: one pack.
const maxPacks = 8

// noObjects is go-git's object cache, keeping nothing: its own LRU, even with a size of
// 0, allocates a 1,000-entry map per repository (45 MB at 1,000 repos), and deployd reads
// each object once (a check a commit and two trees, a deployment its manifests).
type noObjects struct{}

func (noObjects) Put(plumbing.EncodedObject)                       {}
func (noObjects) Get(plumbing.Hash) (plumbing.EncodedObject, bool) { return nil, false }
func (noObjects) Clear()                                           {}

// New returns a Source caching clones under opts.CacheDir.
func New(opts Options) *Source {
	return &Source{opts: opts, open: map[string]*git.Repository{}, last: map[string]Revision{}, compact: map[string]bool{}, refused: map[string]*FetchLimitError{}}
}

// repository returns the open cache at dir, creating it with an origin remote for url.
func (s *Source) repository(dir, url string) (*git.Repository, error) {
	s.mu.Lock()
	r := s.open[dir]
	s.mu.Unlock()
	if r != nil {
		return r, nil
	}
	if _, err := openOrInit(dir, url); err != nil {
		return nil, err
	}
	st := &limitedStorage{Storage: filesystem.NewStorage(osfs.New(dir), noObjects{}), maxPack: s.opts.MaxFetchBytes, maxObject: s.opts.MaxObjectBytes}
	r, err := git.Open(st, nil)
	if err != nil {
		return nil, &cacheError{err}
	}
	s.mu.Lock()
	s.open[dir] = r
	s.mu.Unlock()
	return r, nil
}

// releaseIndexes drops the pack indexes go-git keeps in memory for an open cache once
// a check or a read is done with them: the next use reads them again from the cache's
// .idx files (a few kilobytes, tens of microseconds). Kept, they were 7.7 MB of the
// live heap at 1,000 idle repos, about 8 KB a repo, doubled in RSS by the GC's headroom.
// The caller holds the cache's lock, so no other read is using them.
func releaseIndexes(r *git.Repository) {
	if st, ok := r.Storer.(*limitedStorage); ok {
		st.Reindex()
	}
}

// forget closes nothing (go-git keeps no descriptors) but makes the next use reopen dir.
func (s *Source) forget(dir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.open, dir)
	for k := range s.last {
		if strings.HasPrefix(k, dir+"\x00") {
			delete(s.last, k)
		}
	}
}

// Check resolves repo's branch head on its remote, fetching it if the cache lacks it,
// and returns the commit with its manifests tree.
func (s *Source) Check(ctx context.Context, repo config.Repo) (Result, error) {
	auth, err := authFor(repo)
	if err != nil {
		return Result{}, err
	}
	dir := s.dir(repo)
	if s.takeCompact(dir) {
		if err := s.discard(repo, dir, "to clone it afresh"); err != nil {
			return Result{}, err
		}
	}
	res, err := s.check(ctx, repo, dir, auth)
	if err == nil && res.Fetched && packCount(dir) > maxPacks {
		s.mu.Lock()
		s.compact[dir] = true
		s.mu.Unlock()
	}
	var cacheErr *cacheError
	if !errors.As(err, &cacheErr) || isDiskFault(err) {
		return res, diskFault(repo, dir, err)
	}
	reason := cacheErr.Error()
	if err := s.discard(repo, dir, "as it is broken"); err != nil {
		return Result{}, err
	}
	res, err = s.check(ctx, repo, dir, auth)
	res.Recloned = reason
	return res, diskFault(repo, dir, err)
}

// Poll is Check for a poll, the check most likely to find nothing new. When the remote
// advertises the branch at the commit this cache's last check resolved, it answers from
// memory: one ref advertisement, and nothing of the cache read (its config, refs and pack
// indexes cost 0.4 ms of CPU a poll, 17 polls a second at 1,000 repos). Otherwise it
// checks, which advertises the refs again as part of the fetch.
func (s *Source) Poll(ctx context.Context, repo config.Repo) (Result, error) {
	dir := s.dir(repo)
	s.mu.Lock()
	rev, known := s.last[dir+"\x00"+repo.ManifestPath()]
	refused, compact := s.refused[dir] != nil, s.compact[dir]
	s.mu.Unlock()
	if !known || refused || compact {
		return s.Check(ctx, repo)
	}
	if _, err := os.Stat(dir); err != nil {
		return s.Check(ctx, repo) // gone from under deployd: a check clones it again
	}
	auth, err := authFor(repo)
	if err != nil {
		return Result{}, err
	}
	remote := git.NewRemote(nil, &gitconfig.RemoteConfig{Name: "origin", URLs: []string{repo.URL}})
	head, err := s.head(ctx, remote, auth, plumbing.NewBranchReferenceName(repo.Branch))
	if err != nil {
		return Result{}, fetchFailed(repo, err)
	}
	if head == rev.Commit {
		return Result{Revision: rev}, nil
	}
	return s.Check(ctx, repo)
}

// discard removes the cache at dir, closed first, so the next check clones it afresh.
func (s *Source) discard(repo config.Repo, dir, why string) error {
	s.forget(dir)
	if err := os.RemoveAll(dir); err != nil {
		return diskFault(repo, dir, fmt.Errorf("%s: removing the cache %s %s: %w", repo.Name, dir, why, err))
	}
	return nil
}

// takeCompact reports whether dir is to be cloned afresh, and forgets that it is.
func (s *Source) takeCompact(dir string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.compact[dir]
	delete(s.compact, dir)
	return c
}

// packCount is how many packfiles the bare cache at dir holds.
func packCount(dir string) int {
	entries, err := os.ReadDir(filepath.Join(dir, "objects", "pack"))
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".pack") {
			n++
		}
	}
	return n
}

// isDiskFault reports whether err is the cache's disk refusing a write: full (or over
// quota) or read-only. Cloning again cannot cure that, and the cache is left as it is.
func isDiskFault(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS)
}

// diskFault replaces a disk fault's error, which names a file deep in the cache after a
// git operation it broke, with one saying what the operator must fix and where; any
// other err is returned as it is.
func diskFault(repo config.Repo, dir string, err error) error {
	if !isDiskFault(err) {
		return err
	}
	var errno syscall.Errno
	errors.As(err, &errno)
	if errno == syscall.EROFS {
		return fmt.Errorf("%s: the git cache's disk is read-only: cannot write to %s: %w (make it writable, or point --cache-dir at a writable directory)", repo.Name, dir, errno)
	}
	return fmt.Errorf("%s: the git cache's disk is full: cannot write to %s: %w (free space there, or point --cache-dir at a bigger disk)", repo.Name, dir, errno)
}

// cacheError is a problem with the local clone, cured by cloning again.
type cacheError struct{ err error }

func (e *cacheError) Error() string { return "cache unusable: " + e.err.Error() }
func (e *cacheError) Unwrap() error { return e.err }

func (s *Source) check(ctx context.Context, repo config.Repo, dir string, auth transport.AuthMethod) (Result, error) {
	defer s.lock(dir)()
	r, err := s.repository(dir, repo.URL)
	if err != nil {
		return Result{}, err
	}
	defer releaseIndexes(r)
	remote, err := r.Remote("origin")
	if err != nil {
		return Result{}, &cacheError{err}
	}
	branch := plumbing.NewBranchReferenceName(repo.Branch)
	before := plumbing.ZeroHash
	if ref, err := r.Reference(branch, true); err == nil {
		before = ref.Hash()
	}
	if refused, err := s.stillRefused(ctx, remote, auth, dir, branch); refused != nil || err != nil {
		return refusedResult(refused), fetchFailed(repo, cmpErr(err, refused))
	}
	// One fetch, no ls-remote first: its ref advertisement is the whole cost when nothing
	// changed, and a change is fetched without a second advertisement.
	if err := s.fetch(ctx, remote, auth, branch); err != nil {
		var over *FetchLimitError
		if errors.As(err, &over) {
			s.refuse(ctx, remote, auth, dir, branch, over)
			return refusedResult(over), fetchFailed(repo, over)
		}
		return Result{}, fetchFailed(repo, err)
	}
	ref, err := r.Reference(branch, true)
	if err != nil {
		return Result{}, &cacheError{fmt.Errorf("branch %s missing after the fetch: %w", repo.Branch, err)}
	}
	key := dir + "\x00" + repo.ManifestPath()
	s.mu.Lock()
	rev, known := s.last[key]
	s.mu.Unlock()
	if known && rev.Commit == ref.Hash().String() {
		return Result{Revision: rev, Fetched: ref.Hash() != before}, nil
	}
	rev, err = revision(r, ref.Hash(), repo.ManifestPath())
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", repo.Name, err)
	}
	s.mu.Lock()
	s.last[key] = rev
	s.mu.Unlock()
	return Result{Revision: rev, Fetched: ref.Hash() != before}, nil
}

// fetch gets the branch head, shallow where the server allows it.
func (s *Source) fetch(ctx context.Context, remote *git.Remote, auth transport.AuthMethod, branch plumbing.ReferenceName) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	opts := &git.FetchOptions{
		RefSpecs: []gitconfig.RefSpec{gitconfig.RefSpec("+" + branch.String() + ":" + branch.String())},
		Auth:     auth,
		Depth:    1,
		Tags:     git.NoTags,
		Force:    true,
	}
	err := remote.FetchContext(ctx, opts)
	if overLimit(err) {
		return err
	}
	if errors.As(err, &git.NoMatchingRefSpecError{}) {
		return fmt.Errorf("branch %q not found on the remote", branch.Short())
	}
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) && ctx.Err() == nil && !isNetwork(err) {
		// Some servers (go-git's own file:// server among them) cannot serve shallow fetches.
		opts.Depth = 0
		err = remote.FetchContext(ctx, opts)
	}
	switch {
	case errors.As(err, new(*FetchLimitError)):
		return err
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
		return nil
	case ctx.Err() != nil || isNetwork(err):
		return networkError(ctx, err)
	default:
		return &cacheError{err}
	}
}

func revision(r *git.Repository, head plumbing.Hash, manifestPath string) (Revision, error) {
	commit, err := r.CommitObject(head)
	if err != nil {
		return Revision{}, &cacheError{fmt.Errorf("commit %s missing after fetch: %w", head, err)}
	}
	tree, err := commit.Tree()
	if err != nil {
		return Revision{}, &cacheError{fmt.Errorf("reading commit %s: %w", head, err)}
	}
	treeHash := tree.Hash
	if manifestPath != "." && manifestPath != "" {
		sub, err := tree.Tree(manifestPath)
		if errors.Is(err, object.ErrDirectoryNotFound) {
			return Revision{}, fmt.Errorf("commit %s has no directory %q: create it, or set path in repos.yaml", head.String()[:12], manifestPath)
		}
		if err != nil {
			return Revision{}, &cacheError{fmt.Errorf("reading %s at %s: %w", manifestPath, head, err)}
		}
		treeHash = sub.Hash
	}
	msg, _, _ := strings.Cut(strings.TrimSpace(commit.Message), "\n")
	rev := Revision{Commit: head.String(), Tree: treeHash.String(), Message: msg, Author: commit.Author.Name, Time: commit.Author.When.UTC(),
		Root: len(commit.ParentHashes) == 0}
	if len(commit.ParentHashes) <= MaxParents {
		for _, p := range commit.ParentHashes {
			rev.Parents = append(rev.Parents, p.String())
		}
	}
	return rev, nil
}

// openOrInit opens the bare cache at dir, creating it with an origin remote for url.
func openOrInit(dir, url string) (*git.Repository, error) {
	r, err := git.PlainOpen(dir)
	if err == nil {
		return r, nil
	}
	if !errors.Is(err, git.ErrRepositoryNotExists) {
		return nil, &cacheError{err}
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("creating cache directory: %w", err)
	}
	if r, err = git.PlainInit(dir, true); err != nil {
		return nil, fmt.Errorf("creating cache %s: %w", dir, err)
	}
	if _, err := r.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{url}}); err != nil {
		return nil, fmt.Errorf("creating cache %s: %w", dir, err)
	}
	return r, nil
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// dir is the repo's cache directory; a URL change gets a fresh one.
func (s *Source) dir(repo config.Repo) string {
	sum := sha256.Sum256([]byte(repo.URL))
	name := unsafeName.ReplaceAllString(strings.ToLower(repo.Name), "_") + "@" + repo.Environment + "-" + hex.EncodeToString(sum[:4])
	return filepath.Join(s.opts.CacheDir, name)
}

// isNetwork tells failures of the server or the network from problems of the cache.
func isNetwork(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || httpAnswer(err) != nil ||
		errors.Is(err, transport.ErrAuthenticationRequired) || errors.Is(err, transport.ErrAuthorizationFailed) ||
		errors.Is(err, transport.ErrRepositoryNotFound) || errors.Is(err, transport.ErrEmptyRemoteRepository) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// httpAnswer returns the unexpected HTTP answer err reports, or nil. go-git wraps it in
// a plumbing.UnexpectedError, which does not unwrap: errors.As alone misses it, and a
// server answering 500 would be taken for a broken cache and the cache thrown away.
func httpAnswer(err error) *githttp.Err {
	var answer *githttp.Err
	if errors.As(err, &answer) {
		return answer
	}
	var unexpected *plumbing.UnexpectedError
	if errors.As(err, &unexpected) && errors.As(unexpected.Err, &answer) {
		return answer
	}
	return nil
}

func networkError(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("timed out: %w", err)
	}
	if answer := httpAnswer(err); answer != nil {
		return fmt.Errorf("the server answered %s: %w", answer.Response.Status, answer)
	}
	return err
}

// Limits bound what Files reads from a commit.
type Limits struct {
	// MaxFileBytes skips larger files (manifests are small; assets in the repo are not read).
	MaxFileBytes int64
	// MaxTotalBytes fails the read when the files kept add up to more.
	MaxTotalBytes int64
	// MaxFiles fails the read when it would keep more files.
	MaxFiles int
}

// DefaultLimits keeps files up to 1 MiB, and fails past 10 MiB or 1,000 files in all.
// A repo may render to at most 1,000 objects (deploy.DefaultMaxObjects), and a manifest
// file holds one or more: more files than that under a manifests path are not manifests
// (a path pointing at code or assets, or a hostile repo), and reading them only costs
// memory and time before the deployment fails anyway.
func DefaultLimits() Limits {
	return Limits{MaxFileBytes: 1 << 20, MaxTotalBytes: 10 << 20, MaxFiles: 1000}
}

// LimitError refuses a commit whose files under Dir exceed Limits: reading the same
// commit again cannot succeed.
type LimitError struct {
	// Dir is the directory read ("." for the whole repo).
	Dir string
	// Files counts the files under Dir that Files would keep (regular, at most
	// MaxFileBytes each), and Bytes is their size.
	Files int
	Bytes int64
	// Limits are the limits that were applied.
	Limits Limits
}

func (e *LimitError) Error() string {
	where, fix := e.Dir, "keep only manifests there, or set path in repos.yaml to a directory that holds only manifests"
	if where == "." || where == "" {
		where, fix = "the repo", `deployd reads the whole repo when path is "." or holds a kustomization: keep fewer files in the repo, or the manifests in a repo of their own`
	}
	if e.Files > e.Limits.MaxFiles {
		return fmt.Sprintf("%s has %d files, more than the limit of %d: %s", where, e.Files, e.Limits.MaxFiles, fix)
	}
	return fmt.Sprintf("the files in %s add up to %s, more than the limit of %s: %s", where, formatBytes(e.Bytes), formatBytes(e.Limits.MaxTotalBytes), fix)
}

// formatBytes is n in the largest binary unit it has a whole one of, rounded up to a
// tenth so that a size just over a limit does not print as the limit: "10.1 MiB".
func formatBytes(n int64) string {
	unit, size := "bytes", float64(n)
	switch {
	case n >= 1<<20:
		unit, size = "MiB", size/(1<<20)
	case n >= 1<<10:
		unit, size = "KiB", size/(1<<10)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
	return strings.TrimSuffix(strconv.FormatFloat(math.Ceil(size*10)/10, 'f', 1, 64), ".0") + " " + unit
}

// Files returns the regular files of commit under dir ("." for all), read from git
// objects in the cache, not from a work tree a concurrent fetch could change. Symlinks
// and submodules are left out: their targets are never followed. Files over a limit
// fail the read with a *LimitError that says by how much.
func (s *Source) Files(repo config.Repo, commit, dir string, lim Limits) (map[string][]byte, error) {
	defer s.lock(s.dir(repo))()
	tree, err := s.tree(repo, commit, dir)
	if r, _ := s.repository(s.dir(repo), repo.URL); r != nil {
		defer releaseIndexes(r)
	}
	if errors.Is(err, object.ErrDirectoryNotFound) {
		return map[string][]byte{}, nil
	}
	if err != nil {
		return nil, err
	}
	prefix := strings.TrimSuffix(dir, "/") + "/"
	if dir == "." || dir == "" {
		prefix = ""
	}
	files := map[string][]byte{}
	over := &LimitError{Dir: dir, Limits: lim}
	err = tree.Files().ForEach(func(f *object.File) error {
		if !f.Mode.IsFile() || f.Mode == filemode.Symlink || f.Size > lim.MaxFileBytes {
			return nil
		}
		// Past a limit the rest is counted, not read, so the error says by how much.
		over.Files++
		over.Bytes += f.Size
		if over.Files > lim.MaxFiles || over.Bytes > lim.MaxTotalBytes {
			return nil
		}
		content, err := f.Contents()
		if err != nil {
			return fmt.Errorf("reading %s%s: %w", prefix, f.Name, err)
		}
		files[prefix+f.Name] = []byte(content)
		return nil
	})
	if err == nil && (over.Files > lim.MaxFiles || over.Bytes > lim.MaxTotalBytes) {
		err = over
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", repo.Name, err)
	}
	return files, nil
}

// tree returns the tree of dir at commit: only it is walked, not the whole repo's.
func (s *Source) tree(repo config.Repo, commit, dir string) (*object.Tree, error) {
	r, err := s.repository(s.dir(repo), repo.URL)
	if err != nil {
		return nil, fmt.Errorf("%s: opening the git cache: %w", repo.Name, err)
	}
	c, err := r.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return nil, fmt.Errorf("%s: commit %s: %w", repo.Name, commit, err)
	}
	tree, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("%s: commit %s: %w", repo.Name, commit, err)
	}
	if dir = strings.TrimSuffix(dir, "/"); dir == "." || dir == "" {
		return tree, nil
	}
	sub, err := tree.Tree(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: reading %s at commit %s: %w", repo.Name, dir, ShortSHA(commit), err)
	}
	return sub, nil
}

// Resolve returns the revision of a commit: from the cache (a rollback's target), else
// fetched by its SHA (a GitHub deployment of a tag or hotfix off the branch; the server
// must allow fetching reachable commits by SHA, as GitHub does).
func (s *Source) Resolve(ctx context.Context, repo config.Repo, commit string) (Revision, error) {
	rev, err := s.resolve(ctx, repo, commit)
	return rev, diskFault(repo, s.dir(repo), err)
}

func (s *Source) resolve(ctx context.Context, repo config.Repo, commit string) (Revision, error) {
	defer s.lock(s.dir(repo))()
	hash := plumbing.NewHash(commit)
	if hash.IsZero() || hash.String() != strings.ToLower(commit) {
		return Revision{}, fmt.Errorf("%s: %q is not a full commit SHA", repo.Name, commit)
	}
	r, err := s.repository(s.dir(repo), repo.URL)
	if err != nil {
		return Revision{}, fmt.Errorf("%s: opening the git cache: %w", repo.Name, err)
	}
	defer releaseIndexes(r)
	if _, err := r.CommitObject(hash); err != nil {
		auth, err := authFor(repo)
		if err != nil {
			return Revision{}, err
		}
		remote, err := r.Remote("origin")
		if err != nil {
			return Revision{}, fmt.Errorf("%s: %w", repo.Name, err)
		}
		fctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		defer cancel()
		spec := gitconfig.RefSpec("+" + hash.String() + ":refs/deployd/" + hash.String())
		err = remote.FetchContext(fctx, &git.FetchOptions{RefSpecs: []gitconfig.RefSpec{spec}, Auth: auth, Depth: 1, Tags: git.NoTags})
		var over *FetchLimitError
		if errors.As(err, &over) {
			removeTempPacks(s.dir(repo))
			over.Commit = hash.String()
			return Revision{}, fmt.Errorf("%s: fetching commit %s: %w", repo.Name, ShortSHA(commit), over)
		}
		if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return Revision{}, fmt.Errorf("%s: fetching commit %s: %w", repo.Name, ShortSHA(commit), networkError(fctx, err))
		}
	}
	rev, err := revision(r, hash, repo.ManifestPath())
	if err != nil {
		return Revision{}, fmt.Errorf("%s: commit %s: %w", repo.Name, ShortSHA(commit), err)
	}
	return rev, nil
}

// fetchFailed says which repo, branch and URL a fetch failed for.
func fetchFailed(repo config.Repo, err error) error {
	return fmt.Errorf("%s: fetching %s from %s: %w", repo.Name, repo.Branch, repo.URL, err)
}

// refusedResult is what a check tells of a refused head: its commit, nothing else.
func refusedResult(over *FetchLimitError) Result {
	if over == nil {
		return Result{}
	}
	return Result{Revision: Revision{Commit: over.Commit}}
}

// refuse remembers that the branch's head could not be fetched, and removes what the
// refused fetch left behind.
func (s *Source) refuse(ctx context.Context, remote *git.Remote, auth transport.AuthMethod, dir string, branch plumbing.ReferenceName, over *FetchLimitError) {
	removeTempPacks(dir)
	over.Commit, _ = s.head(ctx, remote, auth, branch)
	if over.Commit == "" {
		return // not known: the next check fetches again
	}
	s.mu.Lock()
	s.refused[dir] = over
	s.mu.Unlock()
}

// stillRefused returns the refusal of the branch's head when it did not move since; the
// fetch is not tried again. Only a repo refused before pays for this ref listing.
func (s *Source) stillRefused(ctx context.Context, remote *git.Remote, auth transport.AuthMethod, dir string, branch plumbing.ReferenceName) (*FetchLimitError, error) {
	s.mu.Lock()
	over := s.refused[dir]
	s.mu.Unlock()
	if over == nil {
		return nil, nil
	}
	head, err := s.head(ctx, remote, auth, branch)
	if err != nil {
		return nil, err
	}
	if head == over.Commit {
		return over, nil
	}
	s.mu.Lock()
	delete(s.refused, dir)
	s.mu.Unlock()
	return nil, nil
}

// head lists the remote's refs and returns the branch's commit.
func (s *Source) head(ctx context.Context, remote *git.Remote, auth transport.AuthMethod, branch plumbing.ReferenceName) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth})
	if err != nil {
		return "", networkError(ctx, err)
	}
	for _, r := range refs {
		if r.Name() == branch {
			return r.Hash().String(), nil
		}
	}
	return "", fmt.Errorf("branch %q not found on the remote", branch.Short())
}

// ShortSHA is the 12-character prefix deployd shows of a commit SHA (the whole of a
// shorter one).
func ShortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
