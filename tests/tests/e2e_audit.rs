//! End-to-end audit trail (issue 4): the real Envoy 1.40 with the built
//! `dist/avb_edge.wasm` and the shipped policy ships its audit events to the
//! real `avb-companion` (SQLite), and operators read them back through Envoy.
//!
//! - denials (401, 403, 400) show up in `GET /api/v1/audit/logs`, called
//!   through Envoy with an OPERATOR token, with the decision id of the reply
//!   and no token anywhere in what was stored;
//! - a companion that is down for a while loses no event that fit in the
//!   queue (the filter retries: `avb.audit.failed` grows, then every event
//!   arrives exactly once);
//! - a companion killed with SIGKILL in the middle of a stream of denials
//!   loses nothing either, and `avb-companion audit verify` passes;
//! - `events: all` records allowed requests too.
//!
//! Requires `make plugin` (or `AVB_WASM`) and an Envoy (`AVB_ENVOY` or
//! `scripts/envoy.sh`); the companion is built on first use.
//! Run: `cargo test -p avb-tests --test e2e_audit`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use avb_tests::echo::EchoServer;
use avb_tests::http::{RawRequest, Response};
use avb_tests::procs::companion::{run_companion, CompanionConfig, CompanionServer};
use avb_tests::procs::envoy::{dev_env, shipped_policy_json, Envoy, EnvoyConfig, EnvoyOptions};
use avb_tests::procs::{temp_dir, wasm_path, workspace_root};
use avb_tests::tokens::dev_token;
use serde_json::{json, Value};

const TRACE_HEADER: &str = "x-test-trace";
/// Small, so a test waits for batches in tenths of a second, not halves.
const FLUSH_INTERVAL_MS: u64 = 50;
/// How long delivery may take after the companion is back: the filter's
/// retry backoff doubles from 100 ms and is capped at 30 s.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

const SENT: &str = "wasmcustom.avb.audit.sent";
const FAILED: &str = "wasmcustom.avb.audit.failed";
const DROPPED: &str = "wasmcustom.avb.audit.dropped";
const QUEUE_DEPTH: &str = "wasmcustom.avb.audit.queue_depth";

fn dev_value(name: &str) -> String {
    dev_env()
        .expect("envoy/dev.env is readable")
        .get(name)
        .unwrap_or_else(|| panic!("{name} in envoy/dev.env"))
        .clone()
}

/// An HS256 token for the dev key, minted here with hmac + base64 so the
/// test does not lean on the engine it exercises.
fn token(subject: &str, roles: &[&str], tenant: &str) -> String {
    dev_token(subject, roles, tenant, 900).expect("dev token")
}

fn trace_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "a{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Which events the policy variant ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Events {
    Denied,
    All,
}

/// The shipped policy with a short flush interval (and `events` as asked).
fn audit_policy(events: Events) -> String {
    let mut policy: Value =
        serde_json::from_str(&shipped_policy_json().expect("shipped policy")).expect("JSON");
    let audit = &mut policy["audit"];
    assert_eq!(
        audit["token_env"], "AVB_INGEST_TOKEN",
        "the shipped policy ships audit events with the ingest token"
    );
    assert_eq!(audit["events"], "denied");
    audit["flush_interval_ms"] = json!(FLUSH_INTERVAL_MS);
    if events == Events::All {
        audit["events"] = json!("all");
    }
    policy.to_string()
}

/// Envoy (shipped policy, audit on) + echo + the real companion on SQLite
/// with the shipped policy, all on free loopback ports.
struct AuditStack {
    echo: EchoServer,
    envoy: Envoy,
    companion: Option<CompanionServer>,
    companion_config: CompanionConfig,
    companion_port: u16,
    database_path: PathBuf,
    port: u16,
    _database_dir: tempfile::TempDir,
}

