//! Who is calling: JWT verification, claim extraction and the token cache.
//!
//! - [`Verifier`]: compact JWS bearer tokens checked against the configured
//!   issuers' keys (HS256/384/512, RS256/384/512, ES256; the algorithm is fixed
//!   by the key), then `iss`, `aud`, `exp`, `nbf`, `iat`.
//! - [`ClaimSettings`]: verified claims (from a token or from Envoy's
//!   jwt_authn metadata) to an [`Identity`] with effective roles.
//! - [`TokenCache`]: verified tokens by SHA-256, bounded, until `exp`.
//! - [`sign_hs`]: mints HMAC tokens for local development and tests.

mod cache;
mod claims;
mod keys;
mod verifier;

pub(crate) use cache::token_digest;
pub use cache::{TokenCache, DEFAULT_TOKEN_CACHE_CAPACITY};
pub use claims::{is_header_safe, ClaimPath, ClaimSettings, Identity, IdentityError};
pub(crate) use keys::resolve_secret;
pub use keys::{Algorithm, HmacAlgorithm, VerificationKey, MIN_RSA_BITS};
pub use verifier::{bearer_token, TokenError, VerifiedToken, Verifier, MAX_TOKEN_LEN};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Mint a compact JWS signed with HMAC: header `{"alg":…,"typ":"JWT"}` plus
/// `kid` when given, and `claims_json` used verbatim as the payload (so tests
/// can craft any payload, including malformed ones).
pub fn sign_hs(alg: HmacAlgorithm, key: &[u8], kid: Option<&str>, claims_json: &str) -> String {
    let mut header = serde_json::Map::new();
    header.insert("alg".into(), alg.algorithm().name().into());
    header.insert("typ".into(), "JWT".into());
    if let Some(kid) = kid {
        header.insert("kid".into(), kid.into());
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut token = URL_SAFE_NO_PAD.encode(header.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims_json.as_bytes(), &mut token);
    let tag = alg.tag(key, token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, &mut token);
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_hs_matches_the_rfc7515_a1_hs256_example() {
        // RFC 7515 appendix A.1: the header there is fixed text, so rebuild the
        // signature over the RFC's exact signing input with the same HMAC.
        let key = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let signing_input = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let tag = HmacAlgorithm::Hs256.tag(&key, signing_input.as_bytes());
        assert_eq!(
            URL_SAFE_NO_PAD.encode(tag),
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
    }

    #[test]
    fn sign_hs_puts_alg_and_kid_in_the_header() {
        let token = sign_hs(HmacAlgorithm::Hs384, &[7; 48], Some("k1"), r#"{"a":1}"#);
        let header = token.split('.').next().unwrap();
        let header = URL_SAFE_NO_PAD.decode(header).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["alg"], "HS384");
        assert_eq!(header["kid"], "k1");
        assert_eq!(token.split('.').count(), 3);
    }

    #[test]
    fn sign_hs_with_another_key_gives_another_signature() {
        let a = sign_hs(HmacAlgorithm::Hs256, &[1; 32], None, "{}");
        let b = sign_hs(HmacAlgorithm::Hs256, &[2; 32], None, "{}");
        assert_ne!(a, b);
        assert_eq!(a.rsplit('.').nth(1), b.rsplit('.').nth(1));
    }
}
