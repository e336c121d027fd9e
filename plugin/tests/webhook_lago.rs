//! HMAC deliveries: known-answer vectors (RFC 4231 and Lago), key rotation,
//! header-phase rejections, and what must never leak into Debug output.

// clippy.toml allows these inside #[test] functions only; this crate is all
// test code, and its fixture helpers fail the test by panicking on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use avb_edge::webhook::{
    compile_webhook, sign_hmac, LagoVerifier, PendingDelivery, RawHmacKey, RawWebhook, Rejection,
    SignatureAlgorithm, Verified, WebhookHeaders,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

const LAGO_KEY: &str = "6a1e7c1e-4b7a-4f0e-9a53-2f6d8c4b1e77";
const LAGO_SIGNATURE: &str = "rg5IjrgwVZPEA2TMBsmaPJN1vg6bDS5YDOzXz55iS8I=";
/// Raw string: `\u0026` stays six literal bytes, `ë` is two UTF-8 bytes.
const LAGO_BODY: &[u8] = r#"{"webhook_type":"customer.created","object_type":"customer","organization_id":"1a901a90-1a90-1a90-1a90-1a901a901a90","customer":{"lago_id":"99a6094e-199b-4101-896a-54e927ce7bd7","external_id":"cust_0042","name":"Zoë \u0026 Co"}}"#
    .as_bytes();
const PREVIOUS_KEY: &str = "0f3b2c1d-9e8f-4a7b-8c6d-5e4f3a2b1c0d";

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).unwrap())
        .collect()
}

fn hmac_key(id: &str, secret: &str) -> RawHmacKey {
    RawHmacKey {
        id: id.to_owned(),
        secret: Some(secret.to_owned()),
        secret_env: None,
    }
}

fn raw_hmac_webhook(keys: Vec<RawHmacKey>) -> RawWebhook {
    RawWebhook {
        provider: "lago".to_owned(),
        algorithms: vec!["hmac".to_owned()],
        hmac_keys: keys,
        jwt: None,
        max_body_bytes: 1_048_576,
        replay_window_seconds: 86_400,
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn verifier(keys: Vec<RawHmacKey>) -> LagoVerifier {
    compile_webhook("lago", &raw_hmac_webhook(keys), &no_env).unwrap()
}

fn lago_verifier() -> LagoVerifier {
    verifier(vec![hmac_key("current", LAGO_KEY)])
}

fn hmac_headers(signature: &str) -> WebhookHeaders<'_> {
    WebhookHeaders {
        signature: Some(signature),
        algorithm: Some("hmac"),
        unique_key: Some("2f5a6a83-0f3e-4c8a-b7b3-1e0f5d9c2a11"),
        content_length: None,
    }
}

fn deliver(verifier: &LagoVerifier, signature: &str, body: &[u8]) -> Result<Verified, Rejection> {
    let pending = verifier.check_headers(&hmac_headers(signature))?;
    verifier.verify(&pending, body)
}

fn header_rejection(verifier: &LagoVerifier, headers: &WebhookHeaders<'_>) -> Rejection {
    match verifier.check_headers(headers) {
        Ok(pending) => panic!("headers were accepted: {pending:?}"),
        Err(rejection) => rejection,
    }
}

// RFC 4231 section 4: HMAC-SHA256 test cases 1-4, 6 and 7 (case 5 is truncated output).
#[test]
fn rfc4231_hmac_sha256_vectors_match() {
    let large_key = vec![0xaa; 131];
    let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
        (
            vec![0x0b; 20],
            b"Hi There".to_vec(),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            vec![0xaa; 20],
            vec![0xdd; 50],
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        ),
        (
            (1..=25).collect(),
            vec![0xcd; 50],
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        ),
        (
            large_key.clone(),
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            large_key,
            b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ];
    for (key, data, expected_hex) in cases {
        assert_eq!(sign_hmac(&key, &data), STANDARD.encode(hex(expected_hex)));
    }
}

#[test]
fn hmac_signature_from_another_secret_differs() {
    assert_ne!(
        sign_hmac(LAGO_KEY.as_bytes(), LAGO_BODY),
        sign_hmac(PREVIOUS_KEY.as_bytes(), LAGO_BODY)
    );
    assert_ne!(sign_hmac(b"", LAGO_BODY), LAGO_SIGNATURE);
}

#[test]
fn lago_vector_body_is_229_bytes_with_escaped_ampersand_and_raw_utf8() {
    assert_eq!(LAGO_BODY.len(), 229);
    assert!(LAGO_BODY.windows(6).any(|window| window == br"\u0026"));
    assert!(LAGO_BODY.windows(2).any(|window| window == "ë".as_bytes()));
    assert_eq!(LAGO_BODY.last(), Some(&b'}'));
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/lago/body.json"
    ))
    .unwrap();
    assert_eq!(fixture, LAGO_BODY);
}

