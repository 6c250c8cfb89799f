package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// idleCost is scenario 3: n repos deployed and unchanged, polled every 60 s: deployd's
// memory and CPU, git requests per poll cycle, API-server requests per minute.
func (e *env) idleCost(ctx context.Context, d *daemon, n int, r *results) error {
	// Idle starts once deployd has settled: for gcpace's calm after the cold start's
	// last collection at its busy pace, it still holds that pace's heap, and hands it
	// back after. Those seconds are reported on their own row, not hidden.
	settle := min(settleIdle, e.opts.idle/4)
	progress("idle: letting deployd settle for %s after the cold start", settle)
	var settling float64
	if err := sampleMemory(ctx, d, settle, func(m memStatus, _ time.Duration) { settling = max(settling, m.rss()) }); err != nil {
		return err
	}
	r.add(3, fmt.Sprintf("RSS while settling, the first %s after the last report (max; not idle yet)", settle), value(settling, "MB"), "", nil)
	_ = e.git.Requests() // forget the cold start's
	before, err := d.usage(ctx)
	if err != nil {
		return err
	}
	if e.opts.profile != "" {
		// Within the watch: a profile still running would refuse scenario 6's.
		go e.profile(ctx, d, "cpu-idle", fmt.Sprintf("profile?seconds=%d", max(1, min(60, int(e.opts.idle.Seconds())-2))))
	}
	start := time.Now()
	var rss, anon, file []float64
	if err := sampleMemory(ctx, d, e.opts.idle, func(m memStatus, at time.Duration) {
		rss, anon, file = append(rss, m.rss()), append(anon, m.anon), append(file, m.file)
		if len(rss)%30 == 0 {
			progress("idle: %s of %s, RSS %.0f MB (anonymous %.0f, file %.0f)", at.Round(time.Second), e.opts.idle, m.rss(), m.anon, m.file)
		}
	}); err != nil {
		return err
	}
	elapsed := time.Since(start)
	after, err := d.usage(ctx)
	if err != nil {
		return err
	}
	if e.opts.profile != "" {
		e.profile(ctx, d, "heap-idle", "heap")
	}
	adverts, fetches := 0, 0
	for _, req := range e.git.Requests() {
		switch {
		case strings.HasPrefix(req, "GET ") && strings.HasSuffix(req, "/info/refs?service=git-upload-pack"):
			adverts++
		case strings.HasPrefix(req, "POST ") && strings.HasSuffix(req, "/git-upload-pack"):
			fetches++
		}
	}
	cycles := elapsed.Seconds() / 60
	cpuPct := 100 * (after.cpu - before.cpu) / elapsed.Seconds()
	sort.Float64s(rss)
	sort.Float64s(anon)
	sort.Float64s(file)
	maxRSS := rss[len(rss)-1]
	r.add(3, fmt.Sprintf("%d idle repos: RSS over %s (max, median, min)", n, e.opts.idle.Round(time.Second)),
		figure{Value: maxRSS, Median: rss[len(rss)/2], Min: rss[0], Max: maxRSS, N: len(rss), Unit: "MB"}, "≤ 150 MB", maxRSS <= 150)
	r.add(3, "of which anonymous memory (RssAnon: Go heap, stacks, runtime)", figure{Value: anon[len(anon)-1], Median: anon[len(anon)/2], Min: anon[0], Max: anon[len(anon)-1], N: len(anon), Unit: "MB"}, "", nil)
	r.add(3, "of which file-backed (RssFile: deployd's binary, clean pages the kernel may reclaim)", figure{Value: file[len(file)-1], Median: file[len(file)/2], Min: file[0], Max: file[len(file)-1], N: len(file), Unit: "MB"}, "", nil)
	r.add(3, "CPU, average of one core", value(cpuPct, "%"), "≤ 5 %", cpuPct <= 5)
	r.add(3, "ref advertisements per repo per poll cycle", value(float64(adverts)/cycles/float64(n), "per repo"), "1", nil)
	r.add(3, "object fetches (git-upload-pack POSTs) while idle", value(float64(fetches), "requests"), "0", fetches == 0)
	r.add(3, "API-server requests per minute", value((after.kube-before.kube)/elapsed.Minutes(), "per min"), "", nil)
	return nil
}

