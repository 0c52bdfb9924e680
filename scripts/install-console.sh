#!/usr/bin/env bash
# Puts the console script `arena-pipeline` in the virtualenv and, run as root, links it
# from /usr/local/bin, which is on sudo's secure_path: `sudo arena-pipeline` then runs the
# checkout with the virtualenv's interpreter.
#   scripts/install-console.sh ROOT VENV
# BINDIR replaces /usr/local/bin (the tests use a directory of their own).
# The package itself is not copied anywhere: a .pth file puts the checkout on the
# virtualenv's path, as an editable install would, without compiling the extension twice.
# The link is made only where nothing else is: an existing /usr/local/bin/arena-pipeline
# is replaced only when it is a symbolic link into some checkout's .venv (one this script
# made); anything else is left alone and named.
set -euo pipefail

root=$1
venv=$2
py="$venv/bin/python"
site=$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
printf '%s\n' "$root" > "$site/arena_pipeline.pth"

script="$venv/bin/arena-pipeline"
tmp=$(mktemp "$venv/bin/.arena-pipeline.XXXXXX")
cat > "$tmp" <<PY
#!$py
# arena-pipeline's console script (scripts/install-console.sh); same as python -m pipeline.
import sys

from pipeline.__main__ import _check

_check()
from pipeline.cli import main

sys.exit(main())
PY
chmod 0755 "$tmp"
mv -f "$tmp" "$script"

[ "$(id -u)" = 0 ] || { echo "install-console: not root: $script made, /usr/local/bin left alone" >&2; exit 0; }

bindir=${BINDIR:-/usr/local/bin}
link="$bindir/arena-pipeline"
if [ -L "$bindir" ] || [ ! -d "$bindir" ]; then
	echo "install-console: $bindir is not a directory; link $script there by hand" >&2
	exit 0
fi
# only root may be able to change what the link is, or where it leads
read -r uid perm < <(stat -c '%u %a' "$bindir")
if [ "$uid" != 0 ] || (( (8#$perm & 8#022) != 0 )); then
	echo "install-console: $bindir is not root's alone (uid $uid, mode $perm); left alone" >&2
	exit 0
fi
if [ -e "$link" ] || [ -L "$link" ]; then
	target=""
	[ -L "$link" ] && target=$(readlink "$link")
	case "$target" in
	"$script") exit 0 ;;
	/*/.venv/bin/arena-pipeline) ;;  # another checkout's link: this set-up's to replace
	*)
		echo "install-console: $link exists and is not a link this set-up made; left alone" \
			"(remove it and run make setup again for sudo arena-pipeline)" >&2
		exit 0 ;;
	esac
fi
new="$bindir/.arena-pipeline.$$"
ln -s "$script" "$new"
# rename(2) replaces the name itself, never what a link at it points to
mv -Tf "$new" "$link"
echo "install-console: $link -> $script" >&2
