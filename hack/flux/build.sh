#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller from their released Go modules,
# once per version, keeps their CRDs beside the binaries, and prints the directory that holds
# them. A warm machine returns at once. hack/bench runs them as a peer of deployd.
#
# `go install` refuses these modules (they have replace directives), so each is downloaded with
# `go mod download -json`, copied somewhere writable and built inside with `go build .`, its
# replacement of its own api module by ./api (left out of the module zip) dropped for the
# released api module of the same version.
# Newer releases (v1.10.x) need Go 1.27 and dependencies the module proxy does not serve: see
# /work/shared/FLUX.md or the README's Performance section.
#
# Cache: $DEPLOYD_FLUX_BIN if set, else ${XDG_CACHE_HOME:-~/.cache}/deployd/flux/<versions>.
set -euo pipefail

SOURCE_VERSION=v1.9.0
KUSTOMIZE_VERSION=v1.9.6
key="source-${SOURCE_VERSION}_kustomize-${KUSTOMIZE_VERSION}_$(go env GOVERSION)"
bin=${DEPLOYD_FLUX_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/deployd/flux/$key}
mkdir -p "$bin"
# Several benchmark runs may ask at once on a cold machine: build once, the others wait.
exec 9>"$bin/.lock"
flock 9

say() { echo "flux: $*" >&2; }

# build <name> <version>: bin/<name> and bin/crd/<name>/*.yaml from github.com/fluxcd/<name>@<version>.
build() {
	local name=$1 version=$2
	if [ -x "$bin/$name" ] && [ -d "$bin/crd/$name" ]; then return; fi
	say "downloading $name $version..."
	local dir
	dir=$(cd "$bin" && GOFLAGS=-mod=mod go mod download -json "github.com/fluxcd/$name@$version" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$dir" ] && [ -d "$dir" ] || { say "go mod download gave no directory for $name@$version"; exit 1; }
	local src="$bin/src/$name"
	rm -rf "$src" && mkdir -p "$bin/src" && cp -r "$dir" "$src" && chmod -R u+w "$src"
	# The repository replaces its own api module with ./api, which the module zip leaves out
	# (it is a module of its own): use the released api module of the same version instead.
	local mod
	for mod in $(sed -n 's/^replace \([^ ]*\) => \.\/.*/\1/p' "$src/go.mod"); do
		say "$name: using the released $mod instead of its ./ replacement"
		(cd "$src" && go mod edit -dropreplace "$mod")
	done
	say "building $name $version (a few minutes on 2 cores the first time)..."
	local t0=$(date +%s)
	(cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$bin/$name.tmp" .)
	mv "$bin/$name.tmp" "$bin/$name"
	rm -rf "$bin/crd/$name" && mkdir -p "$bin/crd/$name"
	cp "$src"/config/crd/bases/*.yaml "$bin/crd/$name/"
	rm -rf "$src" && rmdir "$bin/src" 2>/dev/null || true
	say "built $name in $(( $(date +%s) - t0 ))s"
}

start=$(date +%s)
build source-controller "$SOURCE_VERSION"
build kustomize-controller "$KUSTOMIZE_VERSION"
took=$(( $(date +%s) - start ))
[ "$took" -gt 2 ] && say "ready in ${took}s in $bin"
echo "$bin"
