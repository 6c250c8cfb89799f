package render

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// maxConcurrentBuilds bounds the kustomize workers alive at once: each may use
// Limits.MaxMemory, and all share the pod's memory.
const maxConcurrentBuilds = 2

// workers starts render workers: one build each, with a spare started ahead.
var workers = &pool{slots: make(chan struct{}, maxConcurrentBuilds)}

// lastPeakRSS is the peak resident memory of the last worker that ended, in bytes
// (tests read it).
var lastPeakRSS atomic.Int64

type pool struct {
	slots chan struct{}
	mu    sync.Mutex
	spare *worker
}

// worker is a started child process waiting for its request.
type worker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser
	stderr *headBuffer
}

func startWorker() (*worker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("starting a render worker: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{workerEnv + "=" + workerEnvValue}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	w := &worker{cmd: cmd, stderr: &headBuffer{max: 4 << 10}}
	cmd.Stderr = w.stderr
	if w.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("starting a render worker: %w", err)
	}
	if w.stdout, err = cmd.StdoutPipe(); err != nil {
		return nil, fmt.Errorf("starting a render worker: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting a render worker: %w", err)
	}
	return w, nil
}

// take returns the spare worker, or a new one, and starts the next spare.
func (p *pool) take() (*worker, error) {
	p.mu.Lock()
	w := p.spare
	p.spare = nil
	p.mu.Unlock()
	go p.refill()
	if w != nil {
		return w, nil
	}
	return startWorker()
}

func (p *pool) refill() {
	w, err := startWorker()
	if err != nil {
		return // the next build starts its own, and reports the error
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spare == nil {
		p.spare = w
		return
	}
	w.stdin.Close() // another refill won: this one exits on EOF
	go w.cmd.Wait()
}

// build sends req to a worker and reads its objects, counting them as they arrive.
// The worker is killed when ctx is done or a limit is passed.
func (p *pool) build(ctx context.Context, req request) ([]Object, error) {
	select {
	case p.slots <- struct{}{}:
		defer func() { <-p.slots }()
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: waiting to build: %w", req.Dir, context.Cause(ctx))
	}
	w, err := p.take()
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { w.cmd.Process.Kill() })
	defer stop()
	go func() {
		_ = gob.NewEncoder(w.stdin).Encode(req) // a worker that died is reported by its exit
		w.stdin.Close()
	}()
	objs, rerr := w.read(req)
	if rerr != nil {
		w.cmd.Process.Kill()
	}
	werr := w.cmd.Wait()
	if st, ok := w.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		lastPeakRSS.Store(st.Maxrss << 10)
	}
	switch {
	case ctx.Err() != nil:
		return nil, &Error{File: req.Dir, Msg: fmt.Sprintf("kustomize build stopped: %v", context.Cause(ctx))}
	case rerr != nil && werr != nil && errors.Is(rerr, errWorkerDied):
		return nil, w.died(req, werr)
	case rerr != nil:
		return nil, rerr
	}
	return objs, nil
}

var errWorkerDied = errors.New("render worker ended without a reply")

// read decodes the worker's replies, counting objects and bytes against the limits.
func (w *worker) read(req request) ([]Object, error) {
	b := &budget{lim: req.Limits, dir: req.Dir}
	lr := &io.LimitedReader{R: w.stdout, N: req.Limits.MaxBytes + 1<<20}
	dec := gob.NewDecoder(lr)
	var objs []Object
	for {
		var r reply
		if err := dec.Decode(&r); err != nil {
			if lr.N <= 0 {
				return nil, b.add(int(req.Limits.MaxBytes))
			}
			return nil, errWorkerDied
		}
		if r.Done {
			if r.Err != nil {
				return nil, r.Err
			}
			return objs, nil
		}
		if err := b.add(len(r.JSON)); err != nil {
			return nil, err
		}
		u, err := decodeJSON(r.JSON)
		if err != nil {
			return nil, &Error{File: req.Dir, Msg: "kustomize output: " + err.Error()}
		}
		objs = append(objs, Object{Unstructured: u, Source: "kustomize " + req.Dir})
	}
}

// died explains a worker that ended without a reply: most often, over its memory.
func (w *worker) died(req request, werr error) error {
	tail := w.stderr.String()
	if signaled(werr, syscall.SIGXCPU) {
		return &Error{File: req.Dir, Msg: fmt.Sprintf("kustomize build used more than %d s of CPU: make the kustomization smaller", workerCPUSeconds)}
	}
	if strings.Contains(tail, "out of memory") || strings.Contains(tail, "cannot allocate memory") || strings.Contains(tail, "pthread_create failed") || signaled(werr, syscall.SIGKILL) {
		return &Error{File: req.Dir, Msg: fmt.Sprintf("kustomize build used more than the memory limit of %d MiB: make the kustomization smaller", req.Limits.MaxMemory>>20)}
	}
	if first, _, _ := strings.Cut(strings.TrimSpace(tail), "\n"); first != "" {
		return &Error{File: req.Dir, Msg: fmt.Sprintf("kustomize build failed: %v: %s", werr, first)}
	}
	return &Error{File: req.Dir, Msg: fmt.Sprintf("kustomize build failed: %v", werr)}
}

// signaled reports whether a worker's exit error is its death by sig (SIGKILL: the
// kernel's OOM killer, which prefers workers).
func signaled(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// headBuffer keeps the first max bytes written to it (a Go runtime's fatal error
// comes first, its goroutine dump after).
type headBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *headBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if room := t.max - t.buf.Len(); room > 0 {
		t.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (t *headBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
