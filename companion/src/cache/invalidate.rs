//! The invalidation itself: a SCAN cursor loop per node, overlapped with
//! pipelined UNLINK batches, resumed from the last cursor after a dropped
//! connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::{join_all, try_join_all};
use redis::aio::MultiplexedConnection;
use redis::RedisError;
use serde::Serialize;
use tokio::sync::mpsc;

use super::slot::key_hash_slot;
use super::target::{Node, Timeouts};
use super::tenant::tenant_pattern;
use super::{CacheError, RedisTarget, TenantId};

/// The largest COUNT hint accepted. Measured: above about 10,000 a SCAN call
/// is no faster per key but blocks the server longer per call.
pub const MAX_SCAN_COUNT: u32 = 100_000;

/// Keys per UNLINK command on a single server (one command, one reply).
const UNLINK_KEYS_PER_COMMAND: usize = 1_000;

/// Upper bound of keys sent in one pipeline: a few milliseconds of server time,
/// so other clients are not held up behind it.
const MAX_KEYS_PER_PIPELINE: usize = 4_000;

/// Scanned batches waiting for the deleter; the scanner waits when it is full,
/// which bounds memory whatever the tenant's size.
const DELETE_QUEUE_DEPTH: usize = 16;

/// Attempts in a row that may fail (each on a fresh connection) before a node
/// is given up.
const MAX_CONSECUTIVE_FAILURES: u32 = 5;

/// How the run behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidateOptions {
    /// Count the tenant's keys without deleting any.
    pub dry_run: bool,
    /// The COUNT hint of every SCAN call (1 to [`MAX_SCAN_COUNT`]).
    pub scan_count: u32,
}

impl Default for InvalidateOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            scan_count: 1_000,
        }
    }
}

/// Where a run is, summed over every node. Reported after each SCAN reply and
/// each deleted batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Keys visited so far. SCAN does not report this; it is estimated from the
    /// cursor (Redis walks its table in reverse-binary order, so the reversed
    /// cursor is the fraction done) against `db_size`, and equals `db_size`
    /// once a node is finished.
    pub scanned: u64,
    /// Tenant keys found so far (SCAN may return a key twice while the table
    /// is resized, so this can slightly exceed the true number).
    pub matched: u64,
    /// Keys Redis reported as removed by UNLINK.
    pub deleted: u64,
    /// DBSIZE of every scanned node at the start.
    pub db_size: u64,
}

/// The outcome of a finished run (the JSON of the CLI and of the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidateReport {
    pub tenant: String,
    pub matched: u64,
    pub deleted: u64,
    pub scanned: u64,
    pub duration_ms: u64,
    pub dry_run: bool,
}

