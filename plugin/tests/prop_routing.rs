//! Property tests: the segment-trie route matcher agrees with a naive
//! reference matcher on generated policies and canonical paths.
//!
//! The reference scores every rule on its own, exactly as issue 2 states the
//! rules: segment by segment from the left, a literal beats `{name}`/`*`,
//! which beats a final `**`; a template that ends exactly beats a `**` that
//! matches nothing; at equal shape a rule listing the method beats one
//! listing none. The most specific matching rule wins.

// clippy.toml allows these inside #[test] functions only; this file is all
// test code, and its generators and fixture helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use avb_edge::policy::{Authorization, Policy, Request};
use proptest::prelude::*;
use serde_json::{json, Value};

/// One generated template segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(&'static str),
    /// `{pN}` (a named parameter) or `*`: same specificity.
    Single {
        star: bool,
    },
    /// A final `**`.
    Rest,
}

#[derive(Debug, Clone)]
struct GeneratedRule {
    segments: Vec<Segment>,
    methods: Option<Vec<&'static str>>,
}

impl GeneratedRule {
    fn template(&self) -> String {
        if self.segments.is_empty() {
            return "/".to_owned();
        }
        self.segments
            .iter()
            .enumerate()
            .map(|(index, segment)| match segment {
                Segment::Literal(text) => format!("/{text}"),
                Segment::Single { star: true } => "/*".to_owned(),
                Segment::Single { star: false } => format!("/{{p{index}}}"),
                Segment::Rest => "/**".to_owned(),
            })
            .collect()
    }

    /// Templates of equal shape that share a method cannot both be configured.
    fn overlaps(&self, other: &GeneratedRule) -> bool {
        let shape = |rule: &GeneratedRule| -> Vec<Segment> {
            rule.segments
                .iter()
                .map(|s| match s {
                    Segment::Single { .. } => Segment::Single { star: false },
                    other => other.clone(),
                })
                .collect()
        };
        if shape(self) != shape(other) {
            return false;
        }
        match (&self.methods, &other.methods) {
            (None, None) => true,
            (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
            _ => false,
        }
    }
}

const LITERALS: [&str; 5] = ["a", "b", "c", "x.y", "caf%C3%A9"];
const PATH_SEGMENTS: [&str; 8] = ["a", "b", "c", "d", "x.y", "caf%C3%A9", "*", "a%20b"];
const METHODS: [&str; 3] = ["GET", "POST", "PUT"];

fn segment_strategy() -> impl Strategy<Value = Segment> {
    prop_oneof![
        4 => prop::sample::select(&LITERALS[..]).prop_map(Segment::Literal),
        2 => any::<bool>().prop_map(|star| Segment::Single { star }),
    ]
}

fn rule_strategy() -> impl Strategy<Value = GeneratedRule> {
    (
        prop::collection::vec(segment_strategy(), 0..4),
        any::<bool>(),
        prop::option::of(prop::sample::subsequence(&METHODS[..], 1..=2)),
    )
        .prop_map(|(mut segments, rest, methods)| {
            if rest {
                segments.push(Segment::Rest);
            }
            GeneratedRule { segments, methods }
        })
}

/// Rules with every overlapping later rule dropped (the policy would refuse it).
fn rules_strategy() -> impl Strategy<Value = Vec<GeneratedRule>> {
    prop::collection::vec(rule_strategy(), 1..12).prop_map(|rules| {
        let mut kept: Vec<GeneratedRule> = Vec::new();
        for rule in rules {
            if !kept.iter().any(|k| k.overlaps(&rule)) {
                kept.push(rule);
            }
        }
        kept
    })
}

fn path_strategy() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(&PATH_SEGMENTS[..]), 0..5)
}

fn policy_json(rules: &[GeneratedRule]) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let mut value =
                json!({"name": format!("r{index}"), "path": rule.template(), "public": true});
            if let Some(methods) = &rule.methods {
                value["methods"] = json!(methods);
            }
            value
        })
        .collect();
    json!({"unmatched": "deny", "rules": rules})
}

/// The reference specificity of `rule` for `path` and `method`, when it matches.
fn reference_score(rule: &GeneratedRule, path: &[&str], method: &str) -> Option<Vec<u8>> {
    if let Some(methods) = &rule.methods {
        if !methods.contains(&method) {
            return None;
        }
    }
    let mut score = Vec::new();
    let mut position = 0;
    for segment in &rule.segments {
        match segment {
            Segment::Rest => {
                score.extend(std::iter::repeat_n(1, path.len() - position));
                score.push(0);
                score.push(if rule.methods.is_some() { 2 } else { 1 });
                return Some(score);
            }
            Segment::Literal(text) => {
                if path.get(position) != Some(text) {
                    return None;
                }
                score.push(3);
            }
            Segment::Single { .. } => {
                path.get(position)?;
                score.push(2);
            }
        }
        position += 1;
    }
    if position != path.len() {
        return None;
    }
    score.push(1);
    score.push(if rule.methods.is_some() { 2 } else { 1 });
    Some(score)
}

