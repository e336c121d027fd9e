//! End-to-end: Lago webhook deliveries through the real Envoy with the built
//! `dist/avb_edge.wasm` (issue 3). Valid HMAC and JWT deliveries reach the
//! echo upstream with the body intact; every rejection class never reaches
//! it; a 1 MiB body verifies; HTTP/2 bodies in many frames with trailers and
//! HTTP/1.1 chunked bodies are held and verified; the replay window answers
//! duplicates itself but lets a retry after an upstream failure through.
//!
//! Signatures are made here independently of the engine: HMAC with the
//! `hmac` crate, RS256 with the `rsa` crate and the committed Lago test key
//! pair (plugin/tests/fixtures/lago, see its README).

use std::path::PathBuf;

use avb_tests::echo::{sha256_hex, EchoServer, Received, STATUS_OVERRIDE_HEADER};
use avb_tests::http::{H2Request, RawRequest, Response};
use avb_tests::procs::envoy::{dev_env, shipped_policy_json, Envoy, EnvoyConfig};
use avb_tests::procs::{wasm_path, workspace_root};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{json, Value};
use sha2::Sha256;

const WEBHOOK_PATH: &str = "/api/v1/billing/webhooks/lago";
const LAGO_ISSUER: &str = "https://api.getlago.com";
const MAX_BODY_BYTES: usize = 1_048_576;
/// Tags every request of a test so its upstream log can be found.
const TRACE_HEADER: &str = "x-test-trace";

fn fixture(name: &str) -> PathBuf {
    workspace_root()
        .join("plugin/tests/fixtures/lago")
        .join(name)
}

/// A value of envoy/dev.env (the VM environment of the local stack).
fn dev_value(name: &str) -> String {
    dev_env()
        .expect("envoy/dev.env")
        .get(name)
        .unwrap_or_else(|| panic!("{name} in envoy/dev.env"))
        .clone()
}

fn current_key() -> String {
    dev_value("LAGO_HMAC_KEY")
}

fn previous_key() -> String {
    dev_value("LAGO_HMAC_KEY_PREVIOUS")
}

/// `base64(HMAC-SHA256(key, body))`, as Lago's `X-Lago-Signature`.
fn hmac_signature(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac key");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// An RS256 JWT as Lago makes it: claims `data` (the raw body) and `iss`.
fn lago_jwt(private_key_fixture: &str, issuer: &str, body: &str) -> String {
    let pem = std::fs::read_to_string(fixture(private_key_fixture)).expect("fixture key");
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).expect("PKCS#8 private key");
    let signing_key = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(json!({"data": body, "iss": issuer}).to_string())
    );
    let signature = signing_key.sign(signing_input.as_bytes()).to_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The shipped policy, checked to carry the Lago webhook as issue 3
