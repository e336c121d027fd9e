//! Private `redis-server` instances and a local three-primary Redis Cluster for
//! one test, on free loopback ports, with helpers to load and list keys.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::{free_port, temp_dir, wait_for_port, ChildGuard};

/// How long a server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Generous limits for test connections (loads of 10,000-key pipelines).
fn test_connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(60)))
}

/// One private `redis-server` (no persistence), stopped on drop.
pub struct RedisServer {
    port: u16,
    guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// A standalone server on a free port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(free_port(), &[])
    }

    /// A server with `--cluster-enabled yes`, not yet part of a cluster.
    fn start_cluster_node() -> anyhow::Result<Self> {
        Self::start_on(
            free_cluster_port(),
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ],
        )
    }

    /// A standalone server on a given port (e.g. to restart one on the port
    /// a client was already given).
    pub fn start_on_port(port: u16) -> anyhow::Result<Self> {
        Self::start_on(port, &[])
    }

    fn start_on(port: u16, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = temp_dir("redis")?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .args(["--logfile", ""])
            .arg("--dir")
            .arg(dir.path())
            .args(extra);
        let mut guard = ChildGuard::spawn(&format!("redis-{port}"), command)?;
        if let Err(err) = wait_for_port(port, STARTUP_TIMEOUT) {
            return Err(guard.startup_error(err));
        }
        if !guard.is_running() {
            return Err(guard.startup_error("exited right after starting"));
        }
        Ok(Self {
            port,
            guard,
            _dir: dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server now (it is also stopped on drop).
    pub fn stop(&mut self) {
        self.guard.stop();
    }

    /// What the server logged so far.
    pub fn logs(&self) -> String {
        self.guard.logs()
    }

    /// A fresh connection with generous timeouts.
    pub async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection_with_config(&test_connection_config())
            .await
            .with_context(|| format!("connecting to redis on port {}", self.port))
    }

    /// One `field:value` line of `INFO section`.
    pub async fn info_field(&self, section: &str, field: &str) -> anyhow::Result<String> {
        let mut connection = self.connection().await?;
        info_field(&mut connection, section, field).await
    }
}

/// One `field:value` line of `INFO section` on `connection`.
pub async fn info_field(
    connection: &mut MultiplexedConnection,
    section: &str,
    field: &str,
) -> anyhow::Result<String> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(connection)
        .await?;
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.trim().to_owned())
        .with_context(|| format!("INFO {section} has no {field}"))
}

/// A port whose cluster bus port (+10000) is free and valid too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        let bus_free = port <= u16::MAX - 10_000
            && TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port + 10_000)).is_ok();
        if bus_free {
            return port;
        }
    }
}

/// A local Redis Cluster of primaries only, made with
/// `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `primaries` cluster-enabled servers, joins them and waits until
    /// every node reports `cluster_state:ok` and knows all the others.
    pub async fn start(primaries: usize) -> anyhow::Result<Self> {
        let nodes = (0..primaries)
            .map(|_| RedisServer::start_cluster_node())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(
                nodes
                    .iter()
                    .map(|node| format!("127.0.0.1:{}", node.port())),
            )
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .context("running redis-cli --cluster create")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let cluster = Self { nodes };
        cluster.wait_until_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    async fn wait_until_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let expected = self.nodes.len().to_string();
        loop {
            let mut ready = true;
            for node in &self.nodes {
                let state = node.info_cluster_field("cluster_state").await?;
                let known = node.info_cluster_field("cluster_known_nodes").await?;
                let assigned = node.info_cluster_field("cluster_slots_ok").await?;
                ready &= state == "ok" && known == expected && assigned == "16384";
            }
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the cluster did not become ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Stops node `index` (its slots become unreachable).
    pub fn stop_node(&mut self, index: usize) {
        self.nodes[index].stop();
    }

    /// The URL of the first node (any node works as a seed).
    pub fn seed_url(&self) -> String {
        self.nodes[0].url()
    }

    /// A cluster-aware connection (routes each single-key command).
    pub async fn cluster_connection(
        &self,
    ) -> anyhow::Result<redis::cluster_async::ClusterConnection> {
        let client = redis::cluster::ClusterClientBuilder::new(
            self.nodes.iter().map(RedisServer::url).collect::<Vec<_>>(),
        )
        .connection_timeout(Duration::from_secs(10))
        .response_timeout(Duration::from_secs(60))
        .build()?;
        Ok(client.get_async_connection().await?)
    }

    /// Writes `keys` (value "v") through cluster routing, many commands in
    /// flight at once; the test does not rely on its own slot arithmetic.
    pub async fn load_keys(&self, keys: Vec<String>) -> anyhow::Result<()> {
        let connection = self.cluster_connection().await?;
        let writers = 32;
        let chunk = keys.len().div_ceil(writers).max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for part in keys.chunks(chunk) {
            let part = part.to_vec();
            let mut connection = connection.clone();
            tasks.spawn(async move {
                for key in part {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg("v")
                        .query_async::<()>(&mut connection)
                        .await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(result) = tasks.join_next().await {
            result??;
        }
        Ok(())
    }

    /// Every key on every node, sorted.
    pub async fn all_keys(&self) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        for node in &self.nodes {
            keys.extend(all_keys(&mut node.connection().await?).await?);
        }
        keys.sort();
        Ok(keys)
    }
}

impl RedisServer {
    async fn info_cluster_field(&self, field: &str) -> anyhow::Result<String> {
        let mut connection = self.connection().await?;
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut connection)
            .await?;
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .map(|value| value.trim().to_owned())
            .with_context(|| format!("CLUSTER INFO has no {field}"))
    }
}

/// Writes `keys` (value "v") with pipelines of 10,000 SETs.
pub async fn load_keys<I>(connection: &mut MultiplexedConnection, keys: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = String>,
{
    let mut keys = keys.into_iter().peekable();
    while keys.peek().is_some() {
        let mut pipeline = redis::pipe();
        for key in keys.by_ref().take(10_000) {
            pipeline.cmd("SET").arg(key).arg("v").ignore();
        }
        pipeline.query_async::<()>(connection).await?;
    }
    Ok(())
}

/// Every key of the connection's database, sorted (SCAN without MATCH).
pub async fn all_keys(connection: &mut MultiplexedConnection) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(10_000)
            .query_async(connection)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// `DBSIZE` of the connection's database.
pub async fn db_size(connection: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    Ok(redis::cmd("DBSIZE").query_async(connection).await?)
}
