#!/bin/sh
# The entry point on a fresh machine: installs make if it is missing (a new
# Debian 12 has none), then runs `make TARGET...` with everything else
# installed by the Makefile's set-up.
#   sudo ./make.sh run     set up and run the pipeline
#   sudo ./make.sh test    set up and pass the tests
set -e
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then
	echo "make.sh: set-up installs system packages and loads BPF programs: run it as root (sudo ./make.sh $*)" >&2
	exit 2
fi
if ! command -v make >/dev/null 2>&1; then
	echo "make.sh: installing make" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make >/dev/null
fi
exec make "$@"
