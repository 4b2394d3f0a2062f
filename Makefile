# jobrunner — build, run and test. Every target installs what it needs first.
#
#   make run     build and start jobrunnerd on config/jobrunner.yaml (state + socket in ./.state)
#   make test    build and run every test
#   make build   debug build only
#   make release optimized build
#   make install / uninstall   binaries, systemd units, sysusers/tmpfiles, completions, man pages, config
#                (PREFIX=/usr/local, DESTDIR for staging; CONFIGURATION=debug to install a debug build)

SHELL := /bin/bash
SWIFT ?= swift
CONFIG ?= config/jobrunner.yaml
STATE_DIR ?= .state
SOCKET ?= $(STATE_DIR)/jobrunner.sock
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
CONFIGURATION ?= release
BINDIR := $(PREFIX)/bin
# systemd looks for administrator-installed units, sysusers and tmpfiles under /usr/local/lib
# as well as /usr/lib (systemd.unit(5)).
LIBDIR_SYSTEMD := $(if $(filter /usr,$(PREFIX)),/usr/lib,$(PREFIX)/lib)
UNITDIR ?= $(LIBDIR_SYSTEMD)/systemd/system
SYSUSERSDIR ?= $(LIBDIR_SYSTEMD)/sysusers.d
TMPFILESDIR ?= $(LIBDIR_SYSTEMD)/tmpfiles.d
DOCDIR ?= $(PREFIX)/share/doc/jobrunner
MANDIR ?= $(PREFIX)/share/man

# System packages the build links against (Debian names).
APT_PACKAGES := libsystemd-dev libsqlite3-dev pkg-config
# Only the tests need these: a private PostgreSQL server for the cluster suite, strace (a fire is
# fsynced before its process starts, seen in the system calls), and qemu for the
# clock-step test's virtual machine (its kernel and busybox are unpacked from Debian's archive by
# the test itself, not installed); openssl makes the HTTP tests' CA and certificate, and curl is
# what the HTTP benchmark compares a call with.
TEST_APT_PACKAGES := postgresql qemu-system-x86 strace openssl curl

PYTHON ?= python3
# Reference implementations the schedule maths is checked against (PyPI).
ORACLE_PACKAGES := cronsim croniter

.PHONY: all deps test-deps apt-install oracle-deps build release run test test-oracle test-systemd test-clock bench bench-smoke torture torture-smoke fuzz fuzz-build fuzz-smoke install uninstall clean

all: build

# Installs missing Debian packages, via sudo when not root. Quiet when all are present.
deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(APT_PACKAGES)"

test-deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(APT_PACKAGES) $(TEST_APT_PACKAGES)"

apt-install:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Installs the schedule oracles from PyPI if they are missing.
oracle-deps:
	@$(PYTHON) -c "import cronsim, croniter" 2>/dev/null || \
	  $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore $(ORACLE_PACKAGES)

build: deps
	$(SWIFT) build

# Installed binaries carry the Swift runtime inside (no dependency on the toolchain's path).
release: deps
	$(SWIFT) build -c release --static-swift-stdlib

run: build
	@mkdir -p $(STATE_DIR)
	$$($(SWIFT) build --show-bin-path)/jobrunnerd --config $(CONFIG) --state-directory $(STATE_DIR) --socket $(SOCKET) --runtime-directory $(STATE_DIR)/run --log-format text

# The engine's reaper waits for every child of its process, so the suites that start the
# built binaries run in a test process of their own.
test: test-deps oracle-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip IntegrationTests
	$(SWIFT) test --skip-build --filter IntegrationTests
	$(MAKE) --no-print-directory test-oracle
	$(MAKE) --no-print-directory test-systemd
	$(MAKE) --no-print-directory test-clock
	$(MAKE) --no-print-directory bench-smoke
	$(MAKE) --no-print-directory torture-smoke
	$(MAKE) --no-print-directory fuzz-smoke

# Thousands of random schedules compared with cronsim, croniter and systemd-analyze.
test-oracle: oracle-deps
	$(PYTHON) Tests/Oracles/schedule_oracle.py $$($(SWIFT) build --show-bin-path)/jobrunnerctl

