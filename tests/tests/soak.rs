//! Soak under load with faults (issue 8): the real Envoy 1.40 (two workers)
//! with the built filter and the shipped policy, the real `avb-companion` on
//! SQLite, and a real `redis-server`, driven at a steady rate by a small pool
//! of clients with a fixed mix of allowed and denied requests, while the
//! companion (SIGTERM and SIGKILL) and Redis are restarted a few times.
//!
//! Afterwards:
//! - every request got the decision `avb_edge::policy::Policy::decide` gives
//!   on the same inputs (and the fixed table below agrees with the engine);
//! - every denial's decision id is in the store exactly once (every event
//!   Envoy counted as sent is stored), and nothing was dropped (the queue
//!   never fills in this run);
//! - `avb-companion audit verify` passes;
//! - Envoy's resident memory at the end is within 20% of what it was after
//!   warm-up.
//!
//! Duration: `AVB_SOAK_SECONDS` (default 45; `make soak` / `scripts/soak.sh`
//! run 600). It always runs (never `#[ignore]`d): the short run is part of
//! `make test`. One line `soak: ...` summarises the run.
//!
//! Requires `make plugin` (or `AVB_WASM`), an Envoy (`AVB_ENVOY` or
//! `scripts/envoy.sh`) and `redis-server`. Run:
//! `cargo test -p avb-tests --test soak -- --nocapture`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use avb_edge::policy::{Authorization, Policy, Request};
use avb_tests::echo::EchoServer;
use avb_tests::http::RawRequest;
use avb_tests::procs::companion::{run_companion, CompanionConfig, CompanionServer};
use avb_tests::procs::envoy::{dev_env, shipped_policy_json, Envoy, EnvoyConfig, EnvoyOptions};
use avb_tests::procs::redis::RedisServer;
use avb_tests::procs::{free_port, temp_dir, wasm_path, workspace_root};
use avb_tests::tokens::dev_token;
use serde_json::{json, Value};

const DEFAULT_SECONDS: u64 = 45;
const CLIENTS: usize = 4;
/// Per client: one request every 40 ms (about 100 requests/s in all).
const CLIENT_INTERVAL: Duration = Duration::from_millis(40);
/// Allowed growth of Envoy's resident memory from warm-up to the end.
const RSS_TOLERANCE: f64 = 0.20;
const COMPANION_DOWN: Duration = Duration::from_millis(1500);
const REDIS_DOWN: Duration = Duration::from_millis(1000);
const FLUSH_INTERVAL_MS: u64 = 100;

const SENT: &str = "wasmcustom.avb.audit.sent";
const FAILED: &str = "wasmcustom.avb.audit.failed";
const DROPPED: &str = "wasmcustom.avb.audit.dropped";
const QUEUE_DEPTH: &str = "wasmcustom.avb.audit.queue_depth";

/// Who sends a request of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Admin,
    Operator,
    Developer,
    Viewer,
    /// A token with a broken signature.
    Forged,
}

/// Where an allowed request ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    Echo,
    /// The companion (tenant cache invalidation through Redis): may answer
    /// 5xx while the companion or Redis is being restarted.
    Companion,
}

/// One request of the mix and the status the fixed table expects from the
/// filter (200 = let through).
struct MixEntry {
    method: &'static str,
    path: &'static str,
    caller: Caller,
    expected: u16,
    upstream: Upstream,
}

const fn entry(
    method: &'static str,
    path: &'static str,
    caller: Caller,
    expected: u16,
    upstream: Upstream,
) -> MixEntry {
    MixEntry {
        method,
        path,
        caller,
        expected,
        upstream,
    }
}

