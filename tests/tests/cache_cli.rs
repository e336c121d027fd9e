//! `avb-companion cache invalidate`: the built binary against a real
//! redis-server, with its exit codes, outputs and audit record.

use std::path::PathBuf;
use std::process::{Command, Output};

use avb_companion::audit::open_store;
use avb_companion::audit::store::{LogFilter, LogQuery, Order};
use avb_tests::procs::redis::{all_keys, db_size, info_field, load_keys, RedisServer};
use avb_tests::procs::temp_dir;
use serde_json::Value;

/// The built `avb-companion` binary (built once per test run if needed).
fn companion_binary() -> PathBuf {
    avb_tests::procs::companion::companion_binary().expect("avb-companion builds")
}

fn invalidate_command(args: &[&str]) -> Command {
    let mut command = Command::new(companion_binary());
    command
        .args(["cache", "invalidate"])
        .args(args)
        .env_remove("AVB_REDIS_URL")
        .env_remove("AVB_DATABASE_URL")
        .env("USER", "sre-alice")
        .env("RUST_LOG", "warn");
    command
}

fn run(mut command: Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("running avb-companion");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

async fn loaded_server() -> RedisServer {
    let server = RedisServer::start().unwrap();
    let mut connection = server.connection().await.unwrap();
    load_keys(
        &mut connection,
        (0..5_000).map(|i| format!("tenant:acme:{i}")),
    )
    .await
    .unwrap();
    load_keys(
        &mut connection,
        [
            "tenant:acme2:1",
            "tenant:acm:1",
            "user:acme:1",
            "tenant:x:acme:1",
        ]
        .map(String::from),
    )
    .await
    .unwrap();
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_prints_one_object_and_records_the_audit_event() {
    let server = loaded_server().await;
    let dir = temp_dir("cache-cli-audit").unwrap();
    let database = format!("sqlite://{}", dir.path().join("audit.db").display());
    let (code, stdout, stderr) = run(invalidate_command(&[
        "--tenant",
        "acme",
        "--redis",
        &server.url(),
        "--database",
        &database,
        "--json",
    ]));
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let report: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(report["tenant"], "acme");
    assert_eq!(report["matched"], 5_000);
    assert_eq!(report["deleted"], 5_000);
    assert_eq!(report["scanned"], 5_004);
    assert_eq!(report["dry_run"], false);
    assert!(report["duration_ms"].is_u64());
    let mut connection = server.connection().await.unwrap();
    assert_eq!(
        all_keys(&mut connection).await.unwrap(),
        vec![
            "tenant:acm:1",
            "tenant:acme2:1",
            "tenant:x:acme:1",
            "user:acme:1"
        ]
    );

    let store = open_store(&database).await.unwrap();
    let records = store
        .query(&LogQuery {
            filter: LogFilter {
                kind: Some("cache.invalidated".to_owned()),
                ..LogFilter::default()
            },
            order: Order::OldestFirst,
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    let event = records[0].event().unwrap();
    assert_eq!(event.outcome, "allow");
    assert_eq!(event.tenant.as_deref(), Some("acme"));
    assert_eq!(event.subject.as_deref(), Some("sre-alice"));
    for (field, value) in [
        ("matched", 5_000u64),
        ("deleted", 5_000),
        ("scanned", 5_004),
    ] {
        assert_eq!(event.details[field], value, "{field}");
    }
    assert_eq!(event.details["dry_run"], false);
    assert!(event.details["duration_ms"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_a_summary_line_and_deletes_nothing() {
    let server = loaded_server().await;
    let mut command = invalidate_command(&["--tenant", "acme", "--dry-run", "--scan-count", "100"]);
    command.env("AVB_REDIS_URL", server.url());
    let (code, stdout, stderr) = run(command);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("dry run, tenant acme: 5000 keys would be deleted"),
        "{stdout}"
    );
    // Without an audit store it says the run is not recorded.
    assert!(stderr.contains("will not be recorded"), "{stderr}");
    // No progress bar when stderr is not a terminal.
    assert!(!stderr.contains("keys scanned"), "{stderr}");
    let mut connection = server.connection().await.unwrap();
    assert_eq!(db_size(&mut connection).await.unwrap(), 5_004);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_run_prints_what_it_deleted() {
    let server = loaded_server().await;
    let (code, stdout, stderr) = run(invalidate_command(&[
        "--tenant",
        "acme",
        "--redis",
        &server.url(),
    ]));
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        stdout
            .starts_with("tenant acme: deleted 5000 keys (5000 matched, about 5004 keys scanned)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tenant_ids_exit_2_without_touching_redis() {
    let server = loaded_server().await;
    let mut watcher = server.connection().await.unwrap();
    let connections = |info: String| info.parse::<u64>().unwrap();
    let before = connections(
        info_field(&mut watcher, "stats", "total_connections_received")
            .await
            .unwrap(),
    );
    for hostile in ["*", "acme*", "acme:x", "[a]", "a\\", ""] {
        let (code, stdout, stderr) = run(invalidate_command(&[
            "--tenant",
            hostile,
            "--redis",
            &server.url(),
            "--json",
        ]));
        assert_eq!(code, Some(2), "{hostile:?}: {stderr}");
        assert!(stderr.contains("invalid tenant id"), "{stderr}");
        let object: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert!(object["error"]
            .as_str()
            .unwrap()
            .contains("invalid tenant id"));
    }
    let after = connections(
        info_field(&mut watcher, "stats", "total_connections_received")
            .await
            .unwrap(),
    );
    assert_eq!(before, after, "the CLI connected to Redis for a hostile id");
    assert_eq!(db_size(&mut watcher).await.unwrap(), 5_004);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_exit_2() {
    for args in [
        vec!["--tenant", "acme", "--scan-count", "0"],
        vec!["--scan-count", "10"],
        vec!["--tenant", "acme", "--bogus"],
    ] {
        let (code, _, stderr) = run(invalidate_command(&args));
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_exits_1_with_a_clear_message() {
    let port = avb_tests::procs::free_port();
    let (code, stdout, stderr) = run(invalidate_command(&[
        "--tenant",
        "acme",
        "--redis",
        &format!("redis://user:hunter2@127.0.0.1:{port}"),
        "--json",
    ]));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to redis at 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2") && !stdout.contains("hunter2"));
    let object: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(object["tenant"], "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_audit_store_stops_the_run_before_anything_is_deleted() {
    let server = loaded_server().await;
    let (code, _, stderr) = run(invalidate_command(&[
        "--tenant",
        "acme",
        "--redis",
        &server.url(),
        "--database",
        "mysql://nowhere/audit",
    ]));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("nothing was deleted"), "{stderr}");
    let mut connection = server.connection().await.unwrap();
    assert_eq!(db_size(&mut connection).await.unwrap(), 5_004);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_a_progress_bar_against_the_database_size() {
    // `script` (util-linux, essential on Debian) gives the command a pseudo-terminal.
    let server = loaded_server().await;
    let command_line = format!(
        "{} cache invalidate --tenant acme --redis {}",
        companion_binary().display(),
        server.url()
    );
    let mut command = Command::new("script");
    command
        .args(["-qefc", &command_line, "/dev/null"])
        .env_remove("AVB_DATABASE_URL")
        .env("RUST_LOG", "warn");
    let (code, output, _) = run(command);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("keys scanned") && output.contains("/5004"),
        "no progress bar: {output:?}"
    );
    assert!(output.contains('%'), "{output:?}");
    assert!(
        output.contains("tenant acme: deleted 5000 keys"),
        "{output:?}"
    );
}
