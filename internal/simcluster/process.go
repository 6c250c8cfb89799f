package simcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// process is one component of the cluster, logging to <Dir>/<name>.log.
type process struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// spawn starts a component in its own process group, logging to <Dir>/<name>.log.
func (c *Cluster) spawn(name, bin string, args ...string) (*process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return nil, fmt.Errorf("starting %s: the cluster is stopping", name)
	}
	p, err := startProcess(c.Dir, c.path(name+".log"), name, bin, args...)
	if err != nil {
		return nil, err
	}
	// A component started again (StartAPIServer, keepKwok) takes its predecessor's place,
	// so Stop still goes in reverse start order.
	for i, prev := range c.procs {
		if prev.name == name {
			c.procs[i] = p
			return p, nil
		}
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// startProcess starts bin in dir in its own process group, its output in logPath.
// Pdeathsig kills it if this process dies without stopping it (a test binary killed by a
// timeout).
func startProcess(dir, logPath, name, bin string, args ...string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", logPath, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Process is a program started for a local cluster or node: its own process group, its
// output in a log file, killed if the process that started it dies.
type Process struct{ p *process }

// StartProcess starts bin in dir, its output in logPath; name is for messages.
func StartProcess(dir, logPath, name, bin string, args ...string) (*Process, error) {
	p, err := startProcess(dir, logPath, name, bin, args...)
	if err != nil {
		return nil, err
	}
	return &Process{p}, nil
}

// Exited returns an error with the end of its log if the process has exited, else nil.
func (p *Process) Exited() error {
	select {
	case <-p.p.done:
		return fmt.Errorf("%s exited (%v):\n%s", p.p.name, p.p.err, p.p.tail())
	default:
		return nil
	}
}

// Stop asks the process group to end and kills it after grace.
func (p *Process) Stop(grace time.Duration) error { return p.p.stop(grace) }

// Pid is the process's id.
func (p *Process) Pid() int { return p.p.cmd.Process.Pid }

// proc returns the component named name, or nil.
func (c *Cluster) proc(name string) *process {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// waitHTTP waits until url answers 200, failing early if the process exits.
func (p *process) waitHTTP(ctx context.Context, client *http.Client, url, token string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v):\n%s", p.name, p.err, p.tail())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w\n%s", p.name, url, ctx.Err(), p.tail())
		case <-tick.C:
		}
	}
}

// tail returns the end of the process's log, for error messages.
func (p *process) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// stop asks the process group to end and kills it after a grace period.
func (p *process) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := syscall.Kill(pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing %s: %w", p.name, err)
	}
	<-p.done
	return nil
}

// stopProcesses stops the components in reverse start order.
func (c *Cluster) stopProcesses() error {
	c.mu.Lock()
	c.stopping = true // before the stops: keepKwok does not start kwok again
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		errs = append(errs, procs[i].stop(10*time.Second))
	}
	return errors.Join(errs...)
}

// PIDs returns the process ids of the cluster's components.
func (c *Cluster) PIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids := make([]int, len(c.procs))
	for i, p := range c.procs {
		pids[i] = p.cmd.Process.Pid
	}
	return pids
}
