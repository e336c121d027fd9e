#!/usr/bin/env bash
# Install the system packages the tests and the local stack use (Debian).
# Idempotent: installs only what is missing. Envoy comes from scripts/envoy.sh.
set -euo pipefail
pkgs=(redis-server redis-tools postgresql wrk)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
"${sudo[@]}" apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >&2
# The packaged services are not used (tests start private instances); keep them from holding ports.
"${sudo[@]}" service redis-server stop >/dev/null 2>&1 || true
"${sudo[@]}" service postgresql stop >/dev/null 2>&1 || true
