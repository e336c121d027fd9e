//! The PostgreSQL store, for deployments where several companions share one
//! database.
//!
//! Appends lock the single `audit_chain` row (`SELECT ... FOR UPDATE`), so the
//! chain stays gapless however many companions write at once; a lost
//! connection is re-opened on the next call.

use std::collections::HashSet;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, NoTls, Row};

/// Re-exported because `tokio_postgres::Error` is part of [`StoreError`].
pub use tokio_postgres;

use super::chain::{record_hash, ChainState, GENESIS_HASH};
use super::event::ValidatedEvent;
use super::store::{
    bucket_expr, order_clause, purged_record, where_clause, AuditStore, Bucket, ChainRow,
    IngestOutcome, Ingested, LogFilter, LogQuery, PurgeOutcome, PurgeRequest, SeriesPoint,
    SqlValue, Statistics, StoreError, StoredRecord,
};

/// Serialises schema creation between companions starting at the same time
/// (`CREATE ... IF NOT EXISTS` alone races). An arbitrary constant.
const MIGRATION_LOCK: i64 = 0x000a_7b0a_0d17;

/// Connect timeout when the URL does not set `connect_timeout`.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_records (
    seq       BIGINT PRIMARY KEY,
    id        TEXT NOT NULL UNIQUE,
    time_ms   BIGINT NOT NULL,
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
    head_seq         BIGINT NOT NULL,
    head_hash        TEXT NOT NULL,
    anchor_seq       BIGINT NOT NULL,
    anchor_prev_hash TEXT NOT NULL
);
";

/// One rows-at-once insert: every column is an array, unnested server-side.
const INSERT_RECORDS: &str = "INSERT INTO audit_records
    (seq, id, time_ms, kind, outcome, rule, subject, tenant, event, prev_hash, hash)
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])";

/// An audit store in a PostgreSQL database.
pub struct PostgresStore {
    url: String,
    writer: Mutex<Option<Client>>,
    reader: Mutex<Option<Client>>,
}

impl PostgresStore {
    /// Connects to `url` and creates the schema if needed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut client = open_client(url).await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(SCHEMA).await?;
        tx.execute(
            "INSERT INTO audit_chain VALUES (1, 0, $1, 1, $1) ON CONFLICT (id) DO NOTHING",
            &[&GENESIS_HASH],
        )
        .await?;
        tx.commit().await?;
        Ok(Self {
            url: url.to_owned(),
            writer: Mutex::new(Some(client)),
            reader: Mutex::new(None),
        })
    }
}

async fn open_client(url: &str) -> Result<Client, StoreError> {
    let mut config: tokio_postgres::Config = url.parse()?;
    // An unreachable host must not hold a request (or readiness) for minutes.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "postgres connection closed");
        }
    });
    Ok(client)
}

/// The client in `slot`, (re)connecting when there is none or it was closed.
async fn connected<'a>(
    url: &str,
    slot: &'a mut Option<Client>,
) -> Result<&'a mut Client, StoreError> {
    if slot.as_ref().is_none_or(Client::is_closed) {
        *slot = None;
        *slot = Some(open_client(url).await?);
    }
    match slot {
        Some(client) => Ok(client),
        None => Err(StoreError::Task(
            "postgres client missing after connect".to_owned(),
        )),
    }
}

fn params(values: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|v| match v {
            SqlValue::Int(i) => i as &(dyn ToSql + Sync),
            SqlValue::Text(s) => s as &(dyn ToSql + Sync),
        })
        .collect()
}

fn read_record(row: &Row) -> Result<StoredRecord, StoreError> {
    Ok(StoredRecord {
        seq: row.try_get(0)?,
        hash: row.try_get(1)?,
        prev_hash: row.try_get(2)?,
        time_ms: row.try_get(3)?,
        event_json: row.try_get(4)?,
    })
}

async fn read_chain_state(
    client: &impl GenericClient,
    for_update: bool,
) -> Result<ChainState, StoreError> {
    let sql = if for_update {
        "SELECT head_seq, head_hash, anchor_seq, anchor_prev_hash FROM audit_chain WHERE id = 1 FOR UPDATE"
    } else {
        "SELECT head_seq, head_hash, anchor_seq, anchor_prev_hash FROM audit_chain WHERE id = 1"
    };
    let row = client.query_one(sql, &[]).await?;
    Ok(ChainState {
        head_seq: row.try_get(0)?,
        head_hash: row.try_get(1)?,
        anchor_seq: row.try_get(2)?,
        anchor_prev_hash: row.try_get(3)?,
    })
}

