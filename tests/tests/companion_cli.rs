//! The real `avb-companion` binary: `audit verify` exit codes on a tampered
//! SQLite file, and `serve` refusing to start without its secrets or policy.
//!
//! Run: `cargo test -p avb-tests --test companion_cli`.

use avb_companion::audit::event::{format_time_ms, validate};
use avb_companion::audit::open_store;
use avb_companion::audit::sqlite::rusqlite;
use avb_companion::AuditEvent;
use avb_tests::procs::companion::run_companion;
use avb_tests::procs::workspace_root;

/// A SQLite audit database with `count` records; its URL and the directory
/// keeping it alive.
async fn database_with(count: usize) -> (String, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let url = format!("sqlite://{}", path.display());
    let store = open_store(&url).await.unwrap();
    let events = (0..count)
        .map(|i| {
            validate(AuditEvent {
                id: format!("cli-{i}"),
                time: format_time_ms(1_767_225_600_000 + i as i64),
                kind: "authz.denied".into(),
                outcome: "deny".into(),
                subject: Some("alice".into()),
                ..AuditEvent::default()
            })
            .unwrap()
        })
        .collect();
    store.ingest(events).await.unwrap();
    (url, path, dir)
}

fn tamper(path: &std::path::Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

#[tokio::test]
async fn verify_exits_0_and_prints_the_head_for_an_intact_chain() {
    let (url, _, _dir) = database_with(5).await;
    let out = run_companion(&["audit", "verify", "--database", &url], &[]).unwrap();
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.starts_with("ok: 5 records verified"),
        "{}",
        out.stdout
    );
    let store = open_store(&url).await.unwrap();
    let head = store.chain_state().await.unwrap();
    assert!(out
        .stdout
        .contains(&format!("head seq 5 hash {}", head.head_hash)));
}

#[tokio::test]
async fn verify_exits_1_naming_a_rewritten_record() {
    let (url, path, _dir) = database_with(5).await;
    tamper(
        &path,
        "UPDATE audit_records SET event = replace(event, 'alice', 'mallory') WHERE seq = 3",
    );
    let out = run_companion(&["audit", "verify", "--database", &url], &[]).unwrap();
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stdout.starts_with("broken: first bad record is seq 3:"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn verify_exits_1_naming_a_removed_middle_record() {
    let (url, path, _dir) = database_with(6).await;
    tamper(&path, "DELETE FROM audit_records WHERE seq = 4");
    let out = run_companion(&["audit", "verify", "--database", &url], &[]).unwrap();
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stdout.contains("seq 4"), "{}", out.stdout);
    assert!(out.stdout.contains("missing"), "{}", out.stdout);
}

#[tokio::test]
async fn verify_json_reports_the_break_as_data() {
    let (url, path, _dir) = database_with(4).await;
    tamper(
        &path,
        "UPDATE audit_records SET seq = 99 WHERE seq = 2; \
         UPDATE audit_records SET seq = 2 WHERE seq = 3; \
         UPDATE audit_records SET seq = 3 WHERE seq = 99;",
    );
    let out = run_companion(&["audit", "verify", "--json", "--database", &url], &[]).unwrap();
    assert_eq!(out.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(report["broken"]["seq"], 2);
    assert_eq!(report["head_seq"], 4);
}

#[tokio::test]
async fn verify_reads_the_database_from_the_environment() {
    let (url, _, _dir) = database_with(2).await;
    let out = run_companion(&["audit", "verify"], &[("AVB_DATABASE_URL", &url)]).unwrap();
    assert_eq!(out.code(), Some(0), "{out:?}");
}

#[test]
fn verify_exits_2_when_the_store_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    for url in [missing.as_str(), "mysql://localhost/audit"] {
        let out = run_companion(&["audit", "verify", "--database", url], &[]).unwrap();
        assert_eq!(out.code(), Some(2), "{url}: {out:?}");
        assert!(out.stderr.contains("error:"), "{}", out.stderr);
    }
    assert!(
        !dir.path().join("nope.db").exists(),
        "verify created a database"
    );
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, b"this is not a database").unwrap();
    let url = format!("sqlite://{}", garbage.display());
    let out = run_companion(&["audit", "verify", "--database", &url], &[]).unwrap();
    assert_eq!(out.code(), Some(2), "{out:?}");
}

#[test]
fn serve_refuses_to_start_without_an_ingest_token() {
    let out = run_companion(&["serve", "--no-policy", "--listen", "127.0.0.1:1"], &[]).unwrap();
    assert_ne!(out.code(), Some(0));
    assert!(out.stderr.contains("AVB_INGEST_TOKEN"), "{}", out.stderr);
}

#[test]
fn serve_refuses_to_start_without_a_policy_unless_told_so() {
    let out = run_companion(
        &["serve", "--listen", "127.0.0.1:1"],
        &[("AVB_INGEST_TOKEN", "t")],
    )
    .unwrap();
    assert_ne!(out.code(), Some(0));
    assert!(out.stderr.contains("--no-policy"), "{}", out.stderr);
}

#[test]
fn serve_refuses_an_invalid_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "mode: enforce\nrules: [{name: x, path: /a, public: maybe}]\n",
    )
    .unwrap();
    let out = run_companion(
        &[
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--policy",
            policy.to_str().unwrap(),
        ],
        &[("AVB_INGEST_TOKEN", "t")],
    )
    .unwrap();
    assert_ne!(out.code(), Some(0));
    assert!(out.stderr.contains("policy"), "{}", out.stderr);
    // The shipped policy needs its key from the environment: without it, no start.
    let shipped = workspace_root().join("envoy/policies/agentvoicebox.yaml");
    let out = run_companion(
        &[
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--policy",
            shipped.to_str().unwrap(),
        ],
        &[("AVB_INGEST_TOKEN", "t")],
    )
    .unwrap();
    assert_ne!(out.code(), Some(0), "{out:?}");
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["audit", "verify", "--help"],
        vec!["cache", "invalidate", "--help"],
    ] {
        let out = run_companion(&args, &[]).unwrap();
        assert_eq!(out.code(), Some(0), "{args:?}: {out:?}");
        assert!(out.stdout.contains("Usage: avb-companion"), "{args:?}");
    }
    let out = run_companion(&["serve", "--help"], &[]).unwrap();
    assert!(out.stdout.contains("--no-policy"));
    assert!(out.stdout.contains("AVB_INGEST_TOKEN"));
}
