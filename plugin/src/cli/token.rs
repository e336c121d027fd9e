//! `avb-policy token`: mint a development token with one of the policy's
//! `oct` keys, for local testing and the README's transcripts.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::policy::config::{RawIssuer, RawJwk};
use crate::policy::identity::{sign_hs, HmacAlgorithm};

use super::env_file::Environment;
use super::probe::{set_claim, unix_now};
use super::source::load_policy;
use super::{CliError, Outcome, TokenArgs};

pub fn run(args: &TokenArgs) -> Result<Outcome, CliError> {
    let environment = Environment::load(args.env_file.as_deref())?;
    let document = load_policy(&args.policy)?;
    document.compile(&environment)?;
    let ttl = parse_ttl(&args.ttl).map_err(CliError::Usage)?;
    let Some(identity) = &document.raw.identity else {
        return Err(CliError::Invalid(format!(
            "{}: the policy has no identity section, so it accepts no tokens",
            document.path.display()
        )));
    };
    let (issuer, key) = find_key(&identity.issuers, &args.kid).ok_or_else(|| {
        let known: Vec<String> = identity
            .issuers
            .iter()
            .flat_map(|issuer| issuer.jwks.keys.iter())
            .filter_map(|key| key.kid.clone())
            .collect();
        CliError::Usage(format!(
            "no key with kid `{}` in the policy (known kids: {})",
            args.kid,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })?;
    if key.kty != "oct" {
        return Err(CliError::Usage(format!(
            "key `{}` is an {} key: avb-policy signs only with oct (HMAC) keys, whose secret the \
             policy knows; mint RS/ES tokens with the identity provider that holds the private key",
            args.kid, key.kty
        )));
    }
    let algorithm = match key.alg.as_deref().unwrap_or("HS256") {
        "HS256" => HmacAlgorithm::Hs256,
        "HS384" => HmacAlgorithm::Hs384,
        "HS512" => HmacAlgorithm::Hs512,
        other => {
            return Err(CliError::Invalid(format!(
                "key `{}` has alg `{other}`, which is not an HMAC algorithm",
                args.kid
            )))
        }
    };
    let secret = key_secret(key, &environment)?;
    let now = unix_now();
    let mut claims = Value::Object(Map::new());
    set_claim(&mut claims, "iss", Value::from(issuer.issuer.as_str()));
    if let Some(audience) = issuer.audiences.first() {
        set_claim(&mut claims, "aud", Value::from(audience.as_str()));
    }
    set_claim(&mut claims, "iat", Value::from(now));
    set_claim(&mut claims, "exp", Value::from(now.saturating_add(ttl)));
    set_claim(
        &mut claims,
        &identity.subject_claim,
        Value::from(args.sub.as_str()),
    );
    let roles: Vec<String> = args
        .roles
        .iter()
        .map(|role| role.trim().to_owned())
        .filter(|role| !role.is_empty())
        .collect();
    set_claim(&mut claims, &identity.roles_claim, Value::from(roles));
    match (&args.tenant, &identity.tenant_claim) {
        (Some(tenant), Some(claim)) => set_claim(&mut claims, claim, Value::from(tenant.as_str())),
        (Some(_), None) => {
            return Err(CliError::Usage(
                "--tenant given, but the policy has no identity.tenant_claim".to_owned(),
            ))
        }
        (None, _) => {}
    }
    println!(
        "{}",
        sign_hs(algorithm, &secret, Some(&args.kid), &claims.to_string())
    );
    Ok(Outcome::Success)
}

fn find_key<'a>(issuers: &'a [RawIssuer], kid: &str) -> Option<(&'a RawIssuer, &'a RawJwk)> {
    issuers.iter().find_map(|issuer| {
        issuer
            .jwks
            .keys
            .iter()
            .find(|key| key.kid.as_deref() == Some(kid))
            .map(|key| (issuer, key))
    })
}

fn key_secret(key: &RawJwk, environment: &Environment) -> Result<Vec<u8>, CliError> {
    let encoded = match (&key.k, &key.k_env) {
        (Some(inline), _) => inline.clone(),
        (None, Some(name)) => environment.get(name).ok_or_else(|| {
            CliError::Usage(format!(
                "the key's secret is in `{name}`, which is not set: export it or pass --env-file (e.g. envoy/dev.env)"
            ))
        })?,
        (None, None) => {
            return Err(CliError::Invalid("the key has neither k nor k_env".to_owned()))
        }
    };
    let trimmed = encoded.trim();
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE.decode(trimmed))
        .map_err(|_| CliError::Invalid("the key's secret is not base64url".to_owned()))
}

/// `3600`, `90s`, `15m`, `1h` or `2d`, in seconds; zero is refused.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((index, last)) if last.is_ascii_alphabetic() => (&text[..index], Some(last)),
        _ => (text, None),
    };
    let multiplier = match unit {
        None | Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3_600,
        Some('d') => 86_400,
        Some(other) => {
            return Err(format!(
                "--ttl `{text}`: unknown unit `{other}` (use s, m, h or d)"
            ))
        }
    };
    let amount: u64 = digits
        .parse()
        .map_err(|_| format!("--ttl `{text}` is not a duration like 900, 15m or 1h"))?;
    match amount.checked_mul(multiplier) {
        Some(0) => Err("--ttl must be positive".to_owned()),
        Some(seconds) => Ok(seconds),
        None => Err(format!("--ttl `{text}` is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units_are_understood() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("90s").unwrap(), 90);
        assert_eq!(parse_ttl("15m").unwrap(), 900);
        assert_eq!(parse_ttl("1h").unwrap(), 3_600);
        assert_eq!(parse_ttl("2d").unwrap(), 172_800);
    }

    #[test]
    fn bad_ttls_are_refused() {
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("").is_err());
    }
}
