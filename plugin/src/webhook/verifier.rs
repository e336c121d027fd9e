//! The compiled verifier and its two request phases: headers, then body.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::jwt::{parse_lago_token, UnverifiedLagoToken};

/// Length of an HMAC-SHA256 digest.
const HMAC_LEN: usize = 32;
/// Standard base64 of 32 bytes, with padding.
const HMAC_SIGNATURE_CHARS: usize = 44;
/// Reported in [`Verified::key_id`] for a JWT delivery.
pub const JWT_KEY_ID: &str = "jwt";

/// The value of `X-Lago-Signature-Algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// `hmac`: base64 HMAC-SHA256 of the raw body.
    Hmac,
    /// `jwt`: RS256 token carrying the raw body in its `data` claim.
    Jwt,
}

impl SignatureAlgorithm {
    /// Exact, case-sensitive match of the header or configuration value, as Lago sends it.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "hmac" => Some(Self::Hmac),
            "jwt" => Some(Self::Jwt),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hmac => "hmac",
            Self::Jwt => "jwt",
        }
    }

    fn fingerprint_tag(self) -> u8 {
        match self {
            Self::Hmac => 1,
            Self::Jwt => 2,
        }
    }
}

/// A secret that never reaches `Debug` output.
pub(crate) struct Secret(Vec<u8>);

impl Secret {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

#[derive(Debug)]
pub(crate) struct HmacKey {
    pub(crate) id: String,
    pub(crate) secret: Secret,
}

#[derive(Debug)]
pub(crate) struct JwtSettings {
    pub(crate) issuer: String,
    pub(crate) key: RsaPublicKey,
}

/// A checked `webhooks.<name>` entry for the Lago provider.
#[derive(Debug)]
pub struct LagoVerifier {
    pub(crate) name: String,
    pub(crate) algorithms: Vec<SignatureAlgorithm>,
    /// Empty unless `hmac` is an accepted algorithm.
    pub(crate) hmac_keys: Vec<HmacKey>,
    /// Present exactly when `jwt` is an accepted algorithm.
    pub(crate) jwt: Option<JwtSettings>,
    pub(crate) max_body_bytes: u64,
    pub(crate) replay_window_seconds: u64,
}

/// The request headers the verifier reads (values as received, not trimmed).
#[derive(Clone, Copy, Default)]
pub struct WebhookHeaders<'a> {
    /// `X-Lago-Signature`.
    pub signature: Option<&'a str>,
    /// `X-Lago-Signature-Algorithm`.
    pub algorithm: Option<&'a str>,
    /// `X-Lago-Unique-Key`: for the audit trail only; it is not signed, so
    /// verification and replay detection never rely on it.
    pub unique_key: Option<&'a str>,
    /// `Content-Length`, when the request has one.
    pub content_length: Option<u64>,
}

impl fmt::Debug for WebhookHeaders<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("WebhookHeaders")
            .field("signature", &self.signature.map(|_| "<redacted>"))
            .field("algorithm", &self.algorithm)
            .field("unique_key", &self.unique_key)
            .field("content_length", &self.content_length)
            .finish()
    }
}

/// A delivery whose headers passed [`LagoVerifier::check_headers`]; holds the
/// decoded signature material (never a secret) until the body is complete.
pub struct PendingDelivery {
    material: SignatureMaterial,
}

enum SignatureMaterial {
    Hmac([u8; HMAC_LEN]),
    Jwt(Box<UnverifiedLagoToken>),
}

impl PendingDelivery {
    pub fn algorithm(&self) -> SignatureAlgorithm {
        match self.material {
            SignatureMaterial::Hmac(_) => SignatureAlgorithm::Hmac,
            SignatureMaterial::Jwt(_) => SignatureAlgorithm::Jwt,
        }
    }
}

impl fmt::Debug for PendingDelivery {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PendingDelivery")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// A delivery whose signature matched its complete body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Id of the HMAC key that matched, or `"jwt"`.
    pub key_id: String,
    /// Replay fingerprint: SHA-256 over the webhook name, the algorithm and
    /// the body's SHA-256. `X-Lago-Unique-Key` is deliberately not part of
    /// it: that header is not signed, so a replayed body with a fresh unique
    /// key must still be recognised.
    pub fingerprint: [u8; 32],
    /// SHA-256 of the body (computed once, for the fingerprint and the audit record).
    pub body_sha256: [u8; 32],
}

/// Why a delivery is refused. The reply is `{"error": code}` with `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    #[error("the delivery has no signature")]
    MissingSignature,
    #[error("the signature algorithm is missing or not accepted")]
    UnsupportedAlgorithm,
    #[error("the signature does not match the delivery")]
    InvalidSignature,
    #[error("the body exceeds the configured limit")]
    PayloadTooLarge,
}

impl Rejection {
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingSignature | Self::UnsupportedAlgorithm | Self::InvalidSignature => 401,
            Self::PayloadTooLarge => 413,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::InvalidSignature => "invalid_signature",
            Self::PayloadTooLarge => "payload_too_large",
        }
    }
}

impl LagoVerifier {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    pub fn replay_window_seconds(&self) -> u64 {
        self.replay_window_seconds
    }

    /// Accepted algorithms, in configuration order.
    pub fn algorithms(&self) -> &[SignatureAlgorithm] {
        &self.algorithms
    }

