//! Strict request-target checks: is a `:path` already canonical, is a
//! `:method` a well-formed upper-case token.
//!
//! The filter never normalises a path itself: it only accepts paths that a
//! normaliser would leave unchanged. Anything an upstream could decode or
//! collapse into a different route (dot segments, encoded slashes, `;`
//! parameters, double encoding, lookalike `export.`) is a 400, so the route
//! the filter authorises is the route the upstream serves. This holds even
//! when Envoy's own path normalisation is switched off.

/// Why a `:path` is not canonical. Messages are safe to show to the client:
/// they never echo the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path must start with `/` (origin form)")]
    NotOriginForm,
    #[error("path contains a control character, space or DEL")]
    ControlCharacter,
    #[error("path contains a non-ASCII byte")]
    NonAscii,
    #[error("path contains a fragment (`#`)")]
    Fragment,
    #[error("path contains an empty segment (`//`)")]
    EmptySegment,
    #[error("path ends with `/`")]
    TrailingSlash,
    #[error("path contains a dot segment")]
    DotSegment,
    #[error("path segment ends with `.`")]
    TrailingDot,
    #[error("path segment starts or ends with (encoded) whitespace")]
    EdgeWhitespace,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a `;` parameter")]
    Semicolon,
    #[error("path contains the character `{0}`, which must be percent-encoded")]
    UnescapedCharacter(char),
    #[error("path contains an invalid percent escape")]
    InvalidEscape,
    #[error("path contains a lower-case percent escape")]
    LowercaseEscape,
    #[error("path contains an encoded `/` or `\\`")]
    EncodedSlash,
    #[error("path contains a percent-encoded unreserved character")]
    EncodedUnreserved,
    #[error("path contains an encoded `%` (double encoding)")]
    DoubleEncoding,
    #[error("path contains an encoded control character")]
    EncodedControl,
    #[error("path escapes do not decode to valid UTF-8")]
    InvalidUtf8,
}

/// Why a `:method` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    #[error("method is empty")]
    Empty,
    #[error("method must be upper case")]
    LowerCase,
    #[error("method is not an HTTP token")]
    NotToken,
    #[error("method is longer than {max} bytes")]
    TooLong { max: usize },
}

/// Longest method accepted; real methods are far shorter.
pub const MAX_METHOD_LEN: usize = 32;

/// Check that `raw` (a `:path` as sent, possibly with `?query`) is canonical,
/// and return the path without the query.
///
/// The whole request target must be printable ASCII without `#`; the path part
/// must be origin form with non-empty segments, no dot segments, no segment
/// ending in `.`, no trailing `/` (except `/` itself), no `\` or `;`, and
/// percent escapes that are upper-case, valid, decode to valid UTF-8 and do not
/// encode `/`, `\`, `%`, a control character or an unreserved character.
/// The query is not otherwise inspected: it takes no part in matching.
pub fn canonical_path(raw: &str) -> Result<&str, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    for &byte in raw.as_bytes() {
        match byte {
            0x00..=0x20 | 0x7f => return Err(PathError::ControlCharacter),
            0x80..=0xff => return Err(PathError::NonAscii),
            b'#' => return Err(PathError::Fragment),
            _ => {}
        }
    }
    let path = match raw.find('?') {
        Some(at) => &raw[..at],
        None => raw,
    };
    let Some(segments) = path.strip_prefix('/') else {
        return Err(PathError::NotOriginForm);
    };
    if segments.is_empty() {
        return Ok(path);
    }
    if segments.ends_with('/') {
        return Err(PathError::TrailingSlash);
    }
    let mut needs_utf8_check = false;
    for segment in segments.split('/') {
        let has_non_ascii_escape = check_segment(segment)?;
        if has_non_ascii_escape && decoded_edge_is_whitespace(segment) {
            return Err(PathError::EdgeWhitespace);
        }
        needs_utf8_check |= has_non_ascii_escape;
    }
    if needs_utf8_check {
        check_escapes_are_utf8(segments)?;
    }
    Ok(path)
}

