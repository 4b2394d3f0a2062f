# jobrunner — build, run and test. Every target installs what it needs first.
#
#   make run     build and start jobrunnerd on config/jobrunner.yaml (state + socket in ./.state)
#   make test    build and run every test
#   make build   debug build only
#   make release optimized build

SHELL := /bin/bash
SWIFT ?= swift
CONFIG ?= config/jobrunner.yaml
STATE_DIR ?= .state
SOCKET ?= $(STATE_DIR)/jobrunner.sock
PREFIX ?= /usr/local
DESTDIR ?=

# System packages the build links against (Debian names).
APT_PACKAGES := libsystemd-dev libsqlite3-dev pkg-config

PYTHON ?= python3
# Reference implementations the schedule maths is checked against (PyPI).
ORACLE_PACKAGES := cronsim croniter

.PHONY: all deps oracle-deps build release run test test-oracle clean

all: build

# Installs missing Debian packages, via sudo when not root. Quiet when all are present.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi

# Installs the schedule oracles from PyPI if they are missing.
oracle-deps:
	@$(PYTHON) -c "import cronsim, croniter" 2>/dev/null || \
	  $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore $(ORACLE_PACKAGES)

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

run: build
	@mkdir -p $(STATE_DIR)
	$$($(SWIFT) build --show-bin-path)/jobrunnerd --config $(CONFIG) --state-directory $(STATE_DIR) --socket $(SOCKET) --runtime-directory $(STATE_DIR)/run --log-format text

# The engine's reaper waits for every child of its process, so the suites that start the
# built binaries (with Foundation's Process) run in a test process of their own.
test: deps oracle-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip IntegrationTests
	$(SWIFT) test --skip-build --filter IntegrationTests
	$(MAKE) --no-print-directory test-oracle

# Thousands of random schedules compared with cronsim, croniter and systemd-analyze.
test-oracle: oracle-deps
	$(PYTHON) Tests/Oracles/schedule_oracle.py $$($(SWIFT) build --show-bin-path)/jobrunnerctl

clean:
	rm -rf .build $(STATE_DIR)
