#!/usr/bin/env bash
# Installs the Debian packages `make test` needs and a fresh machine lacks: git (with
# git-http-backend, for the real git server), gcc (for -race), flock, Chromium (the
# dashboard's browser test), and for the real node runc, the CNI plugins, iptables and
# conntrack. As root with apt-get it installs them; elsewhere it says what is missing and
# the tests that need a package say so themselves.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have git && [ -x "$(git --exec-path)/git-http-backend" ] || need+=(git)
have make || need+=(make)
have gcc || need+=(gcc libc6-dev)
have flock || need+=(util-linux)
have chromium || need+=(chromium)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ "$(uname -s)" = Linux ]; then
	have runc || need+=(runc)
	[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
	have iptables || need+=(iptables)
	have conntrack || need+=(conntrack)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && have apt-get; then
	echo "deps: installing ${need[*]} (Debian packages, once)" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
	echo "deps: missing ${need[*]}: install them (on Debian: sudo apt-get install ${need[*]});" \
		"the tests that need them fail saying so, and the real node falls back to the simulated cluster" >&2
fi
