//! A real Envoy started by a test, and the configuration shape of the local
//! stack rendered with free ports.
//!
//! The binary is `$AVB_ENVOY` (set by the Makefile) or whatever
//! `scripts/envoy.sh` prints (it installs Envoy 1.40 if needed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::{free_port, temp_dir, workspace_root, ChildGuard};
use crate::http::RawRequest;

/// Envoy with V8 compiling the filter can take a while on a busy 2-core box.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// The Envoy binary to run: `$AVB_ENVOY`, else the path `scripts/envoy.sh`
/// prints (installing Envoy 1.40 on first use).
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| locate_envoy().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate_envoy() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("AVB_ENVOY").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("AVB_ENVOY={} is not a file", path.display());
        }
        return Ok(path);
    }
    let script = workspace_root().join("scripts").join("envoy.sh");
    let output = Command::new(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !path.is_file() {
        bail!(
            "{} printed {:?}, which is not a file",
            script.display(),
            path
        );
    }
    Ok(path)
}

/// A base id no other Envoy of this test run uses (shared-memory and socket
/// names derive from it).
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 40_000) * 100 + NEXT.fetch_add(1, Ordering::Relaxed) % 100
}

/// How to run Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    pub concurrency: u32,
    /// `-l` level; `warning` keeps the logs to problems.
    pub log_level: String,
    /// `--component-log-level`, e.g. `wasm:info` to see the filter's logs.
    pub component_log_level: Option<String>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self {
            concurrency: 1,
            log_level: "warning".to_owned(),
            component_log_level: Some("wasm:info".to_owned()),
        }
    }
}

/// A running Envoy, stopped on drop.
pub struct Envoy {
    process: ChildGuard,
    admin_port: u16,
    listener_ports: BTreeMap<String, u16>,
    // The configuration file lives here for as long as Envoy runs.
    _config_dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy on `config_yaml` with default options and waits until the
    /// admin endpoint reports `LIVE`.
    pub fn start(config_yaml: &str) -> anyhow::Result<Self> {
        Self::start_with(config_yaml, &EnvoyOptions::default())
    }

