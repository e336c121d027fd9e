//! Lago webhooks (issue 3) on the real `dist/avb_edge.wasm` in the wasmtime
//! host: every rejection and its reply, key rotation, the body held until it
//! is verified (many chunks, trailers), JWT deliveries, the replay window
//! across workers, counters, and the headers the upstream gets. Run
//! `make plugin` first.

#[path = "support/harness.rs"]
mod harness;

use avb_edge::webhook::{sign_hmac, sign_lago_jwt};
use avb_tests::host::{Action, Host, HttpRequest};
use harness::{builder, one, reply, reply_json, values};
use serde_json::{json, Value};

const PATH: &str = "/api/v1/billing/webhooks/lago";
const LAGO_ISSUER: &str = "https://api.getlago.com";
const CURRENT_KEY: &str = "6a1e7c1e-4b7a-4f0e-9a53-2f6d8c4b1e77";
const PREVIOUS_KEY: &str = "0f3b9c2e-7d41-4a8e-b6f5-1c2d3e4f5a6b";
const PREVIOUS_KEY_ENV: &str = "LAGO_HMAC_KEY_PREVIOUS";
const LAGO_PRIVATE_PEM: &str = include_str!("../../plugin/tests/fixtures/lago/lago_private.pem");
const LAGO_PUBLIC_PEM: &str = include_str!("../../plugin/tests/fixtures/lago/lago_public.pem");
const OTHER_PRIVATE_PEM: &str = include_str!("../../plugin/tests/fixtures/lago/other_private.pem");
/// The Lago vector body of issue 3 (229 bytes).
const LAGO_BODY: &[u8] = include_bytes!("../../plugin/tests/fixtures/lago/body.json");
const MAX_BODY: usize = 1_048_576;

/// The webhook policy of the brief; the `jwt` section only when `jwt` is an
/// accepted algorithm (the filter refuses an unused one).
fn policy(algorithms: &[&str]) -> Value {
    let mut policy = json!({
        "rules": [
            {"name": "billing.lago", "methods": ["POST"], "path": PATH, "webhook": "lago"},
            {"name": "health", "methods": ["GET"], "path": "/healthz", "public": true}
        ],
        "webhooks": {"lago": {
            "provider": "lago",
            "algorithms": algorithms,
            "hmac_keys": [
                {"id": "current", "secret": CURRENT_KEY},
                {"id": "previous", "secret_env": PREVIOUS_KEY_ENV}
            ],
            "max_body_bytes": MAX_BODY,
            "replay_window_seconds": 86400
        }}
    });
    if algorithms.contains(&"jwt") {
        policy["webhooks"]["lago"]["jwt"] =
            json!({"issuer": LAGO_ISSUER, "public_key": LAGO_PUBLIC_PEM});
    }
    policy
}

fn host_with(algorithms: &[&str], workers: usize) -> Host {
    builder(&policy(algorithms))
        .env(PREVIOUS_KEY_ENV, PREVIOUS_KEY)
        .workers(workers)
        .build()
        .unwrap()
}

fn host() -> Host {
    host_with(&["hmac", "jwt"], 1)
}

/// Request headers of a delivery: the signature headers given (name, value)
/// plus the usual ones.
fn delivery_headers(
    signature: &[(&str, &str)],
    content_length: Option<usize>,
    unique_key: &str,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = [
        (":method", "POST"),
        (":path", PATH),
        (":authority", "api.example"),
        (":scheme", "https"),
        ("content-type", "application/json"),
        ("x-lago-unique-key", unique_key),
        ("user-agent", "Lago"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    if let Some(length) = content_length {
        headers.push(("content-length".to_owned(), length.to_string()));
    }
    for (name, value) in signature {
        headers.push(((*name).to_owned(), (*value).to_owned()));
    }
    headers
}

type Headers = Vec<(String, String)>;

fn refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn hmac_headers(secret: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        (
            "x-lago-signature".to_owned(),
            sign_hmac(secret.as_bytes(), body),
        ),
        ("x-lago-signature-algorithm".to_owned(), "hmac".to_owned()),
    ]
}

fn jwt_headers(private_pem: &str, issuer: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        (
            "x-lago-signature".to_owned(),
            sign_lago_jwt(private_pem, issuer, body).unwrap(),
        ),
        ("x-lago-signature-algorithm".to_owned(), "jwt".to_owned()),
    ]
}

