//! One conformance suite for every audit store: each case below runs against a
//! temporary SQLite file and against a real PostgreSQL server started by the
//! test binary (one server, a fresh database per test).
//!
//! Run: `cargo test -p avb-tests --test audit_conformance`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use avb_companion::api::{AppState, IngestToken};
use avb_companion::audit::event::{format_time_ms, validate};
use avb_companion::audit::postgres::tokio_postgres;
use avb_companion::audit::sqlite::rusqlite;
use avb_companion::audit::store::{
    Bucket, Cursor, Ingested, LogFilter, LogQuery, Order, PurgeRequest,
};
use avb_companion::audit::{open_store, verify_chain, AuditEvent, AuditStore};
use avb_tests::http::RawRequest;
use avb_tests::procs::postgres::PostgresServer;
use serde_json::{json, Value};

/// 2026-01-01T00:00:00Z: every test event's time is an offset from here.
const T0: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// Where the store under test keeps its rows, for tampering with raw SQL.
enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

struct Fixture {
    backend: Backend,
    url: String,
    store: Arc<dyn AuditStore>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let url = format!("sqlite://{}", path.display());
        let store = open_store(&url).await.unwrap();
        Self {
            backend: Backend::Sqlite(path),
            url,
            store,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Self {
        let server = PostgresServer::shared().unwrap();
        let url = server.fresh_database().await.unwrap();
        let store = open_store(&url).await.unwrap();
        Self {
            backend: Backend::Postgres(url.clone()),
            url,
            store,
            _dir: None,
        }
    }

    /// Runs raw SQL against the store's database, behind its back.
    async fn tamper(&self, sql: &str) {
        match &self.backend {
            Backend::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Backend::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let task = tokio::spawn(connection);
                client.batch_execute(sql).await.unwrap();
                drop(client);
                let _ = task.await;
            }
        }
    }

    async fn ingest(&self, events: Vec<AuditEvent>) -> Vec<Ingested> {
        let valid = events.into_iter().map(|e| validate(e).unwrap()).collect();
        self.store.ingest(valid).await.unwrap().results
    }

    async fn query(
        &self,
        filter: LogFilter,
        order: Order,
        after: Option<Cursor>,
        limit: u32,
    ) -> Vec<String> {
        self.store
            .query(&LogQuery {
                filter,
                order,
                after,
                limit,
            })
            .await
            .unwrap()
            .iter()
            .map(|r| r.event().unwrap().id)
            .collect()
    }

    async fn all_ids(&self, filter: LogFilter) -> Vec<String> {
        self.query(filter, Order::NewestFirst, None, 10_000).await
    }
}

fn event(id: &str, offset_ms: i64) -> AuditEvent {
    AuditEvent {
        id: id.to_owned(),
        time: format_time_ms(T0 + offset_ms),
        kind: "authz.denied".to_owned(),
        outcome: "deny".to_owned(),
        status: Some(403),
        reason: Some("missing_role".to_owned()),
        rule: Some("audit.logs.list".to_owned()),
        method: Some("GET".to_owned()),
        path: Some("/api/v1/audit/logs".to_owned()),
        subject: Some("alice".to_owned()),
        tenant: Some("acme".to_owned()),
        roles: vec!["DEVELOPER".to_owned()],
        source: Some("10.0.0.1".to_owned()),
        request_id: Some(format!("req-{id}")),
        policy_revision: Some("b0b9c4bf9e3507e0".to_owned()),
        ..AuditEvent::default()
    }
}

fn allowed(id: &str, offset_ms: i64) -> AuditEvent {
    AuditEvent {
        kind: "authz.allowed".to_owned(),
        outcome: "allow".to_owned(),
        status: Some(200),
        reason: Some("role_granted".to_owned()),
        ..event(id, offset_ms)
    }
}

