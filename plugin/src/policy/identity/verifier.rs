//! Bearer JWT verification (RFC 7519 / RFC 7515 compact JWS).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::keys::{compile_jwk, Algorithm, VerificationKey};
use crate::policy::config::RawIssuer;
use crate::policy::error::ConfigError;
use crate::strict_json::{parse_strict, StrictJsonError};

/// Longest token accepted. Real access tokens are a few KiB; the cap bounds
/// the work an unauthenticated client can ask for.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token is refused. Messages never contain the token or its claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("token is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token has a duplicate key in its {0}")]
    DuplicateKey(&'static str),
    #[error("unsigned tokens (`alg: none`) are not accepted")]
    AlgorithmNone,
    #[error("token algorithm is not supported")]
    UnsupportedAlgorithm,
    #[error("token has a `crit` header, which is not supported")]
    CriticalHeader,
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    #[error("token key id is not known for its issuer")]
    UnknownKeyId,
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("no key of the token's issuer uses the token's algorithm")]
    NoMatchingKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("token claim `{0}` has the wrong type")]
    InvalidClaim(&'static str),
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
}

impl TokenError {
    /// The stable decision reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid | TokenError::IssuedInFuture => "token_not_yet_valid",
            _ => "invalid_token",
        }
    }
}

/// A token whose signature, issuer, audience and times were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The claims, exactly as signed (duplicate keys were refused).
    pub claims: Value,
    pub issuer: String,
    pub algorithm: Algorithm,
    pub key_id: Option<String>,
    /// `exp`, in Unix seconds.
    pub expires_at: u64,
    /// `nbf`, in Unix seconds.
    pub not_before: Option<u64>,
    /// `iat`, in Unix seconds.
    pub issued_at: Option<u64>,
}

#[derive(Debug, Clone)]
struct Issuer {
    issuer: String,
    audiences: Vec<String>,
    keys: Vec<VerificationKey>,
}

/// Verifies bearer tokens against the configured issuers and their keys.
#[derive(Debug, Clone)]
pub struct Verifier {
    issuers: Vec<Issuer>,
    clock_skew_seconds: u64,
}

