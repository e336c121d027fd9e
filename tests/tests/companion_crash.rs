//! The real companion killed with SIGKILL in the middle of ingest, and
//! stopped with SIGTERM: every batch it acknowledged is stored exactly once
//! after a restart, and the chain verifies. Runs on SQLite and PostgreSQL.
//!
//! Run: `cargo test -p avb-tests --test companion_crash`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avb_tests::procs::companion::{run_companion, CompanionConfig, CompanionServer};
use avb_tests::procs::postgres::PostgresServer;
use serde_json::{json, Value};

const BATCH: usize = 100;

fn batch(tag: &str, number: usize) -> Vec<Value> {
    (0..BATCH)
        .map(|i| {
            json!({
                "id": format!("{tag}-{number:05}-{i:03}"),
                "time": "2026-01-01T00:00:00.000Z",
                "kind": "authz.denied",
                "outcome": "deny",
                "status": 403,
                "rule": "audit.logs.list",
                "subject": "alice",
                "path": "/api/v1/audit/logs",
            })
        })
        .collect()
}

/// Posts batches one after the other until the companion stops answering;
/// returns the ids of every batch it acknowledged.
fn spawn_sender(
    port: u16,
    token: String,
    tag: &'static str,
    acknowledged: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            let events = batch(tag, sent);
            let body = json!({ "events": events }).to_string();
            let response = avb_tests::http::RawRequest::post("/v1/audit/events", body)
                .header("content-type", "application/json")
                .bearer(&token)
                .send(port);
            match response {
                Ok(r) if r.status == 200 => {
                    let answer = r.json().unwrap();
                    assert_eq!(answer["accepted"], json!(BATCH), "{answer}");
                    let mut acked = acknowledged.lock().unwrap();
                    acked.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
                }
                // Killed mid-request, or refused after the kill.
                _ => break,
            }
            sent += 1;
        }
        sent
    })
}

/// Every id in the store with how often it appears, read through the export.
fn stored_ids(server: &CompanionServer) -> HashMap<String, usize> {
    let response = server
        .get("/api/v1/audit/logs/export?format=ndjson", None)
        .unwrap();
    assert_eq!(response.status, 200);
    let mut counts = HashMap::new();
    for line in response.text().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        *counts
            .entry(record["id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

fn wait_for_acks(acknowledged: &Mutex<Vec<String>>, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < at_least {
        assert!(
            Instant::now() < deadline,
            "the companion acknowledged too little"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sigkill_during_ingest_loses_no_acknowledged_event(database_url: &str) {
    let config = CompanionConfig::new(database_url);
    let mut server = CompanionServer::start(&config).unwrap();
    let port = server.port();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Two senders, so a batch is in flight at any moment.
    let senders = [
        spawn_sender(
            port,
            config.ingest_token.clone(),
            "a",
            acknowledged.clone(),
            stop.clone(),
        ),
        spawn_sender(
            port,
            config.ingest_token.clone(),
            "b",
            acknowledged.clone(),
            stop.clone(),
        ),
    ];
    wait_for_acks(&acknowledged, 20 * BATCH);
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    let acked = acknowledged.lock().unwrap().clone();

    let server = CompanionServer::start_on(&config, port).unwrap();
    let stored = stored_ids(&server);
    for id in &acked {
        assert_eq!(
            stored.get(id),
            Some(&1),
            "acknowledged event {id} is missing or doubled"
        );
    }
    // Unacknowledged batches are whole or absent: a batch commits at once.
    let mut per_batch: HashMap<&str, usize> = HashMap::new();
    for id in stored.keys() {
        *per_batch.entry(&id[..7]).or_insert(0) += 1;
    }
    assert!(
        per_batch.values().all(|&n| n == BATCH),
        "a partial batch was stored"
    );
    // Resending after the restart is idempotent and the chain continues.
    let resent = server.post_events(&batch("a", 0)).unwrap();
    assert_eq!(
        resent.json().unwrap(),
        json!({"accepted": 0, "duplicates": BATCH})
    );
    let fresh = server.post_events(&batch("c", 0)).unwrap();
    assert_eq!(fresh.json().unwrap()["accepted"], json!(BATCH));
    drop(server);
    let verify = run_companion(&["audit", "verify", "--database", database_url], &[]).unwrap();
    assert_eq!(verify.code(), Some(0), "{verify:?}");
}

#[test]
fn sqlite_sigkill_during_ingest_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    sigkill_during_ingest_loses_no_acknowledged_event(&url);
}

#[test]
fn postgres_sigkill_during_ingest_loses_no_acknowledged_event() {
    let server = PostgresServer::start().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = runtime.block_on(server.fresh_database()).unwrap();
    sigkill_during_ingest_loses_no_acknowledged_event(&url);
}

#[test]
fn sigterm_finishes_in_flight_batches_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let config = CompanionConfig::new(&url);
    let mut server = CompanionServer::start(&config).unwrap();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(
        server.port(),
        config.ingest_token.clone(),
        "t",
        acknowledged.clone(),
        stop.clone(),
    );
    wait_for_acks(&acknowledged, 5 * BATCH);
    let status = server.terminate().unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert!(server.logs().contains("avb-companion stopped"));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let acked = acknowledged.lock().unwrap().clone();
    let server = CompanionServer::start(&config).unwrap();
    let stored = stored_ids(&server);
    assert!(acked.iter().all(|id| stored.get(id) == Some(&1)));
}

#[test]
fn a_companion_whose_postgres_restarts_recovers_without_losing_acknowledged_events() {
    let mut postgres = PostgresServer::start().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = runtime.block_on(postgres.fresh_database()).unwrap();
    let server = CompanionServer::start(&CompanionConfig::new(&url)).unwrap();
    assert_eq!(server.post_events(&batch("p", 0)).unwrap().status, 200);
    // While the database is down the companion says so, retryably.
    postgres.stop();
    let down = server.post_events(&batch("p", 1)).unwrap();
    assert_eq!(down.status, 503, "{}", down.text());
    assert_eq!(server.get("/readyz", None).unwrap().status, 503);
    // Back up: the companion reconnects by itself and the retry is stored.
    postgres.restart().unwrap();
    let retried = server.post_events(&batch("p", 1)).unwrap();
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(retried.json().unwrap()["accepted"], json!(BATCH));
    assert_eq!(server.get("/readyz", None).unwrap().status, 200);
    let stored = stored_ids(&server);
    assert_eq!(stored.len(), 2 * BATCH);
    drop(server);
    let verify = run_companion(&["audit", "verify", "--database", &url], &[]).unwrap();
    assert_eq!(verify.code(), Some(0), "{verify:?}");
}
