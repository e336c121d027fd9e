//! Tamper-evident audit store (to be written)
