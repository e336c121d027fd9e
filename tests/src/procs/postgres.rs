//! A private PostgreSQL server started by a test on a free loopback port.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! server runs as the `postgres` user (`runuser`) in a temporary directory
//! handed to that user. `initdb` takes about a second, so a test binary that
//! needs many databases shares one server ([`PostgresServer::shared`]) and
//! creates a fresh database per test; tests that stop or restart the server
//! start their own ([`PostgresServer::start`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{free_port, temp_dir, ChildGuard};

/// How long a starting server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running PostgreSQL server; stopped (and its data removed) on drop.
pub struct PostgresServer {
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    sockets: PathBuf,
    as_root: bool,
    guard: ChildGuard,
    // Declared after `guard`: the data directory goes once the server is down.
    _dir: tempfile::TempDir,
}

impl PostgresServer {
    /// Initialises a new cluster and starts a server on a free port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_inner(None)
    }

    /// One server for the whole test binary, stopped and removed by a
    /// watchdog once the test process exits (statics are never dropped).
    pub fn shared() -> anyhow::Result<&'static PostgresServer> {
        static SHARED: OnceLock<Result<PostgresServer, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                Self::start_inner(Some(std::process::id())).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the shared postgres server did not start: {e}"))
    }

    fn start_inner(watch_parent: Option<u32>) -> anyhow::Result<Self> {
        let bin = postgres_bin_dir()?;
        let dir = temp_dir("postgres")?;
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        std::fs::create_dir(&sockets).context("creating the socket directory")?;
        let as_root = running_as_root();
        if as_root {
            run_checked(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path()),
                "chown of the postgres directory",
            )?;
        }
        let mut initdb = as_postgres_user(as_root, &bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run_checked(&mut initdb, "initdb")?;

        let port = free_port();
        let server = server_command(as_root, &bin, &data, &sockets, port);
        let command = match watch_parent {
            None => server,
            Some(parent) => watchdog(server, parent, dir.path()),
        };
        let guard = ChildGuard::spawn("postgres", command)?;
        if watch_parent.is_some() {
            // The watchdog removes the log directory too (read at exit).
            if let Some(log_dir) = guard.log_path().parent() {
                let _ = std::fs::write(
                    dir.path().join("log-dir"),
                    log_dir.to_string_lossy().as_bytes(),
                );
            }
        }
        let server = Self {
            port,
            bin,
            data,
            sockets,
            as_root,
            guard,
            _dir: dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Starts the server again on the same data and port after [`stop`](Self::stop).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let command = server_command(
            self.as_root,
            &self.bin,
            &self.data,
            &self.sockets,
            self.port,
        );
        self.guard = ChildGuard::spawn("postgres", command)?;
        self.wait_ready()
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.guard.startup_error("not ready within a minute"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database with a name unique in this process and returns its URL.
    pub async fn fresh_database(&self) -> anyhow::Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .context("connecting to the postgres database")?;
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
        drop(client);
        let _ = connection.await;
        Ok(self.url(&name))
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.guard.logs()
    }

    /// Stops the server (fast shutdown: open sessions are ended).
    pub fn stop(&mut self) {
        signal_group("INT", self.guard.pid());
        let _ = self.guard.wait_timeout(Duration::from_secs(10));
        self.guard.stop();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `postgres` on `port` with the test settings.
fn server_command(as_root: bool, bin: &Path, data: &Path, sockets: &Path, port: u16) -> Command {
    let mut server = as_postgres_user(as_root, &bin.join("postgres"));
    server
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(sockets)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            // Tests never crash the database server itself, so its own
            // durability is traded for speed.
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ]);
    server
}

/// The directory holding `initdb`, `postgres` and `pg_isready`: `$AVB_PG_BIN`,
/// else the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("AVB_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = entry.path().join("bin");
                    bin.join("postgres").is_file().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres; \
             run `make deps` or set AVB_PG_BIN)"
        ),
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `program` run as the `postgres` user when we are root, else as ourselves.
fn as_postgres_user(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Wraps `server` in a shell that stops it (and removes `dir`) once the
/// process `parent` has exited.
fn watchdog(server: Command, parent: u32, dir: &Path) -> Command {
    let mut line = shell_quote(&server.get_program().to_string_lossy());
    for arg in server.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(&arg.to_string_lossy()));
    }
    let script = format!(
        "trap '' INT; {line} & \
         while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
         kill -INT 0; sleep 3; rm -rf \"$(cat {dir}/log-dir 2>/dev/null)\" {dir}; kill -KILL 0",
        dir = shell_quote(&dir.to_string_lossy())
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script]);
    command
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn signal_group(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".to_owned(), format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn run_checked(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_started_server_accepts_queries_and_creates_databases() {
        let server = PostgresServer::start().unwrap();
        let url = server.fresh_database().await.unwrap();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let row = client.query_one("SELECT 40 + 2", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 42);
    }

    #[test]
    fn a_stopped_server_refuses_connections() {
        let mut server = PostgresServer::start().unwrap();
        let port = server.port();
        server.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}