/// Sends a delivery: headers (with content-length), then the body in one
/// chunk with end of stream. Returns the request and the last action.
fn deliver(
    host: &Host,
    worker: usize,
    signature: &[(String, String)],
    body: &[u8],
    unique_key: &str,
) -> (HttpRequest, Action) {
    let request = host.request(worker);
    let headers = delivery_headers(&refs(signature), Some(body.len()), unique_key);
    let at_headers = request.headers(&refs(&headers), false).unwrap();
    assert_eq!(
        at_headers,
        Action::Pause,
        "a delivery is held at the headers"
    );
    assert!(!request.forwarded());
    let action = request.body(body, true).unwrap();
    (request, action)
}

/// The upstream answers `status` (what the replay memory keys on).
fn upstream_answers(request: &HttpRequest, status: u16) {
    let status = status.to_string();
    request
        .response_headers(&[(":status", status.as_str())], true)
        .unwrap();
    request.done().unwrap();
}

fn metric(host: &Host, name: &str) -> i64 {
    host.metric(name)
        .unwrap_or_else(|| panic!("metric {name} is not defined: {:?}", host.metrics()))
}

/// Checks a rejection reply and that nothing reached the upstream.
fn assert_rejected(request: &HttpRequest, status: u32, error: &str) {
    assert!(!request.forwarded(), "a rejected delivery went upstream");
    assert!(request.upstream_body().is_empty());
    let reply = reply(request);
    assert_eq!(reply.status, status, "{reply:?}");
    let body = reply_json(&reply);
    assert_eq!(body["error"], error, "{body}");
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(
        !text.contains("customer"),
        "the reply echoes the body: {text}"
    );
}

fn rejected(host: &Host, reason: &str) -> i64 {
    metric(host, &format!("avb.webhook.lago.rejected.{reason}"))
}

#[test]
fn hmac_delivery_reaches_upstream_intact_with_webhook_headers() {
    let host = host();
    let mut signature = hmac_headers(CURRENT_KEY, LAGO_BODY);
    signature.push(("x-avb-webhook".to_owned(), "forged".to_owned()));
    signature.push(("x-avb-webhook-key".to_owned(), "forged".to_owned()));
    signature.push(("x-avb-subject".to_owned(), "mallory".to_owned()));
    let (request, action) = deliver(&host, 0, &signature, LAGO_BODY, "uk-1");
    assert_eq!(action, Action::Continue);
    assert!(request.forwarded());
    assert!(request.local_reply().is_none());
    assert_eq!(request.upstream_body(), LAGO_BODY);
    let upstream = request.upstream_headers();
    assert_eq!(one(&upstream, "x-avb-webhook"), "lago");
    assert_eq!(one(&upstream, "x-avb-webhook-key"), "current");
    assert_eq!(one(&upstream, "x-avb-rule"), "billing.lago");
    one(&upstream, "x-avb-decision-id");
    assert!(
        values(&upstream, "x-avb-subject").is_empty(),
        "{upstream:?}"
    );
    assert_eq!(metric(&host, "avb.webhook.lago.verified"), 1);
}

