//! A real Envoy started by a test (being written).