# The units, installed into a private root, under a real systemd booted in namespaces of its own.
test-systemd: build
	Tests/EndToEnd/systemd-e2e.sh

# A real wall-clock step, forward and back, under the daemon in a virtual machine of its own.
test-clock: build test-deps
	Tests/EndToEnd/clock-step.sh

# The C baselines the benchmarks compare against, built with the system's C compiler.
BASELINE := .build/bench/baseline
$(BASELINE): Benchmarks/baseline.c
	@mkdir -p $(dir $@)
	$$(command -v cc || command -v clang) -O2 -Wall -o $@ $< -lsqlite3

# Every figure against its baseline, measured in the same run (release build). BENCH_ARGS=--json
# for JSON, BENCH_ARGS="--only dispatch,reload" for some figures.
bench: release test-deps $(BASELINE)
	$(PYTHON) Benchmarks/bench.py --bin $$($(SWIFT) build -c release --static-swift-stdlib --show-bin-path) --baseline $(BASELINE) $(BENCH_ARGS)

# The same with tiny sizes on the debug build: proves the benchmark still runs (part of make test).
bench-smoke: build $(BASELINE)
	$(PYTHON) Benchmarks/bench.py --bin $$($(SWIFT) build --show-bin-path) --baseline $(BASELINE) --smoke

# The daemon broken on purpose: crashes, bad configs, socket abuse, misbehaving jobs, a failing
# disk, leaks, hooks, followers, reloads — against the release build operators run.
torture: release
	$(PYTHON) Benchmarks/torture.py --bin $$($(SWIFT) build -c release --static-swift-stdlib --show-bin-path) $(TORTURE_ARGS)

# The same, reduced (part of make test).
torture-smoke: build
	$(PYTHON) Benchmarks/torture.py --bin $$($(SWIFT) build --show-bin-path) --smoke

# libFuzzer targets for every parser of outside input (Tests/Fuzz/fuzz.py), built with the
# address sanitizer and coverage into a build directory of their own. FUZZ_SECONDS per target;
# FUZZ_ARGS="--only config,cron" picks targets. Fails on any crash, leak report or timeout.
# Then the control API of a running daemon, over its socket (Tests/Fuzz/control_fuzz.py).
FUZZ_SECONDS ?= 60
FUZZ_SCRATCH := .build-fuzz
FUZZ_RUNTIME = $$(ls $$(dirname $$(realpath $$(command -v swiftc)))/../lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a | head -1)
fuzz-build: deps
	$(SWIFT) build --product jobrunner-fuzz --scratch-path $(FUZZ_SCRATCH) \
		-Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table \
		-Xlinker $(FUZZ_RUNTIME) -Xlinker --undefined=LLVMFuzzerRunDriver -Xlinker -lstdc++ 2>&1 | grep -v "Cannot export local symbol"; exit $${PIPESTATUS[0]}

fuzz: fuzz-build build
	$(PYTHON) Tests/Fuzz/fuzz.py --bin $$($(SWIFT) build --scratch-path $(FUZZ_SCRATCH) --show-bin-path)/jobrunner-fuzz --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)
	$(PYTHON) Tests/Fuzz/control_fuzz.py --daemon $$($(SWIFT) build --show-bin-path)/jobrunnerd --seconds $(FUZZ_SECONDS)

# Every target for a few seconds (part of make test).
fuzz-smoke: fuzz-build build
	$(PYTHON) Tests/Fuzz/fuzz.py --bin $$($(SWIFT) build --scratch-path $(FUZZ_SCRATCH) --show-bin-path)/jobrunner-fuzz --seconds 5 --work $(FUZZ_SCRATCH)/smoke
	$(PYTHON) Tests/Fuzz/control_fuzz.py --daemon $$($(SWIFT) build --show-bin-path)/jobrunnerd --seconds 10