impl Verifier {
    /// Compile the issuers' key sets, resolving `k_env` through `env`.
    pub fn new(
        issuers: &[RawIssuer],
        clock_skew_seconds: u64,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Verifier, ConfigError> {
        if issuers.is_empty() {
            return Err(ConfigError::Identity {
                problem: "bearer_jwt needs at least one issuer".to_owned(),
            });
        }
        let mut compiled: Vec<Issuer> = Vec::with_capacity(issuers.len());
        for raw in issuers {
            let RawIssuer {
                issuer,
                audiences,
                jwks,
            } = raw;
            if issuer.is_empty() {
                return Err(ConfigError::Identity {
                    problem: "an issuer has an empty `issuer`".to_owned(),
                });
            }
            if compiled.iter().any(|i| &i.issuer == issuer) {
                return Err(ConfigError::DuplicateIssuer {
                    issuer: issuer.clone(),
                });
            }
            if audiences.is_empty() || audiences.iter().any(String::is_empty) {
                return Err(ConfigError::NoAudiences {
                    issuer: issuer.clone(),
                });
            }
            if jwks.keys.is_empty() {
                return Err(ConfigError::NoKeys {
                    issuer: issuer.clone(),
                });
            }
            let mut keys: Vec<VerificationKey> = Vec::with_capacity(jwks.keys.len());
            for (index, jwk) in jwks.keys.iter().enumerate() {
                let label = match &jwk.kid {
                    Some(kid) => format!("`{kid}`"),
                    None => format!("#{index}"),
                };
                let key = compile_jwk(issuer, &label, jwk, env)?;
                if let Some(kid) = key.kid() {
                    if keys.iter().any(|k| k.kid() == Some(kid)) {
                        return Err(ConfigError::DuplicateKid {
                            issuer: issuer.clone(),
                            kid: kid.to_owned(),
                        });
                    }
                }
                keys.push(key);
            }
            compiled.push(Issuer {
                issuer: issuer.clone(),
                audiences: audiences.clone(),
                keys,
            });
        }
        Ok(Verifier {
            issuers: compiled,
            clock_skew_seconds,
        })
    }

    pub fn clock_skew_seconds(&self) -> u64 {
        self.clock_skew_seconds
    }

    /// Verify a compact JWS token at Unix time `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { max: MAX_TOKEN_LEN });
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        let header = decode_object(header_b64, "header")?;
        let algorithm = header_algorithm(&header)?;
        if header.contains_key("crit") {
            return Err(TokenError::CriticalHeader);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(TokenError::Malformed("`kid` is not a string")),
        };
        let claims = decode_object(payload_b64, "claims")?;
        let issuer = match claims.get("iss") {
            None => return Err(TokenError::MissingClaim("iss")),
            Some(Value::String(iss)) => self
                .issuers
                .iter()
                .find(|i| &i.issuer == iss)
                .ok_or(TokenError::UnknownIssuer)?,
            Some(_) => return Err(TokenError::InvalidClaim("iss")),
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        let verified_by = match kid {
            Some(kid) => {
                let key = issuer
                    .keys
                    .iter()
                    .find(|k| k.kid() == Some(kid))
                    .ok_or(TokenError::UnknownKeyId)?;
                if key.algorithm() != algorithm {
                    return Err(TokenError::AlgorithmMismatch);
                }
                key.verify(signing_input, &signature)
                    .then_some(key)
                    .ok_or(TokenError::BadSignature)?
            }
            None => {
                let mut candidates = issuer
                    .keys
                    .iter()
                    .filter(|k| k.algorithm() == algorithm)
                    .peekable();
                if candidates.peek().is_none() {
                    return Err(TokenError::NoMatchingKey);
                }
                candidates
                    .find(|k| k.verify(signing_input, &signature))
                    .ok_or(TokenError::BadSignature)?
            }
        };
        check_audience(&claims, &issuer.audiences)?;
        let expires_at =
            numeric_date(&claims, "exp", Rounding::Down)?.ok_or(TokenError::MissingClaim("exp"))?;
        let not_before = numeric_date(&claims, "nbf", Rounding::Up)?;
        let issued_at = numeric_date(&claims, "iat", Rounding::Up)?;
        let verified = VerifiedToken {
            claims: Value::Object(claims),
            issuer: issuer.issuer.clone(),
            algorithm,
            key_id: verified_by.kid().map(str::to_owned),
            expires_at,
            not_before,
            issued_at,
        };
        self.check_times(&verified, now)?;
        Ok(verified)
    }

    /// Whether a verified token is still within its validity window at `now`
    /// (the same test `verify` applies), for cached tokens.
    pub fn check_times(&self, token: &VerifiedToken, now: u64) -> Result<(), TokenError> {
        let skew = self.clock_skew_seconds;
        if now >= token.expires_at.saturating_add(skew) {
            return Err(TokenError::Expired);
        }
        if token
            .not_before
            .is_some_and(|nbf| now.saturating_add(skew) < nbf)
        {
            return Err(TokenError::NotYetValid);
        }
        if token
            .issued_at
            .is_some_and(|iat| iat > now.saturating_add(skew))
        {
            return Err(TokenError::IssuedInFuture);
        }
        Ok(())
    }
}

/// Extract the token from an `Authorization` value: `Bearer <token>`, the
/// scheme case-insensitive, exactly one space, one token of base64url and `.`.
pub fn bearer_token(authorization: &str) -> Result<&str, TokenError> {
    let Some((scheme, token)) = authorization.split_once(' ') else {
        return Err(TokenError::NotBearer);
    };
    let token_chars = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || !token.bytes().all(token_chars)
    {
        return Err(TokenError::NotBearer);
    }
    Ok(token)
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        TokenError::Malformed(if what == "header" {
            "header is not base64url"
        } else {
            "claims are not base64url"
        })
    })?;
    match parse_strict(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(TokenError::Malformed(if what == "header" {
            "header is not a JSON object"
        } else {
            "claims are not a JSON object"
        })),
        Err(StrictJsonError::DuplicateKey { .. }) => Err(TokenError::DuplicateKey(what)),
        Err(StrictJsonError::Syntax(_)) => Err(TokenError::Malformed(if what == "header" {
            "header is not JSON"
        } else {
            "claims are not JSON"
        })),
    }
}

