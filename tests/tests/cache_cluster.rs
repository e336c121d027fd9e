//! Tenant cache invalidation on a real three-primary Redis Cluster, compared
//! with a single redis-server holding the same keys.

use std::time::Duration;

use avb_companion::cache::{
    invalidate, key_hash_slot, validate_tenant_id, CacheError, InvalidateOptions, Progress,
    RedisTarget, Timeouts,
};
use avb_tests::procs::redis::{all_keys, load_keys, RedisCluster, RedisServer};

/// Tenant `acme`'s keys plus neighbours that must survive.
fn dataset() -> Vec<String> {
    let mut keys: Vec<String> = (0..20_000).map(|i| format!("tenant:acme:{i}")).collect();
    keys.extend((0..5_000).map(|i| format!("tenant:acme2:{i}")));
    keys.extend((0..5_000).map(|i| format!("tenant:acm:{i}")));
    keys.extend((0..100).map(|i| format!("user:acme:{i}")));
    keys.extend((0..100).map(|i| format!("tenant:x:acme:{i}")));
    // Hash-tagged tenant keys all live in one slot: one multi-key UNLINK there.
    keys.extend((0..300).map(|i| format!("tenant:acme:{{session}}:{i}")));
    keys
}

fn no_progress() -> impl Fn(Progress) + Send + Sync {
    |_| {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_ends_up_exactly_like_a_single_server() {
    let cluster = RedisCluster::start(3).await.unwrap();
    let single = RedisServer::start().unwrap();
    let keys = dataset();
    cluster.load_keys(keys.clone()).await.unwrap();
    let mut single_connection = single.connection().await.unwrap();
    load_keys(&mut single_connection, keys.clone())
        .await
        .unwrap();

    // The tenant's keys really are spread over every primary.
    for node in cluster.nodes() {
        let on_node = all_keys(&mut node.connection().await.unwrap())
            .await
            .unwrap();
        assert!(
            on_node
                .iter()
                .filter(|k| k.starts_with("tenant:acme:"))
                .count()
                > 1_000,
            "node {} holds too few tenant keys",
            node.port()
        );
    }

    let cluster_target = RedisTarget::connect(&cluster.seed_url()).await.unwrap();
    assert!(cluster_target.is_cluster());
    let mut primaries = cluster_target.primary_addresses().await.unwrap();
    primaries.sort();
    let mut expected: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port()))
        .collect();
    expected.sort();
    assert_eq!(primaries, expected);

    let single_target = RedisTarget::connect(&single.url()).await.unwrap();
    let tenant = validate_tenant_id("acme").unwrap();
    let options = InvalidateOptions::default();
    let on_cluster = invalidate(&cluster_target, &tenant, &options, &no_progress())
        .await
        .unwrap();
    let on_single = invalidate(&single_target, &tenant, &options, &no_progress())
        .await
        .unwrap();

    assert_eq!(on_cluster.matched, 20_300);
    assert_eq!(on_cluster.deleted, 20_300);
    assert_eq!(
        (on_cluster.matched, on_cluster.deleted, on_cluster.scanned),
        (on_single.matched, on_single.deleted, on_single.scanned)
    );
    let remaining_cluster = cluster.all_keys().await.unwrap();
    let remaining_single = all_keys(&mut single_connection).await.unwrap();
    assert_eq!(remaining_cluster.len(), 10_200);
    assert_eq!(remaining_cluster, remaining_single);
    assert!(remaining_cluster
        .iter()
        .all(|k| !k.starts_with("tenant:acme:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_dry_run_counts_every_primary_and_deletes_nothing() {
    let cluster = RedisCluster::start(3).await.unwrap();
    cluster.load_keys(dataset()).await.unwrap();
    let target = RedisTarget::connect(&cluster.seed_url()).await.unwrap();
    let options = InvalidateOptions {
        dry_run: true,
        scan_count: 500,
    };
    let report = invalidate(
        &target,
        &validate_tenant_id("acme").unwrap(),
        &options,
        &no_progress(),
    )
    .await
    .unwrap();
    assert_eq!((report.matched, report.deleted), (20_300, 0));
    assert_eq!(report.scanned, dataset().len() as u64);
    assert_eq!(cluster.all_keys().await.unwrap().len(), dataset().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hash_slot_of_a_key_matches_cluster_keyslot() {
    let cluster = RedisCluster::start(3).await.unwrap();
    let mut connection = cluster.nodes()[0].connection().await.unwrap();
    for key in [
        "tenant:acme:1",
        "tenant:acme:{session}:7",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "{user1000}.following",
        "tenant:a.b-c_d:\u{e9}",
    ] {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(key_hash_slot(key.as_bytes()), slot, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_primary_fails_the_run_before_anything_is_deleted() {
    let mut cluster = RedisCluster::start(3).await.unwrap();
    cluster.load_keys(dataset()).await.unwrap();
    let target = RedisTarget::connect(&cluster.seed_url()).await.unwrap();
    let mut before = Vec::new();
    for node in &cluster.nodes()[..2] {
        before.push(
            all_keys(&mut node.connection().await.unwrap())
                .await
                .unwrap(),
        );
    }
    let stopped = format!("127.0.0.1:{}", cluster.nodes()[2].port());
    cluster.stop_node(2);

    let err = invalidate(
        &target,
        &validate_tenant_id("acme").unwrap(),
        &InvalidateOptions::default(),
        &no_progress(),
    )
    .await
    .unwrap_err();
    // Either the cluster already marked the node failed (topology error) or it
    // still lists it and connecting fails; nothing may be deleted either way.
    match &err {
        CacheError::Connect { node, .. } => assert_eq!(node, &stopped),
        CacheError::Topology { .. } => {}
        other => panic!("unexpected error: {other}"),
    }
    for (node, keys) in cluster.nodes()[..2].iter().zip(before) {
        assert_eq!(
            all_keys(&mut node.connection().await.unwrap())
                .await
                .unwrap(),
            keys
        );
    }
    // A fresh connect also refuses to proceed.
    let short = Timeouts {
        connect: Duration::from_secs(1),
        response: Duration::from_secs(1),
    };
    assert!(RedisTarget::connect_with(&cluster.seed_url(), short)
        .await
        .is_err());
}