fn reference_best(rules: &[GeneratedRule], path: &[&str], method: &str) -> Option<usize> {
    let mut best: Option<(Vec<u8>, usize)> = None;
    for (index, rule) in rules.iter().enumerate() {
        if let Some(score) = reference_score(rule, path, method) {
            // Scores never tie: equal scores mean equal shape and a common
            // method, which the generator removed as an overlap.
            if best.as_ref().is_none_or(|(top, _)| score > *top) {
                best = Some((score, index));
            }
        }
    }
    best.map(|(_, index)| index)
}

fn compile(rules: &[GeneratedRule]) -> Policy {
    let json = policy_json(rules).to_string();
    Policy::from_json(json.as_bytes(), &|_| None)
        .unwrap_or_else(|err| panic!("generated policy must compile: {err}\n{json}"))
}

fn decide_rule(policy: &Policy, path: &str, method: &str) -> (Option<usize>, u16) {
    let decision = policy.decide(
        &Request {
            method: Some(method),
            path: Some(path),
            authorization: Authorization::Absent,
            jwt_payload: None,
        },
        1_700_000_000,
    );
    (decision.rule, decision.status)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn trie_matcher_agrees_with_the_reference_matcher(
        rules in rules_strategy(),
        paths in prop::collection::vec((path_strategy(), prop::sample::select(&METHODS[..])), 1..16),
    ) {
        let policy = compile(&rules);
        for (segments, method) in paths {
            let path = format!("/{}", segments.join("/"));
            let expected = reference_best(&rules, &segments, method);
            let (rule, status) = decide_rule(&policy, &path, method);
            prop_assert_eq!(rule, expected, "{} {} under {:?}", method, path,
                rules.iter().map(GeneratedRule::template).collect::<Vec<_>>());
            // Every rule is public: a match is let through, no match is 403.
            prop_assert_eq!(status, if expected.is_some() { 200 } else { 403 });
        }
    }

    #[test]
    fn the_query_string_never_changes_the_matched_rule(
        rules in rules_strategy(),
        segments in path_strategy(),
        query in "[a-z0-9=&/.%]{0,12}",
        method in prop::sample::select(&METHODS[..]),
    ) {
        let policy = compile(&rules);
        let path = format!("/{}", segments.join("/"));
        let with_query = format!("{path}?{query}");
        prop_assert_eq!(
            decide_rule(&policy, &path, method).0,
            decide_rule(&policy, &with_query, method).0
        );
    }

    #[test]
    fn every_rule_matches_a_path_built_from_its_own_template(
        rules in rules_strategy(),
        filler in prop::sample::select(&["q", "zz", "x.y"][..]),
    ) {
        let policy = compile(&rules);
        for (index, rule) in rules.iter().enumerate() {
            let segments: Vec<&str> = rule.segments.iter().filter_map(|s| match s {
                Segment::Literal(text) => Some(*text),
                Segment::Single { .. } => Some(filler),
                Segment::Rest => None,
            }).collect();
            let path = format!("/{}", segments.join("/"));
            let method = rule.methods.as_ref().map_or("GET", |m| m[0]);
            let (matched, _) = decide_rule(&policy, &path, method);
            // The rule itself, or one the reference finds more specific.
            prop_assert_eq!(matched, reference_best(&rules, &segments, method));
            prop_assert!(reference_score(rule, &segments, method).is_some(), "rule {} {}", index, path);
        }
    }
}

#[test]
fn reference_matcher_pins_the_issue_examples() {
    let rule = |segments: Vec<Segment>, methods: Option<Vec<&'static str>>| GeneratedRule {
        segments,
        methods,
    };
    let rules = vec![
        rule(vec![Segment::Literal("a"), Segment::Rest], None),
        rule(
            vec![Segment::Literal("a"), Segment::Single { star: false }],
            None,
        ),
        rule(vec![Segment::Literal("a"), Segment::Literal("b")], None),
        rule(
            vec![Segment::Literal("a"), Segment::Literal("b")],
            Some(vec!["GET"]),
        ),
    ];
    assert_eq!(reference_best(&rules, &["a", "b"], "GET"), Some(3));
    assert_eq!(reference_best(&rules, &["a", "b"], "POST"), Some(2));
    assert_eq!(reference_best(&rules, &["a", "z"], "GET"), Some(1));
    assert_eq!(reference_best(&rules, &["a", "z", "q"], "GET"), Some(0));
    assert_eq!(
        reference_best(&rules, &["a"], "GET"),
        Some(0),
        "** matches an empty rest"
    );
    assert_eq!(reference_best(&rules, &["b"], "GET"), None);
    let policy = compile(&rules);
    assert_eq!(decide_rule(&policy, "/a/b", "GET"), (Some(3), 200));
    assert_eq!(decide_rule(&policy, "/b", "GET"), (None, 403));
}

#[test]
fn overlapping_generated_rules_are_refused_by_the_policy() {
    let rules = vec![
        GeneratedRule {
            segments: vec![Segment::Single { star: true }],
            methods: Some(vec!["GET"]),
        },
        GeneratedRule {
            segments: vec![Segment::Single { star: false }],
            methods: Some(vec!["GET", "POST"]),
        },
    ];
    assert!(rules[0].overlaps(&rules[1]));
    let json = policy_json(&rules).to_string();
    assert!(Policy::from_json(json.as_bytes(), &|_| None).is_err());
}
