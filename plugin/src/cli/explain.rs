//! `avb-policy explain`: what the filter would do with one request.

use serde_json::json;

use crate::policy::{Decision, DecisionKind, Effect, Policy};

use super::env_file::Environment;
use super::probe::{unix_now, Caller, ProbePolicy};
use super::source::load_policy;
use super::{CallerArgs, CliError, ExplainArgs, Outcome};

pub fn run(args: &ExplainArgs) -> Result<Outcome, CliError> {
    let environment = Environment::load(args.env_file.as_deref())?;
    let document = load_policy(&args.policy)?;
    let compiled = document.compile(&environment)?;
    let probe = ProbePolicy::new(&document, &environment)?;
    let caller = caller_from(&args.caller);
    let decision = probe.decide(&args.method, &args.path, &caller, unix_now());
    let report = Report {
        policy: probe.policy(),
        revision: compiled.policy.revision(),
        caller: &caller,
        decision: &decision,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(Outcome::Success)
}

pub fn caller_from(args: &CallerArgs) -> Caller {
    if args.anonymous {
        return Caller::Anonymous;
    }
    Caller::Token {
        roles: args
            .roles
            .iter()
            .flatten()
            .map(|role| role.trim().to_owned())
            .filter(|role| !role.is_empty())
            .collect(),
        tenant: args.tenant.clone(),
        subject: args.subject.clone(),
    }
}

/// The one-word outcome shared by `explain`, `test` and `diff`.
pub fn outcome_label(decision: &Decision) -> &'static str {
    match decision.kind {
        DecisionKind::Allowed => "allow",
        DecisionKind::Denied => "deny",
        DecisionKind::Unauthenticated => "unauthenticated",
        DecisionKind::Rejected => "bad_request",
        DecisionKind::DryRunDenied => "dry_run_deny",
        DecisionKind::Webhook => "webhook",
    }
}

struct Report<'a> {
    policy: &'a Policy,
    revision: &'a str,
    caller: &'a Caller,
    decision: &'a Decision,
}

impl Report<'_> {
    fn rule_name(&self) -> Option<&str> {
        self.decision
            .rule
            .and_then(|index| self.policy.rules().get(index))
            .map(|rule| rule.name())
    }

    fn effective_roles(&self) -> Option<&[String]> {
        self.decision
            .identity
            .as_ref()
            .map(|identity| identity.roles.as_slice())
    }

    fn text(&self) -> String {
        let decision = self.decision;
        let effect = match decision.effect {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        };
        let mut lines = vec![
            format!(
                "decision:        {} ({effect}, status {})",
                outcome_label(decision),
                decision.status
            ),
            format!("rule:            {}", self.rule_name().unwrap_or("<none>")),
            format!("reason:          {}", decision.reason),
        ];
        if !decision.detail.is_empty() {
            lines.push(format!("detail:          {}", decision.detail));
        }
        if let Some(error) = decision.error {
            lines.push(format!("error:           {error}"));
        }
        lines.push(format!("caller:          {}", self.caller.label()));
        match self.effective_roles() {
            Some([]) => lines.push("effective roles: <none>".to_owned()),
            Some(roles) => lines.push(format!("effective roles: {}", roles.join(", "))),
            None => lines.push("effective roles: <no identity>".to_owned()),
        }
        if let Some(identity) = &decision.identity {
            lines.push(format!("subject:         {}", identity.subject));
            if let Some(tenant) = &identity.tenant {
                lines.push(format!("tenant:          {tenant}"));
            }
        }
        lines.push(format!(
            "canonical path:  {}",
            decision
                .canonical_path
                .as_deref()
                .unwrap_or("<not canonical>")
        ));
        if let Some(webhook) = &decision.webhook {
            lines.push(format!(
                "webhook:         {webhook} (the body is verified before it reaches the upstream)"
            ));
        }
        lines.push(format!("policy revision: {}", self.revision));
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }

    fn json(&self) -> serde_json::Value {
        let decision = self.decision;
        json!({
            "decision": outcome_label(decision),
            "effect": match decision.effect { Effect::Allow => "allow", Effect::Deny => "deny" },
            "status": decision.status,
            "rule": self.rule_name(),
            "reason": decision.reason,
            "detail": decision.detail,
            "error": decision.error,
            "caller": self.caller.label(),
            "effective_roles": self.effective_roles(),
            "subject": decision.identity.as_ref().map(|identity| identity.subject.as_str()),
            "tenant": decision.identity.as_ref().and_then(|identity| identity.tenant.as_deref()),
            "canonical_path": decision.canonical_path,
            "webhook": decision.webhook,
            "revision": self.revision,
        })
    }
}
