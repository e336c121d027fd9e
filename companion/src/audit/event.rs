//! Checking an incoming event and fixing its canonical form.
//!
//! The event model itself ([`AuditEvent`]) is shared with the filter, which
//! produces the events; this module decides what the store accepts.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub use avb_edge::audit::{AuditEvent, KINDS};

/// Longest event id accepted.
pub const MAX_ID_LEN: usize = 128;
/// Longest value accepted in any free-text field (reason, path, subject, ...).
pub const MAX_TEXT_LEN: usize = 4096;
/// Most roles one event may list.
pub const MAX_ROLES: usize = 64;
/// Largest `details` object accepted, in bytes of canonical JSON.
pub const MAX_DETAILS_BYTES: usize = 16 * 1024;

/// Why one event was refused. Messages are precise enough for the sender to
/// fix its encoder, and never echo the offending value (it may be anything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the event is not a valid JSON audit event: {0}")]
    Malformed(String),
    #[error("id must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ : -")]
    InvalidId,
    #[error("time must be an RFC 3339 timestamp (e.g. 2026-01-02T03:04:05.678Z)")]
    InvalidTime,
    #[error("kind is not one of the known kinds ({})", KINDS.join(", "))]
    UnknownKind,
    #[error("outcome must be \"allow\" or \"deny\"")]
    InvalidOutcome,
    #[error("status must be an HTTP status code (100 to 599)")]
    InvalidStatus,
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("roles lists more than {MAX_ROLES} entries")]
    TooManyRoles,
    #[error("details is larger than {MAX_DETAILS_BYTES} bytes")]
    DetailsTooLarge,
}

/// An event that passed validation, in the exact form the chain hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedEvent {
    /// The event with its time normalised to RFC 3339 UTC with milliseconds.
    pub event: AuditEvent,
    /// The event time in milliseconds since the Unix epoch (for filters).
    pub time_ms: i64,
    /// The canonical JSON encoding of `event` (what is stored and hashed).
    pub canonical: String,
}

/// Whether `id` is an acceptable event id: 1..=128 of `[A-Za-z0-9._:-]`.
pub fn is_valid_event_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Parses an RFC 3339 timestamp (any offset) into milliseconds since the epoch.
pub fn parse_time_ms(text: &str) -> Option<i64> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn format_time_ms(time_ms: i64) -> String {
    let nanos = i128::from(time_ms) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        // Unreachable for times that came through `parse_time_ms`.
        Err(_) => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

/// The current time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// A random 128-bit event id in lowercase hex (for events the companion
/// writes itself: `cache.invalidated`, `audit.purged`).
pub fn new_event_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS refused randomness (practically never); fall back to a value
        // that is still unique per process and instant rather than failing the
        // audit write.
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let counter = FALLBACK_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_be_bytes());
        bytes[12..].copy_from_slice(&counter.to_be_bytes());
    }
    hex(&bytes)
}

static FALLBACK_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Decodes one JSON value as an event and validates it.
pub fn validate_value(value: Value) -> Result<ValidatedEvent, EventError> {
    let event: AuditEvent =
        serde_json::from_value(value).map_err(|e| EventError::Malformed(e.to_string()))?;
    validate(event)
}

