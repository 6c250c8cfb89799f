package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/pkg/client"
)

// hostileStreams is how many clients hold event streams during scenario 8.
const hostileStreams = 50

// hostileInput is one repo's hostile commit: the files it adds.
type hostileInput struct {
	name  string
	files func(silent string) (map[string]string, error)
}

// hostileInputs are the inputs of issue 17, one repo each: each once ended deployd,
// exhausted its memory or disk, or held a worker.
var hostileInputs = []hostileInput{
	{"crd", func(string) (map[string]string, error) {
		// A CRD declaring the CustomResourceDefinition kind namespaced: a nil dereference.
		b, err := os.ReadFile("internal/apply/testdata/crd-redefines-crd.yaml")
		return map[string]string{"deploy/manifests/crd.yaml": string(b)}, err
	}},
	{"big-blob", func(string) (map[string]string, error) {
		// 150 MiB that does not compress, outside the manifests: it filled the cache.
		b := make([]byte, 150<<20)
		_, _ = rand.Read(b)
		return map[string]string{"assets/video.bin": string(b)}, nil
	}},
	{"yaml-brackets", func(string) (map[string]string, error) {
		// 20 KB of "[": the fallback parser's quadratic re-parse took 635 MB.
		return map[string]string{"deploy/manifests/app.yaml": strings.Repeat("[", 20_000)}, nil
	}},
	{"many-objects", func(string) (map[string]string, error) {
		// 9 MiB of tiny documents: 150,000 objects rendered before the count was checked.
		doc := "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
		files := map[string]string{}
		for i := range 9 {
			files[fmt.Sprintf("deploy/manifests/many-%d.yaml", i)] = strings.Repeat(doc, (1<<20-1024)/len(doc))
		}
		return files, nil
	}},
	{"kustomize-remote", func(silent string) (map[string]string, error) {
		// A remote resource, capitalised past the check, on a server that never answers.
		return map[string]string{"deploy/manifests/kustomization.yaml": "Resources:\n  - http://" + silent + "/app.yaml\n"}, nil
	}},
}

