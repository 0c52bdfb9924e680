#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Set up the BCC baseline (pipeline/bench/bcc_baseline.py) on Debian 12:
#
#   1. install python3-bpfcc (Debian's BCC 0.26, for /usr/bin/python3);
#   2. give BCC kernel headers without touching /lib/modules: this kernel ships
#      none, so take Debian's linux-headers-*-amd64 and -common from
#      bookworm-backports, unpack both with dpkg-deb -x and merge them into one
#      tree under /var/cache/arena-pipeline/kheaders.
#
# Progress goes to stderr; the one line on stdout is the directory to export as
# BCC_KERNEL_SOURCE:
#
#   export BCC_KERNEL_SOURCE="$(sudo scripts/setup-bcc.sh)"
#
# Idempotent: a second run finds the package and the finished tree and only
# prints the path. The headers are Debian's 6.12 series, not the running
# kernel's: good for tracepoint arguments and helpers, not for struct layouts.
set -eu

CACHE=/var/cache/arena-pipeline
KROOT=$CACHE/kheaders
CURRENT=$KROOT/current          # symlink to the finished tree
DEBS=$CACHE/debs
BACKPORTS_FILE=/etc/apt/sources.list.d/bookworm-backports.sources

export DEBIAN_FRONTEND=noninteractive