#[test]
fn lago_vector_signs_to_published_signature() {
    assert_eq!(sign_hmac(LAGO_KEY.as_bytes(), LAGO_BODY), LAGO_SIGNATURE);
}

#[test]
fn lago_vector_verifies_and_reports_the_matching_key_id() {
    let verified = deliver(&lago_verifier(), LAGO_SIGNATURE, LAGO_BODY).unwrap();
    assert_eq!(verified.key_id, "current");
}

#[test]
fn reserialised_lago_body_is_rejected() {
    let value: serde_json::Value = serde_json::from_slice(LAGO_BODY).unwrap();
    let reserialised = serde_json::to_vec(&value).unwrap();
    assert_ne!(reserialised, LAGO_BODY);
    assert_eq!(
        deliver(&lago_verifier(), LAGO_SIGNATURE, &reserialised),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn body_with_one_byte_changed_is_rejected() {
    let mut tampered = LAGO_BODY.to_vec();
    let position = tampered.iter().position(|&byte| byte == b'2').unwrap();
    tampered[position] = b'3';
    assert_eq!(
        deliver(&lago_verifier(), LAGO_SIGNATURE, &tampered),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn body_with_trailing_newline_is_rejected() {
    let mut with_newline = LAGO_BODY.to_vec();
    with_newline.push(b'\n');
    assert_eq!(
        deliver(&lago_verifier(), LAGO_SIGNATURE, &with_newline),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn empty_body_is_rejected_against_a_non_empty_body_signature() {
    assert_eq!(
        deliver(&lago_verifier(), LAGO_SIGNATURE, b""),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn rotation_second_key_matches_and_is_reported() {
    let rotating = verifier(vec![
        hmac_key("current", PREVIOUS_KEY),
        hmac_key("previous", LAGO_KEY),
    ]);
    assert_eq!(
        deliver(&rotating, LAGO_SIGNATURE, LAGO_BODY)
            .unwrap()
            .key_id,
        "previous"
    );
    let signed_with_first = sign_hmac(PREVIOUS_KEY.as_bytes(), LAGO_BODY);
    assert_eq!(
        deliver(&rotating, &signed_with_first, LAGO_BODY)
            .unwrap()
            .key_id,
        "current"
    );
}

#[test]
fn signature_from_a_key_not_configured_is_rejected() {
    let rotating = verifier(vec![
        hmac_key("current", LAGO_KEY),
        hmac_key("previous", PREVIOUS_KEY),
    ]);
    let foreign = sign_hmac(b"7d1e0c55-1c3a-4a8e-b1f2-3c4d5e6f7a8b", LAGO_BODY);
    assert_eq!(
        deliver(&rotating, &foreign, LAGO_BODY),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn replay_fingerprint_ignores_key_and_unique_key_but_not_body_or_webhook() {
    let rotating = verifier(vec![
        hmac_key("current", LAGO_KEY),
        hmac_key("previous", PREVIOUS_KEY),
    ]);
    let first = deliver(&rotating, LAGO_SIGNATURE, LAGO_BODY).unwrap();
    let with_other_key = deliver(
        &rotating,
        &sign_hmac(PREVIOUS_KEY.as_bytes(), LAGO_BODY),
        LAGO_BODY,
    )
    .unwrap();
    assert_eq!(first.fingerprint, with_other_key.fingerprint);

    let mut fresh_unique_key = hmac_headers(LAGO_SIGNATURE);
    fresh_unique_key.unique_key = Some("another-delivery-id");
    let pending = rotating.check_headers(&fresh_unique_key).unwrap();
    assert_eq!(
        rotating.verify(&pending, LAGO_BODY).unwrap().fingerprint,
        first.fingerprint
    );

    let other_body = br#"{"webhook_type":"customer.updated"}"#;
    let other = deliver(
        &rotating,
        &sign_hmac(LAGO_KEY.as_bytes(), other_body),
        other_body,
    )
    .unwrap();
    assert_ne!(other.fingerprint, first.fingerprint);

    let other_webhook = compile_webhook(
        "lago-eu",
        &raw_hmac_webhook(vec![hmac_key("current", LAGO_KEY)]),
        &no_env,
    )
    .unwrap();
    let elsewhere = deliver(&other_webhook, LAGO_SIGNATURE, LAGO_BODY).unwrap();
    assert_ne!(elsewhere.fingerprint, first.fingerprint);
}

#[test]
fn missing_or_empty_signature_is_missing_signature() {
    let verifier = lago_verifier();
    let mut headers = hmac_headers(LAGO_SIGNATURE);
    headers.signature = None;
    assert_eq!(
        header_rejection(&verifier, &headers),
        Rejection::MissingSignature
    );
    headers.signature = Some("");
    assert_eq!(
        header_rejection(&verifier, &headers),
        Rejection::MissingSignature
    );
    // Missing signature wins over a missing algorithm: the reason recorded is the first thing wrong.
    headers.algorithm = None;
    assert_eq!(
        header_rejection(&verifier, &headers),
        Rejection::MissingSignature
    );
}

#[test]
fn missing_unknown_or_unlisted_algorithm_is_unsupported() {
    let verifier = lago_verifier();
    for algorithm in [
        None,
        Some(""),
        Some("HMAC"),
        Some(" hmac"),
        Some("sha256"),
        Some("jwt"),
    ] {
        let mut headers = hmac_headers(LAGO_SIGNATURE);
        headers.algorithm = algorithm;
        assert_eq!(
            header_rejection(&verifier, &headers),
            Rejection::UnsupportedAlgorithm,
            "{algorithm:?}"
        );
    }
}

#[test]
fn declared_content_length_over_the_limit_is_rejected_before_the_body() {
    let small = compile_webhook(
        "lago",
        &RawWebhook {
            max_body_bytes: 228,
            ..raw_hmac_webhook(vec![hmac_key("current", LAGO_KEY)])
        },
        &no_env,
    )
    .unwrap();
    let mut headers = hmac_headers(LAGO_SIGNATURE);
    headers.content_length = Some(229);
    assert_eq!(
        header_rejection(&small, &headers),
        Rejection::PayloadTooLarge
    );
    headers.content_length = Some(u64::MAX);
    assert_eq!(
        header_rejection(&small, &headers),
        Rejection::PayloadTooLarge
    );
    headers.content_length = Some(228);
    assert!(small.check_headers(&headers).is_ok());
}

#[test]
fn body_over_the_limit_is_rejected_when_no_length_was_declared() {
    let exact = compile_webhook(
        "lago",
        &RawWebhook {
            max_body_bytes: 229,
            ..raw_hmac_webhook(vec![hmac_key("current", LAGO_KEY)])
        },
        &no_env,
    )
    .unwrap();
    assert!(deliver(&exact, LAGO_SIGNATURE, LAGO_BODY).is_ok());
    let small = compile_webhook(
        "lago",
        &RawWebhook {
            max_body_bytes: 228,
            ..raw_hmac_webhook(vec![hmac_key("current", LAGO_KEY)])
        },
        &no_env,
    )
    .unwrap();
    assert_eq!(
        deliver(&small, LAGO_SIGNATURE, LAGO_BODY),
        Err(Rejection::PayloadTooLarge)
    );
}

#[test]
fn malformed_hmac_signatures_are_rejected_at_the_headers() {
    let verifier = lago_verifier();
    let without_padding = LAGO_SIGNATURE.trim_end_matches('=');
    let url_safe = "rg5IjrgwVZPEA2TMBsmaPJN1vg6bDS5YDOzXz55iS8I=".replace('5', "-");
    // Same 43 data characters, but the last one carries non-zero trailing bits.
    let non_canonical = "rg5IjrgwVZPEA2TMBsmaPJN1vg6bDS5YDOzXz55iS8J=";
    // 44 bytes, but two of them are one non-ASCII character.
    let unicode = "rg5IjrgwVZPEA2TMBsmaPJN1vg6bDS5YDOzXz55iSé=";
    assert_eq!(unicode.len(), 44);
    let cases = [
        without_padding.to_owned(),
        format!("{LAGO_SIGNATURE}="),
        format!(" {without_padding}"),
        format!("{LAGO_SIGNATURE} "),
        "!g5IjrgwVZPEA2TMBsmaPJN1vg6bDS5YDOzXz55iS8I=".to_owned(),
        url_safe,
        non_canonical.to_owned(),
        unicode.to_owned(),
        "rg5IjrgwVZPEA2TMBsmaPJN1vg6bDS5YDOzXz55iS8==".to_owned(),
        STANDARD.encode([0u8; 33])[..44].to_owned(),
        // 64 hex characters: what a verifier expecting hex digests would accept.
        "ae0e4888b830559584036d4cb06c9a69375be0e9b0d2e580ecced7cf9e624bc2".to_owned(),
    ];
    for signature in &cases {
        assert_eq!(
            header_rejection(&verifier, &hmac_headers(signature)),
            Rejection::InvalidSignature,
            "{signature:?}"
        );
    }
}

#[test]
fn well_formed_signature_of_zero_bytes_does_not_verify() {
    let zero = STANDARD.encode([0u8; 32]);
    assert_eq!(
        deliver(&lago_verifier(), &zero, LAGO_BODY),
        Err(Rejection::InvalidSignature)
    );
}

#[test]
fn pending_delivery_reports_its_algorithm() {
    let pending: PendingDelivery = lago_verifier()
        .check_headers(&hmac_headers(LAGO_SIGNATURE))
        .unwrap();
    assert_eq!(pending.algorithm(), SignatureAlgorithm::Hmac);
}

#[test]
fn rejections_map_to_status_and_code() {
    let table = [
        (Rejection::MissingSignature, 401, "missing_signature"),
        (
            Rejection::UnsupportedAlgorithm,
            401,
            "unsupported_algorithm",
        ),
        (Rejection::InvalidSignature, 401, "invalid_signature"),
        (Rejection::PayloadTooLarge, 413, "payload_too_large"),
    ];
    for (rejection, status, code) in table {
        assert_eq!(rejection.status(), status);
        assert_eq!(rejection.code(), code);
        let message = rejection.to_string();
        assert_eq!(message, message.to_lowercase());
    }
}

#[test]
fn debug_output_never_contains_secrets_or_signatures() {
    let verifier = verifier(vec![
        hmac_key("current", LAGO_KEY),
        hmac_key("previous", PREVIOUS_KEY),
    ]);
    let printed = format!("{verifier:?}");
    assert!(printed.contains("current") && printed.contains("previous"));
    assert!(!printed.contains(LAGO_KEY) && !printed.contains(PREVIOUS_KEY));
    assert!(!printed.contains("6a1e7c1e"));

    let headers = hmac_headers(LAGO_SIGNATURE);
    assert!(!format!("{headers:?}").contains(LAGO_SIGNATURE));
    let pending = verifier.check_headers(&headers).unwrap();
    assert_eq!(
        format!("{pending:?}"),
        "PendingDelivery { algorithm: Hmac, .. }"
    );
}

#[test]
fn verifier_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LagoVerifier>();
    assert_send_sync::<PendingDelivery>();
    let shared: HashMap<&str, LagoVerifier> = HashMap::from([("lago", lago_verifier())]);
    std::thread::scope(|scope| {
        scope.spawn(|| assert!(deliver(&shared["lago"], LAGO_SIGNATURE, LAGO_BODY).is_ok()));
    });
}
