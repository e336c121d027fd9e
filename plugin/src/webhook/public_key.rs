//! Loading Lago's RSA public key from configuration.
//!
//! Lago serves its key as base64 of a PEM `PUBLIC KEY` document, with line
//! breaks; operators may also paste the PEM itself. Both forms are accepted,
//! nothing else: a PKCS#1 `RSA PUBLIC KEY`, a certificate, or a non-RSA key is
//! a configuration error rather than a silent fallback.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;

/// Smallest accepted modulus: 2048 bits (NIST SP 800-131A; Lago's own keys are 2048).
pub const MIN_RSA_BITS: usize = 2048;

const PEM_BEGIN_PREFIX: &str = "-----BEGIN ";
const PEM_BOUNDARY_SUFFIX: &str = "-----";
const SPKI_LABEL: &str = "PUBLIC KEY";

/// Why a configured public key was refused. Never carries the key text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    #[error("is neither a pem document nor base64 of one")]
    NotPemOrBase64,
    #[error("is a pem `{label}` document; a `PUBLIC KEY` (spki) document is required")]
    WrongPemLabel { label: String },
    #[error("pem document is malformed")]
    MalformedPem,
    #[error("is not an rsa subject public key info")]
    NotRsaSpki,
    #[error("rsa modulus has {bits} bits; at least {MIN_RSA_BITS} are required")]
    TooSmall { bits: usize },
}

/// Parses a PEM `PUBLIC KEY`, or base64 of one (whitespace anywhere ignored).
pub(crate) fn parse_lago_public_key(text: &str) -> Result<RsaPublicKey, PublicKeyError> {
    let trimmed = text.trim();
    let pem = if trimmed.starts_with(PEM_BEGIN_PREFIX) {
        trimmed.to_owned()
    } else {
        let compact: Vec<u8> = trimmed
            .bytes()
            .filter(|byte| !byte.is_ascii_whitespace())
            .collect();
        let decoded = STANDARD
            .decode(&compact)
            .map_err(|_| PublicKeyError::NotPemOrBase64)?;
        let decoded = String::from_utf8(decoded).map_err(|_| PublicKeyError::NotPemOrBase64)?;
        let decoded = decoded.trim();
        if !decoded.starts_with(PEM_BEGIN_PREFIX) {
            return Err(PublicKeyError::NotPemOrBase64);
        }
        decoded.to_owned()
    };
    let der = pem_document_der(&pem, SPKI_LABEL)?;
    let key = RsaPublicKey::from_public_key_der(&der).map_err(|_| PublicKeyError::NotRsaSpki)?;
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(PublicKeyError::TooSmall { bits });
    }
    Ok(key)
}

/// Extracts the DER bytes of a single PEM document labelled `label`. Line
/// lengths and line endings are not checked (keys pasted through YAML and
/// environment variables are often re-wrapped); anything around the document
/// other than whitespace is refused.
pub(crate) fn pem_document_der(pem: &str, label: &str) -> Result<Vec<u8>, PublicKeyError> {
    let after_begin = pem
        .strip_prefix(PEM_BEGIN_PREFIX)
        .ok_or(PublicKeyError::MalformedPem)?;
    let (found_label, rest) = after_begin
        .split_once(PEM_BOUNDARY_SUFFIX)
        .ok_or(PublicKeyError::MalformedPem)?;
    if found_label != label {
        let plausible_label = found_label.len() <= 64
            && found_label
                .bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b' ');
        if !plausible_label {
            return Err(PublicKeyError::MalformedPem);
        }
        return Err(PublicKeyError::WrongPemLabel {
            label: found_label.to_owned(),
        });
    }
    let end_boundary = format!("-----END {label}-----");
    let (encoded, after_end) = rest
        .split_once(end_boundary.as_str())
        .ok_or(PublicKeyError::MalformedPem)?;
    if !after_end.trim().is_empty() {
        return Err(PublicKeyError::MalformedPem);
    }
    let compact: Vec<u8> = encoded
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(PublicKeyError::MalformedPem);
    }
    STANDARD
        .decode(&compact)
        .map_err(|_| PublicKeyError::MalformedPem)
}
