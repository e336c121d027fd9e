//! Tenant cache invalidation against a real redis-server started by the test.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avb_companion::cache::{
    invalidate, tenant_pattern, validate_tenant_id, CacheError, InvalidateOptions, Progress,
    RedisTarget, Timeouts,
};
use avb_tests::procs::redis::{all_keys, db_size, info_field, load_keys, RedisServer};

/// Keys that must survive clearing tenant `acme`: neighbouring tenants,
/// prefixes, and keys that merely contain `acme` somewhere.
const NEIGHBOURS: &[&str] = &[
    "tenant:acme2:1",
    "tenant:acme2:profile",
    "tenant:acm:1",
    "tenant:acm",
    "tenant:ACME:1",
    "tenant:acme.eu:1",
    "tenant:acme",
    "tenant:x:acme:1",
    "user:acme:1",
    "acme",
    "xtenant:acme:1",
    "tenant::acme:1",
    "Tenant:acme:1",
];

fn acme_keys(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("tenant:acme:item:{i}"))
        .collect()
}

fn no_progress() -> impl Fn(Progress) + Send + Sync {
    |_| {}
}

async fn tenant_key_count(server: &RedisServer, pattern: &str) -> usize {
    let mut connection = server.connection().await.unwrap();
    all_keys(&mut connection)
        .await
        .unwrap()
        .into_iter()
        .filter(|key| glob_prefix_match(key, pattern))
        .count()
}

