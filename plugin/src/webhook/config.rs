//! Raw (serde) form of a policy's `webhooks.<name>` section.

use serde::{Deserialize, Serialize};

fn default_max_body_bytes() -> u64 {
    1_048_576
}

/// One entry of the policy's `webhooks` map, exactly as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Only `"lago"` is known.
    pub provider: String,
    /// Accepted values of `X-Lago-Signature-Algorithm`: `"hmac"`, `"jwt"`.
    pub algorithms: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hmac_keys: Vec<RawHmacKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<RawLagoJwt>,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default)]
    pub replay_window_seconds: u64,
}

/// An HMAC key: exactly one of `secret` and `secret_env`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHmacKey {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

/// Lago's RS256 signature settings: exactly one of `public_key` and `public_key_env`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLagoJwt {
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_env: Option<String>,
}
