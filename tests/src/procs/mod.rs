//! Real processes started by tests on free loopback ports.

pub mod postgres;
pub mod redis;
