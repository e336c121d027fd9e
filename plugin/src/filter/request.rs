//! One HTTP request: read the headers, ask the engine, apply the decision;
//! for webhook rules, hold the request until the body is verified.

use super::host;
use super::replay;
use super::root::Shared;
use crate::audit::{rfc3339_millis, AuditEvent};
use crate::policy::{AuditLevel, Authorization, Decision, DecisionKind, Request};
use crate::webhook::{LagoVerifier, PendingDelivery, Rejection, WebhookHeaders};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel};
use std::rc::Rc;

/// Header names the filter owns: a client's copies never reach the upstream.
const OWN_PREFIX: &str = "x-avb-";

pub struct EdgeRequest {
    shared: Option<Rc<Shared>>,
    /// What the audit event of this request says besides its kind.
    base: EventBase,
    held: Option<HeldWebhook>,
    /// A verified delivery to remember once the upstream answers 2xx.
    remember: Option<([u8; 32], u64)>,
}

#[derive(Default, Clone)]
struct EventBase {
    id: String,
    method: Option<String>,
    path: Option<String>,
    rule: Option<String>,
    request_id: Option<String>,
    audit: Option<AuditLevel>,
}

struct HeldWebhook {
    name: String,
    /// None when the headers were already refused.
    pending: Option<PendingDelivery>,
    unique_key: Option<String>,
    max_body: u64,
}

/// The request headers the filter reads, from one pass over the header map.
#[derive(Default)]
struct SeenHeaders {
    method: Option<String>,
    path: Option<String>,
    authorization: Option<String>,
    authorization_count: usize,
    request_id: Option<String>,
    lago_signature: Option<String>,
    lago_signature_count: usize,
    lago_algorithm: Option<String>,
    lago_unique_key: Option<String>,
    content_length: Option<u64>,
    own: Vec<String>,
}

impl SeenHeaders {
    fn read() -> SeenHeaders {
        let mut seen = SeenHeaders::default();
        for (name, value) in host::request_headers() {
            // A value that is not UTF-8 can never be a valid token, path or
            // signature; keep it as None rather than guessing.
            let text = || String::from_utf8(value.clone()).ok();
            match name.as_str() {
                ":method" => seen.method = text(),
                ":path" => seen.path = text(),
                "authorization" => {
                    seen.authorization_count += 1;
                    seen.authorization = text();
                }
                "x-request-id" => seen.request_id = text(),
                "x-lago-signature" => {
                    seen.lago_signature_count += 1;
                    seen.lago_signature = text();
                }
                "x-lago-signature-algorithm" => seen.lago_algorithm = text(),
                "x-lago-unique-key" => seen.lago_unique_key = text(),
                "content-length" => {
                    seen.content_length = text().and_then(|v| v.trim().parse().ok())
                }
                other if other.starts_with(OWN_PREFIX) => seen.own.push(name.clone()),
                _ => {}
            }
        }
        seen
    }
}

impl EdgeRequest {
    pub fn new(shared: Option<Rc<Shared>>) -> EdgeRequest {
        EdgeRequest {
            shared,
            base: EventBase::default(),
            held: None,
            remember: None,
        }
    }

    fn decide(&mut self, shared: &Shared, seen: &SeenHeaders) -> Decision {
        let authorization = match (seen.authorization_count, seen.authorization.as_deref()) {
            (0, _) => Authorization::Absent,
            (1, Some(value)) => Authorization::One(value),
            (1, None) => Authorization::One(""),
            _ => Authorization::Multiple,
        };
        // Identity from Envoy's jwt_authn: the payload it verified, read from
        // dynamic metadata (never from headers, which a client can forge).
        let payload = shared.policy.jwt_authn_metadata_key().and_then(|key| {
            let bytes = host::property_bytes(vec![
                "metadata",
                "filter_metadata",
                "envoy.filters.http.jwt_authn",
                key,
            ])?;
            crate::property::decode(&bytes)
        });
        let request = Request {
            method: seen.method.as_deref(),
            path: seen.path.as_deref(),
            authorization,
            jwt_payload: payload.as_ref(),
        };
        let now = host::now_millis() / 1000;
        let mut tokens = shared.tokens.borrow_mut();
        shared.policy.decide_cached(&request, now, &mut tokens)
    }

    fn record(&self, shared: &Shared, event: AuditEvent) {
        let Some(outbox) = &shared.outbox else { return };
        match serde_json::to_vec(&event) {
            Ok(json) => outbox.borrow_mut().push(&json, &shared.metrics),
            Err(_) => host::log(
                LogLevel::Error,
                "avb-edge: audit event could not be encoded",
            ),
        }
    }