/// A varied set: 3 subjects, 2 tenants, 3 kinds, rules with and without.
fn varied_events() -> Vec<AuditEvent> {
    (0..30)
        .map(|i| {
            let mut e = if i % 3 == 0 {
                allowed(&format!("v{i:02}"), i * MINUTE)
            } else {
                event(&format!("v{i:02}"), i * MINUTE)
            };
            e.subject = Some(["alice", "bob", "carol"][(i % 3) as usize].to_owned());
            e.tenant = Some(if i % 2 == 0 { "acme" } else { "globex" }.to_owned());
            if i % 5 == 0 {
                e.kind = "webhook.rejected".to_owned();
                e.rule = None;
                e.outcome = "deny".to_owned();
            } else if i % 2 == 0 {
                e.rule = Some("audit.purge".to_owned());
            }
            e
        })
        .collect()
}

fn expected_ids(events: &[AuditEvent], keep: impl Fn(&AuditEvent) -> bool) -> Vec<String> {
    // Newest first: the varied events have strictly increasing times.
    let mut ids: Vec<String> = events
        .iter()
        .filter(|e| keep(e))
        .map(|e| e.id.clone())
        .collect();
    ids.reverse();
    ids
}

// ---------------------------------------------------------------- ingest

async fn ingest_assigns_gapless_seqs_from_one(f: Fixture) {
    let results = f
        .ingest(vec![event("a", 0), event("b", 1), event("c", 2)])
        .await;
    assert_eq!(
        results,
        vec![
            Ingested::Stored { seq: 1 },
            Ingested::Stored { seq: 2 },
            Ingested::Stored { seq: 3 }
        ]
    );
    let results = f.ingest(vec![event("d", 3)]).await;
    assert_eq!(results, vec![Ingested::Stored { seq: 4 }]);
    let state = f.store.chain_state().await.unwrap();
    assert_eq!(state.head_seq, 4);
    assert!(verify_chain(f.store.as_ref()).await.unwrap().is_intact());
}

async fn duplicate_ids_are_counted_and_not_chained_again(f: Fixture) {
    f.ingest(vec![event("a", 0), event("b", 1)]).await;
    // Again, partly: a retried batch after a lost answer.
    let results = f
        .ingest(vec![
            event("b", 1),
            event("c", 2),
            event("c", 2),
            event("a", 0),
        ])
        .await;
    assert_eq!(
        results,
        vec![
            Ingested::Duplicate,
            Ingested::Stored { seq: 3 },
            Ingested::Duplicate,
            Ingested::Duplicate
        ]
    );
    assert_eq!(f.all_ids(LogFilter::default()).await, vec!["c", "b", "a"]);
    assert_eq!(f.store.chain_state().await.unwrap().head_seq, 3);
    assert!(verify_chain(f.store.as_ref()).await.unwrap().is_intact());
}

async fn a_duplicate_keeps_the_first_version_of_an_event(f: Fixture) {
    f.ingest(vec![event("a", 0)]).await;
    let mut changed = event("a", 0);
    changed.outcome = "allow".to_owned();
    assert_eq!(f.ingest(vec![changed]).await, vec![Ingested::Duplicate]);
    let stored = f.store.get("a").await.unwrap().unwrap().event().unwrap();
    assert_eq!(stored.outcome, "deny");
}

async fn empty_batch_changes_nothing(f: Fixture) {
    assert!(f.ingest(vec![]).await.is_empty());
    let state = f.store.chain_state().await.unwrap();
    assert_eq!(state.head_seq, 0);
    assert!(verify_chain(f.store.as_ref()).await.unwrap().is_intact());
}

