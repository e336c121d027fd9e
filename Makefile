# avb-edge: build, test and run the edge policy filter and its companion.
#   make run     build everything and start the local stack (Envoy + plugin, companion, echo upstream)
#   make test    install what is needed, build once, run every test (what CI runs)
#   make plugin  build dist/avb_edge.wasm
#   make envoy   make a real Envoy 1.40 available (prints its path)
#   make lint    cargo fmt --check and clippy -D warnings
#   make bench   performance suite (results under target/bench/)
#   make fuzz    run every fuzz target for 5 minutes (make fuzz-short: a few seconds each)
#   make soak    10 minutes of load with companion and Redis restarts
SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(CURDIR)
WASM := dist/avb_edge.wasm
PROBE_WASM := target/probe/avb_probe_filter.wasm
PLUGIN_SOURCES := $(shell find plugin/src -name '*.rs') plugin/Cargo.toml Cargo.toml

export AVB_WASM := $(ROOT)/$(WASM)
export AVB_PROBE_WASM := $(ROOT)/$(PROBE_WASM)

.PHONY: help plugin probe envoy deps build lint test run bench fuzz fuzz-short soak

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

plugin: $(WASM) ## build dist/avb_edge.wasm (wasm32-wasip1)

$(WASM): $(PLUGIN_SOURCES)
	scripts/build-wasm.sh plugin/Cargo.toml avb-edge $(WASM)

probe: $(PROBE_WASM) ## build the test host's probe filter

$(PROBE_WASM): $(shell find tests/probe-filter -name '*.rs' -o -name Cargo.toml 2>/dev/null)
	AVB_WASM_TARGET_DIR=$(ROOT)/target/wasm-probe scripts/build-wasm.sh tests/probe-filter/Cargo.toml avb-probe-filter $(PROBE_WASM)

envoy: ## make a real Envoy 1.40 available and print its path
	@scripts/envoy.sh

deps: ## install system packages (redis, postgresql, wrk) when missing
	scripts/install-deps.sh

build: ## native build of the workspace (companion, CLI, test binaries)
	cargo build --workspace --all-targets

lint: ## formatting and clippy (deny warnings), natively and for the wasm target
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	scripts/build-wasm.sh --clippy plugin/Cargo.toml avb-edge

test: deps plugin probe build ## everything CI runs
	$(MAKE) lint
	AVB_ENVOY="$$(scripts/envoy.sh)" cargo test --workspace --no-fail-fast
	$(MAKE) fuzz-short

fuzz-short: ## every fuzz target for a few seconds (part of make test)
	scripts/fuzz.sh 12

fuzz: ## every fuzz target for 5 minutes
	scripts/fuzz.sh 300

soak: deps plugin build ## steady load for 10 minutes while the companion and Redis restart
	AVB_ENVOY="$$(scripts/envoy.sh)" scripts/soak.sh 600

run: deps plugin ## start the local stack and print what to try
	cargo build -p avb-companion -p avb-edge -p avb-tests --bins
	AVB_ENVOY="$$(scripts/envoy.sh)" scripts/run-local.sh

bench: deps plugin probe build ## performance suite; results in target/bench/
	AVB_ENVOY="$$(scripts/envoy.sh)" scripts/bench.sh
