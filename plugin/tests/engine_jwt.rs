//! JWT verification against known-answer tokens signed by OpenSSL
//! (fixtures/jwt, see its README), and every way a token must be refused.

// A test crate: helpers outside #[test] fns may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use avb_edge::policy::config::RawIssuer;
use avb_edge::policy::identity::{
    bearer_token, sign_hs, Algorithm, HmacAlgorithm, TokenError, Verifier, MAX_TOKEN_LEN,
};
use avb_edge::policy::ConfigError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const ISSUER: &str = "https://id.agentvoicebox.example";
/// Inside every fixture token's validity window.
const NOW: u64 = 1_700_000_100;
const EXP: u64 = 1_700_003_600;
const NBF: u64 = 1_700_000_000;

const ALGORITHMS: [(&str, Algorithm, &str); 7] = [
    ("HS256", Algorithm::Hs256, "hs256-1"),
    ("HS384", Algorithm::Hs384, "hs384-1"),
    ("HS512", Algorithm::Hs512, "hs512-1"),
    ("RS256", Algorithm::Rs256, "rs256-1"),
    ("RS384", Algorithm::Rs384, "rs384-1"),
    ("RS512", Algorithm::Rs512, "rs512-1"),
    ("ES256", Algorithm::Es256, "es256-1"),
];

fn jwks() -> Value {
    serde_json::from_str(include_str!("fixtures/jwt/jwks.json")).unwrap()
}

fn fixture_token(alg: &str) -> String {
    let tokens: Value = serde_json::from_str(include_str!("fixtures/jwt/tokens.json")).unwrap();
    tokens["tokens"][alg].as_str().unwrap().to_owned()
}

fn hs256_secret() -> Vec<u8> {
    include_bytes!("fixtures/jwt/hs-32.key").to_vec()
}

fn verifier_with(issuer: &str, audiences: &[&str], jwks: Value) -> Verifier {
    let raw: RawIssuer =
        serde_json::from_value(json!({"issuer": issuer, "audiences": audiences, "jwks": jwks}))
            .unwrap();
    Verifier::new(&[raw], 60, &|_| None).unwrap()
}

fn verifier() -> Verifier {
    verifier_with(ISSUER, &["avb-api"], jwks())
}