// sampleMemory reads deployd's memory every second for dur and hands each reading to
// f, with the time since the first.
func sampleMemory(ctx context.Context, d *daemon, dur time.Duration, f func(m memStatus, at time.Duration)) error {
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(start) < dur {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		m, err := readMemStatus(d.cmd.Process.Pid)
		if err != nil {
			return err
		}
		f(m, time.Since(start))
	}
	return nil
}

// settleIdle is how long scenario 3 waits before its watch: gcpace's calm (30 s
// without a second busy with allocation) and a few of its one-second ticks.
const settleIdle = 35 * time.Second

// statusLoad is scenario 6: GET /deployment/{owner}/{repo} across the n repos at 64
// connections, from wrk in its own process: once as a client that takes the answer as
// it is (curl, wrk), once as one that accepts gzip (Go's HTTP client, so the generated
// client and deployd's CLI; browsers; Python's requests).
func (e *env) statusLoad(ctx context.Context, d *daemon, prefix string, n int, r *results) error {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return fmt.Errorf("wrk is not installed (apt-get install wrk; make bench installs it): %w", err)
	}
	script := filepath.Join(e.dir, "status.lua")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(wrkScript, n, prefix)), 0o644); err != nil {
		return err
	}
	pinned, restore, err := e.pin(ctx, d)
	if err != nil {
		return err
	}
	defer restore()
	// A warm-up, not counted: the first seconds of load after the idle watch find deployd
	// collecting at its idle pace (gcpace needs a second of load to notice it) and its
	// heap yet to grow, which is the start of a load, not its steady state.
	warm := min(5*time.Second, e.opts.load/4)
	warmArgs := wrkArgs(e, wrk, script, "", pinned, d.addr, warm)
	if out, err := exec.CommandContext(ctx, warmArgs[0], warmArgs[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("wrk (warm-up): %w\n%s", err, out)
	}
	for _, client := range []struct{ name, header string }{
		{"plain", ""},
		{"gzip", "Accept-Encoding: gzip"},
	} {
		if err := e.statusLoadOnce(ctx, d, wrk, script, client.name, client.header, pinned, n, r); err != nil {
			return fmt.Errorf("%s clients: %w", client.name, err)
		}
	}
	return nil
}

// statusLoadOnce is one wrk run of scenario 6, its requests carrying header (if any).
func (e *env) statusLoadOnce(ctx context.Context, d *daemon, wrk, script, client, header, pinned string, n int, r *results) error {
	_ = e.git.Requests()
	if e.opts.profile != "" {
		go e.profile(ctx, d, "cpu-status-load-"+client, fmt.Sprintf("profile?seconds=%d", int(e.opts.load.Seconds())-2))
		// And 3 s of execution trace in the steady middle: what ran on deployd's core
		// while requests waited (tracing costs the load some 10 %).
		go func() {
			select {
			case <-ctx.Done():
			case <-time.After(e.opts.load / 2):
				e.profile(ctx, d, "trace-status-load-"+client, "trace?seconds=3")
			}
		}()
	}
	before, err := d.usage(ctx)
	if err != nil {
		return err
	}
	args := wrkArgs(e, wrk, script, header, pinned, d.addr, e.opts.load)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("wrk: %w\n%s", err, out.String())
	}
	after, err := d.usage(ctx)
	if err != nil {
		return err
	}
	gitDuring := len(e.git.Requests())
	var res struct {
		Requests   float64 `json:"requests"`
		DurationUS float64 `json:"duration_us"`
		Errors     float64 `json:"errors"`
		Non2xx     float64 `json:"non2xx"`
		P50        float64 `json:"p50_us"`
		P99        float64 `json:"p99_us"`
		Bytes      float64 `json:"bytes"`
	}
	summary := out.String()[strings.LastIndex(out.String(), "{"):]
	if err := json.Unmarshal([]byte(strings.TrimSpace(summary)), &res); err != nil {
		return fmt.Errorf("reading wrk's summary: %w\n%s", err, out.String())
	}
	rps := res.Requests / (res.DurationUS / 1e6)
	progress("status load, %s clients: %.0f requests/s, p50 %.2f ms, p99 %.2f ms, %.0f bytes a response, errors %.0f, non-2xx %.0f",
		client, rps, res.P50/1000, res.P99/1000, res.Bytes/res.Requests, res.Errors, res.Non2xx)
	who := "clients taking the answer plain (curl, wrk)"
	if header != "" {
		who = "clients accepting gzip (Go's client, the generated one, deployd's CLI, browsers)"
	}
	r.add(6, fmt.Sprintf("GET /deployment/{owner}/{repo}, %d repos × 10 objects, 64 connections, %s%s, %s", n, e.opts.load, pinned, who), value(rps, "requests/s"), "≥ 20,000", rps >= 20000)
	r.add(6, "… bytes a response (headers and body)", value(res.Bytes/res.Requests, "bytes"), "", nil)
	perReqCPU := (after.cpu - before.cpu) / res.Requests * 1e6
	r.add(6, fmt.Sprintf("… deployd's CPU per request (it used %.2f cores; wrk, the git server and the cluster the rest)", (after.cpu-before.cpu)/(res.DurationUS/1e6)),
		value(perReqCPU, "µs"), "", nil)
	r.add(6, "… requests/s one core of deployd's would serve at that cost", value(1e6/perReqCPU, "requests/s"), "", nil)
	r.add(6, "… latency p50", value(res.P50/1000, "ms"), "", nil)
	r.add(6, "… latency p99", value(res.P99/1000, "ms"), "≤ 5 ms", res.P99/1000 <= 5)
	r.add(6, "… errors and non-2xx answers", value(res.Errors+res.Non2xx, "responses"), "0", res.Errors+res.Non2xx == 0)
	perReq := (after.kube - before.kube) / res.Requests
	r.add(6, fmt.Sprintf("… API-server requests during the load (%.0f; polls and probes go on)", after.kube-before.kube), value(perReq, "per GET"), "0 per request", perReq < 0.001)
	// Polls go on during the load: one ref advertisement per repo per minute is expected,
	// however many GETs are served (jitter and the cold start's bunching allow 1.5 ×).
	polls := float64(n) * e.opts.load.Seconds() / 60
	r.add(6, fmt.Sprintf("… git requests during the load (%.0f polls expected in %s)", polls, e.opts.load), value(float64(gitDuring), "requests"),
		"polls only", float64(gitDuring) <= 1.5*polls+10)
	return nil
}

