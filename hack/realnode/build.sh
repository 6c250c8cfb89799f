#!/usr/bin/env bash
# Builds the real node's binaries (kubelet, kube-proxy, containerd, containerd-shim-runc-v2,
# ctr, and the Pod sandbox program) from Go modules, once per version, checks the Debian packages the node needs
# (runc, containernetworking-plugins, iptables, conntrack; installed with apt-get when
# missing and run as root), and prints the directory that holds the binaries.
# A warm machine returns at once.
#
# Cache: $DEPLOYD_REALNODE_BIN if set, else ${XDG_CACHE_HOME:-~/.cache}/deployd/realnode/<versions>.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=v1.37.2 # the same Kubernetes module as hack/simcluster/k8s
CONTAINERD_VERSION=v2.4.2
key="k8s-${K8S_VERSION}_containerd-${CONTAINERD_VERSION}_$(go env GOVERSION)"
bin=${DEPLOYD_REALNODE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/deployd/realnode/$key}
mkdir -p "$bin"
# Several test binaries may ask at once on a cold machine: build once, the others wait.
exec 9>"$bin/.lock"
flock 9

say() { echo "realnode: $*" >&2; }
have() { [ -x "$bin/$1" ]; }

# Debian packages: the command each provides, and the package.
check_packages() {
	local missing=()
	[ -x /usr/sbin/runc ] || missing+=(runc)
	[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] && [ -x /usr/lib/cni/portmap ] ||
		missing+=(containernetworking-plugins)
	command -v iptables-save >/dev/null || missing+=(iptables)
	command -v conntrack >/dev/null || missing+=(conntrack)
	[ ${#missing[@]} -eq 0 ] && return
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		say "missing packages ${missing[*]}: install them (Debian/Ubuntu: apt-get install ${missing[*]})"
		exit 1
	fi
	say "installing ${missing[*]} with apt-get..."
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
		{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; }
}

build_containerd() {
	local missing=()
	for b in containerd containerd-shim-runc-v2 ctr; do
		have "$b" || missing+=("github.com/containerd/containerd/v2/cmd/$b@$CONTAINERD_VERSION")
	done
	[ ${#missing[@]} -eq 0 ] && return
	say "building containerd $CONTAINERD_VERSION, its runc shim and ctr (about 2 minutes on 2 cores the first time)..."
	for m in "${missing[@]}"; do
		(cd "$bin" && CGO_ENABLED=0 GOBIN="$bin" GOFLAGS=-mod=mod go install -trimpath "$m")
	done
}

build_k8s() {
	local missing=()
	for b in kubelet kube-proxy; do
		have "$b" || missing+=("./$b")
	done
	[ ${#missing[@]} -eq 0 ] && return
	say "building ${missing[*]} (Kubernetes $K8S_VERSION; about 2 minutes after the control plane is built, 6 before)..."
	(cd "$here/../simcluster/k8s" && CGO_ENABLED=0 go build -trimpath -o "$bin/" "${missing[@]}")
}

# The Pod sandbox ("pause") program, from this repository.
build_pause() {
	have pause && return
	say "building the Pod sandbox program (hack/realnode/pause)..."
	(cd "$here/../.." && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/pause" ./hack/realnode/pause)
}

start=$(date +%s)
check_packages
build_pause
build_containerd
build_k8s
took=$(( $(date +%s) - start ))
[ "$took" -gt 2 ] && say "built in ${took}s into $bin"
echo "$bin"
