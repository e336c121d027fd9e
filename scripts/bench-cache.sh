#!/usr/bin/env bash
# CACHE-001 benchmark (run by `make bench`, never by the tests): clears one
# tenant's 1,000,000 keys out of 2,000,000, and 10,000 out of 5,000,000, with
# avb-companion, django-redis delete_pattern and redis-cli | xargs, on the same
# data; prints a Markdown table and writes target/bench/cache.{md,json}.
#
#   BENCH_REPEAT=N   runs per tool (median; default 3)
#   BENCH_SCALE=F    multiply every key count (0.1 for a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in redis-server redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "bench-cache: $tool is missing (make deps)" >&2; exit 1; }
done

# django-redis and redis-py live in a virtualenv under .tools/ (never committed).
VENV=.tools/bench-venv
if ! "$VENV/bin/python" -c 'import django_redis, redis' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        'django>=4.2' 'django-redis>=5.4' 'redis>=5'
fi

cargo build --release -p avb-companion
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

exec "$VENV/bin/python" bench/cache/bench.py \
    --companion "$TARGET_DIR/release/avb-companion" \
    --out "$TARGET_DIR/bench" "$@"