    /// The audit event for this request (fields common to every kind).
    fn event(
        &self,
        shared: &Shared,
        kind: &str,
        deny: bool,
        status: u16,
        reason: &str,
    ) -> AuditEvent {
        AuditEvent {
            id: self.base.id.clone(),
            time: rfc3339_millis(host::now_millis()),
            kind: kind.to_string(),
            outcome: if deny { "deny" } else { "allow" }.to_string(),
            status: Some(status),
            reason: Some(reason.to_string()),
            rule: self.base.rule.clone(),
            method: self.base.method.clone(),
            path: self.base.path.clone(),
            // Read only when an event is recorded: one host call fewer on
            // every request that is not audited.
            source: host::property_string(vec!["source", "address"]),
            request_id: self.base.request_id.clone(),
            policy_revision: Some(shared.policy.revision().to_string()),
            ..AuditEvent::default()
        }
    }

    fn wants(&self, deny: bool) -> bool {
        match self.base.audit {
            Some(AuditLevel::All) => true,
            Some(AuditLevel::Denied) => deny,
            _ => false,
        }
    }

    fn on_decision(&mut self, shared: &Shared, decision: Decision, seen: &SeenHeaders) -> Action {
        let metrics = &shared.metrics;
        let rule_metrics = decision.rule.and_then(|i| metrics.rules.get(i));
        self.base.rule = decision
            .rule
            .and_then(|i| shared.policy.rules().get(i))
            .map(|r| r.name().to_string());
        self.base.audit = Some(decision.audit);
        // The path is recorded without its query: a query string may carry secrets.
        self.base.path = decision.canonical_path.clone().or_else(|| {
            seen.path.as_deref().map(|p| {
                p.split('?')
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(256)
                    .collect()
            })
        });
        let kind = match decision.kind {
            DecisionKind::Allowed => "authz.allowed",
            DecisionKind::DryRunDenied => "authz.dry_run_denied",
            DecisionKind::Denied => "authz.denied",
            DecisionKind::Unauthenticated => "authz.unauthenticated",
            DecisionKind::Rejected => "request.rejected",
            DecisionKind::Webhook => return self.start_webhook(shared, &decision, seen),
        };
        let deny = !matches!(decision.kind, DecisionKind::Allowed);
        match decision.kind {
            DecisionKind::Allowed => metrics.allowed.inc(),
            DecisionKind::DryRunDenied => metrics.dry_run_denied.inc(),
            DecisionKind::Denied => metrics.denied.inc(),
            DecisionKind::Unauthenticated => metrics.unauthenticated.inc(),
            _ => metrics.rejected.inc(),
        }
        if let Some(rm) = rule_metrics {
            match decision.kind {
                DecisionKind::Allowed => rm.allowed.inc(),
                DecisionKind::DryRunDenied => rm.dry_run_denied.inc(),
                DecisionKind::Unauthenticated => rm.unauthenticated.inc(),
                _ => rm.denied.inc(),
            }
        }
        if self.wants(deny) {
            let mut event = self.event(
                shared,
                kind,
                deny && decision.kind != DecisionKind::DryRunDenied,
                decision.status,
                decision.reason,
            );
            if decision.kind == DecisionKind::DryRunDenied {
                event.status = Some(if decision.error == Some("unauthenticated") {
                    401
                } else {
                    403
                });
            }
            if let Some(identity) = &decision.identity {
                event.subject = Some(identity.subject.clone());
                event.tenant = identity.tenant.clone();
                event.roles = identity.roles.clone();
            }
            self.record(shared, event);
        }
        match decision.kind {
            DecisionKind::Allowed | DecisionKind::DryRunDenied => {
                self.strip_own_headers(seen);
                if let Some(identity) = &decision.identity {
                    host::set_request_header("x-avb-subject", &identity.subject);
                    host::set_request_header("x-avb-roles", &identity.roles.join(","));
                    if let Some(tenant) = &identity.tenant {
                        host::set_request_header("x-avb-tenant", tenant);
                    }
                }
                if let Some(rule) = &self.base.rule {
                    host::set_request_header("x-avb-rule", rule);
                }
                host::set_request_header("x-avb-decision-id", &self.base.id);
                if decision.kind == DecisionKind::DryRunDenied && host::log_enabled(LogLevel::Info)
                {
                    host::log(
                        LogLevel::Info,
                        &format!(
                            "avb-edge: dry run: would deny {} ({})",
                            self.base.id, decision.reason
                        ),
                    );
                }
                Action::Continue
            }
            _ => {
                self.deny_reply(&decision);
                Action::Pause
            }
        }
    }