/// Appends `events` after the head inside `tx` (which must hold the chain row
/// lock), skipping known ids, and moves the head.
async fn append(
    tx: &tokio_postgres::Transaction<'_>,
    state: &ChainState,
    events: &[ValidatedEvent],
) -> Result<Vec<Ingested>, StoreError> {
    let ids: Vec<&str> = events.iter().map(|v| v.event.id.as_str()).collect();
    let known: HashSet<String> = tx
        .query("SELECT id FROM audit_records WHERE id = ANY($1)", &[&ids])
        .await?
        .iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<Result<_, _>>()?;
    let mut seen: HashSet<&str> = HashSet::with_capacity(events.len());
    let mut columns = Columns::default();
    let mut results = Vec::with_capacity(events.len());
    let mut seq = state.head_seq;
    let mut prev_hash = state.head_hash.clone();
    for valid in events {
        let event = &valid.event;
        if !seen.insert(event.id.as_str()) || known.contains(&event.id) {
            results.push(Ingested::Duplicate);
            continue;
        }
        seq += 1;
        let hash = record_hash(seq, &prev_hash, &valid.canonical);
        columns.push(seq, valid, &prev_hash, &hash);
        prev_hash = hash;
        results.push(Ingested::Stored { seq });
    }
    if seq != state.head_seq {
        tx.execute(
            INSERT_RECORDS,
            &[
                &columns.seq,
                &columns.id,
                &columns.time_ms,
                &columns.kind,
                &columns.outcome,
                &columns.rule,
                &columns.subject,
                &columns.tenant,
                &columns.event,
                &columns.prev_hash,
                &columns.hash,
            ],
        )
        .await?;
        tx.execute(
            "UPDATE audit_chain SET head_seq = $1, head_hash = $2 WHERE id = 1",
            &[&seq, &prev_hash],
        )
        .await?;
    }
    Ok(results)
}

/// The rows of one insert, column by column.
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    id: Vec<String>,
    time_ms: Vec<i64>,
    kind: Vec<String>,
    outcome: Vec<String>,
    rule: Vec<Option<String>>,
    subject: Vec<Option<String>>,
    tenant: Vec<Option<String>>,
    event: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

impl Columns {
    fn push(&mut self, seq: i64, valid: &ValidatedEvent, prev_hash: &str, hash: &str) {
        let event = &valid.event;
        self.seq.push(seq);
        self.id.push(event.id.clone());
        self.time_ms.push(valid.time_ms);
        self.kind.push(event.kind.clone());
        self.outcome.push(event.outcome.clone());
        self.rule.push(event.rule.clone());
        self.subject.push(event.subject.clone());
        self.tenant.push(event.tenant.clone());
        self.event.push(valid.canonical.clone());
        self.prev_hash.push(prev_hash.to_owned());
        self.hash.push(hash.to_owned());
    }
}

