//! The edge policy as the companion's [`Authorizer`]: the same file and the
//! same engine (`avb_edge::policy`) the filter uses, so a request that Envoy
//! would refuse is refused here too when it arrives around Envoy.

use std::path::Path;

use avb_edge::policy::{self, DecisionKind, Effect, Policy};
use axum::http::StatusCode;

use super::guard::{Authorization, Authorizer, Caller};

/// Why the policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the policy file {path} is not valid YAML: {source}")]
    Yaml {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("the policy file {path} cannot be converted to JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("the policy file {path} is invalid: {source}")]
    Invalid {
        path: String,
        source: Box<policy::ConfigError>,
    },
}

/// Loads a policy file: JSON when its name ends in `.json`, YAML otherwise
/// (YAML is converted to JSON first: the engine reads JSON only). `*_env`
/// secrets are resolved from this process's environment.
pub fn load_policy(path: &Path) -> Result<Policy, PolicyLoadError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| PolicyLoadError::Read {
        path: shown.clone(),
        source,
    })?;
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    let json = if is_json {
        bytes
    } else {
        let value: serde_json::Value =
            serde_yaml::from_slice(&bytes).map_err(|source| PolicyLoadError::Yaml {
                path: shown.clone(),
                source,
            })?;
        serde_json::to_vec(&value).map_err(|source| PolicyLoadError::Json {
            path: shown.clone(),
            source,
        })?
    };
    Policy::from_json(&json, &|name| std::env::var(name).ok()).map_err(|source| {
        PolicyLoadError::Invalid {
            path: shown,
            source: Box::new(source),
        }
    })
}

/// Enforces a compiled policy.
pub struct PolicyAuthorizer {
    policy: Policy,
}

impl PolicyAuthorizer {
    pub fn new(policy: Policy) -> Self {
        Self { policy }
    }

    pub fn revision(&self) -> &str {
        self.policy.revision()
    }
}

impl Authorizer for PolicyAuthorizer {
    fn authorize(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: &[&str],
    ) -> Authorization {
        let authorization = match authorization {
            [] => policy::Authorization::Absent,
            [one] => policy::Authorization::One(one),
            _ => policy::Authorization::Multiple,
        };
        let request = policy::Request {
            method: Some(method),
            path: Some(path_and_query),
            authorization,
            jwt_payload: None,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let decision = self.policy.decide(&request, now);
        // The companion serves no webhooks: a webhook rule on /api/ would need
        // a body check it cannot make, so it is refused.
        if decision.effect != Effect::Allow || decision.kind == DecisionKind::Webhook {
            let status = StatusCode::from_u16(decision.status)
                .ok()
                .filter(|s| s.is_client_error())
                .unwrap_or(StatusCode::FORBIDDEN);
            return Authorization::Deny {
                status,
                reason: decision.detail,
            };
        }
        let rule = decision
            .rule
            .and_then(|index| self.policy.rules().get(index))
            .map(|rule| rule.name().to_owned());
        let identity = decision.identity;
        Authorization::Allow(Caller {
            subject: identity.as_ref().map(|i| i.subject.clone()),
            tenant: identity.as_ref().and_then(|i| i.tenant.clone()),
            roles: identity.map(|i| i.roles).unwrap_or_default(),
            rule,
            policy_revision: Some(self.policy.revision().to_owned()),
        })
    }
}