say() { printf 'setup-bcc: %s\n' "$*" >&2; }
die() { printf 'setup-bcc: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and writes $CACHE)"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script is for Debian 12"

installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# A finished tree has the merged kernel config header and the arch headers.
tree_ok() {
	[ -f "$1/include/generated/autoconf.h" ] &&
		[ -f "$1/include/linux/kconfig.h" ] &&
		[ -d "$1/arch/x86/include/asm" ] &&
		[ -d "$1/arch/x86/include/generated" ] &&
		[ -f "$1/.arena-pipeline-complete" ]
}

# Fast path: nothing to do.
if installed python3-bpfcc && [ -L "$CURRENT" ]; then
	dir=$(readlink -f "$CURRENT")
	if tree_ok "$dir"; then
		say "python3-bpfcc installed, headers ready"
		printf '%s\n' "$dir"
		exit 0
	fi
fi

APT_UPDATED=0
apt_update() {
	[ "$APT_UPDATED" -eq 1 ] && return 0
	say "apt-get update"
	apt-get update -qq >&2 || die "apt-get update failed"
	APT_UPDATED=1
}

has_candidate() {
	cand=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
	[ -n "$cand" ] && [ "$cand" != "(none)" ]
}

# ---- 1. python3-bpfcc --------------------------------------------------------
if installed python3-bpfcc; then
	say "python3-bpfcc already installed"
else
	has_candidate python3-bpfcc || apt_update
	say "installing python3-bpfcc"
	apt-get install -y -qq --no-install-recommends python3-bpfcc >&2 ||
		die "apt-get install python3-bpfcc failed"
fi

# ---- 2. bookworm-backports in the apt sources --------------------------------
backports_configured() {
	grep -Eqs '^[^#]*bookworm-backports' /etc/apt/sources.list \
		/etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
}

# The Debian mirror this machine already uses for bookworm (deb822 or one-line
# format); deb.debian.org if none is found.
bookworm_mirror() {
	m=""
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		# Per stanza: remember URIs, print it when Suites lists bookworm.
		m=$(awk '
			/^[[:space:]]*$/ { uris = ""; found = 0; next }
			tolower($1) == "uris:" { uris = $2 }
			tolower($1) == "suites:" {
				for (i = 2; i <= NF; i++) if ($i == "bookworm") found = 1
			}
			found && uris != "" { print uris; exit }
		' "$f")
		[ -n "$m" ] && break
	done
	if [ -z "$m" ]; then
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -f "$f" ] || continue
			# deb [options] URI suite components...
			m=$(sed -e 's/\[[^]]*\]//' "$f" |
				awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }')
			[ -n "$m" ] && break
		done
	fi
	printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

if ! backports_configured; then
	mirror=$(bookworm_mirror)
	say "adding bookworm-backports ($mirror) as $BACKPORTS_FILE"
	cat >"$BACKPORTS_FILE" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	APT_UPDATED=0
	apt_update
fi

# ---- 3. which header packages ------------------------------------------------
# The metapackage linux-headers-amd64 in bookworm-backports depends on exactly
# one ABI package, linux-headers-<abi>-amd64, which depends on
# linux-headers-<abi>-common of the same version.
backports_meta_version() {
	apt-cache madison linux-headers-amd64 2>/dev/null |
		awk -F'|' '$3 ~ /bookworm-backports/ { gsub(/ /, "", $2); print $2; exit }'
}

meta_ver=$(backports_meta_version)
if [ -z "$meta_ver" ]; then
	apt_update
	meta_ver=$(backports_meta_version)
fi
[ -n "$meta_ver" ] || die "linux-headers-amd64 not found in bookworm-backports (check $BACKPORTS_FILE and apt-get update)"

abi_pkg=$(apt-cache show "linux-headers-amd64=$meta_ver" |
	sed -n 's/^Depends:.*\(linux-headers-[^ ,]*-amd64\).*/\1/p' | head -n 1)
[ -n "$abi_pkg" ] || die "cannot read the ABI package from linux-headers-amd64=$meta_ver"
abi=${abi_pkg#linux-headers-}           # 6.12.95+deb12-amd64
common_pkg=linux-headers-${abi%-amd64}-common
say "headers: $abi_pkg and $common_pkg, version $meta_ver"

dest=$KROOT/$abi
mkdir -p "$DEBS" "$KROOT"
# One set-up at a time from here on (two at once would race on the tree).
exec 9>"$KROOT/.lock"
flock 9
if installed python3-bpfcc && tree_ok "$dest"; then
	ln -sfn "$abi" "$CURRENT"
	say "headers already unpacked"
	printf '%s\n' "$dest"
	exit 0
fi

# ---- 4. download -------------------------------------------------------------
# apt-get download drops privileges to _apt: let it write the directory.
if id _apt >/dev/null 2>&1; then
	chown _apt "$DEBS" 2>/dev/null || true
fi

deb_path() {
	# File names carry the version with ':' as %3a; the version has no epoch here.
	ls "$DEBS/$1_$2_"*.deb 2>/dev/null | head -n 1
}

for pkg in "$abi_pkg" "$common_pkg"; do
	if [ -n "$(deb_path "$pkg" "$meta_ver")" ]; then
		say "$pkg: already downloaded"
		continue
	fi
	say "downloading $pkg=$meta_ver"
	(cd "$DEBS" && apt-get download -q "$pkg=$meta_ver" >&2) ||
		die "apt-get download $pkg=$meta_ver failed"
done
abi_deb=$(deb_path "$abi_pkg" "$meta_ver")
common_deb=$(deb_path "$common_pkg" "$meta_ver")
[ -n "$abi_deb" ] && [ -n "$common_deb" ] || die "downloaded .deb files not found in $DEBS"

# ---- 5. unpack and merge -----------------------------------------------------
# The -amd64 package holds the build-specific part (.config,
# include/generated/autoconf.h, arch/x86/include/generated, ...) and a Makefile
# that is only "include /usr/src/linux-headers-<abi>-common/Makefile". The
# -common package holds the rest (include/, arch/*/include, the real
# Makefile). Laying -common's files into the -amd64 tree gives one
# self-contained tree in which the usual -I arch/x86/include, include,
# include/generated, ... all resolve, with the real Makefile in place of the
# absolute include (which would point into /usr/src, where nothing is
# installed). The scripts/ and tools/ symlinks point into linux-kbuild, which
# BCC does not need: they are dropped rather than left dangling.
stage=$KROOT/.stage.$$
trap 'rm -rf "$stage"' EXIT INT TERM
rm -rf "$stage"
mkdir -p "$stage"
say "unpacking into $stage"
for deb in "$abi_deb" "$common_deb"; do
	if ! dpkg-deb -x "$deb" "$stage"; then
		rm -f "$deb"   # most likely a broken download: fetch it again next time
		die "cannot unpack $deb (removed it): run this script again"
	fi
done

src_amd64=$stage/usr/src/linux-headers-$abi
src_common=$stage/usr/src/$common_pkg
[ -d "$src_amd64" ] || die "unexpected layout: $src_amd64 missing in $abi_deb"
[ -d "$src_common" ] || die "unexpected layout: $src_common missing in $common_deb"
grep -q "$common_pkg/Makefile" "$src_amd64/Makefile" ||
	say "note: $abi_pkg's Makefile does not include $common_pkg/Makefile as expected"

say "merging $common_pkg into $abi_pkg"
rm -f "$src_amd64/Makefile" "$src_amd64/scripts" "$src_amd64/tools" \
	"$src_common/scripts" "$src_common/tools"
# -n: never overwrite what -amd64 provides (generated and config files win).
cp -a -n "$src_common/." "$src_amd64/"

tree=$stage/tree
mv "$src_amd64" "$tree"
tree_files_missing=""
for f in include/generated/autoconf.h include/linux/kconfig.h Makefile; do
	[ -e "$tree/$f" ] || tree_files_missing="$tree_files_missing $f"
done
[ -z "$tree_files_missing" ] || die "merged tree lacks:$tree_files_missing"
printf '%s %s %s\n' "$abi_pkg" "$common_pkg" "$meta_ver" >"$tree/.arena-pipeline-complete"

rm -rf "$dest"
mv "$tree" "$dest"
ln -sfn "$abi" "$CURRENT"

# Trees and packages of older header versions are no longer used.
for old in "$KROOT"/*-amd64; do
	[ "$old" = "$dest" ] || [ ! -d "$old" ] || { say "removing old $old"; rm -rf "$old"; }
done
for old in "$DEBS"/*.deb; do
	[ "$old" = "$abi_deb" ] || [ "$old" = "$common_deb" ] || [ ! -f "$old" ] || rm -f "$old"
done
say "headers ready in $dest"
printf '%s\n' "$dest"
