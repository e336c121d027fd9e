//! The compiled `audit` section and per-request audit levels.

use std::fmt;

use super::config::{RawAudit, RawAuditEvents, RawRuleAudit};
use super::error::ConfigError;
use super::identity::resolve_secret;

/// Which decisions of a request are audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditLevel {
    /// Every decision.
    All,
    /// Denials, unauthenticated, rejected and dry-run denials only.
    Denied,
    /// Nothing.
    None,
}

impl From<RawRuleAudit> for AuditLevel {
    fn from(raw: RawRuleAudit) -> AuditLevel {
        match raw {
            RawRuleAudit::All => AuditLevel::All,
            RawRuleAudit::Denied => AuditLevel::Denied,
            RawRuleAudit::None => AuditLevel::None,
        }
    }
}

/// Where and how the filter ships audit events to the companion.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Envoy cluster of the companion.
    pub cluster: String,
    /// `:authority` of the ingest calls.
    pub authority: String,
    /// Ingest path, e.g. `/v1/audit/events`.
    pub path: String,
    /// Ingest bearer token (resolved from `token_env` when given that way).
    pub token: String,
    /// Policy-wide level: [`AuditLevel::All`] or [`AuditLevel::Denied`].
    pub events: AuditLevel,
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    pub queue_limit: usize,
    pub timeout_ms: u64,
}

impl fmt::Debug for AuditSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditSettings")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("token", &"<redacted>")
            .field("events", &self.events)
            .field("batch_size", &self.batch_size)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("queue_limit", &self.queue_limit)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

fn audit_error(problem: impl Into<String>) -> ConfigError {
    ConfigError::Audit {
        problem: problem.into(),
    }
}

impl AuditSettings {
    /// Check the raw section and resolve `token_env`.
    pub fn compile(
        raw: &RawAudit,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AuditSettings, ConfigError> {
        let RawAudit {
            cluster,
            authority,
            path,
            token,
            token_env,
            events,
            batch_size,
            flush_interval_ms,
            queue_limit,
            timeout_ms,
        } = raw;
        if cluster.trim().is_empty() {
            return Err(audit_error("`cluster` is empty"));
        }
        if authority.trim().is_empty() {
            return Err(audit_error("`authority` is empty"));
        }
        if !path.starts_with('/') {
            return Err(audit_error("`path` must start with `/`"));
        }
        let token = resolve_secret("token", token.as_deref(), token_env.as_deref(), env)?
            .ok_or_else(|| audit_error("one of `token` and `token_env` is required"))?;
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(audit_error(
                "the ingest token must be non-empty printable ASCII without spaces",
            ));
        }
        if *batch_size == 0 {
            return Err(audit_error("`batch_size` must be at least 1"));
        }
        if *queue_limit < *batch_size {
            return Err(audit_error("`queue_limit` must be at least `batch_size`"));
        }
        if *flush_interval_ms == 0 {
            return Err(audit_error("`flush_interval_ms` must be at least 1"));
        }
        if *timeout_ms == 0 {
            return Err(audit_error("`timeout_ms` must be at least 1"));
        }
        Ok(AuditSettings {
            cluster: cluster.clone(),
            authority: authority.clone(),
            path: path.clone(),
            token,
            events: match events {
                RawAuditEvents::All => AuditLevel::All,
                RawAuditEvents::Denied => AuditLevel::Denied,
            },
            batch_size: *batch_size,
            flush_interval_ms: *flush_interval_ms,
            queue_limit: *queue_limit,
            timeout_ms: *timeout_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawAudit {
        serde_json::from_str(
            r#"{"cluster":"avb_companion","authority":"avb-companion","path":"/v1/audit/events","token_env":"AVB_INGEST_TOKEN"}"#,
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_env_token_are_applied() {
        let settings = AuditSettings::compile(&raw(), &|name| {
            (name == "AVB_INGEST_TOKEN").then(|| "secret-token".to_owned())
        })
        .unwrap();
        assert_eq!(settings.token, "secret-token");
        assert_eq!(settings.events, AuditLevel::Denied);
        assert_eq!(settings.batch_size, 100);
        assert_eq!(settings.flush_interval_ms, 500);
        assert_eq!(settings.queue_limit, 10_000);
        assert_eq!(settings.timeout_ms, 2_000);
        assert!(!format!("{settings:?}").contains("secret-token"));
    }

    #[test]
    fn missing_env_token_names_the_variable() {
        let err = AuditSettings::compile(&raw(), &|_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`token_env` names environment variable `AVB_INGEST_TOKEN`, which is not set or empty"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        let env = |_: &str| Some("t".to_owned());
        let mut zero_batch = raw();
        zero_batch.batch_size = 0;
        let err = AuditSettings::compile(&zero_batch, &env).unwrap_err();
        assert!(err.to_string().contains("batch_size"), "{err}");
        let mut bad_path = raw();
        bad_path.path = "v1".into();
        let err = AuditSettings::compile(&bad_path, &env).unwrap_err();
        assert!(err.to_string().contains("`path`"), "{err}");
        let mut both = raw();
        both.token = Some("x".into());
        let err = AuditSettings::compile(&both, &env).unwrap_err();
        assert!(err.to_string().contains("exactly one of `token`"), "{err}");
    }
}
