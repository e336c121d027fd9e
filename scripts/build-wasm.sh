#!/usr/bin/env bash
# Build (or lint) a proxy-wasm crate for wasm32-wasip1.
#
#   scripts/build-wasm.sh MANIFEST PACKAGE OUT     build, copy the .wasm to OUT
#   scripts/build-wasm.sh --clippy MANIFEST PACKAGE   clippy -D warnings for the wasm target
#
# Normal path: a rustup toolchain that already has the wasm32-wasip1 target
# (`rustup target add wasm32-wasip1`) builds it with plain cargo.
# Offline fallback (machines where rustup cannot download the target): Debian's
# rustc-web/cargo-web with the std sources (rust-web-src) and wasi-libc compile
# std for the target themselves (-Zbuild-std), linked by rustup's rust-lld or
# Debian's wasm-ld. The fallback installs those packages when they are missing.
set -euo pipefail

mode=build
if [ "${1:-}" = "--clippy" ]; then mode=clippy; shift; fi
usage="usage: build-wasm.sh [--clippy] MANIFEST PACKAGE [OUT]"
manifest=${1:?$usage}
package=${2:?$usage}
out=${3:-}
[ "$mode" = clippy ] || [ -n "$out" ] || { echo "$usage" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${AVB_WASM_TARGET_DIR:-$root/target/wasm}
crate=${package//-/_}

say() { printf 'build-wasm: %s\n' "$*" >&2; }

if [ "$mode" = clippy ]; then
    sub=(clippy); lint=(-- -D warnings)
else
    # The crate may be an rlib natively; the proxy-wasm module is a cdylib.
    sub=(rustc --crate-type cdylib); lint=()
fi

if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    say "rustup has wasm32-wasip1: normal $mode"
    cargo "${sub[@]}" --release --manifest-path "$manifest" --target wasm32-wasip1 \
        --target-dir "$target_dir/rustup" -p "$package" --lib "${lint[@]}"
    built="$target_dir/rustup/wasm32-wasip1/release/$crate.wasm"
else
    need=()
    [ -x /usr/bin/rustc ] || need+=(rustc-web)
    [ -x /usr/bin/cargo ] || need+=(cargo-web)
    dpkg -s rust-web-src >/dev/null 2>&1 || need+=(rust-web-src)
    dpkg -s wasi-libc >/dev/null 2>&1 || need+=(wasi-libc)
    if [ "$mode" = clippy ]; then [ -x /usr/bin/clippy-driver ] || need+=(rust-web-clippy); fi
    if [ ${#need[@]} -gt 0 ]; then
        say "installing Debian packages for the offline wasm toolchain: ${need[*]}"
        if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
        "${sudo[@]}" apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >&2
    fi
    lld=""
    if command -v rustc >/dev/null 2>&1; then
        cand="$(rustc --print sysroot 2>/dev/null)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
        [ -x "$cand" ] && lld=$cand
    fi
    [ -n "$lld" ] || lld=$(command -v wasm-ld-19 || command -v wasm-ld || true)
    if [ -z "$lld" ]; then
        say "no wasm linker: installing lld-19"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lld-19 >&2
        lld=$(command -v wasm-ld-19)
    fi
    say "offline fallback ($mode): Debian $(/usr/bin/rustc --version) with -Zbuild-std, linker $lld"
    # /usr/bin first so cargo-clippy finds Debian's cargo and clippy-driver, not rustup's.
    PATH=/usr/bin:$PATH RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_WASM32_WASIP1_LINKER="$lld" \
    CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="-C link-self-contained=no -L /usr/lib/wasm32-wasi" \
        /usr/bin/cargo "${sub[@]}" --release --manifest-path "$manifest" --target wasm32-wasip1 \
        -Zbuild-std=std,panic_abort --target-dir "$target_dir/debian" -p "$package" --lib "${lint[@]}"
    built="$target_dir/debian/wasm32-wasip1/release/$crate.wasm"
fi

[ "$mode" = clippy ] && exit 0
mkdir -p "$(dirname "$out")"
cp "$built" "$out.tmp" && mv "$out.tmp" "$out"
say "wrote $out ($(stat -c %s "$out") bytes)"