    /// Configured HMAC key ids, in the order they are tried.
    pub fn hmac_key_ids(&self) -> impl Iterator<Item = &str> {
        self.hmac_keys.iter().map(|key| key.id.as_str())
    }

    /// Checks that need no body byte: signature present, algorithm accepted,
    /// declared length within the limit, signature well formed (HMAC: 44
    /// characters of standard padded base64 decoding to 32 bytes; JWT: an
    /// RS256 token with `iss` and `data` claims and a signature the size of
    /// the pinned key).
    pub fn check_headers(
        &self,
        headers: &WebhookHeaders<'_>,
    ) -> Result<PendingDelivery, Rejection> {
        let signature = match headers.signature {
            Some(signature) if !signature.is_empty() => signature,
            _ => return Err(Rejection::MissingSignature),
        };
        let algorithm = headers
            .algorithm
            .and_then(SignatureAlgorithm::parse)
            .filter(|algorithm| self.algorithms.contains(algorithm))
            .ok_or(Rejection::UnsupportedAlgorithm)?;
        if headers
            .content_length
            .is_some_and(|length| length > self.max_body_bytes)
        {
            return Err(Rejection::PayloadTooLarge);
        }
        let material = match algorithm {
            SignatureAlgorithm::Hmac => SignatureMaterial::Hmac(decode_hmac_signature(signature)?),
            SignatureAlgorithm::Jwt => {
                let jwt = self.jwt.as_ref().ok_or(Rejection::UnsupportedAlgorithm)?;
                let token = parse_lago_token(signature, jwt.key.size())
                    .ok_or(Rejection::InvalidSignature)?;
                SignatureMaterial::Jwt(Box::new(token))
            }
        };
        Ok(PendingDelivery { material })
    }

    /// Verifies the complete raw body against the pending signature. Every
    /// configured HMAC key is tried (rotation) with constant-time comparison;
    /// the first matching id is reported.
    pub fn verify(&self, pending: &PendingDelivery, body: &[u8]) -> Result<Verified, Rejection> {
        if u64::try_from(body.len()).map_or(true, |length| length > self.max_body_bytes) {
            return Err(Rejection::PayloadTooLarge);
        }
        let key_id = match &pending.material {
            SignatureMaterial::Hmac(expected) => self.matching_hmac_key(expected, body)?,
            SignatureMaterial::Jwt(token) => {
                let jwt = self.jwt.as_ref().ok_or(Rejection::UnsupportedAlgorithm)?;
                if !token.verify(&jwt.key, &jwt.issuer, body) {
                    return Err(Rejection::InvalidSignature);
                }
                JWT_KEY_ID.to_owned()
            }
        };
        let body_sha256: [u8; 32] = Sha256::digest(body).into();
        Ok(Verified {
            key_id,
            fingerprint: replay_fingerprint(&self.name, pending.algorithm(), &body_sha256),
            body_sha256,
        })
    }

    fn matching_hmac_key(
        &self,
        expected: &[u8; HMAC_LEN],
        body: &[u8],
    ) -> Result<String, Rejection> {
        // Each comparison is constant-time. The search stops at the first
        // key that matches: which key matched is no secret (the upstream is
        // told in `x-avb-webhook-key`), and during a rotation most deliveries
        // then cost one pass over the body instead of one per key.
        self.hmac_keys
            .iter()
            .find(|key| {
                hmac_sha256(&key.secret.0, body)
                    .is_some_and(|computed| bool::from(computed.ct_eq(expected)))
            })
            .map(|key| key.id.clone())
            .ok_or(Rejection::InvalidSignature)
    }
}

fn decode_hmac_signature(signature: &str) -> Result<[u8; HMAC_LEN], Rejection> {
    if signature.len() != HMAC_SIGNATURE_CHARS {
        return Err(Rejection::InvalidSignature);
    }
    let decoded = STANDARD
        .decode(signature)
        .map_err(|_| Rejection::InvalidSignature)?;
    <[u8; HMAC_LEN]>::try_from(decoded.as_slice()).map_err(|_| Rejection::InvalidSignature)
}

/// `None` cannot happen (HMAC takes keys of any length); it is still
/// handled as "no match" rather than unwrapped, because this is a security path.
fn hmac_sha256(secret: &[u8], body: &[u8]) -> Option<[u8; HMAC_LEN]> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    mac.update(body);
    Some(mac.finalize().into_bytes().into())
}

/// `base64(HMAC-SHA256(secret, body))`, standard alphabet with padding: what
/// Lago sends in `X-Lago-Signature` (test and development helper).
/// (An empty string, which never verifies, if the MAC could not be built.)
pub fn sign_hmac(secret: &[u8], body: &[u8]) -> String {
    hmac_sha256(secret, body)
        .map(|mac| STANDARD.encode(mac))
        .unwrap_or_default()
}

fn replay_fingerprint(
    webhook: &str,
    algorithm: SignatureAlgorithm,
    body_sha256: &[u8; 32],
) -> [u8; 32] {
    let mut fingerprint = Sha256::new();
    fingerprint.update(b"avb-edge webhook replay v1\0");
    fingerprint.update((webhook.len() as u64).to_be_bytes());
    fingerprint.update(webhook.as_bytes());
    fingerprint.update([algorithm.fingerprint_tag()]);
    fingerprint.update(body_sha256);
    fingerprint.finalize().into()
}
