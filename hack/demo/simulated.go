package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/simcluster"
)

// runSimulated runs bin/deployd on the host against a simulated cluster, whose Pods run no
// container: for machines where the real node cannot run, or DEMO=simulated.
func runSimulated(ctx context.Context, work string) error {
	listen := envOr("DEMO_LISTEN", "127.0.0.1:8080")
	tb := &gittest.Standalone{Dir: work}
	defer tb.Close()

	say("starting the simulated cluster (the first run builds it from Go modules: several minutes, progress below)")
	opts := simcluster.DefaultOptions()
	opts.Progress = os.Stdout
	cluster, err := simcluster.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { say("stopping the cluster"); _ = cluster.Stop() }()

	say("creating the sample app repos and serving them over smart HTTP")
	git := gittest.NewServer(tb)
	st := state{URL: "http://" + listen, Secret: random(), Token: random(), Bare: map[string]string{}, Kubeconfig: cluster.Kubeconfig}
	for _, app := range apps {
		repo := git.NewRepo(tb, "demo/"+app)
		repo.Commit("main", "first release of "+app, sampleApp(app, "Hello from "+app+"!"))
		st.Bare[app] = repo.Bare
	}
	repos := reposYAML(func(app string) string { return git.RepoURL("demo/" + app) })
	files := map[string]string{"repos.yaml": repos, "webhook-secret": st.Secret, "api-token": st.Token}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(work, name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	if err := writeState(st); err != nil {
		return err
	}

	say("starting deployd on http://%s (its log: bin/demo/deployd.log)", listen)
	logFile, err := os.Create(filepath.Join(work, "deployd.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	deployd := exec.Command("bin/deployd", "--config", filepath.Join(work, "repos.yaml"), "--kubeconfig", cluster.Kubeconfig,
		"--listen", listen, "--cache-dir", filepath.Join(work, "cache"), "--namespace", "deployd",
		"--webhook-secret-file", filepath.Join(work, "webhook-secret"), "--api-token-file", filepath.Join(work, "api-token"),
		"--public-url", "http://"+listen)
	deployd.Stdout, deployd.Stderr = logFile, logFile
	deployd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := deployd.Start(); err != nil {
		return fmt.Errorf("starting bin/deployd (make build): %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- deployd.Wait() }()
	defer func() {
		_ = deployd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = deployd.Process.Kill()
		}
	}()

	if err := waitDeployed(ctx, st.URL, exited, "bin/demo/deployd.log"); err != nil {
		return err
	}
	fmt.Printf(`
Both sample apps are deployed and rolled out (simulated: their Pods run no container). Try:

  curl %[1]s/deployments
  curl %[1]s/deployment/demo/an-application
  curl %[1]s/deployment/demo/an-application/history
  curl -N %[1]s/deployment/demo/an-application/events     # live; then, in another terminal:
  make demo-push                                                  # commits a change and sends a signed push webhook
  curl -X POST -H "Authorization: Bearer %[2]s" "%[1]s/deployment/demo/an-application/sync?force=true"
  KUBECONFIG=%[3]s kubectl get deploy,svc -n an-application    # kubectl: see make cluster

API docs: %[1]s/docs    Ctrl-C stops everything.
`, st.URL, st.Token, cluster.Kubeconfig)
	select {
	case <-ctx.Done():
		say("stopping")
	case err := <-exited:
		return fmt.Errorf("deployd exited: %v (see bin/demo/deployd.log)", err)
	}
	return nil
}
