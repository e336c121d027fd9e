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
    /// Unreadable or unparsable (`file:line:column: message`).
    #[error("{0}")]
    Source(#[from] avb_edge::cli::SourceError),
    #[error("the policy file {path} is invalid: {source}")]
    Invalid {
        path: String,
        source: Box<policy::ConfigError>,
    },
}

/// Reads a policy file (YAML, or JSON) with the same parser as `avb-policy`,
/// and compiles it with secrets from the process environment.
pub fn load_policy(path: &Path) -> Result<Policy, PolicyLoadError> {
    let document = avb_edge::cli::load_policy(path)?;
    Policy::from_json(document.filter_json.as_bytes(), &|name| {
        std::env::var(name).ok()
    })
    .map_err(|source| PolicyLoadError::Invalid {
        path: path.display().to_string(),
        source: Box::new(source),
    })
}

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
