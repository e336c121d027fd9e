//! Audit delivery from the filter (issue 4) on the real `dist/avb_edge.wasm`
//! in the wasmtime host: events queued per worker on the shared queue,
//! shipped on the tick as batches posted to the companion cluster, retried
//! with backoff after failures, dropped (and counted) only when the queue is
//! full, and never carrying a token, signature or body. Run `make plugin`
//! first.

#[path = "support/harness.rs"]
mod harness;

use avb_edge::webhook::sign_hmac;
use avb_tests::host::{Host, HttpCall, HttpRequest};
use harness::{bearer_identity, builder, one, reply, token, values};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const CLUSTER: &str = "avb_companion";
const AUTHORITY: &str = "avb-companion";
const INGEST_PATH: &str = "/v1/audit/events";
const INGEST_TOKEN_ENV: &str = "AVB_INGEST_TOKEN";
const INGEST_TOKEN: &str = "harness-ingest-token-not-secret";
const LAGO_KEY: &str = "6a1e7c1e-4b7a-4f0e-9a53-2f6d8c4b1e77";
const WEBHOOK_PATH: &str = "/api/v1/billing/webhooks/lago";
/// [`harness::NOW_SECS`] as the events' RFC 3339 time.
const NOW_RFC3339: &str = "2027-01-15T08:00:00.000Z";

struct Audit {
    events: &'static str,
    batch_size: usize,
    queue_limit: usize,
}

fn policy(audit: Audit) -> Value {
    json!({
        "identity": bearer_identity(),
        "role_inherits": {"ADMIN": ["OPERATOR", "DEVELOPER"]},
        "rules": [
            {"name": "audit.logs.list", "methods": ["GET"], "path": "/api/v1/audit/logs", "any_of": ["OPERATOR"]},
            {"name": "quiet", "methods": ["GET"], "path": "/api/v1/quiet", "any_of": ["OPERATOR"], "audit": "none"},
            {"name": "llm.test", "methods": ["POST"], "path": "/api/v1/llm/test", "any_of": ["DEVELOPER"], "mode": "dry_run"},
            {"name": "health", "methods": ["GET"], "path": "/healthz", "public": true},
            {"name": "billing.lago", "methods": ["POST"], "path": WEBHOOK_PATH, "webhook": "lago"}
        ],
        "webhooks": {"lago": {
            "provider": "lago",
            "algorithms": ["hmac"],
            "hmac_keys": [{"id": "current", "secret": LAGO_KEY}]
        }},
        "audit": {
            "cluster": CLUSTER,
            "authority": AUTHORITY,
            "path": INGEST_PATH,
            "token_env": INGEST_TOKEN_ENV,
            "events": audit.events,
            "batch_size": audit.batch_size,
            "flush_interval_ms": 100,
            "queue_limit": audit.queue_limit,
            "timeout_ms": 2000
        }
    })
}

fn host_with(audit: Audit, workers: usize) -> Host {
    builder(&policy(audit))
        .env(INGEST_TOKEN_ENV, INGEST_TOKEN)
        .cluster(CLUSTER)
        .workers(workers)
        .build()
        .unwrap()
}

fn denied_only() -> Audit {
    Audit {
        events: "denied",
        batch_size: 3,
        queue_limit: 100,
    }
}

fn get(host: &Host, worker: usize, path: &str, bearer: Option<&str>) -> HttpRequest {
    let authorization = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", "api.example"),
        ("x-request-id", "req-42"),
    ];
    if let Some(value) = &authorization {
        headers.push(("authorization", value.as_str()));
    }
    let request = host.request(worker);
    request.set_property(&["source", "address"], "10.1.2.3:55000");
    request.headers(&headers, true).unwrap();
    request.done().unwrap();
    request
}

/// A denied request (401, no token) on `worker`; returns its decision id.
fn denied(host: &Host, worker: usize) -> String {
    let request = get(host, worker, "/api/v1/audit/logs", None);
    one(&reply(&request).headers, "x-avb-decision-id")
}

fn metric(host: &Host, name: &str) -> i64 {
    host.metric(name)
        .unwrap_or_else(|| panic!("metric {name} is not defined: {:?}", host.metrics()))
}

