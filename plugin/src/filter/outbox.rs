//! The audit outbox: events from every worker of one Envoy go through one
//! Envoy shared queue and are posted to the companion in batches.
//!
//! - A request context appends its event to the worker's open chunk (no host
//!   call per event). The chunk goes onto the shared queue when it holds
//!   `batch_size` events, or on the next tick.
//! - On every tick (and after every accepted batch) each worker's root context
//!   takes chunks off the shared queue and posts them with `dispatch_http_call`,
//!   with a few batches in flight at most.
//! - A failed or timed-out batch is kept by that worker and retried with
//!   exponential backoff. Events are removed from the count only when the
//!   companion acknowledged them.
//! - The number of events not yet acknowledged is kept in shared data. When a
//!   new chunk would take it over `queue_limit`, the oldest queued chunks are
//!   dropped and counted: nothing is dropped while there is room.

use super::host;
use super::metrics::Metrics;
use crate::policy::AuditSettings;
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

const QUEUE_NAME: &str = "avb_audit";
const DEPTH_KEY: &str = "avb_audit.depth";
const MAX_IN_FLIGHT: usize = 4;
const FIRST_BACKOFF_MS: u64 = 100;
const MAX_BACKOFF_MS: u64 = 30_000;

/// A chunk on the shared queue: 4 bytes of event count (little endian), then
/// the events as JSON objects separated by commas.
struct Chunk {
    count: u32,
    json: Vec<u8>,
}

impl Chunk {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.json.len());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.json);
        out
    }
    fn decode(bytes: &[u8]) -> Option<Chunk> {
        let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        Some(Chunk {
            count,
            json: bytes.get(4..)?.to_vec(),
        })
    }
}

struct Batch {
    count: u32,
    body: Vec<u8>,
    attempts: u32,
    not_before_ms: u64,
}

pub struct Outbox {
    settings: AuditSettings,
    queue: Option<u32>,
    open: Chunk,
    in_flight: HashMap<u32, Batch>,
    retry: VecDeque<Batch>,
}