    /// Like [`Envoy::start`] with explicit options. The working directory is
    /// the workspace root, so relative paths such as `dist/avb_edge.wasm`
    /// resolve as they do under `make run`.
    pub fn start_with(config_yaml: &str, options: &EnvoyOptions) -> anyhow::Result<Self> {
        let (admin_port, listener_ports) = ports_of(config_yaml)?;
        let config_dir = temp_dir("envoy")?;
        let config_path = config_dir.path().join("envoy.yaml");
        std::fs::write(&config_path, config_yaml)
            .with_context(|| format!("writing {}", config_path.display()))?;

        let mut command = Command::new(envoy_binary()?);
        command
            .current_dir(workspace_root())
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &options.concurrency.to_string()])
            .args(["--base-id", &unique_base_id().to_string()])
            .args(["-l", &options.log_level])
            .arg("--disable-hot-restart");
        if let Some(levels) = &options.component_log_level {
            command.args(["--component-log-level", levels]);
        }
        let mut process = ChildGuard::spawn("envoy", command)?;

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = process.try_wait()? {
                return Err(process.startup_error(format!("envoy exited with {status}")));
            }
            if admin_says_live(admin_port) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(process.startup_error(format!(
                    "admin /ready on port {admin_port} did not say LIVE within {STARTUP_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            process,
            admin_port,
            listener_ports,
            _config_dir: config_dir,
        })
    }

    /// Runs `envoy --mode validate -c config_path` from the workspace root.
    pub fn validate(config_path: &Path) -> anyhow::Result<()> {
        let output = Command::new(envoy_binary()?)
            .current_dir(workspace_root())
            .args(["--mode", "validate", "-l", "warning", "-c"])
            .arg(config_path)
            .output()
            .with_context(|| {
                format!("running envoy --mode validate on {}", config_path.display())
            })?;
        if !output.status.success() {
            bail!(
                "envoy rejected {} ({}):\n{}{}",
                config_path.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// The port of the listener called `name`.
    pub fn port(&self, name: &str) -> anyhow::Result<u16> {
        self.listener_ports
            .get(name)
            .copied()
            .with_context(|| format!("no listener named {name:?} in the Envoy config"))
    }

    /// The port of the first (usually only) listener.
    pub fn listener_port(&self) -> anyhow::Result<u16> {
        self.listener_ports
            .values()
            .next()
            .copied()
            .context("the Envoy config has no listener")
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The Envoy process id (e.g. to read `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Every counter and gauge from the admin `/stats` endpoint.
    pub fn stats(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let response = RawRequest::get("/stats")
            .send(self.admin_port)
            .context("reading Envoy's /stats")?;
        if response.status != 200 {
            bail!("envoy /stats answered {}", response.status);
        }
        Ok(parse_text_stats(&response.text()))
    }

    /// The value of one stat, `None` when Envoy does not have it.
    pub fn stat(&self, name: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.stats()?.get(name).copied())
    }

    /// Everything Envoy wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

/// Whether Envoy failed because a port was already taken.
fn is_port_clash(err: &anyhow::Error) -> bool {
    let message = format!("{err:#}");
    message.contains("Address already in use") || message.contains("cannot bind")
}

/// `name: value` lines of Envoy's text stats; histograms (non-integer
/// values) are skipped.
fn parse_text_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(": ")?;
            Some((name.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn admin_says_live(admin_port: u16) -> bool {
    RawRequest::get("/ready")
        .send(admin_port)
        .is_ok_and(|response| response.status == 200 && response.text().trim() == "LIVE")
}

/// The admin port and the port of each named listener of a config.
fn ports_of(config_yaml: &str) -> anyhow::Result<(u16, BTreeMap<String, u16>)> {
    let config: Value =
        serde_yaml::from_str(config_yaml).context("the Envoy config is not valid YAML")?;
    let port_of = |address: &Value| {
        address["socket_address"]["port_value"]
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
    };
    let admin_port = port_of(&config["admin"]["address"])
        .context("the Envoy config has no admin socket_address port_value")?;
    let mut listeners = BTreeMap::new();
    for listener in config["static_resources"]["listeners"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = listener["name"].as_str().unwrap_or_default().to_owned();
        let port = port_of(&listener["address"])
            .with_context(|| format!("listener {name:?} has no socket_address port_value"))?;
        listeners.insert(name, port);
    }
    Ok((admin_port, listeners))
}

/// The shipped policy `envoy/policies/agentvoicebox.yaml` as the JSON string
/// the filter loads.
pub fn shipped_policy_json() -> anyhow::Result<String> {
    let path = workspace_root().join("envoy/policies/agentvoicebox.yaml");
    Ok(policy_yaml_as_json(&path)?.to_string())
}

/// A YAML policy file as a JSON value (the document the filter parses).
pub fn policy_yaml_as_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `envoy/dev.env`: the local-only secrets handed to the Wasm VM.
pub fn dev_env() -> anyhow::Result<BTreeMap<String, String>> {
    let path = workspace_root().join("envoy/dev.env");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_env_file(&text))
}

/// `KEY=value` lines; blank lines and `#` comments are skipped.
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// The local stack's Envoy configuration with ports of a test's choosing:
/// one listener, the Wasm filter (after any extra filters), the router; the
/// `echo` and `avb_companion` clusters.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    pub listener_port: u16,
    pub admin_port: u16,
    pub echo_port: u16,
    /// Where `/api/v1/audit/`, `/api/v1/tenants/` and the filter's audit
    /// shipping go. Without it those paths go to the echo upstream and the
    /// `avb_companion` cluster points at a port nobody listens on.
    pub companion_port: Option<u16>,
    pub wasm_path: PathBuf,
    /// The filter configuration (the policy as JSON).
    pub policy_json: String,
    /// Environment variables of the Wasm VM.
    pub vm_env: BTreeMap<String, String>,
    /// HTTP filters placed before the Wasm filter (e.g. jwt_authn).
    pub extra_http_filters: Vec<Value>,
    /// Envoy's own path normalisation options (on in the shipped config).
    pub normalisation: bool,
    /// `allow_on_headers_stop_iteration` of the Wasm plugin.
    pub allow_on_headers_stop_iteration: bool,
}

impl EnvoyConfig {
    /// Free ports for the listener and admin, the given echo port, the
    /// policy, and the VM environment of `envoy/dev.env` (if readable).
    pub fn new(wasm_path: PathBuf, policy_json: impl Into<String>, echo_port: u16) -> Self {
        Self {
            listener_port: free_port(),
            admin_port: free_port(),
            echo_port,
            companion_port: None,
            wasm_path,
            policy_json: policy_json.into(),
            vm_env: dev_env().unwrap_or_default(),
            extra_http_filters: Vec::new(),
            normalisation: true,
            allow_on_headers_stop_iteration: true,
        }
    }

    /// The shipped policy and the built filter, in front of `echo_port`.
    pub fn shipped(echo_port: u16) -> anyhow::Result<Self> {
        Ok(Self::new(
            super::wasm_path()?,
            shipped_policy_json()?,
            echo_port,
        ))
    }

    pub fn with_companion(mut self, port: u16) -> Self {
        self.companion_port = Some(port);
        self
    }

    pub fn with_vm_env(mut self, name: &str, value: &str) -> Self {
        self.vm_env.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn with_http_filter_before_wasm(mut self, filter: Value) -> Self {
        self.extra_http_filters.push(filter);
        self
    }

    pub fn with_normalisation(mut self, on: bool) -> Self {
        self.normalisation = on;
        self
    }

    /// The configuration as YAML.
    pub fn render(&self) -> String {
        let bootstrap = self.bootstrap();
        // Serialising a serde_json::Value to YAML cannot fail; fall back to
        // JSON (also valid YAML) rather than panic.
        serde_yaml::to_string(&bootstrap).unwrap_or_else(|_| bootstrap.to_string())
    }

    /// Renders and starts Envoy with default options. If a port picked by
    /// [`free_port`] was taken by someone else in the meantime, it retries
    /// with fresh listener and admin ports: read the ports from the returned
    /// [`Envoy`], not from this config.
    pub fn start(&self) -> anyhow::Result<Envoy> {
        self.start_with(&EnvoyOptions::default())
    }

    /// Like [`EnvoyConfig::start`] with explicit options.
    pub fn start_with(&self, options: &EnvoyOptions) -> anyhow::Result<Envoy> {
        const ATTEMPTS: usize = 3;
        let mut config = self.clone();
        let mut attempt = 1;
        loop {
            match Envoy::start_with(&config.render(), options) {
                Err(err) if attempt < ATTEMPTS && is_port_clash(&err) => {
                    config.listener_port = free_port();
                    config.admin_port = free_port();
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// The whole bootstrap: admin, the listener and the clusters.
    pub fn bootstrap(&self) -> Value {
        json!({
            "admin": {"address": loopback(self.admin_port)},
            "static_resources": {
                "listeners": [self.listener()],
                "clusters": self.clusters(),
            },
        })
    }

    /// The `echo` and `avb_companion` clusters (a JSON list).
    pub fn clusters(&self) -> Value {
        let companion_port = self.companion_port.unwrap_or_else(free_port);
        let address = |port: u16| json!({"endpoints": [{"lb_endpoints": [{"endpoint": {"address": loopback(port)}}]}]});
        let mut echo = json!({
            "name": "echo",
            "type": "STATIC",
            "connect_timeout": "2s",
            // Talk to the upstream in the client's protocol, so HTTP/2
            // trailers survive the hop.
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "use_downstream_protocol_config": {
                        "http_protocol_options": {},
                        "http2_protocol_options": {},
                    },
                },
            },
            "load_assignment": address(self.echo_port),
        });
        echo["load_assignment"]["cluster_name"] = json!("echo");
        let mut companion = json!({
            "name": "avb_companion",
            "type": "STATIC",
            "connect_timeout": "2s",
            "load_assignment": address(companion_port),
        });
        companion["load_assignment"]["cluster_name"] = json!("avb_companion");
        json!([echo, companion])
    }

    /// The listener `avb_ingress` (e.g. for a file-based LDS resource).
    pub fn listener(&self) -> Value {
        let companion_routes_to = if self.companion_port.is_some() {
            "avb_companion"
        } else {
            "echo"
        };

        let mut http_filters = self.extra_http_filters.clone();
        http_filters.push(json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "avb_edge",
                    "root_id": "avb_edge",
                    "failure_policy": "FAIL_CLOSED",
                    "allow_on_headers_stop_iteration": self.allow_on_headers_stop_iteration,
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": self.policy_json,
                    },
                    "vm_config": {
                        "vm_id": "avb_edge",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": self.wasm_path.to_string_lossy()}},
                        "environment_variables": {"key_values": self.vm_env},
                    },
                },
            },
        }));
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }));

        let mut connection_manager = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "ingress",
            "codec_type": "AUTO",
            "max_request_headers_kb": 1024,
            "route_config": {
                "name": "avb",
                "virtual_hosts": [{
                    "name": "avb",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/api/v1/audit/"}, "route": {"cluster": companion_routes_to}},
                        {"match": {"prefix": "/api/v1/tenants/"}, "route": {"cluster": companion_routes_to}},
                        {"match": {"prefix": "/"}, "route": {"cluster": "echo"}},
                    ],
                }],
            },
            "http_filters": http_filters,
        });
        if self.normalisation {
            if let Some(manager) = connection_manager.as_object_mut() {
                manager.insert("normalize_path".to_owned(), json!(true));
                manager.insert("merge_slashes".to_owned(), json!(true));
                manager.insert(
                    "path_with_escaped_slashes_action".to_owned(),
                    json!("REJECT_REQUEST"),
                );
                manager.insert(
                    "common_http_protocol_options".to_owned(),
                    json!({"headers_with_underscores_action": "REJECT_REQUEST"}),
                );
            }
        }

        json!({
            "name": "avb_ingress",
            "address": loopback(self.listener_port),
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": connection_manager,
            }]}],
        })
    }
}

