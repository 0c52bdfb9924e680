#!/usr/bin/env bash
# `make install`: the systemd unit and, when there is none yet, its config file. Starts
# and enables nothing: `systemctl enable --now arena-pipeline` does that.
#   scripts/install-service.sh ROOT
# DESTDIR (as in `make install DESTDIR=/tmp/stage`) puts everything under another root, and
# then systemd is not told.
set -euo pipefail

root=$1
dest=${DESTDIR:-}
[ "$(id -u)" = 0 ] || { echo "install: needs root (sudo make install)" >&2; exit 2; }
unit_dir=$dest/etc/systemd/system
conf_dir=$dest/etc/arena-pipeline
conf="$conf_dir/config.toml"

install -d -m 0755 "$unit_dir"
install -m 0644 "$root/packaging/arena-pipeline.service" "$unit_dir/arena-pipeline.service"
echo "install: $unit_dir/arena-pipeline.service" >&2
install -d -m 0755 "$conf_dir"
if [ -e "$conf" ] || [ -L "$conf" ]; then
	echo "install: $conf exists: kept as it is" >&2
else
	install -m 0644 "$root/packaging/config.toml" "$conf"
	echo "install: $conf (the default: jsonl sink into /var/log/arena-pipeline)" >&2
fi
if [ -z "$dest" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload
fi
echo "install: start it with: systemctl enable --now arena-pipeline" >&2