/// Deletes every key named `tenant:{id}:…` from `target` (or counts them when
/// `opts.dry_run`), calling `progress` as it goes.
///
/// Every key present for the whole run is deleted; keys written during the run
/// may or may not be. Each node's connections are opened before anything is
/// deleted, so an unreachable node fails the run before it starts. A dropped
/// connection is reopened and the scan resumed from its last cursor; after
/// repeated failures the error says how far the run got.
pub async fn invalidate(
    target: &RedisTarget,
    tenant: &TenantId,
    opts: &InvalidateOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<InvalidateReport, CacheError> {
    if opts.scan_count == 0 || opts.scan_count > MAX_SCAN_COUNT {
        return Err(CacheError::InvalidOption {
            reason: format!(
                "scan count must be between 1 and {MAX_SCAN_COUNT}, not {}",
                opts.scan_count
            ),
        });
    }
    let started = Instant::now();
    let nodes = target.primaries().await?;
    let job = Job {
        pattern: tenant_pattern(tenant),
        prefix: tenant.key_prefix().into_bytes(),
        scan_count: opts.scan_count,
        dry_run: opts.dry_run,
        cluster: target.is_cluster(),
        timeouts: target.timeouts(),
    };
    let runs = try_join_all(nodes.iter().map(|node| NodeRun::open(node, &job))).await?;
    let report_progress = || progress(total(&runs));
    report_progress();

    let outcomes = join_all(runs.iter().map(|run| run.execute(&job, &report_progress))).await;
    let totals = total(&runs);
    report_progress();
    if let Some((node, cause)) = outcomes
        .into_iter()
        .zip(&runs)
        .find_map(|(outcome, run)| outcome.err().map(|cause| (run.node.label.clone(), cause)))
    {
        return Err(CacheError::Interrupted {
            node,
            scanned: totals.scanned,
            matched: totals.matched,
            deleted: totals.deleted,
            cause,
        });
    }

    if target.is_cluster() {
        // A failover or resharding during the run can move slots to a node that
        // was never scanned; only an unchanged set of primaries proves coverage.
        let before: Vec<&str> = nodes.iter().map(|node| node.label.as_str()).collect();
        let after = target.primary_addresses().await?;
        if before != after {
            return Err(CacheError::TopologyChanged {
                before: before.join(", "),
                after: after.join(", "),
                scanned: totals.scanned,
                matched: totals.matched,
                deleted: totals.deleted,
            });
        }
    }

    Ok(InvalidateReport {
        tenant: tenant.as_str().to_owned(),
        matched: totals.matched,
        deleted: totals.deleted,
        scanned: totals.scanned,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        dry_run: opts.dry_run,
    })
}

/// What every node does, fixed for the run.
struct Job {
    pattern: String,
    prefix: Vec<u8>,
    scan_count: u32,
    dry_run: bool,
    cluster: bool,
    timeouts: Timeouts,
}

/// Keys proven to start with the tenant's exact prefix. Only
/// [`TenantKeys::from_scan`] builds one, so nothing else can reach UNLINK.
struct TenantKeys(Vec<Vec<u8>>);

impl TenantKeys {
    /// Keeps the keys that start with `prefix`; returns how many did not (SCAN
    /// MATCH should never yield one, but a deletion must not trust the server's
    /// pattern matching alone).
    fn from_scan(prefix: &[u8], mut keys: Vec<Vec<u8>>) -> (Self, usize) {
        let before = keys.len();
        keys.retain(|key| key.starts_with(prefix));
        let foreign = before - keys.len();
        (Self(keys), foreign)
    }
}

/// One node's connections and counters for one run.
struct NodeRun<'a> {
    node: &'a Node,
    scan_connection: MultiplexedConnection,
    delete_connection: Option<MultiplexedConnection>,
    db_size: u64,
    scanned: AtomicU64,
    matched: AtomicU64,
    deleted: AtomicU64,
}

