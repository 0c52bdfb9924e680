#!/bin/sh
# Runs inside a test VM (tests/helpers/vm.py), from the checkout, in the host's root
# filesystem shared read-only, on the guest's own kernel:
#
#   sh tests/vm/guest.sh [STEP...]      (default: loadall)
#
# Each step is a shell function step_NAME below; its output is bracketed by
#   STEP-BEGIN NAME
#   STEP-END NAME STATUS
# lines on the console, which the host splits per step. A step that fails does not stop
# the ones after it. Exit status: 0 if every step's was 0, else 1.
#
# To add a step, define step_NAME here and ask for NAME in the host's command. Writable
# places in the guest: /tmp, /var/tmp and /run (tmpfs, empty at boot).

set -u
cd "$(dirname "$0")/../.." || exit 127

# every BPF program of every object, loaded alone (tests/vm/loadall.c): the objects the
# host copied at boot (/run/vm/files/*.bpf.o) if it did, else build/*.bpf.o as they are now
step_loadall() {
	if [ ! -x build/vm/loadall ]; then
		echo "build/vm/loadall is missing: run 'make vm' on the host"
		return 127
	fi
	set -- /run/vm/files/*.bpf.o
	[ -e "$1" ] || set -- build/*.bpf.o
	if [ ! -e "$1" ]; then
		echo "no build/*.bpf.o: run 'make bpf' on the host"
		return 127
	fi
	echo "loadall: objects from $(dirname "$1")"
	build/vm/loadall "$@"
}

# one pipeline run on each producer (tests/vm/scenario.py): its creations, its events
# and its statistics as tagged lines; the host judges them
scenario() {
	PYTHONDONTWRITEBYTECODE=1 .venv/bin/python tests/vm/scenario.py "$1" "$PWD"
}
step_scenario_lsm() { scenario lsm; }
step_scenario_tracepoint() { scenario tracepoint; }

echo "GUEST-INFO kernel $(uname -r)"
echo "GUEST-INFO lsm $(cat /sys/kernel/security/lsm 2>/dev/null || echo '?')"
echo "GUEST-INFO cpus $(nproc) memory-kib $(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"

[ $# -gt 0 ] || set -- loadall
failed=0
for step in "$@"; do
	echo "STEP-BEGIN $step"
	case "$step" in
	*[!A-Za-z0-9_]* | '')
		echo "no step named '$step'"
		rc=127
		;;
	*)
		if command -v "step_$step" >/dev/null 2>&1; then
			"step_$step"
			rc=$?
		else
			echo "no step named '$step'"
			rc=127
		fi
		;;
	esac
	echo "STEP-END $step $rc"
	[ "$rc" = 0 ] || failed=1
done
exit "$failed"
