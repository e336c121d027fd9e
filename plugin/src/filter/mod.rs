//! proxy-wasm glue (wasm32 only). Thin by design: it reads the request from
//! the host, asks the pure engine for a decision, and applies it.
//!
//! - `host`: fallible wrappers over the SDK's host calls. The SDK's
//!   convenience methods unwrap host results (and `get_map` unwraps UTF-8 of
//!   header values), and a panic kills the VM for every request on the worker,
//!   so the filter only uses these wrappers.
//! - `root`: the root context: configuration, metrics, the audit outbox tick.
//! - `request`: one HTTP request.
//! - `outbox`: audit events queued across workers and shipped in batches.
//! - `replay`: the webhook replay memory in Envoy shared data.

mod host;
mod metrics;
mod outbox;
mod replay;
mod request;
mod root;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::EdgeRoot::new())
    });
}}
