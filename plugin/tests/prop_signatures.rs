//! Property tests: sign-then-verify round trips for every JWT algorithm the
//! filter accepts (HS256/384/512 with generated keys, RS256/384/512 with the
//! fixture RSA key, ES256 with generated P-256 keys) and for Lago webhooks
//! (HMAC with generated secrets, RS256 JWT with the fixture key); and the
//! converse: any change to the signed bytes or the key is refused.

// clippy.toml allows these inside #[test] functions only; this file is all
// test code, and its generators and fixture helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use avb_edge::policy::config::RawIssuer;
use avb_edge::policy::identity::{sign_hs, HmacAlgorithm, TokenError, Verifier};
use avb_edge::webhook::{
    compile_webhook, sign_hmac, sign_lago_jwt, RawHmacKey, RawLagoJwt, RawWebhook, Rejection,
    WebhookHeaders,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer as _;
use proptest::prelude::*;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

const ISSUER: &str = "https://id.prop.example";
const NOW: u64 = 1_700_000_000;
const RSA_PRIVATE_PEM: &str = include_str!("fixtures/jwt/rsa-2048.pem");
const LAGO_PRIVATE_PEM: &str = include_str!("fixtures/lago/lago_private.pem");
const LAGO_PUBLIC_PEM: &str = include_str!("fixtures/lago/lago_public.pem");
const LAGO_ISSUER: &str = "https://api.getlago.com";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn verifier(keys: Value) -> Verifier {
    let raw: RawIssuer = serde_json::from_value(
        json!({"issuer": ISSUER, "audiences": ["avb-api"], "jwks": {"keys": keys}}),
    )
    .expect("issuer json");
    Verifier::new(&[raw], 60, &|_| None).expect("generated keys compile")
}

/// Generated claims: a subject, roles, an expiry in the future and a nonce,
/// so every case signs different bytes.
fn claims() -> impl Strategy<Value = Value> {
    (
        "[a-zA-Z0-9_.@-]{1,24}",
        prop::sample::subsequence(&["ADMIN", "OPERATOR", "DEVELOPER", "VIEWER"][..], 0..=4),
        60u64..86_400,
        any::<u64>(),
    )
        .prop_map(|(sub, roles, lifetime, nonce)| {
            json!({"iss": ISSUER, "aud": ["avb-api", "other"], "sub": sub,
                   "realm_access": {"roles": roles}, "iat": NOW, "exp": NOW + lifetime,
                   "jti": nonce.to_string()})
        })
}

fn hmac_algorithm() -> impl Strategy<Value = HmacAlgorithm> {
    prop::sample::select(
        &[
            HmacAlgorithm::Hs256,
            HmacAlgorithm::Hs384,
            HmacAlgorithm::Hs512,
        ][..],
    )
}

/// Flips one bit of one character of `token`'s part `part` (0 header,
/// 1 claims, 2 signature), staying inside the base64url alphabet.
fn tamper(token: &str, part: usize, position: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let target = &mut parts[part];
    if target.is_empty() {
        target.push('A');
        return parts.join(".");
    }
    let index = position % target.len();
    let original = target.as_bytes()[index];
    let replacement = if original == b'A' { 'B' } else { 'A' };
    target.replace_range(index..=index, &replacement.to_string());
    parts.join(".")
}

/// Independent HMAC of the signing input: `sign_hs` must produce exactly it.
fn independent_hmac(alg: HmacAlgorithm, key: &[u8], signing_input: &str) -> Vec<u8> {
    let message = signing_input.as_bytes();
    match alg {
        HmacAlgorithm::Hs256 => Hmac::<Sha256>::new_from_slice(key)
            .expect("hmac key")
            .chain_update(message)
            .finalize()
            .into_bytes()
            .to_vec(),
        HmacAlgorithm::Hs384 => Hmac::<Sha384>::new_from_slice(key)
            .expect("hmac key")
            .chain_update(message)
            .finalize()
            .into_bytes()
            .to_vec(),
        HmacAlgorithm::Hs512 => Hmac::<Sha512>::new_from_slice(key)
            .expect("hmac key")
            .chain_update(message)
            .finalize()
            .into_bytes()
            .to_vec(),
    }
}

fn rsa_private_key() -> RsaPrivateKey {
    let body: String = RSA_PRIVATE_PEM
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(body).expect("fixture pem body is base64");
    RsaPrivateKey::from_pkcs8_der(&der).expect("fixture rsa key is pkcs#8")
}

fn rsa_jwk(alg: &str, key: &RsaPrivateKey) -> Value {
    use rsa::traits::PublicKeyParts as _;
    json!({"kty": "RSA", "kid": format!("{alg}-prop"), "alg": alg,
           "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())})
}

/// An RS256/384/512 token over `claims`, signed with `key` (PKCS#1 v1.5).
fn sign_rs(alg: &str, key: &RsaPrivateKey, claims: &Value) -> String {
    let header = json!({"alg": alg, "typ": "JWT", "kid": format!("{alg}-prop")});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = match alg {
        "RS256" => key.sign(
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(input.as_bytes()),
        ),
        "RS384" => key.sign(
            Pkcs1v15Sign::new::<Sha384>(),
            &Sha384::digest(input.as_bytes()),
        ),
        _ => key.sign(
            Pkcs1v15Sign::new::<Sha512>(),
            &Sha512::digest(input.as_bytes()),
        ),
    }
    .expect("rsa signing");
    format!("{input}.{}", b64(&signature))
}

/// An ES256 token over `claims` (r‖s signature, RFC 7518 §3.4).
fn sign_es(key: &p256::ecdsa::SigningKey, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

fn ec_jwk(key: &p256::ecdsa::SigningKey, kid: &str) -> Value {
    let point = key.verifying_key().to_encoded_point(false);
    json!({"kty": "EC", "kid": kid, "alg": "ES256", "crv": "P-256",
           "x": b64(point.x().expect("uncompressed x")),
           "y": b64(point.y().expect("uncompressed y"))})
}

fn lago_verifier(secrets: &[String]) -> avb_edge::webhook::LagoVerifier {
    let raw = RawWebhook {
        provider: "lago".to_owned(),
        algorithms: vec!["hmac".to_owned(), "jwt".to_owned()],
        hmac_keys: secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| RawHmacKey {
                id: format!("key-{index}"),
                secret: Some(secret.clone()),
                secret_env: None,
            })
            .collect(),
        jwt: Some(RawLagoJwt {
            issuer: LAGO_ISSUER.to_owned(),
            public_key: Some(LAGO_PUBLIC_PEM.to_owned()),
            public_key_env: None,
        }),
        max_body_bytes: 65_536,
        replay_window_seconds: 0,
    };
    compile_webhook("lago", &raw, &|_| None).expect("generated webhook compiles")
}

fn headers<'a>(signature: &'a str, algorithm: &'a str, length: usize) -> WebhookHeaders<'a> {
    WebhookHeaders {
        signature: Some(signature),
        algorithm: Some(algorithm),
        unique_key: None,
        content_length: u64::try_from(length).ok(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hs_tokens_round_trip_and_tampering_is_refused(
        alg in hmac_algorithm(),
        extra_key_bytes in 0usize..48,
        key_seed in any::<[u8; 32]>(),
        claims in claims(),
        part in 0usize..3,
        position in any::<usize>(),
    ) {
        let key_len = alg.min_key_bytes() + extra_key_bytes;
        let key: Vec<u8> = key_seed.iter().cycle().take(key_len).enumerate()
            .map(|(i, b)| b.wrapping_add(u8::try_from(i % 251).unwrap_or(0))).collect();
        let name = alg.algorithm().name();
        let verifier = verifier(json!([{"kty": "oct", "kid": "k1", "alg": name, "k": b64(&key)}]));
        let token = sign_hs(alg, &key, Some("k1"), &claims.to_string());

        let (input, signature) = token.rsplit_once('.').expect("three parts");
        prop_assert_eq!(b64(&independent_hmac(alg, &key, input)), signature);

        let verified = verifier.verify(&token, NOW);
        prop_assert!(verified.is_ok(), "{:?}", verified);
        prop_assert_eq!(verified.map(|v| v.claims), Ok(claims.clone()));

        let tampered = tamper(&token, part, position);
        if tampered != token {
            prop_assert!(verifier.verify(&tampered, NOW).is_err());
        }
        let mut other_key = key.clone();
        other_key[position % key_len] ^= 0x01;
        let forged = sign_hs(alg, &other_key, Some("k1"), &claims.to_string());
        prop_assert_eq!(verifier.verify(&forged, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn lago_hmac_deliveries_round_trip_with_any_configured_key(
        secrets in prop::collection::vec("[!-~]{1,48}", 1..4),
        signer in any::<prop::sample::Index>(),
        body in prop::collection::vec(any::<u8>(), 0..512),
        flip in any::<prop::sample::Index>(),
    ) {
        let verifier = lago_verifier(&secrets);
        let index = signer.index(secrets.len());
        let signature = sign_hmac(secrets[index].as_bytes(), &body);
        let independent = STANDARD.encode(
            Hmac::<Sha256>::new_from_slice(secrets[index].as_bytes()).expect("hmac key")
                .chain_update(&body).finalize().into_bytes());
        prop_assert_eq!(&signature, &independent);

        let pending = verifier.check_headers(&headers(&signature, "hmac", body.len()))
            .map_err(|r| TestCaseError::fail(format!("headers refused: {r}")))?;
        let verified = verifier.verify(&pending, &body)
            .map_err(|r| TestCaseError::fail(format!("body refused: {r}")))?;
        // The first configured key with this secret is the one reported.
        let first = secrets.iter().position(|s| *s == secrets[index]).unwrap_or(index);
        prop_assert_eq!(verified.key_id, format!("key-{first}"));

        let mut altered = body.clone();
        if altered.is_empty() {
            altered.push(b'x');
        } else {
            let at = flip.index(altered.len());
            altered[at] ^= 0x20;
        }
        prop_assert_eq!(verifier.verify(&pending, &altered), Err(Rejection::InvalidSignature));
    }
}

proptest! {
    // RSA and ECDSA are slow in debug builds: fewer cases, same properties.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn rs_tokens_round_trip_and_tampering_is_refused(
        alg in prop::sample::select(&["RS256", "RS384", "RS512"][..]),
        claims in claims(),
        part in 0usize..3,
        position in any::<usize>(),
    ) {
        let key = rsa_private_key();
        let verifier = verifier(json!([rsa_jwk(alg, &key)]));
        let token = sign_rs(alg, &key, &claims);
        prop_assert_eq!(verifier.verify(&token, NOW).map(|v| v.claims), Ok(claims.clone()));
        let tampered = tamper(&token, part, position);
        if tampered != token {
            prop_assert!(verifier.verify(&tampered, NOW).is_err());
        }
    }

    #[test]
    fn es256_tokens_round_trip_and_a_foreign_key_is_refused(
        secret in any::<[u8; 32]>(),
        other in any::<[u8; 32]>(),
        claims in claims(),
        part in 0usize..3,
        position in any::<usize>(),
    ) {
        let key = p256::ecdsa::SigningKey::from_bytes(&secret.into());
        let foreign = p256::ecdsa::SigningKey::from_bytes(&other.into());
        prop_assume!(key.is_ok() && foreign.is_ok() && secret != other);
        let (key, foreign) = (key.expect("checked"), foreign.expect("checked"));
        let verifier = verifier(json!([ec_jwk(&key, "es-1")]));
        let token = sign_es(&key, "es-1", &claims);
        prop_assert_eq!(verifier.verify(&token, NOW).map(|v| v.claims), Ok(claims.clone()));
        let tampered = tamper(&token, part, position);
        if tampered != token {
            prop_assert!(verifier.verify(&tampered, NOW).is_err());
        }
        let forged = sign_es(&foreign, "es-1", &claims);
        prop_assert_eq!(verifier.verify(&forged, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn lago_jwt_deliveries_round_trip_and_another_body_is_refused(
        body in "[ -~]{0,256}",
        suffix in "[a-z]{1,4}",
    ) {
        let verifier = lago_verifier(&["unused-hmac-secret".to_owned()]);
        let token = sign_lago_jwt(LAGO_PRIVATE_PEM, LAGO_ISSUER, body.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("signing: {e}")))?;
        let pending = verifier.check_headers(&headers(&token, "jwt", body.len()))
            .map_err(|r| TestCaseError::fail(format!("headers refused: {r}")))?;
        let verified = verifier.verify(&pending, body.as_bytes())
            .map_err(|r| TestCaseError::fail(format!("body refused: {r}")))?;
        prop_assert_eq!(verified.key_id, "jwt");
        let other_body = format!("{body}{suffix}");
        prop_assert_eq!(verifier.verify(&pending, other_body.as_bytes()), Err(Rejection::InvalidSignature));
    }
}

#[test]
fn tamper_changes_exactly_one_character_of_the_chosen_part() {
    let token = "aaaa.bbbb.cccc";
    assert_eq!(tamper(token, 0, 1), "aAaa.bbbb.cccc");
    assert_eq!(tamper(token, 2, 7), "aaaa.bbbb.cccA");
    assert_eq!(tamper("a..", 1, 0), "a.A.");
}

#[test]
fn a_token_signed_for_one_hmac_algorithm_is_refused_by_a_key_of_another() {
    let key = [7u8; 64];
    let verifier = verifier(json!([{"kty": "oct", "kid": "k1", "alg": "HS512", "k": b64(&key)}]));
    let token = sign_hs(
        HmacAlgorithm::Hs256,
        &key,
        Some("k1"),
        &json!({"iss": ISSUER, "aud": "avb-api", "exp": NOW + 60}).to_string(),
    );
    assert_eq!(
        verifier.verify(&token, NOW),
        Err(TokenError::AlgorithmMismatch)
    );
}
