//! Development tokens for the shipped policy: HS256, signed with the local dev
//! key from `envoy/dev.env` by the engine's own signer.

use crate::procs::envoy::dev_env;
use anyhow::Context;
use avb_edge::policy::identity::{sign_hs, HmacAlgorithm};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::time::{SystemTime, UNIX_EPOCH};

/// The issuer, audience and key id of the shipped policy's dev key.
pub const DEV_ISSUER: &str = "https://id.agentvoicebox.example";
pub const DEV_AUDIENCE: &str = "avb-api";
pub const DEV_KID: &str = "dev-hs-1";

/// A token for `subject` with `roles` (at `realm_access.roles`) and
/// `tenant_id`, issued now and valid for `lifetime_secs`.
pub fn dev_token(
    subject: &str,
    roles: &[&str],
    tenant: &str,
    lifetime_secs: u64,
) -> anyhow::Result<String> {
    let key_b64 = dev_env()?
        .remove("AVB_JWT_HS_KEY")
        .context("AVB_JWT_HS_KEY in envoy/dev.env")?;
    let key = URL_SAFE_NO_PAD
        .decode(key_b64)
        .context("AVB_JWT_HS_KEY is base64url")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": subject, "tenant_id": tenant,
        "iat": now, "exp": now + lifetime_secs, "realm_access": {"roles": roles},
    });
    Ok(sign_hs(
        HmacAlgorithm::Hs256,
        &key,
        Some(DEV_KID),
        &claims.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use avb_edge::policy::identity::Verifier;

    #[test]
    fn dev_tokens_verify_under_the_shipped_policy() {
        let policy_json = crate::procs::envoy::shipped_policy_json().unwrap();
        let env = dev_env().unwrap();
        let policy =
            avb_edge::policy::Policy::from_json(policy_json.as_bytes(), &|k| env.get(k).cloned())
                .unwrap();
        let token = dev_token("op-1", &["OPERATOR"], "tenant-a", 60).unwrap();
        let verifier: &Verifier = policy.verifier().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(verifier.verify(&token, now).is_ok());
        assert!(
            verifier.verify(&token, now + 3600).is_err(),
            "expired after its lifetime"
        );
    }
}
