//! Tenant ids and the key-naming contract `tenant:{tenant_id}:*`.

use std::fmt;

use super::CacheError;

/// Longest tenant id accepted.
pub const MAX_TENANT_ID_LEN: usize = 128;

/// A tenant id checked against the strict alphabet (letters, digits, `-`, `_`,
/// `.`; 1 to 128 characters). Only [`validate_tenant_id`] makes one, so holding
/// a `TenantId` means its keys can be matched without surprises.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    /// The id as given (already validated).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The exact prefix every key of this tenant starts with: `tenant:{id}:`.
    pub fn key_prefix(&self) -> String {
        format!("tenant:{}:", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks `id` against the strict alphabet.
///
/// Escaping alone is not enough: a `:` would let tenant `acme` reach into
/// `tenant:acme:x:*` of a tenant called `acme:x`, so anything outside letters,
/// digits, `-`, `_` and `.` is refused before Redis is touched.
pub fn validate_tenant_id(id: &str) -> Result<TenantId, CacheError> {
    if id.is_empty() {
        return Err(CacheError::InvalidTenant {
            reason: "it is empty".to_owned(),
        });
    }
    if id.len() > MAX_TENANT_ID_LEN {
        return Err(CacheError::InvalidTenant {
            reason: format!(
                "it is {} bytes long, at most {MAX_TENANT_ID_LEN} are allowed",
                id.len()
            ),
        });
    }
    if let Some(bad) = id.chars().find(|c| !is_tenant_id_char(*c)) {
        return Err(CacheError::InvalidTenant {
            reason: format!(
                "it contains {}; only letters, digits, '-', '_' and '.' are allowed",
                describe_char(bad)
            ),
        });
    }
    Ok(TenantId(id.to_owned()))
}

fn is_tenant_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Names a rejected character without echoing control characters raw.
fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("{:?}", c.escape_unicode().to_string())
    }
}

/// The SCAN MATCH pattern for a tenant: `tenant:{id}:*`.
///
/// The id is glob-escaped (`* ? [ ] \`) even though validation already keeps
/// those characters out: a second guard in case the alphabet is ever widened.
pub fn tenant_pattern(t: &TenantId) -> String {
    format!("tenant:{}:*", escape_glob(t.as_str()))
}

/// Escapes every character Redis's glob matcher treats specially.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ids_are_accepted() {
        for id in ["acme", "ACME-2", "tenant_1.eu", "a", &"x".repeat(128)] {
            assert_eq!(validate_tenant_id(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn glob_characters_colon_and_empty_are_rejected() {
        for id in [
            "", "*", "acme*", "ac?me", "[a]", "a]", "a\\", "acme:x", "a b", "a/b", "a\n", "é",
            "a\0",
        ] {
            let err = validate_tenant_id(id).unwrap_err();
            assert!(
                matches!(err, CacheError::InvalidTenant { .. }),
                "{id:?} gave {err}"
            );
        }
    }

    #[test]
    fn ids_longer_than_128_are_rejected() {
        let err = validate_tenant_id(&"a".repeat(129)).unwrap_err();
        assert!(err.to_string().contains("129"), "{err}");
    }

    #[test]
    fn rejection_message_names_the_character_without_echoing_controls() {
        let err = validate_tenant_id("ab\u{1b}[2J").unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
        assert!(err.contains("u{1b}"), "{err}");
    }

    #[test]
    fn pattern_and_prefix_follow_the_key_contract() {
        let t = validate_tenant_id("acme.eu-1").unwrap();
        assert_eq!(tenant_pattern(&t), "tenant:acme.eu-1:*");
        assert_eq!(t.key_prefix(), "tenant:acme.eu-1:");
        assert_eq!(t.to_string(), "acme.eu-1");
    }

    #[test]
    fn glob_escaping_covers_all_five_special_characters() {
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
        assert_eq!(escape_glob("plain.id"), "plain.id");
    }
}
