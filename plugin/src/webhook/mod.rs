//! Pure Lago webhook verification (no proxy-wasm imports).
