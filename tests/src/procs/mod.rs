//! Real processes started by tests on free loopback ports.
//!
//! Every process a test starts is wrapped in a [`ChildGuard`]: it runs in its
//! own process group, writes stdout and stderr to a log file that outlives a
//! failed startup, and is stopped (with everything it forked) when the guard
//! is dropped. When a test panics while a guard is alive, the tail of that
//! log is printed, so a failing end-to-end test shows what the server said.

pub mod companion;
pub mod envoy;
pub mod postgres;
pub mod redis;

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How many lines of a process log are shown when something goes wrong.
const LOG_TAIL_LINES: usize = 60;

/// A TCP port on 127.0.0.1 that was free a moment ago and that this test
/// process has not handed out before.
///
/// The OS picks the port (bind to port 0); a process-wide set keeps two tests
/// running in parallel from receiving the same port between the moment it is
/// picked and the moment a server binds it.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let port = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or(0);
        if port == 0 {
            continue;
        }
        let mut set = handed_out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if set.insert(port) {
            return port;
        }
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing accepted connections on 127.0.0.1:{port} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The root of the cargo workspace (the directory holding `Cargo.toml`,
/// `envoy/` and `dist/`).
pub fn workspace_root() -> PathBuf {
    let tests_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_crate
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| tests_crate.to_path_buf())
}

/// The built filter: `$AVB_WASM` if set, else `<root>/dist/avb_edge.wasm`.
pub fn wasm_path() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("AVB_WASM") {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join("dist").join("avb_edge.wasm"),
    };
    if !path.is_file() {
        bail!(
            "the filter is not built: {} does not exist (run `make plugin`, or set AVB_WASM)",
            path.display()
        );
    }
    Ok(path)
}

/// A private, empty temporary directory, removed on drop.
pub fn temp_dir(purpose: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("avb-{purpose}-"))
        .tempdir()
        .with_context(|| format!("creating a temporary directory for {purpose}"))
}

/// A child process that is stopped, with every process it started, on drop.
///
/// stdout and stderr go to one log file; [`ChildGuard::logs`] reads it, and the
/// tail is printed if the guard is dropped during a panic (a failing test).
pub struct ChildGuard {
    name: String,
    child: Child,
    log_path: PathBuf,
    // Keeps the log file alive for as long as the process runs.
    _log_dir: tempfile::TempDir,
}

impl ChildGuard {
    /// Starts `command` in a process group of its own, with stdin closed and
    /// stdout/stderr captured to a log file. `name` labels the logs.
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Self> {
        let log_dir = temp_dir(&format!("{name}-log"))?;
        let log_path = log_dir.path().join(format!("{name}.log"));
        let log = File::create(&log_path)
            .with_context(|| format!("creating log file {}", log_path.display()))?;
        let log_for_stderr = log.try_clone().context("duplicating the log file handle")?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_for_stderr))
            .process_group(0);
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({program})"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log_path,
            _log_dir: log_dir,
        })
    }

    /// The operating-system process id (also the id of its process group).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where stdout and stderr of the process are written.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            let _ = file.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let logs = self.logs();
        let all: Vec<&str> = logs.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `Ok(None)` while running, `Ok(Some(status))` once it has exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("checking whether {} is running", self.name))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// An error for a failed startup that carries the tail of the log, so the
    /// reason is visible in the test output.
    pub fn startup_error(&self, what: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "{} failed to start: {what}\n--- last lines of {} ---\n{}\n---",
            self.name,
            self.log_path.display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }

    /// Waits for the process to exit on its own, at most `timeout`.
    pub fn wait_timeout(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the process group: SIGTERM, a short grace period, then SIGKILL.
    pub fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        if self.is_running() {
            signal_group("TERM", &group);
            if !matches!(self.wait_timeout(Duration::from_secs(3)), Ok(Some(_))) {
                let _ = self.child.kill();
            }
        }
        // Whatever the leader left behind in its group goes too.
        signal_group("KILL", &group);
        let _ = self.child.wait();
    }
}

/// Sends a signal to a process group with the `kill` utility (the workspace
/// forbids `unsafe`, which a direct libc call would need).
fn signal_group(signal: &str, group: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}").as_str(), "--", group])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} ({}) ---\n{}\n---",
                self.name,
                self.log_path.display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_never_hands_out_the_same_port_twice() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn wait_for_port_fails_when_nothing_listens() {
        let port = free_port();
        let err = wait_for_port(port, Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains(&port.to_string()));
    }

    #[test]
    fn wait_for_port_succeeds_once_a_listener_exists() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        wait_for_port(port, Duration::from_secs(2)).unwrap();
    }

    #[test]
    fn wasm_path_names_make_plugin_when_missing() {
        // Only meaningful when AVB_WASM is not pointing at a real file.
        if std::env::var_os("AVB_WASM").is_none()
            && !workspace_root().join("dist/avb_edge.wasm").exists()
        {
            let err = wasm_path().unwrap_err();
            assert!(err.to_string().contains("make plugin"));
        }
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("envoy").is_dir());
    }

    #[test]
    fn child_guard_captures_output_and_kills_the_whole_group() {
        // The shell starts a grandchild that would outlive a plain kill of the
        // shell; the group kill must take it too.
        let pid_dir = temp_dir("guard-test").unwrap();
        let pid_file = pid_dir.path().join("grandchild.pid");
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo started; sleep 300 & echo $! > \"$0\"; wait",
            pid_file.to_str().unwrap(),
        ]);
        let mut guard = ChildGuard::spawn("sleeper", command).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pid_file.exists()
            || std::fs::read_to_string(&pid_file)
                .unwrap()
                .trim()
                .is_empty()
        {
            assert!(Instant::now() < deadline, "grandchild never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let grandchild = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_owned();
        assert!(guard.is_running());
        assert!(guard.logs().contains("started"));
        guard.stop();
        assert!(!guard.is_running());
        let alive = Path::new("/proc").join(&grandchild).exists()
            && !std::fs::read_to_string(Path::new("/proc").join(&grandchild).join("stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "grandchild {grandchild} survived the guard");
    }

    #[test]
    fn startup_error_includes_the_log_tail() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo 'port already in use' >&2; exit 3"]);
        let mut guard = ChildGuard::spawn("failing", command).unwrap();
        let status = guard.wait_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(3));
        let err = guard.startup_error("exited early");
        assert!(err.to_string().contains("port already in use"));
    }
}
