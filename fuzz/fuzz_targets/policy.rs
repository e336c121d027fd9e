//! Policy parsing and validation: arbitrary bytes into `Policy::from_json`.
//!
//! Properties: never panics, for parsing and for deciding requests under any
//! policy that compiles; compiling is deterministic (same revision twice).
#![no_main]

use avb_edge::policy::{Authorization, Policy, Request};
use avb_edge::webhook::WebhookHeaders;
use avb_edge_fuzz::{policy_env, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = Policy::from_json(data, &policy_env) else {
        return;
    };
    let again = Policy::from_json(data, &policy_env);
    assert!(again.is_ok_and(|p| p.revision() == policy.revision()));
    // Decide one request per rule, on a path built from its template.
    for rule in policy.rules() {
        let path: String = rule
            .template()
            .split('/')
            .map(|segment| match segment {
                "*" | "**" => "x",
                s if s.starts_with('{') => "t1",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/");
        let method = rule
            .methods()
            .and_then(|methods| methods.first())
            .map_or("GET", String::as_str);
        for authorization in [Authorization::Absent, Authorization::One("Bearer a.b.c")] {
            let request = Request {
                method: Some(method),
                path: Some(&path),
                authorization,
                jwt_payload: None,
            };
            let decision = policy.decide(&request, NOW);
            assert!(
                matches!(decision.status, 200 | 400 | 401 | 403),
                "{decision:?}"
            );
        }
    }
    for name in policy.webhook_names() {
        if let Some(webhook) = policy.webhook(name) {
            let _ = webhook.check_headers(&WebhookHeaders::default());
        }
    }
});