/// Only the RSA and EC keys of the fixture JWKS.
fn asymmetric_jwks() -> Value {
    let keys: Vec<Value> = jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kty"] != "oct")
        .cloned()
        .collect();
    json!({ "keys": keys })
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// An HS256 token over arbitrary header and claims text, signed with the
/// fixture HS256 secret (for headers `sign_hs` would never produce).
fn hs256_raw(header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(&hs256_secret()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn claims_with(changes: Value) -> String {
    let mut claims = json!({
        "iss": ISSUER, "aud": "avb-api", "sub": "u1",
        "iat": NBF, "exp": EXP,
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims.to_string()
}

fn hs256(claims: &str) -> String {
    sign_hs(
        HmacAlgorithm::Hs256,
        &hs256_secret(),
        Some("hs256-1"),
        claims,
    )
}

#[test]
fn openssl_signed_token_verifies_for_every_algorithm() {
    let verifier = verifier();
    for (alg, algorithm, kid) in ALGORITHMS {
        let verified = verifier
            .verify(&fixture_token(alg), NOW)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.algorithm, algorithm, "{alg}");
        assert_eq!(verified.key_id.as_deref(), Some(kid), "{alg}");
        assert_eq!(verified.claims["sub"], "kat-user", "{alg}");
        assert_eq!(verified.issuer, ISSUER);
        assert_eq!(verified.expires_at, EXP);
        assert_eq!(verified.not_before, Some(NBF));
    }
}

#[test]
fn tampered_claims_are_rejected_for_every_algorithm() {
    let verifier = verifier();
    let forged_claims = b64(json!({"iss": ISSUER, "aud": "avb-api", "sub": "kat-user",
               "realm_access": {"roles": ["ADMIN"]}, "exp": EXP})
    .to_string()
    .as_bytes());
    for (alg, _, _) in ALGORITHMS {
        let token = fixture_token(alg);
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(
            verifier.verify(&forged, NOW),
            Err(TokenError::BadSignature),
            "{alg}"
        );
    }
}

#[test]
fn tampered_signature_is_rejected_for_every_algorithm() {
    let verifier = verifier();
    for (alg, _, _) in ALGORITHMS {
        let token = fixture_token(alg);
        let at = token.rfind('.').unwrap() + 5;
        let mut bytes = token.into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            verifier.verify(&tampered, NOW),
            Err(TokenError::BadSignature),
            "{alg}"
        );
    }
}

#[test]
fn expired_token_is_rejected_after_the_skew() {
    let verifier = verifier();
    for (alg, _, _) in ALGORITHMS {
        let token = fixture_token(alg);
        assert!(verifier.verify(&token, EXP + 59).is_ok(), "{alg}");
        assert_eq!(
            verifier.verify(&token, EXP + 60),
            Err(TokenError::Expired),
            "{alg}"
        );
    }
}

#[test]
fn token_before_nbf_is_rejected_beyond_the_skew() {
    let verifier = verifier();
    let token = fixture_token("ES256");
    assert!(verifier.verify(&token, NBF - 60).is_ok());
    assert_eq!(
        verifier.verify(&token, NBF - 61),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn token_issued_in_the_future_is_rejected() {
    let token = hs256(&claims_with(json!({"iat": NOW + 61})));
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(TokenError::IssuedInFuture)
    );
    let within_skew = hs256(&claims_with(json!({"iat": NOW + 60})));
    assert!(verifier().verify(&within_skew, NOW).is_ok());
}

#[test]
fn token_of_another_issuer_is_rejected() {
    let verifier = verifier_with("https://other.example", &["avb-api"], jwks());
    for (alg, _, _) in ALGORITHMS {
        assert_eq!(
            verifier.verify(&fixture_token(alg), NOW),
            Err(TokenError::UnknownIssuer),
            "{alg}"
        );
    }
    let no_iss = hs256(&claims_with(json!({"iss": null})));
    assert_eq!(
        self::verifier().verify(&no_iss, NOW),
        Err(TokenError::MissingClaim("iss"))
    );
}

#[test]
fn token_for_another_audience_is_rejected() {
    let verifier = verifier_with(ISSUER, &["billing-api"], jwks());
    for (alg, _, _) in ALGORITHMS {
        assert_eq!(
            verifier.verify(&fixture_token(alg), NOW),
            Err(TokenError::WrongAudience),
            "{alg}"
        );
    }
    let v = self::verifier();
    assert_eq!(
        v.verify(&hs256(&claims_with(json!({"aud": "billing-api"}))), NOW),
        Err(TokenError::WrongAudience)
    );
    assert_eq!(
        v.verify(&hs256(&claims_with(json!({"aud": null}))), NOW),
        Err(TokenError::MissingClaim("aud"))
    );
    assert_eq!(
        v.verify(&hs256(&claims_with(json!({"aud": ["avb-api", 7]}))), NOW),
        Err(TokenError::InvalidClaim("aud"))
    );
    assert!(v
        .verify(&hs256(&claims_with(json!({"aud": ["x", "avb-api"]}))), NOW)
        .is_ok());
}

#[test]
fn unknown_kid_is_rejected() {
    let mut renamed = jwks();
    for key in renamed["keys"].as_array_mut().unwrap() {
        let kid = key["kid"].as_str().unwrap().to_owned();
        key["kid"] = Value::String(format!("{kid}-rotated"));
    }
    let verifier = verifier_with(ISSUER, &["avb-api"], renamed);
    for (alg, _, _) in ALGORITHMS {
        assert_eq!(
            verifier.verify(&fixture_token(alg), NOW),
            Err(TokenError::UnknownKeyId),
            "{alg}"
        );
    }
}

#[test]
fn token_without_kid_is_tried_against_keys_of_its_algorithm() {
    let claims = claims_with(json!({}));
    let token = sign_hs(HmacAlgorithm::Hs256, &hs256_secret(), None, &claims);
    let verified = verifier().verify(&token, NOW).unwrap();
    assert_eq!(verified.key_id.as_deref(), Some("hs256-1"));
    let wrong_secret = sign_hs(HmacAlgorithm::Hs256, &[9; 32], None, &claims);
    assert_eq!(
        verifier().verify(&wrong_secret, NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn alg_none_is_rejected() {
    let claims = b64(claims_with(json!({})).as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
            let err = verifier().verify(&token, NOW).unwrap_err();
            assert!(
                matches!(err, TokenError::AlgorithmNone | TokenError::Malformed(_)),
                "{alg}: {err:?}"
            );
        }
        assert_eq!(
            verifier().verify(&format!("{header}.{claims}."), NOW),
            Err(TokenError::AlgorithmNone)
        );
    }
}

#[test]
fn hs256_token_signed_with_rsa_public_key_is_rejected() {
    let public_pem = include_bytes!("fixtures/jwt/rsa-2048.pub.pem");
    let claims = claims_with(json!({}));
    // Naming the RSA key: its algorithm is fixed to RS256.
    let with_kid = sign_hs(HmacAlgorithm::Hs256, public_pem, Some("rs256-1"), &claims);
    assert_eq!(
        verifier().verify(&with_kid, NOW),
        Err(TokenError::AlgorithmMismatch)
    );
    // Without a kid: no HMAC key exists when only asymmetric keys are configured.
    let without_kid = sign_hs(HmacAlgorithm::Hs256, public_pem, None, &claims);
    let asymmetric_only = verifier_with(ISSUER, &["avb-api"], asymmetric_jwks());
    assert_eq!(
        asymmetric_only.verify(&without_kid, NOW),
        Err(TokenError::NoMatchingKey)
    );
    // And with HMAC keys configured, the public key is not one of them.
    assert_eq!(
        verifier().verify(&without_kid, NOW),
        Err(TokenError::BadSignature)
    );
    // The same with the raw modulus bytes as the HMAC key.
    let n = URL_SAFE_NO_PAD
        .decode(jwks()["keys"][3]["n"].as_str().unwrap())
        .unwrap();
    let with_modulus = sign_hs(HmacAlgorithm::Hs256, &n, Some("rs256-1"), &claims);
    assert_eq!(
        verifier().verify(&with_modulus, NOW),
        Err(TokenError::AlgorithmMismatch)
    );
}

#[test]
fn token_algorithm_must_match_the_selected_key() {
    let token = fixture_token("RS256");
    let parts: Vec<&str> = token.split('.').collect();
    let header = b64(br#"{"alg":"RS384","kid":"rs256-1"}"#);
    let relabelled = format!("{header}.{}.{}", parts[1], parts[2]);
    assert_eq!(
        verifier().verify(&relabelled, NOW),
        Err(TokenError::AlgorithmMismatch)
    );
}

#[test]
fn duplicate_claim_keys_are_rejected() {
    let claims =
        format!(r#"{{"iss":"{ISSUER}","aud":"avb-api","sub":"u1","sub":"admin","exp":{EXP}}}"#);
    assert_eq!(
        verifier().verify(&hs256(&claims), NOW),
        Err(TokenError::DuplicateKey("claims"))
    );
    let nested = format!(
        r#"{{"iss":"{ISSUER}","aud":"avb-api","sub":"u1","exp":{EXP},"realm_access":{{"roles":[],"roles":["ADMIN"]}}}}"#
    );
    assert_eq!(
        verifier().verify(&hs256(&nested), NOW),
        Err(TokenError::DuplicateKey("claims"))
    );
}

#[test]
fn duplicate_header_keys_are_rejected() {
    let token = hs256_raw(
        r#"{"alg":"HS256","kid":"hs256-1","kid":"rs256-1"}"#,
        &claims_with(json!({})),
    );
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(TokenError::DuplicateKey("header"))
    );
}

#[test]
fn crit_header_is_rejected() {
    let token = hs256_raw(
        r#"{"alg":"HS256","kid":"hs256-1","crit":["exp"]}"#,
        &claims_with(json!({})),
    );
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(TokenError::CriticalHeader)
    );
}

#[test]
fn over_long_token_is_rejected_before_parsing() {
    let padding = "x".repeat(MAX_TOKEN_LEN);
    let token = hs256(&claims_with(json!({ "pad": padding })));
    assert!(token.len() > MAX_TOKEN_LEN);
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(TokenError::TooLong { max: MAX_TOKEN_LEN })
    );
}

#[test]
fn token_without_exp_is_rejected() {
    let token = hs256(&claims_with(json!({"exp": null})));
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(TokenError::MissingClaim("exp"))
    );
    let text_exp = hs256(&claims_with(json!({"exp": "1700003600"})));
    assert_eq!(
        verifier().verify(&text_exp, NOW),
        Err(TokenError::InvalidClaim("exp"))
    );
}

#[test]
fn der_encoded_ecdsa_signature_is_rejected() {
    let token = fixture_token("ES256");
    let (input, signature) = token.rsplit_once('.').unwrap();
    let raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let der = p256::ecdsa::Signature::from_slice(&raw).unwrap().to_der();
    let der_token = format!("{input}.{}", b64(der.as_bytes()));
    assert_eq!(
        verifier().verify(&der_token, NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn malformed_tokens_are_rejected() {
    let v = verifier();
    let good = fixture_token("HS256");
    let parts: Vec<&str> = good.split('.').collect();
    for bad in [
        String::new(),
        "a.b".to_owned(),
        format!("{good}.x.y"),
        format!("!!.{}.{}", parts[1], parts[2]),
        format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
        format!("{}.{}.{}", b64(b"[1]"), parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], b64(b"[1]"), parts[2]),
        format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", b64(br#"{"alg":7}"#), parts[1], parts[2]),
        format!("{}.{}.{}", b64(br#"{"typ":"JWT"}"#), parts[1], parts[2]),
    ] {
        assert!(
            matches!(v.verify(&bad, NOW), Err(TokenError::Malformed(_))),
            "{bad:?}: {:?}",
            v.verify(&bad, NOW)
        );
    }
    let unsupported = format!("{}.{}.{}", b64(br#"{"alg":"PS256"}"#), parts[1], parts[2]);
    assert_eq!(
        v.verify(&unsupported, NOW),
        Err(TokenError::UnsupportedAlgorithm)
    );
}

#[test]
fn bearer_token_extraction_refuses_other_schemes() {
    assert_eq!(bearer_token("Bearer abc.def.ghi"), Ok("abc.def.ghi"));
    assert_eq!(bearer_token("Basic YTpi"), Err(TokenError::NotBearer));
}

#[test]
fn weak_or_wrong_keys_are_configuration_errors() {
    let weak: Value = serde_json::from_str(include_str!("fixtures/jwt/jwk-rsa-1024.json")).unwrap();
    let raw: RawIssuer = serde_json::from_value(
        json!({"issuer": ISSUER, "audiences": ["avb-api"], "jwks": {"keys": [weak]}}),
    )
    .unwrap();
    let err = Verifier::new(&[raw], 60, &|_| None).unwrap_err();
    assert!(matches!(err, ConfigError::Key { .. }));
    assert_eq!(
        err.to_string(),
        "identity: issuer `https://id.agentvoicebox.example`, key `weak`: RSA modulus is 1024 bits; at least 2048 are required"
    );
}