async fn concurrent_batches_keep_the_chain_gapless(f: Fixture) {
    // Two store handles on the same database: two companions.
    let second = open_store(&f.url).await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = if writer % 2 == 0 {
            f.store.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            for batch in 0..10 {
                let events = (0..10)
                    .map(|i| validate(event(&format!("w{writer}-b{batch}-{i}"), i)).unwrap())
                    .collect();
                store.ingest(events).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let report = verify_chain(f.store.as_ref()).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 800);
    assert_eq!(report.head_seq, 800);
}

async fn events_round_trip_with_every_field(f: Fixture) {
    let mut e = event("full", 5);
    e.details.insert("matched".into(), json!(3));
    e.details
        .insert("nested".into(), json!({"b": [1, 2], "a": null}));
    e.time = "2026-01-01T02:00:00.005+02:00".to_owned();
    f.ingest(vec![e.clone()]).await;
    let record = f.store.get("full").await.unwrap().unwrap();
    let stored = record.event().unwrap();
    // Stored in canonical form: UTC, milliseconds.
    assert_eq!(stored.time, format_time_ms(T0 + 5));
    assert_eq!(stored.details, e.details);
    assert_eq!(stored.roles, e.roles);
    assert_eq!(record.seq, 1);
    assert_eq!(record.prev_hash, "0".repeat(64));
    assert_eq!(record.hash.len(), 64);
    assert!(f.store.get("missing").await.unwrap().is_none());
}

// ---------------------------------------------------------------- filters

/// Which events a filter is expected to select.
type Predicate = Box<dyn Fn(&AuditEvent) -> bool>;

async fn every_filter_selects_exactly_its_records(f: Fixture) {
    let events = varied_events();
    f.ingest(events.clone()).await;
    let cases: Vec<(LogFilter, Predicate)> = vec![
        (
            LogFilter {
                kind: Some("webhook.rejected".into()),
                ..Default::default()
            },
            Box::new(|e| e.kind == "webhook.rejected"),
        ),
        (
            LogFilter {
                outcome: Some("allow".into()),
                ..Default::default()
            },
            Box::new(|e| e.outcome == "allow"),
        ),
        (
            LogFilter {
                subject: Some("bob".into()),
                ..Default::default()
            },
            Box::new(|e| e.subject.as_deref() == Some("bob")),
        ),
        (
            LogFilter {
                tenant: Some("globex".into()),
                ..Default::default()
            },
            Box::new(|e| e.tenant.as_deref() == Some("globex")),
        ),
        (
            LogFilter {
                rule: Some("audit.purge".into()),
                ..Default::default()
            },
            Box::new(|e| e.rule.as_deref() == Some("audit.purge")),
        ),
        (
            // since is inclusive, until exclusive.
            LogFilter {
                since_ms: Some(T0 + 10 * MINUTE),
                until_ms: Some(T0 + 20 * MINUTE),
                ..Default::default()
            },
            Box::new(|e| {
                let t = avb_companion::audit::event::parse_time_ms(&e.time).unwrap();
                (T0 + 10 * MINUTE..T0 + 20 * MINUTE).contains(&t)
            }),
        ),
        (
            LogFilter {
                subject: Some("alice".into()),
                tenant: Some("acme".into()),
                outcome: Some("deny".into()),
                ..Default::default()
            },
            Box::new(|e| {
                e.subject.as_deref() == Some("alice")
                    && e.tenant.as_deref() == Some("acme")
                    && e.outcome == "deny"
            }),
        ),
        (
            LogFilter {
                subject: Some("nobody".into()),
                ..Default::default()
            },
            Box::new(|_| false),
        ),
    ];
    for (filter, keep) in cases {
        let got = f.all_ids(filter.clone()).await;
        let want = expected_ids(&events, keep);
        assert_eq!(got, want, "filter {filter:?}");
    }
    assert_eq!(f.all_ids(LogFilter::default()).await.len(), 30);
}

// ---------------------------------------------------------------- pagination

async fn pages_cover_every_record_once_newest_first(f: Fixture) {
    // Several records share a timestamp: seq breaks the tie.
    let events: Vec<AuditEvent> = (0..25)
        .map(|i| event(&format!("p{i:02}"), (i / 4) * MINUTE))
        .collect();
    f.ingest(events).await;
    for limit in [1, 4, 7, 25, 100] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = f
                .store
                .query(&LogQuery {
                    filter: LogFilter::default(),
                    order: Order::NewestFirst,
                    after,
                    limit,
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= limit as usize);
            after = page.last().map(|r| r.cursor());
            seen.extend(page);
        }
        assert_eq!(seen.len(), 25, "limit {limit}");
        let keys: Vec<(i64, i64)> = seen.iter().map(|r| (r.time_ms, r.seq)).collect();
        let mut sorted = keys.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(keys, sorted, "limit {limit}: not newest first");
        let unique: HashSet<i64> = seen.iter().map(|r| r.seq).collect();
        assert_eq!(unique.len(), 25, "limit {limit}: a record came twice");
    }
}

