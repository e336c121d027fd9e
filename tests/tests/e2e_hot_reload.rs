//! End-to-end hot reload (issue 6): the real Envoy 1.40 takes its listener
//! (and with it the avb-edge filter and its policy) from a file-based LDS
//! (`dynamic_resources.lds_config.path_config_source` watching a directory).
//! A new listener is written to a temporary file and moved over the watched
//! one, as a config-management tool would.
//!
//! - a changed policy applies to new requests;
//! - a webhook delivery in flight (its body still arriving) when the policy
//!   changes finishes under the policy it started with;
//! - a broken policy is refused (`listener_manager.lds.update_rejected`) and
//!   the old one keeps serving; a good policy after it still applies.
//!
//! Requires `make plugin` (or `AVB_WASM`) and an Envoy (`AVB_ENVOY` or
//! `scripts/envoy.sh`). Run: `cargo test -p avb-tests --test e2e_hot_reload`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use avb_edge::policy::Policy;
use avb_tests::echo::{EchoServer, Received};
use avb_tests::http::{RawRequest, Response};
use avb_tests::procs::envoy::{dev_env, shipped_policy_json, Envoy, EnvoyConfig};
use avb_tests::procs::{temp_dir, wasm_path};
use avb_tests::tokens::dev_token;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const TRACE_HEADER: &str = "x-test-trace";
const WEBHOOK_PATH: &str = "/api/v1/billing/webhooks/lago";
const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// How long Envoy may take to apply (or refuse) a new listener.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

const UPDATE_SUCCESS: &str = "listener_manager.lds.update_success";
const UPDATE_REJECTED: &str = "listener_manager.lds.update_rejected";
const LISTENERS_WARMING: &str = "listener_manager.total_listeners_warming";

fn dev_value(name: &str) -> String {
    dev_env()
        .expect("envoy/dev.env is readable")
        .get(name)
        .unwrap_or_else(|| panic!("{name} in envoy/dev.env"))
        .clone()
}

/// An HS256 token for the dev key, minted here with hmac + base64.
fn token(subject: &str, roles: &[&str]) -> String {
    dev_token(subject, roles, "tenant-a", 900).expect("dev token")
}

fn trace_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "r{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn shipped_policy() -> Value {
    let mut policy: Value =
        serde_json::from_str(&shipped_policy_json().expect("shipped policy")).expect("JSON");
    // No companion in these tests.
    policy
        .as_object_mut()
        .expect("policy object")
        .remove("audit");
    policy
}

fn rule_mut<'a>(policy: &'a mut Value, name: &str) -> &'a mut Value {
    policy["rules"]
        .as_array_mut()
        .expect("rules")
        .iter_mut()
        .find(|rule| rule["name"] == name)
        .unwrap_or_else(|| panic!("rule {name} in the shipped policy"))
}

/// The shipped policy with `stt.metrics` given to VIEWER instead of OPERATOR.
fn metrics_for_viewers() -> Value {
    let mut policy = shipped_policy();
    rule_mut(&mut policy, "stt.metrics")["any_of"] = json!(["VIEWER"]);
    policy
}

/// The revision the filter logs for `policy` (computed by the engine).
fn revision(policy: &Value) -> String {
    let env = dev_env().expect("dev.env");
    Policy::from_json(policy.to_string().as_bytes(), &|name| {
        env.get(name).cloned()
    })
    .expect("a valid policy")
    .revision()
    .to_owned()
}

/// Envoy whose only listener comes from a watched LDS file.
struct ReloadStack {
    echo: EchoServer,
    envoy: Envoy,
    config: EnvoyConfig,
    lds_dir: tempfile::TempDir,
    version: u64,
}

