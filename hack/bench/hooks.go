package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/pkg/client"
)

// statusReaders is how many clients read the status API during scenario 7.
const statusReaders = 4

// drainTimeout bounds the wait, after the last delivery, for every repo to be deployed.
const drainTimeout = 2 * time.Minute

// webhookLoad is scenario 7: deployd with webhook-only repos (interval 0) of one ConfigMap
// each, all deployed; then rate pushes per second round-robin over them, each a commit and
// a signed delivery sent without waiting for the others, while clients read the status API.
// No delivery may be lost (every repo ends deployed at its last push), no answer may be an
// error, and memory must stay flat.
func (e *env) webhookLoad(ctx context.Context, r *results) error {
	tmpl := e.git.NewRepo(e.tb, "bench/hooks-template")
	sha := tmpl.Commit("main", "first", app(appOptions{value: "first", configOnly: true}))
	progress("serving %d webhook-only repos", e.opts.hooksRepos)
	entries, err := e.copyRepos(tmpl, "bench/hooks", e.opts.hooksRepos)
	if err != nil {
		return err
	}
	repos := make([]*hookRepo, len(entries))
	for i, entry := range entries {
		if repos[i], err = openHookRepo(e.git.Root, entry, sha, "first"); err != nil {
			return err
		}
	}
	d, err := e.startDeployd("hooks", entries)
	if err != nil {
		return err
	}
	defer d.stop()
	if _, err := waitReady(ctx, d); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	_, err = d.waitFor(wctx, 250*time.Millisecond, func(s map[string]client.Summary) bool { return deployedCount(s, repos) == len(repos) })
	cancel()
	if err != nil {
		return fmt.Errorf("first deployment of the %d webhook-only repos: %w", len(repos), err)
	}
	progress("%d webhook-only repos deployed; pushing %d/s for %s", len(repos), e.opts.hooksRate, e.opts.hooksFor)
	l, err := e.loadHooks(ctx, d, repos)
	if err != nil {
		return err
	}
	return e.recordHooks(ctx, l, repos, r)
}

// hookRepo is one repo of scenario 7, committed to straight in its served bare repository,
// and what its main holds now.
type hookRepo struct {
	name, namespace string
	bare            string
	objects         storer.EncodedObjectStorer
	// mu orders the commits of pushes to this repo that overlap.
	mu    sync.Mutex
	head  plumbing.Hash
	value string
}

func openHookRepo(root string, entry repoEntry, head, value string) (*hookRepo, error) {
	bare := filepath.Join(root, entry.Name+".git")
	if _, err := os.Stat(bare); err != nil {
		return nil, err
	}
	s := filesystem.NewStorage(osfs.New(bare), cache.NewObjectLRUDefault())
	return &hookRepo{name: entry.Name, namespace: entry.Namespace, bare: bare, objects: s, head: plumbing.NewHash(head), value: value}, nil
}

// commit puts a commit on main whose ConfigMap holds value, as a push would: go-git writes
// the objects (each through a temporary file and a rename), and the ref moves as git moves
// it, through a lock file and a rename, so the git server never reads half of either.
func (h *hookRepo) commit(value string, when time.Time) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	tree, err := putFile(h.objects, manifestsFile, []byte(app(appOptions{value: value, configOnly: true})[manifestsFile]))
	if err != nil {
		return "", fmt.Errorf("%s: %w", h.name, err)
	}
	sig := object.Signature{Name: "Bench", Email: "bench@example.com", When: when}
	sha, err := put(h.objects, &object.Commit{Author: sig, Committer: sig, Message: "bench: " + value, TreeHash: tree, ParentHashes: []plumbing.Hash{h.head}})
	if err != nil {
		return "", fmt.Errorf("%s: %w", h.name, err)
	}
	ref := filepath.Join(h.bare, "refs", "heads", "main")
	f, err := os.OpenFile(ref+".lock", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", fmt.Errorf("%s: %w", h.name, err)
	}
	_, err = f.WriteString(sha.String() + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(ref+".lock", ref)
	}
	if err != nil {
		return "", fmt.Errorf("%s: moving main: %w", h.name, err)
	}
	h.head, h.value = sha, value
	return sha.String(), nil
}