/// A `socket_address` on 127.0.0.1.
fn loopback(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stats_keep_counters_and_skip_histograms() {
        let stats = parse_text_stats(
            "cluster.echo.upstream_rq_200: 3\nwasmcustom.avb.allowed: 7\n\
             http.ingress.downstream_rq_time: P0(nan,1) P25(nan,2)\n",
        );
        assert_eq!(stats.get("cluster.echo.upstream_rq_200"), Some(&3));
        assert_eq!(stats.get("wasmcustom.avb.allowed"), Some(&7));
        assert_eq!(stats.len(), 2);
    }

    #[test]
    fn env_file_skips_comments_and_blank_lines() {
        let env = parse_env_file("# local only\n\nA=1\nB = two=2\nnot a pair\n");
        assert_eq!(env.get("A").map(String::as_str), Some("1"));
        assert_eq!(env.get("B").map(String::as_str), Some("two=2"));
        assert_eq!(env.len(), 2);
    }

    #[test]
    fn rendered_config_names_its_ports_and_orders_filters() {
        let config = EnvoyConfig::new(PathBuf::from("/x.wasm"), "{}", 1234)
            .with_companion(4321)
            .with_http_filter_before_wasm(json!({"name": "first"}));
        let rendered = config.render();
        let (admin, listeners) = ports_of(&rendered).unwrap();
        assert_eq!(admin, config.admin_port);
        assert_eq!(listeners.get("avb_ingress"), Some(&config.listener_port));
        let value: Value = serde_yaml::from_str(&rendered).unwrap();
        let manager = &value["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let filters: Vec<&str> = manager["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|filter| filter["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            filters,
            vec![
                "first",
                "envoy.filters.http.wasm",
                "envoy.filters.http.router"
            ]
        );
        assert_eq!(manager["normalize_path"], true);
        assert_eq!(
            manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"],
            "avb_companion"
        );
    }

    #[test]
    fn normalisation_off_leaves_envoy_path_options_out() {
        let config = EnvoyConfig::new(PathBuf::from("/x.wasm"), "{}", 1).with_normalisation(false);
        let value: Value = serde_yaml::from_str(&config.render()).unwrap();
        let manager = &value["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        assert!(manager.get("normalize_path").is_none());
        assert!(manager.get("path_with_escaped_slashes_action").is_none());
    }

    #[test]
    fn clusters_point_at_the_echo_and_companion_ports() {
        let config = EnvoyConfig::new(PathBuf::from("/x.wasm"), "{}", 1111).with_companion(2222);
        let clusters = config.clusters();
        let port_of = |index: usize| {
            clusters[index]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                ["address"]["socket_address"]["port_value"]
                .as_u64()
        };
        assert_eq!(clusters[0]["name"], "echo");
        assert_eq!(port_of(0), Some(1111));
        assert_eq!(clusters[1]["name"], "avb_companion");
        assert_eq!(port_of(1), Some(2222));
        assert_eq!(config.listener()["name"], "avb_ingress");
    }

    #[test]
    fn ports_of_rejects_a_config_without_admin() {
        let err = ports_of("static_resources: {listeners: []}").unwrap_err();
        assert!(err.to_string().contains("admin"));
    }

    #[test]
    fn validate_rejects_a_broken_config() {
        let dir = temp_dir("validate-test").unwrap();
        let path = dir.path().join("broken.yaml");
        std::fs::write(
            &path,
            "static_resources: {listeners: [{name: x, unknown_field: 1}]}\n",
        )
        .unwrap();
        let err = Envoy::validate(&path).unwrap_err();
        assert!(err.to_string().contains("rejected"), "{err:#}");
    }

    #[test]
    fn start_reports_envoy_logs_when_envoy_exits() {
        let port = free_port();
        let admin = free_port();
        let config = format!(
            "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}\n\
             static_resources:\n  clusters: [{{name: c, type: STATIC, no_such_field: true}}]\n  \
             listeners: [{{name: l, address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}]\n"
        );
        let err = match Envoy::start(&config) {
            Ok(_) => panic!("envoy accepted a config with an unknown field"),
            Err(err) => err,
        };
        assert!(err.to_string().contains("no_such_field"), "{err:#}");
    }
}
