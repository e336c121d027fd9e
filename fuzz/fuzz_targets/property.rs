//! Envoy property decoding (jwt_authn payloads in dynamic metadata).
//!
//! Properties: `decode` never panics on any bytes; whatever it decodes
//! serialises back to JSON; deciding a request with it as the verified
//! payload never panics, and the ADMIN rule is allowed only when the roles
//! claim really names ADMIN.
#![no_main]

use avb_edge::policy::{Authorization, Effect, Request};
use avb_edge::property::decode;
use avb_edge_fuzz::{claim_names_role, metadata_policy, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(payload) = decode(data) else {
        return;
    };
    assert!(serde_json::to_string(&payload).is_ok());
    let policy = metadata_policy();
    for path in ["/admin", "/t/t1"] {
        let request = Request {
            method: Some("GET"),
            path: Some(path),
            authorization: Authorization::Absent,
            jwt_payload: Some(&payload),
        };
        let decision = policy.decide(&request, NOW);
        if path == "/admin" && decision.effect == Effect::Allow {
            assert!(
                claim_names_role(&payload["realm_access"]["roles"], "ADMIN"),
                "admin allowed without ADMIN in the roles claim"
            );
        }
        if path == "/t/t1" && decision.effect == Effect::Allow {
            assert!(
                payload["tenant_id"] == "t1"
                    || claim_names_role(&payload["realm_access"]["roles"], "PLATFORM_ADMIN"),
                "tenant t1 allowed for another tenant"
            );
        }
    }
});