async fn oldest_first_order_runs_the_other_way(f: Fixture) {
    f.ingest(vec![
        event("late", 2 * MINUTE),
        event("early", 0),
        event("mid", MINUTE),
    ])
    .await;
    let ids = f
        .query(LogFilter::default(), Order::OldestFirst, None, 10)
        .await;
    assert_eq!(ids, vec!["early", "mid", "late"]);
    let ids = f
        .query(LogFilter::default(), Order::NewestFirst, None, 10)
        .await;
    assert_eq!(ids, vec!["late", "mid", "early"]);
}

async fn cursor_past_the_end_and_filtered_pages_are_empty_or_exact(f: Fixture) {
    f.ingest(varied_events()).await;
    let first = f
        .store
        .query(&LogQuery {
            filter: LogFilter {
                subject: Some("carol".into()),
                ..Default::default()
            },
            order: Order::NewestFirst,
            after: None,
            limit: 3,
        })
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let rest = f
        .query(
            LogFilter {
                subject: Some("carol".into()),
                ..Default::default()
            },
            Order::NewestFirst,
            first.last().map(|r| r.cursor()),
            100,
        )
        .await;
    assert_eq!(rest.len(), 7);
    let past = f
        .query(
            LogFilter::default(),
            Order::NewestFirst,
            Some(Cursor {
                time_ms: T0 - DAY,
                seq: 1,
            }),
            100,
        )
        .await;
    assert!(past.is_empty());
}

// ---------------------------------------------------------------- statistics

async fn statistics_count_by_kind_outcome_rule_and_time(f: Fixture) {
    let events = varied_events();
    f.ingest(events.clone()).await;
    let stats = f
        .store
        .statistics(&LogFilter::default(), Bucket::Hour)
        .await
        .unwrap();
    assert_eq!(stats.total, 30);
    let mut by_kind = BTreeMap::new();
    let mut by_outcome = BTreeMap::new();
    let mut by_rule = BTreeMap::new();
    for e in &events {
        *by_kind.entry(e.kind.clone()).or_insert(0u64) += 1;
        *by_outcome.entry(e.outcome.clone()).or_insert(0u64) += 1;
        if let Some(rule) = &e.rule {
            *by_rule.entry(rule.clone()).or_insert(0u64) += 1;
        }
    }
    assert_eq!(stats.by_kind, by_kind);
    assert_eq!(stats.by_outcome, by_outcome);
    assert_eq!(stats.by_rule, by_rule);
    // 30 minutes from T0: one hour bucket.
    assert_eq!(stats.series.len(), 1);
    assert_eq!(stats.series[0].start, format_time_ms(T0));
    assert_eq!(stats.series[0].total, 30);
    assert_eq!(stats.series[0].deny, by_outcome["deny"]);
    assert_eq!(stats.series[0].allow, by_outcome["allow"]);
}

