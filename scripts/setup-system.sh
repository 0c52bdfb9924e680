#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing.
# bookworm-backports provides libbpf >= 1.4 and bpftool >= 7.4 (docs/platform.md).
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "setup-system: needs root (run with sudo)" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive

# one package a line
MAIN_PKGS=(
	make
	gcc
	libc6-dev
	pkg-config
	clang-19
	llvm-19
	libelf-dev
	zlib1g-dev
	python3-venv
	python3-dev
	jq
	util-linux
	bpftrace
	libck-dev
	liburcu-dev
)
BACKPORT_PKGS=(libbpf-dev bpftool)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
version_of() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

# nats-server (the nats sink's tests and benchmark; README "The NATS server"): Debian's
# package, whose install would also start and enable its system service. It is installed
# with service starts refused (policy-rc.d) and its unit then disabled and masked; only a
# package this script installs is touched, never one an administrator installed and runs.
install_nats_server() {
	installed nats-server && return 0
	echo "setup-system: installing nats-server (its system service left disabled and masked)" >&2
	local own_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\n# arena-pipeline set-up: no service starts during this install\nexit 101\n' \
			> /usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		own_policy=1
	fi
	local rc=0
	apt-get update -qq && apt-get install -y -qq --no-install-recommends nats-server >/dev/null || rc=$?
	[ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
	[ "$rc" = 0 ] || return "$rc"
	if command -v systemctl >/dev/null; then
		# works without a running systemd too: both only change links under /etc
		systemctl disable nats-server.service >/dev/null 2>&1 || true
		systemctl mask nats-server.service >/dev/null 2>&1 || true
		if [ -d /run/systemd/system ]; then
			systemctl stop nats-server.service >/dev/null 2>&1 || true
		fi
	else
		rm -f /etc/systemd/system/multi-user.target.wants/nats-server.service
		ln -sfn /dev/null /etc/systemd/system/nats-server.service
	fi
}
install_nats_server

missing=()
for p in "${MAIN_PKGS[@]}"; do installed "$p" || missing+=("$p"); done
need_bpo=()
if ! installed libbpf-dev || dpkg --compare-versions "$(version_of libbpf-dev | sed 's/^[0-9]*://')" lt 1.4; then
	need_bpo+=(libbpf-dev)
fi
if ! installed bpftool || dpkg --compare-versions "$(version_of bpftool | sed 's/^[0-9]*://')" lt 7.4; then
	need_bpo+=(bpftool)
fi

if [ ${#missing[@]} -eq 0 ] && [ ${#need_bpo[@]} -eq 0 ]; then
	echo "setup-system: all packages present" >&2
	exit 0
fi

if [ ${#need_bpo[@]} -gt 0 ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
	# the same mirror the machine already uses for bookworm
	mirror=$(sed -n 's#^URIs: *\(http[^ ]*/debian\)/*$#\1#p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
	[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
	[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
	cat > /etc/apt/sources.list.d/bookworm-backports.sources <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	echo "setup-system: added bookworm-backports ($mirror)" >&2
fi

echo "setup-system: installing ${missing[*]} ${need_bpo[*]}" >&2
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#need_bpo[@]} -gt 0 ]; then
	apt-get install -y -qq --no-install-recommends -t bookworm-backports "${need_bpo[@]}" >/dev/null
fi
echo "setup-system: done" >&2
