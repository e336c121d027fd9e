//! `RawWebhook` (as written) -> [`LagoVerifier`] (checked), resolving secrets
//! from the environment once, at configuration time.

use super::config::{RawHmacKey, RawLagoJwt, RawWebhook};
use super::public_key::{parse_lago_public_key, PublicKeyError};
use super::verifier::{HmacKey, JwtSettings, LagoVerifier, Secret, SignatureAlgorithm, JWT_KEY_ID};

/// Upper bound for `max_body_bytes`: the filter buffers the whole body.
pub const MAX_BODY_BYTES_LIMIT: u64 = 16 * 1024 * 1024;
/// Upper bound for `replay_window_seconds`: 30 days.
pub const MAX_REPLAY_WINDOW_SECONDS: u64 = 30 * 24 * 60 * 60;
/// Longest accepted webhook name or HMAC key id (both end up in headers and audit events).
const MAX_IDENTIFIER_LEN: usize = 64;

/// A rejected `webhooks.<name>` entry. Messages name the webhook, field and
/// key id involved, never a secret or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("webhook name `{webhook}` is invalid: use 1 to 64 characters from a-z, A-Z, 0-9, `.`, `_`, `-`")]
    InvalidName { webhook: String },
    #[error("webhook `{webhook}`: provider `{provider}` is not supported (only \"lago\")")]
    UnsupportedProvider { webhook: String, provider: String },
    #[error("webhook `{webhook}`: algorithms must list at least one of \"hmac\", \"jwt\"")]
    NoAlgorithms { webhook: String },
    #[error("webhook `{webhook}`: algorithm `{algorithm}` is unknown (use \"hmac\" or \"jwt\")")]
    UnknownAlgorithm { webhook: String, algorithm: String },
    #[error("webhook `{webhook}`: algorithm `{algorithm}` is listed twice")]
    DuplicateAlgorithm { webhook: String, algorithm: String },
    #[error("webhook `{webhook}`: \"hmac\" is listed in algorithms but hmac_keys is empty")]
    MissingHmacKeys { webhook: String },
    #[error(
        "webhook `{webhook}`: hmac_keys are configured but \"hmac\" is not listed in algorithms"
    )]
    UnusedHmacKeys { webhook: String },
    #[error("webhook `{webhook}`: an hmac key has an empty id")]
    EmptyKeyId { webhook: String },
    #[error("webhook `{webhook}`: hmac key id `{key_id}` is invalid: use up to 64 characters from a-z, A-Z, 0-9, `.`, `_`, `-`")]
    InvalidKeyId { webhook: String, key_id: String },
    #[error("webhook `{webhook}`: hmac key id `jwt` is reserved for jwt deliveries")]
    ReservedKeyId { webhook: String },
    #[error("webhook `{webhook}`: hmac key id `{key_id}` is used twice")]
    DuplicateKeyId { webhook: String, key_id: String },
    #[error(
        "webhook `{webhook}`: hmac key `{key_id}` must set exactly one of secret and secret_env"
    )]
    SecretSource { webhook: String, key_id: String },
    #[error("webhook `{webhook}`: hmac key `{key_id}`: environment variable `{variable}` is unset or empty")]
    SecretEnvUnset {
        webhook: String,
        key_id: String,
        variable: String,
    },
    #[error("webhook `{webhook}`: hmac key `{key_id}`: secret is empty")]
    EmptySecret { webhook: String, key_id: String },
    #[error("webhook `{webhook}`: hmac key `{key_id}`: secret has leading or trailing whitespace")]
    SecretWhitespace { webhook: String, key_id: String },
    #[error("webhook `{webhook}`: \"jwt\" is listed in algorithms but the jwt section is missing")]
    MissingJwtSection { webhook: String },
    #[error(
        "webhook `{webhook}`: a jwt section is configured but \"jwt\" is not listed in algorithms"
    )]
    UnusedJwtSection { webhook: String },
    #[error("webhook `{webhook}`: jwt.issuer is empty or has leading or trailing whitespace")]
    InvalidIssuer { webhook: String },
    #[error("webhook `{webhook}`: jwt must set exactly one of public_key and public_key_env")]
    PublicKeySource { webhook: String },
    #[error("webhook `{webhook}`: jwt.public_key_env: environment variable `{variable}` is unset or empty")]
    PublicKeyEnvUnset { webhook: String, variable: String },
    #[error("webhook `{webhook}`: {field} {reason}")]
    InvalidPublicKey {
        webhook: String,
        field: &'static str,
        #[source]
        reason: PublicKeyError,
    },
    #[error("webhook `{webhook}`: max_body_bytes {value} is outside 1..={MAX_BODY_BYTES_LIMIT}")]
    MaxBodyBytesOutOfRange { webhook: String, value: u64 },
    #[error("webhook `{webhook}`: replay_window_seconds {value} exceeds {MAX_REPLAY_WINDOW_SECONDS} (30 days)")]
    ReplayWindowTooLong { webhook: String, value: u64 },
}

