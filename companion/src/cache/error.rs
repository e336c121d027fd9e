//! The one error type of tenant cache invalidation.

/// Why an invalidation could not start or could not finish.
///
/// Messages never contain the Redis URL (it may carry a password); nodes are
/// named by `host:port` only.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The tenant id is outside the strict alphabet; Redis was not contacted.
    #[error("invalid tenant id: {reason}")]
    InvalidTenant { reason: String },

    /// An option is out of range; Redis was not contacted.
    #[error("invalid option: {reason}")]
    InvalidOption { reason: String },

    /// The Redis URL could not be parsed (its text is not repeated here).
    #[error("invalid redis url: {reason}")]
    InvalidUrl { reason: String },

    /// A node could not be reached or refused the handshake.
    #[error("cannot connect to redis at {node}: {cause}")]
    Connect {
        node: String,
        cause: redis::RedisError,
    },

    /// Cluster mode was detected but the primaries could not be worked out.
    #[error("cannot read the cluster topology from {node}: {reason}")]
    Topology { node: String, reason: String },

    /// The run stopped part way; the counts say how far it got (summed over
    /// every node). Keys already deleted stay deleted; running again resumes
    /// the job from scratch and is safe.
    #[error(
        "invalidation interrupted on {node} after scanning about {scanned} keys, \
         matching {matched} and deleting {deleted}: {cause}"
    )]
    Interrupted {
        node: String,
        scanned: u64,
        matched: u64,
        deleted: u64,
        cause: redis::RedisError,
    },

    /// The set of cluster primaries changed while the run went on, so some
    /// slots may have moved to a node that was not scanned. Run it again.
    #[error(
        "the cluster topology changed during the run (primaries before: {before}; after: {after}); \
         scanned about {scanned} keys, matched {matched}, deleted {deleted}; run it again"
    )]
    TopologyChanged {
        before: String,
        after: String,
        scanned: u64,
        matched: u64,
        deleted: u64,
    },
}

impl CacheError {
    /// Whether the error is the caller's fault (bad tenant id or option), as
    /// opposed to a Redis failure: the CLI exits 2 and the API answers 400.
    pub fn is_usage_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidTenant { .. } | Self::InvalidOption { .. } | Self::InvalidUrl { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_are_told_apart_from_redis_failures() {
        let invalid = CacheError::InvalidTenant {
            reason: "it is empty".to_owned(),
        };
        assert!(invalid.is_usage_error());
        let failed = CacheError::Connect {
            node: "127.0.0.1:1".to_owned(),
            cause: redis::RedisError::from((redis::ErrorKind::Io, "refused")),
        };
        assert!(!failed.is_usage_error());
        assert!(failed
            .to_string()
            .starts_with("cannot connect to redis at 127.0.0.1:1"));
    }
}