// putFile stores content at path in an otherwise empty tree and returns the root tree.
func putFile(s storer.EncodedObjectStorer, path string, content []byte) (plumbing.Hash, error) {
	h, err := put(s, blob(content))
	mode := filemode.Regular
	parts := strings.Split(path, "/")
	for i := len(parts) - 1; i >= 0 && err == nil; i-- {
		h, err = put(s, &object.Tree{Entries: []object.TreeEntry{{Name: parts[i], Mode: mode, Hash: h}}})
		mode = filemode.Dir
	}
	return h, err
}

func put(s storer.EncodedObjectStorer, o interface {
	Encode(plumbing.EncodedObject) error
}) (plumbing.Hash, error) {
	obj := s.NewEncodedObject()
	if err := o.Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	return s.SetEncodedObject(obj)
}

// blob is a file's content, encoded as a git blob.
type blob []byte

func (b blob) Encode(o plumbing.EncodedObject) error {
	o.SetType(plumbing.BlobObject)
	w, err := o.Writer()
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	return w.Close()
}

// deployedCount is how many repos deployd says are deployed at their last push.
func deployedCount(s map[string]client.Summary, repos []*hookRepo) int {
	n := 0
	for _, repo := range repos {
		if deployedAt(repo.name, repo.head.String())(s) {
			n++
		}
	}
	return n
}

// delivery is one push of scenario 7.
type delivery struct {
	// due is the push's turn in the schedule; the commit begins then, and the webhook is
	// sent when it is written.
	due time.Time
	// commit is how long writing the commit took.
	commit time.Duration
	// sent is when the webhook was sent, took how long its answer took.
	sent time.Time
	took time.Duration
	// code is the answer's status code, 0 with err when there was none.
	code int
	err  error
}

// hookLoad is what scenario 7 saw.
type hookLoad struct {
	deliveries []delivery
	before     usage
	after      usage
	loadTime   time.Duration
	memory     []memSample
	reads      statusReads
	// drained is how long after the last answer every repo was deployed; 0 if not in time.
	drained  time.Duration
	deployed int
	git      []string
}

// loadHooks pushes, reads and samples memory, then waits for every repo to be deployed.
func (e *env) loadHooks(ctx context.Context, d *daemon, repos []*hookRepo) (*hookLoad, error) {
	l := &hookLoad{}
	_ = e.git.Requests() // forget the first deployments'
	rctx, stopReads := context.WithCancel(ctx)
	defer stopReads()
	reads := startReaders(rctx, d, repos, e.opts.hooksReads)
	mctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	start := time.Now()
	memory := startSampling(mctx, d, start)
	var err error
	if l.before, err = d.usage(ctx); err != nil {
		return nil, err
	}
	if l.deliveries, err = e.pushAll(ctx, d, repos); err != nil {
		return nil, err
	}
	l.loadTime = time.Since(start)
	if l.after, err = d.usage(ctx); err != nil {
		return nil, err
	}
	stopSampling()
	l.memory = <-memory
	last := start
	for _, dl := range l.deliveries {
		last = later(last, dl.sent.Add(dl.took))
	}
	progress("%d deliveries answered in %s; waiting for every repo to be deployed", len(l.deliveries), l.loadTime.Round(100*time.Millisecond))
	wctx, cancel := context.WithTimeout(ctx, drainTimeout)
	at, err := d.waitFor(wctx, 250*time.Millisecond, func(s map[string]client.Summary) bool {
		l.deployed = deployedCount(s, repos)
		return l.deployed == len(repos)
	})
	cancel()
	if err == nil {
		l.drained = at.Sub(last)
	} else if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	stopReads()
	l.reads = <-reads
	l.git = e.git.Requests()
	return l, nil
}

// pushAll makes rate pushes per second for the scenario's duration, round-robin over repos,
// each in its own goroutine on its turn: a commit, then a delivery, neither waiting for
// the pushes before it. A pusher that cannot keep up shows as a lower rate and as lag
// from the turn to the delivery. It returns when every delivery is answered.
func (e *env) pushAll(ctx context.Context, d *daemon, repos []*hookRepo) ([]delivery, error) {
	n := max(1, int(float64(e.opts.hooksRate)*e.opts.hooksFor.Seconds()))
	period := time.Second / time.Duration(e.opts.hooksRate)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer c.CloseIdleConnections()
	out := make([]delivery, n)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * period)
		timer.Reset(time.Until(due))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
		}
		repo := repos[i%len(repos)]
		wg.Go(func() { out[i] = e.pushOne(ctx, c, d, repo, fmt.Sprintf("push-%d", i), due) })
		if i > 0 && i%(10*e.opts.hooksRate) == 0 {
			progress("pushed %d of %d", i, n)
		}
	}
	wg.Wait()
	for _, dl := range out {
		if dl.sent.IsZero() && dl.err != nil {
			return nil, dl.err // the commit failed: the pusher's fault, not deployd's
		}
	}
	return out, nil
}

