package simcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BinEnv names a directory holding prebuilt binaries; build.sh fills it when set.
const BinEnv = "DEPLOYD_SIMCLUSTER_BIN"

var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"}

// Binaries returns the directory holding the cluster's binaries, building any that
// are missing with hack/simcluster/build.sh (minutes on a cold machine; its progress
// goes to progress).
func Binaries(ctx context.Context, progress io.Writer) (string, error) {
	if dir := os.Getenv(BinEnv); dir != "" && complete(dir) {
		return dir, nil
	}
	script, err := findBuildScript()
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stdout, cmd.Stderr = &out, progress
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the simulated cluster with %s: %w", script, err)
	}
	dir := strings.TrimSpace(out.String())
	if !complete(dir) {
		return "", fmt.Errorf("%s ran but %s lacks some of %v", script, dir, binaries)
	}
	return dir, nil
}

func complete(dir string) bool {
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return false
		}
	}
	return true
}

// findBuildScript looks for hack/simcluster/build.sh from the working directory up,
// so it works from any package's tests and from the repo root.
func findBuildScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		script := filepath.Join(dir, "hack", "simcluster", "build.sh")
		if _, err := os.Stat(script); err == nil {
			return script, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("hack/simcluster/build.sh not found above the working directory: run from deployd's checkout, or set " + BinEnv)
		}
		dir = parent
	}
}
