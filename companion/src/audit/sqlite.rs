//! The embedded SQLite store (the default): WAL, `synchronous=FULL`, every
//! call on a blocking thread.
//!
//! One writer connection serialises appends inside this process; `BEGIN
//! IMMEDIATE` serialises them against other processes on the same file (the
//! `cache invalidate` command appending its record while `serve` runs).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

/// Re-exported because `rusqlite::Error` is part of [`StoreError`].
pub use rusqlite;

use super::chain::{record_hash, ChainState, GENESIS_HASH};
use super::event::ValidatedEvent;
use super::store::{
    bucket_expr, order_clause, purged_record, where_clause, AuditStore, Bucket, ChainRow,
    IngestOutcome, Ingested, LogFilter, LogQuery, PurgeOutcome, PurgeRequest, SeriesPoint,
    SqlValue, Statistics, StoreError, StoredRecord,
};

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_records (
    seq       INTEGER PRIMARY KEY,
    id        TEXT NOT NULL UNIQUE,
    time_ms   INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    rule      TEXT,
    subject   TEXT,
    tenant    TEXT,
    event     TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_records_by_time ON audit_records (time_ms, seq);
CREATE INDEX IF NOT EXISTS audit_records_by_kind ON audit_records (kind, time_ms, seq);
CREATE INDEX IF NOT EXISTS audit_records_by_subject ON audit_records (subject, time_ms, seq);
CREATE INDEX IF NOT EXISTS audit_records_by_tenant ON audit_records (tenant, time_ms, seq);
CREATE TABLE IF NOT EXISTS audit_chain (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    head_seq         INTEGER NOT NULL,
    head_hash        TEXT NOT NULL,
    anchor_seq       INTEGER NOT NULL,
    anchor_prev_hash TEXT NOT NULL
);
";

const INSERT_RECORD: &str = "INSERT INTO audit_records
    (seq, id, time_ms, kind, outcome, rule, subject, tenant, event, prev_hash, hash)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// An audit store in one SQLite file.
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let (writer, reader) = tokio::task::spawn_blocking(move || {
            let writer = Connection::open(&path)?;
            writer.busy_timeout(BUSY_TIMEOUT)?;
            writer.pragma_update(None, "journal_mode", "WAL")?;
            writer.pragma_update(None, "synchronous", "FULL")?;
            writer.execute_batch(SCHEMA)?;
            writer.execute(
                "INSERT OR IGNORE INTO audit_chain VALUES (1, 0, ?1, 1, ?1)",
                params![GENESIS_HASH],
            )?;
            let reader = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(BUSY_TIMEOUT)?;
            Ok::<_, StoreError>((writer, reader))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }
}

/// Runs `work` with exclusive use of `conn` on a blocking thread.
async fn blocking<T, F>(conn: &Arc<Mutex<Connection>>, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        // A panic while holding the lock cannot leave a transaction open
        // (rusqlite rolls back on drop), so a poisoned lock is still usable.
        let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut guard)
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?
}

fn to_sql_values(values: &[SqlValue]) -> Vec<rusqlite::types::Value> {
    values
        .iter()
        .map(|v| match v {
            SqlValue::Int(i) => rusqlite::types::Value::Integer(*i),
            SqlValue::Text(s) => rusqlite::types::Value::Text(s.clone()),
        })
        .collect()
}

fn read_chain_state(conn: &Connection) -> Result<ChainState, StoreError> {
    Ok(conn.query_row(
        "SELECT head_seq, head_hash, anchor_seq, anchor_prev_hash FROM audit_chain WHERE id = 1",
        [],
        |row| {
            Ok(ChainState {
                head_seq: row.get(0)?,
                head_hash: row.get(1)?,
                anchor_seq: row.get(2)?,
                anchor_prev_hash: row.get(3)?,
            })
        },
    )?)
}