impl Outbox {
    pub fn new(settings: AuditSettings) -> Outbox {
        let queue = hostcalls::register_shared_queue(QUEUE_NAME).ok();
        if queue.is_none() {
            host::log(
                LogLevel::Error,
                "avb-edge: audit queue could not be registered",
            );
        }
        Outbox {
            settings,
            queue,
            open: Chunk {
                count: 0,
                json: Vec::new(),
            },
            in_flight: HashMap::new(),
            retry: VecDeque::new(),
        }
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.settings.flush_interval_ms.max(10))
    }

    /// Appends one serialized event to the worker's open chunk.
    pub fn push(&mut self, event_json: &[u8], metrics: &Metrics) {
        if !self.open.json.is_empty() {
            self.open.json.push(b',');
        }
        self.open.json.extend_from_slice(event_json);
        self.open.count += 1;
        if self.open.count as usize >= self.settings.batch_size.max(1) {
            self.seal(metrics);
        }
    }

    /// Moves the open chunk onto the shared queue, making room first if the
    /// queue is at its limit.
    pub fn seal(&mut self, metrics: &Metrics) {
        if self.open.count == 0 {
            return;
        }
        let chunk = std::mem::replace(
            &mut self.open,
            Chunk {
                count: 0,
                json: Vec::new(),
            },
        );
        let Some(queue) = self.queue else {
            metrics.audit_dropped.add(u64::from(chunk.count));
            return;
        };
        let limit = self.settings.queue_limit as u64;
        let mut depth = add_depth(i64::from(chunk.count));
        while depth > limit {
            // Drop the oldest queued chunk; if none is queued, the oldest retry.
            let dropped = match hostcalls::dequeue_shared_queue(queue) {
                Ok(Some(bytes)) => Chunk::decode(&bytes).map(|c| c.count).unwrap_or(0),
                _ => match self.retry.pop_front() {
                    Some(batch) => batch.count,
                    None => break,
                },
            };
            metrics.audit_dropped.add(u64::from(dropped));
            depth = add_depth(-i64::from(dropped));
        }
        if depth > limit {
            // Nothing older to drop: the new chunk itself does not fit.
            metrics.audit_dropped.add(u64::from(chunk.count));
            depth = add_depth(-i64::from(chunk.count));
        } else if hostcalls::enqueue_shared_queue(queue, Some(&chunk.encode())).is_err() {
            metrics.audit_dropped.add(u64::from(chunk.count));
            depth = add_depth(-i64::from(chunk.count));
        }
        metrics.audit_queue_depth.set(depth);
    }

    /// Called on every tick and after every answered batch: seal the open
    /// chunk, then post batches while there is room in flight.
    pub fn pump(&mut self, now_ms: u64, metrics: &Metrics) {
        self.seal(metrics);
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let batch = match self.retry.front() {
                Some(b) if b.not_before_ms <= now_ms => self.retry.pop_front(),
                _ => self.take_batch(),
            };
            let Some(batch) = batch else { break };
            self.dispatch(batch, metrics);
        }
    }

    /// Takes up to `batch_size` events' worth of chunks off the shared queue.
    fn take_batch(&mut self) -> Option<Batch> {
        let queue = self.queue?;
        let mut count = 0u32;
        let mut body = b"{\"events\":[".to_vec();
        while (count as usize) < self.settings.batch_size.max(1) {
            let Ok(Some(bytes)) = hostcalls::dequeue_shared_queue(queue) else {
                break;
            };
            let Some(chunk) = Chunk::decode(&bytes) else {
                continue;
            };
            if chunk.count == 0 {
                continue;
            }
            if count > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&chunk.json);
            count += chunk.count;
        }
        if count == 0 {
            return None;
        }
        body.extend_from_slice(b"]}");
        Some(Batch {
            count,
            body,
            attempts: 0,
            not_before_ms: 0,
        })
    }

    fn dispatch(&mut self, batch: Batch, metrics: &Metrics) {
        let auth = format!("Bearer {}", self.settings.token);
        let headers = vec![
            (":method", "POST"),
            (":path", self.settings.path.as_str()),
            (":authority", self.settings.authority.as_str()),
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        match hostcalls::dispatch_http_call(
            &self.settings.cluster,
            headers,
            Some(&batch.body),
            vec![],
            Duration::from_millis(self.settings.timeout_ms),
        ) {
            Ok(token) => {
                self.in_flight.insert(token, batch);
            }
            Err(status) => {
                host::log(
                    LogLevel::Warn,
                    &format!("avb-edge: audit batch could not be sent ({status:?}); will retry"),
                );
                self.failed(batch, host::now_millis(), metrics);
            }
        }
    }

    /// The companion answered (or the call failed: no status). 2xx: done. 400:
    /// done, with the malformed events refused. Anything else (401 for a wrong
    /// ingest token, 5xx, a timeout): retried with backoff, so fixing the token or
    /// restarting the companion loses nothing that fit in the queue.
    pub fn answered(&mut self, token: u32, status: Option<u16>, now_ms: u64, metrics: &Metrics) {
        let Some(batch) = self.in_flight.remove(&token) else {
            return;
        };
        match status {
            Some(200..=299) => {
                metrics.audit_sent.add(u64::from(batch.count));
                let depth = add_depth(-i64::from(batch.count));
                metrics.audit_queue_depth.set(depth);
                self.pump(now_ms, metrics);
            }
            Some(400) => {
                // The companion stored the valid events of the batch and
                // refused the malformed ones: sending it again cannot change
                // that, so it is not retried (the companion logs which ones).
                host::log(
                    LogLevel::Error,
                    &format!(
                        "avb-edge: the companion refused events of a batch of {} as malformed; not retried",
                        batch.count
                    ),
                );
                metrics.audit_failed.inc();
                let depth = add_depth(-i64::from(batch.count));
                metrics.audit_queue_depth.set(depth);
                self.pump(now_ms, metrics);
            }
            _ => {
                if host::log_enabled(LogLevel::Warn) {
                    host::log(
                        LogLevel::Warn,
                        &format!(
                            "avb-edge: audit batch of {} events not accepted (status {}); will retry",
                            batch.count,
                            status.map_or("none".to_string(), |s| s.to_string())
                        ),
                    );
                }
                self.failed(batch, now_ms, metrics);
            }
        }
    }

    fn failed(&mut self, mut batch: Batch, now_ms: u64, metrics: &Metrics) {
        metrics.audit_failed.inc();
        batch.attempts = batch.attempts.saturating_add(1);
        let backoff = FIRST_BACKOFF_MS
            .saturating_mul(1u64 << batch.attempts.min(16).saturating_sub(1))
            .min(MAX_BACKOFF_MS);
        batch.not_before_ms = now_ms.saturating_add(backoff);
        self.retry.push_back(batch);
    }
}

/// Adds `delta` to the shared count of unacknowledged events (CAS loop) and
/// returns the new value.
fn add_depth(delta: i64) -> u64 {
    for _ in 0..64 {
        let (current, cas) = match hostcalls::get_shared_data(DEPTH_KEY) {
            Ok((value, cas)) => (
                value
                    .and_then(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                    .map(u64::from_le_bytes)
                    .unwrap_or(0),
                cas,
            ),
            Err(_) => (0, None),
        };
        let next = if delta >= 0 {
            current.saturating_add(delta as u64)
        } else {
            current.saturating_sub(delta.unsigned_abs())
        };
        match hostcalls::set_shared_data(DEPTH_KEY, Some(&next.to_le_bytes()), cas.or(Some(0))) {
            Ok(()) => return next,
            Err(_) => continue,
        }
    }
    0
}
