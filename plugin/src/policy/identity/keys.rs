//! JSON Web Keys compiled into verification keys.
//!
//! The algorithm is a property of the key, fixed at configuration time: a
//! token's `alg` header only has to agree with it. That is what rules out
//! `alg: none` and HS/RS confusion (an HS256 token "signed" with an RSA
//! public key finds no HMAC key to be checked against).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts;
use rsa::{pkcs1v15, BigUint, RsaPublicKey};
use sha2::{Sha256, Sha384, Sha512};

use super::super::config::RawJwk;
use super::super::error::{ConfigError, KeyError};

/// Smallest RSA modulus accepted.
pub const MIN_RSA_BITS: usize = 2048;

/// A JWS algorithm the filter verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Hs256,
    Hs384,
    Hs512,
    Rs256,
    Rs384,
    Rs512,
    Es256,
}

impl Algorithm {
    /// The `alg` header value for this algorithm.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::Hs384 => "HS384",
            Algorithm::Hs512 => "HS512",
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Es256 => "ES256",
        }
    }

    /// Parse an `alg` value (case-sensitive, as RFC 7515 requires).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Some(match name {
            "HS256" => Algorithm::Hs256,
            "HS384" => Algorithm::Hs384,
            "HS512" => Algorithm::Hs512,
            "RS256" => Algorithm::Rs256,
            "RS384" => Algorithm::Rs384,
            "RS512" => Algorithm::Rs512,
            "ES256" => Algorithm::Es256,
            _ => return None,
        })
    }
}

/// An HMAC algorithm, for minting tokens with [`super::sign_hs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    Hs256,
    Hs384,
    Hs512,
}

impl HmacAlgorithm {
    pub fn algorithm(self) -> Algorithm {
        match self {
            HmacAlgorithm::Hs256 => Algorithm::Hs256,
            HmacAlgorithm::Hs384 => Algorithm::Hs384,
            HmacAlgorithm::Hs512 => Algorithm::Hs512,
        }
    }

    /// RFC 7518 §3.2: the key must be at least as long as the hash output.
    pub fn min_key_bytes(self) -> usize {
        match self {
            HmacAlgorithm::Hs256 => 32,
            HmacAlgorithm::Hs384 => 48,
            HmacAlgorithm::Hs512 => 64,
        }
    }

    /// The HMAC of `message`.
    pub(crate) fn tag(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        // `new_from_slice` cannot fail for HMAC (any key length is valid);
        // should it ever, an empty tag verifies nothing.
        match self {
            HmacAlgorithm::Hs256 => Hmac::<Sha256>::new_from_slice(key)
                .map(|mac| mac.chain_update(message).finalize().into_bytes().to_vec()),
            HmacAlgorithm::Hs384 => Hmac::<Sha384>::new_from_slice(key)
                .map(|mac| mac.chain_update(message).finalize().into_bytes().to_vec()),
            HmacAlgorithm::Hs512 => Hmac::<Sha512>::new_from_slice(key)
                .map(|mac| mac.chain_update(message).finalize().into_bytes().to_vec()),
        }
        .unwrap_or_default()
    }

    /// Constant-time check of `tag` against the HMAC of `message`.
    fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        match self {
            HmacAlgorithm::Hs256 => Hmac::<Sha256>::new_from_slice(key)
                .is_ok_and(|mac| mac.chain_update(message).verify_slice(tag).is_ok()),
            HmacAlgorithm::Hs384 => Hmac::<Sha384>::new_from_slice(key)
                .is_ok_and(|mac| mac.chain_update(message).verify_slice(tag).is_ok()),
            HmacAlgorithm::Hs512 => Hmac::<Sha512>::new_from_slice(key)
                .is_ok_and(|mac| mac.chain_update(message).verify_slice(tag).is_ok()),
        }
    }
}

/// An HMAC secret; never printed.
#[derive(Clone)]
struct HmacSecret(Vec<u8>);

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacSecret({} bytes, redacted)", self.0.len())
    }
}

/// Verifying keys are built once per configuration, not per request.
#[derive(Debug, Clone)]
enum KeyMaterial {
    Hmac(HmacAlgorithm, HmacSecret),
    Rs256(Box<pkcs1v15::VerifyingKey<Sha256>>),
    Rs384(Box<pkcs1v15::VerifyingKey<Sha384>>),
    Rs512(Box<pkcs1v15::VerifyingKey<Sha512>>),
    Es256(p256::ecdsa::VerifyingKey),
}

/// One compiled signature verification key.
#[derive(Debug, Clone)]
pub struct VerificationKey {
    kid: Option<String>,
    algorithm: Algorithm,
    material: KeyMaterial,
}

