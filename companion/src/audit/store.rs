//! The storage boundary: one trait, two backends (SQLite, PostgreSQL), and the
//! query types the Audit API speaks.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use super::chain::{purged_details, ChainState};
use super::event::{format_time_ms, AuditEvent, EventError, ValidatedEvent};

/// Everything that can go wrong at the storage boundary. Messages never carry
/// connection strings (they may hold a password) or event contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url: expected sqlite://PATH or postgres://...")]
    UnsupportedUrl,
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("invalid event: {0}")]
    InvalidEvent(#[from] EventError),
    #[error("stored record {seq} cannot be read: {reason}")]
    CorruptRecord { seq: i64, reason: String },
    #[error("the store's background task failed: {0}")]
    Task(String),
}

/// Filters shared by the log list, the export and the statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Inclusive lower bound on the event time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Exclusive upper bound on the event time (ms since the epoch).
    pub until_ms: Option<i64>,
    pub kind: Option<String>,
    pub outcome: Option<String>,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub rule: Option<String>,
}

/// A position in the `(time, seq)` order, for keyset pagination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub time_ms: i64,
    pub seq: i64,
}

impl Cursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.time_ms, self.seq)
    }

    /// Parses what [`Cursor::encode`] produced; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let (time, seq) = text.split_once('.')?;
        let time_ms = time.parse().ok()?;
        let seq = seq.parse().ok()?;
        (seq > 0).then_some(Self { time_ms, seq })
    }
}

/// Which way a listing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Latest event time first (the log list).
    NewestFirst,
    /// Earliest event time first (exports read like a journal).
    OldestFirst,
}

/// One page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub filter: LogFilter,
    pub order: Order,
    /// Continue strictly after this position.
    pub after: Option<Cursor>,
    pub limit: u32,
}

/// A stored record: the event as hashed, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: i64,
    pub hash: String,
    pub prev_hash: String,
    pub time_ms: i64,
    /// Canonical JSON of the event, exactly the bytes that were hashed.
    pub event_json: String,
}

impl StoredRecord {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            time_ms: self.time_ms,
            seq: self.seq,
        }
    }

    /// The stored event, decoded.
    pub fn event(&self) -> Result<AuditEvent, StoreError> {
        serde_json::from_str(&self.event_json).map_err(|e| StoreError::CorruptRecord {
            seq: self.seq,
            reason: e.to_string(),
        })
    }
}

/// One stored row with every column, as chain verification reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    pub seq: i64,
    pub id: String,
    pub time_ms: i64,
    pub kind: String,
    pub outcome: String,
    pub rule: Option<String>,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub event: String,
    pub prev_hash: String,
    pub hash: String,
}

/// What happened to one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Ingested {
    /// Appended to the chain at `seq`.
    Stored { seq: i64 },
    /// An event with this id is already stored (or came earlier in the batch).
    Duplicate,
}

/// Outcome of one committed batch, in the order the events were given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub results: Vec<Ingested>,
}

impl IngestOutcome {
    pub fn accepted(&self) -> u64 {
        self.results
            .iter()
            .filter(|r| matches!(r, Ingested::Stored { .. }))
            .count() as u64
    }

    pub fn duplicates(&self) -> u64 {
        self.results.len() as u64 - self.accepted()
    }
}

/// Width of one statistics time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn millis(self) -> i64 {
        match self {
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }
}

/// Counts over the records a filter selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Statistics {
    pub total: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub by_outcome: BTreeMap<String, u64>,
    /// Records without a rule (e.g. unmatched routes) are not listed here.
    pub by_rule: BTreeMap<String, u64>,
    /// Only buckets holding records, oldest first.
    pub series: Vec<SeriesPoint>,
}

/// One time bucket of [`Statistics::series`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeriesPoint {
    /// Start of the bucket, RFC 3339 UTC.
    pub start: String,
    pub total: u64,
    pub allow: u64,
    pub deny: u64,
}

