//! Tenant cache invalidation in Redis (CACHE-001).
//!
//! AgentVoiceBox caches tenant data under `tenant:{tenant_id}:*`. Clearing one
//! tenant removes every key of that tenant and nothing else:
//!
//! - the tenant id is held to a strict alphabet before Redis is touched
//!   ([`validate_tenant_id`]), and the MATCH pattern is glob-escaped anyway
//!   ([`tenant_pattern`]);
//! - a hand-written `SCAN cursor MATCH tenant:{id}:* COUNT n` loop per node
//!   feeds pipelined, non-transactional `UNLINK` batches through a bounded
//!   queue, so scanning and deleting overlap and the server stays busy;
//! - every key is checked to start with the exact prefix `tenant:{id}:` before
//!   it can be deleted;
//! - a dropped connection is reopened and the scan resumed from its cursor;
//!   repeated failures end the run with how far it got;
//! - on Redis Cluster every primary is scanned in parallel, keys are deleted on
//!   the node that returned them, grouped by hash slot (no CROSSSLOT), and the
//!   set of primaries is checked again at the end.
//!
//! [`cli`] is the `avb-companion cache invalidate` subcommand.

pub mod cli;
mod error;
mod invalidate;
mod slot;
mod target;
mod tenant;

pub use error::CacheError;
pub use invalidate::{invalidate, InvalidateOptions, InvalidateReport, Progress, MAX_SCAN_COUNT};
pub use slot::key_hash_slot;
pub use target::{RedisTarget, Timeouts};
pub use tenant::{tenant_pattern, validate_tenant_id, TenantId, MAX_TENANT_ID_LEN};
