package source

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/deployd/deployd/internal/panics"
)

// FetchLimitError refuses a fetch, permanently for the commit it would bring: a pack
// over Options.MaxFetchBytes, or an object in it over Options.MaxObjectBytes. Both are
// counted while the pack is received, so neither the disk nor the memory ever holds more.
type FetchLimitError struct {
	// Commit is the branch head that was being fetched (empty when not known).
	Commit string
	// Object is true for an object over its limit, false for the pack.
	Object bool
	// Size is the pack's bytes received when it was cut off, or the object's size.
	Size int64
	// Limit is the limit that was passed.
	Limit int64
}

func (e *FetchLimitError) Error() string {
	at := ""
	if e.Commit != "" {
		at = " of commit " + ShortSHA(e.Commit)
	}
	if e.Object {
		return fmt.Sprintf("the fetch%s holds an object of %s, more than the limit of %s per object: keep large files out of the repo (or in Git LFS), or raise --git-max-object-mib",
			at, formatBytes(e.Size), formatBytes(e.Limit))
	}
	return fmt.Sprintf("the fetch%s was cut off after %s, more than the limit of %s per fetch: keep large files out of the repo (or in Git LFS), or raise --git-max-fetch-mib",
		at, formatBytes(e.Size), formatBytes(e.Limit))
}

// limitedStorage is the cache's storage with every pack it receives checked against
// the limits as it is written.
type limitedStorage struct {
	*filesystem.Storage
	maxPack, maxObject int64
}

// PackfileWriter wraps the storage's: go-git copies a fetch's pack into it as it arrives.
func (s *limitedStorage) PackfileWriter() (io.WriteCloser, error) {
	w, err := s.Storage.PackfileWriter()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	lw := &limitedWriter{w: w, pw: pw, max: s.maxPack, done: make(chan error, 1)}
	go func() {
		err := checkPack(pr, s.maxObject)
		pr.CloseWithError(cmpErr(err, errPackChecked))
		lw.done <- err
	}()
	return lw, nil
}

// errPackChecked ends the checker's pipe once the whole pack was read.
var errPackChecked = errors.New("pack checked")

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// limitedWriter counts a pack's bytes and hands each write to the object checker before
// the storage sees it.
type limitedWriter struct {
	w    io.WriteCloser
	pw   *io.PipeWriter
	max  int64
	n    int64
	err  error
	done chan error
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	l.n += int64(len(p))
	if l.max > 0 && l.n > l.max {
		l.err = &FetchLimitError{Size: l.n, Limit: l.max}
		return 0, l.err
	}
	if _, err := l.pw.Write(p); err != nil && !errors.Is(err, errPackChecked) {
		l.err = err
		return 0, err
	}
	return l.w.Write(p)
}

// Close ends the check and the storage's pack: a refused pack's temporary file is left
// for removeTempPacks.
func (l *limitedWriter) Close() error {
	l.pw.Close()
	checkErr := <-l.done
	err := l.w.Close()
	var over *FetchLimitError
	if errors.As(checkErr, &over) {
		return checkErr
	}
	return err
}

// checkPack reads a pack stream (until it returns: then the pipe is closed and the
// rest goes to the storage alone) and refuses the first object over maxObject: a plain
// object by the size its header declares, a delta by the size of the object it makes
// (git's delta header), both before it is inflated. go-git's indexer holds each object
// whole in memory, so this bounds deployd's memory as well as its disk.
func checkPack(r io.Reader, maxObject int64) (err error) {
	defer panics.Recover(&err)
	if maxObject <= 0 {
		return nil
	}
	s := packfile.NewScanner(r)
	_, count, err := s.Header()
	if err != nil {
		return nil // not a pack: go-git's own parser says so
	}
	for range count {
		oh, err := s.NextObjectHeader()
		if err != nil {
			return nil
		}
		if !oh.Type.IsDelta() {
			if oh.Length > maxObject {
				return &FetchLimitError{Object: true, Size: oh.Length, Limit: maxObject}
			}
			if _, _, err := s.NextObject(io.Discard); err != nil {
				return nil
			}
			continue
		}
		var head deltaHead
		if _, _, err := s.NextObject(&head); err != nil {
			return nil
		}
		if size, ok := head.target(); ok && size > maxObject {
			return &FetchLimitError{Object: true, Size: size, Limit: maxObject}
		}
	}
	return nil
}

// deltaHead keeps the start of a delta: the sizes of its base and of its result.
type deltaHead struct{ b []byte }

func (d *deltaHead) Write(p []byte) (int, error) {
	if room := 20 - len(d.b); room > 0 {
		d.b = append(d.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// target is the size of the object the delta makes: its second varint.
func (d *deltaHead) target() (int64, bool) {
	rest := d.b
	var size int64
	for range 2 {
		size = 0
		shift := uint(0)
		for {
			if len(rest) == 0 || shift > 56 {
				return 0, false
			}
			c := rest[0]
			rest = rest[1:]
			size |= int64(c&0x7f) << shift
			shift += 7
			if c&0x80 == 0 {
				break
			}
		}
	}
	return size, true
}

// removeTempPacks removes what a refused fetch left in the cache at dir: go-git keeps
// the partial pack in a temporary file when its writer fails.
func removeTempPacks(dir string) {
	entries, _ := os.ReadDir(filepath.Join(dir, "objects", "pack"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "tmp_pack_") {
			_ = os.Remove(filepath.Join(dir, "objects", "pack", e.Name()))
		}
	}
}
