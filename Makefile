# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration bench clean debs dist compiled

# Debian packages the integration tests drive as outside implementations:
# coturn (turnutils_uclient, turnserver) against our relay, Chromium for the
# browser client (Playwright drives /usr/bin/chromium, never a downloaded
# browser), iproute2 and iptables for the NAT lab's namespaces, nginx and caddy
# in front of a node as docs/deploy/ configures them, shellcheck for the shipped
# certbot hook. Installed only when missing; needs root (CI runs as root).
DEBS_CMDS := turnutils_uclient:coturn turnutils_peer:coturn turnserver:coturn \
             chromium:chromium ip:iproute2 iptables:iptables nginx:nginx caddy:caddy \
             shellcheck:shellcheck
debs:
	@missing=""; for pair in $(DEBS_CMDS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else echo "not root: the tests that need$$missing will be skipped"; fi; \
	fi

# axe-core, the accessibility engine tests/web/test_chat_page.py runs in the page (npm,
# beside the venv); without npm that scan is skipped and the test's own checks still run.
AXE := $(VENV)/node/node_modules/axe-core/axe.min.js
$(AXE):
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --silent --no-audit --no-fund --prefix $(VENV)/node axe-core@4.14.1; \
	else echo "npm not found: the axe-core scan of the page will be skipped"; fi

# A venv: .venv (everything the tests need) or .venv-build (`build` alone, for `make dist`).
%/bin/python:
	@$(PYTHON) -m venv $* || { \
	  echo "venv failed; installing Debian's python3-venv"; \
	  apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $*; }

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

# `make demo V=1` logs what the libraries say too (`pagemesh -v demo`).
demo: $(STAMP)
	$(BIN)/pagemesh $(if $(V),-v )demo --data-dir demo-data

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint debs $(AXE)
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

integration: $(STAMP) debs $(AXE)
	$(BIN)/python -m pytest -m integration

bench: $(STAMP) debs
	$(BIN)/python benchmarks/dht_lookup.py
	$(BIN)/python benchmarks/signaling_load.py
	$(BIN)/python benchmarks/admission_flood.py
	$(BIN)/python benchmarks/peer_messaging.py
	$(BIN)/python benchmarks/browser_messaging.py
	$(BIN)/python benchmarks/relay_throughput.py
	$(BIN)/python benchmarks/sim_scale.py

# dht/'s and the simulator's hot modules compiled with mypyc into build/mypyc/ (outside the
# sources): PAGEMESH_COMPILED=1 runs them (dht/compiled.py; rebuilt when a source changed).
compiled: $(STAMP)
	$(BIN)/python -c "from dht.compiled import build, BUILD_DIR; build(); print('compiled:', BUILD_DIR)"

# What a volunteer installs without cloning: a wheel and an sdist in dist/, the browser
# client inside as package data (`pip install dist/pagemesh-*.whl`, docs/operations.md).
# Built by PyPA's `build` from a venv of its own that holds nothing else (measured on a
# fresh clone: 46 s the first time, 26 s after, against 2 min 7 s when it made the test
# toolchain's .venv first); its version is git's (pyproject.toml), and a tree git cannot
# tell the version of (0.0: not a clone) is refused.
BUILD_VENV := .venv-build
$(BUILD_VENV)/.installed: | $(BUILD_VENV)/bin/python
	$(BUILD_VENV)/bin/python -m pip install -q 'build>=1.6.1'
	@touch $@

dist: $(BUILD_VENV)/.installed
	rm -rf dist
	$(BUILD_VENV)/bin/python -m build --outdir dist .
	@if ls dist/pagemesh-0.0-* >/dev/null 2>&1; then \
	  echo "dist: no git metadata, so no version (0.0): build from a git clone"; exit 1; fi
	@ls dist

clean:
	rm -rf build/mypyc build/extension build/extension.zip dist demo-data scratch test-artifacts .pytest_cache .mypy_cache .ruff_cache .hypothesis