// wrkArgs is the command line of one wrk run of scenario 6 against deployd at addr, for
// dur, its requests carrying header (if any).
func wrkArgs(e *env, wrk, script, header, pinned, addr string, dur time.Duration) []string {
	// One wrk thread a CPU it has: two threads on one CPU take turns on it, and the time a
	// ready answer waits for its thread's turn would count as deployd's latency.
	threads := 2
	if pinned != "" {
		threads = max(1, runtime.NumCPU()-1)
	}
	args := []string{wrk, "-t" + strconv.Itoa(threads), "-c64", "-d" + strconv.Itoa(max(1, int(dur.Seconds()))) + "s", "--timeout", "5s", "-s", script}
	if header != "" {
		args = append(args, "-H", header)
	}
	if pinned != "" {
		args = append([]string{"taskset", "-c", cpusBut0()}, args...)
	}
	if e.idle {
		args = append([]string{"chrt", "--other", "0"}, args...) // not the harness's idle priority
	}
	return append(args, "http://"+addr)
}

// pin keeps deployd on CPU 0 for the load, every thread of it, and moves the harness's
// own processes (this one with its git server and the git processes it starts, and the
// simulated cluster) to the other CPUs, where wrk runs too: deployd's core is its own,
// as a pod's CPU is in a cluster, and the figure's name says what shares the machine.
// There the moved processes run at idle priority, wrk alone at the normal one (see
// statusLoadOnce). restore gives every CPU, and the normal priority, back to all of
// them. On one core, or with -pin=false, nothing is pinned.
func (e *env) pin(ctx context.Context, d *daemon) (label string, restore func(), err error) {
	restore = func() {}
	if !e.opts.pin || runtime.NumCPU() < 2 {
		return "", restore, nil
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return "", restore, fmt.Errorf("taskset is not installed (util-linux), or run with -pin=false: %w", err)
	}
	all, others := fmt.Sprintf("0-%d", runtime.NumCPU()-1), cpusBut0()
	deployd := d.cmd.Process.Pid
	if out, err := exec.CommandContext(ctx, "taskset", "-a", "-p", "-c", "0", strconv.Itoa(deployd)).CombinedOutput(); err != nil {
		return "", restore, fmt.Errorf("taskset -a -p -c 0 %d: %w\n%s", deployd, err, out)
	}
	moved := append(descendants(os.Getpid(), deployd), os.Getpid())
	for _, pid := range moved {
		// A process may end meanwhile (a git request's): nothing to move then.
		_ = exec.CommandContext(ctx, "taskset", "-a", "-p", "-c", others, strconv.Itoa(pid)).Run()
	}
	// There, all but wrk run at idle priority (SCHED_IDLE; the git processes the harness's
	// git server starts for each poll inherit it): they run in wrk's idle time instead of
	// stopping it for milliseconds, which wrk would count as deployd's latency. They still
	// run: polls go on (the git requests are counted below).
	// As root only: without it, leaving idle priority again may be refused.
	idle := os.Geteuid() == 0 && exec.CommandContext(ctx, "chrt", "--idle", "-a", "-p", "0", strconv.Itoa(os.Getpid())).Run() == nil
	if idle {
		for _, pid := range moved {
			_ = exec.CommandContext(ctx, "chrt", "--idle", "-a", "-p", "0", strconv.Itoa(pid)).Run()
		}
	}
	e.idle = idle
	restore = func() {
		e.idle = false
		for _, pid := range append(moved, deployd) {
			_ = exec.Command("taskset", "-a", "-p", "-c", all, strconv.Itoa(pid)).Run()
			if idle && pid != deployd {
				_ = exec.Command("chrt", "--other", "-a", "-p", "0", strconv.Itoa(pid)).Run()
			}
		}
	}
	label = fmt.Sprintf(", deployd pinned to CPU 0; wrk, the cluster, the git server and the harness to CPU %s (taskset)", others)
	if idle {
		label += ", all but wrk at idle priority there (chrt --idle)"
	}
	return label, restore, nil
}