impl SeriesPoint {
    pub fn new(start_ms: i64, total: u64, deny: u64) -> Self {
        Self {
            start: format_time_ms(start_ms),
            total,
            allow: total.saturating_sub(deny),
            deny,
        }
    }
}

/// A purge request: drop the oldest records whose event time is before
/// `cutoff_ms`, then append `record` (an `audit.purged` event whose details
/// the store completes with the counts and the new anchor).
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeRequest {
    pub cutoff_ms: i64,
    pub older_than_days: u32,
    pub dry_run: bool,
    pub record: AuditEvent,
}

/// What a purge did (or, on a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgeOutcome {
    pub purged: u64,
    pub dry_run: bool,
    /// The first record that survives (the chain's new anchor).
    pub first_seq: i64,
    /// Id of the `audit.purged` record written (none on a dry run).
    pub record_id: Option<String>,
}

/// A tamper-evident audit store.
///
/// Appends are serialised across every process sharing the database, so the
/// chain stays gapless; a batch is visible (and acknowledged) only once it is
/// committed.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends the events that are not stored yet, in one transaction.
    async fn ingest(&self, events: Vec<ValidatedEvent>) -> Result<IngestOutcome, StoreError>;

    /// The record with event id `id`.
    async fn get(&self, id: &str) -> Result<Option<StoredRecord>, StoreError>;

    /// One page of records in `(time, seq)` order.
    async fn query(&self, query: &LogQuery) -> Result<Vec<StoredRecord>, StoreError>;

    /// Counts over the records `filter` selects.
    async fn statistics(
        &self,
        filter: &LogFilter,
        bucket: Bucket,
    ) -> Result<Statistics, StoreError>;

    /// Removes the oldest records (a prefix of the chain) and appends an
    /// `audit.purged` record, atomically.
    ///
    /// Only a prefix can go without breaking the chain: the purge stops at the
    /// first record whose event time is not before the cutoff, so a late
    /// record delays the purge of later ones until it is old enough itself.
    async fn purge(&self, request: PurgeRequest) -> Result<PurgeOutcome, StoreError>;

    /// Head and anchor of the chain.
    async fn chain_state(&self) -> Result<ChainState, StoreError>;

    /// Up to `limit` rows with `seq > after_seq`, in seq order.
    async fn chain_page(&self, after_seq: i64, limit: u32) -> Result<Vec<ChainRow>, StoreError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens (and migrates) the store a URL names: `sqlite://PATH` (relative or,
/// with a third slash, absolute) or `postgres://...` / `postgresql://...`.
pub async fn open_store(database_url: &str) -> Result<Arc<dyn AuditStore>, StoreError> {
    if let Some(path) = database_url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::UnsupportedUrl);
        }
        let store = super::sqlite::SqliteStore::open(std::path::Path::new(path)).await?;
        Ok(Arc::new(store))
    } else if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        let store = super::postgres::PostgresStore::connect(database_url).await?;
        Ok(Arc::new(store))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

/// Validates `event` and appends it to the store at `database_url` (used by
/// command-line tools that write audit records, e.g. `cache invalidate`).
pub async fn append_local_event(database_url: &str, event: AuditEvent) -> Result<(), StoreError> {
    let validated = super::event::validate(event)?;
    let store = open_store(database_url).await?;
    store.ingest(vec![validated]).await?;
    Ok(())
}

/// The `audit.purged` record a purge appends: `base` with the purge's
/// details (counts and the new anchor), validated like any other event.
pub(crate) fn purged_record(
    request: &PurgeRequest,
    purged: u64,
    anchor_seq: i64,
    anchor_prev_hash: &str,
) -> Result<ValidatedEvent, StoreError> {
    let mut record = request.record.clone();
    record.details = purged_details(
        purged,
        request.older_than_days,
        &format_time_ms(request.cutoff_ms),
        anchor_seq,
        anchor_prev_hash,
    );
    Ok(super::event::validate(record)?)
}

/// A value bound to a SQL placeholder (both backends build the same WHERE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SqlValue {
    Int(i64),
    Text(String),
}

