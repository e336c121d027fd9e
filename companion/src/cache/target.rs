//! Where the tenant keys live: one Redis, or every primary of a Redis Cluster.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, Value};

use super::slot::SLOT_COUNT;
use super::CacheError;

/// Explicit limits for every connection the invalidation opens.
///
/// redis-rs answers "timed out" after 500 ms by default, which a busy server
/// can exceed on a large pipeline; these are the values used instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection (TCP and handshake).
    pub connect: Duration,
    /// Waiting for the reply to one command or pipeline.
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(10),
        }
    }
}

/// A Redis deployment to clear keys from: a single server (any database
/// number in the URL) or a Redis Cluster, detected at connect time.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    seed: Node,
    cluster: bool,
    timeouts: Timeouts,
}

/// One Redis server the invalidation talks to directly.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) label: String,
    client: Client,
}

impl Node {
    fn new(client: Client) -> Self {
        Self {
            label: address_label(client.get_connection_info().addr()),
            client,
        }
    }

    /// Opens a fresh multiplexed connection with the target's timeouts.
    pub(crate) async fn connect(
        &self,
        timeouts: Timeouts,
    ) -> Result<MultiplexedConnection, redis::RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(Some(timeouts.response));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl RedisTarget {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]` or
    /// `unix:///path`) with the default [`Timeouts`], detects whether it is a
    /// cluster node and, if so, checks that every primary is reachable.
    pub async fn connect(url: &str) -> Result<Self, CacheError> {
        Self::connect_with(url, Timeouts::default()).await
    }

    /// [`RedisTarget::connect`] with explicit timeouts.
    pub async fn connect_with(url: &str, timeouts: Timeouts) -> Result<Self, CacheError> {
        let client = Client::open(url).map_err(|err| CacheError::InvalidUrl {
            reason: err.to_string(),
        })?;
        let seed = Node::new(client);
        let connect_error = |cause| CacheError::Connect {
            node: seed.label.clone(),
            cause,
        };
        let mut connection = seed.connect(timeouts).await.map_err(connect_error)?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut connection)
            .await
            .map_err(connect_error)?;
        let target = Self {
            cluster: cluster_enabled(&info),
            seed,
            timeouts,
        };
        if target.cluster {
            for node in target.primaries().await? {
                node.connect(timeouts)
                    .await
                    .map_err(|cause| CacheError::Connect {
                        node: node.label.clone(),
                        cause,
                    })?;
            }
        }
        Ok(target)
    }

    /// Whether the target is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// `host:port` of every node that will be scanned: the server itself, or
    /// each cluster primary as the cluster reports it right now.
    pub async fn primary_addresses(&self) -> Result<Vec<String>, CacheError> {
        Ok(self
            .primaries()
            .await?
            .into_iter()
            .map(|node| node.label)
            .collect())
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The nodes holding keys: the seed alone, or every primary that serves
    /// slots, discovered afresh (topology changes between runs are normal).
    pub(crate) async fn primaries(&self) -> Result<Vec<Node>, CacheError> {
        if !self.cluster {
            return Ok(vec![self.seed.clone()]);
        }
        let topology_error = |reason: String| CacheError::Topology {
            node: self.seed.label.clone(),
            reason,
        };
        let mut connection =
            self.seed
                .connect(self.timeouts)
                .await
                .map_err(|cause| CacheError::Connect {
                    node: self.seed.label.clone(),
                    cause,
                })?;
        let shards: Result<Value, _> = redis::cmd("CLUSTER")
            .arg("SHARDS")
            .query_async(&mut connection)
            .await;
        let primaries = match shards {
            Ok(value) => primaries_from_shards(&value),
            // Redis before 7.0 has no CLUSTER SHARDS; CLUSTER NODES says the same in text.
            Err(_) => {
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut connection)
                    .await
                    .map_err(|err| topology_error(err.to_string()))?;
                primaries_from_nodes(&nodes)
            }
        }
        .map_err(topology_error)?;
        let seed_info = self.seed.client.get_connection_info();
        if !matches!(seed_info.addr(), ConnectionAddr::Tcp(..)) {
            return Err(topology_error(
                "cluster nodes can only be reached over plain tcp by this tool".to_owned(),
            ));
        }
        primaries
            .into_iter()
            .map(|(host, port)| {
                let info = seed_info
                    .clone()
                    .set_addr(ConnectionAddr::Tcp(host, port))
                    .set_redis_settings(seed_info.redis_settings().clone().set_db(0));
                Client::open(info)
                    .map(Node::new)
                    .map_err(|err| topology_error(err.to_string()))
            })
            .collect()
    }
}

fn address_label(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
        ConnectionAddr::Unix(path) => path.display().to_string(),
        // `ConnectionAddr` is non-exhaustive; a future kind still gets a name.
        other => format!("{other:?}"),
    }
}