impl AuditStack {
    fn start(events: Events, workers: u32) -> Self {
        let database_dir = temp_dir("e2e-audit-db").expect("temp dir");
        let database_path = database_dir.path().join("audit.db");
        let mut companion_config =
            CompanionConfig::new(&format!("sqlite://{}", database_path.display()));
        // The filter authenticates with the VM's AVB_INGEST_TOKEN (dev.env).
        companion_config.ingest_token = dev_value("AVB_INGEST_TOKEN");
        companion_config.policy = Some(workspace_root().join("envoy/policies/agentvoicebox.yaml"));
        companion_config.env = dev_env()
            .expect("dev.env")
            .into_iter()
            .filter(|(name, _)| name != "AVB_INGEST_TOKEN")
            .collect();
        let companion = CompanionServer::start(&companion_config).expect("companion starts");
        let companion_port = companion.port();

        let echo = EchoServer::start().expect("echo upstream");
        let config = EnvoyConfig::new(
            wasm_path().expect("dist/avb_edge.wasm built"),
            audit_policy(events),
            echo.port(),
        )
        .with_companion(companion_port);
        let options = EnvoyOptions {
            concurrency: workers,
            ..EnvoyOptions::default()
        };
        let envoy = Envoy::start_with(&config.render(), &options).expect("envoy starts");
        let port = envoy.listener_port().expect("listener");
        Self {
            echo,
            envoy,
            companion: Some(companion),
            companion_config,
            companion_port,
            database_path,
            port,
            _database_dir: database_dir,
        }
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.database_path.display())
    }

    fn send(&self, request: RawRequest) -> Response {
        request
            .header(TRACE_HEADER, &trace_id())
            .send(self.port)
            .expect("envoy answers")
    }

    /// A 403 (DEVELOPER on an ADMIN-only route) and its decision id.
    fn denial(&self, developer: &str) -> String {
        let response = self.send(RawRequest::get("/api/v1/llm/config").bearer(developer));
        assert_eq!(response.status, 403, "{}", response.text());
        decision_id(&response)
    }

    fn stop_companion(&mut self) {
        let mut companion = self.companion.take().expect("companion running");
        let status = companion.terminate().expect("companion stops");
        assert!(status.is_some(), "companion did not exit on SIGTERM");
    }

    fn kill_companion(&mut self) {
        self.companion.take().expect("companion running").kill();
    }

    fn restart_companion(&mut self) {
        assert!(self.companion.is_none(), "companion still running");
        self.companion = Some(
            CompanionServer::start_on(&self.companion_config, self.companion_port)
                .expect("companion restarts on the same port and database"),
        );
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(name).expect("envoy stats").unwrap_or(0)
    }

    /// Every stored record, read through Envoy with an OPERATOR token, page
    /// by page (newest first).
    fn stored(&self) -> Vec<Value> {
        let operator = token("op-1", &["OPERATOR"], "tenant-a");
        let mut records = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let target = match &cursor {
                Some(cursor) => format!("/api/v1/audit/logs?limit=1000&cursor={cursor}"),
                None => "/api/v1/audit/logs?limit=1000".to_owned(),
            };
            let response = self.send(RawRequest::get(&target).bearer(&operator));
            assert_eq!(response.status, 200, "audit log list: {}", response.text());
            let page = response.json().expect("JSON page");
            records.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return records,
            }
        }
    }

    /// Waits until every id in `ids` is stored; returns the stored records.
    fn wait_for_ids(&self, ids: &[String], timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.stored();
            let stored = count_ids(&records);
            let missing: Vec<&String> = ids.iter().filter(|id| !stored.contains_key(*id)).collect();
            if missing.is_empty() {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} events not stored within {timeout:?} (sent {}, failed {}, dropped {}, depth {}); first missing {:?}",
                missing.len(),
                ids.len(),
                self.stat(SENT),
                self.stat(FAILED),
                self.stat(DROPPED),
                self.stat(QUEUE_DEPTH),
                missing.first()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the filter has no unacknowledged event left.
    fn wait_for_empty_queue(&self, timeout: Duration) {
        wait_until(timeout, "the audit queue to drain", || {
            self.stat(QUEUE_DEPTH) == 0
        });
    }
}

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn decision_id(response: &Response) -> String {
    let id = response
        .header("x-avb-decision-id")
        .expect("the filter's reply carries x-avb-decision-id")
        .to_owned();
    assert_eq!(
        response.json().expect("JSON reply")["decision_id"],
        json!(id)
    );
    id
}

