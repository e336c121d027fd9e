#!/usr/bin/env bash
# Run every avb-edge fuzz target (fuzz/, cargo-fuzz + libFuzzer) for a while.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 300 (`make fuzz`); `make test` runs a short
# pass with 12. Installs cargo-fuzz into the default cargo bin dir if missing,
# builds all targets once, then runs each target from its committed seeds
# (fuzz/seeds/<target>) plus the corpus it grew before (fuzz/corpus/<target>,
# not committed). A crash leaves its input in fuzz/artifacts/<target>/; the
# script runs the remaining targets and exits non-zero if any target failed.
#
# Sanitizers are off: the plugin forbids `unsafe`, so AddressSanitizer would
# mostly slow the run down. Panics, failed property assertions, timeouts and
# out-of-memory are what libFuzzer reports here.
set -euo pipefail

seconds="${1:-300}"
shift || true
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "fuzz: SECONDS_PER_TARGET must be a positive integer, not '$seconds'" >&2
    exit 2
fi

# cargo-fuzz needs a nightly toolchain (-Z flags for coverage instrumentation).
toolchain="${AVB_FUZZ_TOOLCHAIN:-nightly}"
if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
    echo "fuzz: the rustup toolchain '$toolchain' is not installed (set AVB_FUZZ_TOOLCHAIN)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked >&2
fi

all_targets=(path_and_routing jwt policy lago property)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

# Per-target dictionaries (libFuzzer inserts these tokens while mutating).
dict_for() {
    case "$1" in
        path_and_routing) echo "fuzz/dicts/path.dict" ;;
        jwt) echo "fuzz/dicts/jwt.dict" ;;
        policy) echo "fuzz/dicts/policy.dict" ;;
        *) echo "" ;;
    esac
}

fuzz=(cargo "+$toolchain" fuzz)
build_flags=(--sanitizer none)

echo "fuzz: building ${targets[*]}" >&2
"${fuzz[@]}" build "${build_flags[@]}" >&2

failed=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    seeds="fuzz/seeds/$target"
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    dict="$(dict_for "$target")"
    [ -n "$dict" ] && args+=(-dict="$dict")
    echo "fuzz: $target for ${seconds}s" >&2
    # The first directory receives new inputs; the seeds are only read.
    if "${fuzz[@]}" run "${build_flags[@]}" "$target" "$corpus" "$seeds" -- "${args[@]}" \
        >"fuzz/artifacts/$target/last-run.log" 2>&1; then
        grep -E '^stat::number_of_executed_units' "fuzz/artifacts/$target/last-run.log" >&2 || true
    else
        echo "fuzz: $target FAILED; log: fuzz/artifacts/$target/last-run.log" >&2
        grep -E 'panicked at|SUMMARY|Test unit written to' "fuzz/artifacts/$target/last-run.log" >&2 || true
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: failures in ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran ${seconds}s each without a failure" >&2
