//! Pure audit-event model shared by the filter (which produces events) and the
//! companion (which stores them). No proxy-wasm imports.
//!
//! An event never carries a token, a key, a signature or a request body: only
//! what an auditor needs to know who was refused what, and why.

use serde::{Deserialize, Serialize};

/// Every kind of event the trail knows.
pub const KINDS: &[&str] = &[
    "authz.allowed",
    "authz.denied",
    "authz.unauthenticated",
    "authz.dry_run_denied",
    "request.rejected",
    "webhook.verified",
    "webhook.rejected",
    "webhook.duplicate",
    "cache.invalidated",
    "audit.purged",
];

/// One audit record as it travels from the filter to the companion (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// The decision id (unique across workers and Envoy instances).
    pub id: String,
    /// RFC 3339, UTC, millisecond precision.
    pub time: String,
    pub kind: String,
    /// `allow` or `deny`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Formats seconds and milliseconds since the Unix epoch as RFC 3339 UTC with
/// millisecond precision (`2026-11-29T22:14:13.123Z`), without a date library.
pub fn rfc3339_millis(unix_millis: u64) -> String {
    let secs = unix_millis / 1000;
    let millis = unix_millis % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's civil-from-days algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_formats_as_rfc3339() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn leap_day_and_millis_format_correctly() {
        // 2024-02-29T12:34:56.789Z
        assert_eq!(
            rfc3339_millis(1_709_210_096_789),
            "2024-02-29T12:34:56.789Z"
        );
    }

    #[test]
    fn end_of_year_rolls_over() {
        assert_eq!(
            rfc3339_millis(1_798_761_599_999),
            "2026-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_millis(1_798_761_600_000),
            "2027-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<AuditEvent>(
            r#"{"id":"a","time":"t","kind":"authz.denied","outcome":"deny","token":"x"}"#,
        );
        assert!(err.is_err());
    }

    #[test]
    fn empty_optionals_are_omitted() {
        let ev = AuditEvent {
            id: "d1".into(),
            time: rfc3339_millis(0),
            kind: "authz.denied".into(),
            outcome: "deny".into(),
            ..Default::default()
        };
        let json = serde_json::to_string(&ev).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"id":"d1","time":"1970-01-01T00:00:00.000Z","kind":"authz.denied","outcome":"deny"}"#
        );
    }
}
