#!/usr/bin/env bash
# Soak (issue 8): drives Envoy + the avb-edge filter + avb-companion (SQLite)
# + redis-server at a steady rate with a mix of allowed and denied requests for
# SECONDS (default 600), restarting the companion and Redis along the way, then
# checks decisions, the audit trail (stored, chain verified) and Envoy's memory.
# The same test runs for 45 s in `make test` (tests/tests/soak.rs).
#
#   scripts/soak.sh [SECONDS]
#
# Needs dist/avb_edge.wasm (make plugin) and redis-server (make deps); finds or
# installs Envoy with scripts/envoy.sh. The output, with its `soak:` summary
# line, is also written to target/soak/soak-<SECONDS>s.log.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/soak.sh [SECONDS]  (a whole number of seconds, default 600)" >&2
    exit 2
fi
command -v redis-server >/dev/null || { echo "soak: redis-server is missing (make deps)" >&2; exit 1; }
wasm="${AVB_WASM:-dist/avb_edge.wasm}"
[[ -f "$wasm" ]] || { echo "soak: $wasm is missing (make plugin)" >&2; exit 1; }

AVB_ENVOY="${AVB_ENVOY:-$(scripts/envoy.sh)}"
AVB_WASM="$(realpath "$wasm")"
export AVB_ENVOY AVB_WASM AVB_SOAK_SECONDS="$seconds"

log_dir="${CARGO_TARGET_DIR:-target}/soak"
mkdir -p "$log_dir"
log="$log_dir/soak-${seconds}s.log"
echo "soak: ${seconds}s; log in $log" >&2
set +e
cargo test -p avb-tests --test soak -- --nocapture 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
set -e
grep '^soak: ' "$log" >&2 || true
exit "$status"
