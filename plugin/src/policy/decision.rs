//! The decision for one request's headers.
//!
//! Order: method and path checks (400, never a rule and never dry run), the
//! route (most specific rule), duplicate `Authorization` (401), then the
//! rule's requirement: identity (401), roles (403), tenant (403). Dry run, of
//! the policy or of the rule, turns a would-be 401/403 into a pass that still
//! reports the reason and the rule.

use serde_json::Value;

use super::audit_settings::AuditLevel;
use super::identity::{bearer_token, token_digest, Identity, TokenCache};
use super::path::{canonical_path, check_method};
use super::{IdentitySource, Mode, Policy, Requirement, Unmatched};

/// The parts of a request the policy looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `:method` as sent.
    pub method: Option<&'a str>,
    /// `:path` as sent (may include `?query`).
    pub path: Option<&'a str>,
    pub authorization: Authorization<'a>,
    /// For `identity.source = jwt_authn_metadata`: the payload Envoy's
    /// jwt_authn verified, decoded to JSON by the glue (`None` = no metadata).
    /// Ignored for `bearer_jwt`.
    pub jwt_payload: Option<&'a Value>,
}

/// The request's `Authorization` header(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization<'a> {
    Absent,
    One(&'a str),
    /// Two or more headers: always 401 (which one would an upstream read?).
    Multiple,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// Let through.
    Allowed,
    /// 403.
    Denied,
    /// 401.
    Unauthenticated,
    /// Would have been 401/403, let through because of dry run.
    DryRunDenied,
    /// 400: non-canonical path or bad method.
    Rejected,
    /// A webhook rule: the glue holds the request and verifies the body with
    /// [`Policy::webhook`] named by [`Decision::webhook`].
    Webhook,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `Allow` for `Allowed`, `DryRunDenied` and `Webhook` (pending the body).
    pub effect: Effect,
    pub kind: DecisionKind,
    /// 200 when passing through; 400 / 401 / 403 when denied.
    pub status: u16,
    /// `bad_request`, `unauthenticated` or `permission_denied` for a denial;
    /// for `DryRunDenied`, the error the request would have got.
    pub error: Option<&'static str>,
    /// Stable machine code, e.g. `role_granted`, `missing_role`, `invalid_token`.
    pub reason: &'static str,
    /// Human message for the JSON body; never contains the token.
    pub detail: String,
    /// A credential was presented (401 then adds `error="invalid_token"`).
    pub token_presented: bool,
    /// Index into [`Policy::rules`].
    pub rule: Option<usize>,
    pub identity: Option<Identity>,
    /// Effective audit level for this request: the rule's override or the
    /// policy default ([`AuditLevel::None`] without an `audit` section).
    pub audit: AuditLevel,
    /// Webhook name when `kind == Webhook`.
    pub webhook: Option<String>,
    /// The path without query, when canonical.
    pub canonical_path: Option<String>,
}

/// A would-be denial, before dry run is applied.
struct Denial {
    status: u16,
    error: &'static str,
    reason: &'static str,
    detail: String,
    token_presented: bool,
}

impl Denial {
    fn unauthenticated(reason: &'static str, detail: String, token_presented: bool) -> Denial {
        Denial {
            status: 401,
            error: "unauthenticated",
            reason,
            detail,
            token_presented,
        }
    }

    fn forbidden(reason: &'static str, detail: String) -> Denial {
        Denial {
            status: 403,
            error: "permission_denied",
            reason,
            detail,
            token_presented: false,
        }
    }
}

/// Where a decision resolves identities: straight from the verifier, or
/// through a [`TokenCache`].
enum Tokens<'c> {
    Uncached,
    Cached(&'c mut TokenCache),
}

impl Policy {
    /// The whole decision for one request's headers at Unix time
    /// `now_unix_secs`. Never panics, whatever the input.
    pub fn decide(&self, req: &Request<'_>, now_unix_secs: u64) -> Decision {
        self.decide_with(req, now_unix_secs, Tokens::Uncached)
    }

    /// [`Policy::decide`] with verified tokens remembered in `cache`; same
    /// results. A cache filled under another policy revision is cleared first.
    pub fn decide_cached(
        &self,
        req: &Request<'_>,
        now_unix_secs: u64,
        cache: &mut TokenCache,
    ) -> Decision {
        cache.bind(&self.revision);
        self.decide_with(req, now_unix_secs, Tokens::Cached(cache))
    }

