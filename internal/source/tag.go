package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/deployd/deployd/internal/config"
)

// Tag is an annotated tag to push.
type Tag struct {
	// Name is the tag's name without refs/tags/, e.g. production/deployment-0007.
	Name string
	// Commit is the full SHA of the tagged commit.
	Commit string
	// Message is the tag's message.
	Message string
	// Tagger signs the tag; its time should be fixed (the deployment's end), so the same
	// tag pushed again is the same object.
	Tagger object.Signature
}

// TagConflictError refuses a tag whose name the remote already has on another commit:
// pushing again cannot succeed, and deployd never moves a tag.
type TagConflictError struct {
	// Name is the tag's name; Commit the commit it was to tag; Existing the commit (or
	// object) the remote's tag points at.
	Name, Commit, Existing string
}

func (e *TagConflictError) Error() string {
	return fmt.Sprintf("tag %s already exists on the remote, on %s, not on %s: deployd does not move tags (delete it on the remote to have it pushed again)",
		e.Name, ShortSHA(e.Existing), ShortSHA(e.Commit))
}

// PushTag pushes an annotated tag to repo's remote, with the repo's credentials, over the
// same bounded transport as fetches. A tag already there on the same commit is success.
// The tag is built and packed in memory: the cache never holds it, so tags do not grow
// it. Only the tag object is sent: the remote must have the commit (it was fetched from it).
func (s *Source) PushTag(ctx context.Context, repo config.Repo, tag Tag) error {
	commit := plumbing.NewHash(tag.Commit)
	if commit.IsZero() || commit.String() != strings.ToLower(tag.Commit) {
		return fmt.Errorf("%s: tag %s: %q is not a full commit SHA", repo.Name, tag.Name, tag.Commit)
	}
	ref := plumbing.NewTagReferenceName(tag.Name)
	if err := ref.Validate(); err != nil {
		return fmt.Errorf("%s: tag %s: %w", repo.Name, tag.Name, err)
	}
	auth, err := authFor(repo)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	if err := pushTag(ctx, repo, tag, ref, commit, auth); err != nil {
		return fmt.Errorf("%s: pushing tag %s to %s: %w", repo.Name, tag.Name, repo.URL, err)
	}
	return nil
}

func pushTag(ctx context.Context, repo config.Repo, tag Tag, ref plumbing.ReferenceName, commit plumbing.Hash, auth transport.AuthMethod) (err error) {
	ep, err := transport.NewEndpoint(repo.URL)
	if err != nil {
		return err
	}
	c, err := client.NewClient(ep)
	if err != nil {
		return err
	}
	sess, err := c.NewReceivePackSession(ep, auth)
	if err != nil {
		return networkError(ctx, err)
	}
	defer func() {
		if cerr := sess.Close(); err == nil && cerr != nil && ctx.Err() == nil {
			err = cerr
		}
	}()
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil {
		return networkError(ctx, err)
	}
	mem := memory.NewStorage()
	hash, err := tagObject(mem, tag, commit)
	if err != nil {
		return err
	}
	if existing, ok := ar.References[ref.String()]; ok {
		if existing == hash {
			return nil
		}
		return checkExisting(ctx, repo, tag, ref, commit, auth)
	}
	var pack bytes.Buffer
	if _, err := packfile.NewEncoder(&pack, mem, false).Encode([]plumbing.Hash{hash}, 0); err != nil {
		return fmt.Errorf("packing the tag: %w", err)
	}
	req := packp.NewReferenceUpdateRequestFromCapabilities(ar.Capabilities)
	req.Commands = []*packp.Command{{Name: ref, Old: plumbing.ZeroHash, New: hash}}
	req.Packfile = io.NopCloser(&pack)
	rs, err := sess.ReceivePack(ctx, req)
	if err == nil && rs != nil {
		err = rs.Error()
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil || isNetwork(err):
		return networkError(ctx, err)
	default: // the server's report: a hook declined, the ref is protected, ...
		return fmt.Errorf("the server refused it: %w", err)
	}
}

// tagObject stores tag's object in mem and returns its hash.
func tagObject(mem *memory.Storage, tag Tag, commit plumbing.Hash) (plumbing.Hash, error) {
	obj := &object.Tag{Name: tag.Name, Tagger: tag.Tagger, Message: tag.Message, TargetType: plumbing.CommitObject, Target: commit}
	eo := mem.NewEncodedObject()
	if err := obj.Encode(eo); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("encoding the tag: %w", err)
	}
	return mem.SetEncodedObject(eo)
}

// checkExisting asks the remote, through a listing that peels tags, which commit its tag
// of the same name points at: the same commit is success (a tag pushed before a restart,
// or by another replica, with another message), another is a *TagConflictError.
func checkExisting(ctx context.Context, repo config.Repo, tag Tag, ref plumbing.ReferenceName, commit plumbing.Hash, auth transport.AuthMethod) error {
	remote := git.NewRemote(memory.NewStorage(), &gitconfig.RemoteConfig{Name: "origin", URLs: []string{repo.URL}})
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth, PeelingOption: git.AppendPeeled})
	if err != nil {
		return networkError(ctx, err)
	}
	var direct, peeled plumbing.Hash
	for _, r := range refs {
		switch r.Name().String() {
		case ref.String():
			direct = r.Hash()
		case ref.String() + "^{}":
			peeled = r.Hash()
		}
	}
	target := peeled
	if target.IsZero() {
		target = direct // a lightweight tag points at its commit itself
	}
	if target == commit {
		return nil
	}
	if target.IsZero() {
		return errors.New("the tag was advertised for pushing but not for fetching: try again")
	}
	return &TagConflictError{Name: tag.Name, Commit: commit.String(), Existing: target.String()}
}
