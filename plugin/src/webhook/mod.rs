//! Pure Lago webhook verification (no proxy-wasm imports).
//!
//! A policy's `webhooks.<name>` entry ([`RawWebhook`]) is checked once by
//! [`compile_webhook`] into a [`LagoVerifier`]. Each delivery then goes
//! through two phases, matching how the filter sees a request:
//! 1. [`LagoVerifier::check_headers`] before any body byte: signature and
//!    algorithm present and accepted, declared size within the limit,
//!    signature well formed. Returns a [`PendingDelivery`].
//! 2. [`LagoVerifier::verify`] over the complete raw body: constant-time
//!    HMAC comparison against every configured key (rotation), or the RS256
//!    token checked with the pinned key, its `iss`, and its `data` claim equal
//!    to the body byte for byte. Returns a [`Verified`] with the matching key
//!    id and a replay fingerprint for [`replay`].
//!
//! Every refusal is a [`Rejection`] carrying its HTTP status and error code.

mod compile;
pub mod config;
mod jwt;
mod public_key;
pub mod replay;
mod verifier;

pub use compile::{
    compile_webhook, WebhookConfigError, MAX_BODY_BYTES_LIMIT, MAX_REPLAY_WINDOW_SECONDS,
};
pub use config::{RawHmacKey, RawLagoJwt, RawWebhook};
pub use jwt::{sign_lago_jwt, JwtSigningError};
pub use public_key::{PublicKeyError, MIN_RSA_BITS};
pub use verifier::{
    sign_hmac, LagoVerifier, PendingDelivery, Rejection, SignatureAlgorithm, Verified,
    WebhookHeaders, JWT_KEY_ID,
};