fn header_algorithm(header: &Map<String, Value>) -> Result<Algorithm, TokenError> {
    match header.get("alg") {
        Some(Value::String(alg)) if alg.eq_ignore_ascii_case("none") => {
            Err(TokenError::AlgorithmNone)
        }
        Some(Value::String(alg)) => {
            Algorithm::from_name(alg).ok_or(TokenError::UnsupportedAlgorithm)
        }
        Some(_) => Err(TokenError::Malformed("`alg` is not a string")),
        None => Err(TokenError::Malformed("header has no `alg`")),
    }
}

fn check_audience(claims: &Map<String, Value>, accepted: &[String]) -> Result<(), TokenError> {
    let is_accepted = |aud: &str| accepted.iter().any(|a| a == aud);
    match claims.get("aud") {
        None => Err(TokenError::MissingClaim("aud")),
        Some(Value::String(aud)) => is_accepted(aud)
            .then_some(())
            .ok_or(TokenError::WrongAudience),
        Some(Value::Array(list)) => {
            let mut found = false;
            for item in list {
                let Value::String(aud) = item else {
                    return Err(TokenError::InvalidClaim("aud"));
                };
                found |= is_accepted(aud);
            }
            found.then_some(()).ok_or(TokenError::WrongAudience)
        }
        Some(_) => Err(TokenError::InvalidClaim("aud")),
    }
}

#[derive(Clone, Copy)]
enum Rounding {
    Down,
    Up,
}

/// A NumericDate claim as whole seconds. Fractions round towards the stricter
/// side (an expiry earlier, a start later).
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
    rounding: Rounding,
) -> Result<Option<u64>, TokenError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(TokenError::InvalidClaim(name));
    };
    if let Some(seconds) = number.as_u64() {
        return Ok(Some(seconds));
    }
    match number.as_f64() {
        Some(seconds) if (0.0..1.0e18).contains(&seconds) => {
            let whole = match rounding {
                Rounding::Down => seconds.floor(),
                Rounding::Up => seconds.ceil(),
            };
            // In range and integral, so the conversion is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(Some(whole as u64))
        }
        _ => Err(TokenError::InvalidClaim(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer a.b.c"), Ok("a.b.c"));
        assert_eq!(bearer_token("bearer a.b.c"), Ok("a.b.c"));
        assert_eq!(bearer_token("BEARER a.b-_c"), Ok("a.b-_c"));
    }

    #[test]
    fn anything_but_one_bearer_token_is_refused() {
        for value in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer  a.b.c",
            "Bearer a.b.c d",
            "Basic dXNlcjpwYXNz",
            "Bearer a.b.c=",
            "Bearer a+b.c",
            "Bearera.b.c",
            " Bearer a.b.c",
        ] {
            assert_eq!(bearer_token(value), Err(TokenError::NotBearer), "{value:?}");
        }
    }

    #[test]
    fn empty_issuer_list_is_a_config_error() {
        let err = Verifier::new(&[], 60, &|_| None).unwrap_err();
        assert!(err.to_string().contains("at least one issuer"), "{err}");
    }

    #[test]
    fn fractional_dates_round_to_the_strict_side() {
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"exp": 100.9, "nbf": 50.1, "neg": -1, "s": "1"}"#).unwrap();
        assert_eq!(numeric_date(&claims, "exp", Rounding::Down), Ok(Some(100)));
        assert_eq!(numeric_date(&claims, "nbf", Rounding::Up), Ok(Some(51)));
        assert_eq!(
            numeric_date(&claims, "neg", Rounding::Down),
            Err(TokenError::InvalidClaim("neg"))
        );
        assert_eq!(
            numeric_date(&claims, "s", Rounding::Down),
            Err(TokenError::InvalidClaim("s"))
        );
        assert_eq!(numeric_date(&claims, "iat", Rounding::Up), Ok(None));
    }

    #[test]
    fn reasons_distinguish_expiry_from_other_failures() {
        assert_eq!(TokenError::Expired.reason(), "token_expired");
        assert_eq!(TokenError::NotYetValid.reason(), "token_not_yet_valid");
        assert_eq!(TokenError::BadSignature.reason(), "invalid_token");
    }
}
