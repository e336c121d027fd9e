//! JWT parsing and verification: arbitrary `Authorization` values against a
//! policy with HS256/384/512, RS256/384/512 and ES256 keys.
//!
//! Two input modes. Raw: the bytes are the `Authorization` value. Structured
//! (first byte 0xFF): `header-json\nclaims-json`, signed with the fixture
//! HS256 key, so mutations reach the checks behind the signature.
//!
//! Properties: never panics; a token the engine accepts (directly through the
//! verifier, or as an allowed request) is signed by a configured key with
//! that key's algorithm, as checked by an independent oracle, and carries
//! acceptable `iss`/`aud`/`exp`/`nbf`/`iat`; `/admin` is allowed only with
//! ADMIN in the roles claim; the decision through the token cache equals the
//! uncached one.
#![no_main]

use avb_edge::policy::identity::bearer_token;
use avb_edge::policy::{Authorization, Effect, Request, TokenCache};
use avb_edge_fuzz::{
    claim_names_role, claims_acceptable, fixture_hs256_secret, hs256_over, jwt_policy,
    signed_by_fixture_key, split_fields, NOW,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let value = match data.split_first() {
        Some((0xFF, rest)) => {
            let (fields, claims) = split_fields(rest, 1);
            format!(
                "Bearer {}",
                hs256_over(&fixture_hs256_secret(), fields[0], claims)
            )
        }
        _ => String::from_utf8_lossy(data).into_owned(),
    };
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
            let token = bearer_token(&value).unwrap_or_default();
            assert!(
                signed_by_fixture_key(token),
                "allowed {path} with a token no configured key signed"
            );
            let claims: serde_json::Value = token
                .split('.')
                .nth(1)
                .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or_default();
            assert!(
                claims_acceptable(&claims),
                "allowed {path} with claims {claims}"
            );
            if path == "/admin" {
                assert!(
                    claim_names_role(&claims["realm_access"]["roles"], "ADMIN"),
                    "allowed /admin without ADMIN: {claims}"
                );
            }
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
