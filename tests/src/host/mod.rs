//! wasmtime-based proxy-wasm host (to be written)