// pushOne commits value on repo and delivers the webhook.
func (e *env) pushOne(ctx context.Context, c *http.Client, d *daemon, repo *hookRepo, value string, due time.Time) delivery {
	dl := delivery{due: due}
	began := time.Now()
	sha, err := repo.commit(value, began)
	dl.commit = time.Since(began)
	if err != nil {
		dl.err = err
		return dl
	}
	dl.sent = time.Now()
	dl.code, dl.err = e.deliver(ctx, c, d, repo.name, sha)
	dl.took = time.Since(dl.sent)
	return dl
}

// statusReads counts the answers readers of the status API got.
type statusReads struct {
	codes  map[int]int
	errors int
	// firstErr is the first transport error, to say what went wrong.
	firstErr error
}

func (s statusReads) total() int {
	n := s.errors
	for _, c := range s.codes {
		n += c
	}
	return n
}

// startReaders starts statusReaders clients reading GET /deployment/{owner}/{repo} (9 in
// 10) and GET /deployments, together perSecond times a second (0: as fast as they can),
// until ctx ends; their counts then arrive on the channel.
func startReaders(ctx context.Context, d *daemon, repos []*hookRepo, perSecond int) <-chan statusReads {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: statusReaders}}
	counts := make([]statusReads, statusReaders)
	var wg sync.WaitGroup
	for k := range counts {
		counts[k].codes = map[int]int{}
		wg.Go(func() { readStatus(ctx, c, d, repos, k, perSecond, &counts[k]) })
	}
	out := make(chan statusReads, 1)
	go func() {
		wg.Wait()
		c.CloseIdleConnections()
		all := statusReads{codes: map[int]int{}}
		for _, s := range counts {
			for code, n := range s.codes {
				all.codes[code] += n
			}
			all.errors += s.errors
			if all.firstErr == nil {
				all.firstErr = s.firstErr
			}
		}
		out <- all
	}()
	return out
}

func readStatus(ctx context.Context, c *http.Client, d *daemon, repos []*hookRepo, k, perSecond int, out *statusReads) {
	var tick <-chan time.Time
	if perSecond > 0 {
		t := time.NewTicker(time.Second * statusReaders / time.Duration(perSecond))
		defer t.Stop()
		tick = t.C
	}
	for i := k; ; i += statusReaders {
		path := "/deployments"
		if i%10 != 0 {
			path = "/deployment/" + repos[i%len(repos)].name
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.addr+path, nil)
		resp, err := c.Do(req)
		if ctx.Err() != nil {
			return // the end of the load, not an error of deployd's
		}
		if err != nil {
			out.errors++
			if out.firstErr == nil {
				out.firstErr = err
			}
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			out.codes[resp.StatusCode]++
		}
		if tick != nil {
			select {
			case <-ctx.Done():
				return
			case <-tick:
			}
		}
	}
}

// memSample is deployd's memory at a moment of the load.
type memSample struct {
	at        time.Duration
	rss, heap float64 // MB
}