// hostileLoad is scenario 8: n webhook-only repos of one ConfigMap, all deployed, are
// each pushed once while the repos of hostileInputs push their inputs and 50 clients
// hold event streams. Every normal repo must end deployed at its push, deployd must
// never restart, and each hostile repo must end with an error record.
func (e *env) hostileLoad(ctx context.Context, r *results) error {
	silent, stopSilent, err := silentServer()
	if err != nil {
		return err
	}
	defer stopSilent()
	tmpl := e.git.NewRepo(e.tb, "bench/calm-template")
	sha := tmpl.Commit("main", "first", app(appOptions{value: "first", configOnly: true}))
	entries, err := e.copyRepos(tmpl, "bench/calm", e.opts.hostileRepos)
	if err != nil {
		return err
	}
	calm := make([]*hookRepo, len(entries))
	for i, entry := range entries {
		if calm[i], err = openHookRepo(e.git.Root, entry, sha, "first"); err != nil {
			return err
		}
	}
	bad := map[string]*gittest.Repo{}
	for _, in := range hostileInputs {
		name := "bench/hostile-" + in.name
		bad[name] = e.git.NewRepo(e.tb, name)
		bad[name].Commit("main", "first", app(appOptions{value: "first", configOnly: true}))
		entries = append(entries, repoEntry{Name: name, URL: e.git.RepoURL(name), Namespace: strings.ReplaceAll(name, "/", "-")})
	}
	d, err := e.startDeployd("hostile", entries)
	if err != nil {
		return err
	}
	defer d.stop()
	if _, err := waitReady(ctx, d); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	_, err = d.waitFor(wctx, 250*time.Millisecond, func(s map[string]client.Summary) bool {
		return deployedCount(s, calm) == len(calm) && phases(s, bad, "succeeded") == len(bad)
	})
	cancel()
	if err != nil {
		return fmt.Errorf("first deployment of the %d repos: %w", len(entries), err)
	}
	progress("%d calm and %d hostile repos deployed; pushing all, hostile inputs included", len(calm), len(bad))
	pid := d.cmd.Process.Pid
	sctx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	streams := holdStreams(sctx, d, calm, hostileStreams)
	mctx, stopSampling := context.WithCancel(ctx)
	start := time.Now()
	memory := startSampling(mctx, d, start)
	if err := e.pushHostile(ctx, d, bad, silent); err != nil {
		stopSampling()
		return err
	}
	c := &http.Client{Timeout: 30 * time.Second}
	calmStart := time.Now()
	var wg sync.WaitGroup
	for i, repo := range calm {
		wg.Go(func() { _ = e.pushOne(ctx, c, d, repo, fmt.Sprintf("calm-%d", i), time.Now()) })
	}
	wg.Wait()
	wctx, cancel = context.WithTimeout(ctx, 3*time.Minute)
	calmAt, calmErr := d.waitFor(wctx, 250*time.Millisecond, func(s map[string]client.Summary) bool { return deployedCount(s, calm) == len(calm) })
	_, _ = d.waitFor(wctx, 250*time.Millisecond, func(s map[string]client.Summary) bool { return phases(s, bad, "error") == len(bad) })
	cancel()
	stopSampling()
	samples := <-memory
	s, _ := d.summaries(ctx)
	r.add(8, fmt.Sprintf("calm repos deployed at their push (of %d)", len(calm)), value(float64(deployedCount(s, calm)), "repos"), fmt.Sprint(len(calm)), deployedCount(s, calm) == len(calm))
	if calmErr == nil {
		r.add(8, "calm pushes → every calm repo deployed", single(calmAt.Sub(calmStart)), "", nil)
	}
	errs := phases(s, bad, "error")
	r.add(8, fmt.Sprintf("hostile repos with an error record (of %d)", len(bad)), value(float64(errs), "repos"), fmt.Sprint(len(bad)), errs == len(bad))
	alive := d.cmd.ProcessState == nil && d.cmd.Process.Pid == pid
	r.add(8, "deployd restarts", value(map[bool]float64{true: 0, false: 1}[alive], "restarts"), "0", alive)
	peak := 0.0
	for _, m := range samples {
		peak = max(peak, m.rss)
	}
	r.add(8, "peak RSS", value(peak, "MB"), "< 512 MB (the pod's limit)", peak > 0 && peak < 512)
	r.add(8, "event streams held", value(float64(streams), "streams"), fmt.Sprint(hostileStreams), streams == hostileStreams)
	for name := range bad {
		if got := s[name]; got.Phase != "error" {
			progress("%s: phase %s, want error", name, got.Phase)
		}
	}
	if calmErr != nil {
		return fmt.Errorf("not every calm repo deployed: %w", calmErr)
	}
	return nil
}

// phases is how many of repos deployd shows in phase.
func phases(s map[string]client.Summary, repos map[string]*gittest.Repo, phase string) int {
	n := 0
	for name := range repos {
		if string(s[name].Phase) == phase {
			n++
		}
	}
	return n
}

// pushHostile commits each hostile input on its repo and delivers the webhook.
func (e *env) pushHostile(ctx context.Context, d *daemon, repos map[string]*gittest.Repo, silent string) error {
	for _, in := range hostileInputs {
		name := "bench/hostile-" + in.name
		files, err := in.files(silent)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		sha := repos[name].Commit("main", "hostile: "+in.name, files)
		if err := e.push(ctx, d, name, sha); err != nil {
			return err
		}
	}
	return nil
}

// holdStreams opens n event streams over repos and reads them until ctx ends; it
// returns how many were served. Each stream comes from a loopback address of its own
// (127.0.1.x), as n clients would: deployd limits the streams of one client.
func holdStreams(ctx context.Context, d *daemon, repos []*hookRepo, n int) int {
	held := 0
	for i := range n {
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%250))}}
		c := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
		events, err := d.followWith(ctx, c, repos[i%len(repos)].name)
		if err != nil {
			continue
		}
		held++
		go func() {
			for range events {
			}
		}()
	}
	return held
}

// silentServer accepts connections and never answers, as a server holding a fetch would.
func silentServer() (addr string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return l.Addr().String(), func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}, nil
}
