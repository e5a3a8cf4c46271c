# The README's commands. `make help` lists them.
PY ?= python3
# One virtualenv per interpreter, so `make test PY=...` never mixes builds.
VENV ?= .venv$(if $(filter python3,$(PY)),,-$(notdir $(PY)))
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed

PEERS := $(VENV)/.peers-installed
# The interpreter tag of $(PY)'s wheels (cp311, ...), to find ours in dist/.
WHEEL_TAG = $(shell $(VPY) -c "import sys; print('cp%d%d' % sys.version_info[:2])")
# cargo's own builds of plait-py (test, clippy) link libpython: that of $(PY)
# when it is not the default python3 (maturin picks the virtualenv's itself).
CARGO_ENV := $(if $(filter python3,$(PY)),,PYO3_PYTHON=$(shell command -v $(PY)))

.PHONY: help venv build wheel peers demo test test-rust test-loom test-python test-stubs test-wheel \
	bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml Makefile
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet "maturin>=1.5,<2" "pytest>=7" "pytest-timeout>=2" "mypy>=1.18"
	# Real programs the switch's tests run unchanged under `python -m plait run`.
	$(VPY) -m pip install --quiet "aiohttp>=3.9" "uvicorn>=0.30"
	# plait.cluster's backend (the plait[cluster] extra), for tests/cluster and the bench.
	$(VPY) -m pip install --quiet "distributed>=2024.1"
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the build and test tools

build: $(STAMP) ## build plait in release mode into the virtualenv
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --release --quiet

# The same features and profile as `build`, so cargo reuses its artifacts: no
# second release build.
wheel: $(STAMP) ## build a release wheel of plait into dist/
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin build --release --quiet --interpreter $(VPY) --out dist

demo: build ## run the side-by-side demo (standard library vs plait)
	cargo build --release --quiet -p plait-echo
	$(VPY) -m plait demo

# The benchmark's peer libraries; `make test` does not need them.
$(PEERS): $(STAMP)
	$(VPY) -m pip install --quiet uvloop rloop
	@touch $(PEERS)

peers: $(PEERS) ## install the benchmark peers (uvloop, rloop) into the virtualenv

bench: build $(PEERS) ## print the benchmark table (standard library, peers, plait)
	cargo build --release -p plait-echo
	$(VPY) -m plait bench

test-rust: ## cargo test for every crate, clippy with warnings as errors
	$(CARGO_ENV) cargo test --workspace
	$(CARGO_ENV) cargo clippy --workspace --all-targets -- -D warnings

test-loom: ## loom models of the core's lock-free protocols (separate target dir)
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
		cargo test -p plait-core --release --test loom_sync

test-python: build ## pytest: conformance, behaviour, stress
	$(VPY) -m pytest tests -q

test-stubs: build ## mypy.stubtest: _plait.pyi and the public modules match the runtime
	$(VPY) -m mypy.stubtest plait --mypy-config-file tests/stubtest_mypy.ini \
		--allowlist tests/stubtest_allowlist.txt

test-wheel: build wheel ## install the wheel into a fresh virtualenv and use each area
	PLAIT_WHEEL=$$(ls -t dist/plait-*-$(WHEEL_TAG)-*.whl | head -n 1) \
		$(VPY) -m pytest tests/packaging -q

test: test-rust test-loom test-stubs test-python test-wheel ## build, then cargo test, clippy, loom, pytest, stubs, wheel

clean: ## remove build products and virtualenvs
	cargo clean
	rm -rf .venv .venv-* python/plait/*.so dist