/// The events of one ingest call, checking the call itself.
fn events_of(call: &HttpCall) -> Vec<Value> {
    assert_eq!(call.upstream, CLUSTER);
    assert_eq!(one(&call.headers, ":method"), "POST");
    assert_eq!(one(&call.headers, ":path"), INGEST_PATH);
    assert_eq!(one(&call.headers, ":authority"), AUTHORITY);
    assert_eq!(
        one(&call.headers, "authorization"),
        format!("Bearer {INGEST_TOKEN}")
    );
    assert_eq!(one(&call.headers, "content-type"), "application/json");
    let body: Value = serde_json::from_slice(&call.body)
        .unwrap_or_else(|e| panic!("batch is not JSON ({e}): {:?}", call.body));
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 1, "only `events`: {body}");
    object["events"].as_array().unwrap().clone()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Pending calls, oldest first.
fn calls(host: &Host) -> Vec<HttpCall> {
    let mut calls = host.http_calls();
    calls.sort_by_key(|c| c.token);
    calls
}

fn acknowledge_all(host: &Host) -> Vec<String> {
    let mut shipped = Vec::new();
    for call in calls(host) {
        shipped.extend(ids(&events_of(&call)));
        host.respond_http_call(call.token, 200, &[], br#"{"accepted":1,"duplicates":0}"#)
            .unwrap();
    }
    shipped
}

#[test]
fn configured_audit_sets_the_flush_interval_as_tick_period() {
    let host = host_with(denied_only(), 2);
    assert_eq!(host.tick_period(0), Some(Duration::from_millis(100)));
    assert_eq!(host.tick_period(1), Some(Duration::from_millis(100)));
}

#[test]
fn denials_are_shipped_on_tick_as_one_post_with_the_fields_of_issue_4() {
    let host = host_with(denied_only(), 1);
    let operator = token("olga", &["OPERATOR"], Some("tenant-9"));
    let developer = token("dev", &["DEVELOPER"], Some("tenant-9"));
    let unauthenticated = get(&host, 0, "/api/v1/audit/logs?secret=hunter2", None);
    let forbidden = get(&host, 0, "/api/v1/audit/logs", Some(&developer));
    let allowed = get(&host, 0, "/api/v1/audit/logs", Some(&operator));
    assert!(allowed.forwarded());
    assert!(
        host.http_calls().is_empty(),
        "nothing is sent before the tick while the batch is not full"
    );
    host.tick(0).unwrap();
    let calls = calls(&host);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.timeout_ms, 2000);
    let events = events_of(call);
    assert_eq!(events.len(), 2, "events: denied only: {events:?}");

    let first = &events[0];
    assert_eq!(
        first["id"],
        json!(one(&reply(&unauthenticated).headers, "x-avb-decision-id"))
    );
    assert_eq!(first["time"], NOW_RFC3339);
    assert_eq!(first["kind"], "authz.unauthenticated");
    assert_eq!(first["outcome"], "deny");
    assert_eq!(first["status"], 401);
    assert!(first["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(first["rule"], "audit.logs.list");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/api/v1/audit/logs", "no query string");
    assert_eq!(first["source"], "10.1.2.3:55000");
    assert_eq!(first["request_id"], "req-42");
    assert!(first["policy_revision"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));

    let second = &events[1];
    assert_eq!(
        second["id"],
        json!(one(&reply(&forbidden).headers, "x-avb-decision-id"))
    );
    assert_eq!(second["kind"], "authz.denied");
    assert_eq!(second["outcome"], "deny");
    assert_eq!(second["status"], 403);
    assert_eq!(second["subject"], "dev");
    assert_eq!(second["tenant"], "tenant-9");
    assert_eq!(second["roles"], json!(["DEVELOPER"]));
    assert_eq!(second["policy_revision"], first["policy_revision"]);

    let text = String::from_utf8_lossy(&call.body).into_owned();
    for secret in [&developer, &operator, "hunter2"] {
        assert!(!text.contains(secret), "the batch carries a secret: {text}");
    }
    for event in &events {
        let fields: BTreeSet<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let known: BTreeSet<&str> = [
            "id",
            "time",
            "kind",
            "outcome",
            "status",
            "reason",
            "rule",
            "method",
            "path",
            "subject",
            "tenant",
            "roles",
            "source",
            "request_id",
            "policy_revision",
            "details",
        ]
        .into_iter()
        .collect();
        assert!(fields.is_subset(&known), "unexpected fields: {fields:?}");
    }

    assert_eq!(host.queue_len("avb_audit"), Some(0));
    host.respond_http_call(call.token, 200, &[], b"{}").unwrap();
    assert_eq!(metric(&host, "avb.audit.sent"), 2);
    assert_eq!(metric(&host, "avb.audit.failed"), 0);
    assert_eq!(metric(&host, "avb.audit.dropped"), 0);
    assert_eq!(metric(&host, "avb.audit.queue_depth"), 0);
    // Nothing left: the next tick sends nothing.
    host.tick(0).unwrap();
    assert!(host.http_calls().is_empty());
}

#[test]
fn events_all_records_allowed_requests_and_dry_run_denials() {
    let host = host_with(
        Audit {
            events: "all",
            batch_size: 10,
            queue_limit: 100,
        },
        1,
    );
    let operator = token("olga", &["OPERATOR"], None);
    get(&host, 0, "/api/v1/audit/logs", Some(&operator));
    get(&host, 0, "/api/v1//logs", Some(&operator));
    let dry = host.request(0);
    let authorization = format!("Bearer {operator}");
    dry.headers(
        &[
            (":method", "POST"),
            (":path", "/api/v1/llm/test"),
            (":authority", "api.example"),
            ("authorization", authorization.as_str()),
        ],
        true,
    )
    .unwrap();
    assert!(dry.forwarded());
    host.tick(0).unwrap();
    let calls = calls(&host);
    assert_eq!(calls.len(), 1);
    let events = events_of(&calls[0]);
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["authz.allowed", "request.rejected", "authz.dry_run_denied"]
    );
    assert_eq!(events[0]["outcome"], "allow");
    assert_eq!(events[0]["subject"], "olga");
    assert_eq!(events[1]["status"], 400);
    assert_eq!(events[1]["outcome"], "deny");
    assert_eq!(
        events[2]["outcome"], "allow",
        "a dry-run denial was let through"
    );
    assert_eq!(events[2]["status"], 403, "the status it would have got");
    assert_eq!(events[2]["rule"], "llm.test");
}

