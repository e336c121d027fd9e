//! From verified claims to an [`Identity`]: subject, tenant and effective roles.
//!
//! The same extraction serves bearer tokens and jwt_authn metadata. Subject,
//! tenant and roles are forwarded upstream as `x-avb-*` headers, so each must
//! be header-safe; a claim that is not is refused rather than rewritten.

use serde_json::Value;

use crate::policy::roles::{is_valid_role_name, RoleGraph};

/// Longest subject or tenant accepted.
pub const MAX_IDENTITY_VALUE_LEN: usize = 512;

/// Who is calling, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub tenant: Option<String>,
    /// Effective roles (claimed plus inherited), sorted and deduplicated.
    pub roles: Vec<String>,
}

/// A dotted claim path such as `realm_access.roles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    parts: Vec<String>,
}

impl ClaimPath {
    /// Parse a dotted path; every part must be non-empty.
    pub fn parse(text: &str) -> Option<ClaimPath> {
        let parts: Vec<String> = text.split('.').map(str::to_owned).collect();
        if parts.iter().any(String::is_empty) {
            return None;
        }
        Some(ClaimPath { parts })
    }

    /// The value at this path, if every step is an object with the key.
    pub fn lookup<'v>(&self, claims: &'v Value) -> Option<&'v Value> {
        self.parts
            .iter()
            .try_fold(claims, |value, part| value.as_object()?.get(part))
    }
}

/// Which claims carry the subject, tenant and roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSettings {
    pub subject: ClaimPath,
    pub tenant: Option<ClaimPath>,
    pub roles: ClaimPath,
}

/// Why verified claims do not make an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("claims are not a JSON object")]
    NotAnObject,
    #[error("token has no subject claim")]
    MissingSubject,
    #[error("subject claim must be a non-empty printable ASCII string without commas")]
    InvalidSubject,
    #[error("tenant claim must be a non-empty printable ASCII string or integer without commas")]
    InvalidTenant,
    #[error("roles claim must be a list of role names or a space-separated string")]
    InvalidRoles,
}

impl ClaimSettings {
    /// Build the identity from verified claims. A missing roles claim means no
    /// roles; a missing tenant claim means no tenant.
    pub fn identity(&self, claims: &Value, roles: &RoleGraph) -> Result<Identity, IdentityError> {
        if !claims.is_object() {
            return Err(IdentityError::NotAnObject);
        }
        let subject = match self.subject.lookup(claims) {
            None | Some(Value::Null) => return Err(IdentityError::MissingSubject),
            Some(Value::String(subject)) if is_header_safe(subject) => subject.clone(),
            Some(_) => return Err(IdentityError::InvalidSubject),
        };
        let tenant = match self.tenant.as_ref().and_then(|path| path.lookup(claims)) {
            None | Some(Value::Null) => None,
            Some(Value::String(tenant)) if is_header_safe(tenant) => Some(tenant.clone()),
            Some(Value::Number(number)) if number.is_u64() || number.is_i64() => {
                Some(number.to_string())
            }
            Some(_) => return Err(IdentityError::InvalidTenant),
        };
        let claimed: Vec<&str> = match self.roles.lookup(claims) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(list)) => list.split_ascii_whitespace().collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().ok_or(IdentityError::InvalidRoles))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(IdentityError::InvalidRoles),
        };
        if !claimed.iter().all(|role| is_valid_role_name(role)) {
            return Err(IdentityError::InvalidRoles);
        }
        Ok(Identity {
            subject,
            tenant,
            roles: roles.effective_roles(claimed),
        })
    }
}

