//! avb-companion: the audit trail store, the Audit API and tenant cache
//! invalidation.
//!
//! - [`audit`]: the tamper-evident store (SQLite or PostgreSQL) and its chain;
//! - [`api`]: the HTTP API ([`app`] builds the router);
//! - [`cache`]: tenant cache invalidation in Redis.

pub mod api;
pub mod audit;
pub mod cache;

pub use api::{app, serve, AppError, AppState};
pub use audit::{append_local_event, new_event_id, AuditEvent, StoreError};