    fn default_audit(&self) -> AuditLevel {
        self.audit
            .as_ref()
            .map_or(AuditLevel::None, |settings| settings.events)
    }

    fn decide_with(&self, req: &Request<'_>, now: u64, tokens: Tokens<'_>) -> Decision {
        let default_audit = self.default_audit();
        let reject = |reason: &'static str, detail: String, canonical: Option<String>| Decision {
            effect: Effect::Deny,
            kind: DecisionKind::Rejected,
            status: 400,
            error: Some("bad_request"),
            reason,
            detail,
            token_presented: false,
            rule: None,
            identity: None,
            audit: default_audit,
            webhook: None,
            canonical_path: canonical,
        };
        let Some(method) = req.method else {
            return reject("bad_method", "request has no :method".to_owned(), None);
        };
        let Some(raw_path) = req.path else {
            return reject("missing_path", "request has no :path".to_owned(), None);
        };
        let path = match canonical_path(raw_path) {
            Ok(path) => path,
            Err(problem) => return reject("non_canonical_path", problem.to_string(), None),
        };
        if let Err(problem) = check_method(method) {
            return reject("bad_method", problem.to_string(), Some(path.to_owned()));
        }

        let rule_index = self.routes.best_match(path, method);
        let rule = rule_index.and_then(|index| self.rules.get(index));
        let mode = rule.and_then(|r| r.mode).unwrap_or(self.mode);
        let audit = self.audit.as_ref().map_or(AuditLevel::None, |settings| {
            rule.and_then(|r| r.audit).unwrap_or(settings.events)
        });
        let mut decision = Decision {
            effect: Effect::Allow,
            kind: DecisionKind::Allowed,
            status: 200,
            error: None,
            reason: "",
            detail: String::new(),
            token_presented: !matches!(req.authorization, Authorization::Absent),
            rule: rule_index,
            identity: None,
            audit,
            webhook: None,
            canonical_path: Some(path.to_owned()),
        };

