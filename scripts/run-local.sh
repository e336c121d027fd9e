#!/usr/bin/env bash
# The local stack for `make run` (which builds everything first; this script
# builds nothing):
#   avb-echo       127.0.0.1:8080   upstream that echoes what it received
#   avb-companion  127.0.0.1:8787   audit store + Audit API (if built)
#   envoy          127.0.0.1:10000  with dist/avb_edge.wasm and the shipped policy
#                  127.0.0.1:9901   admin (stats: /stats?filter=avb)
# Runs in the foreground; Ctrl-C stops all of them. Secrets come from
# envoy/dev.env and are for this local stack only.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bin="${CARGO_TARGET_DIR:-target}/debug"
wasm="dist/avb_edge.wasm"
policy="envoy/policies/agentvoicebox.yaml"
state_dir="$root/.run"

die() { echo "run-local: $*" >&2; exit 1; }

[[ -f "$wasm" ]] || die "$wasm is missing: run \`make plugin\` (or \`make run\`, which builds it)"
[[ -x "$bin/avb-echo" ]] || die "$bin/avb-echo is missing: run \`cargo build -p avb-tests --bins\`"
envoy="${AVB_ENVOY:-$("$root/scripts/envoy.sh")}"
[[ -x "$envoy" ]] || die "no Envoy binary (scripts/envoy.sh printed '$envoy')"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8080 8787 9901 10000; do
    if port_in_use "$port"; then
        die "127.0.0.1:$port is already in use (another \`make run\`?); stop it first"
    fi
done

# Local-only secrets (AVB_JWT_HS_KEY, AVB_INGEST_TOKEN, LAGO_HMAC_KEY).
set -a
# shellcheck source=../envoy/dev.env
source envoy/dev.env
set +a

mkdir -p "$state_dir"
pids=()
stopping=0
stop_all() {
    [[ $stopping == 1 ]] && return
    stopping=1
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    echo "run-local: stopped" >&2
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

"$bin/avb-echo" --listen 127.0.0.1:8080 &
pids+=($!)

if [[ -x "$bin/avb-companion" ]]; then
    "$bin/avb-companion" serve \
        --listen 127.0.0.1:8787 \
        --database "sqlite://$state_dir/avb-audit.db" \
        --policy "$policy" &
    pids+=($!)
else
    echo "run-local: $bin/avb-companion not built; /api/v1/audit/* will answer 503" >&2
fi

"$envoy" -c envoy/envoy.yaml --concurrency 2 -l warning --component-log-level wasm:info \
    --disable-hot-restart &
pids+=($!)

for _ in $(seq 1 300); do
    if [[ "$(curl -s --max-time 1 http://127.0.0.1:9901/ready 2>/dev/null || true)" == LIVE* ]]; then
        break
    fi
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "a process of the stack exited during startup (see above)"
    done
    sleep 0.2
done
[[ "$(curl -s --max-time 1 http://127.0.0.1:9901/ready || true)" == LIVE* ]] \
    || die "envoy did not become ready"

token="$bin/avb-policy token --policy $policy --env-file envoy/dev.env --kid dev-hs-1"
cat <<EOF

The AgentVoiceBox edge is up on http://127.0.0.1:10000 (Ctrl-C stops everything).
Tokens are minted for the local dev key by:  $token --sub SUBJECT --roles ROLE[,ROLE] --tenant TENANT

  # allowed (200): a DEVELOPER may read the STT config; the echo shows the x-avb-* headers the filter set
  curl -s -H "authorization: Bearer \$($token --sub dev-1 --roles DEVELOPER --tenant tenant-a)" \\
       http://127.0.0.1:10000/api/v1/stt/config

  # 401: no token
  curl -si http://127.0.0.1:10000/api/v1/stt/config

  # 403: a DEVELOPER may not read the LLM config (ADMIN only)
  curl -si -H "authorization: Bearer \$($token --sub dev-1 --roles DEVELOPER --tenant tenant-a)" \\
       http://127.0.0.1:10000/api/v1/llm/config

  # 400: a path that is not canonical never reaches a rule
  curl -si 'http://127.0.0.1:10000/api/v1/llm/config;role=ADMIN'

  # ADMIN inherits OPERATOR: the Audit API (served by avb-companion)
  curl -s -H "authorization: Bearer \$($token --sub admin-1 --roles ADMIN --tenant tenant-a)" \\
       http://127.0.0.1:10000/api/v1/audit/logs

  # the filter's counters
  curl -s 'http://127.0.0.1:9901/stats?filter=wasmcustom.avb'

EOF

# Foreground until one of them exits or Ctrl-C.
wait -n "${pids[@]}" || true
if [[ $stopping == 0 ]]; then
    echo "run-local: a process of the stack exited; stopping the rest" >&2
fi
