//! The real-Envoy test infrastructure itself, checked with the test host's
//! probe filter (`make probe`) instead of avb-edge, so a failure here points
//! at the harness (config builder, Envoy runner, echo, clients), not at the
//! policy filter.

use std::path::PathBuf;

use avb_tests::echo::EchoServer;
use avb_tests::http::{H2Request, RawRequest};
use avb_tests::procs::envoy::{Envoy, EnvoyConfig};
use avb_tests::procs::{temp_dir, workspace_root};

fn probe_wasm() -> PathBuf {
    let path = std::env::var_os("AVB_PROBE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/probe/avb_probe_filter.wasm"));
    assert!(
        path.is_file(),
        "probe filter missing at {} (run `make probe`)",
        path.display()
    );
    path
}

fn probe_config(echo: &EchoServer) -> EnvoyConfig {
    EnvoyConfig::new(probe_wasm(), "{}", echo.port())
}

#[test]
fn envoy_forwards_http1_through_the_wasm_filter_to_the_echo_upstream() {
    let echo = EchoServer::start().unwrap();
    let envoy = probe_config(&echo).start().unwrap();
    let port = envoy.listener_port().unwrap();
    let response = RawRequest::post("/api/v1/stt/test", "payload")
        .header("x-dupe", "a")
        .header("x-dupe", "b")
        .send(port)
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let requests = echo.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/v1/stt/test");
    assert_eq!(requests[0].body, b"payload");
    assert_eq!(requests[0].header_all("x-dupe"), vec!["a", "b"]);
    // The echo's JSON came back through Envoy.
    assert_eq!(response.json().unwrap()["body_len"], 7);
}

#[test]
fn a_local_reply_from_the_filter_never_reaches_the_upstream() {
    let echo = EchoServer::start().unwrap();
    let envoy = probe_config(&echo).start().unwrap();
    let response = RawRequest::get("/x")
        .header("x-probe", "local")
        .send(envoy.listener_port().unwrap())
        .unwrap();
    assert_eq!(response.status, 403);
    assert_eq!(response.header("x-denied-by"), Some("probe"));
    assert!(echo.requests().is_empty());
}

#[test]
fn http2_body_frames_and_trailers_reach_the_upstream_through_envoy() {
    let echo = EchoServer::start().unwrap();
    let envoy = probe_config(&echo).start().unwrap();
    let body: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let response = H2Request::new("POST", "/api/v1/billing/webhooks/lago")
        .header("content-type", "application/json")
        .body_in_pieces(&body, 16)
        .trailer("x-lago-trailer", "done")
        .send_blocking(envoy.listener_port().unwrap())
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let requests = echo.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].version, "HTTP/2.0");
    assert_eq!(requests[0].body, body);
    // The probe filter adds a trailer of its own; ours must be there intact.
    assert!(
        requests[0]
            .trailers
            .contains(&("x-lago-trailer".to_owned(), "done".to_owned())),
        "{:?}",
        requests[0].trailers
    );
}

#[test]
fn companion_routes_go_to_the_companion_cluster_when_one_is_given() {
    let echo = EchoServer::start().unwrap();
    let companion = EchoServer::start().unwrap();
    let envoy = probe_config(&echo)
        .with_companion(companion.port())
        .start()
        .unwrap();
    let port = envoy.listener_port().unwrap();
    for path in ["/api/v1/audit/logs", "/api/v1/tenants/t1/cache"] {
        assert_eq!(RawRequest::get(path).send(port).unwrap().status, 200);
    }
    assert_eq!(
        RawRequest::get("/api/v1/stt/config")
            .send(port)
            .unwrap()
            .status,
        200
    );
    assert_eq!(companion.requests().len(), 2);
    assert_eq!(echo.requests().len(), 1);
}

#[test]
fn envoy_path_normalisation_is_on_by_default_and_can_be_turned_off() {
    let echo = EchoServer::start().unwrap();
    let normalising = probe_config(&echo).start().unwrap();
    let response = RawRequest::get("/a/../b%2Fc")
        .send(normalising.listener_port().unwrap())
        .unwrap();
    assert_eq!(
        response.status, 400,
        "escaped slash must be rejected by Envoy"
    );
    RawRequest::get("/a/./b//c")
        .send(normalising.listener_port().unwrap())
        .unwrap();
    assert_eq!(echo.requests().last().unwrap().path, "/a/b/c");
    drop(normalising);

    echo.clear();
    let raw = probe_config(&echo)
        .with_normalisation(false)
        .start()
        .unwrap();
    RawRequest::get("/a/./b//c%2F")
        .send(raw.listener_port().unwrap())
        .unwrap();
    assert_eq!(echo.requests().last().unwrap().path, "/a/./b//c%2F");
}

#[test]
fn stats_and_logs_are_readable() {
    let echo = EchoServer::start().unwrap();
    let envoy = probe_config(&echo).start().unwrap();
    RawRequest::get("/x")
        .send(envoy.listener_port().unwrap())
        .unwrap();
    let stats = envoy.stats().unwrap();
    assert!(
        stats
            .get("cluster.echo.upstream_rq_200")
            .is_some_and(|count| *count >= 1),
        "{stats:?}"
    );
    assert_eq!(envoy.stat("no.such.stat").unwrap(), None);
    let _ = envoy.logs();
}

#[test]
fn rendered_config_passes_envoy_validate() {
    let echo = EchoServer::start().unwrap();
    let dir = temp_dir("rendered").unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, probe_config(&echo).render()).unwrap();
    Envoy::validate(&path).unwrap();
}

#[test]
fn envoy_start_fails_with_logs_when_the_wasm_module_is_not_proxy_wasm() {
    let echo = EchoServer::start().unwrap();
    let dir = temp_dir("not-proxy-wasm").unwrap();
    let module = dir.path().join("empty.wasm");
    // The smallest valid module: no proxy-wasm ABI exports.
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let err = match EnvoyConfig::new(module, "{}", echo.port()).start() {
        Ok(_) => panic!("envoy served with a module that is not a proxy-wasm filter"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("avb_edge"), "{err}");
}

#[test]
fn a_listener_port_taken_meanwhile_is_retried_with_fresh_ports() {
    let echo = EchoServer::start().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = probe_config(&echo);
    config.listener_port = taken.local_addr().unwrap().port();
    let envoy = config.start().unwrap();
    let port = envoy.listener_port().unwrap();
    assert_ne!(port, config.listener_port);
    assert_eq!(RawRequest::get("/x").send(port).unwrap().status, 200);
}