/// Checks one `webhooks.<name>` entry and resolves its secrets through `env`
/// (`secret_env`, `public_key_env`).
pub fn compile_webhook(
    name: &str,
    raw: &RawWebhook,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LagoVerifier, WebhookConfigError> {
    // Exhaustive destructuring: a new raw field cannot be ignored by mistake.
    let RawWebhook {
        provider,
        algorithms,
        hmac_keys,
        jwt,
        max_body_bytes,
        replay_window_seconds,
    } = raw;
    let webhook = || name.to_owned();
    if !is_identifier(name) {
        return Err(WebhookConfigError::InvalidName { webhook: webhook() });
    }
    if provider != "lago" {
        return Err(WebhookConfigError::UnsupportedProvider {
            webhook: webhook(),
            provider: provider.clone(),
        });
    }
    let algorithms = compile_algorithms(name, algorithms)?;
    let hmac_keys = if algorithms.contains(&SignatureAlgorithm::Hmac) {
        if hmac_keys.is_empty() {
            return Err(WebhookConfigError::MissingHmacKeys { webhook: webhook() });
        }
        compile_hmac_keys(name, hmac_keys, env)?
    } else if hmac_keys.is_empty() {
        Vec::new()
    } else {
        return Err(WebhookConfigError::UnusedHmacKeys { webhook: webhook() });
    };
    let jwt = match (algorithms.contains(&SignatureAlgorithm::Jwt), jwt) {
        (true, Some(raw_jwt)) => Some(compile_jwt(name, raw_jwt, env)?),
        (true, None) => return Err(WebhookConfigError::MissingJwtSection { webhook: webhook() }),
        (false, Some(_)) => {
            return Err(WebhookConfigError::UnusedJwtSection { webhook: webhook() })
        }
        (false, None) => None,
    };
    if !(1..=MAX_BODY_BYTES_LIMIT).contains(max_body_bytes) {
        return Err(WebhookConfigError::MaxBodyBytesOutOfRange {
            webhook: webhook(),
            value: *max_body_bytes,
        });
    }
    if *replay_window_seconds > MAX_REPLAY_WINDOW_SECONDS {
        return Err(WebhookConfigError::ReplayWindowTooLong {
            webhook: webhook(),
            value: *replay_window_seconds,
        });
    }
    Ok(LagoVerifier {
        name: name.to_owned(),
        algorithms,
        hmac_keys,
        jwt,
        max_body_bytes: *max_body_bytes,
        replay_window_seconds: *replay_window_seconds,
    })
}

/// Names and key ids travel in `x-avb-*` headers and audit events: keep them
/// to a charset that needs no escaping anywhere.
fn is_identifier(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_IDENTIFIER_LEN
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn compile_algorithms(
    name: &str,
    raw: &[String],
) -> Result<Vec<SignatureAlgorithm>, WebhookConfigError> {
    if raw.is_empty() {
        return Err(WebhookConfigError::NoAlgorithms {
            webhook: name.to_owned(),
        });
    }
    let mut algorithms = Vec::with_capacity(raw.len());
    for value in raw {
        let algorithm = SignatureAlgorithm::parse(value).ok_or_else(|| {
            WebhookConfigError::UnknownAlgorithm {
                webhook: name.to_owned(),
                algorithm: value.clone(),
            }
        })?;
        if algorithms.contains(&algorithm) {
            return Err(WebhookConfigError::DuplicateAlgorithm {
                webhook: name.to_owned(),
                algorithm: value.clone(),
            });
        }
        algorithms.push(algorithm);
    }
    Ok(algorithms)
}

fn compile_hmac_keys(
    name: &str,
    raw_keys: &[RawHmacKey],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<HmacKey>, WebhookConfigError> {
    let mut keys: Vec<HmacKey> = Vec::with_capacity(raw_keys.len());
    for RawHmacKey {
        id,
        secret,
        secret_env,
    } in raw_keys
    {
        let webhook = name.to_owned();
        if id.is_empty() {
            return Err(WebhookConfigError::EmptyKeyId { webhook });
        }
        if !is_identifier(id) {
            return Err(WebhookConfigError::InvalidKeyId {
                webhook,
                key_id: id.clone(),
            });
        }
        if id == JWT_KEY_ID {
            return Err(WebhookConfigError::ReservedKeyId { webhook });
        }
        if keys.iter().any(|key| key.id == *id) {
            return Err(WebhookConfigError::DuplicateKeyId {
                webhook,
                key_id: id.clone(),
            });
        }
        let value =
            match (secret, secret_env) {
                (Some(inline), None) => inline.clone(),
                (None, Some(variable)) => env(variable)
                    .filter(|value| !value.is_empty())
                    .ok_or_else(|| WebhookConfigError::SecretEnvUnset {
                        webhook: webhook.clone(),
                        key_id: id.clone(),
                        variable: variable.clone(),
                    })?,
                _ => {
                    return Err(WebhookConfigError::SecretSource {
                        webhook,
                        key_id: id.clone(),
                    })
                }
            };
        if value.is_empty() {
            return Err(WebhookConfigError::EmptySecret {
                webhook,
                key_id: id.clone(),
            });
        }
        // A Lago key is a UUID; surrounding whitespace is a copy-paste or
        // file-newline accident that would make every delivery fail.
        if value.trim() != value {
            return Err(WebhookConfigError::SecretWhitespace {
                webhook,
                key_id: id.clone(),
            });
        }
        keys.push(HmacKey {
            id: id.clone(),
            secret: Secret::new(value.into_bytes()),
        });
    }
    Ok(keys)
}

fn compile_jwt(
    name: &str,
    raw: &RawLagoJwt,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<JwtSettings, WebhookConfigError> {
    let RawLagoJwt {
        issuer,
        public_key,
        public_key_env,
    } = raw;
    let webhook = || name.to_owned();
    if issuer.is_empty() || issuer.trim() != issuer {
        return Err(WebhookConfigError::InvalidIssuer { webhook: webhook() });
    }
    let (field, text) = match (public_key, public_key_env) {
        (Some(inline), None) => ("jwt.public_key", inline.clone()),
        (None, Some(variable)) => (
            "jwt.public_key_env",
            env(variable)
                .filter(|value| !value.trim().is_empty())
                .ok_or_else(|| WebhookConfigError::PublicKeyEnvUnset {
                    webhook: webhook(),
                    variable: variable.clone(),
                })?,
        ),
        _ => return Err(WebhookConfigError::PublicKeySource { webhook: webhook() }),
    };
    let key =
        parse_lago_public_key(&text).map_err(|reason| WebhookConfigError::InvalidPublicKey {
            webhook: webhook(),
            field,
            reason,
        })?;
    Ok(JwtSettings {
        issuer: issuer.clone(),
        key,
    })
}
