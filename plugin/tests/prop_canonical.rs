//! Property tests of path canonicalisation: idempotence, and agreement with
//! an RFC 3986 normaliser (what Envoy's `normalize_path`/`merge_slashes` or an
//! upstream framework would do): a path the filter accepts is one that no
//! normaliser changes, so the route the filter authorises is the route the
//! upstream serves.

// clippy.toml allows these inside #[test] functions only; this file is all
// test code, and its generators and fixture helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use avb_edge::policy::canonical_path;
use proptest::prelude::*;

/// Characters that matter to normalisers, weighted towards trouble.
const PATH_ALPHABET: &str = "//////....aAbBeEfF0123456789%%%%%%%%%%;\\?#*~-_:@!+,=CcXxuU ";

/// Strings over [`PATH_ALPHABET`], usually starting with `/`.
fn tricky_path() -> impl Strategy<Value = String> {
    let chars: Vec<char> = PATH_ALPHABET.chars().collect();
    (
        any::<bool>(),
        prop::collection::vec(prop::sample::select(chars), 0..28),
    )
        .prop_map(|(rooted, chars)| {
            let body: String = chars.into_iter().collect();
            if rooted {
                format!("/{body}")
            } else {
                body
            }
        })
}

/// Escapes of bytes that matter: `.`, `/`, `\`, `%`, unreserved letters,
/// controls, UTF-8 lead and continuation bytes, in both hex cases.
fn escape() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "%2E",
            "%2e",
            "%2F",
            "%2f",
            "%5C",
            "%5c",
            "%25",
            "%41",
            "%7E",
            "%00",
            "%1F",
            "%7F",
            "%20",
            "%3B",
            "%3F",
            "%23",
            "%C0%AE",
            "%C3%A9",
            "%C3",
            "%A9",
            "%E2%82%AC",
            "%FF",
            "%2",
            "%G0",
        ][..],
    )
    .prop_map(str::to_owned)
}

/// Paths assembled from plausible segments and escapes.
fn segmented_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        3 => "[a-z0-9._~-]{1,6}",
        1 => Just(".".to_owned()),
        1 => Just("..".to_owned()),
        1 => Just(String::new()),
        2 => (prop::collection::vec(escape(), 1..3), "[a-z]{0,2}")
            .prop_map(|(escapes, tail)| format!("{}{tail}", escapes.concat())),
        1 => "[;\\\\*:@]{1,2}",
    ];
    (
        prop::collection::vec(segment, 0..6),
        prop::option::of("[a-z=&/.%]{0,8}"),
    )
        .prop_map(|(segments, query)| {
            let mut path = format!("/{}", segments.join("/"));
            if let Some(query) = query {
                path.push('?');
                path.push_str(&query);
            }
            path
        })
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
}

/// An RFC 3986 §6.2.2 normaliser, plus the edge-proxy habits that bypasses
/// exploit: `\` read as `/`, unreserved escapes decoded, other escapes upper
/// cased, `//` merged, dot segments removed (§5.2.4).
fn normalise(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte == b'%' && at + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex_value(bytes[at + 1]), hex_value(bytes[at + 2])) {
                let value = high << 4 | low;
                if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(char::from(value));
                } else {
                    decoded.push('%');
                    decoded.push(char::from(bytes[at + 1]).to_ascii_uppercase());
                    decoded.push(char::from(bytes[at + 2]).to_ascii_uppercase());
                }
                at += 3;
                continue;
            }
        }
        decoded.push(if byte == b'\\' { '/' } else { char::from(byte) });
        at += 1;
    }
    let mut output: Vec<&str> = Vec::new();
    for segment in decoded.split('/').skip(1) {
        match segment {
            "" => {}
            "." => {}
            ".." => {
                output.pop();
            }
            other => output.push(other),
        }
    }
    format!("/{}", output.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn canonicalisation_is_idempotent_on_tricky_paths(raw in tricky_path()) {
        if let Ok(canonical) = canonical_path(&raw) {
            prop_assert_eq!(canonical_path(canonical), Ok(canonical));
            prop_assert!(raw.starts_with(canonical));
            prop_assert!(!canonical.contains('?'));
        }
    }

    #[test]
    fn canonicalisation_is_idempotent_on_segmented_paths(raw in segmented_path()) {
        if let Ok(canonical) = canonical_path(&raw) {
            prop_assert_eq!(canonical_path(canonical), Ok(canonical));
        }
    }

    #[test]
    fn canonicalisation_is_idempotent_on_any_string(raw in any::<String>()) {
        if let Ok(canonical) = canonical_path(&raw) {
            prop_assert_eq!(canonical_path(canonical), Ok(canonical));
        }
    }

    #[test]
    fn an_accepted_path_is_left_unchanged_by_a_normaliser(raw in segmented_path()) {
        if let Ok(canonical) = canonical_path(&raw) {
            prop_assert_eq!(normalise(canonical), canonical, "raw {:?}", raw);
        }
    }

    #[test]
    fn a_path_a_normaliser_would_change_is_rejected(raw in tricky_path()) {
        let path = raw.split('?').next().unwrap_or_default();
        if path.starts_with('/') && path != "/" && !path.contains(['#', ' ']) && normalise(path) != path {
            prop_assert!(canonical_path(&raw).is_err(), "accepted {:?} normalised to {:?}", raw, normalise(path));
        }
    }
}

/// Guards against a vacuous property: the generators must reach both sides.
#[test]
fn generated_paths_are_often_canonical_and_often_not() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    for (name, strategy) in [
        ("segmented", segmented_path().boxed()),
        ("tricky", tricky_path().boxed()),
    ] {
        let mut accepted = 0;
        for _ in 0..512 {
            let path = strategy.new_tree(&mut runner).unwrap().current();
            accepted += usize::from(canonical_path(&path).is_ok());
        }
        assert!(
            (25..=487).contains(&accepted),
            "{name}: {accepted} of 512 accepted"
        );
    }
}

#[test]
fn normaliser_reference_handles_the_classic_bypasses() {
    assert_eq!(
        normalise("/api/v1/audit/logs/../logs/export"),
        "/api/v1/audit/logs/export"
    );
    assert_eq!(normalise("/a/%2e%2E/b"), "/b");
    assert_eq!(normalise("/a\\..\\b"), "/b");
    assert_eq!(normalise("//a//b"), "/a/b");
    assert_eq!(normalise("/a%2fb"), "/a%2Fb");
    assert_eq!(normalise("/a/b"), "/a/b");
    assert_eq!(normalise("/"), "/");
}