/// Validates an event and brings it into canonical form.
pub fn validate(mut event: AuditEvent) -> Result<ValidatedEvent, EventError> {
    if !is_valid_event_id(&event.id) {
        return Err(EventError::InvalidId);
    }
    let time_ms = parse_time_ms(&event.time).ok_or(EventError::InvalidTime)?;
    event.time = format_time_ms(time_ms);
    if !KINDS.contains(&event.kind.as_str()) {
        return Err(EventError::UnknownKind);
    }
    if event.outcome != "allow" && event.outcome != "deny" {
        return Err(EventError::InvalidOutcome);
    }
    if let Some(status) = event.status {
        if !(100..=599).contains(&status) {
            return Err(EventError::InvalidStatus);
        }
    }
    let texts: [(&'static str, &Option<String>); 8] = [
        ("reason", &event.reason),
        ("rule", &event.rule),
        ("method", &event.method),
        ("path", &event.path),
        ("subject", &event.subject),
        ("tenant", &event.tenant),
        ("source", &event.source),
        ("request_id", &event.request_id),
    ];
    for (field, value) in texts {
        check_len(field, value.as_deref())?;
    }
    check_len("policy_revision", event.policy_revision.as_deref())?;
    if event.roles.len() > MAX_ROLES {
        return Err(EventError::TooManyRoles);
    }
    for role in &event.roles {
        check_len("roles", Some(role))?;
    }
    let value = serde_json::to_value(&event).map_err(|e| EventError::Malformed(e.to_string()))?;
    let canonical = canonical_json(&value);
    let details_len = event
        .details
        .iter()
        .map(|(k, v)| k.len() + canonical_json(v).len())
        .sum::<usize>();
    if details_len > MAX_DETAILS_BYTES {
        return Err(EventError::DetailsTooLarge);
    }
    Ok(ValidatedEvent {
        event,
        time_ms,
        canonical,
    })
}

fn check_len(field: &'static str, value: Option<&str>) -> Result<(), EventError> {
    match value {
        Some(text) if text.len() > MAX_TEXT_LEN => Err(EventError::TooLong {
            field,
            max: MAX_TEXT_LEN,
        }),
        _ => Ok(()),
    }
}

pub use avb_edge::strict_json::canonical_json;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({"id": "ev-1", "time": "2026-01-02T03:04:05.678Z", "kind": "authz.denied", "outcome": "deny"})
    }

    #[test]
    fn minimal_event_is_accepted_and_canonical() {
        let ok = validate_value(minimal()).unwrap();
        assert_eq!(ok.event.id, "ev-1");
        assert_eq!(
            ok.canonical,
            r#"{"id":"ev-1","kind":"authz.denied","outcome":"deny","time":"2026-01-02T03:04:05.678Z"}"#
        );
        assert_eq!(ok.time_ms, 1_767_323_045_678);
    }

    #[test]
    fn time_with_offset_is_normalised_to_utc_millis() {
        let mut value = minimal();
        value["time"] = json!("2026-01-02T05:04:05.678912+02:00");
        let ok = validate_value(value).unwrap();
        assert_eq!(ok.event.time, "2026-01-02T03:04:05.678Z");
    }

    #[test]
    fn unparseable_time_is_refused() {
        for bad in ["yesterday", "2026-01-02", "2026-13-02T00:00:00Z", ""] {
            let mut value = minimal();
            value["time"] = json!(bad);
            assert_eq!(
                validate_value(value).unwrap_err(),
                EventError::InvalidTime,
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_outside_the_alphabet_or_too_long_are_refused() {
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(129)] {
            let mut value = minimal();
            value["id"] = json!(bad);
            assert_eq!(
                validate_value(value).unwrap_err(),
                EventError::InvalidId,
                "{bad}"
            );
        }
        let mut value = minimal();
        value["id"] = json!("A-z_0.9:".repeat(16));
        assert!(validate_value(value).is_ok());
    }

    #[test]
    fn unknown_kind_and_outcome_are_refused() {
        let mut value = minimal();
        value["kind"] = json!("authz.maybe");
        assert_eq!(validate_value(value).unwrap_err(), EventError::UnknownKind);
        let mut value = minimal();
        value["outcome"] = json!("Allow");
        assert_eq!(
            validate_value(value).unwrap_err(),
            EventError::InvalidOutcome
        );
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_malformed() {
        let mut value = minimal();
        value["token"] = json!("secret");
        assert!(matches!(
            validate_value(value).unwrap_err(),
            EventError::Malformed(_)
        ));
        let mut value = minimal();
        value["status"] = json!("403");
        assert!(matches!(
            validate_value(value).unwrap_err(),
            EventError::Malformed(_)
        ));
        assert!(matches!(
            validate_value(json!([1])).unwrap_err(),
            EventError::Malformed(_)
        ));
    }

    #[test]
    fn out_of_range_status_and_oversized_fields_are_refused() {
        let mut value = minimal();
        value["status"] = json!(42);
        assert_eq!(
            validate_value(value).unwrap_err(),
            EventError::InvalidStatus
        );
        let mut value = minimal();
        value["path"] = json!("/".repeat(MAX_TEXT_LEN + 1));
        assert_eq!(
            validate_value(value).unwrap_err(),
            EventError::TooLong {
                field: "path",
                max: MAX_TEXT_LEN
            }
        );
        let mut value = minimal();
        value["roles"] = json!(vec!["R"; MAX_ROLES + 1]);
        assert_eq!(validate_value(value).unwrap_err(), EventError::TooManyRoles);
        let mut value = minimal();
        value["details"] = json!({"blob": "x".repeat(MAX_DETAILS_BYTES)});
        assert_eq!(
            validate_value(value).unwrap_err(),
            EventError::DetailsTooLarge
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = json!({"b": 1, "a": {"z": [true, null, {"y": "\u{1}", "x": 1.5}], "c": "é"}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":"é","z":[true,null,{"x":1.5,"y":"\u0001"}]},"b":1}"#
        );
    }

    #[test]
    fn new_event_ids_are_random_128_bit_hex() {
        let a = new_event_id();
        let b = new_event_id();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert!(is_valid_event_id(&a));
    }

    #[test]
    fn time_round_trips_through_millis() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            format_time_ms(1_709_210_096_789),
            "2024-02-29T12:34:56.789Z"
        );
        assert_eq!(parse_time_ms("not a time"), None);
    }
}
