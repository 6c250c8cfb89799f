#!/usr/bin/env bash
# Builds the simulated cluster's binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok) from Go modules, once per version, and prints
# the directory that holds them. A warm machine returns at once.
#
# Cache: $DEPLOYD_SIMCLUSTER_BIN if set, else ${XDG_CACHE_HOME:-~/.cache}/deployd/simcluster/<versions>.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_$(go env GOVERSION)"
bin=${DEPLOYD_SIMCLUSTER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/deployd/simcluster/$key}
mkdir -p "$bin"
# Several test binaries may ask at once on a cold machine: build once, the others wait.
exec 9>"$bin/.lock"
flock 9

say() { echo "simcluster: $*" >&2; }
have() { [ -x "$bin/$1" ]; }

build_k8s() {
	local missing=()
	for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
		have "$b" || missing+=("./$b")
	done
	[ ${#missing[@]} -eq 0 ] && return
	say "building ${missing[*]} (Kubernetes $K8S_VERSION; about 6 minutes on 2 cores the first time)..."
	(cd "$here/k8s" && CGO_ENABLED=0 go build -trimpath -o "$bin/" "${missing[@]}")
}

build_etcd() {
	have etcd && return
	say "building etcd $ETCD_VERSION (under a minute)..."
	(cd "$here/etcd" && CGO_ENABLED=0 go build -trimpath -o "$bin/etcd" .)
}

build_kwok() {
	have kwok && return
	say "building kwok $KWOK_VERSION (about a minute)..."
	(cd "$bin" && CGO_ENABLED=0 GOBIN="$bin" GOFLAGS=-mod=mod go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
	# kwok needs stage files: they ship inside its module, copy them beside the binary.
	local src
	src=$(cd "$bin" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' "sigs.k8s.io/kwok@$KWOK_VERSION" 2>/dev/null || true)
	[ -n "$src" ] || src=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION
	rm -rf "$bin/kwok-stages" && mkdir -p "$bin/kwok-stages"
	cp -r "$src/kustomize/stage/." "$bin/kwok-stages/"
	chmod -R u+w "$bin/kwok-stages"
}

start=$(date +%s)
build_etcd
build_kwok
build_k8s
took=$(( $(date +%s) - start ))
[ "$took" -gt 2 ] && say "built in ${took}s into $bin"
echo "$bin"
