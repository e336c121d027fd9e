//! JWT (RS256) deliveries against tokens that openssl signed (see
//! fixtures/lago/README.md), plus the `sign_lago_jwt` helper.

// clippy.toml allows these inside #[test] functions only; this crate is all
// test code, and its fixture helpers fail the test by panicking on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use avb_edge::webhook::{
    compile_webhook, sign_hmac, sign_lago_jwt, JwtSigningError, LagoVerifier, RawHmacKey,
    RawLagoJwt, RawWebhook, Rejection, SignatureAlgorithm, Verified, WebhookHeaders,
};

const ISSUER: &str = "https://api.getlago.com";
const HMAC_KEY: &str = "6a1e7c1e-4b7a-4f0e-9a53-2f6d8c4b1e77";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/lago/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn body() -> Vec<u8> {
    fixture("body.json").into_bytes()
}

fn raw_jwt_webhook(public_key: &str) -> RawWebhook {
    RawWebhook {
        provider: "lago".to_owned(),
        algorithms: vec!["jwt".to_owned(), "hmac".to_owned()],
        hmac_keys: vec![RawHmacKey {
            id: "current".to_owned(),
            secret: Some(HMAC_KEY.to_owned()),
            secret_env: None,
        }],
        jwt: Some(RawLagoJwt {
            issuer: ISSUER.to_owned(),
            public_key: Some(public_key.to_owned()),
            public_key_env: None,
        }),
        max_body_bytes: 1_048_576,
        replay_window_seconds: 86_400,
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn verifier_with_key(public_key: &str) -> LagoVerifier {
    compile_webhook("lago", &raw_jwt_webhook(public_key), &no_env).unwrap()
}

fn verifier() -> LagoVerifier {
    verifier_with_key(&fixture("lago_public.pem"))
}

fn jwt_headers(token: &str) -> WebhookHeaders<'_> {
    WebhookHeaders {
        signature: Some(token),
        algorithm: Some("jwt"),
        unique_key: Some("8c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e"),
        content_length: None,
    }
}

fn deliver(verifier: &LagoVerifier, token: &str, body: &[u8]) -> Result<Verified, Rejection> {
    let pending = verifier.check_headers(&jwt_headers(token))?;
    assert_eq!(pending.algorithm(), SignatureAlgorithm::Jwt);
    verifier.verify(&pending, body)
}

fn rejected_at_headers(token: &str) -> Rejection {
    match verifier().check_headers(&jwt_headers(token)) {
        Ok(pending) => panic!("token accepted at the headers: {pending:?}"),
        Err(rejection) => rejection,
    }
}

#[test]
fn lago_token_verifies_with_pem_public_key_and_reports_jwt() {
    let verified = deliver(&verifier(), fixture("valid.jwt").trim(), &body()).unwrap();
    assert_eq!(verified.key_id, "jwt");
}

#[test]
fn lago_token_verifies_with_base64_of_pem_as_lago_publishes_it() {
    let published = fixture("lago_public.pem.b64");
    assert!(published.contains('\n') && !published.contains("BEGIN"));
    let verified = deliver(
        &verifier_with_key(&published),
        &fixture("valid.jwt"),
        &body(),
    )
    .unwrap();
    assert_eq!(verified.key_id, "jwt");
}

#[test]
fn public_key_can_come_from_the_environment() {
    let mut raw = raw_jwt_webhook("unused");
    raw.jwt = Some(RawLagoJwt {
        issuer: ISSUER.to_owned(),
        public_key: None,
        public_key_env: Some("LAGO_PUBLIC_KEY".to_owned()),
    });
    let published = fixture("lago_public.pem.b64");
    let env = |name: &str| (name == "LAGO_PUBLIC_KEY").then(|| published.clone());
    let verifier = compile_webhook("lago", &raw, &env).unwrap();
    assert!(deliver(&verifier, &fixture("valid.jwt"), &body()).is_ok());
}

#[test]
fn extra_header_fields_such_as_typ_are_accepted() {
    assert!(deliver(&verifier(), &fixture("valid_with_typ.jwt"), &body()).is_ok());
}

#[test]
fn token_signed_by_another_key_is_rejected() {
    assert_eq!(
        deliver(&verifier(), &fixture("wrong_key.jwt"), &body()),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn valid_token_is_rejected_when_another_key_is_pinned() {
    assert_eq!(
        deliver(
            &verifier_with_key(&fixture("other_public.pem")),
            &fixture("valid.jwt"),
            &body()
        ),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn token_with_another_issuer_is_rejected() {
    assert_eq!(
        deliver(&verifier(), &fixture("wrong_iss.jwt"), &body()),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn token_whose_data_differs_from_the_body_by_one_byte_is_rejected() {
    assert_eq!(
        deliver(&verifier(), &fixture("data_one_byte_off.jwt"), &body()),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn valid_token_does_not_verify_a_different_body() {
    let token = fixture("valid.jwt");
    let value: serde_json::Value = serde_json::from_slice(&body()).unwrap();
    let reserialised = serde_json::to_vec(&value).unwrap();
    assert_eq!(
        deliver(&verifier(), &token, &reserialised),
        Err(Rejection::InvalidSignature)
    );
    let mut with_newline = body();
    with_newline.push(b'\n');
    assert_eq!(
        deliver(&verifier(), &token, &with_newline),
        Err(Rejection::InvalidSignature)
    );
    assert_eq!(
        deliver(&verifier(), &token, b""),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn token_with_a_flipped_signature_bit_is_rejected() {
    let token = fixture("valid.jwt");
    let last = token.chars().last().unwrap();
    let flipped = if last == 'A' { 'Q' } else { 'A' };
    let tampered = format!("{}{flipped}", &token[..token.len() - 1]);
    assert_eq!(
        deliver(&verifier(), &tampered, &body()),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn hs256_token_keyed_with_the_public_key_is_rejected() {
    assert_eq!(
        rejected_at_headers(&fixture("alg_hs256.jwt")),
        Rejection::InvalidSignature
    );
}

#[test]
fn alg_none_token_is_rejected() {
    assert_eq!(
        rejected_at_headers(&fixture("alg_none.jwt")),
        Rejection::InvalidSignature
    );
}

#[test]
fn signed_token_with_duplicate_data_claim_is_rejected() {
    assert_eq!(
        rejected_at_headers(&fixture("duplicate_data_claim.jwt")),
        Rejection::InvalidSignature
    );
}

#[test]
fn signed_token_with_critical_header_extension_is_rejected() {
    assert_eq!(
        rejected_at_headers(&fixture("crit_header.jwt")),
        Rejection::InvalidSignature
    );
}

#[test]
fn structurally_broken_tokens_are_rejected_at_the_headers() {
    let valid = fixture("valid.jwt");
    let segments: Vec<&str> = valid.split('.').collect();
    let cases = [
        "not-a-token".to_owned(),
        format!("{}.{}", segments[0], segments[1]),
        format!("{valid}.extra"),
        format!("{}.{}.", segments[0], segments[1]),
        format!("{}=.{}.{}", segments[0], segments[1], segments[2]),
        format!(
            "{}.{}.{}",
            segments[0],
            segments[1],
            &segments[2][..segments[2].len() - 4]
        ),
        format!("{}.{}.{}", segments[0], "e30", segments[2]),
        format!("{}.{}.{}", "e30", segments[1], segments[2]),
        format!(" {valid}"),
        valid.replace('-', "+"),
        "é.é.é".to_owned(),
    ];
    for token in &cases {
        assert_ne!(token, &valid);
        assert_eq!(
            rejected_at_headers(token),
            Rejection::InvalidSignature,
            "{token:?}"
        );
    }
}

#[test]
fn jwt_delivery_is_unsupported_when_only_hmac_is_listed() {
    let mut raw = raw_jwt_webhook("unused");
    raw.algorithms = vec!["hmac".to_owned()];
    raw.jwt = None;
    let hmac_only = compile_webhook("lago", &raw, &no_env).unwrap();
    assert_eq!(
        hmac_only
            .check_headers(&jwt_headers(&fixture("valid.jwt")))
            .map(|_| ()),
        Err(Rejection::UnsupportedAlgorithm)
    );
}

#[test]
fn hmac_delivery_is_unsupported_when_only_jwt_is_listed() {
    let mut raw = raw_jwt_webhook(&fixture("lago_public.pem"));
    raw.algorithms = vec!["jwt".to_owned()];
    raw.hmac_keys = Vec::new();
    let jwt_only = compile_webhook("lago", &raw, &no_env).unwrap();
    let signature = sign_hmac(HMAC_KEY.as_bytes(), &body());
    let headers = WebhookHeaders {
        signature: Some(&signature),
        algorithm: Some("hmac"),
        unique_key: None,
        content_length: None,
    };
    assert_eq!(
        jwt_only.check_headers(&headers).map(|_| ()),
        Err(Rejection::UnsupportedAlgorithm)
    );
}

#[test]
fn jwt_body_over_the_limit_is_payload_too_large() {
    let mut raw = raw_jwt_webhook(&fixture("lago_public.pem"));
    raw.max_body_bytes = 228;
    let small = compile_webhook("lago", &raw, &no_env).unwrap();
    assert_eq!(
        deliver(&small, &fixture("valid.jwt"), &body()),
        Err(Rejection::PayloadTooLarge)
    );
}

#[test]
fn same_body_by_hmac_and_by_jwt_has_different_fingerprints() {
    let verifier = verifier();
    let by_jwt = deliver(&verifier, &fixture("valid.jwt"), &body()).unwrap();
    let signature = sign_hmac(HMAC_KEY.as_bytes(), &body());
    let headers = WebhookHeaders {
        signature: Some(&signature),
        algorithm: Some("hmac"),
        unique_key: None,
        content_length: Some(229),
    };
    let pending = verifier.check_headers(&headers).unwrap();
    let by_hmac = verifier.verify(&pending, &body()).unwrap();
    assert_eq!(by_hmac.key_id, "current");
    assert_ne!(by_hmac.fingerprint, by_jwt.fingerprint);
}

#[test]
fn sign_lago_jwt_reproduces_the_openssl_token_exactly() {
    let token = sign_lago_jwt(&fixture("lago_private.pem"), ISSUER, &body()).unwrap();
    assert_eq!(token, fixture("valid.jwt"));
}

#[test]
fn sign_lago_jwt_tokens_verify_for_arbitrary_bodies() {
    let body = format!(
        r#"{{"webhook_type":"invoice.created","padding":"{}","note":"<tag> & \u2028 ü"}}"#,
        "x".repeat(20_000)
    );
    let token = sign_lago_jwt(&fixture("lago_private.pem"), ISSUER, body.as_bytes()).unwrap();
    assert!(deliver(&verifier(), &token, body.as_bytes()).is_ok());
    let other_issuer = sign_lago_jwt(
        &fixture("lago_private.pem"),
        "https://evil.example",
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        deliver(&verifier(), &other_issuer, body.as_bytes()),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn sign_lago_jwt_refuses_a_public_key_and_a_non_utf8_body() {
    assert_eq!(
        sign_lago_jwt(&fixture("lago_public.pem"), ISSUER, b"{}"),
        Err(JwtSigningError::InvalidPrivateKey)
    );
    assert_eq!(
        sign_lago_jwt(&fixture("lago_private.pem"), ISSUER, &[0xff, 0xfe]),
        Err(JwtSigningError::BodyNotUtf8)
    );
}