/// `WHERE ...` for `filter` (and, when given, the keyset position), with
/// placeholders made by `placeholder(n)` for the n-th value (1-based).
pub(crate) fn where_clause(
    filter: &LogFilter,
    after: Option<(Cursor, Order)>,
    placeholder: &dyn Fn(usize) -> String,
) -> (String, Vec<SqlValue>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    let bind = |value: SqlValue, values: &mut Vec<SqlValue>| {
        values.push(value);
        placeholder(values.len())
    };
    if let Some(since) = filter.since_ms {
        let p = bind(SqlValue::Int(since), &mut values);
        clauses.push(format!("time_ms >= {p}"));
    }
    if let Some(until) = filter.until_ms {
        let p = bind(SqlValue::Int(until), &mut values);
        clauses.push(format!("time_ms < {p}"));
    }
    let texts = [
        ("kind", &filter.kind),
        ("outcome", &filter.outcome),
        ("subject", &filter.subject),
        ("tenant", &filter.tenant),
        ("rule", &filter.rule),
    ];
    for (column, value) in texts {
        if let Some(value) = value {
            let p = bind(SqlValue::Text(value.clone()), &mut values);
            clauses.push(format!("{column} = {p}"));
        }
    }
    if let Some((cursor, order)) = after {
        let op = match order {
            Order::NewestFirst => "<",
            Order::OldestFirst => ">",
        };
        let t1 = bind(SqlValue::Int(cursor.time_ms), &mut values);
        let t2 = bind(SqlValue::Int(cursor.time_ms), &mut values);
        let s = bind(SqlValue::Int(cursor.seq), &mut values);
        clauses.push(format!(
            "(time_ms {op} {t1} OR (time_ms = {t2} AND seq {op} {s}))"
        ));
    }
    if clauses.is_empty() {
        (String::new(), values)
    } else {
        (format!("WHERE {}", clauses.join(" AND ")), values)
    }
}

/// `ORDER BY` for `order`.
pub(crate) fn order_clause(order: Order) -> &'static str {
    match order {
        Order::NewestFirst => "ORDER BY time_ms DESC, seq DESC",
        Order::OldestFirst => "ORDER BY time_ms ASC, seq ASC",
    }
}

/// SQL expression for the start of the bucket holding `time_ms` (floor
/// division that also holds for times before 1970).
pub(crate) fn bucket_expr(bucket: Bucket) -> String {
    let b = bucket.millis();
    format!("(time_ms - (((time_ms % {b}) + {b}) % {b}))")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let cursor = Cursor {
            time_ms: -5,
            seq: 42,
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for bad in ["", "1", "a.b", "1.0", "1.-3", "1.2.3", "1.2x"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn where_clause_binds_every_filter_in_order() {
        let filter = LogFilter {
            since_ms: Some(1),
            until_ms: Some(2),
            kind: Some("k".into()),
            outcome: None,
            subject: Some("s".into()),
            tenant: None,
            rule: Some("r".into()),
        };
        let cursor = Cursor { time_ms: 9, seq: 3 };
        let (sql, values) = where_clause(&filter, Some((cursor, Order::NewestFirst)), &|n| {
            format!("${n}")
        });
        assert_eq!(
            sql,
            "WHERE time_ms >= $1 AND time_ms < $2 AND kind = $3 AND subject = $4 AND rule = $5 \
             AND (time_ms < $6 OR (time_ms = $7 AND seq < $8))"
        );
        assert_eq!(values.len(), 8);
        assert_eq!(values[4], SqlValue::Text("r".into()));
    }

    #[test]
    fn empty_filter_has_no_where() {
        let (sql, values) = where_clause(&LogFilter::default(), None, &|_| "?".into());
        assert!(sql.is_empty());
        assert!(values.is_empty());
    }

    #[tokio::test]
    async fn unknown_url_schemes_are_refused() {
        for url in ["mysql://x", "sqlite://", "", "file:///tmp/x"] {
            assert!(matches!(
                open_store(url).await,
                Err(StoreError::UnsupportedUrl)
            ));
        }
    }
}
