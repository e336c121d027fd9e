//! Test support: a wasmtime proxy-wasm host that drives the real `.wasm`, and
//! helpers that start real Envoy, Redis, PostgreSQL and the companion on free
//! loopback ports.

pub mod echo;
pub mod host;
pub mod http;
pub mod procs;
pub mod tokens;
