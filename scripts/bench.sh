#!/usr/bin/env bash
# `make bench`: the performance suite (issue 7, and the performance parts of
# issues 4 and 5). Never run by the tests. Takes about 10 to 15 minutes.
#
#   scripts/bench.sh                 everything: edge, rules, webhooks, audit, cache
#   BENCH_DURATION=5 BENCH_ROUNDS=3  seconds per wrk run, interleaved rounds (medians)
#   BENCH_SECTIONS=edge,rules        a subset of edge,rules,webhooks,audit
#   BENCH_SKIP_CACHE=1               skip scripts/bench-cache.sh (CACHE-001, Redis)
#   BENCH_PIN=0                      do not pin Envoy / wrk to separate CPUs
#
# Results (never committed): target/bench/results.md and results.json, with
# the CACHE-001 table of scripts/bench-cache.sh appended (target/bench/cache.*).
# Expects `make deps plugin probe build` first (the Makefile's bench target).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="${CARGO_TARGET_DIR:-$root/target}/bench"
mkdir -p "$out"

say() { printf 'bench: %s\n' "$*" >&2; }

for tool in wrk python3 taskset; do
    command -v "$tool" >/dev/null || { say "$tool is missing (make deps installs wrk)"; exit 1; }
done

envoy=$(scripts/envoy.sh)
wasm="$root/dist/avb_edge.wasm"
[ -f "$wasm" ] || { say "$wasm is missing: run make plugin"; exit 1; }

# The trivial Wasm filter: the floor any Rust proxy-wasm filter pays.
trivial="$out/trivial_filter.wasm"
AVB_WASM_TARGET_DIR="$root/target/wasm-probe" \
    scripts/build-wasm.sh bench/trivial-filter/Cargo.toml avb-bench-trivial-filter "$trivial"

# The companion as it ships (release), for audit ingest.
cargo build --release --quiet -p avb-companion
companion="${CARGO_TARGET_DIR:-$root/target}/release/avb-companion"

# The driver signs RS256/ES256 tokens with `cryptography`: the system's if it
# has it, else a virtualenv under .tools/ (never committed).
python=python3
if ! python3 -c 'import cryptography' 2>/dev/null; then
    venv="$root/.tools/bench-edge-venv"
    if ! "$venv/bin/python" -c 'import cryptography' 2>/dev/null; then
        say "installing cryptography into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check 'cryptography>=41'
    fi
    python="$venv/bin/python"
fi

pin=()
[ "${BENCH_PIN:-1}" = 0 ] && pin=(--no-pin)
"$python" bench/edge/bench.py \
    --root "$root" --envoy "$envoy" --wasm "$wasm" --trivial-wasm "$trivial" \
    --companion "$companion" --out "$out" \
    --duration "${BENCH_DURATION:-5}" --rounds "${BENCH_ROUNDS:-3}" \
    --sections "${BENCH_SECTIONS:-edge,rules,webhooks,audit}" "${pin[@]}"

if [ "${BENCH_SKIP_CACHE:-0}" != 1 ]; then
    say "CACHE-001: scripts/bench-cache.sh"
    scripts/bench-cache.sh
    "$python" bench/edge/bench.py merge-cache --out "$out"
fi

cat "$out/results.md"
say "results: $out/results.md and $out/results.json"