/// `INFO cluster` holds `cluster_enabled:1` on a cluster node.
fn cluster_enabled(info: &str) -> bool {
    info.lines().any(|line| line.trim() == "cluster_enabled:1")
}

/// The key/value pairs of a RESP3 map or of a RESP2 flat array.
fn pairs(value: &Value) -> Vec<(String, &Value)> {
    match value {
        Value::Map(entries) => entries
            .iter()
            .filter_map(|(key, value)| text(key).map(|key| (key, value)))
            .collect(),
        Value::Array(items) => items
            .chunks_exact(2)
            .filter_map(|pair| text(&pair[0]).map(|key| (key, &pair[1])))
            .collect(),
        _ => Vec::new(),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(number) => Some(*number),
        other => text(other).and_then(|text| text.parse().ok()),
    }
}

fn field<'a>(entries: &'a [(String, &'a Value)], name: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| *value)
}

/// Primaries from `CLUSTER SHARDS`: per shard that serves slots, its online
/// primary. Fails when any served slot has no online primary, because the
/// keys in it could not be deleted.
fn primaries_from_shards(value: &Value) -> Result<Vec<(String, u16)>, String> {
    let Value::Array(shards) = value else {
        return Err("CLUSTER SHARDS did not answer with a list".to_owned());
    };
    let mut primaries = BTreeSet::new();
    let mut covered: u32 = 0;
    for shard in shards {
        let entries = pairs(shard);
        let slot_bounds: Vec<i64> = match field(&entries, "slots") {
            Some(Value::Array(bounds)) => bounds.iter().filter_map(integer).collect(),
            _ => Vec::new(),
        };
        let served = slot_count(&slot_bounds);
        if served == 0 {
            continue;
        }
        let nodes = match field(&entries, "nodes") {
            Some(Value::Array(nodes)) => nodes,
            _ => return Err("a shard lists no nodes".to_owned()),
        };
        let primary = nodes.iter().map(pairs).find(|node| {
            field(node, "role").and_then(text).as_deref() == Some("master")
                && field(node, "health").and_then(text).as_deref() == Some("online")
        });
        let Some(primary) = primary else {
            return Err(format!(
                "{served} slots have no online primary; their keys cannot be cleared"
            ));
        };
        let host = ["endpoint", "ip"]
            .iter()
            .filter_map(|name| field(&primary, name).and_then(text))
            .find(|host| !host.is_empty() && host != "?")
            .ok_or("a primary has no usable address")?;
        let port = field(&primary, "port")
            .or_else(|| field(&primary, "tls-port"))
            .and_then(integer)
            .and_then(|port| u16::try_from(port).ok())
            .ok_or("a primary has no usable port")?;
        primaries.insert((host, port));
        covered += served;
    }
    check_coverage(covered)?;
    Ok(primaries.into_iter().collect())
}

/// Slots in `[start, end, start, end, …]` ranges.
fn slot_count(bounds: &[i64]) -> u32 {
    bounds
        .chunks_exact(2)
        .map(|range| u32::try_from(range[1] - range[0] + 1).unwrap_or(0))
        .sum()
}

fn check_coverage(covered: u32) -> Result<(), String> {
    if covered < u32::from(SLOT_COUNT) {
        return Err(format!(
            "only {covered} of {SLOT_COUNT} slots are served by an online primary"
        ));
    }
    Ok(())
}

/// Primaries from `CLUSTER NODES` (Redis 6 and older): lines
/// `id ip:port@cport[,hostname] flags master-id ping pong epoch link slot…`.
fn primaries_from_nodes(nodes: &str) -> Result<Vec<(String, u16)>, String> {
    let mut primaries = BTreeSet::new();
    let mut covered: u32 = 0;
    for line in nodes.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return Err("a CLUSTER NODES line has too few fields".to_owned());
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        let slot_bounds: Vec<i64> = fields[8..]
            .iter()
            // Migrating/importing markers look like `[slot->-id]`; they are not ownership.
            .filter(|range| !range.starts_with('['))
            .flat_map(|range| {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                [start.parse().ok(), end.parse().ok()]
            })
            .map(|bound| bound.unwrap_or(-1))
            .collect();
        let served = slot_count(&slot_bounds);
        if !flags.contains(&"master") || flags.contains(&"fail") || served == 0 {
            continue;
        }
        let address = fields[1].split(['@', ',']).next().unwrap_or_default();
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .filter(|(host, port)| !host.is_empty() && *port != 0)
            .ok_or("a primary has no usable address")?;
        primaries.insert((host.to_owned(), port));
        covered += served;
    }
    check_coverage(covered)?;
    Ok(primaries.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn node(port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk("abc"),
            bulk("port"),
            Value::Int(port),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("endpoint"),
            bulk("127.0.0.1"),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            Value::Int(0),
            bulk("health"),
            bulk(health),
        ])
    }

    fn shard(slots: &[i64], nodes: Vec<Value>) -> Value {
        Value::Array(vec![
            bulk("slots"),
            Value::Array(slots.iter().copied().map(Value::Int).collect()),
            bulk("nodes"),
            Value::Array(nodes),
        ])
    }

    #[test]
    fn shards_yield_one_online_primary_per_shard() {
        let value = Value::Array(vec![
            shard(&[0, 5460], vec![node(7001, "master", "online")]),
            shard(
                &[5461, 10922],
                vec![
                    node(7005, "replica", "online"),
                    node(7002, "master", "online"),
                ],
            ),
            shard(&[10923, 16383], vec![node(7003, "master", "online")]),
            shard(&[], vec![node(7009, "master", "online")]),
        ]);
        let primaries = primaries_from_shards(&value).unwrap();
        let ports: Vec<u16> = primaries.iter().map(|(_, port)| *port).collect();
        assert_eq!(ports, vec![7001, 7002, 7003]);
    }

    #[test]
    fn shards_without_an_online_primary_are_an_error() {
        let value = Value::Array(vec![
            shard(&[0, 8191], vec![node(7001, "master", "online")]),
            shard(&[8192, 16383], vec![node(7002, "master", "failed")]),
        ]);
        let err = primaries_from_shards(&value).unwrap_err();
        assert!(err.contains("8192 slots have no online primary"), "{err}");
    }

    #[test]
    fn shards_with_uncovered_slots_are_an_error() {
        let value = Value::Array(vec![shard(&[0, 100], vec![node(7001, "master", "online")])]);
        let err = primaries_from_shards(&value).unwrap_err();
        assert!(err.contains("only 101 of 16384"), "{err}");
    }

    #[test]
    fn resp3_maps_are_read_like_resp2_arrays() {
        let node = Value::Map(vec![
            (bulk("port"), Value::Int(7001)),
            (bulk("ip"), bulk("10.0.0.1")),
            (bulk("endpoint"), bulk("?")),
            (bulk("role"), bulk("master")),
            (bulk("health"), bulk("online")),
        ]);
        let value = Value::Array(vec![Value::Map(vec![
            (
                bulk("slots"),
                Value::Array(vec![Value::Int(0), Value::Int(16383)]),
            ),
            (bulk("nodes"), Value::Array(vec![node])),
        ])]);
        assert_eq!(
            primaries_from_shards(&value).unwrap(),
            vec![("10.0.0.1".to_owned(), 7001)]
        );
    }

    #[test]
    fn shards_reply_that_is_not_a_list_is_an_error() {
        assert!(primaries_from_shards(&Value::Int(1)).is_err());
    }

    #[test]
    fn cluster_nodes_text_yields_primaries_with_slots() {
        let text = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:7002@17002,host2 master - 0 0 2 connected 5461-10922 [5461->-b3]
a3 127.0.0.1:7003@17003 master - 0 0 3 connected 10923-16383
a4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
a5 127.0.0.1:7005@17005 master,fail - 0 0 4 disconnected
";
        let ports: Vec<u16> = primaries_from_nodes(text)
            .unwrap()
            .into_iter()
            .map(|(_, port)| port)
            .collect();
        assert_eq!(ports, vec![7001, 7002, 7003]);
    }

    #[test]
    fn cluster_nodes_with_a_failed_primary_holding_slots_is_an_error() {
        let text = "\
a1 127.0.0.1:7001@17001 master - 0 0 1 connected 0-8191
a2 127.0.0.1:7002@17002 master,fail - 0 0 2 connected 8192-16383
";
        assert!(primaries_from_nodes(text)
            .unwrap_err()
            .contains("8192 of 16384"));
    }

    #[test]
    fn info_cluster_detection_reads_cluster_enabled() {
        assert!(cluster_enabled("# Cluster\r\ncluster_enabled:1\r\n"));
        assert!(!cluster_enabled("# Cluster\r\ncluster_enabled:0\r\n"));
        assert!(!cluster_enabled(""));
    }

    #[test]
    fn address_labels_never_include_credentials() {
        let client = Client::open("redis://user:secret@127.0.0.1:6390/2").unwrap();
        assert_eq!(Node::new(client).label, "127.0.0.1:6390");
    }

    #[tokio::test]
    async fn malformed_url_is_rejected_without_echoing_it() {
        let err = RedisTarget::connect("http://user:secret@host")
            .await
            .unwrap_err();
        assert!(matches!(err, CacheError::InvalidUrl { .. }), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_server_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = RedisTarget::connect(&format!("redis://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert!(matches!(err, CacheError::Connect { .. }), "{err}");
    }
}
