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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// maxConcurrentBuilds bounds the builds (kustomize or helm) running at once: each worker may
// use Limits.MaxMemory, and all share the pod's memory. One worker is kept warm between
// builds (it costs about 40 MiB); a second one, started when two builds overlap, exits
// after its build.
const (
	maxConcurrentBuilds = 2
	maxIdleWorkers      = 1
)

// workers runs kustomize builds and helm templates in worker processes.
var workers = &pool{slots: make(chan struct{}, maxConcurrentBuilds)}

// lastPeakRSS is the peak resident memory of the worker of the last build, in bytes
// (tests read it).
var lastPeakRSS atomic.Int64

type pool struct {
	slots chan struct{}
	mu    sync.Mutex
	idle  []*worker
}

// worker is a started child process, serving one build at a time.
type worker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	enc    *gob.Encoder
	dec    *gob.Decoder
	out    *io.LimitedReader // the budget of the build being read
	stderr *headBuffer
	// memory is the MaxMemory of its first build, which set its limit.
	memory int64
}

func startWorker(memory int64) (*worker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("starting a render worker: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{workerEnv + "=" + workerEnvValue}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	w := &worker{cmd: cmd, stderr: &headBuffer{max: 4 << 10}, memory: memory}
	cmd.Stderr = w.stderr
	if w.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("starting a render worker: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("starting a render worker: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting a render worker: %w", err)
	}
	w.out = &io.LimitedReader{R: stdout}
	w.enc, w.dec = gob.NewEncoder(w.stdin), gob.NewDecoder(w.out)
	return w, nil
}

// take returns an idle worker whose memory limit is memory, or starts one; reused says
// which.
func (p *pool) take(memory int64, fresh bool) (w *worker, reused bool, err error) {
	p.mu.Lock()
	for i, w := range p.idle {
		if w.memory == memory && !fresh {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			p.mu.Unlock()
			return w, true, nil
		}
	}
	p.mu.Unlock()
	w, err = startWorker(memory)
	return w, false, err
}

// put keeps w for the next build, or ends it if enough workers are idle.
func (p *pool) put(w *worker) {
	p.mu.Lock()
	if len(p.idle) < maxIdleWorkers {
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	w.stdin.Close() // it exits at the end of its input
	go w.cmd.Wait()
}

// refill starts a worker ahead of the next build when none is idle, so that the build
// does not wait for a process to start and kustomize to warm up.
func (p *pool) refill(memory int64) {
	p.mu.Lock()
	n := len(p.idle)
	p.mu.Unlock()
	if n >= maxIdleWorkers {
		return
	}
	if w, err := startWorker(memory); err == nil {
		p.put(w)
	}
}

// build sends req to a worker and reads its objects, counting them as they arrive.
// The worker is killed when ctx is done or a limit is passed.
func (p *pool) build(ctx context.Context, req request) (built, error) {
	select {
	case p.slots <- struct{}{}:
		defer func() { <-p.slots }()
	case <-ctx.Done():
		return built{}, &Error{File: req.Dir, Msg: fmt.Sprintf("%s stopped: %v", req.what(), context.Cause(ctx))}
	}
	objs, reused, err := p.buildOnce(ctx, req, false)
	if reused && errors.Is(err, errWorkerDied) && ctx.Err() == nil {
		// An idle worker may have died waiting (the OOM killer prefers workers): the
		// build is blamed only if it kills a fresh one too.
		objs, _, err = p.buildOnce(ctx, req, true)
	}
	var died *diedError
	if errors.As(err, &died) {
		return built{}, died.err
	}
	return objs, err
}

// built is what a worker's build produced.
type built struct {
	objects []Object
	// chart is the chart a helm build rendered.
	chart *Chart
}

// diedError is a worker's death, explained; it wraps errWorkerDied.
type diedError struct{ err error }

func (e *diedError) Error() string { return e.err.Error() }
func (e *diedError) Unwrap() error { return errWorkerDied }

func (p *pool) buildOnce(ctx context.Context, req request, fresh bool) (built, bool, error) {
	w, reused, err := p.take(req.Limits.MaxMemory, fresh)
	if err != nil {
		return built{}, false, err
	}
	stop := context.AfterFunc(ctx, func() { w.cmd.Process.Kill() })
	sent := make(chan error, 1)
	go func() { sent <- w.enc.Encode(req) }()
	objs, retire, rerr := w.read(req)
	stopped := !stop()
	<-sent // a worker that died is reported by its exit
	if !retire && !stopped {
		lastPeakRSS.Store(w.peakRSS())
		p.put(w)
		return objs, reused, rerr
	}
	w.cmd.Process.Kill()
	w.stdin.Close()
	werr := w.cmd.Wait()
	if st, ok := w.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		lastPeakRSS.Store(st.Maxrss << 10)
	}
	go p.refill(req.Limits.MaxMemory)
	switch {
	case ctx.Err() != nil:
		return built{}, reused, &Error{File: req.Dir, Msg: fmt.Sprintf("%s stopped: %v", req.what(), context.Cause(ctx))}
	case errors.Is(rerr, errWorkerDied):
		return built{}, reused, &diedError{w.died(req, werr)}
	}
	return objs, reused, rerr
}

var errWorkerDied = errors.New("render worker ended without a reply")

// read decodes the replies to one build, counting objects and bytes against the limits.
func (w *worker) read(req request) (out built, retire bool, err error) {
	b := &budget{lim: req.Limits, dir: req.Dir}
	w.out.N = req.Limits.MaxBytes + 1<<20 // JSON, and gob's framing
	for {
		var r reply
		if err := w.dec.Decode(&r); err != nil {
			if w.out.N <= 0 {
				return built{}, true, tooManyBytes(req.Dir, req.Limits)
			}
			return built{}, true, errWorkerDied
		}
		if r.Done {
			if r.Err != nil {
				return built{chart: r.Chart}, r.Retire, r.Err
			}
			out.chart = r.Chart
			return out, r.Retire, nil
		}
		if err := b.add(len(r.JSON)); err != nil {
			return built{}, true, err
		}
		u, err := decodeJSON(r.JSON)
		if err != nil {
			return built{}, true, &Error{File: req.Dir, Msg: req.what() + " output: " + err.Error()}
		}
		src := r.Source
		if src == "" {
			src = "kustomize " + req.Dir
		}
		out.objects = append(out.objects, Object{Unstructured: u, Source: src})
	}
}

// peakRSS is the worker's peak resident memory so far (VmHWM), or 0 if unknown.
func (w *worker) peakRSS() int64 {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(w.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// died explains a worker that ended without a reply: most often, over its memory. It is an
// *Error (the repo's fault) unless the worker could not set up its sandbox.
func (w *worker) died(req request, werr error) error {
	head := w.stderr.String()
	if signaled(werr, syscall.SIGXCPU) {
		return &Error{File: req.Dir, Msg: fmt.Sprintf("%s used more than %d s of CPU: make the %s smaller", req.what(), workerCPUSeconds, req.thing())}
	}
	if strings.Contains(head, "out of memory") || strings.Contains(head, "cannot allocate memory") || strings.Contains(head, "pthread_create failed") || strings.Contains(head, "failed to allocate") || signaled(werr, syscall.SIGKILL) {
		return &Error{File: req.Dir, Msg: fmt.Sprintf("%s used more than the memory limit of %d MiB: make the %s smaller", req.what(), req.Limits.MaxMemory>>20, req.thing())}
	}
	first, _, _ := strings.Cut(strings.TrimSpace(head), "\n")
	var ee *exec.ExitError
	if errors.As(werr, &ee) && ee.ExitCode() == exitConfine {
		// Not the repo's fault: deployd's environment refuses the sandbox.
		return fmt.Errorf("%s: the render worker could not confine itself: %s", req.Dir, first)
	}
	if first != "" {
		return &Error{File: req.Dir, Msg: fmt.Sprintf("%s failed: %v: %s", req.what(), werr, first)}
	}
	return &Error{File: req.Dir, Msg: fmt.Sprintf("%s failed: %v", req.what(), werr)}
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
