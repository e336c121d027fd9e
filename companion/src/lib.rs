//! avb-companion: the audit trail store, the Audit API and tenant cache invalidation.

pub mod audit;
pub mod cache;