/// Appends `events` after the head inside `tx`, skipping known ids; returns
/// one result per event and moves the head.
fn append(
    tx: &rusqlite::Transaction<'_>,
    events: &[ValidatedEvent],
) -> Result<Vec<Ingested>, StoreError> {
    let state = read_chain_state(tx)?;
    let mut seq = state.head_seq;
    let mut prev_hash = state.head_hash;
    let mut seen: HashSet<&str> = HashSet::with_capacity(events.len());
    let mut results = Vec::with_capacity(events.len());
    {
        let mut exists = tx.prepare_cached("SELECT 1 FROM audit_records WHERE id = ?1")?;
        let mut insert = tx.prepare_cached(INSERT_RECORD)?;
        for valid in events {
            let event = &valid.event;
            if !seen.insert(event.id.as_str()) || exists.exists(params![event.id])? {
                results.push(Ingested::Duplicate);
                continue;
            }
            seq += 1;
            let hash = record_hash(seq, &prev_hash, &valid.canonical);
            insert.execute(params![
                seq,
                event.id,
                valid.time_ms,
                event.kind,
                event.outcome,
                event.rule,
                event.subject,
                event.tenant,
                valid.canonical,
                prev_hash,
                hash,
            ])?;
            prev_hash = hash;
            results.push(Ingested::Stored { seq });
        }
    }
    if seq != state.head_seq {
        tx.execute(
            "UPDATE audit_chain SET head_seq = ?1, head_hash = ?2 WHERE id = 1",
            params![seq, prev_hash],
        )?;
    }
    Ok(results)
}

fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    Ok(StoredRecord {
        seq: row.get(0)?,
        hash: row.get(1)?,
        prev_hash: row.get(2)?,
        time_ms: row.get(3)?,
        event_json: row.get(4)?,
    })
}