# The man pages are written by swift-argument-parser's generate-manual from the binaries' own
# argument parsers (--experimental-dump-help), so they say what --help says.
install: $(if $(filter debug,$(CONFIGURATION)),build,release)
	@$(SWIFT) build --product generate-manual >/dev/null
	@bin=$$($(SWIFT) build -c $(CONFIGURATION) $(if $(filter release,$(CONFIGURATION)),--static-swift-stdlib) --show-bin-path); set -e; \
	manual=$$($(SWIFT) build --show-bin-path)/generate-manual; \
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
	  $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/jobrunner/jobs.d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d; \
	install -m 0755 $(if $(filter release,$(CONFIGURATION)),-s) $$bin/jobrunnerd $$bin/jobrunnerctl $(DESTDIR)$(BINDIR)/; \
	for unit in jobrunnerd.service jobrunnerd.socket; do \
	  sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/share/doc/jobrunner|$(DOCDIR)|g' \
	      -e 's|/etc/jobrunner/|$(SYSCONFDIR)/jobrunner/|g' deploy/$$unit > $(DESTDIR)$(UNITDIR)/$$unit; \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$unit; \
	done; \
	install -m 0644 deploy/sysusers.d/jobrunner.conf $(DESTDIR)$(SYSUSERSDIR)/jobrunner.conf; \
	install -m 0644 deploy/tmpfiles.d/jobrunner.conf $(DESTDIR)$(TMPFILESDIR)/jobrunner.conf; \
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md; \
	$$manual $$bin/jobrunnerctl --section 1 --output-directory $(DESTDIR)$(MANDIR)/man1; \
	$$manual $$bin/jobrunnerd --section 8 --output-directory $(DESTDIR)$(MANDIR)/man8; \
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/jobrunnerctl.1 $(DESTDIR)$(MANDIR)/man8/jobrunnerd.8; \
	$$bin/jobrunnerctl --generate-completion-script bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/jobrunnerctl; \
	$$bin/jobrunnerctl --generate-completion-script zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_jobrunnerctl; \
	$$bin/jobrunnerctl --generate-completion-script fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/jobrunnerctl.fish; \
	if [ -e $(DESTDIR)$(SYSCONFDIR)/jobrunner/jobrunner.yaml ]; then \
	  echo "kept the existing $(DESTDIR)$(SYSCONFDIR)/jobrunner/jobrunner.yaml"; \
	else \
	  install -m 0644 config/jobrunner.yaml $(DESTDIR)$(SYSCONFDIR)/jobrunner/jobrunner.yaml; \
	fi; \
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
	  systemd-sysusers $(SYSUSERSDIR)/jobrunner.conf; \
	  systemd-tmpfiles --create $(TMPFILESDIR)/jobrunner.conf; \
	  systemctl daemon-reload; \
	fi; \
	echo "installed; start with: systemctl enable --now jobrunnerd.socket jobrunnerd.service"

# Removes what install put there, except the configuration and the history.
uninstall:
	@set -e; \
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
	  systemctl disable --now jobrunnerd.service jobrunnerd.socket 2>/dev/null || true; \
	fi; \
	rm -f $(DESTDIR)$(BINDIR)/jobrunnerd $(DESTDIR)$(BINDIR)/jobrunnerctl \
	  $(DESTDIR)$(UNITDIR)/jobrunnerd.service $(DESTDIR)$(UNITDIR)/jobrunnerd.socket \
	  $(DESTDIR)$(SYSUSERSDIR)/jobrunner.conf $(DESTDIR)$(TMPFILESDIR)/jobrunner.conf \
	  $(DESTDIR)$(DOCDIR)/README.md $(DESTDIR)$(MANDIR)/man1/jobrunnerctl.1 $(DESTDIR)$(MANDIR)/man8/jobrunnerd.8 \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions/jobrunnerctl \
	  $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_jobrunnerctl \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/jobrunnerctl.fish; \
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true; \
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	echo "uninstalled; $(SYSCONFDIR)/jobrunner and /var/lib/jobrunner are kept"

clean:
	rm -rf .build $(FUZZ_SCRATCH) $(STATE_DIR)