    fn strip_own_headers(&self, seen: &SeenHeaders) {
        for name in &seen.own {
            host::remove_request_header(name);
        }
    }

    fn deny_reply(&self, decision: &Decision) {
        let mut body = serde_json::Map::new();
        body.insert(
            "error".into(),
            decision.error.unwrap_or("permission_denied").into(),
        );
        body.insert("detail".into(), decision.detail.clone().into());
        if decision.status == 403 {
            if let Some(rule) = &self.base.rule {
                body.insert("rule".into(), rule.clone().into());
            }
        }
        body.insert("decision_id".into(), self.base.id.clone().into());
        let body = serde_json::Value::Object(body).to_string();
        let challenge = if decision.token_presented {
            r#"Bearer realm="avb", error="invalid_token""#
        } else {
            r#"Bearer realm="avb""#
        };
        let mut headers = vec![
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
            ("x-avb-decision-id", self.base.id.as_str()),
        ];
        if decision.status == 401 {
            headers.push(("www-authenticate", challenge));
        }
        host::send_reply(decision.status, &headers, body.as_bytes());
    }

    fn webhook_reply(&self, status: u16, body: serde_json::Value) {
        let body = body.to_string();
        host::send_reply(
            status,
            &[
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
                ("x-avb-decision-id", self.base.id.as_str()),
            ],
            body.as_bytes(),
        );
    }

    fn start_webhook(
        &mut self,
        shared: &Shared,
        decision: &Decision,
        seen: &SeenHeaders,
    ) -> Action {
        self.strip_own_headers(seen);
        let name = decision.webhook.clone().unwrap_or_default();
        let Some(verifier) = shared.policy.webhook(&name) else {
            // The compiler guarantees the webhook exists; fail closed if not.
            self.webhook_reply(
                500,
                serde_json::json!({"error": "internal", "decision_id": self.base.id}),
            );
            return Action::Pause;
        };
        let headers = WebhookHeaders {
            signature: if seen.lago_signature_count > 1 {
                Some("")
            } else {
                seen.lago_signature.as_deref()
            },
            algorithm: seen.lago_algorithm.as_deref(),
            unique_key: seen.lago_unique_key.as_deref(),
            content_length: seen.content_length,
        };
        let unique_key = seen
            .lago_unique_key
            .as_ref()
            .map(|k| k.chars().take(128).collect());
        match verifier.check_headers(&headers) {
            Err(rejection) => {
                self.held = Some(HeldWebhook {
                    name,
                    pending: None,
                    unique_key,
                    max_body: verifier.max_body_bytes(),
                });
                self.reject_webhook(shared, rejection, None);
                Action::Pause
            }
            Ok(pending) => {
                self.held = Some(HeldWebhook {
                    name,
                    pending: Some(pending),
                    unique_key,
                    max_body: verifier.max_body_bytes(),
                });
                // Held until the body is in (see on_http_request_body).
                Action::Pause
            }
        }
    }

    fn reject_webhook(
        &mut self,
        shared: &Shared,
        rejection: Rejection,
        body: Option<([u8; 32], u64)>,
    ) {
        let Some(held) = self.held.take() else { return };
        if let Some(m) = shared.metrics.webhooks.get(&held.name) {
            if let Some(c) = m.rejected.get(rejection.code()) {
                c.inc();
            }
        }
        if self.wants(true) {
            let mut event = self.event(
                shared,
                "webhook.rejected",
                true,
                rejection.status(),
                rejection.code(),
            );
            webhook_details(&mut event, &held, body);
            self.record(shared, event);
        }
        self.webhook_reply(
            rejection.status(),
            serde_json::json!({"error": rejection.code(), "decision_id": self.base.id}),
        );
    }