async fn statistics_buckets_by_hour_and_day_and_honour_filters(f: Fixture) {
    f.ingest(vec![
        event("h0a", 5 * MINUTE),
        event("h0b", 59 * MINUTE),
        allowed("h1", HOUR),
        event("d1", DAY + 3 * HOUR),
        event("before", -1),
    ])
    .await;
    let hourly = f
        .store
        .statistics(&LogFilter::default(), Bucket::Hour)
        .await
        .unwrap();
    let points: Vec<(String, u64)> = hourly
        .series
        .iter()
        .map(|p| (p.start.clone(), p.total))
        .collect();
    assert_eq!(
        points,
        vec![
            (format_time_ms(T0 - HOUR), 1),
            (format_time_ms(T0), 2),
            (format_time_ms(T0 + HOUR), 1),
            (format_time_ms(T0 + DAY + 3 * HOUR), 1),
        ]
    );
    let daily = f
        .store
        .statistics(&LogFilter::default(), Bucket::Day)
        .await
        .unwrap();
    let points: Vec<(String, u64)> = daily
        .series
        .iter()
        .map(|p| (p.start.clone(), p.total))
        .collect();
    assert_eq!(
        points,
        vec![
            (format_time_ms(T0 - DAY), 1),
            (format_time_ms(T0), 3),
            (format_time_ms(T0 + DAY), 1)
        ]
    );
    let filtered = f
        .store
        .statistics(
            &LogFilter {
                since_ms: Some(T0),
                until_ms: Some(T0 + DAY),
                ..Default::default()
            },
            Bucket::Day,
        )
        .await
        .unwrap();
    assert_eq!(filtered.total, 3);
    assert_eq!(filtered.by_outcome.get("allow"), Some(&1));
    assert_eq!(filtered.by_outcome.get("deny"), Some(&2));
    let empty = f
        .store
        .statistics(
            &LogFilter {
                subject: Some("nobody".into()),
                ..Default::default()
            },
            Bucket::Hour,
        )
        .await
        .unwrap();
    assert_eq!(empty.total, 0);
    assert!(empty.series.is_empty() && empty.by_kind.is_empty());
}

// ---------------------------------------------------------------- purge

fn purge_request(cutoff_ms: i64, dry_run: bool) -> PurgeRequest {
    PurgeRequest {
        cutoff_ms,
        older_than_days: 7,
        dry_run,
        record: AuditEvent {
            id: avb_companion::new_event_id(),
            time: format_time_ms(T0 + 100 * DAY),
            kind: "audit.purged".to_owned(),
            outcome: "allow".to_owned(),
            subject: Some("admin-1".to_owned()),
            ..AuditEvent::default()
        },
    }
}

async fn dry_run_purge_counts_without_deleting(f: Fixture) {
    f.ingest((0..10).map(|i| event(&format!("e{i}"), i * DAY)).collect())
        .await;
    let outcome = f
        .store
        .purge(purge_request(T0 + 4 * DAY, true))
        .await
        .unwrap();
    assert_eq!(outcome.purged, 4);
    assert!(outcome.dry_run);
    assert_eq!(outcome.record_id, None);
    assert_eq!(f.all_ids(LogFilter::default()).await.len(), 10);
    assert_eq!(f.store.chain_state().await.unwrap().head_seq, 10);
}

async fn purge_removes_the_old_prefix_and_the_chain_still_verifies(f: Fixture) {
    f.ingest((0..10).map(|i| event(&format!("e{i}"), i * DAY)).collect())
        .await;
    let outcome = f
        .store
        .purge(purge_request(T0 + 4 * DAY, false))
        .await
        .unwrap();
    assert_eq!(outcome.purged, 4);
    assert_eq!(outcome.first_seq, 5);
    let record_id = outcome.record_id.unwrap();
    let ids = f.all_ids(LogFilter::default()).await;
    assert_eq!(ids.len(), 7, "{ids:?}");
    assert!(!ids.contains(&"e3".to_owned()) && ids.contains(&"e4".to_owned()));
    let record = f.store.get(&record_id).await.unwrap().unwrap();
    assert_eq!(record.seq, 11);
    let purged = record.event().unwrap();
    assert_eq!(purged.kind, "audit.purged");
    assert_eq!(purged.subject.as_deref(), Some("admin-1"));
    assert_eq!(purged.details["purged"], json!(4));
    assert_eq!(purged.details["first_seq"], json!(5));
    let report = verify_chain(f.store.as_ref()).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.first_seq, 5);
    assert_eq!(report.records, 7);
    // A second purge moves the anchor again and still verifies.
    let again = f
        .store
        .purge(purge_request(T0 + 8 * DAY, false))
        .await
        .unwrap();
    assert_eq!(again.purged, 4);
    assert!(verify_chain(f.store.as_ref()).await.unwrap().is_intact());
}