impl VerificationKey {
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Check a JWS signature over `signing_input` (`header.payload`).
    pub(crate) fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            KeyMaterial::Hmac(alg, secret) => alg.verify(&secret.0, signing_input, signature),
            KeyMaterial::Rs256(key) => {
                rsa_signature(signature).is_some_and(|sig| key.verify(signing_input, &sig).is_ok())
            }
            KeyMaterial::Rs384(key) => {
                rsa_signature(signature).is_some_and(|sig| key.verify(signing_input, &sig).is_ok())
            }
            KeyMaterial::Rs512(key) => {
                rsa_signature(signature).is_some_and(|sig| key.verify(signing_input, &sig).is_ok())
            }
            KeyMaterial::Es256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(signing_input, &sig).is_ok()),
        }
    }
}

fn rsa_signature(bytes: &[u8]) -> Option<pkcs1v15::Signature> {
    pkcs1v15::Signature::try_from(bytes).ok()
}

/// Resolve a secret given inline (`field`) or by environment variable
/// (`field_env`): exactly one may be set. `Ok(None)` when neither is.
pub(crate) fn resolve_secret(
    field: &str,
    inline: Option<&str>,
    env_name: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    match (inline, env_name) {
        (Some(_), Some(_)) => Err(ConfigError::SecretSource {
            field: field.to_owned(),
        }),
        (Some(value), None) => Ok(Some(value.to_owned())),
        (None, Some(var)) => match env(var) {
            Some(value) if !value.is_empty() => Ok(Some(value)),
            _ => Err(ConfigError::MissingEnv {
                field: format!("{field}_env"),
                var: var.to_owned(),
            }),
        },
        (None, None) => Ok(None),
    }
}

fn decode_b64(field: &'static str, value: &str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| KeyError::BadBase64(field))
}

fn required<'a>(field: &'static str, value: &'a Option<String>) -> Result<&'a str, KeyError> {
    value.as_deref().ok_or(KeyError::MissingField(field))
}

fn forbid(field: &'static str, value: &Option<String>) -> Result<(), KeyError> {
    match value {
        Some(_) => Err(KeyError::UnexpectedField(field)),
        None => Ok(()),
    }
}