    /// Verifies the whole body (at end of stream or at the trailers) and lets
    /// the request go on, or answers it.
    fn finish_webhook(&mut self, shared: &Shared, has_body: bool) -> Action {
        let Some(held) = &self.held else {
            return Action::Continue;
        };
        let (Some(verifier), Some(pending)) = (shared.policy.webhook(&held.name), &held.pending)
        else {
            return Action::Pause;
        };
        let body = if has_body {
            host::buffer(BufferType::HttpRequestBody, usize::MAX >> 1).unwrap_or_default()
        } else {
            Vec::new()
        };
        let size = body.len() as u64;
        let outcome = if size > held.max_body {
            Err(Rejection::PayloadTooLarge)
        } else {
            verifier.verify(pending, &body)
        };
        match outcome {
            Err(rejection) => {
                self.reject_webhook(shared, rejection, Some((sha256(&body), size)));
                Action::Pause
            }
            Ok(verified) => self.accept_webhook(shared, verifier, verified, size),
        }
    }

    fn accept_webhook(
        &mut self,
        shared: &Shared,
        verifier: &LagoVerifier,
        verified: crate::webhook::Verified,
        body_size: u64,
    ) -> Action {
        let Some(held) = self.held.take() else {
            return Action::Continue;
        };
        let metrics = shared.metrics.webhooks.get(&held.name);
        let now = host::now_millis() / 1000;
        let window = verifier.replay_window_seconds();
        if window > 0 && replay::seen(&verified.fingerprint, now) {
            if let Some(m) = metrics {
                m.duplicate.inc();
            }
            if self.base.audit != Some(AuditLevel::None) {
                let mut event = self.event(shared, "webhook.duplicate", true, 200, "duplicate");
                webhook_details(&mut event, &held, Some((verified.body_sha256, body_size)));
                self.record(shared, event);
            }
            self.webhook_reply(
                200,
                serde_json::json!({"status": "duplicate", "decision_id": self.base.id}),
            );
            return Action::Pause;
        }
        if window > 0 {
            self.remember = Some((verified.fingerprint, now.saturating_add(window)));
        }
        if let Some(m) = metrics {
            m.verified.inc();
        }
        if self.base.audit != Some(AuditLevel::None) {
            let mut event = self.event(shared, "webhook.verified", false, 200, "verified");
            webhook_details(&mut event, &held, Some((verified.body_sha256, body_size)));
            event
                .details
                .insert("key_id".into(), verified.key_id.clone().into());
            self.record(shared, event);
        }
        host::set_request_header("x-avb-webhook", &held.name);
        host::set_request_header("x-avb-webhook-key", &verified.key_id);
        if let Some(rule) = &self.base.rule {
            host::set_request_header("x-avb-rule", rule);
        }
        host::set_request_header("x-avb-decision-id", &self.base.id);
        Action::Continue
    }
}

/// Webhook facts for the audit trail: never the signature or the body itself.
fn webhook_details(event: &mut AuditEvent, held: &HeldWebhook, body: Option<([u8; 32], u64)>) {
    event
        .details
        .insert("webhook".into(), held.name.clone().into());
    if let Some(key) = &held.unique_key {
        event
            .details
            .insert("unique_key".into(), key.clone().into());
    }
    if let Some((digest, size)) = body {
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        event.details.insert("body_sha256".into(), hex.into());
        event.details.insert("body_size".into(), size.into());
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

impl Context for EdgeRequest {}

impl HttpContext for EdgeRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            // No policy loaded on this worker: fail closed.
            host::send_reply(
                503,
                &[("content-type", "application/json")],
                br#"{"error":"unavailable","detail":"no policy loaded"}"#,
            );
            return Action::Pause;
        };
        let seen = SeenHeaders::read();
        self.base.id = shared.ids.next();
        self.base.method = seen.method.as_ref().map(|m| m.chars().take(32).collect());
        self.base.request_id = seen
            .request_id
            .as_ref()
            .map(|r| r.chars().take(128).collect());
        let decision = self.decide(&shared, &seen);
        let action = self.on_decision(&shared, decision, &seen);
        if self.held.is_some() && end_of_stream {
            // A webhook request without a body is verified over an empty body.
            return self.finish_webhook(&shared, false);
        }
        action
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Pause;
        };
        let Some(held) = &self.held else {
            return Action::Continue;
        };
        if body_size as u64 > held.max_body {
            // Decided as soon as the size is known, without buffering the rest.
            self.reject_webhook(&shared, Rejection::PayloadTooLarge, None);
            return Action::Pause;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_webhook(&shared, true)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Pause;
        };
        if self.held.is_none() {
            return Action::Continue;
        }
        self.finish_webhook(&shared, true)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some((fingerprint, expires_at)) = self.remember.take() {
            if matches!(host::response_status(), Some(200..=299)) {
                replay::remember(&fingerprint, expires_at, host::now_millis() / 1000);
            }
        }
        Action::Continue
    }
}