async fn purge_stops_at_the_first_record_that_is_not_old(f: Fixture) {
    // A late-arriving old event after a young one stays until the young one
    // is old too: only a prefix of the chain can go.
    f.ingest(vec![
        event("old1", 0),
        event("young", 10 * DAY),
        event("old2", DAY),
    ])
    .await;
    let outcome = f
        .store
        .purge(purge_request(T0 + 5 * DAY, false))
        .await
        .unwrap();
    assert_eq!(outcome.purged, 1);
    let ids = f.all_ids(LogFilter::default()).await;
    assert!(ids.contains(&"old2".to_owned()));
    assert!(!ids.contains(&"old1".to_owned()));
    assert!(verify_chain(f.store.as_ref()).await.unwrap().is_intact());
}

async fn purging_everything_leaves_a_verifiable_chain(f: Fixture) {
    f.ingest((0..5).map(|i| event(&format!("e{i}"), i)).collect())
        .await;
    let outcome = f.store.purge(purge_request(T0 + DAY, false)).await.unwrap();
    assert_eq!(outcome.purged, 5);
    assert_eq!(outcome.first_seq, 6);
    let report = verify_chain(f.store.as_ref()).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 1);
    // Appending after a purge continues the chain.
    f.ingest(vec![event("after", 2 * DAY)]).await;
    assert!(verify_chain(f.store.as_ref()).await.unwrap().is_intact());
    // And ids purged away may not come back as new records silently: they are
    // new events now (the old ones are gone), which the chain records.
    assert_eq!(f.ingest(vec![event("e0", 0)]).await.len(), 1);
}

// ---------------------------------------------------------------- tampering

async fn seed_ten(f: &Fixture) {
    f.ingest(
        (1..=10)
            .map(|i| event(&format!("t{i}"), i * MINUTE))
            .collect(),
    )
    .await;
    assert!(verify_chain(f.store.as_ref()).await.unwrap().is_intact());
}

async fn broken_at(f: &Fixture) -> (i64, String) {
    let report = verify_chain(f.store.as_ref()).await.unwrap();
    let broken = report.broken.expect("tampering went unnoticed");
    (broken.seq, broken.problem)
}

async fn a_rewritten_event_is_detected(f: Fixture) {
    seed_ten(&f).await;
    f.tamper(
        "UPDATE audit_records SET event = replace(event, '\"deny\"', '\"allow\"') WHERE seq = 4",
    )
    .await;
    let (seq, problem) = broken_at(&f).await;
    assert_eq!(seq, 4);
    assert!(problem.contains("rewritten"), "{problem}");
}

async fn a_rewritten_filter_column_is_detected(f: Fixture) {
    seed_ten(&f).await;
    f.tamper("UPDATE audit_records SET subject = 'mallory' WHERE seq = 6")
        .await;
    let (seq, problem) = broken_at(&f).await;
    assert_eq!(seq, 6);
    assert!(problem.contains("subject"), "{problem}");
}