        let outcome = self.evaluate(req, method, path, rule, now, tokens, &mut decision);
        match outcome {
            Ok((reason, detail)) => {
                decision.reason = reason;
                decision.detail = detail;
            }
            Err(denial) => {
                decision.reason = denial.reason;
                decision.detail = denial.detail;
                decision.error = Some(denial.error);
                decision.token_presented = denial.token_presented;
                if mode == Mode::DryRun {
                    decision.kind = DecisionKind::DryRunDenied;
                } else {
                    decision.effect = Effect::Deny;
                    decision.status = denial.status;
                    decision.kind = if denial.status == 401 {
                        DecisionKind::Unauthenticated
                    } else {
                        DecisionKind::Denied
                    };
                }
            }
        }
        decision
    }

    /// The requirement check: `Ok((reason, detail))` to let through, with
    /// `decision.identity` / `kind` / `webhook` filled in as they apply.
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        req: &Request<'_>,
        method: &str,
        path: &str,
        rule: Option<&super::Rule>,
        now: u64,
        tokens: Tokens<'_>,
        decision: &mut Decision,
    ) -> Result<(&'static str, String), Denial> {
        if req.authorization == Authorization::Multiple {
            return Err(Denial::unauthenticated(
                "duplicate_authorization",
                "request has more than one Authorization header".to_owned(),
                true,
            ));
        }
        let Some(rule) = rule else {
            return match self.unmatched {
                Unmatched::Deny => Err(Denial::forbidden(
                    "no_matching_rule",
                    format!("no rule allows {method} {path}"),
                )),
                Unmatched::Allow => Ok(("unmatched_allowed", "no rule matched; allowed".into())),
                Unmatched::Authenticated => {
                    decision.identity = Some(self.authenticate(req, now, tokens)?);
                    Ok(("authenticated", "no rule matched; authenticated".into()))
                }
            };
        };
        let identity = match &rule.requirement {
            Requirement::Public => return Ok(("public", format!("rule {} is public", rule.name))),
            Requirement::Webhook(name) => {
                decision.kind = DecisionKind::Webhook;
                decision.webhook = Some(name.clone());
                return Ok((
                    "webhook",
                    format!("rule {} needs a signed {name} delivery", rule.name),
                ));
            }
            Requirement::Authenticated | Requirement::AnyOf(_) | Requirement::AllOf(_) => decision
                .identity
                .insert(self.authenticate(req, now, tokens)?),
        };
        let granted = match &rule.requirement {
            Requirement::AnyOf(roles) => {
                if !roles.iter().any(|r| has_role(identity, r)) {
                    return Err(Denial::forbidden(
                        "missing_role",
                        format!(
                            "rule {} requires one of the roles {}",
                            rule.name,
                            roles.join(", ")
                        ),
                    ));
                }
                true
            }
            Requirement::AllOf(roles) => {
                if !roles.iter().all(|r| has_role(identity, r)) {
                    return Err(Denial::forbidden(
                        "missing_role",
                        format!(
                            "rule {} requires all of the roles {}",
                            rule.name,
                            roles.join(", ")
                        ),
                    ));
                }
                true
            }
            _ => false,
        };
        if let Some((param, index)) = &rule.tenant_param {
            let cross_tenant = self.identity.as_ref().is_some_and(|settings| {
                settings
                    .cross_tenant_roles
                    .iter()
                    .any(|r| has_role(identity, r))
            });
            let in_path = path
                .strip_prefix('/')
                .and_then(|p| p.split('/').nth(*index));
            let matches = in_path.is_some() && in_path == identity.tenant.as_deref();
            if !matches && !cross_tenant {
                return Err(Denial::forbidden(
                    "tenant_mismatch",
                    format!("path parameter {param} does not match the caller's tenant"),
                ));
            }
        }
        Ok(if granted {
            ("role_granted", format!("rule {} granted", rule.name))
        } else {
            (
                "authenticated",
                format!("rule {} needs any valid identity", rule.name),
            )
        })
    }

    /// Resolve the caller's identity, or the 401 to answer.
    fn authenticate(
        &self,
        req: &Request<'_>,
        now: u64,
        tokens: Tokens<'_>,
    ) -> Result<Identity, Denial> {
        let Some(settings) = &self.identity else {
            // Compilation refuses rules needing identity without one; keep the
            // security path closed regardless.
            return Err(Denial::unauthenticated(
                "invalid_token",
                "no identity source is configured".to_owned(),
                false,
            ));
        };
        match &settings.source {
            IdentitySource::JwtAuthnMetadata { .. } => {
                let presented = !matches!(req.authorization, Authorization::Absent);
                let Some(payload) = req.jwt_payload else {
                    return Err(Denial::unauthenticated(
                        "missing_token",
                        "no verified token: jwt_authn provided no payload".to_owned(),
                        presented,
                    ));
                };
                settings
                    .claims
                    .identity(payload, &self.roles)
                    .map_err(|err| Denial::unauthenticated("invalid_token", err.to_string(), true))
            }
            IdentitySource::Bearer(verifier) => {
                let header = match req.authorization {
                    Authorization::One(header) => header,
                    Authorization::Absent => {
                        return Err(Denial::unauthenticated(
                            "missing_token",
                            "a bearer token is required".to_owned(),
                            false,
                        ))
                    }
                    Authorization::Multiple => {
                        return Err(Denial::unauthenticated(
                            "duplicate_authorization",
                            "request has more than one Authorization header".to_owned(),
                            true,
                        ))
                    }
                };
                let invalid =
                    |reason, detail: String| Denial::unauthenticated(reason, detail, true);
                let token = bearer_token(header).map_err(|e| invalid(e.reason(), e.to_string()))?;
                let Tokens::Cached(cache) = tokens else {
                    let verified = verifier
                        .verify(token, now)
                        .map_err(|e| invalid(e.reason(), e.to_string()))?;
                    return settings
                        .claims
                        .identity(&verified.claims, &self.roles)
                        .map_err(|e| invalid("invalid_token", e.to_string()));
                };
                let digest = token_digest(token);
                if let Some(hit) = cache.get(&digest, |t| verifier.check_times(t, now).is_ok()) {
                    return Ok(hit.identity.clone());
                }
                let verified = verifier
                    .verify(token, now)
                    .map_err(|e| invalid(e.reason(), e.to_string()))?;
                let identity = settings
                    .claims
                    .identity(&verified.claims, &self.roles)
                    .map_err(|e| invalid("invalid_token", e.to_string()))?;
                cache.insert(digest, verified, identity.clone());
                Ok(identity)
            }
        }
    }
}

fn has_role(identity: &Identity, role: &str) -> bool {
    identity
        .roles
        .binary_search_by(|held| held.as_str().cmp(role))
        .is_ok()
}
