//! JWT parsing and verification: arbitrary `Authorization` values against a
//! policy with HS256/384/512, RS256/384/512 and ES256 keys.
//!
//! Properties: never panics; a token the engine accepts (directly through the
//! verifier, or as an allowed request) is signed by a configured key with
//! that key's algorithm, as checked by an independent oracle; the decision
//! through the token cache equals the uncached one.
#![no_main]

use avb_edge::policy::identity::bearer_token;
use avb_edge::policy::{Authorization, Effect, Request, TokenCache};
use avb_edge_fuzz::{jwt_policy, signed_by_fixture_key, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    let policy = jwt_policy();
    let Some(verifier) = policy.verifier() else {
        panic!("the jwt policy verifies bearer tokens");
    };
    if let Ok(token) = bearer_token(&value) {
        if verifier.verify(token, NOW).is_ok() {
            assert!(
                signed_by_fixture_key(token),
                "verified a token no configured key signed"
            );
        }
    }
    let mut cache = TokenCache::new(4);
    for path in ["/t", "/admin"] {
        let request = Request {
            method: Some("GET"),
            path: Some(path),
            authorization: Authorization::One(&value),
            jwt_payload: None,
        };
        let decision = policy.decide(&request, NOW);
        if decision.effect == Effect::Allow {
            let token = bearer_token(&value);
            assert!(
                token.is_ok_and(signed_by_fixture_key),
                "allowed {path} with a token no configured key signed"
            );
        }
        let cached = policy.decide_cached(&request, NOW, &mut cache);
        let again = policy.decide_cached(&request, NOW, &mut cache);
        for other in [&cached, &again] {
            assert_eq!(other.effect, decision.effect);
            assert_eq!(other.status, decision.status);
            assert_eq!(other.identity, decision.identity);
        }
    }
});