/// describes: both algorithms, two HMAC keys for rotation, the JWT key as
/// Lago publishes it (base64 of the PEM, from the VM environment), a 1 MiB
/// cap and a replay window.
fn webhook_policy() -> String {
    let policy = shipped_policy_json().expect("shipped policy");
    let parsed: Value = serde_json::from_str(&policy).expect("json");
    let lago = &parsed["webhooks"]["lago"];
    assert_eq!(lago["algorithms"], json!(["hmac", "jwt"]));
    assert_eq!(
        lago["hmac_keys"],
        json!([
            {"id": "current", "secret_env": "LAGO_HMAC_KEY"},
            {"id": "previous", "secret_env": "LAGO_HMAC_KEY_PREVIOUS"},
        ])
    );
    assert_eq!(lago["jwt"]["issuer"], LAGO_ISSUER);
    assert_eq!(lago["max_body_bytes"], MAX_BODY_BYTES);
    assert!(lago["replay_window_seconds"]
        .as_u64()
        .is_some_and(|s| s > 0));
    assert!(parsed["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .any(|rule| rule["path"] == WEBHOOK_PATH && rule["webhook"] == "lago"));
    policy
}

struct Stack {
    echo: EchoServer,
    _envoy: Envoy,
    port: u16,
}

impl Stack {
    fn start() -> Self {
        let echo = EchoServer::start().expect("echo upstream");
        let envoy = EnvoyConfig::new(
            wasm_path().expect("dist/avb_edge.wasm built"),
            webhook_policy(),
            echo.port(),
        )
        .start()
        .expect("envoy starts with the webhook policy");
        let port = envoy.listener_port().expect("listener");
        Self {
            echo,
            _envoy: envoy,
            port,
        }
    }

    fn upstream_saw(&self, trace: &str) -> Vec<Received> {
        self.echo
            .requests()
            .into_iter()
            .filter(|request| request.header(TRACE_HEADER) == Some(trace))
            .collect()
    }

    /// Sends an HTTP/1.1 delivery tagged with a fresh trace id.
    fn deliver(&self, request: RawRequest) -> (Response, Vec<Received>) {
        let trace = trace_id();
        let response = request
            .header(TRACE_HEADER, &trace)
            .send(self.port)
            .expect("envoy answers");
        (response, self.upstream_saw(&trace))
    }
}

fn trace_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "w{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Lago-like body, unique per call so replay memory never links tests.
fn lago_body(label: &str) -> String {
    format!(
        "{{\"webhook_type\":\"invoice.created\",\"object_type\":\"invoice\",\"label\":\"{label}\",\"trace\":\"{}\",\"customer\":{{\"name\":\"Zoë \\u0026 Co\"}}}}",
        trace_id()
    )
}

fn hmac_delivery(body: &str, signature: &str) -> RawRequest {
    RawRequest::post(WEBHOOK_PATH, body.as_bytes().to_vec())
        .header("content-type", "application/json")
        .header("x-lago-signature-algorithm", "hmac")
        .header("x-lago-signature", signature)
        .header("x-lago-unique-key", &trace_id())
}

fn jwt_delivery(body: &str, token: &str) -> RawRequest {
    RawRequest::post(WEBHOOK_PATH, body.as_bytes().to_vec())
        .header("content-type", "application/json")
        .header("x-lago-signature-algorithm", "jwt")
        .header("x-lago-signature", token)
        .header("x-lago-unique-key", &trace_id())
}

fn assert_rejected(response: &Response, status: u16, error: &str, context: &str) {
    assert_eq!(response.status, status, "{context}: {}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json")),
        "{context}: content-type {:?}",
        response.header("content-type")
    );
    let decision = response
        .header("x-avb-decision-id")
        .unwrap_or_else(|| panic!("{context}: no x-avb-decision-id"));
    let body = response.json().expect("JSON body");
    assert_eq!(body["error"], error, "{context}: {body}");
    assert_eq!(body["decision_id"], decision, "{context}");
}

fn assert_verified(
    response: &Response,
    upstream: &[Received],
    body: &[u8],
    key_id: &str,
    context: &str,
) {
    assert_eq!(response.status, 200, "{context}: {}", response.text());
    assert_eq!(upstream.len(), 1, "{context}: upstream requests");
    assert_eq!(upstream[0].body.len(), body.len(), "{context}: body length");
    assert_eq!(
        upstream[0].body_sha256(),
        sha256_hex(body),
        "{context}: body changed on the way"
    );
    assert_eq!(
        upstream[0].header_all("x-avb-webhook"),
        vec!["lago"],
        "{context}"
    );
    assert_eq!(
        upstream[0].header_all("x-avb-webhook-key"),
        vec![key_id],
        "{context}"
    );
}

#[test]
fn valid_hmac_and_jwt_deliveries_reach_upstream_with_the_body_intact() {
    let stack = Stack::start();

    let body = lago_body("hmac-current");
    let (response, upstream) = stack.deliver(
        hmac_delivery(&body, &hmac_signature(&current_key(), body.as_bytes()))
            // Client-supplied copies never reach the upstream.
            .header("x-avb-webhook-key", "forged"),
    );
    assert_verified(
        &response,
        &upstream,
        body.as_bytes(),
        "current",
        "hmac current key",
    );

    let body = lago_body("hmac-previous");
    let (response, upstream) = stack.deliver(hmac_delivery(
        &body,
        &hmac_signature(&previous_key(), body.as_bytes()),
    ));
    assert_verified(
        &response,
        &upstream,
        body.as_bytes(),
        "previous",
        "hmac rotated key",
    );

    let body = lago_body("jwt");
    let (response, upstream) = stack.deliver(jwt_delivery(
        &body,
        &lago_jwt("lago_private.pem", LAGO_ISSUER, &body),
    ));
    assert_verified(&response, &upstream, body.as_bytes(), "jwt", "jwt");

    // The issue's own vector, byte for byte.
    let vector = std::fs::read(fixture("body.json")).expect("fixture body");
    assert_eq!(vector.len(), 229);
    let (response, upstream) = stack.deliver(
        RawRequest::post(WEBHOOK_PATH, vector.clone())
            .header("x-lago-signature-algorithm", "hmac")
            .header(
                "x-lago-signature",
                "rg5IjrgwVZPEA2TMBsmaPJN1vg6bDS5YDOzXz55iS8I=",
            ),
    );
    assert_verified(&response, &upstream, &vector, "current", "issue 3 vector");
}