fn count_groups(
    conn: &Connection,
    column: &str,
    filter: &LogFilter,
) -> Result<Vec<(String, u64)>, StoreError> {
    let (mut sql_where, values) = where_clause(filter, None, &|n| format!("?{n}"));
    let not_null = format!("{column} IS NOT NULL");
    sql_where = if sql_where.is_empty() {
        format!("WHERE {not_null}")
    } else {
        format!("{sql_where} AND {not_null}")
    };
    let sql = format!("SELECT {column}, COUNT(*) FROM audit_records {sql_where} GROUP BY {column}");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(to_sql_values(&values)), |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (key, count) = row?;
        out.push((key, u64::try_from(count).unwrap_or(0)));
    }
    Ok(out)
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn ingest(&self, events: Vec<ValidatedEvent>) -> Result<IngestOutcome, StoreError> {
        if events.is_empty() {
            return Ok(IngestOutcome::default());
        }
        blocking(&self.writer, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let results = append(&tx, &events)?;
            tx.commit()?;
            Ok(IngestOutcome { results })
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let id = id.to_owned();
        blocking(&self.reader, move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT seq, hash, prev_hash, time_ms, event FROM audit_records WHERE id = ?1",
                )?
                .query_row(params![id], read_record)
                .optional()?)
        })
        .await
    }

    async fn query(&self, query: &LogQuery) -> Result<Vec<StoredRecord>, StoreError> {
        let query = query.clone();
        blocking(&self.reader, move |conn| {
            let (sql_where, values) = where_clause(
                &query.filter,
                query.after.map(|c| (c, query.order)),
                &|n| format!("?{n}"),
            );
            let sql = format!(
                "SELECT seq, hash, prev_hash, time_ms, event FROM audit_records {sql_where} {} LIMIT {}",
                order_clause(query.order),
                query.limit
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                rusqlite::params_from_iter(to_sql_values(&values)),
                read_record,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn statistics(
        &self,
        filter: &LogFilter,
        bucket: Bucket,
    ) -> Result<Statistics, StoreError> {
        let filter = filter.clone();
        blocking(&self.reader, move |conn| {
            // One read transaction, so every count sees the same snapshot.
            let tx = conn.transaction()?;
            let mut stats = Statistics::default();
            for (outcome, count) in count_groups(&tx, "outcome", &filter)? {
                stats.total += count;
                stats.by_outcome.insert(outcome, count);
            }
            stats.by_kind = count_groups(&tx, "kind", &filter)?.into_iter().collect();
            stats.by_rule = count_groups(&tx, "rule", &filter)?.into_iter().collect();
            let (sql_where, values) = where_clause(&filter, None, &|n| format!("?{n}"));
            let sql = format!(
                "SELECT {} AS bucket, COUNT(*), COUNT(*) FILTER (WHERE outcome = 'deny') \
                 FROM audit_records {sql_where} GROUP BY bucket ORDER BY bucket",
                bucket_expr(bucket)
            );
            let mut stmt = tx.prepare(&sql)?;
            let rows =
                stmt.query_map(rusqlite::params_from_iter(to_sql_values(&values)), |row| {
                    Ok(SeriesPoint::new(
                        row.get(0)?,
                        u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                        u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                    ))
                })?;
            stats.series = rows.collect::<Result<Vec<_>, _>>()?;
            drop(stmt);
            tx.finish()?;
            Ok(stats)
        })
        .await
    }

    async fn purge(&self, request: PurgeRequest) -> Result<PurgeOutcome, StoreError> {
        blocking(&self.writer, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let state = read_chain_state(&tx)?;
            let boundary: i64 = tx
                .query_row(
                    "SELECT MIN(seq) FROM audit_records WHERE time_ms >= ?1",
                    params![request.cutoff_ms],
                    |row| row.get::<_, Option<i64>>(0),
                )?
                .unwrap_or(state.head_seq + 1);
            let purged: i64 = tx.query_row(
                "SELECT COUNT(*) FROM audit_records WHERE seq < ?1",
                params![boundary],
                |row| row.get(0),
            )?;
            let purged = u64::try_from(purged).unwrap_or(0);
            if request.dry_run {
                return Ok(PurgeOutcome {
                    purged,
                    dry_run: true,
                    first_seq: boundary,
                    record_id: None,
                });
            }
            let anchor_prev_hash: String = if boundary > state.head_seq {
                state.head_hash.clone()
            } else {
                tx.query_row(
                    "SELECT prev_hash FROM audit_records WHERE seq = ?1",
                    params![boundary],
                    |row| row.get(0),
                )?
            };
            tx.execute(
                "DELETE FROM audit_records WHERE seq < ?1",
                params![boundary],
            )?;
            tx.execute(
                "UPDATE audit_chain SET anchor_seq = ?1, anchor_prev_hash = ?2 WHERE id = 1",
                params![boundary, anchor_prev_hash],
            )?;
            let record = purged_record(&request, purged, boundary, &anchor_prev_hash)?;
            let record_id = record.event.id.clone();
            append(&tx, &[record])?;
            tx.commit()?;
            Ok(PurgeOutcome {
                purged,
                dry_run: false,
                first_seq: boundary,
                record_id: Some(record_id),
            })
        })
        .await
    }

    async fn chain_state(&self) -> Result<ChainState, StoreError> {
        blocking(&self.reader, |conn| read_chain_state(conn)).await
    }

    async fn chain_page(&self, after_seq: i64, limit: u32) -> Result<Vec<ChainRow>, StoreError> {
        blocking(&self.reader, move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, id, time_ms, kind, outcome, rule, subject, tenant, event, prev_hash, hash \
                 FROM audit_records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after_seq, limit], |row| {
                Ok(ChainRow {
                    seq: row.get(0)?,
                    id: row.get(1)?,
                    time_ms: row.get(2)?,
                    kind: row.get(3)?,
                    outcome: row.get(4)?,
                    rule: row.get(5)?,
                    subject: row.get(6)?,
                    tenant: row.get(7)?,
                    event: row.get(8)?,
                    prev_hash: row.get(9)?,
                    hash: row.get(10)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        blocking(&self.reader, |conn| {
            conn.query_row("SELECT COUNT(*) FROM audit_chain", [], |row| {
                row.get::<_, i64>(0)
            })?;
            Ok(())
        })
        .await
    }
}
