//! Lago's RS256 webhook tokens: `{"alg":"RS256"}` over claims `data` (the raw
//! body as a JSON string) and `iss` (the Lago API URL), with no `exp`.
//!
//! Parsing happens as soon as the signature header is read, so malformed
//! tokens are refused before any body byte is buffered; the RSA check and the
//! comparisons with the configured issuer and the body happen once the body
//! is complete.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::public_key::pem_document_der;
use crate::strict_json::parse_strict;

const REQUIRED_ALG: &str = "RS256";

/// A structurally valid Lago token whose signature is not checked yet.
pub(crate) struct UnverifiedLagoToken {
    signing_input_sha256: [u8; 32],
    signature: Vec<u8>,
    issuer: String,
    data: Vec<u8>,
}

/// Splits and decodes a compact JWS; `None` for anything that is not an
/// RS256 token with string `iss` and `data` claims and a signature exactly
/// `signature_len` bytes long (the pinned key's modulus size).
pub(crate) fn parse_lago_token(token: &str, signature_len: usize) -> Option<UnverifiedLagoToken> {
    let mut segments = token.split('.');
    let (header_b64, claims_b64, signature_b64) =
        (segments.next()?, segments.next()?, segments.next()?);
    if segments.next().is_some() {
        return None;
    }
    let header = parse_strict(&URL_SAFE_NO_PAD.decode(header_b64).ok()?).ok()?;
    let header = header.as_object()?;
    if header.get("alg").and_then(Value::as_str) != Some(REQUIRED_ALG) {
        return None;
    }
    // RFC 7515 section 4.1.11: extensions marked critical that we do not
    // understand (we understand none) make the token invalid.
    if header.contains_key("crit") {
        return None;
    }
    let claims = parse_strict(&URL_SAFE_NO_PAD.decode(claims_b64).ok()?).ok()?;
    let claims = claims.as_object()?;
    let issuer = claims.get("iss")?.as_str()?.to_owned();
    let data = claims.get("data")?.as_str()?.as_bytes().to_vec();
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).ok()?;
    if signature.len() != signature_len {
        return None;
    }
    let signing_input_len = header_b64.len() + 1 + claims_b64.len();
    let signing_input = token.get(..signing_input_len)?;
    Some(UnverifiedLagoToken {
        signing_input_sha256: Sha256::digest(signing_input.as_bytes()).into(),
        signature,
        issuer,
        data,
    })
}

impl UnverifiedLagoToken {
    /// True when the pinned key signed the token, `iss` is the configured
    /// issuer and `data` equals `body` byte for byte.
    pub(crate) fn verify(&self, key: &RsaPublicKey, issuer: &str, body: &[u8]) -> bool {
        let signed_by_key = key
            .verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &self.signing_input_sha256,
                &self.signature,
            )
            .is_ok();
        let issuer_matches: bool = self.issuer.as_bytes().ct_eq(issuer.as_bytes()).into();
        let data_matches: bool = self.data.ct_eq(body).into();
        signed_by_key & issuer_matches & data_matches
    }
}

/// Why [`sign_lago_jwt`] could not produce a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtSigningError {
    #[error("private key is not a pem `PRIVATE KEY` (pkcs#8) rsa key")]
    InvalidPrivateKey,
    #[error("body is not utf-8, so it cannot be a jwt string claim")]
    BodyNotUtf8,
    #[error("rsa signing failed")]
    Signing,
}

/// Signs `body` the way Lago does (test and development helper): RS256 over
/// `{"alg":"RS256"}` and claims `{"data":<body>,"iss":<issuer>}`.
/// RSASSA-PKCS1-v1_5 is deterministic, so the same inputs give the same token.
pub fn sign_lago_jwt(
    private_key_pem: &str,
    issuer: &str,
    body: &[u8],
) -> Result<String, JwtSigningError> {
    let der = pem_document_der(private_key_pem.trim(), "PRIVATE KEY")
        .map_err(|_| JwtSigningError::InvalidPrivateKey)?;
    let key =
        RsaPrivateKey::from_pkcs8_der(&der).map_err(|_| JwtSigningError::InvalidPrivateKey)?;
    let data = std::str::from_utf8(body).map_err(|_| JwtSigningError::BodyNotUtf8)?;
    let mut claims = serde_json::Map::new();
    claims.insert("data".to_owned(), Value::String(data.to_owned()));
    claims.insert("iss".to_owned(), Value::String(issuer.to_owned()));
    let claims = Value::Object(claims).to_string();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
        URL_SAFE_NO_PAD.encode(claims.as_bytes())
    );
    let digest = Sha256::digest(signing_input.as_bytes());
    let signature = key
        .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
        .map_err(|_| JwtSigningError::Signing)?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}
