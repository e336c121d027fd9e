//! Pure policy engine (no proxy-wasm imports).