/// How many times each id occurs among `records`.
fn count_ids(records: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        let id = record["id"].as_str().expect("every record has an id");
        *counts.entry(id.to_owned()).or_insert(0) += 1;
    }
    counts
}

fn by_id<'a>(records: &'a [Value], id: &str) -> &'a Value {
    let matching: Vec<&Value> = records.iter().filter(|r| r["id"] == id).collect();
    assert_eq!(
        matching.len(),
        1,
        "record {id} stored {} times",
        matching.len()
    );
    matching[0]
}

fn assert_stored_exactly_once(records: &[Value], ids: &[String]) {
    let counts = count_ids(records);
    for id in ids {
        assert_eq!(counts.get(id), Some(&1), "event {id} must be stored once");
    }
}

fn verify_chain(database_url: &str) {
    let verified =
        run_companion(&["audit", "verify", "--database", database_url], &[]).expect("verify runs");
    assert_eq!(
        verified.code(),
        Some(0),
        "audit verify failed:\n{}{}",
        verified.stdout,
        verified.stderr
    );
}

/// What the stored record of one denial must say.
struct Expected {
    status: u16,
    kind: &'static str,
    reason: &'static str,
    rule: Option<&'static str>,
    subject: Option<&'static str>,
}

#[test]
fn denials_through_envoy_are_listed_for_an_operator_with_their_decision_ids_and_no_token() {
    let stack = AuditStack::start(Events::Denied, 1);
    let developer = token("dev-1", &["DEVELOPER"], "tenant-a");
    let broken = format!("{developer}x");

    let cases: Vec<(RawRequest, Expected)> = vec![
        (
            RawRequest::get("/api/v1/stt/metrics"),
            Expected {
                status: 401,
                kind: "authz.unauthenticated",
                reason: "missing_token",
                rule: Some("stt.metrics"),
                subject: None,
            },
        ),
        (
            RawRequest::get("/api/v1/stt/config").bearer(&broken),
            Expected {
                status: 401,
                kind: "authz.unauthenticated",
                reason: "invalid_token",
                rule: Some("stt.config.get"),
                subject: None,
            },
        ),
        (
            RawRequest::get("/api/v1/llm/config").bearer(&developer),
            Expected {
                status: 403,
                kind: "authz.denied",
                reason: "missing_role",
                rule: Some("llm.config.get"),
                subject: Some("dev-1"),
            },
        ),
        (
            // Envoy passes `;` parameters on; the filter refuses them.
            RawRequest::get("/api/v1/llm/config;x=1").bearer(&developer),
            Expected {
                status: 400,
                kind: "request.rejected",
                reason: "non_canonical_path",
                rule: None,
                subject: None,
            },
        ),
    ];
    let mut expected = Vec::new();
    for (request, want) in cases {
        let response = stack.send(request);
        assert_eq!(
            response.status,
            want.status,
            "{}: {}",
            want.kind,
            response.text()
        );
        expected.push((decision_id(&response), want));
    }
    assert!(
        stack.echo.requests().is_empty(),
        "a denied request reached the upstream"
    );

    let ids: Vec<String> = expected.iter().map(|(id, ..)| id.clone()).collect();
    let records = stack.wait_for_ids(&ids, Duration::from_secs(30));
    for (id, want) in &expected {
        let record = by_id(&records, id);
        assert_eq!(record["kind"], want.kind, "{record}");
        assert_eq!(record["outcome"], "deny", "{record}");
        assert_eq!(record["status"], want.status, "{record}");
        assert_eq!(record["reason"], want.reason, "{record}");
        assert_eq!(record["rule"].as_str(), want.rule, "{record}");
        assert_eq!(record["subject"].as_str(), want.subject, "{record}");
        assert_eq!(record["method"], "GET", "{record}");
        assert!(
            record["request_id"].as_str().is_some_and(|r| !r.is_empty()),
            "{record}"
        );
        assert!(
            record["policy_revision"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{record}"
        );
        assert!(
            record["hash"].as_str().is_some_and(|h| !h.is_empty()),
            "{record}"
        );
        assert!(record["seq"].as_u64().is_some(), "{record}");
    }
    let forbidden = by_id(&records, &expected[2].0);
    assert_eq!(forbidden["tenant"], "tenant-a");
    assert_eq!(forbidden["roles"], json!(["DEVELOPER"]));
    assert_eq!(forbidden["path"], "/api/v1/llm/config");

    // One record by id, through Envoy, is the same record.
    let operator = token("op-1", &["OPERATOR"], "tenant-a");
    let detail = stack
        .send(RawRequest::get(&format!("/api/v1/audit/logs/{}", expected[2].0)).bearer(&operator));
    assert_eq!(detail.status, 200, "{}", detail.text());
    assert_eq!(&detail.json().expect("JSON"), forbidden);

    // No token, or any part of one, in any stored field.
    let everything = serde_json::to_string(&records).expect("JSON");
    for secret in [&developer, &broken, &operator] {
        for (index, part) in secret.split('.').enumerate() {
            assert!(
                !everything.contains(part),
                "part {index} of a token is in the audit trail"
            );
        }
    }
    assert!(!everything.to_ascii_lowercase().contains("bearer"));
    // `events: denied`: the operator's allowed reads were not recorded.
    assert!(
        records.iter().all(|r| r["kind"] != "authz.allowed"),
        "an allowed request was recorded under events: denied"
    );
    // The Audit API's filters work on what the filter shipped.
    let filtered = stack.send(
        RawRequest::get("/api/v1/audit/logs?kind=authz.denied&rule=llm.config.get")
            .bearer(&operator),
    );
    let items = filtered.json().expect("JSON")["items"].clone();
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    assert_eq!(items[0]["id"], json!(expected[2].0));
    assert_eq!(stack.stat(DROPPED), 0);
}

#[test]
fn companion_down_for_a_while_loses_no_event_that_fit_in_the_queue() {
    let mut stack = AuditStack::start(Events::Denied, 1);
    let developer = token("dev-1", &["DEVELOPER"], "tenant-a");
    let first = stack.denial(&developer);
    stack.wait_for_ids(std::slice::from_ref(&first), Duration::from_secs(30));
    let failed_before = stack.stat(FAILED);

    stack.stop_companion();
    let while_down: Vec<String> = (0..40).map(|_| stack.denial(&developer)).collect();
    // The filter tried, failed and keeps the events for a retry.
    wait_until(Duration::from_secs(30), "a failed audit batch", || {
        stack.stat(FAILED) > failed_before
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        stack.stat(QUEUE_DEPTH) >= while_down.len() as u64,
        "the events made while the companion was down are still queued"
    );

    stack.restart_companion();
    let after: Vec<String> = (0..5).map(|_| stack.denial(&developer)).collect();
    let mut all = vec![first];
    all.extend(while_down);
    all.extend(after);
    let records = stack.wait_for_ids(&all, DELIVERY_TIMEOUT);
    assert_stored_exactly_once(&records, &all);
    stack.wait_for_empty_queue(Duration::from_secs(30));
    assert!(stack.stat(FAILED) > failed_before);
    assert_eq!(
        stack.stat(DROPPED),
        0,
        "nothing is dropped while the queue has room"
    );
    assert!(stack.stat(SENT) >= all.len() as u64);
    verify_chain(&stack.database_url());
}

#[test]
fn companion_killed_mid_stream_stores_every_sent_event_exactly_once_and_the_chain_verifies() {
    let mut stack = AuditStack::start(Events::Denied, 2);
    let developer = token("dev-1", &["DEVELOPER"], "tenant-a");
    let stop = Arc::new(AtomicBool::new(false));
    let port = stack.port;

    // Two clients make denials until told to stop.
    let clients: Vec<_> = (0..2)
        .map(|client| {
            let stop = Arc::clone(&stop);
            let developer = developer.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let response = RawRequest::get("/api/v1/llm/config")
                        .bearer(&developer)
                        .header("x-client", &client.to_string())
                        .send(port)
                        .expect("envoy answers while the companion crashes");
                    assert_eq!(response.status, 403, "{}", response.text());
                    ids.push(decision_id(&response));
                    std::thread::sleep(Duration::from_millis(5));
                }
                ids
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(2));
    let sent_before_kill = stack.stat(SENT);
    assert!(
        sent_before_kill > 0,
        "batches were acknowledged before the kill"
    );
    stack.kill_companion();
    std::thread::sleep(Duration::from_millis(1500));
    stack.restart_companion();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let ids: Vec<String> = clients
        .into_iter()
        .flat_map(|client| client.join().expect("client thread"))
        .collect();
    assert!(ids.len() > 50, "only {} denials were made", ids.len());

    let records = stack.wait_for_ids(&ids, DELIVERY_TIMEOUT);
    stack.wait_for_empty_queue(Duration::from_secs(30));
    assert_stored_exactly_once(&records, &ids);
    // What Envoy counted as sent was acknowledged by the companion, so it is
    // stored; a batch committed just before the kill and retried counts twice
    // in `sent` but is stored once (ingest is idempotent by id).
    let sent = stack.stat(SENT);
    assert!(
        sent >= ids.len() as u64,
        "sent {sent} < {} denials",
        ids.len()
    );
    assert_eq!(
        count_ids(&records).len(),
        records.len(),
        "no id is stored twice"
    );
    assert_eq!(stack.stat(DROPPED), 0);
    eprintln!(
        "kill mid-stream: {} denials, sent {sent}, failed {}",
        ids.len(),
        stack.stat(FAILED)
    );
    stack.stop_companion();
    verify_chain(&stack.database_url());
}

#[test]
fn events_all_records_allowed_requests_too() {
    let stack = AuditStack::start(Events::All, 1);
    let admin = token("admin-1", &["ADMIN"], "tenant-a");
    let trace = trace_id();
    let allowed = RawRequest::get("/api/v1/stt/config")
        .bearer(&admin)
        .header(TRACE_HEADER, &trace)
        .send(stack.port)
        .expect("envoy answers");
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let upstream: Vec<_> = stack
        .echo
        .requests()
        .into_iter()
        .filter(|request| request.header(TRACE_HEADER) == Some(trace.as_str()))
        .collect();
    assert_eq!(upstream.len(), 1);
    let allowed_id = upstream[0]
        .header("x-avb-decision-id")
        .expect("allowed requests carry their decision id upstream")
        .to_owned();
    let denied_id = stack.denial(&token("dev-1", &["DEVELOPER"], "tenant-a"));

    let records = stack.wait_for_ids(
        &[allowed_id.clone(), denied_id.clone()],
        Duration::from_secs(30),
    );
    let record = by_id(&records, &allowed_id);
    assert_eq!(record["kind"], "authz.allowed", "{record}");
    assert_eq!(record["outcome"], "allow");
    assert_eq!(record["status"], 200);
    assert_eq!(record["reason"], "role_granted");
    assert_eq!(record["rule"], "stt.config.get");
    assert_eq!(record["subject"], "admin-1");
    assert_eq!(record["tenant"], "tenant-a");
    assert!(record["roles"]
        .as_array()
        .is_some_and(|roles| roles.contains(&json!("ADMIN"))));
    assert_eq!(by_id(&records, &denied_id)["kind"], "authz.denied");
    // The operator's own reads of the trail are in the trail too.
    wait_until(
        Duration::from_secs(30),
        "the audit reads to be recorded",
        || {
            stack
                .stored()
                .iter()
                .any(|r| r["kind"] == "authz.allowed" && r["rule"] == "audit.logs.list")
        },
    );
    let everything = serde_json::to_string(&stack.stored()).expect("JSON");
    assert!(!everything.contains(admin.split('.').nth(2).expect("signature")));
}