const MIX: &[MixEntry] = &[
    entry(
        "GET",
        "/api/v1/stt/config",
        Caller::Admin,
        200,
        Upstream::Echo,
    ),
    entry(
        "GET",
        "/api/v1/llm/config",
        Caller::Developer,
        403,
        Upstream::Echo,
    ),
    entry(
        "GET",
        "/api/v1/stt/metrics",
        Caller::Anonymous,
        401,
        Upstream::Echo,
    ),
    entry(
        "GET",
        "/api/v1/stt/metrics",
        Caller::Operator,
        200,
        Upstream::Echo,
    ),
    entry(
        "POST",
        "/api/v1/stt/test",
        Caller::Developer,
        200,
        Upstream::Echo,
    ),
    entry(
        "PUT",
        "/api/v1/llm/config",
        Caller::Viewer,
        403,
        Upstream::Echo,
    ),
    entry(
        "GET",
        "/api/v1/llm/config;x=1",
        Caller::Developer,
        400,
        Upstream::Echo,
    ),
    entry(
        "POST",
        "/api/v1/tenants/tenant-a/cache/invalidate",
        Caller::Admin,
        200,
        Upstream::Companion,
    ),
    entry(
        "POST",
        "/api/v1/tenants/tenant-b/cache/invalidate",
        Caller::Admin,
        403,
        Upstream::Companion,
    ),
    entry(
        "GET",
        "/api/v1/stt/config",
        Caller::Forged,
        401,
        Upstream::Echo,
    ),
    entry("GET", "/healthz", Caller::Anonymous, 200, Upstream::Echo),
    entry(
        "PATCH",
        "/api/v1/stt/config",
        Caller::Operator,
        403,
        Upstream::Echo,
    ),
];

fn soak_seconds() -> u64 {
    match std::env::var("AVB_SOAK_SECONDS") {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("AVB_SOAK_SECONDS={text:?} is not a whole number")),
        _ => DEFAULT_SECONDS,
    }
}

