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
)
BACKPORT_PKGS=(libbpf-dev bpftool)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
version_of() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

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