async fn a_rewritten_record_with_a_recomputed_hash_is_detected(f: Fixture) {
    // The forger recomputes the record's own hash; the next record's
    // prev_hash no longer matches.
    seed_ten(&f).await;
    let record = f.store.get("t5").await.unwrap().unwrap();
    let forged = record.event_json.replace("alice", "mallory");
    let hash = avb_companion::audit::chain::record_hash(5, &record.prev_hash, &forged);
    f.tamper(&format!(
        "UPDATE audit_records SET event = '{forged}', subject = 'mallory', hash = '{hash}' WHERE seq = 5"
    ))
    .await;
    let (seq, _) = broken_at(&f).await;
    assert_eq!(seq, 6);
}

async fn a_removed_middle_record_is_detected(f: Fixture) {
    seed_ten(&f).await;
    f.tamper("DELETE FROM audit_records WHERE seq = 7").await;
    let (seq, problem) = broken_at(&f).await;
    assert_eq!(seq, 7);
    assert!(problem.contains("missing"), "{problem}");
}

async fn swapped_records_are_detected(f: Fixture) {
    seed_ten(&f).await;
    f.tamper(
        "UPDATE audit_records SET seq = -1 WHERE seq = 3; \
         UPDATE audit_records SET seq = 3 WHERE seq = 4; \
         UPDATE audit_records SET seq = 4 WHERE seq = -1;",
    )
    .await;
    let (seq, _) = broken_at(&f).await;
    assert_eq!(seq, 3);
}

async fn a_removed_last_record_is_detected(f: Fixture) {
    seed_ten(&f).await;
    f.tamper("DELETE FROM audit_records WHERE seq = 10").await;
    let (seq, problem) = broken_at(&f).await;
    assert_eq!(seq, 10);
    assert!(problem.contains("missing"), "{problem}");
}

async fn a_removed_prefix_without_a_purge_record_is_detected(f: Fixture) {
    seed_ten(&f).await;
    // Deleting the oldest rows and moving the anchor to match, without the
    // audit.purged record a real purge writes.
    let prev: String = f.store.get("t4").await.unwrap().unwrap().prev_hash;
    f.tamper(&format!(
        "DELETE FROM audit_records WHERE seq < 4; \
         UPDATE audit_chain SET anchor_seq = 4, anchor_prev_hash = '{prev}';"
    ))
    .await;
    let (seq, problem) = broken_at(&f).await;
    assert_eq!(seq, 4);
    assert!(problem.contains("audit.purged"), "{problem}");
}

async fn a_removed_prefix_alone_is_detected(f: Fixture) {
    seed_ten(&f).await;
    f.tamper("DELETE FROM audit_records WHERE seq <= 2").await;
    let (seq, _) = broken_at(&f).await;
    assert_eq!(seq, 1);
}

// ---------------------------------------------------------------- API over the store

/// Serves the real router over `store` on a loopback port for the test.
async fn serve_api(store: Arc<dyn AuditStore>) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = AppState::new(store).with_ingest_token(IngestToken::new("t").unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(avb_companion::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    (port, stop)
}

async fn get(port: u16, target: &str) -> avb_tests::http::Response {
    let target = target.to_owned();
    tokio::task::spawn_blocking(move || RawRequest::get(&target).send(port).unwrap())
        .await
        .unwrap()
}

async fn export_streams_every_matching_record_as_ndjson(f: Fixture) {
    // More than one export chunk (1000 records).
    let events: Vec<AuditEvent> = (0..2100).map(|i| event(&format!("x{i:04}"), i)).collect();
    for chunk in events.chunks(500) {
        f.ingest(chunk.to_vec()).await;
    }
    let (port, _stop) = serve_api(f.store.clone()).await;
    let response = get(port, "/api/v1/audit/logs/export?format=ndjson").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/x-ndjson")
    );
    let lines: Vec<Value> = response
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2100);
    // Oldest first, every record once, with its chain fields.
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["id"], json!(format!("x{i:04}")));
        assert_eq!(line["seq"], json!(i + 1));
        assert_eq!(line["hash"].as_str().unwrap().len(), 64);
    }
    let filtered = get(
        port,
        "/api/v1/audit/logs/export?format=ndjson&since=2026-01-01T00:00:02Z",
    )
    .await;
    assert_eq!(filtered.text().lines().count(), 100);
}