fn dev_value(name: &str) -> String {
    dev_env()
        .expect("envoy/dev.env is readable")
        .get(name)
        .unwrap_or_else(|| panic!("{name} in envoy/dev.env"))
        .clone()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// An HS256 token for the dev key, minted with hmac + base64, valid for
/// `lifetime` seconds.
fn token(subject: &str, roles: &[&str], tenant: &str, lifetime: u64) -> String {
    dev_token(subject, roles, tenant, lifetime).expect("dev token")
}

/// The `Authorization` value of each caller (none for anonymous).
struct Credentials {
    by_caller: BTreeMap<&'static str, Option<String>>,
}

impl Credentials {
    fn mint(lifetime: u64) -> Self {
        let bearer = |subject: &str, roles: &[&str]| {
            Some(format!(
                "Bearer {}",
                token(subject, roles, "tenant-a", lifetime)
            ))
        };
        let forged = bearer("admin-1", &["ADMIN"]).map(|value| format!("{value}x"));
        let by_caller = BTreeMap::from([
            ("anonymous", None),
            ("admin", bearer("admin-1", &["ADMIN"])),
            ("operator", bearer("op-1", &["OPERATOR"])),
            ("developer", bearer("dev-1", &["DEVELOPER"])),
            ("viewer", bearer("viewer-1", &["VIEWER"])),
            ("forged", forged),
        ]);
        Self { by_caller }
    }

    fn authorization(&self, caller: Caller) -> Option<&str> {
        let key = match caller {
            Caller::Anonymous => "anonymous",
            Caller::Admin => "admin",
            Caller::Operator => "operator",
            Caller::Developer => "developer",
            Caller::Viewer => "viewer",
            Caller::Forged => "forged",
        };
        self.by_caller.get(key).and_then(Option::as_deref)
    }
}

/// The status the engine gives `entry` now (200 = let through).
fn engine_status(policy: &Policy, entry: &MixEntry, credentials: &Credentials) -> u16 {
    let authorization = match credentials.authorization(entry.caller) {
        Some(value) => Authorization::One(value),
        None => Authorization::Absent,
    };
    let decision = policy.decide(
        &Request {
            method: Some(entry.method),
            path: Some(entry.path),
            authorization,
            jwt_payload: None,
        },
        now(),
    );
    decision.status
}

/// What one client saw.
#[derive(Default)]
struct ClientReport {
    requests: u64,
    allowed_to_echo: u64,
    allowed_to_companion: u64,
    companion_unavailable: u64,
    /// Decision ids of the filter's denials.
    denial_ids: Vec<String>,
    wrong: Vec<String>,
}

fn run_client(
    client: usize,
    port: u16,
    policy: Arc<Policy>,
    credentials: Arc<Credentials>,
    stop: Arc<AtomicBool>,
    max_requests: u64,
) -> ClientReport {
    let mut report = ClientReport::default();
    let started = Instant::now();
    let mut index = client;
    while !stop.load(Ordering::Relaxed) && report.requests < max_requests {
        // A steady schedule: never burst to catch up after a slow answer.
        let due = started + CLIENT_INTERVAL * u32::try_from(report.requests).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let entry = &MIX[index % MIX.len()];
        index += 1;
        report.requests += 1;
        let expected = engine_status(&policy, entry, &credentials);
        let mut request = RawRequest::new(entry.method, entry.path);
        if entry.method != "GET" {
            request = request
                .body("{}")
                .header("content-type", "application/json");
        }
        if let Some(value) = credentials.authorization(entry.caller) {
            request = request.header("authorization", value);
        }
        let context = format!(
            "client {client}: {} {} as {:?}",
            entry.method, entry.path, entry.caller
        );
        let response = match request.send(port) {
            Ok(response) => response,
            Err(error) => {
                report
                    .wrong
                    .push(format!("{context}: no answer from envoy: {error:#}"));
                continue;
            }
        };
        match response.header("x-avb-decision-id") {
            // The filter denied it.
            Some(id) => {
                if response.status != expected {
                    report.wrong.push(format!(
                        "{context}: filter answered {}, engine says {expected}",
                        response.status
                    ));
                }
                report.denial_ids.push(id.to_owned());
            }
            // The filter let it through; the upstream answered.
            None => {
                if expected != 200 {
                    report.wrong.push(format!(
                        "{context}: let through ({}), engine says {expected}",
                        response.status
                    ));
                    continue;
                }
                match entry.upstream {
                    Upstream::Echo if response.status == 200 => report.allowed_to_echo += 1,
                    Upstream::Companion if response.status == 200 => {
                        report.allowed_to_companion += 1;
                    }
                    // Envoy (companion down) or the companion (Redis down).
                    Upstream::Companion if response.status >= 500 => {
                        report.companion_unavailable += 1;
                    }
                    _ => report.wrong.push(format!(
                        "{context}: let through but answered {}: {}",
                        response.status,
                        response.text()
                    )),
                }
            }
        }
    }
    report
}

/// `VmRSS` of a process in kB.
fn resident_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .expect("the process is running");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// What the run does when.
#[derive(Debug, Clone, Copy)]
enum Fault {
    CompanionTerminated,
    CompanionKilled,
    RedisRestarted,
}

/// Faults spread evenly over the run: at least two of each kind, one more
/// pair per extra minute.
fn fault_plan(seconds: u64) -> Vec<(Duration, Fault)> {
    let pairs = 2 + seconds / 120;
    let count = pairs * 2;
    (0..count)
        .map(|i| {
            let at = Duration::from_millis(seconds * 1000 * (i + 1) / (count + 1));
            let fault = match i % 4 {
                0 => Fault::CompanionTerminated,
                2 => Fault::CompanionKilled,
                _ => Fault::RedisRestarted,
            };
            (at, fault)
        })
        .collect()
}

#[test]
fn steady_load_with_companion_and_redis_restarts_keeps_decisions_audit_and_memory() {
    let seconds = soak_seconds();
    let credentials = Arc::new(Credentials::mint(seconds + 3600));
    let mut policy_value: Value =
        serde_json::from_str(&shipped_policy_json().expect("shipped policy")).expect("JSON");
    policy_value["audit"]["flush_interval_ms"] = json!(FLUSH_INTERVAL_MS);
    let policy_json = policy_value.to_string();
    let env = dev_env().expect("dev.env");
    let policy = Arc::new(
        Policy::from_json(policy_json.as_bytes(), &|name| env.get(name).cloned())
            .expect("the shipped policy compiles"),
    );
    // The fixed table and the engine agree before Envoy is involved.
    for entry in MIX {
        assert_eq!(
            engine_status(&policy, entry, &credentials),
            entry.expected,
            "{} {} as {:?}",
            entry.method,
            entry.path,
            entry.caller
        );
    }

    let redis_port = free_port();
    let mut redis = Some(RedisServer::start_on_port(redis_port).expect("redis-server starts"));
    let database_dir = temp_dir("soak-db").expect("temp dir");
    let database_url = format!(
        "sqlite://{}",
        database_dir.path().join("audit.db").display()
    );
    let mut companion_config = CompanionConfig::new(&database_url);
    companion_config.ingest_token = dev_value("AVB_INGEST_TOKEN");
    companion_config.policy = Some(workspace_root().join("envoy/policies/agentvoicebox.yaml"));
    companion_config.redis_url = Some(format!("redis://127.0.0.1:{redis_port}"));
    companion_config.env = env
        .iter()
        .filter(|(name, _)| *name != "AVB_INGEST_TOKEN")
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let mut companion = Some(CompanionServer::start(&companion_config).expect("companion starts"));
    let companion_port = companion.as_ref().map(CompanionServer::port).expect("port");

    let echo = EchoServer::start().expect("echo upstream");
    let config = EnvoyConfig::new(
        wasm_path().expect("dist/avb_edge.wasm built"),
        policy_json,
        echo.port(),
    )
    .with_companion(companion_port);
    let options = EnvoyOptions {
        concurrency: 2,
        ..EnvoyOptions::default()
    };
    let mut envoy = Envoy::start_with(&config.render(), &options).expect("envoy starts");
    let port = envoy.listener_port().expect("listener");
    let envoy_pid = envoy.pid();
    let stat = |envoy: &Envoy, name: &str| envoy.stat(name).expect("stats").unwrap_or(0);

    let stop = Arc::new(AtomicBool::new(false));
    let max_requests = seconds * 1000 / CLIENT_INTERVAL.as_millis() as u64 + 1;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (policy, credentials, stop) = (
                Arc::clone(&policy),
                Arc::clone(&credentials),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                run_client(client, port, policy, credentials, stop, max_requests)
            })
        })
        .collect();

    let started = Instant::now();
    let warm_up = Duration::from_secs((seconds / 5).clamp(5, 60));
    let mut plan = fault_plan(seconds);
    let mut rss_after_warm_up = None;
    let mut restarts = Vec::new();
    let end = Duration::from_secs(seconds);
    loop {
        let elapsed = started.elapsed();
        if rss_after_warm_up.is_none() && elapsed >= warm_up {
            rss_after_warm_up = Some(resident_kb(envoy_pid));
        }
        if let Some(&(at, fault)) = plan.first() {
            if elapsed >= at {
                plan.remove(0);
                match fault {
                    Fault::CompanionTerminated | Fault::CompanionKilled => {
                        let mut running = companion.take().expect("companion running");
                        if matches!(fault, Fault::CompanionKilled) {
                            running.kill();
                        } else {
                            running.terminate().expect("companion stops");
                        }
                        std::thread::sleep(COMPANION_DOWN);
                        companion = Some(
                            CompanionServer::start_on(&companion_config, companion_port)
                                .expect("companion restarts"),
                        );
                    }
                    Fault::RedisRestarted => {
                        drop(redis.take());
                        std::thread::sleep(REDIS_DOWN);
                        redis = Some(
                            RedisServer::start_on_port(redis_port).expect("redis-server restarts"),
                        );
                    }
                }
                restarts.push(format!("{:?}@{}s", fault, at.as_secs()));
                continue;
            }
        }
        if elapsed >= end {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let reports: Vec<ClientReport> = clients
        .into_iter()
        .map(|client| client.join().expect("client thread"))
        .collect();
    assert!(envoy.is_running(), "envoy died during the soak");

    // Let the filter deliver what is still queued. The last events may
    // still sit in a worker's open chunk (sealed on its next tick, only then
    // counted in the queue depth), so wait for `sent` to cover every denial.
    let denials: u64 = reports.iter().map(|r| r.denial_ids.len() as u64).sum();
    let deadline = Instant::now() + Duration::from_secs(120);
    while stat(&envoy, SENT) < denials || stat(&envoy, QUEUE_DEPTH) > 0 {
        assert!(
            Instant::now() < deadline,
            "the audit queue did not drain: {denials} denials, sent {}, depth {}, failed {}, dropped {}",
            stat(&envoy, SENT),
            stat(&envoy, QUEUE_DEPTH),
            stat(&envoy, FAILED),
            stat(&envoy, DROPPED)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss_end = resident_kb(envoy_pid);
    let rss_warm = rss_after_warm_up.expect("the run outlasted the warm-up");

    // Decisions.
    let requests: u64 = reports.iter().map(|r| r.requests).sum();
    let wrong: Vec<&String> = reports.iter().flat_map(|r| &r.wrong).collect();
    let denial_ids: Vec<&String> = reports.iter().flat_map(|r| &r.denial_ids).collect();
    let allowed_to_echo: u64 = reports.iter().map(|r| r.allowed_to_echo).sum();
    let allowed_to_companion: u64 = reports.iter().map(|r| r.allowed_to_companion).sum();
    let companion_unavailable: u64 = reports.iter().map(|r| r.companion_unavailable).sum();
    assert!(
        wrong.is_empty(),
        "{} of {requests} requests got a wrong decision, e.g.:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(20)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        echo.requests().len() as u64,
        allowed_to_echo,
        "the echo upstream saw exactly the requests let through to it"
    );
    assert!(
        allowed_to_companion > 0,
        "no cache invalidation went through"
    );

    // Audit: every denial stored exactly once.
    let sent = stat(&envoy, SENT);
    let failed = stat(&envoy, FAILED);
    let dropped = stat(&envoy, DROPPED);
    assert_eq!(
        dropped, 0,
        "the queue never fills in this run: nothing may be dropped"
    );
    assert!(
        sent >= denial_ids.len() as u64,
        "sent {sent} < {} denials",
        denial_ids.len()
    );
    assert!(failed > 0, "the companion restarts made some batches fail");
    let admin = credentials
        .authorization(Caller::Admin)
        .expect("admin token")
        .to_owned();
    let export = RawRequest::get("/api/v1/audit/logs/export?format=ndjson")
        .header("authorization", &admin)
        .send(companion_port)
        .expect("export from the companion");
    assert_eq!(export.status, 200, "{}", export.text());
    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for line in export.text().lines().filter(|line| !line.trim().is_empty()) {
        let record: Value = serde_json::from_str(line).expect("NDJSON record");
        *stored
            .entry(record["id"].as_str().expect("id").to_owned())
            .or_insert(0) += 1;
        *kinds
            .entry(record["kind"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    let missing: Vec<&&String> = denial_ids
        .iter()
        .filter(|id| !stored.contains_key(**id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} denial events are not stored (sent {sent}, failed {failed}); first {:?}",
        missing.len(),
        denial_ids.len(),
        missing.first()
    );
    assert!(
        stored.values().all(|count| *count == 1),
        "an id is stored twice"
    );
    drop(companion.take().map(|mut running| running.terminate()));
    let verified =
        run_companion(&["audit", "verify", "--database", &database_url], &[]).expect("verify runs");
    assert_eq!(
        verified.code(),
        Some(0),
        "audit verify failed:\n{}{}",
        verified.stdout,
        verified.stderr
    );

    // Memory.
    let growth = rss_end as f64 / rss_warm as f64 - 1.0;
    println!(
        "soak: {seconds}s, {requests} requests ({allowed_to_echo} to echo, {allowed_to_companion} cache \
         invalidations, {companion_unavailable} while the companion or redis was down, {} denials), \
         faults [{}], audit sent {sent} failed {failed} dropped {dropped}, stored {} records {kinds:?}, \
         envoy rss {rss_warm} kB after warm-up -> {rss_end} kB at the end ({:+.1}%)",
        denial_ids.len(),
        restarts.join(", "),
        stored.len(),
        growth * 100.0
    );
    assert!(
        growth <= RSS_TOLERANCE,
        "envoy's resident memory grew {:.1}% ({rss_warm} kB -> {rss_end} kB)",
        growth * 100.0
    );
    drop(redis);
}