// startSampling samples deployd's RSS and Go heap in use every second from start until ctx
// ends; the samples then arrive on the channel. The first is taken at once.
func startSampling(ctx context.Context, d *daemon, start time.Time) <-chan []memSample {
	out := make(chan []memSample, 1)
	go func() {
		var samples []memSample
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			m, err := readMemStatus(d.cmd.Process.Pid)
			rss := m.rss()
			heap, herr := d.metric(ctx, "go_memstats_heap_inuse_bytes")
			if ctx.Err() != nil {
				out <- samples
				return
			}
			if err == nil && herr == nil {
				samples = append(samples, memSample{at: time.Since(start), rss: rss, heap: heap / (1 << 20)})
			}
			select {
			case <-ctx.Done():
				out <- samples
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// recordHooks checks the cluster for every repo's last value and adds scenario 7's figures.
func (e *env) recordHooks(ctx context.Context, l *hookLoad, repos []*hookRepo, r *results) error {
	inCluster, err := e.lastValues(ctx, repos)
	if err != nil {
		return err
	}
	e.recordDeliveries(l, len(repos), r)
	e.recordReads(l, r)
	all := fmt.Sprintf("%d/%d", len(repos), len(repos))
	r.add(7, "repos whose last push deployd says is deployed (head commit, succeeded)", value(float64(l.deployed), "repos"), all, l.deployed == len(repos))
	r.add(7, "repos whose ConfigMap in the cluster holds the last push's value", value(float64(inCluster), "repos"), all, inCluster == len(repos))
	if l.drained > 0 {
		r.add(7, "last delivery answered → every repo deployed", single(l.drained), "", nil)
	} else {
		r.add(7, fmt.Sprintf("last delivery answered → every repo deployed: %d/%d after %s", l.deployed, len(repos), drainTimeout),
			single(drainTimeout), fmt.Sprintf("≤ %s", drainTimeout), false)
	}
	recordMemory(l, r)
	n, cpu := float64(len(l.deliveries)), l.after.cpu-l.before.cpu
	r.add(7, "deployd's CPU during the load, average of one core", value(100*cpu/l.loadTime.Seconds(), "%"), "", nil)
	r.add(7, "deployd's CPU per delivery (with the reads and the deployments it caused)", value(1000*cpu/n, "ms"), "", nil)
	fetches := 0
	for _, req := range l.git {
		if strings.HasPrefix(req, "POST ") && strings.HasSuffix(req, "/git-upload-pack") {
			fetches++
		}
	}
	r.add(7, "git object fetches per delivery (pushes to a busy repo collapse)", value(float64(fetches)/n, "fetches"), "", nil)
	progress("%d/%d repos deployed at their last push, %d with the last value in the cluster", l.deployed, len(repos), inCluster)
	return nil
}

// recordDeliveries adds the pusher's rate and what deployd answered.
func (e *env) recordDeliveries(l *hookLoad, repos int, r *results) {
	n, rate := len(l.deliveries), e.opts.hooksRate
	lags, commits, took := make([]time.Duration, n), make([]time.Duration, n), make([]time.Duration, n)
	first, last := l.deliveries[0].sent, l.deliveries[0].sent
	non2xx, ignored, failed := 0, 0, 0
	var firstErr error
	for i, dl := range l.deliveries {
		lags[i], commits[i], took[i] = dl.sent.Sub(dl.due), dl.commit, dl.took
		first, last = earlier(first, dl.sent), later(last, dl.sent)
		switch {
		case dl.err != nil:
			failed++
			firstErr = cmp.Or(firstErr, dl.err)
		case dl.code/100 != 2:
			non2xx++
		case dl.code != http.StatusAccepted:
			ignored++ // 200: deployd did not queue the push
		}
	}
	achieved := float64(n) / l.loadTime.Seconds()
	if n > 1 && last.After(first) {
		achieved = float64(n-1) / last.Sub(first).Seconds() // n sends span n-1 periods
	}
	progress("%d deliveries at %.1f/s: %d non-2xx, %d not queued, %d unanswered", n, achieved, non2xx, ignored, failed)
	r.add(7, fmt.Sprintf("%d deliveries over %d webhook-only repos in %s: achieved rate", n, repos, e.opts.hooksFor),
		value(achieved, "deliveries/s"), fmt.Sprintf("%d/s", rate), achieved >= 0.98*float64(rate))
	r.add(7, fmt.Sprintf("pusher: turn in the schedule → delivery sent, p99 (commit p50 %s, p99 %s)", ms(percentile(commits, 50)), ms(percentile(commits, 99))),
		single(percentile(lags, 99)), "", nil)
	name := fmt.Sprintf("deliveries not queued: non-2xx %d, 200 not queued %d, unanswered %d", non2xx, ignored, failed)
	if firstErr != nil {
		name += fmt.Sprintf(" (first: %v)", firstErr)
	}
	r.add(7, name, value(float64(non2xx+ignored+failed), "deliveries"), "0", non2xx+ignored+failed == 0)
	r.add(7, "webhook answer latency p50", single(percentile(took, 50)), "", nil)
	r.add(7, "webhook answer latency p99", single(percentile(took, 99)), "", nil)
}

func (e *env) recordReads(l *hookLoad, r *results) {
	total, bad := l.reads.total(), l.reads.errors
	var codes []string
	for code, c := range l.reads.codes {
		if code/100 != 2 {
			bad += c
		}
		codes = append(codes, fmt.Sprintf("%d: %d", code, c))
	}
	sort.Strings(codes)
	pace := fmt.Sprintf("%d/s", e.opts.hooksReads)
	if e.opts.hooksReads == 0 {
		pace = "as fast as they go"
	}
	r.add(7, fmt.Sprintf("status API reads until every repo was deployed (%d readers, %s; %s)", statusReaders, pace, strings.Join(codes, ", ")),
		value(float64(total), "reads"), "", nil)
	name := fmt.Sprintf("status API reads non-2xx or failed (failed %d)", l.reads.errors)
	if l.reads.firstErr != nil {
		name += fmt.Sprintf(" (first: %v)", l.reads.firstErr)
	}
	r.add(7, name, value(float64(bad), "reads"), "0", bad == 0)
}

// recordMemory adds RSS and Go heap over the load. Memory grows at first for reasons that
// are not leaks (connections, the queue, histories filling up to --history-limit), so
// "flat" compares the end with a moment after that warm-up, 10 s in (a sixth of shorter
// loads): the end may be at most 20 % above it. The slope over the same stretch says
// whether it was still climbing.
func recordMemory(l *hookLoad, r *results) {
	if len(l.memory) < 2 {
		r.add(7, "memory samples", value(float64(len(l.memory)), "samples"), "≥ 2", false)
		return
	}
	warmAt := min(10*time.Second, l.loadTime/6)
	warm := l.memory[0]
	for _, s := range l.memory {
		if s.at <= warmAt {
			warm = s
		}
	}
	first, mid, end := l.memory[0], l.memory[len(l.memory)/2], l.memory[len(l.memory)-1]
	growth := 100 * (end.rss/warm.rss - 1)
	r.add(7, fmt.Sprintf("RSS at the end of the load (start %.0f, at %s %.0f, at %s %.0f MB)", first.rss, warm.at.Round(time.Second), warm.rss, mid.at.Round(time.Second), mid.rss),
		value(end.rss, "MB"), "", nil)
	r.add(7, fmt.Sprintf("RSS growth from %s into the load to its end", warm.at.Round(time.Second)), value(growth, "%"), "≤ +20 %", growth <= 20)
	rssSlope, heapSlope := slope(l.memory, warm.at, func(s memSample) float64 { return s.rss }), slope(l.memory, warm.at, func(s memSample) float64 { return s.heap })
	r.add(7, fmt.Sprintf("RSS slope from %s to the end (least squares)", warm.at.Round(time.Second)), value(rssSlope, "MB/min"), "", nil)
	r.add(7, fmt.Sprintf("Go heap in use at the end (start %.1f, at %s %.1f, at %s %.1f MB; slope %.2g MB/min)", first.heap, warm.at.Round(time.Second), warm.heap, mid.at.Round(time.Second), mid.heap, heapSlope),
		value(end.heap, "MB"), "", nil)
}

// slope is the least-squares slope of f over the samples from `from` on, per minute.
func slope(samples []memSample, from time.Duration, f func(memSample) float64) float64 {
	var n, sx, sy, sxx, sxy float64
	for _, s := range samples {
		if s.at < from {
			continue
		}
		x, y := s.at.Minutes(), f(s)
		n, sx, sy, sxx, sxy = n+1, sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	if n < 2 || n*sxx == sx*sx {
		return 0
	}
	return (n*sxy - sx*sy) / (n*sxx - sx*sx)
}

// lastValues counts the repos whose settings ConfigMap holds the value of their last push.
func (e *env) lastValues(ctx context.Context, repos []*hookRepo) (int, error) {
	list, err := e.kube.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=settings"})
	if err != nil {
		return 0, err
	}
	byNamespace := make(map[string]string, len(list.Items))
	for _, cm := range list.Items {
		byNamespace[cm.Namespace] = cm.Data["value"]
	}
	n := 0
	for _, repo := range repos {
		if v, ok := byNamespace[repo.namespace]; ok && v == repo.value {
			n++
		}
	}
	return n, nil
}

// percentile is the nearest-rank p-th percentile of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
