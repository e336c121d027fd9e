//! `avb-policy`: check, explain and test policies with the filter's own engine.
fn main() {}