#[test]
fn every_rejection_class_is_answered_at_the_edge_and_never_reaches_upstream() {
    let stack = Stack::start();
    let body = lago_body("rejections");
    let good_hmac = hmac_signature(&current_key(), body.as_bytes());
    let reserialised: Value = serde_json::from_str(&body).expect("json body");
    let reserialised = serde_json::to_string(&reserialised).expect("serialise");
    assert_ne!(
        reserialised, body,
        "the re-serialised copy must differ in bytes"
    );
    let mut one_byte_off = body.clone().into_bytes();
    let last = one_byte_off.len() - 2;
    one_byte_off[last] ^= 0x01;
    let one_byte_off = String::from_utf8(one_byte_off).expect("still UTF-8");

    let cases: Vec<(&str, RawRequest, u16, &str)> = vec![
        (
            "no signature",
            RawRequest::post(WEBHOOK_PATH, body.clone())
                .header("x-lago-signature-algorithm", "hmac"),
            401,
            "missing_signature",
        ),
        (
            "no algorithm",
            RawRequest::post(WEBHOOK_PATH, body.clone()).header("x-lago-signature", &good_hmac),
            401,
            "unsupported_algorithm",
        ),
        (
            "unlisted algorithm",
            RawRequest::post(WEBHOOK_PATH, body.clone())
                .header("x-lago-signature-algorithm", "sha1")
                .header("x-lago-signature", &good_hmac),
            401,
            "unsupported_algorithm",
        ),
        (
            "hmac with an unknown key",
            hmac_delivery(
                &body,
                &hmac_signature("5f0e-not-a-configured-key", body.as_bytes()),
            ),
            401,
            "invalid_signature",
        ),
        (
            "hmac over a re-serialised body",
            hmac_delivery(
                &body,
                &hmac_signature(&current_key(), reserialised.as_bytes()),
            ),
            401,
            "invalid_signature",
        ),
        (
            "hmac signature of the body sent with another body",
            hmac_delivery(&one_byte_off, &good_hmac),
            401,
            "invalid_signature",
        ),
        (
            "jwt signed by another key",
            jwt_delivery(&body, &lago_jwt("other_private.pem", LAGO_ISSUER, &body)),
            401,
            "invalid_signature",
        ),
        (
            "jwt with the wrong issuer",
            jwt_delivery(
                &body,
                &lago_jwt("lago_private.pem", "https://evil.example", &body),
            ),
            401,
            "invalid_signature",
        ),
        (
            "jwt whose data differs by one byte",
            jwt_delivery(
                &body,
                &lago_jwt("lago_private.pem", LAGO_ISSUER, &one_byte_off),
            ),
            401,
            "invalid_signature",
        ),
        (
            "jwt with alg none",
            jwt_delivery(
                &body,
                &format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(json!({"alg": "none"}).to_string()),
                    URL_SAFE_NO_PAD.encode(json!({"data": body, "iss": LAGO_ISSUER}).to_string())
                ),
            ),
            401,
            "invalid_signature",
        ),
        (
            "body over max_body_bytes (content-length)",
            {
                let big = vec![b'a'; MAX_BODY_BYTES + 1];
                let signature = hmac_signature(&current_key(), &big);
                RawRequest::post(WEBHOOK_PATH, big)
                    .header("x-lago-signature-algorithm", "hmac")
                    .header("x-lago-signature", &signature)
            },
            413,
            "payload_too_large",
        ),
        (
            "chunked body over max_body_bytes",
            {
                let big = vec![b'a'; MAX_BODY_BYTES + 1];
                let signature = hmac_signature(&current_key(), &big);
                RawRequest::new("POST", WEBHOOK_PATH)
                    .header("x-lago-signature-algorithm", "hmac")
                    .header("x-lago-signature", &signature)
                    .chunked(big.chunks(64 * 1024).map(<[u8]>::to_vec).collect())
            },
            413,
            "payload_too_large",
        ),
    ];
    for (name, request, status, error) in cases {
        let (response, upstream) = stack.deliver(request);
        assert_rejected(&response, status, error, name);
        assert!(upstream.is_empty(), "{name}: upstream saw the delivery");
    }
}

