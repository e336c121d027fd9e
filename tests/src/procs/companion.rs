//! The real `avb-companion` binary, started by a test on a free port.
//!
//! The binary is built once per test process (`cargo build -p avb-companion`,
//! a no-op when it is fresh) next to the running test binary, so the tests
//! always run the code in the tree.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{free_port, wait_for_port, workspace_root, ChildGuard};
use crate::http::{RawRequest, Response};

/// How long a starting companion may take to listen.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The ingest token tests give the companion (never a real secret).
pub const TEST_INGEST_TOKEN: &str = "test-ingest-token-for-companion-tests";

/// Path of the `avb-companion` binary of this build, built on first use.
pub fn companion_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_companion().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build_companion() -> anyhow::Result<PathBuf> {
    // target/<profile>/deps/<test binary> -> target/<profile>/avb-companion
    let exe = std::env::current_exe().context("locating the test binary")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary is not under target/<profile>/deps")?;
    let target_dir = profile_dir.parent().context("no target directory")?;
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cargo
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "avb-companion",
            "--bin",
            "avb-companion",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        cargo.arg("--release");
    }
    let status = cargo
        .status()
        .context("running cargo build -p avb-companion")?;
    if !status.success() {
        bail!("cargo build -p avb-companion failed ({status})");
    }
    let binary = profile_dir.join("avb-companion");
    if !binary.is_file() {
        bail!("{} was not built", binary.display());
    }
    Ok(binary)
}

/// Runs the binary with `args` (and extra environment) to completion.
pub fn run_companion(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<CommandOutput> {
    let mut command = Command::new(companion_binary()?);
    command
        .args(args)
        .env_remove("AVB_DATABASE_URL")
        .env_remove("AVB_POLICY")
        .env_remove("AVB_REDIS_URL")
        .env_remove("AVB_INGEST_TOKEN")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().context("running avb-companion")?;
    Ok(CommandOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// What a finished command printed.
#[derive(Debug)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// How to start `avb-companion serve`.
#[derive(Debug, Clone)]
pub struct CompanionConfig {
    pub database_url: String,
    pub ingest_token: String,
    /// `None` starts with `--no-policy`.
    pub policy: Option<PathBuf>,
    pub redis_url: Option<String>,
    /// Extra environment (e.g. the policy's `*_env` secrets).
    pub env: Vec<(String, String)>,
}

impl CompanionConfig {
    /// A companion on `database_url` with the test token and no policy.
    pub fn new(database_url: &str) -> Self {
        Self {
            database_url: database_url.to_owned(),
            ingest_token: TEST_INGEST_TOKEN.to_owned(),
            policy: None,
            redis_url: None,
            env: Vec::new(),
        }
    }
}

/// A running `avb-companion serve`; stopped on drop.
pub struct CompanionServer {
    port: u16,
    config: CompanionConfig,
    guard: ChildGuard,
}

impl CompanionServer {
    /// Starts the companion on a free port and waits until it listens.
    pub fn start(config: &CompanionConfig) -> anyhow::Result<Self> {
        Self::start_on(config, free_port())
    }

    /// Starts the companion on `port` (e.g. again after a crash).
    pub fn start_on(config: &CompanionConfig, port: u16) -> anyhow::Result<Self> {
        let mut command = Command::new(companion_binary()?);
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database", &config.database_url])
            .env_remove("AVB_POLICY")
            .env_remove("AVB_REDIS_URL")
            .env_remove("AVB_DATABASE_URL")
            // Extra environment first, so the explicit settings below win.
            .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AVB_INGEST_TOKEN", &config.ingest_token)
            .env("RUST_LOG", "info");
        match &config.policy {
            Some(policy) => {
                command.arg("--policy").arg(policy);
            }
            None => {
                command.arg("--no-policy");
            }
        }
        if let Some(redis) = &config.redis_url {
            command.args(["--redis", redis]);
        }
        let mut guard = ChildGuard::spawn("avb-companion", command)?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = guard.try_wait()? {
                return Err(guard.startup_error(format!("it exited ({status})")));
            }
            if wait_for_port(port, Duration::from_millis(100)).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(guard.startup_error(format!(
                    "nothing listened on 127.0.0.1:{port} within {STARTUP_TIMEOUT:?}"
                )));
            }
        }
        Ok(Self {
            port,
            config: config.clone(),
            guard,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn config(&self) -> &CompanionConfig {
        &self.config
    }

    /// What the companion logged so far.
    pub fn logs(&self) -> String {
        self.guard.logs()
    }

    /// SIGKILL: no shutdown, no flush, like a power cut of the process.
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.guard.pid().to_string()])
            .status();
        let _ = self.guard.wait_timeout(Duration::from_secs(10));
        self.guard.stop();
    }

    /// SIGTERM and wait for a graceful exit; the exit status.
    pub fn terminate(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.guard.pid().to_string()])
            .status();
        let status = self.guard.wait_timeout(Duration::from_secs(15))?;
        self.guard.stop();
        Ok(status)
    }

    /// `POST /v1/audit/events` with the configured token.
    pub fn post_events(&self, events: &[serde_json::Value]) -> anyhow::Result<Response> {
        let body = serde_json::json!({ "events": events }).to_string();
        RawRequest::post("/v1/audit/events", body)
            .header("content-type", "application/json")
            .bearer(&self.config.ingest_token)
            .send(self.port)
    }

    /// `GET target` with an optional bearer token.
    pub fn get(&self, target: &str, bearer: Option<&str>) -> anyhow::Result<Response> {
        let mut request = RawRequest::get(target);
        if let Some(token) = bearer {
            request = request.bearer(token);
        }
        request.send(self.port)
    }
}
