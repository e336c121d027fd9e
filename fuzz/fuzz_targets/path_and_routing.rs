//! Path canonicalisation and route matching against a fixed policy.
//!
//! Input: byte 0 picks the method, byte 1 the `Authorization` value, the rest
//! is the `:path` (lossy UTF-8, as any non-UTF-8 byte is refused anyway).
//! Properties: never panics; a non-canonical path is a 400 that names no
//! rule; canonicalisation is idempotent; the rule the engine reports is the
//! one the reference matcher picks; an allowed request's canonical path
//! matches the template of the rule it reports, with an admitted method and
//! the rule's requirement met.
#![no_main]

use avb_edge::policy::{
    canonical_path, Authorization, DecisionKind, Effect, Request, Requirement, Template,
};
use avb_edge_fuzz::{
    method_admitted, reference_best_match, routing_authorizations, routing_policy,
    template_matches, METHODS, NOW,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (Some(&method_pick), Some(&auth_pick)) = (data.first(), data.get(1)) else {
        return;
    };
    let method = METHODS[usize::from(method_pick) % METHODS.len()];
    let authorizations = routing_authorizations();
    // One extra slot for a duplicated Authorization header.
    let auth_index = usize::from(auth_pick) % (authorizations.len() + 1);
    let authorization = match authorizations.get(auth_index) {
        None => Authorization::Multiple,
        Some(None) => Authorization::Absent,
        Some(Some(value)) => Authorization::One(value),
    };
    let raw_path = String::from_utf8_lossy(&data[2..]);
    let policy = routing_policy();
    let request = Request {
        method: Some(method),
        path: Some(&raw_path),
        authorization,
        jwt_payload: None,
    };
    let decision = policy.decide(&request, NOW);

    let canonical = match canonical_path(&raw_path) {
        Ok(canonical) => canonical,
        Err(_) => {
            assert_eq!(
                decision.status, 400,
                "non-canonical {raw_path:?} got {decision:?}"
            );
            assert_eq!(decision.effect, Effect::Deny);
            assert_eq!(decision.rule, None);
            return;
        }
    };
    assert_eq!(
        canonical_path(canonical),
        Ok(canonical),
        "not idempotent: {raw_path:?}"
    );
    assert!(raw_path.starts_with(canonical) && !canonical.contains('?'));

    if decision.kind == DecisionKind::Rejected {
        // Only a malformed method may reject a canonical path.
        assert!(
            avb_edge::policy::check_method(method).is_err(),
            "{decision:?}"
        );
        return;
    }
    assert_eq!(decision.canonical_path.as_deref(), Some(canonical));
    assert_eq!(
        decision.rule,
        reference_best_match(policy, canonical, method),
        "engine and reference matcher disagree on {method} {canonical}"
    );

    if decision.effect == Effect::Allow {
        // unmatched: deny, so every allowed request names its rule.
        let Some(index) = decision.rule else {
            panic!("allowed without a rule: {method} {canonical}");
        };
        let rule = &policy.rules()[index];
        let template = Template::parse(rule.template());
        assert!(
            template.is_ok_and(|t| template_matches(&t, canonical)),
            "allowed {canonical} under {} which does not match",
            rule.template()
        );
        assert!(method_admitted(rule, method));
        let held = |role: &str| {
            decision
                .identity
                .as_ref()
                .is_some_and(|identity| identity.roles.iter().any(|r| r == role))
        };
        match rule.requirement() {
            Requirement::Public | Requirement::Webhook(_) => {}
            Requirement::Authenticated => assert!(decision.identity.is_some()),
            Requirement::AnyOf(roles) => assert!(roles.iter().any(|r| held(r))),
            Requirement::AllOf(roles) => assert!(roles.iter().all(|r| held(r))),
        }
        if rule.tenant_param().is_some() && !held("PLATFORM_ADMIN") {
            let tenant = decision.identity.as_ref().and_then(|i| i.tenant.as_deref());
            assert!(
                tenant.is_some_and(|t| canonical.split('/').any(|segment| segment == t)),
                "tenant rule allowed {canonical} for tenant {tenant:?}"
            );
        }
    }
});