// cpusBut0 names every CPU but CPU 0 for taskset: "1" on two, "1-3" on four.
func cpusBut0() string {
	if runtime.NumCPU() == 2 {
		return "1"
	}
	return fmt.Sprintf("1-%d", runtime.NumCPU()-1)
}

// descendants lists the processes under root, leaving out skip and those under it.
func descendants(root, skip int) []int {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", en.Name(), "stat"))
		if err != nil || bytes.LastIndexByte(b, ')') < 0 {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])) // state, ppid, ...
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if c == skip {
				continue
			}
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// wrkScript rotates over the repos and prints wrk's summary as one JSON line. Its
// requests are formatted once, before the load, and it has no response() callback (wrk
// counts answers of status 400 and over itself, errors.status): Lua work per request
// costs wrk's own core time, which counts in the latencies it measures.
const wrkScript = `
local n, prefix = %d, %q
local reqs = {}
init = function(args)
  for k = 1, n do -- here, not at load: wrk.init sets the Host header just before
    reqs[k] = wrk.format("GET", string.format("/deployment/%%s-%%04d", prefix, k))
  end
end
local i = 0
request = function()
  i = i %% n + 1
  return reqs[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%%d,"duration_us":%%d,"bytes":%%d,"errors":%%d,"non2xx":%%d,"p50_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
`

// usage is what deployd has spent so far: CPU seconds and requests to the API server.
type usage struct{ cpu, kube float64 }

// usage reads deployd's CPU time and its deployd_kube_requests_total, so a scenario
// measures a window as the difference of two.
func (d *daemon) usage(ctx context.Context) (usage, error) {
	cpu, err := cpuSeconds(d.cmd.Process.Pid)
	if err != nil {
		return usage{}, err
	}
	kube, err := d.metric(ctx, "deployd_kube_requests_total")
	return usage{cpu: cpu, kube: kube}, err
}

// cpuSeconds is a process' user + system CPU time, from /proc/PID/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:])) // after "pid (comm) "
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100, nil // USER_HZ is 100 on Linux
}

// profile saves a pprof profile from deployd's debug listener into the profile directory.
func (e *env) profile(ctx context.Context, d *daemon, name, path string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.debug+"/debug/pprof/"+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		progress("profile %s: %v", name, err)
		return
	}
	defer resp.Body.Close()
	ext := ".pprof"
	if strings.HasPrefix(path, "trace") {
		ext = ".trace" // go tool trace reads it
	}
	f, err := os.Create(filepath.Join(e.opts.profile, name+ext))
	if err != nil {
		progress("profile %s: %v", name, err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}