async fn count_groups(
    client: &impl GenericClient,
    column: &str,
    filter: &LogFilter,
) -> Result<Vec<(String, u64)>, StoreError> {
    let (sql_where, values) = where_clause(filter, None, &|n| format!("${n}"));
    let not_null = format!("{column} IS NOT NULL");
    let sql_where = if sql_where.is_empty() {
        format!("WHERE {not_null}")
    } else {
        format!("{sql_where} AND {not_null}")
    };
    let sql = format!("SELECT {column}, COUNT(*) FROM audit_records {sql_where} GROUP BY {column}");
    let rows = client.query(&sql, &params(&values)).await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<_, String>(0)?,
                u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
            ))
        })
        .collect()
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn ingest(&self, events: Vec<ValidatedEvent>) -> Result<IngestOutcome, StoreError> {
        if events.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let mut slot = self.writer.lock().await;
        let client = connected(&self.url, &mut slot).await?;
        let tx = client.transaction().await?;
        let state = read_chain_state(&tx, true).await?;
        let results = append(&tx, &state, &events).await?;
        tx.commit().await?;
        Ok(IngestOutcome { results })
    }

    async fn get(&self, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let mut slot = self.reader.lock().await;
        let client = connected(&self.url, &mut slot).await?;
        let row = client
            .query_opt(
                "SELECT seq, hash, prev_hash, time_ms, event FROM audit_records WHERE id = $1",
                &[&id],
            )
            .await?;
        row.as_ref().map(read_record).transpose()
    }

    async fn query(&self, query: &LogQuery) -> Result<Vec<StoredRecord>, StoreError> {
        let (sql_where, values) =
            where_clause(&query.filter, query.after.map(|c| (c, query.order)), &|n| {
                format!("${n}")
            });
        let sql = format!(
            "SELECT seq, hash, prev_hash, time_ms, event FROM audit_records {sql_where} {} LIMIT {}",
            order_clause(query.order),
            query.limit
        );
        let mut slot = self.reader.lock().await;
        let client = connected(&self.url, &mut slot).await?;
        let rows = client.query(&sql, &params(&values)).await?;
        rows.iter().map(read_record).collect()
    }

    async fn statistics(
        &self,
        filter: &LogFilter,
        bucket: Bucket,
    ) -> Result<Statistics, StoreError> {
        let mut slot = self.reader.lock().await;
        let client = connected(&self.url, &mut slot).await?;
        // One repeatable-read snapshot, so every count agrees with the others.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let mut stats = Statistics::default();
        for (outcome, count) in count_groups(&tx, "outcome", filter).await? {
            stats.total += count;
            stats.by_outcome.insert(outcome, count);
        }
        stats.by_kind = count_groups(&tx, "kind", filter)
            .await?
            .into_iter()
            .collect();
        stats.by_rule = count_groups(&tx, "rule", filter)
            .await?
            .into_iter()
            .collect();
        let (sql_where, values) = where_clause(filter, None, &|n| format!("${n}"));
        let sql = format!(
            "SELECT {} AS bucket, COUNT(*), COUNT(*) FILTER (WHERE outcome = 'deny') \
             FROM audit_records {sql_where} GROUP BY bucket ORDER BY bucket",
            bucket_expr(bucket)
        );
        let rows = tx.query(&sql, &params(&values)).await?;
        for row in &rows {
            stats.series.push(SeriesPoint::new(
                row.try_get(0)?,
                u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
                u64::try_from(row.try_get::<_, i64>(2)?).unwrap_or(0),
            ));
        }
        tx.commit().await?;
        Ok(stats)
    }

    async fn purge(&self, request: PurgeRequest) -> Result<PurgeOutcome, StoreError> {
        let mut slot = self.writer.lock().await;
        let client = connected(&self.url, &mut slot).await?;
        let tx = client.transaction().await?;
        let state = read_chain_state(&tx, true).await?;
        let boundary: i64 = tx
            .query_one(
                "SELECT MIN(seq) FROM audit_records WHERE time_ms >= $1",
                &[&request.cutoff_ms],
            )
            .await?
            .try_get::<_, Option<i64>>(0)?
            .unwrap_or(state.head_seq + 1);
        let purged: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM audit_records WHERE seq < $1",
                &[&boundary],
            )
            .await?
            .try_get(0)?;
        let purged = u64::try_from(purged).unwrap_or(0);
        if request.dry_run {
            tx.rollback().await?;
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
            tx.query_one(
                "SELECT prev_hash FROM audit_records WHERE seq = $1",
                &[&boundary],
            )
            .await?
            .try_get(0)?
        };
        tx.execute("DELETE FROM audit_records WHERE seq < $1", &[&boundary])
            .await?;
        tx.execute(
            "UPDATE audit_chain SET anchor_seq = $1, anchor_prev_hash = $2 WHERE id = 1",
            &[&boundary, &anchor_prev_hash],
        )
        .await?;
        let record = purged_record(&request, purged, boundary, &anchor_prev_hash)?;
        let record_id = record.event.id.clone();
        append(&tx, &state, &[record]).await?;
        tx.commit().await?;
        Ok(PurgeOutcome {
            purged,
            dry_run: false,
            first_seq: boundary,
            record_id: Some(record_id),
        })
    }

    async fn chain_state(&self) -> Result<ChainState, StoreError> {
        let mut slot = self.reader.lock().await;
        let client = connected(&self.url, &mut slot).await?;
        read_chain_state(client, false).await
    }

    async fn chain_page(&self, after_seq: i64, limit: u32) -> Result<Vec<ChainRow>, StoreError> {
        let mut slot = self.reader.lock().await;
        let client = connected(&self.url, &mut slot).await?;
        let rows = client
            .query(
                "SELECT seq, id, time_ms, kind, outcome, rule, subject, tenant, event, prev_hash, hash \
                 FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after_seq, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ChainRow {
                    seq: row.try_get(0)?,
                    id: row.try_get(1)?,
                    time_ms: row.try_get(2)?,
                    kind: row.try_get(3)?,
                    outcome: row.try_get(4)?,
                    rule: row.try_get(5)?,
                    subject: row.try_get(6)?,
                    tenant: row.try_get(7)?,
                    event: row.try_get(8)?,
                    prev_hash: row.try_get(9)?,
                    hash: row.try_get(10)?,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut slot = self.reader.lock().await;
        let client = connected(&self.url, &mut slot).await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }
}