/// `tenant:X:*` patterns only: true when `key` starts with `tenant:X:`.
fn glob_prefix_match(key: &str, pattern: &str) -> bool {
    key.starts_with(pattern.trim_end_matches('*'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_a_tenant_deletes_exactly_its_keys() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.connection().await.unwrap();
    let mut tenant_keys = acme_keys(2_500);
    tenant_keys.push("tenant:acme:".to_owned());
    tenant_keys.push("tenant:acme:*".to_owned());
    tenant_keys.push("tenant:acme:x:acme2:1".to_owned());
    load_keys(&mut connection, tenant_keys.clone())
        .await
        .unwrap();
    load_keys(&mut connection, NEIGHBOURS.iter().map(|k| k.to_string()))
        .await
        .unwrap();
    // Keys that are not strings and not UTF-8 are tenant keys too.
    redis::cmd("HSET")
        .arg("tenant:acme:hash")
        .arg("f")
        .arg("v")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    redis::cmd("SET")
        .arg(b"tenant:acme:\xff\x00binary".as_slice())
        .arg("v")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let before = db_size(&mut connection).await.unwrap();

    let target = RedisTarget::connect(&server.url()).await.unwrap();
    assert!(!target.is_cluster());
    let tenant = validate_tenant_id("acme").unwrap();
    let report = invalidate(
        &target,
        &tenant,
        &InvalidateOptions::default(),
        &no_progress(),
    )
    .await
    .unwrap();

    let expected_deleted = tenant_keys.len() as u64 + 2;
    assert_eq!(report.tenant, "acme");
    assert_eq!(report.matched, expected_deleted);
    assert_eq!(report.deleted, expected_deleted);
    assert_eq!(report.scanned, before);
    assert!(!report.dry_run);
    let remaining: BTreeSet<String> = all_keys(&mut connection)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let neighbours: BTreeSet<String> = NEIGHBOURS.iter().map(|k| k.to_string()).collect();
    assert_eq!(remaining, neighbours);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_id_is_a_prefix_of_another_leaves_the_other_alone() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.connection().await.unwrap();
    load_keys(
        &mut connection,
        ["tenant:acm:1", "tenant:acme:1", "tenant:acme2:1"].map(String::from),
    )
    .await
    .unwrap();
    let target = RedisTarget::connect(&server.url()).await.unwrap();
    let report = invalidate(
        &target,
        &validate_tenant_id("acm").unwrap(),
        &InvalidateOptions::default(),
        &no_progress(),
    )
    .await
    .unwrap();
    assert_eq!(report.deleted, 1);
    assert_eq!(
        all_keys(&mut connection).await.unwrap(),
        vec!["tenant:acme2:1", "tenant:acme:1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tenant_ids_are_rejected_and_cannot_reach_redis() {
    // `invalidate` only takes a validated `TenantId`, so rejection here means
    // Redis is never asked; the CLI test checks the same end to end.
    for hostile in [
        "*",
        "acme*",
        "acme:*",
        "a?c",
        "[a-z]*",
        "acme]",
        "acme\\",
        "acme:x",
        "",
        " ",
        "acme\r\nFLUSHALL",
    ] {
        let err = validate_tenant_id(hostile).unwrap_err();
        assert!(
            matches!(err, CacheError::InvalidTenant { .. }),
            "{hostile:?}"
        );
        assert!(err.is_usage_error());
    }
    // The pattern escapes glob characters as a second guard.
    assert_eq!(
        tenant_pattern(&validate_tenant_id("a.b-c_d").unwrap()),
        "tenant:a.b-c_d:*"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_without_deleting() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.connection().await.unwrap();
    load_keys(&mut connection, acme_keys(3_000)).await.unwrap();
    load_keys(&mut connection, NEIGHBOURS.iter().map(|k| k.to_string()))
        .await
        .unwrap();
    let before = all_keys(&mut connection).await.unwrap();

    let target = RedisTarget::connect(&server.url()).await.unwrap();
    let options = InvalidateOptions {
        dry_run: true,
        ..InvalidateOptions::default()
    };
    let report = invalidate(
        &target,
        &validate_tenant_id("acme").unwrap(),
        &options,
        &no_progress(),
    )
    .await
    .unwrap();
    assert!(report.dry_run);
    assert_eq!(report.matched, 3_000);
    assert_eq!(report.deleted, 0);
    assert_eq!(all_keys(&mut connection).await.unwrap(), before);
    let unlinks = info_field(&mut connection, "commandstats", "cmdstat_unlink").await;
    assert!(unlinks.is_err(), "a dry run sent UNLINK: {unlinks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_keys_are_cleared_with_progress_reported() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.connection().await.unwrap();
    load_keys(&mut connection, acme_keys(100_000))
        .await
        .unwrap();
    load_keys(
        &mut connection,
        (0..100_000).map(|i| format!("tenant:other:{i}")),
    )
    .await
    .unwrap();

    let target = RedisTarget::connect(&server.url()).await.unwrap();
    let seen = Mutex::new(Vec::<Progress>::new());
    let record = |progress: Progress| seen.lock().unwrap().push(progress);
    let report = invalidate(
        &target,
        &validate_tenant_id("acme").unwrap(),
        &InvalidateOptions::default(),
        &record,
    )
    .await
    .unwrap();

    assert_eq!(report.matched, 100_000);
    assert_eq!(report.deleted, 100_000);
    assert_eq!(report.scanned, 200_000);
    assert_eq!(db_size(&mut connection).await.unwrap(), 100_000);
    assert_eq!(tenant_key_count(&server, "tenant:acme:*").await, 0);
    assert_eq!(tenant_key_count(&server, "tenant:other:*").await, 100_000);
    // UNLINK really was batched: far fewer calls than keys.
    let unlink_stats = info_field(&mut connection, "commandstats", "cmdstat_unlink")
        .await
        .unwrap();
    let calls: u64 = unlink_stats
        .split(',')
        .find_map(|part| part.strip_prefix("calls="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(calls <= 1_000, "{calls} UNLINK calls for 100,000 keys");

    let seen = seen.into_inner().unwrap();
    assert!(seen.len() > 10, "only {} progress reports", seen.len());
    for pair in seen.windows(2) {
        assert!(pair[1].scanned >= pair[0].scanned, "{pair:?}");
        assert!(pair[1].matched >= pair[0].matched, "{pair:?}");
        assert!(pair[1].deleted >= pair[0].deleted, "{pair:?}");
    }
    assert!(seen
        .iter()
        .all(|p| p.db_size == 200_000 && p.deleted <= p.matched));
    let last = seen.last().unwrap();
    assert_eq!(
        (last.scanned, last.matched, last.deleted),
        (200_000, 100_000, 100_000)
    );
    // Midway reports estimate the scan position rather than jumping 0 → 100%.
    assert!(seen.iter().any(|p| p.scanned > 0 && p.scanned < 200_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_present_for_the_whole_run_are_gone_even_while_writes_continue() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.connection().await.unwrap();
    load_keys(&mut connection, acme_keys(150_000))
        .await
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut connection = server.connection().await.unwrap();
        let done = done.clone();
        tokio::spawn(async move {
            let mut written = 0u64;
            while !done.load(Ordering::Relaxed) {
                let mut pipeline = redis::pipe();
                for i in written..written + 100 {
                    pipeline
                        .cmd("SET")
                        .arg(format!("tenant:acme:new:{i}"))
                        .arg("v")
                        .ignore();
                    pipeline
                        .cmd("SET")
                        .arg(format!("tenant:bystander:{i}"))
                        .arg("v")
                        .ignore();
                }
                pipeline.query_async::<()>(&mut connection).await.unwrap();
                written += 100;
            }
            written
        })
    };
    // Let the writer get going before the run starts.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let target = RedisTarget::connect(&server.url()).await.unwrap();
    let options = InvalidateOptions {
        scan_count: 200,
        ..InvalidateOptions::default()
    };
    let report = invalidate(
        &target,
        &validate_tenant_id("acme").unwrap(),
        &options,
        &no_progress(),
    )
    .await
    .unwrap();
    done.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written >= 200, "the writer barely ran ({written} keys)");

    let remaining = all_keys(&mut connection).await.unwrap();
    let leftover_acme: Vec<&String> = remaining
        .iter()
        .filter(|key| key.starts_with("tenant:acme:"))
        .collect();
    assert!(
        leftover_acme
            .iter()
            .all(|key| key.starts_with("tenant:acme:new:")),
        "a key present for the whole run survived: {:?}",
        leftover_acme
            .iter()
            .find(|key| !key.starts_with("tenant:acme:new:"))
    );
    let bystanders = remaining
        .iter()
        .filter(|key| key.starts_with("tenant:bystander:"))
        .count();
    assert_eq!(bystanders as u64, written);
    assert!(report.deleted >= 150_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_is_resumed_and_the_run_finishes() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.connection().await.unwrap();
    load_keys(&mut connection, acme_keys(200_000))
        .await
        .unwrap();
    load_keys(
        &mut connection,
        (0..200_000).map(|i| format!("tenant:other:{i}")),
    )
    .await
    .unwrap();
    let connections_before: u64 =
        info_field(&mut connection, "stats", "total_connections_received")
            .await
            .unwrap()
            .parse()
            .unwrap();

    let target = RedisTarget::connect(&server.url()).await.unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let run = {
        let started = started.clone();
        tokio::spawn(async move {
            let signalled = AtomicBool::new(false);
            let on_progress = |progress: Progress| {
                if progress.deleted > 0 && !signalled.swap(true, Ordering::Relaxed) {
                    started.notify_one();
                }
            };
            // A small COUNT makes the scan long enough to be interrupted.
            let options = InvalidateOptions {
                scan_count: 50,
                ..InvalidateOptions::default()
            };
            invalidate(
                &target,
                &validate_tenant_id("acme").unwrap(),
                &options,
                &on_progress,
            )
            .await
        })
    };
    tokio::time::timeout(Duration::from_secs(30), started.notified())
        .await
        .expect("the run never deleted anything");
    assert!(
        !run.is_finished(),
        "the run finished before it could be interrupted"
    );
    // Kills every normal client but this one: the scanner and the deleter.
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(killed >= 2, "only {killed} connections were killed");

    let report = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run hung after its connections were killed")
        .unwrap()
        .unwrap();
    assert_eq!(report.deleted, 200_000);
    assert_eq!(tenant_key_count(&server, "tenant:acme:*").await, 0);
    assert_eq!(db_size(&mut connection).await.unwrap(), 200_000);
    let connections_after: u64 = info_field(&mut connection, "stats", "total_connections_received")
        .await
        .unwrap()
        .parse()
        .unwrap();
    // RedisTarget::connect, the run's two connections, and at least one reconnect.
    assert!(
        connections_after >= connections_before + 4,
        "no reconnection happened ({connections_before} -> {connections_after})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_mid_run_fails_with_how_far_it_got() {
    let mut server = Some(RedisServer::start().unwrap());
    let url = server.as_ref().unwrap().url();
    let mut connection = server.as_ref().unwrap().connection().await.unwrap();
    load_keys(&mut connection, acme_keys(200_000))
        .await
        .unwrap();
    load_keys(
        &mut connection,
        (0..200_000).map(|i| format!("tenant:other:{i}")),
    )
    .await
    .unwrap();

    let target = RedisTarget::connect(&url).await.unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let run = {
        let started = started.clone();
        tokio::spawn(async move {
            let signalled = AtomicBool::new(false);
            let on_progress = |progress: Progress| {
                if progress.deleted > 0 && !signalled.swap(true, Ordering::Relaxed) {
                    started.notify_one();
                }
            };
            let options = InvalidateOptions {
                scan_count: 50,
                ..InvalidateOptions::default()
            };
            invalidate(
                &target,
                &validate_tenant_id("acme").unwrap(),
                &options,
                &on_progress,
            )
            .await
        })
    };
    tokio::time::timeout(Duration::from_secs(30), started.notified())
        .await
        .expect("the run never deleted anything");
    let stopped_at = Instant::now();
    drop(server.take()); // stops redis-server

    let err = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run hung after the server went away")
        .unwrap()
        .unwrap_err();
    match &err {
        CacheError::Interrupted {
            scanned,
            matched,
            deleted,
            node,
            ..
        } => {
            assert!(
                *deleted > 0 && *matched >= *deleted && *scanned > 0,
                "{err}"
            );
            assert!(*deleted < 200_000, "{err}");
            assert!(url.ends_with(node.as_str()), "{err}");
        }
        other => panic!("expected Interrupted, got {other}"),
    }
    assert!(!err.is_usage_error());
    assert!(err.to_string().contains("after scanning about"), "{err}");
    // Retried a few times with backoff, but gave up in bounded time.
    assert!(stopped_at.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_instead_of_hanging() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeouts = Timeouts {
        connect: Duration::from_millis(500),
        response: Duration::from_millis(500),
    };
    let started = Instant::now();
    let err = RedisTarget::connect_with(&format!("redis://127.0.0.1:{port}"), timeouts)
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::Connect { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_number_in_the_url_is_respected() {
    let server = RedisServer::start().unwrap();
    let mut connection = server.connection().await.unwrap();
    load_keys(&mut connection, acme_keys(10)).await.unwrap();
    let target = RedisTarget::connect(&format!("{}/3", server.url()))
        .await
        .unwrap();
    let report = invalidate(
        &target,
        &validate_tenant_id("acme").unwrap(),
        &InvalidateOptions::default(),
        &no_progress(),
    )
    .await
    .unwrap();
    assert_eq!(report.matched, 0);
    assert_eq!(db_size(&mut connection).await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_scan_count_is_refused_before_redis_is_asked() {
    let server = RedisServer::start().unwrap();
    let target = RedisTarget::connect(&server.url()).await.unwrap();
    for scan_count in [0, 100_001] {
        let err = invalidate(
            &target,
            &validate_tenant_id("acme").unwrap(),
            &InvalidateOptions {
                dry_run: false,
                scan_count,
            },
            &no_progress(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CacheError::InvalidOption { .. }), "{err}");
    }
}