#[test]
fn previous_hmac_key_is_accepted_and_named() {
    let host = host();
    let (request, action) = deliver(
        &host,
        0,
        &hmac_headers(PREVIOUS_KEY, LAGO_BODY),
        LAGO_BODY,
        "uk-prev",
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(
        one(&request.upstream_headers(), "x-avb-webhook-key"),
        "previous"
    );
    assert_eq!(request.upstream_body(), LAGO_BODY);
}

#[test]
fn jwt_delivery_reaches_upstream_with_key_jwt() {
    let host = host();
    let (request, action) = deliver(
        &host,
        0,
        &jwt_headers(LAGO_PRIVATE_PEM, LAGO_ISSUER, LAGO_BODY),
        LAGO_BODY,
        "uk-jwt",
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(one(&request.upstream_headers(), "x-avb-webhook-key"), "jwt");
    assert_eq!(request.upstream_body(), LAGO_BODY);
}

#[test]
fn delivery_without_signature_is_401_missing_signature() {
    let host = host();
    for signature in [
        vec![("x-lago-signature-algorithm".to_owned(), "hmac".to_owned())],
        vec![
            ("x-lago-signature".to_owned(), String::new()),
            ("x-lago-signature-algorithm".to_owned(), "hmac".to_owned()),
        ],
        vec![],
    ] {
        let request = host.request(0);
        let headers = delivery_headers(&refs(&signature), Some(LAGO_BODY.len()), "uk");
        assert_eq!(
            request.headers(&refs(&headers), false).unwrap(),
            Action::Pause
        );
        assert_rejected(&request, 401, "missing_signature");
        // The body that follows never goes anywhere.
        assert_eq!(request.body(LAGO_BODY, true).unwrap(), Action::Pause);
        assert!(request.upstream_body().is_empty());
    }
    assert_eq!(rejected(&host, "missing_signature"), 3);
}

#[test]
fn unlisted_or_missing_algorithm_is_401_unsupported_algorithm() {
    let host = host_with(&["hmac"], 1);
    let good = sign_hmac(CURRENT_KEY.as_bytes(), LAGO_BODY);
    let jwt = sign_lago_jwt(LAGO_PRIVATE_PEM, LAGO_ISSUER, LAGO_BODY).unwrap();
    for signature in [
        vec![("x-lago-signature".to_owned(), good.clone())],
        vec![
            ("x-lago-signature".to_owned(), good.clone()),
            ("x-lago-signature-algorithm".to_owned(), "sha1".to_owned()),
        ],
        vec![
            ("x-lago-signature".to_owned(), jwt),
            ("x-lago-signature-algorithm".to_owned(), "jwt".to_owned()),
        ],
    ] {
        let (request, _) = deliver_rejected_at_headers(&host, &signature, LAGO_BODY);
        assert_rejected(&request, 401, "unsupported_algorithm");
    }
    assert_eq!(rejected(&host, "unsupported_algorithm"), 3);
    assert_eq!(metric(&host, "avb.webhook.lago.verified"), 0);
}

/// Headers only; the filter must already have answered.
fn deliver_rejected_at_headers(
    host: &Host,
    signature: &[(String, String)],
    body: &[u8],
) -> (HttpRequest, Action) {
    let request = host.request(0);
    let headers = delivery_headers(&refs(signature), Some(body.len()), "uk");
    let action = request.headers(&refs(&headers), false).unwrap();
    assert!(
        request.local_reply().is_some(),
        "not answered at the headers"
    );
    (request, action)
}

#[test]
fn wrong_key_altered_body_or_bad_jwt_is_401_invalid_signature() {
    let host = host();
    let mut altered = LAGO_BODY.to_vec();
    let at = altered.len() - 3;
    altered[at] ^= 1;
    let reserialized =
        serde_json::to_vec(&serde_json::from_slice::<Value>(LAGO_BODY).unwrap()).unwrap();
    assert_ne!(reserialized, LAGO_BODY);
    let cases: Vec<(Headers, Vec<u8>)> = vec![
        (
            hmac_headers("11111111-2222-3333-4444-555555555555", LAGO_BODY),
            LAGO_BODY.to_vec(),
        ),
        (hmac_headers(CURRENT_KEY, LAGO_BODY), altered.clone()),
        (hmac_headers(CURRENT_KEY, LAGO_BODY), reserialized),
        (
            jwt_headers(OTHER_PRIVATE_PEM, LAGO_ISSUER, LAGO_BODY),
            LAGO_BODY.to_vec(),
        ),
        (
            jwt_headers(LAGO_PRIVATE_PEM, "https://api.getlago.example", LAGO_BODY),
            LAGO_BODY.to_vec(),
        ),
        (
            jwt_headers(LAGO_PRIVATE_PEM, LAGO_ISSUER, LAGO_BODY),
            altered,
        ),
    ];
    for (index, (signature, body)) in cases.iter().enumerate() {
        let (request, action) = deliver(&host, 0, signature, body, "uk-bad");
        assert_eq!(action, Action::Pause, "case {index}");
        assert_rejected(&request, 401, "invalid_signature");
    }
    // A malformed signature is refused at the headers already.
    let malformed = vec![
        ("x-lago-signature".to_owned(), "not-base64!".to_owned()),
        ("x-lago-signature-algorithm".to_owned(), "hmac".to_owned()),
    ];
    let (request, _) = deliver_rejected_at_headers(&host, &malformed, LAGO_BODY);
    assert_rejected(&request, 401, "invalid_signature");
    assert_eq!(rejected(&host, "invalid_signature"), 7);
    assert_eq!(metric(&host, "avb.webhook.lago.verified"), 0);
}

#[test]
fn two_signature_headers_are_not_accepted() {
    let host = host();
    let mut signature = hmac_headers(CURRENT_KEY, LAGO_BODY);
    signature.push((
        "x-lago-signature".to_owned(),
        sign_hmac(CURRENT_KEY.as_bytes(), b"other"),
    ));
    let request = host.request(0);
    let headers = delivery_headers(&refs(&signature), Some(LAGO_BODY.len()), "uk");
    request.headers(&refs(&headers), false).unwrap();
    request.body(LAGO_BODY, true).unwrap();
    assert!(!request.forwarded());
    assert_eq!(reply(&request).status, 401);
}

#[test]
fn declared_length_over_the_cap_is_413_at_the_headers() {
    let host = host();
    let request = host.request(0);
    let headers = delivery_headers(
        &refs(&hmac_headers(CURRENT_KEY, LAGO_BODY)),
        Some(MAX_BODY + 1),
        "uk-big",
    );
    assert_eq!(
        request.headers(&refs(&headers), false).unwrap(),
        Action::Pause
    );
    assert_rejected(&request, 413, "payload_too_large");
    assert_eq!(
        request.body(&vec![b'x'; 1000], false).unwrap(),
        Action::Pause
    );
    assert!(request.upstream_body().is_empty());
    assert_eq!(rejected(&host, "payload_too_large"), 1);
}

#[test]
fn undeclared_body_over_the_cap_is_413_mid_stream_without_end_of_stream() {
    let host = host();
    let request = host.request(0);
    let headers = delivery_headers(&refs(&hmac_headers(CURRENT_KEY, LAGO_BODY)), None, "uk-big");
    assert_eq!(
        request.headers(&refs(&headers), false).unwrap(),
        Action::Pause
    );
    let chunk = vec![b'a'; 300 * 1024];
    for _ in 0..3 {
        assert_eq!(request.body(&chunk, false).unwrap(), Action::Pause);
        assert!(request.local_reply().is_none(), "not over the cap yet");
    }
    // The fourth chunk takes the buffered size to 1.2 MiB: decided now, not
    // at end of stream.
    assert_eq!(request.body(&chunk, false).unwrap(), Action::Pause);
    assert_rejected(&request, 413, "payload_too_large");
    assert_eq!(rejected(&host, "payload_too_large"), 1);
}

/// A 200 KB body of printable bytes (valid UTF-8, so JWT-signable too).
fn big_body() -> Vec<u8> {
    let mut body = b"{\"webhook_type\":\"invoice.created\",\"pad\":\"".to_vec();
    while body.len() < 200 * 1024 - 2 {
        body.push(b'a' + (body.len() % 26) as u8);
    }
    body.extend_from_slice(b"\"}");
    body
}

#[test]
fn body_in_many_chunks_is_held_until_end_of_stream_then_sent_intact() {
    let host = host();
    let body = big_body();
    let request = host.request(0);
    let headers = delivery_headers(
        &refs(&hmac_headers(CURRENT_KEY, &body)),
        Some(body.len()),
        "uk-chunks",
    );
    assert_eq!(
        request.headers(&refs(&headers), false).unwrap(),
        Action::Pause
    );
    let chunks: Vec<&[u8]> = body.chunks(body.len().div_ceil(26)).collect();
    assert_eq!(chunks.len(), 26);
    for chunk in &chunks[..25] {
        assert_eq!(request.body(chunk, false).unwrap(), Action::Pause);
        assert!(
            !request.forwarded(),
            "headers went upstream before the body was verified"
        );
        assert!(request.upstream_body().is_empty());
    }
    assert_eq!(request.body(chunks[25], true).unwrap(), Action::Continue);
    assert!(request.forwarded());
    assert_eq!(request.upstream_body(), body);
    assert_eq!(
        one(&request.upstream_headers(), "x-avb-webhook-key"),
        "current"
    );
}

#[test]
fn chunked_jwt_delivery_is_verified_over_the_whole_body() {
    let host = host();
    let body = big_body();
    let request = host.request(0);
    let headers = delivery_headers(
        &refs(&jwt_headers(LAGO_PRIVATE_PEM, LAGO_ISSUER, &body)),
        None,
        "uk-jwt-chunks",
    );
    request.headers(&refs(&headers), false).unwrap();
    let chunks: Vec<&[u8]> = body.chunks(8192).collect();
    let (last, rest) = chunks.split_last().unwrap();
    for chunk in rest {
        assert_eq!(request.body(chunk, false).unwrap(), Action::Pause);
    }
    assert_eq!(request.body(last, true).unwrap(), Action::Continue);
    assert_eq!(request.upstream_body(), body);
    assert_eq!(one(&request.upstream_headers(), "x-avb-webhook-key"), "jwt");
}

#[test]
fn body_ended_by_trailers_is_verified_at_the_trailers() {
    let host = host();
    let request = host.request(0);
    let headers = delivery_headers(
        &refs(&hmac_headers(CURRENT_KEY, LAGO_BODY)),
        None,
        "uk-trailers",
    );
    request.headers(&refs(&headers), false).unwrap();
    let (first, second) = LAGO_BODY.split_at(100);
    assert_eq!(request.body(first, false).unwrap(), Action::Pause);
    assert_eq!(request.body(second, false).unwrap(), Action::Pause);
    assert!(!request.forwarded());
    assert_eq!(
        request.trailers(&[("x-trailer", "done")]).unwrap(),
        Action::Continue
    );
    assert!(request.forwarded());
    assert_eq!(request.upstream_body(), LAGO_BODY);
    assert_eq!(
        one(&request.upstream_trailers().unwrap(), "x-trailer"),
        "done"
    );
    assert_eq!(one(&request.upstream_headers(), "x-avb-webhook"), "lago");
}

#[test]
fn tampered_body_ended_by_trailers_is_rejected() {
    let host = host();
    let request = host.request(0);
    let headers = delivery_headers(&refs(&hmac_headers(CURRENT_KEY, LAGO_BODY)), None, "uk-t");
    request.headers(&refs(&headers), false).unwrap();
    request.body(&LAGO_BODY[..200], false).unwrap();
    request.trailers(&[("x-trailer", "done")]).unwrap();
    assert_rejected(&request, 401, "invalid_signature");
    assert!(request.upstream_trailers().is_none());
}

#[test]
fn delivery_answered_2xx_is_a_duplicate_within_the_window() {
    let host = host();
    let signature = hmac_headers(CURRENT_KEY, LAGO_BODY);
    let (first, action) = deliver(&host, 0, &signature, LAGO_BODY, "uk-dup");
    assert_eq!(action, Action::Continue);
    upstream_answers(&first, 200);

    let (again, action) = deliver(&host, 0, &signature, LAGO_BODY, "uk-dup");
    assert_eq!(action, Action::Pause);
    assert!(!again.forwarded());
    let reply = reply(&again);
    assert_eq!(reply.status, 200);
    let body = reply_json(&reply);
    assert_eq!(body["status"], "duplicate", "{body}");
    assert_eq!(metric(&host, "avb.webhook.lago.duplicate"), 1);
    assert_eq!(metric(&host, "avb.webhook.lago.verified"), 1);

    // Past the window the same delivery goes through again.
    host.advance(std::time::Duration::from_secs(86400 + 1));
    let (later, action) = deliver(&host, 0, &signature, LAGO_BODY, "uk-dup");
    assert_eq!(action, Action::Continue);
    assert!(later.forwarded());
}

#[test]
fn retry_after_a_500_goes_through_and_is_not_a_duplicate() {
    let host = host();
    let signature = hmac_headers(CURRENT_KEY, LAGO_BODY);
    let (first, _) = deliver(&host, 0, &signature, LAGO_BODY, "uk-retry");
    upstream_answers(&first, 500);
    let (retry, action) = deliver(&host, 0, &signature, LAGO_BODY, "uk-retry");
    assert_eq!(action, Action::Continue);
    assert!(retry.forwarded());
    assert_eq!(retry.upstream_body(), LAGO_BODY);
    upstream_answers(&retry, 204);
    let (third, action) = deliver(&host, 0, &signature, LAGO_BODY, "uk-retry");
    assert_eq!(action, Action::Pause);
    assert_eq!(reply(&third).status, 200);
    assert_eq!(metric(&host, "avb.webhook.lago.duplicate"), 1);
    assert_eq!(metric(&host, "avb.webhook.lago.verified"), 2);
}

#[test]
fn duplicates_are_recognised_across_workers() {
    let host = host_with(&["hmac", "jwt"], 2);
    let signature = jwt_headers(LAGO_PRIVATE_PEM, LAGO_ISSUER, LAGO_BODY);
    let (first, action) = deliver(&host, 0, &signature, LAGO_BODY, "uk-workers");
    assert_eq!(action, Action::Continue);
    upstream_answers(&first, 202);
    let (on_other_worker, action) = deliver(&host, 1, &signature, LAGO_BODY, "uk-workers");
    assert_eq!(action, Action::Pause);
    assert!(!on_other_worker.forwarded());
    assert_eq!(reply_json(&reply(&on_other_worker))["status"], "duplicate");
    assert_eq!(metric(&host, "avb.webhook.lago.duplicate"), 1);
}

#[test]
fn a_different_body_is_not_a_duplicate() {
    let host = host();
    let (first, _) = deliver(
        &host,
        0,
        &hmac_headers(CURRENT_KEY, LAGO_BODY),
        LAGO_BODY,
        "uk-a",
    );
    upstream_answers(&first, 200);
    let other = br#"{"webhook_type":"customer.updated"}"#;
    let (second, action) = deliver(&host, 0, &hmac_headers(CURRENT_KEY, other), other, "uk-b");
    assert_eq!(action, Action::Continue);
    assert!(second.forwarded());
    assert_eq!(metric(&host, "avb.webhook.lago.duplicate"), 0);
}

#[test]
fn rejection_counters_are_per_reason() {
    let host = host();
    let (missing, _) = deliver_rejected_at_headers(
        &host,
        &[("x-lago-signature-algorithm".to_owned(), "hmac".to_owned())],
        LAGO_BODY,
    );
    assert_rejected(&missing, 401, "missing_signature");
    let (invalid, _) = deliver(
        &host,
        0,
        &hmac_headers(PREVIOUS_KEY, b"something else"),
        LAGO_BODY,
        "uk",
    );
    assert_rejected(&invalid, 401, "invalid_signature");
    assert_eq!(rejected(&host, "missing_signature"), 1);
    assert_eq!(rejected(&host, "invalid_signature"), 1);
    assert_eq!(rejected(&host, "unsupported_algorithm"), 0);
    assert_eq!(rejected(&host, "payload_too_large"), 0);
    assert_eq!(metric(&host, "avb.webhook.lago.verified"), 0);
    assert_eq!(host.vm_failure(0), None);
}

#[test]
fn webhook_rule_needs_no_bearer_token_and_ignores_one() {
    let host = host();
    let mut signature = hmac_headers(CURRENT_KEY, LAGO_BODY);
    signature.push(("authorization".to_owned(), "Bearer garbage".to_owned()));
    let (request, action) = deliver(&host, 0, &signature, LAGO_BODY, "uk-auth");
    assert_eq!(action, Action::Continue);
    assert!(request.forwarded());
    assert!(values(&request.upstream_headers(), "x-avb-subject").is_empty());
}

#[test]
fn delivery_without_a_body_is_verified_over_the_empty_body() {
    let host = host();
    let request = host.request(0);
    let headers = delivery_headers(&refs(&hmac_headers(CURRENT_KEY, b"")), None, "uk-empty");
    assert_eq!(
        request.headers(&refs(&headers), true).unwrap(),
        Action::Continue
    );
    assert!(request.forwarded());
    assert_eq!(
        one(&request.upstream_headers(), "x-avb-webhook-key"),
        "current"
    );

    let request = host.request(0);
    let headers = delivery_headers(&refs(&hmac_headers(CURRENT_KEY, b"x")), None, "uk-empty");
    assert_eq!(
        request.headers(&refs(&headers), true).unwrap(),
        Action::Pause
    );
    assert_rejected(&request, 401, "invalid_signature");
}

#[test]
fn hostile_webhook_headers_and_bodies_never_trap_the_vm() {
    let host = host();
    let huge = "A".repeat(300_000);
    let dots = format!(
        "{}.{}.{}",
        "e".repeat(40_000),
        "e".repeat(40_000),
        "e".repeat(40_000)
    );
    let jwt_like = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.{}",
        "eyJkYXRhIjoi".repeat(1000),
        "A".repeat(342)
    );
    let cases: Vec<(Headers, Option<usize>)> = vec![
        (
            vec![
                ("x-lago-signature".to_owned(), huge.clone()),
                ("x-lago-signature-algorithm".to_owned(), "hmac".to_owned()),
            ],
            Some(LAGO_BODY.len()),
        ),
        (
            vec![
                ("x-lago-signature".to_owned(), dots),
                ("x-lago-signature-algorithm".to_owned(), "jwt".to_owned()),
            ],
            None,
        ),
        (
            vec![
                ("x-lago-signature".to_owned(), jwt_like),
                ("x-lago-signature-algorithm".to_owned(), "jwt".to_owned()),
            ],
            None,
        ),
        (
            vec![
                ("x-lago-signature".to_owned(), "====".repeat(11)),
                ("x-lago-signature-algorithm".to_owned(), huge.clone()),
                ("x-lago-unique-key".to_owned(), huge.clone()),
            ],
            None,
        ),
        (
            vec![
                (
                    "x-lago-signature".to_owned(),
                    sign_hmac(CURRENT_KEY.as_bytes(), LAGO_BODY),
                ),
                ("x-lago-signature-algorithm".to_owned(), "hmac".to_owned()),
                ("content-length".to_owned(), "-1".to_owned()),
            ],
            None,
        ),
        (
            vec![
                (
                    "x-lago-signature".to_owned(),
                    sign_hmac(CURRENT_KEY.as_bytes(), LAGO_BODY),
                ),
                ("x-lago-signature-algorithm".to_owned(), "hmac".to_owned()),
                (
                    "content-length".to_owned(),
                    "99999999999999999999999".to_owned(),
                ),
            ],
            None,
        ),
    ];
    for (index, (signature, length)) in cases.iter().enumerate() {
        let request = host.request(0);
        let headers = delivery_headers(&refs(signature), *length, "uk-hostile");
        let at_headers = request.headers(&refs(&headers), false);
        assert!(at_headers.is_ok(), "case {index}: {at_headers:?}");
        let body = request.body(LAGO_BODY, true);
        assert!(body.is_ok(), "case {index}: {body:?}");
        // Only the genuine signature with a nonsense length may pass, and
        // then with the body intact.
        if request.forwarded() {
            assert_eq!(request.upstream_body(), LAGO_BODY, "case {index}");
        } else {
            let status = reply(&request).status;
            assert!([401, 413].contains(&status), "case {index}: {status}");
        }
        request.done().unwrap();
        assert_eq!(host.vm_failure(0), None, "case {index}");
    }
    // A non-UTF-8 body under a JWT signature is refused, not a trap.
    let (request, _) = deliver(
        &host,
        0,
        &jwt_headers(LAGO_PRIVATE_PEM, LAGO_ISSUER, LAGO_BODY),
        &[0xff, 0xfe, 0xfd],
        "uk-bytes",
    );
    assert_rejected(&request, 401, "invalid_signature");
    assert_eq!(host.vm_failure(0), None);
}

#[test]
fn a_delivery_held_across_a_policy_change_is_verified_by_the_policy_it_started_with() {
    let host = host();
    let request = host.request(0);
    let headers = delivery_headers(
        &refs(&hmac_headers(CURRENT_KEY, LAGO_BODY)),
        Some(LAGO_BODY.len()),
        "uk-reconfigure",
    );
    assert_eq!(
        request.headers(&refs(&headers), false).unwrap(),
        Action::Pause
    );
    // The new policy no longer knows the key this delivery was signed with.
    let mut rotated = policy(&["hmac", "jwt"]);
    rotated["webhooks"]["lago"]["hmac_keys"] =
        json!([{"id": "next", "secret": "99999999-8888-7777-6666-555555555555"}]);
    host.reconfigure(rotated.to_string()).unwrap();
    assert_eq!(request.body(LAGO_BODY, true).unwrap(), Action::Continue);
    assert_eq!(
        one(&request.upstream_headers(), "x-avb-webhook-key"),
        "current"
    );
    // A new delivery signed with the old key is refused by the new policy.
    let (after, _) = deliver(
        &host,
        0,
        &hmac_headers(CURRENT_KEY, LAGO_BODY),
        LAGO_BODY,
        "uk-2",
    );
    assert_rejected(&after, 401, "invalid_signature");
}