/// Compile one JWK of issuer `issuer` (`label` names it in errors).
pub(crate) fn compile_jwk(
    issuer: &str,
    label: &str,
    raw: &RawJwk,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<VerificationKey, ConfigError> {
    let key_error = |problem| ConfigError::Key {
        issuer: issuer.to_owned(),
        key: label.to_owned(),
        problem,
    };
    let RawJwk {
        kty,
        kid,
        alg,
        key_use,
        k,
        k_env,
        n,
        e,
        crv,
        x,
        y,
        // Certificate fields are informational only; the key is n/e or x/y.
        x5c: _,
        x5t: _,
        x5t_s256: _,
    } = raw;
    if let Some(key_use) = key_use {
        if key_use != "sig" {
            return Err(key_error(KeyError::NotSignatureKey(key_use.clone())));
        }
    }
    let mismatch = |alg: &str| KeyError::AlgorithmMismatch {
        kty: kty.clone(),
        alg: alg.to_owned(),
    };
    let (algorithm, material) = match kty.as_str() {
        "oct" => {
            let hmac_alg = match alg.as_deref() {
                None => return Err(key_error(KeyError::MissingAlgorithm)),
                Some("HS256") => HmacAlgorithm::Hs256,
                Some("HS384") => HmacAlgorithm::Hs384,
                Some("HS512") => HmacAlgorithm::Hs512,
                Some(other) => return Err(key_error(mismatch(other))),
            };
            for (field, value) in [("n", n), ("e", e), ("crv", crv), ("x", x), ("y", y)] {
                forbid(field, value).map_err(key_error)?;
            }
            let encoded = resolve_secret("k", k.as_deref(), k_env.as_deref(), env)?
                .ok_or_else(|| key_error(KeyError::MissingField("k")))?;
            let secret = decode_b64("k", encoded.trim()).map_err(key_error)?;
            if secret.len() < hmac_alg.min_key_bytes() {
                return Err(key_error(KeyError::HmacKeyTooShort {
                    alg: hmac_alg.algorithm().name(),
                    bytes: secret.len(),
                    min: hmac_alg.min_key_bytes(),
                }));
            }
            (
                hmac_alg.algorithm(),
                KeyMaterial::Hmac(hmac_alg, HmacSecret(secret)),
            )
        }
        "RSA" => {
            let algorithm = match alg.as_deref() {
                None | Some("RS256") => Algorithm::Rs256,
                Some("RS384") => Algorithm::Rs384,
                Some("RS512") => Algorithm::Rs512,
                Some(other) => return Err(key_error(mismatch(other))),
            };
            for (field, value) in [("k", k), ("k_env", k_env), ("crv", crv), ("x", x), ("y", y)] {
                forbid(field, value).map_err(key_error)?;
            }
            let modulus =
                decode_b64("n", required("n", n).map_err(key_error)?).map_err(key_error)?;
            let exponent =
                decode_b64("e", required("e", e).map_err(key_error)?).map_err(key_error)?;
            let key = RsaPublicKey::new(
                BigUint::from_bytes_be(&modulus),
                BigUint::from_bytes_be(&exponent),
            )
            .map_err(|err| key_error(KeyError::InvalidRsa(err.to_string())))?;
            let bits = key.n().bits();
            if bits < MIN_RSA_BITS {
                return Err(key_error(KeyError::RsaTooSmall { bits }));
            }
            let material = match algorithm {
                Algorithm::Rs384 => KeyMaterial::Rs384(Box::new(pkcs1v15::VerifyingKey::new(key))),
                Algorithm::Rs512 => KeyMaterial::Rs512(Box::new(pkcs1v15::VerifyingKey::new(key))),
                _ => KeyMaterial::Rs256(Box::new(pkcs1v15::VerifyingKey::new(key))),
            };
            (algorithm, material)
        }
        "EC" => {
            match alg.as_deref() {
                None | Some("ES256") => {}
                Some(other) => return Err(key_error(mismatch(other))),
            }
            for (field, value) in [("k", k), ("k_env", k_env), ("n", n), ("e", e)] {
                forbid(field, value).map_err(key_error)?;
            }
            let curve = required("crv", crv).map_err(key_error)?;
            if curve != "P-256" {
                return Err(key_error(KeyError::WrongCurve(curve.to_owned())));
            }
            let x = decode_b64("x", required("x", x).map_err(key_error)?).map_err(key_error)?;
            let y = decode_b64("y", required("y", y).map_err(key_error)?).map_err(key_error)?;
            let (Ok(x), Ok(y)) = (<[u8; 32]>::try_from(x), <[u8; 32]>::try_from(y)) else {
                return Err(key_error(KeyError::InvalidEcPoint));
            };
            let point = p256::EncodedPoint::from_affine_coordinates(
                &p256::FieldBytes::from(x),
                &p256::FieldBytes::from(y),
                false,
            );
            let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                .map_err(|_| key_error(KeyError::InvalidEcPoint))?;
            (Algorithm::Es256, KeyMaterial::Es256(key))
        }
        other => return Err(key_error(KeyError::UnsupportedKeyType(other.to_owned()))),
    };
    Ok(VerificationKey {
        kid: kid.clone(),
        algorithm,
        material,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_unknown_names_are_refused() {
        for alg in [
            Algorithm::Hs256,
            Algorithm::Hs384,
            Algorithm::Hs512,
            Algorithm::Rs256,
            Algorithm::Rs384,
            Algorithm::Rs512,
            Algorithm::Es256,
        ] {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        for name in ["none", "hs256", "PS256", "ES384", "EdDSA", ""] {
            assert_eq!(Algorithm::from_name(name), None, "{name}");
        }
    }

    #[test]
    fn hmac_minimum_key_sizes_follow_rfc7518() {
        assert_eq!(HmacAlgorithm::Hs256.min_key_bytes(), 32);
        assert_eq!(HmacAlgorithm::Hs384.min_key_bytes(), 48);
        assert_eq!(HmacAlgorithm::Hs512.min_key_bytes(), 64);
    }

    #[test]
    fn hmac_verification_refuses_a_truncated_tag() {
        let tag = HmacAlgorithm::Hs256.tag(b"key", b"message");
        assert!(HmacAlgorithm::Hs256.verify(b"key", b"message", &tag));
        assert!(!HmacAlgorithm::Hs256.verify(b"key", b"message", &tag[..16]));
        assert!(!HmacAlgorithm::Hs256.verify(b"key", b"other", &tag));
    }

    #[test]
    fn hmac_secret_is_never_printed() {
        let secret = HmacSecret(b"super-secret-value".to_vec());
        let printed = format!("{secret:?}");
        assert!(!printed.contains("super"), "{printed}");
    }

    #[test]
    fn resolve_secret_needs_exactly_one_source() {
        let env = |name: &str| (name == "SET").then(|| "v".to_owned());
        assert_eq!(
            resolve_secret("k", Some("a"), None, &env).unwrap(),
            Some("a".into())
        );
        assert_eq!(
            resolve_secret("k", None, Some("SET"), &env).unwrap(),
            Some("v".into())
        );
        assert_eq!(resolve_secret("k", None, None, &env).unwrap(), None);
        assert!(resolve_secret("k", Some("a"), Some("SET"), &env).is_err());
        assert!(resolve_secret("k", None, Some("UNSET"), &env).is_err());
    }
}
