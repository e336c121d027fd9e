//! Pure Lago webhook verification (no proxy-wasm imports).

pub mod config;
pub use config::{RawHmacKey, RawLagoJwt, RawWebhook};
