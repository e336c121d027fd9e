//! The real filter (`dist/avb_edge.wasm`, built by `make plugin`) on the test
//! host: every import links, every worker configures with the shipped policy
//! and the local environment, a request is answered, the timer and the end
//! of the request run without a trap. Scenario tests of the filter's
//! behaviour live in their own files; this one pins host compatibility.

// Test helpers outside #[test] functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::panic)]

use avb_tests::host::{Host, HostBuilder};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn product_wasm() -> PathBuf {
    let path = std::env::var_os("AVB_EDGE_WASM")
        .map_or_else(|| root().join("dist/avb_edge.wasm"), PathBuf::from);
    assert!(
        path.exists(),
        "the filter is missing at {}: run `make plugin` (or point AVB_EDGE_WASM at it)",
        path.display()
    );
    path
}

/// The local stack's environment (envoy/dev.env), as Envoy hands it to the VM.
fn dev_env(builder: HostBuilder) -> HostBuilder {
    let text = std::fs::read_to_string(root().join("envoy/dev.env")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .fold(builder, |builder, (key, value)| builder.env(key, value))
}

fn product_host() -> Host {
    let policy = std::fs::read(root().join("envoy/policies/agentvoicebox.json")).unwrap();
    dev_env(HostBuilder::new(product_wasm()))
        .vm_id("avb_edge")
        .root_id("avb_edge")
        .cluster("avb_companion")
        .configuration(policy)
        .workers(2)
        .build()
        .unwrap()
}

#[test]
fn the_real_filter_starts_on_every_worker_and_answers_an_anonymous_request() {
    let host = product_host();
    for worker in 0..host.workers() {
        let request = host.request(worker);
        request
            .headers(
                &[
                    (":method", "GET"),
                    (":path", "/api/v1/audit/logs"),
                    (":authority", "api"),
                    (":scheme", "http"),
                ],
                true,
            )
            .unwrap();
        let reply = request
            .local_reply()
            .unwrap_or_else(|| panic!("no local reply; logs: {:?}", host.logs()));
        assert!((400..500).contains(&reply.status), "{reply:?}");
        assert!(!request.forwarded());
        request.done().unwrap();
        assert_eq!(host.vm_failure(worker), None);
    }
    if host.tick_period(0).is_some() {
        host.tick(0).unwrap();
    }
}

#[test]
fn the_real_filter_rejects_a_broken_configuration_at_startup() {
    let error = dev_env(HostBuilder::new(product_wasm()))
        .configuration("{ not json")
        .build()
        .unwrap_err();
    assert!(
        error.to_string().contains("proxy_on_configure rejected"),
        "{error}"
    );
}