/// Safe as an HTTP header value and in a comma-separated list: printable
/// ASCII, no comma, no leading or trailing space, bounded length.
pub fn is_header_safe(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_IDENTITY_VALUE_LEN
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b',')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn settings() -> ClaimSettings {
        ClaimSettings {
            subject: ClaimPath::parse("sub").unwrap(),
            tenant: ClaimPath::parse("tenant_id"),
            roles: ClaimPath::parse("realm_access.roles").unwrap(),
        }
    }

    fn graph() -> RoleGraph {
        let mut inherits = BTreeMap::new();
        inherits.insert(
            "ADMIN".to_owned(),
            vec!["OPERATOR".to_owned(), "DEVELOPER".to_owned()],
        );
        RoleGraph::new(&inherits).unwrap()
    }

    #[test]
    fn roles_come_from_a_dotted_path_and_are_expanded() {
        let claims =
            json!({"sub": "alice", "tenant_id": "t1", "realm_access": {"roles": ["ADMIN"]}});
        let identity = settings().identity(&claims, &graph()).unwrap();
        assert_eq!(identity.subject, "alice");
        assert_eq!(identity.tenant.as_deref(), Some("t1"));
        assert_eq!(identity.roles, ["ADMIN", "DEVELOPER", "OPERATOR"]);
    }

    #[test]
    fn roles_may_be_a_space_separated_string() {
        let claims = json!({"sub": "bob", "realm_access": {"roles": "OPERATOR  DEVELOPER"}});
        let identity = settings().identity(&claims, &graph()).unwrap();
        assert_eq!(identity.roles, ["DEVELOPER", "OPERATOR"]);
        assert_eq!(identity.tenant, None);
    }

    #[test]
    fn missing_roles_claim_means_no_roles() {
        let identity = settings()
            .identity(&json!({"sub": "carol"}), &graph())
            .unwrap();
        assert!(identity.roles.is_empty());
    }

    #[test]
    fn integer_tenant_is_accepted_as_text() {
        let identity = settings()
            .identity(&json!({"sub": "d", "tenant_id": 42}), &graph())
            .unwrap();
        assert_eq!(identity.tenant.as_deref(), Some("42"));
    }

    #[test]
    fn unsafe_or_missing_values_are_refused() {
        let s = settings();
        let g = graph();
        assert_eq!(
            s.identity(&json!({}), &g),
            Err(IdentityError::MissingSubject)
        );
        assert_eq!(
            s.identity(&json!({"sub": "a,b"}), &g),
            Err(IdentityError::InvalidSubject)
        );
        assert_eq!(
            s.identity(&json!({"sub": "a\r\nx-avb-roles: ADMIN"}), &g),
            Err(IdentityError::InvalidSubject)
        );
        assert_eq!(
            s.identity(&json!({"sub": 7}), &g),
            Err(IdentityError::InvalidSubject)
        );
        assert_eq!(
            s.identity(&json!({"sub": "a", "tenant_id": "t,2"}), &g),
            Err(IdentityError::InvalidTenant)
        );
        assert_eq!(
            s.identity(&json!({"sub": "a", "realm_access": {"roles": ["A,B"]}}), &g),
            Err(IdentityError::InvalidRoles)
        );
        assert_eq!(
            s.identity(&json!({"sub": "a", "realm_access": {"roles": [1]}}), &g),
            Err(IdentityError::InvalidRoles)
        );
        assert_eq!(
            s.identity(
                &json!({"sub": "a", "realm_access": {"roles": {"x": 1}}}),
                &g
            ),
            Err(IdentityError::InvalidRoles)
        );
        assert_eq!(s.identity(&json!([1]), &g), Err(IdentityError::NotAnObject));
    }

    #[test]
    fn header_safety_refuses_commas_controls_and_edge_spaces() {
        assert!(is_header_safe("alice@example.com"));
        assert!(is_header_safe("Alice Smith"));
        assert!(!is_header_safe(""));
        assert!(!is_header_safe(" alice"));
        assert!(!is_header_safe("alice "));
        assert!(!is_header_safe("a,b"));
        assert!(!is_header_safe("a\tb"));
        assert!(!is_header_safe("caf\u{e9}"));
        assert!(!is_header_safe(&"a".repeat(MAX_IDENTITY_VALUE_LEN + 1)));
    }

    #[test]
    fn claim_paths_need_non_empty_parts() {
        assert!(ClaimPath::parse("a.b").is_some());
        assert!(ClaimPath::parse("").is_none());
        assert!(ClaimPath::parse("a..b").is_none());
        assert!(ClaimPath::parse(".a").is_none());
    }
}
