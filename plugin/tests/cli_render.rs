//! `avb-policy render`: the shipped JSON and Istio files stay current, and the
//! Envoy block passes `envoy --mode validate` in a full bootstrap (which loads
//! the real plugin and runs its `on_configure` on the embedded policy).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use avb_edge::policy::RawPolicy;

const SHIPPED: &str = "envoy/policies/agentvoicebox.yaml";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn avb_policy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_avb-policy"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn render(args: &[&str]) -> String {
    let output = avb_policy(args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("avb-render-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap()
}

fn dev_env() -> Vec<(String, String)> {
    read("envoy/dev.env")
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn shipped_json_policy_is_the_rendered_yaml() {
    let rendered = render(&["render", SHIPPED, "--for", "json"]);
    assert_eq!(
        rendered,
        read("envoy/policies/agentvoicebox.json"),
        "run: avb-policy render {SHIPPED} --for json > envoy/policies/agentvoicebox.json"
    );
    let from_yaml: RawPolicy = serde_yaml::from_str(&read(SHIPPED)).unwrap();
    let from_json: RawPolicy = serde_json::from_str(&rendered).unwrap();
    assert_eq!(from_yaml, from_json);
}

#[test]
fn shipped_istio_manifest_is_current() {
    let rendered = render(&["render", SHIPPED, "--for", "istio"]);
    assert_eq!(
        rendered,
        read("envoy/istio/agentvoicebox.yaml"),
        "run: avb-policy render {SHIPPED} --for istio > envoy/istio/agentvoicebox.yaml"
    );
}

/// The shipped policy without its webhook rule and webhooks section.
fn policy_without_webhooks(dir: &TempDir) -> String {
    let mut raw: RawPolicy = serde_yaml::from_str(&read(SHIPPED)).unwrap();
    raw.webhooks.clear();
    raw.rules.retain(|rule| rule.webhook.is_none());
    dir.write(
        "no-webhooks.json",
        &serde_json::to_string_pretty(&raw).unwrap(),
    )
}

#[test]
fn istio_wasm_plugin_is_fail_closed_authz_with_the_policy_and_host_env() {
    let dir = TempDir::new("istio-plain");
    let policy = policy_without_webhooks(&dir);
    let manifest: serde_yaml::Value =
        serde_yaml::from_str(&render(&["render", &policy, "--for", "istio"])).unwrap();
    assert_eq!(manifest["kind"], "WasmPlugin");
    assert_eq!(manifest["apiVersion"], "extensions.istio.io/v1alpha1");
    let spec = &manifest["spec"];
    assert_eq!(spec["phase"], "AUTHZ");
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    let embedded: RawPolicy = serde_yaml::from_value(spec["pluginConfig"].clone()).unwrap();
    let expected: RawPolicy =
        serde_json::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    assert_eq!(embedded, expected);
    let env = spec["vmConfig"]["env"].as_sequence().unwrap();
    assert!(env
        .iter()
        .any(|entry| entry["name"] == "AVB_JWT_HS_KEY" && entry["valueFrom"] == "HOST"));
}

fn webhook_policy(dir: &TempDir) -> String {
    let mut raw: RawPolicy = serde_yaml::from_str(&read(SHIPPED)).unwrap();
    raw.webhooks.clear();
    raw.rules.retain(|rule| rule.webhook.is_none());
    let mut policy = serde_json::to_value(&raw).unwrap();
    policy["webhooks"] = serde_json::json!({"lago": {"provider": "lago", "algorithms": ["hmac"],
        "hmac_keys": [{"id": "k1", "secret_env": "LAGO_HMAC_KEY"}]}});
    policy["rules"].as_array_mut().unwrap().push(serde_json::json!(
        {"name": "lago.webhook", "methods": ["POST"], "path": "/webhooks/lago", "webhook": "lago"}));
    dir.write(
        "webhooks.json",
        &serde_json::to_string_pretty(&policy).unwrap(),
    )
}

#[test]
fn istio_with_webhooks_uses_an_envoy_filter_that_allows_stop_iteration() {
    let dir = TempDir::new("istio-webhooks");
    let policy = webhook_policy(&dir);
    let text = render(&[
        "render",
        &policy,
        "--for",
        "istio",
        "--wasm-url",
        "oci://example/avb:1",
    ]);
    let manifest: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(manifest["kind"], "EnvoyFilter");
    let patches = manifest["spec"]["configPatches"].as_sequence().unwrap();
    let config = &patches[0]["patch"]["value"]["typed_config"]["config"];
    assert_eq!(config["allow_on_headers_stop_iteration"], true);
    assert_eq!(config["failure_policy"], "FAIL_CLOSED");
    assert_eq!(
        config["vm_config"]["code"]["remote"]["http_uri"]["uri"],
        "oci://example/avb:1"
    );
    let keys = config["vm_config"]["environment_variables"]["host_env_keys"]
        .as_sequence()
        .unwrap();
    assert!(keys.contains(&serde_yaml::Value::from("LAGO_HMAC_KEY")));
    assert_eq!(patches[1]["patch"]["operation"], "INSERT_BEFORE");
}

#[test]
fn envoy_render_refuses_remote_urls_and_broken_policies() {
    let output = avb_policy(&[
        "render",
        SHIPPED,
        "--for",
        "envoy",
        "--wasm-url",
        "https://example/avb.wasm",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let dir = TempDir::new("render-bad");
    let bad = dir.write("bad.yaml", "rules: [{name: a, path: /a}]\n");
    let output = avb_policy(&["render", &bad, "--for", "envoy"]);
    assert_eq!(output.status.code(), Some(1));
    let output = avb_policy(&["render", SHIPPED, "--for", "nginx"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn env_file_values_are_inlined_as_key_values() {
    let text = render(&[
        "render",
        SHIPPED,
        "--for",
        "envoy",
        "--env-file",
        "envoy/dev.env",
    ]);
    assert!(text.contains("LOCAL ONLY"));
    let block: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let variables = &block["typed_config"]["config"]["vm_config"]["environment_variables"];
    let expected = dev_env()
        .into_iter()
        .find(|(name, _)| name == "AVB_JWT_HS_KEY")
        .unwrap()
        .1;
    assert_eq!(variables["key_values"]["AVB_JWT_HS_KEY"], expected.as_str());
}

// ---------------------------------------------------------------- envoy --mode validate

fn envoy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("AVB_ENVOY") {
        return PathBuf::from(path);
    }
    let output = Command::new(root().join("scripts/envoy.sh"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/envoy.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn wasm_path() -> PathBuf {
    let path = std::env::var_os("AVB_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("dist/avb_edge.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `make plugin` first (envoy --mode validate loads the module)",
        path.display()
    );
    path
}

/// A minimal bootstrap: one listener whose HTTP filters are the rendered
/// block followed by the router.
fn bootstrap(filter_block: &str) -> String {
    let filter: serde_yaml::Value = serde_yaml::from_str(filter_block).unwrap();
    let router: serde_yaml::Value = serde_yaml::from_str(
        "name: envoy.filters.http.router\ntyped_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}",
    )
    .unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(
        r#"
static_resources:
  listeners:
    - name: avb_render_check
      address: {socket_address: {address: 127.0.0.1, port_value: 10999}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: render_check
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes: [{match: {prefix: /}, direct_response: {status: 200}}]
                http_filters: []
"#,
    )
    .unwrap();
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"] = serde_yaml::Value::Sequence(vec![filter, router]);
    serde_yaml::to_string(&config).unwrap()
}

fn validate(config_path: &str, env: &[(String, String)]) -> Output {
    Command::new(envoy_binary())
        .args(["--mode", "validate", "-c", config_path, "-l", "error"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap()
}

#[test]
fn rendered_envoy_block_passes_envoy_validate_with_the_real_plugin() {
    let wasm = wasm_path();
    let dir = TempDir::new("validate");
    let block = render(&[
        "render",
        SHIPPED,
        "--for",
        "envoy",
        "--wasm-url",
        &wasm.display().to_string(),
    ]);
    let block_value: serde_yaml::Value = serde_yaml::from_str(&block).unwrap();
    let config = &block_value["typed_config"]["config"];
    assert_eq!(config["failure_policy"], "FAIL_CLOSED");
    assert_eq!(config["allow_on_headers_stop_iteration"], true);
    assert_eq!(config["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
    assert_eq!(config["vm_config"]["vm_id"], "avb_edge");
    let path = dir.write("bootstrap.yaml", &bootstrap(&block));

    let output = validate(&path, &dev_env());
    assert!(
        output.status.success(),
        "envoy --mode validate refused the rendered block:\n{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    // The plugin really ran on_configure: without its secret, the fail-closed
    // plugin refuses and Envoy refuses the config.
    let output = validate(&path, &[]);
    assert!(
        !output.status.success(),
        "validate passed without AVB_JWT_HS_KEY"
    );
}

#[test]
fn rendered_envoy_block_with_inlined_env_passes_envoy_validate() {
    let wasm = wasm_path();
    let dir = TempDir::new("validate-inline");
    let block = render(&[
        "render",
        SHIPPED,
        "--for",
        "envoy",
        "--wasm-url",
        &format!("file://{}", wasm.display()),
        "--env-file",
        "envoy/dev.env",
    ]);
    let path = dir.write("bootstrap.yaml", &bootstrap(&block));
    let output = validate(&path, &[]);
    assert!(
        output.status.success(),
        "envoy --mode validate refused the rendered block:\n{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
}
