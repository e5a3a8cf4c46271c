# The README's commands. `make help` lists them.
PY ?= python3
# One virtualenv per interpreter, so `make test PY=...` never mixes builds.
VENV ?= .venv$(if $(filter python3,$(PY)),,-$(notdir $(PY)))
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed

PEERS := $(VENV)/.peers-installed

.PHONY: help venv build peers demo test test-rust test-loom test-python bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet "maturin>=1.5,<2" "pytest>=7" "pytest-timeout>=2"
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the build and test tools

build: $(STAMP) ## build plait in release mode into the virtualenv
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --release --quiet

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

test-rust: ## cargo test for the core, clippy with warnings as errors
	cargo test --workspace --exclude plait-py
	cargo clippy --workspace --all-targets -- -D warnings

test-loom: ## loom models of the core's lock-free protocols (separate target dir)
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
		cargo test -p plait-core --release --test loom_sync

test-python: build ## pytest: conformance, behaviour, stress
	$(VPY) -m pytest tests -q

test: test-rust test-loom test-python ## build, then cargo test, clippy, loom and pytest

clean: ## remove build products and virtualenvs
	cargo clean
	rm -rf .venv .venv-* python/plait/*.so
