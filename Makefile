# arena-pipeline: set-up, build, run, test, bench.
#
#   make run    set everything up, then run the pipeline (stdout sink)
#   make test   set everything up, then run every check and test
#   make bench  set everything up, then run the side-by-side benchmark
#   make install  the systemd unit and /etc/arena-pipeline/config.toml (starts nothing)
#   make vm     QEMU and Debian's 6.12 and 6.18 kernels for the VM tests (make test runs it)
#   make mutants       mutation testing: every mutant of tests/mutants.toml
#   make mutants-fast  the three marked fast (also run by the test suite)
#
# Set-up installs only what is missing, so a second run is quick.

SHELL := /bin/bash
ROOT := $(abspath .)
BUILD := $(ROOT)/build
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
CLANG ?= clang-19
BPFTOOL ?= bpftool
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

# BPF: warnings on and clean; CPU v3 for 32-bit atomics (docs/platform.md).
BPF_CFLAGS := -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) \
	-Wall -Wextra -Werror -Wno-unused-parameter \
	-I$(BUILD) -I$(ROOT)/include -I$(ROOT)/bpf
BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(patsubst bpf/%.bpf.c,$(BUILD)/%.bpf.o,$(BPF_SRCS))
SKELS := $(patsubst bpf/%.bpf.c,$(BUILD)/%.skel.h,$(BPF_SRCS))
HEADERS := $(shell find include bpf -name '*.h')

# pip trusts the system's CA bundle (as Debian's own pip does), so a site
# proxy's CA installed there is honoured.
PIP := $(PY) -m pip -q --disable-pip-version-check \
	$(if $(wildcard /etc/ssl/certs/ca-certificates.crt),--cert /etc/ssl/certs/ca-certificates.crt)
STAMP_SYS := $(BUILD)/.system-ready
STAMP_VENV := $(VENV)/.ready
# the extension modules (setup.py) and the sources they share
EXT_SRCS := $(wildcard pipeline/_core/*.[ch] pipeline/_ds/*.[ch] pipeline/bench/_native/*.[ch] \
	pipeline/_cshared/*.[ch] src/*.c \
	pipeline/_lin/*.[ch])

.PHONY: all setup system venv console bpf ext race run test bench lint clean install mutants mutants-fast vm
# keep the .bpf.o files between the skeleton and the next build
.SECONDARY:
all: setup

setup: system venv console bpf ext race

system: $(STAMP_SYS)
$(STAMP_SYS): scripts/setup-system.sh
	@mkdir -p $(BUILD)
	sudo -n true 2>/dev/null || [ "$$(id -u)" = 0 ] || { echo "set-up needs root: run 'sudo make ...'" >&2; exit 2; }
	bash scripts/setup-system.sh
	@touch $@

# the venv's packages, one a line (pyproject.toml lists the same as dependencies)
VENV_PKGS := \
	uvloop \
	aiofiles \
	orjson \
	prometheus_client \
	rich \
	pytest \
	hypothesis \
	ruff \
	mypy \
	types-aiofiles \
	nats-py \
	nkeys \
	matplotlib \
	tqdm \
	types-tqdm \
	jsonschema

venv: $(STAMP_VENV)
$(STAMP_VENV): pyproject.toml Makefile $(STAMP_SYS)
	[ -x $(PY) ] || /usr/bin/python3 -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install $(VENV_PKGS)
	@touch $@

# The console script in the venv, linked from /usr/local/bin (on sudo's secure_path) so
# that `sudo arena-pipeline` works; idempotent and quick, so it runs every time.
console: $(STAMP_VENV)
	bash scripts/install-console.sh $(ROOT) $(VENV)
	$(PY) scripts/install-metadata.py $(ROOT)

$(BUILD)/vmlinux.h: | $(STAMP_SYS)
	@mkdir -p $(BUILD)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/%.bpf.o: bpf/%.bpf.c $(HEADERS) $(BUILD)/vmlinux.h
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/%.skel.h: $(BUILD)/%.bpf.o
	$(BPFTOOL) gen skeleton $< name $(subst .skel.h,,$(notdir $@))_bpf > $@.tmp && mv $@.tmp $@

bpf: $(SKELS)

# The benchmark's load programs: getppid in a tight loop, and file creations on tmpfs
# (the bench builds them itself too when they are missing).
$(BUILD)/loadgen: pipeline/bench/loadgen.c pipeline/bench/loadcommon.h | $(STAMP_SYS)
	gcc -O2 -Wall -Wextra -Werror -o $@ $<
$(BUILD)/createload: pipeline/bench/createload.c pipeline/bench/loadcommon.h | $(STAMP_SYS)
	gcc -O2 -Wall -Wextra -Werror -o $@ $<
$(BUILD)/forkload: pipeline/bench/forkload.c | $(STAMP_SYS)
	gcc -O2 -Wall -Wextra -Werror -o $@ $<

# The race against Concurrency Kit and liburcu (bench/race/race.c; python -m pipeline.bench.race).
RACE_LIBS := -lck -lurcu -lurcu-cds -lurcu-common -lbpf -lpthread
race: $(BUILD)/race
$(BUILD)/race: bench/race/race.c bench/race/contenders.h $(HEADERS) $(wildcard src/*.c) | $(STAMP_SYS)
	gcc -O2 -g -Wall -Wextra -Werror -I$(ROOT)/include -I$(ROOT)/bench/race -o $@ bench/race/race.c \
		$(wildcard src/*.c) $(RACE_LIBS)

# embed the skeletons; built in place so `python -m pipeline` runs from the checkout.
ext: $(BUILD)/.ext-ready
$(BUILD)/.ext-ready: $(SKELS) $(EXT_SRCS) $(HEADERS) setup.py $(STAMP_VENV)
	set -o pipefail; cd $(ROOT) && $(PY) setup.py -q build_ext --inplace --force 2>&1 | { grep -v '^$$' || true; }
	@touch $@

run: setup
	$(PY) -m pipeline $(ARGS)

lint: setup
	$(VENV)/bin/ruff check pipeline tests scripts bench
	$(VENV)/bin/mypy pipeline scripts bench/race/opcount.py

test: setup lint vm
	$(PY) -m pytest -q --durations=15 tests $(PYTEST_ARGS)

# MUTANTS=fast runs the CI subset; MUTANTS_ARGS passes flags (--only NAME,...,
# --every-test, --json FILE; scripts/mutants.py --help).
mutants: setup
	$(PY) scripts/mutants.py $(if $(filter fast,$(MUTANTS)),--fast) $(MUTANTS_ARGS)

mutants-fast: setup
	$(PY) scripts/mutants.py --fast $(MUTANTS_ARGS)

bench: setup $(BUILD)/loadgen $(BUILD)/createload $(BUILD)/forkload
	bash scripts/setup-bcc.sh >/dev/null
	$(PY) -m pipeline bench $(ARGS)

install: setup
	DESTDIR=$(DESTDIR) bash scripts/install-service.sh $(ROOT)

clean:
	rm -rf $(BUILD) pipeline/*.so pipeline/bench/*.so *.egg-info

# The test VMs (tests/test_vm_kernels.py): Debian's own 6.12 and 6.18 kernels under QEMU
# with this root shared read-only (scripts/setup-vm.py), and the loader run in them.
vm: setup
	$(PY) scripts/setup-vm.py
	[ $(BUILD)/vm/loadall -nt tests/vm/loadall.c ] || \
		gcc -O2 -g -Wall -Wextra -Werror -o $(BUILD)/vm/loadall tests/vm/loadall.c -lbpf