/// Check one non-query path segment. Returns whether it holds escapes of
/// non-ASCII bytes (whose UTF-8 validity must then be checked).
pub(crate) fn check_segment(segment: &str) -> Result<bool, PathError> {
    if segment.is_empty() {
        return Err(PathError::EmptySegment);
    }
    if segment == "." || segment == ".." {
        return Err(PathError::DotSegment);
    }
    if segment.ends_with('.') {
        return Err(PathError::TrailingDot);
    }
    // `export%20` would match `{id}` here, and an upstream that trims the
    // segment would serve `export`: a lookalike, like a trailing dot.
    if segment.starts_with("%20") || segment.ends_with("%20") {
        return Err(PathError::EdgeWhitespace);
    }
    let bytes = segment.as_bytes();
    let mut has_non_ascii_escape = false;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        match byte {
            b'%' => {
                let decoded = decode_escape(bytes.get(at + 1..at + 3))?;
                match decoded {
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    b'%' => return Err(PathError::DoubleEncoding),
                    0x00..=0x1f | 0x7f => return Err(PathError::EncodedControl),
                    _ if is_unreserved(decoded) => return Err(PathError::EncodedUnreserved),
                    0x80..=0xff => has_non_ascii_escape = true,
                    _ => {}
                }
                at += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            _ if is_unreserved(byte) || is_allowed_delimiter(byte) => {}
            0x00..=0x20 | 0x7f => return Err(PathError::ControlCharacter),
            0x80..=0xff => return Err(PathError::NonAscii),
            other => return Err(PathError::UnescapedCharacter(char::from(other))),
        }
        at += 1;
    }
    Ok(has_non_ascii_escape)
}

/// Decode the two hex digits after a `%`; only upper-case hex is canonical.
fn decode_escape(digits: Option<&[u8]>) -> Result<u8, PathError> {
    let Some(&[high, low]) = digits else {
        return Err(PathError::InvalidEscape);
    };
    Ok(hex_value(high)? << 4 | hex_value(low)?)
}

fn hex_value(digit: u8) -> Result<u8, PathError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        b'a'..=b'f' => Err(PathError::LowercaseEscape),
        _ => Err(PathError::InvalidEscape),
    }
}

/// Decode the escapes of a path already checked by [`check_segment`] and
/// require the result to be UTF-8 (an upstream decoding `%C0%AE` leniently
/// could otherwise see a `.`). Only runs for paths with non-ASCII escapes.
fn check_escapes_are_utf8(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            decoded.push(decode_escape(bytes.get(at + 1..at + 3))?);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    std::str::from_utf8(&decoded)
        .map(|_| ())
        .map_err(|_| PathError::InvalidUtf8)
}

/// Whether a segment with non-ASCII escapes decodes to text that starts or
/// ends with Unicode whitespace or an invisible character (`export%C2%A0`),
/// which a trimming upstream would drop. Segments that are not valid UTF-8
/// are refused later by [`check_escapes_are_utf8`].
fn decoded_edge_is_whitespace(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            match decode_escape(bytes.get(at + 1..at + 3)) {
                Ok(byte) => decoded.push(byte),
                Err(_) => return false,
            }
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    let Ok(text) = std::str::from_utf8(&decoded) else {
        return false;
    };
    let invisible = |c: char| {
        c.is_whitespace() || matches!(c, '\u{200B}' | '\u{2060}' | '\u{FEFF}' | '\u{180E}')
    };
    text.chars().next().is_some_and(invisible) || text.chars().next_back().is_some_and(invisible)
}

/// RFC 3986 unreserved: ALPHA DIGIT `-` `.` `_` `~`.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The pchar delimiters that may appear raw in a canonical segment
/// (sub-delims without `;`, plus `:` and `@`).
fn is_allowed_delimiter(byte: u8) -> bool {
    matches!(
        byte,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
    )
}