#[test]
fn a_one_mib_body_verifies() {
    let stack = Stack::start();
    let prefix = lago_body("one-mib");
    let mut body = prefix.into_bytes();
    // Pad inside JSON whitespace up to exactly max_body_bytes.
    body.resize(MAX_BODY_BYTES, b' ');
    let signature = hmac_signature(&current_key(), &body);
    let (response, upstream) = stack.deliver(
        RawRequest::post(WEBHOOK_PATH, body.clone())
            .header("x-lago-signature-algorithm", "hmac")
            .header("x-lago-signature", &signature),
    );
    assert_verified(
        &response,
        &upstream,
        &body,
        "current",
        "1 MiB over HTTP/1.1",
    );
}

#[test]
fn bodies_held_across_many_chunks_frames_and_trailers_verify() {
    let stack = Stack::start();

    let body = lago_body("http1-chunked").into_bytes();
    let signature = hmac_signature(&current_key(), &body);
    let (response, upstream) = stack.deliver(
        RawRequest::new("POST", WEBHOOK_PATH)
            .header("x-lago-signature-algorithm", "hmac")
            .header("x-lago-signature", &signature)
            .chunked(body.chunks(7).map(<[u8]>::to_vec).collect()),
    );
    assert_verified(&response, &upstream, &body, "current", "HTTP/1.1 chunked");

    let mut body = lago_body("h2-frames-trailers").into_bytes();
    body.resize(300_000, b' ');
    let signature = hmac_signature(&current_key(), &body);
    let trace = trace_id();
    let response = H2Request::new("POST", WEBHOOK_PATH)
        .header("content-type", "application/json")
        .header("x-lago-signature-algorithm", "hmac")
        .header("x-lago-signature", &signature)
        .header(TRACE_HEADER, &trace)
        .body_in_pieces(&body, 37)
        .trailer("x-lago-delivery-end", "1")
        .send_blocking(stack.port)
        .expect("h2 delivery");
    let upstream = stack.upstream_saw(&trace);
    assert_verified(
        &response,
        &upstream,
        &body,
        "current",
        "HTTP/2 frames + trailers",
    );

    // A forged body over HTTP/2 with trailers is still refused.
    let trace = trace_id();
    let response = H2Request::new("POST", WEBHOOK_PATH)
        .header("x-lago-signature-algorithm", "hmac")
        .header("x-lago-signature", &signature)
        .header(TRACE_HEADER, &trace)
        .body_in_pieces(b"{\"forged\":true}", 3)
        .trailer("x-lago-delivery-end", "1")
        .send_blocking(stack.port)
        .expect("h2 delivery");
    assert_rejected(&response, 401, "invalid_signature", "h2 forged body");
    assert!(stack.upstream_saw(&trace).is_empty());
}

#[test]
fn replay_window_answers_duplicates_but_lets_retries_after_a_failure_through() {
    let stack = Stack::start();
    let body = lago_body("replay");
    let signature = hmac_signature(&current_key(), body.as_bytes());
    let delivery = |extra: Option<(&str, &str)>| {
        let request = RawRequest::post(WEBHOOK_PATH, body.clone())
            .header("x-lago-signature-algorithm", "hmac")
            .header("x-lago-signature", &signature)
            .header("x-lago-unique-key", "delivery-replay-1");
        match extra {
            Some((name, value)) => request.header(name, value),
            None => request,
        }
    };

    // The backend fails the first attempt: Lago will retry, and the retry
    // must reach the backend.
    let (response, upstream) = stack.deliver(delivery(Some((STATUS_OVERRIDE_HEADER, "500"))));
    assert_eq!(response.status, 500, "{}", response.text());
    assert_eq!(upstream.len(), 1);

    let (response, upstream) = stack.deliver(delivery(None));
    assert_verified(
        &response,
        &upstream,
        body.as_bytes(),
        "current",
        "retry after 500",
    );

    // Now answered 2xx: a replay is answered at the edge.
    let (response, upstream) = stack.deliver(delivery(None));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json().expect("json")["status"],
        "duplicate",
        "{}",
        response.text()
    );
    assert!(upstream.is_empty(), "a duplicate reached the upstream");
}
