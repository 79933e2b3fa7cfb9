# The README's contract: `make run` sets everything up and starts Cove; `make test` sets up and tests.
SHELL := /bin/bash
VENV := .venv
COVE := $(VENV)/bin/cove
PYTHON ?= python3
APT_PACKAGES := runc mmdebstrap busybox-static gcc libc6-dev iproute2 ca-certificates postgresql git
# mkfs.xfs for the reflink disk pool that snapshots and forks copy by reference (docs/snapshots.md).
APT_PACKAGES += xfsprogs
# noVNC's files for the live view page (docs/dependencies.md).
APT_PACKAGES += novnc
export COVE_DATA_DIR ?= /var/lib/cove

.PHONY: setup image run test fuzz bench bench-docker lint clean-venv

setup: $(VENV)/.synced
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	uv sync --frozen --inexact --python $(PYTHON)
	@touch $@

# Ray for the sandbox fleet (docs/fleet.md): the tests start a local cluster; `make run` needs none of it.
$(VENV)/.synced-fleet: $(VENV)/.synced
	uv sync --frozen --inexact --extra fleet --python $(PYTHON)
	@touch $@

# The desktop image (computer use) builds on the default one: ~25 s the first time, a no-op after.
image: setup
	$(COVE) image build default
	$(COVE) image build desktop

run: setup image
	$(COVE) serve --host 127.0.0.1 --port 8080

# The whole suite on SQLite, then the store-facing suites again on a real PostgreSQL server. The tests
# also open Cove's pages in a real headless browser (tests/browser.py); `setup` inherits this.
test: APT_PACKAGES += chromium
test: setup $(VENV)/.synced-fleet image
	$(VENV)/bin/pytest
	COVE_TEST_DB=postgres $(VENV)/bin/pytest tests/responses tests/store tests/api/test_containers.py tests/api/test_quotas.py tests/service/test_admission.py tests/api/test_openai_files.py tests/fuzz/test_findings.py tests/fleet/test_registry.py tests/fleet/test_fleet.py

# The long fuzz run (a few examples per operation already run in `make test`): FUZZ_EXAMPLES per
# operation and mode; prints cases, statuses and the server's memory (bench/README.md, "Fuzzing").
FUZZ_EXAMPLES ?= 500
fuzz: setup image
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest tests/fuzz -s --timeout=7200

# bench/containers.py also times bwrap directly beside runc (the machine's floor).
bench: APT_PACKAGES += bubblewrap
bench: setup image bench-docker
	$(VENV)/bin/python bench/containers.py
	$(VENV)/bin/python bench/launcher.py
	$(VENV)/bin/python bench/branches.py
	$(VENV)/bin/python bench/tool_turns.py
	$(VENV)/bin/python bench/search_turns.py
	$(VENV)/bin/python bench/neighbours.py
	$(VENV)/bin/python bench/console.py
	$(VENV)/bin/python bench/terminal.py
	$(VENV)/bin/python bench/mcp_calls.py
	$(VENV)/bin/python bench/web_search.py
	$(VENV)/bin/python bench/egress.py
	$(VENV)/bin/python bench/responses.py
	$(VENV)/bin/python bench/replicas.py
	$(VENV)/bin/python bench/replicas.py --replica-cpus 0.4
	$(VENV)/bin/python bench/computer.py
	$(VENV)/bin/python bench/fleet.py

# Docker for the bench's comparison rows: Debian's docker.io. The bench runs a private dockerd of its
# own (bench/docker_baseline.py), so the package's service must not start on install (it would bring
# up a bridge and iptables rules): the install runs under a policy-rc.d that refuses service starts,
# unless the machine already has one.
bench-docker:
	@command -v dockerd >/dev/null 2>&1 || { \
	  guard=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
	    chmod +x /usr/sbin/policy-rc.d; guard=1; }; \
	  echo "installing apt packages: docker.io"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null; rc=$$?; \
	  [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; }

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