/// Check that a `:method` is a non-empty RFC 9110 token without lower-case
/// letters (methods are case-sensitive; `get` is not `GET`).
pub fn check_method(method: &str) -> Result<(), MethodError> {
    if method.is_empty() {
        return Err(MethodError::Empty);
    }
    if method.len() > MAX_METHOD_LEN {
        return Err(MethodError::TooLong {
            max: MAX_METHOD_LEN,
        });
    }
    for &byte in method.as_bytes() {
        if byte.is_ascii_lowercase() {
            return Err(MethodError::LowerCase);
        }
        if !is_token_char(byte) {
            return Err(MethodError::NotToken);
        }
    }
    Ok(())
}

fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_plain_paths_are_canonical() {
        assert_eq!(canonical_path("/"), Ok("/"));
        assert_eq!(
            canonical_path("/api/v1/audit/logs"),
            Ok("/api/v1/audit/logs")
        );
        assert_eq!(
            canonical_path("/a/b:c@d!$&'()*+,="),
            Ok("/a/b:c@d!$&'()*+,=")
        );
    }

    #[test]
    fn query_is_stripped_and_not_matched() {
        assert_eq!(
            canonical_path("/api/v1/audit/logs?limit=10&x=%2F/.."),
            Ok("/api/v1/audit/logs")
        );
        assert_eq!(canonical_path("/?a"), Ok("/"));
    }

    #[test]
    fn legitimate_escapes_are_canonical() {
        assert_eq!(canonical_path("/caf%C3%A9"), Ok("/caf%C3%A9"));
        assert_eq!(canonical_path("/a%20b/%3B/%3F"), Ok("/a%20b/%3B/%3F"));
    }

    #[test]
    fn dot_segments_are_rejected_raw_and_encoded() {
        assert_eq!(canonical_path("/a/../b"), Err(PathError::DotSegment));
        assert_eq!(canonical_path("/a/./b"), Err(PathError::DotSegment));
        assert_eq!(canonical_path("/.."), Err(PathError::DotSegment));
        assert_eq!(
            canonical_path("/a/%2e%2e/b"),
            Err(PathError::LowercaseEscape)
        );
        assert_eq!(
            canonical_path("/a/%2E%2E/b"),
            Err(PathError::EncodedUnreserved)
        );
        assert_eq!(
            canonical_path("/a/.%2E/b"),
            Err(PathError::EncodedUnreserved)
        );
    }

    #[test]
    fn empty_segments_and_trailing_slash_are_rejected() {
        assert_eq!(canonical_path("//api"), Err(PathError::EmptySegment));
        assert_eq!(canonical_path("/api//v1"), Err(PathError::EmptySegment));
        assert_eq!(canonical_path("/api/"), Err(PathError::TrailingSlash));
    }

    #[test]
    fn encoded_slashes_and_backslashes_are_rejected_in_any_case() {
        for path in ["/a%2Fb", "/a%5Cb"] {
            assert_eq!(canonical_path(path), Err(PathError::EncodedSlash), "{path}");
        }
        for path in ["/a%2fb", "/a%5cb"] {
            assert_eq!(
                canonical_path(path),
                Err(PathError::LowercaseEscape),
                "{path}"
            );
        }
        assert_eq!(canonical_path("/a\\b"), Err(PathError::Backslash));
    }

    #[test]
    fn semicolon_parameters_and_fragments_are_rejected() {
        assert_eq!(canonical_path("/a;x=1/b"), Err(PathError::Semicolon));
        assert_eq!(canonical_path("/a/..;/b"), Err(PathError::Semicolon));
        assert_eq!(canonical_path("/a#frag"), Err(PathError::Fragment));
        assert_eq!(canonical_path("/a?q#frag"), Err(PathError::Fragment));
    }

    #[test]
    fn control_characters_space_del_and_non_ascii_are_rejected() {
        for path in ["/a\0b", "/a b", "/a\tb", "/a\x7fb", "/a?x y"] {
            assert_eq!(
                canonical_path(path),
                Err(PathError::ControlCharacter),
                "{path:?}"
            );
        }
        assert_eq!(canonical_path("/café"), Err(PathError::NonAscii));
    }

    #[test]
    fn encoded_unreserved_double_encoding_and_bad_escapes_are_rejected() {
        assert_eq!(canonical_path("/%41"), Err(PathError::EncodedUnreserved));
        assert_eq!(canonical_path("/a%7E"), Err(PathError::EncodedUnreserved));
        assert_eq!(canonical_path("/a%252F"), Err(PathError::DoubleEncoding));
        assert_eq!(canonical_path("/a%2"), Err(PathError::InvalidEscape));
        assert_eq!(canonical_path("/a%G1"), Err(PathError::InvalidEscape));
        assert_eq!(canonical_path("/a%00"), Err(PathError::EncodedControl));
        assert_eq!(canonical_path("/a%7F"), Err(PathError::EncodedControl));
    }

    #[test]
    fn escapes_that_are_not_utf8_are_rejected() {
        assert_eq!(canonical_path("/%C0%AE"), Err(PathError::InvalidUtf8));
        assert_eq!(canonical_path("/%C3"), Err(PathError::InvalidUtf8));
        assert_eq!(canonical_path("/%FF"), Err(PathError::InvalidUtf8));
    }

    #[test]
    fn asterisk_and_absolute_form_are_not_origin_form() {
        assert_eq!(canonical_path("*"), Err(PathError::NotOriginForm));
        assert_eq!(
            canonical_path("http://example.com/a"),
            Err(PathError::NotOriginForm)
        );
        assert_eq!(canonical_path("?a"), Err(PathError::NotOriginForm));
        assert_eq!(canonical_path(""), Err(PathError::Empty));
    }

    #[test]
    fn segment_ending_in_dot_is_rejected() {
        assert_eq!(
            canonical_path("/api/v1/audit/logs/export."),
            Err(PathError::TrailingDot)
        );
        assert_eq!(canonical_path("/a./b"), Err(PathError::TrailingDot));
    }

    #[test]
    fn segment_ending_in_encoded_whitespace_is_not_canonical() {
        for path in [
            "/api/v1/audit/logs/export%20",
            "/api/v1/audit/logs/%20export",
            "/api/v1/audit/logs/export%C2%A0",
            "/api/v1/audit/logs/export%E2%80%8B",
            "/api/v1/audit/logs/%EF%BB%BFexport",
            "/api/v1/audit/logs/export%E3%80%80/x",
        ] {
            assert_eq!(
                canonical_path(path),
                Err(PathError::EdgeWhitespace),
                "{path}"
            );
        }
        // Whitespace inside a segment is not a lookalike of another segment.
        assert_eq!(canonical_path("/a%20b"), Ok("/a%20b"));
        assert_eq!(canonical_path("/caf%C3%A9"), Ok("/caf%C3%A9"));
        assert_eq!(canonical_path("/.well-known/x"), Ok("/.well-known/x"));
    }

    #[test]
    fn characters_that_must_be_encoded_are_rejected() {
        for (path, bad) in [("/a{b}", '{'), ("/a|b", '|'), ("/a\"b", '"'), ("/a<b", '<')] {
            assert_eq!(
                canonical_path(path),
                Err(PathError::UnescapedCharacter(bad)),
                "{path}"
            );
        }
    }

    #[test]
    fn methods_must_be_upper_case_tokens() {
        assert_eq!(check_method("GET"), Ok(()));
        assert_eq!(check_method("M-SEARCH"), Ok(()));
        assert_eq!(check_method("get"), Err(MethodError::LowerCase));
        assert_eq!(check_method("Get"), Err(MethodError::LowerCase));
        assert_eq!(check_method(""), Err(MethodError::Empty));
        assert_eq!(check_method("GE T"), Err(MethodError::NotToken));
        assert_eq!(check_method("GET\0"), Err(MethodError::NotToken));
        assert_eq!(
            check_method(&"A".repeat(33)),
            Err(MethodError::TooLong { max: 32 })
        );
    }
}