async fn export_writes_csv_with_a_header_and_quoted_fields(f: Fixture) {
    let mut tricky = event("csv1", 0);
    tricky.reason = Some("has, comma and \"quotes\"".to_owned());
    tricky.path = Some("=cmd|' /C calc'!A0".to_owned());
    tricky.roles = vec!["ADMIN".to_owned(), "OPERATOR".to_owned()];
    f.ingest(vec![tricky, allowed("csv2", 1)]).await;
    let (port, _stop) = serve_api(f.store.clone()).await;
    let response = get(port, "/api/v1/audit/logs/export?format=csv&outcome=deny").await;
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .unwrap()
        .starts_with("text/csv"));
    let text = response.text();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("seq,id,time,kind,outcome,status,reason,rule,"));
    assert!(lines[1].starts_with("1,csv1,2026-01-01T00:00:00.000Z,authz.denied,deny,403,"));
    assert!(lines[1].contains("\"has, comma and \"\"quotes\"\"\""));
    assert!(lines[1].contains(",'=cmd|' /C calc'!A0,"), "{}", lines[1]);
    assert!(lines[1].contains(",ADMIN;OPERATOR,"));
}

async fn api_lists_pages_with_next_cursor_until_the_end(f: Fixture) {
    f.ingest((0..5).map(|i| event(&format!("l{i}"), i)).collect())
        .await;
    let (port, _stop) = serve_api(f.store.clone()).await;
    let mut target = "/api/v1/audit/logs?limit=2".to_owned();
    let mut ids = Vec::new();
    loop {
        let page = get(port, &target).await.json().unwrap();
        for item in page["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
            assert!(item["seq"].is_i64() && item["prev_hash"].is_string());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => target = format!("/api/v1/audit/logs?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(ids, vec!["l4", "l3", "l2", "l1", "l0"]);
    let detail = get(port, "/api/v1/audit/logs/l2").await;
    assert_eq!(detail.status, 200);
    assert_eq!(detail.json().unwrap()["seq"], json!(3));
    assert_eq!(get(port, "/api/v1/audit/logs/nope").await.status, 404);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Fixture::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Fixture::postgres().await).await;
                }
            )*
        }
    };
}

conformance!(
    ingest_assigns_gapless_seqs_from_one,
    duplicate_ids_are_counted_and_not_chained_again,
    a_duplicate_keeps_the_first_version_of_an_event,
    empty_batch_changes_nothing,
    concurrent_batches_keep_the_chain_gapless,
    events_round_trip_with_every_field,
    every_filter_selects_exactly_its_records,
    pages_cover_every_record_once_newest_first,
    oldest_first_order_runs_the_other_way,
    cursor_past_the_end_and_filtered_pages_are_empty_or_exact,
    statistics_count_by_kind_outcome_rule_and_time,
    statistics_buckets_by_hour_and_day_and_honour_filters,
    dry_run_purge_counts_without_deleting,
    purge_removes_the_old_prefix_and_the_chain_still_verifies,
    purge_stops_at_the_first_record_that_is_not_old,
    purging_everything_leaves_a_verifiable_chain,
    a_rewritten_event_is_detected,
    a_rewritten_filter_column_is_detected,
    a_rewritten_record_with_a_recomputed_hash_is_detected,
    a_removed_middle_record_is_detected,
    swapped_records_are_detected,
    a_removed_last_record_is_detected,
    a_removed_prefix_without_a_purge_record_is_detected,
    a_removed_prefix_alone_is_detected,
    export_streams_every_matching_record_as_ndjson,
    export_writes_csv_with_a_header_and_quoted_fields,
    api_lists_pages_with_next_cursor_until_the_end,
);
