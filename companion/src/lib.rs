//! avb-companion: the audit trail store, the Audit API and tenant cache invalidation.

pub mod audit;
pub mod cache;

pub use audit::{append_local_event, new_event_id, AuditEvent, StoreError};