#[test]
fn batches_hold_at_most_batch_size_events_and_lose_none() {
    let host = host_with(denied_only(), 1);
    let mut expected = BTreeSet::new();
    for _ in 0..7 {
        expected.insert(denied(&host, 0));
    }
    // Two full chunks were sealed onto the shared queue already.
    assert_eq!(host.queue_len("avb_audit"), Some(2));
    host.tick(0).unwrap();
    let calls = calls(&host);
    let sizes: Vec<usize> = calls.iter().map(|c| events_of(c).len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let shipped: BTreeSet<String> = acknowledge_all(&host).into_iter().collect();
    assert_eq!(shipped, expected);
    assert_eq!(metric(&host, "avb.audit.sent"), 7);
    assert_eq!(metric(&host, "avb.audit.queue_depth"), 0);
}

#[test]
fn failed_call_and_503_are_retried_with_backoff_until_acknowledged() {
    let host = host_with(denied_only(), 1);
    let first = denied(&host, 0);
    let second = denied(&host, 0);
    host.tick(0).unwrap();
    let call = calls(&host).pop().unwrap();
    assert_eq!(ids(&events_of(&call)), [first.clone(), second.clone()]);

    // A reset or timeout: no answer headers.
    host.fail_http_call(call.token).unwrap();
    assert_eq!(metric(&host, "avb.audit.failed"), 1);
    host.tick(0).unwrap();
    assert!(host.http_calls().is_empty(), "retried before its backoff");
    host.advance(Duration::from_millis(100));
    host.tick(0).unwrap();
    let retry = calls(&host).pop().expect("retried after the backoff");
    assert_eq!(retry.body, call.body, "the same batch is retried");

    // The companion is unavailable: the backoff doubles.
    host.respond_http_call(retry.token, 503, &[], b"unavailable")
        .unwrap();
    assert_eq!(metric(&host, "avb.audit.failed"), 2);
    host.advance(Duration::from_millis(100));
    host.tick(0).unwrap();
    assert!(host.http_calls().is_empty(), "second backoff is longer");
    host.advance(Duration::from_millis(100));
    host.tick(0).unwrap();
    let last = calls(&host)
        .pop()
        .expect("retried after the second backoff");
    assert_eq!(ids(&events_of(&last)), [first, second]);
    host.respond_http_call(last.token, 200, &[], b"{}").unwrap();
    assert_eq!(metric(&host, "avb.audit.sent"), 2);
    assert_eq!(metric(&host, "avb.audit.dropped"), 0);
    assert_eq!(metric(&host, "avb.audit.queue_depth"), 0);
    // Sent once: nothing further goes out.
    host.advance(Duration::from_secs(60));
    host.tick(0).unwrap();
    assert!(host.http_calls().is_empty());
}

#[test]
fn new_events_keep_flowing_while_a_failed_batch_waits_for_its_backoff() {
    let host = host_with(denied_only(), 1);
    let waiting = denied(&host, 0);
    host.tick(0).unwrap();
    let call = calls(&host).pop().unwrap();
    host.fail_http_call(call.token).unwrap();
    let fresh = denied(&host, 0);
    host.tick(0).unwrap();
    let shipped = acknowledge_all(&host);
    assert_eq!(shipped, [fresh]);
    host.advance(Duration::from_millis(100));
    host.tick(0).unwrap();
    assert_eq!(acknowledge_all(&host), [waiting]);
    assert_eq!(metric(&host, "avb.audit.sent"), 2);
}

#[test]
fn nothing_is_dropped_while_the_queue_has_room() {
    let host = host_with(
        Audit {
            events: "denied",
            batch_size: 2,
            queue_limit: 6,
        },
        1,
    );
    let expected: Vec<String> = (0..6).map(|_| denied(&host, 0)).collect();
    assert_eq!(metric(&host, "avb.audit.dropped"), 0);
    assert_eq!(metric(&host, "avb.audit.queue_depth"), 6);
    host.tick(0).unwrap();
    let shipped: BTreeSet<String> = acknowledge_all(&host).into_iter().collect();
    assert_eq!(shipped, expected.into_iter().collect());
    assert_eq!(metric(&host, "avb.audit.dropped"), 0);
}

#[test]
fn a_full_queue_drops_the_oldest_events_and_counts_them() {
    let host = host_with(
        Audit {
            events: "denied",
            batch_size: 2,
            queue_limit: 6,
        },
        1,
    );
    let all: Vec<String> = (0..10).map(|_| denied(&host, 0)).collect();
    assert_eq!(metric(&host, "avb.audit.dropped"), 4);
    assert_eq!(metric(&host, "avb.audit.queue_depth"), 6);
    host.tick(0).unwrap();
    let shipped = acknowledge_all(&host);
    assert_eq!(shipped, all[4..].to_vec(), "the newest survive, in order");
    assert_eq!(metric(&host, "avb.audit.sent"), 6);
    assert_eq!(metric(&host, "avb.audit.queue_depth"), 0);
}

#[test]
fn unacknowledged_events_count_against_the_queue_limit() {
    let host = host_with(
        Audit {
            events: "denied",
            batch_size: 2,
            queue_limit: 4,
        },
        1,
    );
    let in_flight: Vec<String> = (0..4).map(|_| denied(&host, 0)).collect();
    host.tick(0).unwrap();
    let pending = calls(&host);
    assert_eq!(pending.len(), 2);
    for call in &pending {
        host.fail_http_call(call.token).unwrap();
    }
    // Two more while both batches wait for a retry: the oldest retry goes.
    let newer: Vec<String> = (0..2).map(|_| denied(&host, 0)).collect();
    assert_eq!(metric(&host, "avb.audit.dropped"), 2);
    host.advance(Duration::from_millis(100));
    host.tick(0).unwrap();
    let shipped: BTreeSet<String> = acknowledge_all(&host).into_iter().collect();
    let expected: BTreeSet<String> = in_flight[2..].iter().chain(&newer).cloned().collect();
    assert_eq!(shipped, expected);
    assert_eq!(metric(&host, "avb.audit.sent"), 4);
}

#[test]
fn events_from_two_workers_are_shipped_in_batches() {
    let host = host_with(denied_only(), 2);
    let mut expected = BTreeSet::new();
    // Worker 1 fills a chunk, which goes onto the shared queue at once.
    for _ in 0..3 {
        expected.insert(denied(&host, 1));
    }
    expected.insert(denied(&host, 0));
    // Worker 0's tick ships its own event and worker 1's full chunk.
    host.tick(0).unwrap();
    let first_round: BTreeSet<String> = acknowledge_all(&host).into_iter().collect();
    assert_eq!(first_round, expected);
    // A partial chunk of worker 1 leaves on worker 1's tick.
    let late = denied(&host, 1);
    host.tick(0).unwrap();
    assert!(
        host.http_calls().is_empty(),
        "worker 1's open chunk is its own"
    );
    host.tick(1).unwrap();
    assert_eq!(acknowledge_all(&host), [late]);
    assert_eq!(metric(&host, "avb.audit.sent"), 5);
    assert_eq!(metric(&host, "avb.audit.queue_depth"), 0);
}

#[test]
fn rule_level_audit_none_suppresses_its_events() {
    let host = host_with(
        Audit {
            events: "all",
            batch_size: 10,
            queue_limit: 100,
        },
        1,
    );
    let operator = token("olga", &["OPERATOR"], None);
    let developer = token("dev", &["DEVELOPER"], None);
    assert!(get(&host, 0, "/api/v1/quiet", Some(&operator)).forwarded());
    assert_eq!(
        reply(&get(&host, 0, "/api/v1/quiet", Some(&developer))).status,
        403
    );
    assert_eq!(reply(&get(&host, 0, "/api/v1/quiet", None)).status, 401);
    host.tick(0).unwrap();
    assert!(host.http_calls().is_empty(), "{:?}", host.http_calls());
    // The counters still see them.
    assert_eq!(metric(&host, "avb.rule.quiet.allowed"), 1);
    assert_eq!(metric(&host, "avb.rule.quiet.denied"), 1);
    assert_eq!(metric(&host, "avb.rule.quiet.unauthenticated"), 1);
    // Another rule of the same policy is still audited.
    get(&host, 0, "/healthz", None);
    host.tick(0).unwrap();
    assert_eq!(calls(&host).len(), 1);
}

#[test]
fn webhook_events_carry_hash_size_and_unique_key_never_signature_or_body() {
    let host = host_with(
        Audit {
            events: "all",
            batch_size: 10,
            queue_limit: 100,
        },
        1,
    );
    let body =
        br#"{"webhook_type":"customer.created","customer":{"external_id":"cust_secret_77"}}"#;
    let good = sign_hmac(LAGO_KEY.as_bytes(), body);
    let bad = sign_hmac(b"wrong-key", body);
    let mut decisions = Vec::new();
    for signature in [&good, &bad] {
        let request = host.request(0);
        let length = body.len().to_string();
        request
            .headers(
                &[
                    (":method", "POST"),
                    (":path", WEBHOOK_PATH),
                    (":authority", "api.example"),
                    ("content-length", length.as_str()),
                    ("x-lago-signature", signature.as_str()),
                    ("x-lago-signature-algorithm", "hmac"),
                    ("x-lago-unique-key", "delivery-1"),
                ],
                false,
            )
            .unwrap();
        request.body(body, true).unwrap();
        decisions.push(request);
    }
    assert!(decisions[0].forwarded());
    assert_eq!(reply(&decisions[1]).status, 401);
    host.tick(0).unwrap();
    let calls = calls(&host);
    assert_eq!(calls.len(), 1);
    let events = events_of(&calls[0]);
    assert_eq!(events.len(), 2);
    let sha = {
        use sha2::{Digest, Sha256};
        Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(events[0]["kind"], "webhook.verified");
    assert_eq!(events[0]["outcome"], "allow");
    assert_eq!(events[0]["details"]["key_id"], "current");
    assert_eq!(events[1]["kind"], "webhook.rejected");
    assert_eq!(events[1]["outcome"], "deny");
    assert_eq!(events[1]["status"], 401);
    assert_eq!(events[1]["reason"], "invalid_signature");
    assert_eq!(
        events[1]["id"],
        json!(one(&reply(&decisions[1]).headers, "x-avb-decision-id"))
    );
    for event in &events {
        assert_eq!(event["rule"], "billing.lago");
        assert_eq!(event["details"]["webhook"], "lago");
        assert_eq!(event["details"]["unique_key"], "delivery-1");
        assert_eq!(event["details"]["body_sha256"], json!(sha));
        assert_eq!(event["details"]["body_size"], body.len());
    }
    let text = String::from_utf8_lossy(&calls[0].body).into_owned();
    for secret in [good.as_str(), bad.as_str(), "cust_secret_77", LAGO_KEY] {
        assert!(!text.contains(secret), "the batch carries {secret}: {text}");
    }
    assert!(values(&calls[0].headers, "x-lago-signature").is_empty());
}

#[test]
fn a_backlog_beyond_the_calls_in_flight_drains_as_batches_are_acknowledged() {
    let host = host_with(
        Audit {
            events: "denied",
            batch_size: 2,
            queue_limit: 100,
        },
        1,
    );
    let expected: Vec<String> = (0..12).map(|_| denied(&host, 0)).collect();
    host.tick(0).unwrap();
    let first = calls(&host);
    assert!(
        (1..6).contains(&first.len()),
        "a few batches in flight at most, not all six: {}",
        first.len()
    );
    // Each acknowledgement makes room for the next batch without a tick.
    let mut shipped = Vec::new();
    while let Some(call) = calls(&host).into_iter().next() {
        shipped.extend(ids(&events_of(&call)));
        host.respond_http_call(call.token, 200, &[], b"{}").unwrap();
    }
    shipped.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(shipped, expected);
    assert_eq!(metric(&host, "avb.audit.sent"), 12);
    assert_eq!(metric(&host, "avb.audit.queue_depth"), 0);
}
