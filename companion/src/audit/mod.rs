//! The tamper-evident audit store.
//!
//! - [`event`]: what an acceptable event is, and its canonical encoding;
//! - [`chain`]: the hash chain and its verification;
//! - [`store`]: the [`AuditStore`] trait and the query types;
//! - [`sqlite`] and [`postgres`]: the two backends.

pub mod chain;
pub mod event;
pub mod postgres;
pub mod sqlite;
pub mod store;

pub use chain::{verify_chain, ChainBreak, VerifyReport};
pub use event::{new_event_id, validate, AuditEvent, EventError, ValidatedEvent};
pub use store::{append_local_event, open_store, AuditStore, StoreError};