impl ReloadStack {
    fn start(policy: &Value) -> Self {
        let echo = EchoServer::start().expect("echo upstream");
        let config = EnvoyConfig::new(
            wasm_path().expect("dist/avb_edge.wasm built"),
            policy.to_string(),
            echo.port(),
        );
        let lds_dir = temp_dir("lds").expect("temp dir");
        let rendered: Value = serde_yaml::from_str(&config.render()).expect("rendered config");
        let bootstrap = json!({
            "node": {"id": "avb-hot-reload", "cluster": "avb-hot-reload"},
            "admin": rendered["admin"],
            "static_resources": {"clusters": rendered["static_resources"]["clusters"]},
            "dynamic_resources": {"lds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": lds_path(lds_dir.path()),
                    "watched_directory": {"path": lds_dir.path()},
                },
            }},
        });
        // The first listener is in place before Envoy reads the file.
        write_listener(lds_dir.path(), &config, &config.policy_json, 1);
        let envoy = Envoy::start(&serde_yaml::to_string(&bootstrap).expect("YAML"))
            .expect("envoy starts with a file-based LDS");
        let stack = Self {
            echo,
            envoy,
            config,
            lds_dir,
            version: 1,
        };
        stack.wait_for_listener();
        stack
    }

    fn port(&self) -> u16 {
        self.config.listener_port
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(name).expect("envoy stats").unwrap_or(0)
    }

    fn wait_for_listener(&self) {
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        while RawRequest::get("/healthz").send(self.port()).is_err() {
            assert!(
                Instant::now() < deadline,
                "the LDS listener never came up:\n{}",
                self.envoy.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes a listener with `policy` as its filter configuration to a
    /// temporary file and moves it over the watched LDS file.
    fn push_policy(&mut self, policy: &str) {
        self.version += 1;
        write_listener(self.lds_dir.path(), &self.config, policy, self.version);
    }

    /// Pushes `policy` and waits until Envoy accepted it and finished
    /// warming the new listener.
    fn reload_with(&mut self, policy: &Value) {
        let accepted = self.stat(UPDATE_SUCCESS);
        self.push_policy(&policy.to_string());
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        while self.stat(UPDATE_SUCCESS) <= accepted || self.stat(LISTENERS_WARMING) > 0 {
            assert_eq!(
                self.stat(UPDATE_REJECTED),
                0,
                "envoy rejected a valid policy:\n{}",
                self.envoy.logs()
            );
            assert!(
                Instant::now() < deadline,
                "envoy did not apply the new listener"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send(&self, request: RawRequest) -> (Response, Vec<Received>) {
        let trace = trace_id();
        let response = request
            .header(TRACE_HEADER, &trace)
            .send(self.port())
            .expect("envoy answers");
        let upstream = self
            .echo
            .requests()
            .into_iter()
            .filter(|request| request.header(TRACE_HEADER) == Some(trace.as_str()))
            .collect();
        (response, upstream)
    }

    fn status_for(&self, path: &str, bearer: &str) -> u16 {
        self.send(RawRequest::get(path).bearer(bearer)).0.status
    }

    /// Waits until new requests see `expected` statuses (the swap reaches
    /// the workers just after the admin stats say so), then checks that
    /// they keep seeing them.
    fn expect_statuses(&self, checks: &[(&str, &str, u16)], what: &str) {
        let current = || -> Vec<u16> {
            checks
                .iter()
                .map(|(path, bearer, _)| self.status_for(path, bearer))
                .collect()
        };
        let wanted: Vec<u16> = checks.iter().map(|(_, _, status)| *status).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = current();
            if seen == wanted {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: statuses {seen:?}, expected {wanted:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for _ in 0..5 {
            assert_eq!(current(), wanted, "{what}: not stable");
        }
    }
}

fn lds_path(dir: &Path) -> PathBuf {
    dir.join("lds.json")
}

/// Writes the listener of `config` with `policy` as the filter configuration
/// to a temporary file in `dir` and moves it over the watched LDS file (a
/// rename, so Envoy never reads half a file).
fn write_listener(dir: &Path, config: &EnvoyConfig, policy: &str, version: u64) {
    let mut config = config.clone();
    config.policy_json = policy.to_owned();
    let rendered: Value = serde_yaml::from_str(&config.render()).expect("rendered config");
    let mut listener = rendered["static_resources"]["listeners"][0].clone();
    listener["@type"] = json!(LISTENER_TYPE);
    let discovery = json!({
        "version_info": version.to_string(),
        "resources": [listener],
    });
    let staged = dir.join(format!(".lds-{version}.json"));
    std::fs::write(&staged, discovery.to_string()).expect("staging the listener");
    std::fs::rename(&staged, lds_path(dir)).expect("moving it into place");
}

/// `base64(HMAC-SHA256(key, body))`, as Lago's `X-Lago-Signature`.
fn lago_hmac(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac key");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

fn lago_body() -> String {
    format!(
        "{{\"webhook_type\":\"invoice.created\",\"object_type\":\"invoice\",\"trace\":\"{}\",\"padding\":\"{}\"}}",
        trace_id(),
        "x".repeat(4096)
    )
}

/// A webhook delivery whose body is sent in two parts, with a pause between
/// them that the test fills: the headers and first part go out now.
struct SlowDelivery {
    stream: TcpStream,
    rest: Vec<u8>,
    trace: String,
}

impl SlowDelivery {
    fn begin(port: u16, body: &str, signature: &str) -> Self {
        let trace = trace_id();
        let head = format!(
            "POST {WEBHOOK_PATH} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             x-lago-signature-algorithm: hmac\r\nx-lago-signature: {signature}\r\n\
             x-lago-unique-key: {trace}\r\n{TRACE_HEADER}: {trace}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let (first, rest) = body.as_bytes().split_at(body.len() / 2);
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to envoy");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        stream.write_all(head.as_bytes()).expect("send headers");
        stream.write_all(first).expect("send the first half");
        stream.flush().expect("flush");
        Self {
            stream,
            rest: rest.to_vec(),
            trace,
        }
    }

    /// Sends the rest of the body and reads the status line and body.
    fn finish(mut self) -> (u16, String) {
        self.stream.write_all(&self.rest).expect("send the rest");
        self.stream.flush().expect("flush");
        read_response(&mut self.stream)
    }
}

/// Minimal HTTP/1.1 response reader: status and a content-length body.
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    while !buffer.ends_with(b"\r\n\r\n") {
        let read = stream.read(&mut byte).expect("reading the response head");
        assert_eq!(read, 1, "connection closed inside the response head");
        buffer.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buffer).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("reading the body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn a_changed_policy_applies_to_new_requests() {
    let shipped = shipped_policy();
    let mut stack = ReloadStack::start(&shipped);
    let operator = token("op-1", &["OPERATOR"]);
    let viewer = token("viewer-1", &["VIEWER"]);
    let metrics = "/api/v1/stt/metrics";
    stack.expect_statuses(
        &[(metrics, &operator, 200), (metrics, &viewer, 403)],
        "shipped policy",
    );

    let changed = metrics_for_viewers();
    stack.reload_with(&changed);
    stack.expect_statuses(
        &[(metrics, &operator, 403), (metrics, &viewer, 200)],
        "after the reload",
    );
    // The filter loaded exactly the pushed document.
    let loaded = format!("policy {} loaded", revision(&changed));
    assert!(
        stack.envoy.logs().contains(&loaded),
        "no {loaded:?} in the Envoy log"
    );
    // Other rules are untouched.
    let developer = token("dev-1", &["DEVELOPER"]);
    assert_eq!(stack.status_for("/api/v1/stt/config", &developer), 200);
    assert_eq!(stack.status_for("/api/v1/llm/config", &developer), 403);
    assert_eq!(stack.stat(UPDATE_REJECTED), 0);
}

#[test]
fn a_webhook_in_flight_during_a_reload_finishes_under_the_old_policy() {
    let shipped = shipped_policy();
    let mut stack = ReloadStack::start(&shipped);
    let current_key = dev_value("LAGO_HMAC_KEY");

    // Headers in, half the body in: the filter holds the delivery for the
    // body, under the shipped policy (which trusts the `current` key).
    let body = lago_body();
    let in_flight = SlowDelivery::begin(
        stack.port(),
        &body,
        &lago_hmac(&current_key, body.as_bytes()),
    );
    std::thread::sleep(Duration::from_millis(300));

    // The new policy retires the `current` key.
    let mut rotated = shipped.clone();
    rotated["webhooks"]["lago"]["hmac_keys"] =
        json!([{"id": "previous", "secret_env": "LAGO_HMAC_KEY_PREVIOUS"}]);
    stack.reload_with(&rotated);

    // New deliveries signed with the retired key are refused...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = lago_body();
        let (response, upstream) = stack.send(
            RawRequest::post(WEBHOOK_PATH, body.clone())
                .header("content-type", "application/json")
                .header("x-lago-signature-algorithm", "hmac")
                .header(
                    "x-lago-signature",
                    &lago_hmac(&current_key, body.as_bytes()),
                )
                .header("x-lago-unique-key", &trace_id()),
        );
        if response.status == 401 {
            assert!(upstream.is_empty());
            assert_eq!(response.json().expect("JSON")["error"], "invalid_signature");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new policy never applied: {} {}",
            response.status,
            response.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // ...while the one that started before the reload is verified with the
    // key its policy had, and reaches the upstream whole.
    let trace = in_flight.trace.clone();
    let (status, reply) = in_flight.finish();
    assert_eq!(status, 200, "in-flight delivery: {reply}");
    let upstream: Vec<Received> = stack
        .echo
        .requests()
        .into_iter()
        .filter(|request| request.header(TRACE_HEADER) == Some(trace.as_str()))
        .collect();
    assert_eq!(upstream.len(), 1);
    assert_eq!(upstream[0].body, body.as_bytes());
    assert_eq!(upstream[0].header_all("x-avb-webhook-key"), vec!["current"]);
}

#[test]
fn a_broken_policy_is_refused_and_the_old_one_keeps_serving() {
    let shipped = shipped_policy();
    let mut stack = ReloadStack::start(&shipped);
    let operator = token("op-1", &["OPERATOR"]);
    let viewer = token("viewer-1", &["VIEWER"]);
    let metrics = "/api/v1/stt/metrics";
    let shipped_statuses = [
        (metrics, operator.as_str(), 200),
        (metrics, viewer.as_str(), 403),
    ];
    stack.expect_statuses(&shipped_statuses, "shipped policy");

    // A typo that would widen access if it were ignored: `any_off`.
    let mut broken = metrics_for_viewers();
    let rule = rule_mut(&mut broken, "stt.metrics");
    rule["any_off"] = rule["any_of"].take();
    rule.as_object_mut().expect("rule").remove("any_of");
    for (attempt, policy) in [broken.to_string(), "{not json".to_owned()]
        .iter()
        .enumerate()
    {
        let rejected = stack.stat(UPDATE_REJECTED);
        stack.push_policy(policy);
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        while stack.stat(UPDATE_REJECTED) <= rejected {
            assert!(
                Instant::now() < deadline,
                "attempt {attempt}: the broken policy was not rejected (update_success {}):\n{}",
                stack.stat(UPDATE_SUCCESS),
                stack.envoy.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        stack.expect_statuses(&shipped_statuses, "after a rejected policy");
        assert!(
            stack.envoy.logs().contains("policy refused"),
            "the filter says why it refused the policy"
        );
    }

    // The pipeline still works: a good policy after the broken ones applies.
    stack.reload_with(&metrics_for_viewers());
    stack.expect_statuses(
        &[(metrics, &operator, 403), (metrics, &viewer, 200)],
        "after a good policy",
    );
}
