//! avb-edge: an edge policy filter for Envoy, written against proxy-wasm.
//!
//! The crate has three layers:
//! - [`policy`]: pure decision logic (configuration, path canonicalisation,
//!   route matching, JWT verification, decisions). No proxy-wasm import, so it
//!   is unit-tested natively and shared with the `avb-policy` CLI and the
//!   companion service.
//! - [`webhook`]: pure Lago webhook verification (HMAC and JWT signatures).
//! - [`audit`]: the audit-event model shared with the companion.
//! - [`property`]: decoding of Envoy's property encoding (jwt_authn payloads).
//! - [`strict_json`]: JSON parsing that refuses duplicate keys (tokens, policies).
//! - `filter` (wasm32 only): the thin proxy-wasm glue that reads the request
//!   from the host, asks the engine, and applies the decision.

pub mod audit;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod policy;
pub mod property;
pub mod strict_json;
pub mod webhook;

#[cfg(target_arch = "wasm32")]
mod filter;
