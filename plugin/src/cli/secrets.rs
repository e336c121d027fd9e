//! The `*_env` secret references of a policy, and placeholder values that let
//! the engine compile a policy offline when the real secrets are absent.
//!
//! A secret is a deploy-time property of the Wasm VM, not of the policy file,
//! so `check`, `explain`, `test` and `diff` must work without it. Each
//! placeholder is well formed for its field (a 64-byte `oct` key, an RSA
//! public key whose private half was discarded when it was generated), so the
//! rest of the policy is validated exactly as the filter would.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::policy::RawPolicy;

use super::env_file::Environment;

/// What an environment variable named by the policy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretKind {
    /// `identity.issuers[].jwks.keys[].k_env`: a base64url `oct` key.
    JwkSecret,
    /// `webhooks.<name>.hmac_keys[].secret_env`: Lago's HMAC key.
    WebhookHmacSecret,
    /// `webhooks.<name>.jwt.public_key_env`: Lago's RSA public key.
    WebhookPublicKey,
    /// `audit.token_env`: the companion's ingest token.
    AuditToken,
}

/// Every `*_env` name the policy references, with what it holds, sorted by name.
pub fn secret_references(raw: &RawPolicy) -> BTreeMap<String, SecretKind> {
    let mut references = BTreeMap::new();
    if let Some(identity) = &raw.identity {
        for issuer in &identity.issuers {
            for key in &issuer.jwks.keys {
                if let Some(name) = &key.k_env {
                    references.insert(name.clone(), SecretKind::JwkSecret);
                }
            }
        }
    }
    for webhook in raw.webhooks.values() {
        for key in &webhook.hmac_keys {
            if let Some(name) = &key.secret_env {
                references.insert(name.clone(), SecretKind::WebhookHmacSecret);
            }
        }
        if let Some(name) = webhook
            .jwt
            .as_ref()
            .and_then(|jwt| jwt.public_key_env.as_ref())
        {
            references.insert(name.clone(), SecretKind::WebhookPublicKey);
        }
    }
    if let Some(name) = raw
        .audit
        .as_ref()
        .and_then(|audit| audit.token_env.as_ref())
    {
        references.insert(name.clone(), SecretKind::AuditToken);
    }
    references
}

const PLACEHOLDER_RSA_PUBLIC_KEY: &str = include_str!("placeholder_rsa_public.pem");

fn placeholder(kind: SecretKind) -> String {
    match kind {
        SecretKind::JwkSecret => URL_SAFE_NO_PAD.encode([0x5a_u8; 64]),
        SecretKind::WebhookHmacSecret => "avb-policy-placeholder-hmac-secret".to_owned(),
        SecretKind::WebhookPublicKey => PLACEHOLDER_RSA_PUBLIC_KEY.to_owned(),
        SecretKind::AuditToken => "avb-policy-placeholder-audit-token".to_owned(),
    }
}

/// Resolves `*_env` names from `environment`, falling back to placeholders.
pub struct OfflineSecrets {
    values: BTreeMap<String, String>,
    placeholders: Vec<String>,
}

impl OfflineSecrets {
    pub fn new(raw: &RawPolicy, environment: &Environment) -> OfflineSecrets {
        let mut values = BTreeMap::new();
        let mut placeholders = Vec::new();
        for (name, kind) in secret_references(raw) {
            let value = match environment.get(&name) {
                Some(value) => value,
                None => {
                    placeholders.push(name.clone());
                    placeholder(kind)
                }
            };
            values.insert(name, value);
        }
        OfflineSecrets {
            values,
            placeholders,
        }
    }

    /// The resolver handed to the engine.
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    /// Names that were not set and got a placeholder.
    pub fn placeholders(&self) -> &[String] {
        &self.placeholders
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawPolicy {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn every_kind_of_reference_is_found() {
        let policy = raw(r#"{
            "identity": {"roles_claim": "roles", "issuers": [{"issuer": "i", "audiences": ["a"],
                "jwks": {"keys": [{"kty": "oct", "k_env": "JWK"}]}}]},
            "rules": [],
            "webhooks": {"lago": {"provider": "lago", "algorithms": ["hmac", "jwt"],
                "hmac_keys": [{"id": "k1", "secret_env": "HMAC"}],
                "jwt": {"issuer": "https://lago", "public_key_env": "PUB"}}},
            "audit": {"cluster": "c", "authority": "a", "path": "/p", "token_env": "TOKEN"}
        }"#);
        let references = secret_references(&policy);
        assert_eq!(references["JWK"], SecretKind::JwkSecret);
        assert_eq!(references["HMAC"], SecretKind::WebhookHmacSecret);
        assert_eq!(references["PUB"], SecretKind::WebhookPublicKey);
        assert_eq!(references["TOKEN"], SecretKind::AuditToken);
    }

    #[test]
    fn a_policy_without_env_references_has_none() {
        assert!(secret_references(&raw(r#"{"rules": []}"#)).is_empty());
    }

    #[test]
    fn unset_variables_get_placeholders_and_are_reported() {
        let policy = raw(r#"{"rules": [], "audit": {"cluster": "c", "authority": "a",
            "path": "/p", "token_env": "AVB_POLICY_TEST_SURELY_UNSET"}}"#);
        let secrets = OfflineSecrets::new(&policy, &Environment::default());
        assert_eq!(secrets.placeholders(), ["AVB_POLICY_TEST_SURELY_UNSET"]);
        assert!(secrets.lookup("AVB_POLICY_TEST_SURELY_UNSET").is_some());
        assert!(secrets.lookup("NOT_REFERENCED").is_none());
    }
}
