package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/deployd/deployd/internal/preview"
	"github.com/deployd/deployd/internal/source"
)

// buildPreviews sets up pull request previews: a git cache of their own (a preview
// never fetches into the cache deployments check) and one worker that yields to
// waiting deployments.
func (d *Daemon) buildPreviews(context.Context) error {
	srcOpts := source.DefaultOptions()
	srcOpts.CacheDir, srcOpts.Timeout = filepath.Join(d.opts.CacheDir, "previews"), d.opts.GitTimeout
	srcOpts.MaxFetchBytes, srcOpts.MaxObjectBytes = int64(d.opts.GitMaxFetchMiB)<<20, int64(d.opts.GitMaxObjectMiB)<<20
	if err := os.MkdirAll(srcOpts.CacheDir, 0o700); err != nil {
		return fmt.Errorf("creating the previews' git cache directory: %w", err)
	}
	src := source.New(srcOpts)
	d.previewSrc = src
	pruneCaches(src, d.watcher.State().Config, d.log)
	opts := d.opts.Previews
	if opts.PublicURL == "" {
		opts.PublicURL = d.opts.PublicURL
	}
	opts.Busy = func() bool { return d.ctl.Len() > 0 }
	opts.Failed = func(repo string, number int, err error) {
		d.log.Warn("pull request preview", "repo", repo, "pr", number, "err", err)
	}
	done := opts.Done
	opts.Done = func(repo string, number int, res preview.Result) {
		d.log.Info("pull request previewed", "repo", repo, "pr", number, "env", res.Environment, "commit", res.Commit,
			"conclusion", res.Conclusion(), "summary", preview.Title(res))
		if done != nil {
			done(repo, number, res)
		}
	}
	pub := d.opts.PreviewPublisher
	if pub == nil && d.parts.checks != nil {
		pub = d.parts.checks
	}
	d.previews = preview.New(src, d.parts.applier, pub, opts)
	return nil
}