fn total(runs: &[NodeRun<'_>]) -> Progress {
    runs.iter().fold(Progress::default(), |sum, run| Progress {
        scanned: sum.scanned + run.scanned.load(Ordering::Relaxed),
        matched: sum.matched + run.matched.load(Ordering::Relaxed),
        deleted: sum.deleted + run.deleted.load(Ordering::Relaxed),
        db_size: sum.db_size + run.db_size,
    })
}

impl<'a> NodeRun<'a> {
    async fn open(node: &'a Node, job: &Job) -> Result<Self, CacheError> {
        let connect_error = |cause| CacheError::Connect {
            node: node.label.clone(),
            cause,
        };
        let mut scan_connection = node.connect(job.timeouts).await.map_err(connect_error)?;
        let delete_connection = if job.dry_run {
            None
        } else {
            Some(node.connect(job.timeouts).await.map_err(connect_error)?)
        };
        let db_size: u64 = redis::cmd("DBSIZE")
            .query_async(&mut scan_connection)
            .await
            .map_err(connect_error)?;
        Ok(Self {
            node,
            scan_connection,
            delete_connection,
            db_size,
            scanned: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
        })
    }

    /// Scans and deletes at the same time: the scanner hands checked batches to
    /// the deleter through a bounded queue, so the server always has the next
    /// SCAN or UNLINK to work on while the client parses a reply.
    async fn execute(&self, job: &Job, report_progress: &impl Fn()) -> Result<(), RedisError> {
        let (batches, queue) = mpsc::channel(DELETE_QUEUE_DEPTH);
        let scanning = self.scan(job, (!job.dry_run).then_some(batches), report_progress);
        let deleting = self.delete(job, queue, report_progress);
        let (scanned, deleted) = tokio::join!(scanning, deleting);
        // A deleter failure also stops the scanner; its cause is the one to tell.
        deleted.and(scanned)
    }

    async fn scan(
        &self,
        job: &Job,
        batches: Option<mpsc::Sender<TenantKeys>>,
        report_progress: &impl Fn(),
    ) -> Result<(), RedisError> {
        let mut connection = Some(self.scan_connection.clone());
        let mut retry = Retry::default();
        let mut cursor: u64 = 0;
        loop {
            let reply = match connection.as_mut() {
                Some(connection) => {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&job.pattern)
                        .arg("COUNT")
                        .arg(job.scan_count)
                        .query_async::<(u64, Vec<Vec<u8>>)>(connection)
                        .await
                }
                None => match self.node.connect(job.timeouts).await {
                    Ok(fresh) => {
                        connection = Some(fresh);
                        continue;
                    }
                    Err(err) => Err(err),
                },
            };
            let (next_cursor, keys) = match reply {
                Ok(reply) => reply,
                Err(err) => {
                    // SCAN keeps no server state: the same cursor resumes on a new connection.
                    connection = None;
                    retry.after_failure(err).await?;
                    continue;
                }
            };
            retry.succeeded();
            let (keys, foreign) = TenantKeys::from_scan(&job.prefix, keys);
            if foreign > 0 {
                tracing::warn!(
                    node = %self.node,
                    foreign,
                    "SCAN MATCH returned keys outside the tenant prefix; they were skipped"
                );
            }
            self.matched
                .fetch_add(keys.0.len() as u64, Ordering::Relaxed);
            let visited = if next_cursor == 0 {
                self.db_size
            } else {
                estimated_visited(next_cursor, self.db_size)
            };
            self.scanned.fetch_max(visited, Ordering::Relaxed);
            report_progress();
            if let Some(batches) = &batches {
                if !keys.0.is_empty() && batches.send(keys).await.is_err() {
                    // The deleter stopped on an error, which `execute` reports.
                    return Ok(());
                }
            }
            if next_cursor == 0 {
                return Ok(());
            }
            cursor = next_cursor;
        }
    }

    async fn delete(
        &self,
        job: &Job,
        mut queue: mpsc::Receiver<TenantKeys>,
        report_progress: &impl Fn(),
    ) -> Result<(), RedisError> {
        let mut connection = self.delete_connection.clone();
        let mut retry = Retry::default();
        while let Some(TenantKeys(mut keys)) = queue.recv().await {
            // Whatever else is already queued joins this pipeline.
            while keys.len() < MAX_KEYS_PER_PIPELINE {
                match queue.try_recv() {
                    Ok(TenantKeys(more)) => keys.extend(more),
                    Err(_) => break,
                }
            }
            let pipeline = unlink_pipeline(&keys, job.cluster);
            loop {
                let reply = match connection.as_mut() {
                    Some(connection) => pipeline.query_async::<Vec<u64>>(connection).await,
                    None => match self.node.connect(job.timeouts).await {
                        Ok(fresh) => {
                            connection = Some(fresh);
                            continue;
                        }
                        Err(err) => Err(err),
                    },
                };
                match reply {
                    Ok(counts) => {
                        retry.succeeded();
                        self.deleted
                            .fetch_add(counts.iter().sum::<u64>(), Ordering::Relaxed);
                        report_progress();
                        break;
                    }
                    Err(err) => {
                        // UNLINK is idempotent: resending the batch is safe.
                        connection = None;
                        retry.after_failure(err).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One pipeline (not a transaction) of UNLINK commands for `keys`.
///
/// A cluster node refuses multi-key commands across hash slots (CROSSSLOT), so
/// there the keys are grouped by slot, one UNLINK per slot.
fn unlink_pipeline(keys: &[Vec<u8>], cluster: bool) -> redis::Pipeline {
    let mut pipeline = redis::pipe();
    if cluster {
        let mut by_slot: BTreeMap<u16, Vec<&[u8]>> = BTreeMap::new();
        for key in keys {
            by_slot.entry(key_hash_slot(key)).or_default().push(key);
        }
        for slot_keys in by_slot.values() {
            pipeline.cmd("UNLINK").arg(slot_keys);
        }
    } else {
        for chunk in keys.chunks(UNLINK_KEYS_PER_COMMAND) {
            pipeline.cmd("UNLINK").arg(chunk);
        }
    }
    pipeline
}

/// Keys visited when SCAN hands back `cursor`, out of `db_size`.
///
/// Redis increments the cursor in reverse-binary order over its hash table, so
/// reversing the cursor's bits gives the fraction of buckets already walked,
/// whatever the table size.
fn estimated_visited(cursor: u64, db_size: u64) -> u64 {
    let fraction = cursor.reverse_bits() as f64 / 2f64.powi(64);
    // Truncation is intended: an estimate, bounded by db_size.
    ((fraction * db_size as f64) as u64).min(db_size)
}

/// Consecutive-failure budget with exponential backoff.
#[derive(Default)]
struct Retry {
    failures: u32,
}

impl Retry {
    fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Waits before the next attempt, or gives `err` back when it cannot be
    /// cured by a new connection or the budget is spent.
    async fn after_failure(&mut self, err: RedisError) -> Result<(), RedisError> {
        self.failures += 1;
        if !is_transient(&err) || self.failures >= MAX_CONSECUTIVE_FAILURES {
            return Err(err);
        }
        tokio::time::sleep(backoff(self.failures)).await;
        Ok(())
    }
}

/// 50 ms, 150 ms, 450 ms, … capped at 2 s.
fn backoff(failures: u32) -> Duration {
    let millis = 50u64.saturating_mul(3u64.saturating_pow(failures.saturating_sub(1)));
    Duration::from_millis(millis.min(2_000))
}

/// Failures a new connection may cure: the link dropped or timed out, or the
/// server is loading or briefly unable to serve.
fn is_transient(err: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(
            err.kind(),
            ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_with_the_exact_prefix_survive_the_check() {
        let keys = vec![
            b"tenant:acme:1".to_vec(),
            b"tenant:acme2:1".to_vec(),
            b"tenant:acm:1".to_vec(),
            b"user:acme:1".to_vec(),
            b"tenant:acme:".to_vec(),
        ];
        let (kept, foreign) = TenantKeys::from_scan(b"tenant:acme:", keys);
        assert_eq!(
            kept.0,
            vec![b"tenant:acme:1".to_vec(), b"tenant:acme:".to_vec()]
        );
        assert_eq!(foreign, 3);
    }

    #[test]
    fn single_server_pipeline_packs_up_to_a_thousand_keys_per_unlink() {
        let keys: Vec<Vec<u8>> = (0..2_500)
            .map(|i| format!("tenant:a:{i}").into_bytes())
            .collect();
        let pipeline = unlink_pipeline(&keys, false);
        assert_eq!(pipeline.cmd_iter().count(), 3);
    }

    #[test]
    fn cluster_pipeline_never_mixes_slots_in_one_unlink() {
        let keys: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("tenant:a:{i}").into_bytes())
            .collect();
        let pipeline = unlink_pipeline(&keys, true);
        let distinct_slots: std::collections::BTreeSet<u16> =
            keys.iter().map(|key| key_hash_slot(key)).collect();
        assert_eq!(pipeline.cmd_iter().count(), distinct_slots.len());
        for cmd in pipeline.cmd_iter() {
            let slots: std::collections::BTreeSet<u16> = cmd
                .args_iter()
                .skip(1)
                .map(|arg| match arg {
                    redis::Arg::Simple(bytes) => key_hash_slot(bytes),
                    other => panic!("unexpected argument {other:?}"),
                })
                .collect();
            assert_eq!(slots.len(), 1);
        }
    }

    #[test]
    fn cursor_estimate_follows_reverse_binary_order() {
        // Table of 8 buckets: cursors 0 → 4 → 2 → 6 → 1 → 5 → 3 → 7 → 0.
        assert_eq!(estimated_visited(4, 800), 100);
        assert_eq!(estimated_visited(2, 800), 200);
        assert_eq!(estimated_visited(6, 800), 300);
        assert_eq!(estimated_visited(1, 800), 400);
        assert_eq!(estimated_visited(7, 800), 700);
        assert!(estimated_visited(u64::MAX, 800) <= 800);
        assert_eq!(estimated_visited(5, 0), 0);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(50));
        assert_eq!(backoff(2), Duration::from_millis(150));
        assert_eq!(backoff(3), Duration::from_millis(450));
        assert_eq!(backoff(10), Duration::from_secs(2));
    }

    #[test]
    fn dropped_links_are_transient_and_server_errors_are_not() {
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_transient(&dropped));
        let wrong = RedisError::from((redis::ErrorKind::Client, "bad"));
        assert!(!is_transient(&wrong));
    }

    #[tokio::test]
    async fn retry_budget_runs_out() {
        let mut retry = Retry::default();
        for _ in 1..MAX_CONSECUTIVE_FAILURES {
            let dropped =
                RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
            retry.after_failure(dropped).await.unwrap();
        }
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(retry.after_failure(dropped).await.is_err());
        retry.succeeded();
        assert_eq!(retry.failures, 0);
    }

    #[test]
    fn default_options_scan_a_thousand_and_delete() {
        assert_eq!(
            InvalidateOptions::default(),
            InvalidateOptions {
                dry_run: false,
                scan_count: 1_000
            }
        );
    }
}
