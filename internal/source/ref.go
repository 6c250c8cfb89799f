package source

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/deployd/deployd/internal/config"
)

// refName is a ref FetchRef takes: a branch, a tag or a pull request's head, no "..".
var refName = regexp.MustCompile(`^refs/(heads|tags|pull)/[A-Za-z0-9._/-]{1,200}$`)

// PullRef is the ref GitHub keeps a pull request's head at, in the base repository, for
// pull requests from forks too.
func PullRef(number int) string { return fmt.Sprintf("refs/pull/%d/head", number) }

// FetchRef fetches ref (refs/heads/X, refs/tags/X or refs/pull/N/head; a short name is a
// branch) from the repo's configured URL, never another, within the fetch limits, and
// returns its revision. It is kept under refs/deployd/fetched/; a cache past maxPacks
// packs is cloned afresh first. Callers fetch one ref of a repo at a time, and a Source
// used for this should not be the one deployments check, so the two never fetch into one
// cache at once.
func (s *Source) FetchRef(ctx context.Context, repo config.Repo, ref string) (Revision, error) {
	if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	if !refName.MatchString(ref) || strings.Contains(ref, "..") || strings.HasSuffix(ref, "/") {
		return Revision{}, fmt.Errorf("%s: %q is not a branch, tag or pull request ref", repo.Name, ref)
	}
	dir := s.dir(repo)
	defer s.lock(dir)()
	// Each fetch brings a pack; past maxPacks the cache is cloned afresh, as Check does.
	if packCount(dir) > maxPacks {
		if err := s.discard(repo, dir, "to clone it afresh"); err != nil {
			return Revision{}, err
		}
	}
	r, err := s.repository(dir, repo.URL)
	if err != nil {
		return Revision{}, diskFault(repo, dir, fmt.Errorf("%s: opening the git cache: %w", repo.Name, err))
	}
	defer releaseIndexes(r)
	remote, err := r.Remote("origin")
	if err != nil {
		return Revision{}, fmt.Errorf("%s: %w", repo.Name, err)
	}
	local := "refs/deployd/fetched/" + strings.TrimPrefix(ref, "refs/")
	if err := s.fetchRef(ctx, remote, repo, ref, local); err != nil {
		removeTempPacks(dir)
		return Revision{}, diskFault(repo, dir, fmt.Errorf("%s: fetching %s from %s: %w", repo.Name, ref, repo.URL, err))
	}
	got, err := r.Reference(plumbing.ReferenceName(local), true)
	if err != nil {
		return Revision{}, fmt.Errorf("%s: %s missing after the fetch: %w", repo.Name, ref, err)
	}
	rev, err := revision(r, got.Hash(), repo.ManifestPath())
	if err != nil {
		return Revision{}, fmt.Errorf("%s: %s: %w", repo.Name, ref, err)
	}
	return rev, nil
}

// fetchRef fetches ref into local, shallow where the server allows it.
func (s *Source) fetchRef(ctx context.Context, remote *git.Remote, repo config.Repo, ref, local string) error {
	auth, err := authFor(repo)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	opts := &git.FetchOptions{RefSpecs: []gitconfig.RefSpec{gitconfig.RefSpec("+" + ref + ":" + local)}, Auth: auth, Depth: 1, Tags: git.NoTags, Force: true}
	err = remote.FetchContext(ctx, opts)
	switch {
	case overLimit(err):
		return err
	case errors.As(err, &git.NoMatchingRefSpecError{}):
		return fmt.Errorf("%s not found on the remote", ref)
	case err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) && ctx.Err() == nil && !isNetwork(err):
		opts.Depth = 0 // a server that cannot serve shallow fetches
		err = remote.FetchContext(ctx, opts)
	}
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
		return nil
	case errors.As(err, new(*FetchLimitError)):
		return err
	}
	return networkError(ctx, err)
}
