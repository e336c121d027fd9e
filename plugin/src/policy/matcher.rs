//! Path templates and the route table (a segment trie).
//!
//! A request is matched by walking the trie one path segment at a time,
//! never by scanning the rule list, so 10,000 rules cost about what 10 do.
//! At every segment a literal child is preferred over a one-segment wildcard
//! (`{name}` or `*`), which is preferred over a final `**`; within one
//! template shape a rule listing the request's method beats one listing none.
//! A node whose rules do not allow the method does not match, and the walk
//! backtracks to the next less specific candidate. Each trie node sits at a
//! fixed depth, so the walk visits every node at most once whatever the path.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::path::{check_segment, PathError};

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSegment {
    /// Matches exactly this (canonical) text.
    Literal(String),
    /// `{name}`: exactly one segment, captured under `name`.
    Param(String),
    /// `*`: exactly one segment, not captured.
    Star,
    /// Final `**`: the rest of the path, possibly empty.
    Rest,
}

/// A parsed, validated path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<TemplateSegment>,
}

/// Why a path template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template must start with `/`")]
    NotAbsolute,
    #[error("template has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    #[error("`**` may only be the last segment")]
    RestNotLast,
    #[error("`{{}}` needs a parameter name")]
    EmptyParam,
    #[error("parameter name `{0}` must be letters, digits and `_`, not starting with a digit")]
    BadParamName(String),
    #[error("parameter `{0}` appears twice")]
    DuplicateParam(String),
    #[error(
        "`{{`, `}}` and `*` must be a whole segment (`{{name}}`, `*`, `**`), not part of `{0}`"
    )]
    MixedSegment(String),
    #[error("literal segment `{segment}` is not canonical: {problem}")]
    NonCanonicalLiteral {
        segment: String,
        #[source]
        problem: PathError,
    },
}

impl Template {
    /// Parse and validate a template such as `/api/v1/audit/logs/{id}`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(TemplateError::NotAbsolute);
        };
        let mut segments = Vec::new();
        if body.is_empty() {
            return Ok(Template { segments });
        }
        let parts: Vec<&str> = body.split('/').collect();
        let last = parts.len() - 1;
        for (index, part) in parts.into_iter().enumerate() {
            let segment = parse_segment(part)?;
            if segment == TemplateSegment::Rest && index != last {
                return Err(TemplateError::RestNotLast);
            }
            if let TemplateSegment::Param(name) = &segment {
                let taken = segments
                    .iter()
                    .any(|s| matches!(s, TemplateSegment::Param(n) if n == name));
                if taken {
                    return Err(TemplateError::DuplicateParam(name.clone()));
                }
            }
            segments.push(segment);
        }
        Ok(Template { segments })
    }

    pub fn segments(&self) -> &[TemplateSegment] {
        &self.segments
    }

    /// The segment index (0 = first after the leading `/`) of parameter `name`.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.segments
            .iter()
            .position(|s| matches!(s, TemplateSegment::Param(n) if n == name))
    }
}

fn parse_segment(part: &str) -> Result<TemplateSegment, TemplateError> {
    match part {
        "" => return Err(TemplateError::EmptySegment),
        "*" => return Ok(TemplateSegment::Star),
        "**" => return Ok(TemplateSegment::Rest),
        "{}" => return Err(TemplateError::EmptyParam),
        _ => {}
    }
    if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        let mut chars = name.chars();
        let starts_well = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(TemplateError::BadParamName(name.to_owned()));
        }
        return Ok(TemplateSegment::Param(name.to_owned()));
    }
    if part.contains(['{', '}', '*']) {
        return Err(TemplateError::MixedSegment(part.to_owned()));
    }
    check_segment(part).map_err(|problem| TemplateError::NonCanonicalLiteral {
        segment: part.to_owned(),
        problem,
    })?;
    Ok(TemplateSegment::Literal(part.to_owned()))
}

/// FNV-1a: deterministic (no random seed, so no host randomness inside the
/// Wasm VM) and fast for short segment names. Keys come from the policy, not
/// from requests, so hash flooding is not a concern.
#[derive(Default)]
struct SegmentHasher(u64);

impl Hasher for SegmentHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type Children = HashMap<Box<str>, Node, BuildHasherDefault<SegmentHasher>>;

/// The rules that end at one trie position.
#[derive(Debug, Default)]
struct Terminal {
    /// Rules listing methods: (method, rule index). Short, so a scan is fastest.
    by_method: Vec<(Box<str>, usize)>,
    /// The rule listing no method, if any.
    any_method: Option<usize>,
}

impl Terminal {
    fn select(&self, method: &str) -> Option<usize> {
        self.by_method
            .iter()
            .find(|(listed, _)| &**listed == method)
            .map(|&(_, rule)| rule)
            .or(self.any_method)
    }

    fn add(&mut self, methods: Option<&[String]>, rule: usize) -> Result<(), usize> {
        match methods {
            None => match self.any_method {
                Some(existing) => Err(existing),
                None => {
                    self.any_method = Some(rule);
                    Ok(())
                }
            },
            Some(methods) => {
                for method in methods {
                    if let Some(&(_, existing)) = self
                        .by_method
                        .iter()
                        .find(|(listed, _)| **listed == **method)
                    {
                        return Err(existing);
                    }
                }
                self.by_method
                    .extend(methods.iter().map(|m| (Box::from(m.as_str()), rule)));
                Ok(())
            }
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    literals: Children,
    /// `{name}` and `*` share this child: they have the same specificity.
    single: Option<Box<Node>>,
    /// Rules whose template ends with `**` here.
    rest: Option<Terminal>,
    /// Rules whose template ends exactly here.
    end: Option<Terminal>,
}

/// The compiled route table.
#[derive(Debug, Default)]
pub struct RouteTable {
    root: Node,
}

/// Two rules with the same template shape and a common method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlap {
    /// Index of the rule already in the table.
    pub existing: usize,
}

impl RouteTable {
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// Add rule `rule` for `template` and `methods` (`None` = any method).
    /// Fails when an earlier rule has the same shape and a common method,
    /// since neither would be more specific than the other.
    pub fn insert(
        &mut self,
        template: &Template,
        methods: Option<&[String]>,
        rule: usize,
    ) -> Result<(), Overlap> {
        let mut node = &mut self.root;
        for segment in &template.segments {
            node = match segment {
                TemplateSegment::Literal(text) => {
                    node.literals.entry(Box::from(text.as_str())).or_default()
                }
                TemplateSegment::Param(_) | TemplateSegment::Star => {
                    node.single.get_or_insert_with(Box::default)
                }
                TemplateSegment::Rest => {
                    return node
                        .rest
                        .get_or_insert_with(Terminal::default)
                        .add(methods, rule)
                        .map_err(|existing| Overlap { existing });
                }
            };
        }
        node.end
            .get_or_insert_with(Terminal::default)
            .add(methods, rule)
            .map_err(|existing| Overlap { existing })
    }

    /// The most specific rule for a canonical path (`/` or `/seg/...`, no
    /// query) and method, if any.
    pub fn best_match(&self, canonical_path: &str, method: &str) -> Option<usize> {
        let rest = canonical_path.strip_prefix('/').unwrap_or(canonical_path);
        find(&self.root, rest, method)
    }
}

/// `rest` is the unmatched remainder of the path without its leading `/`
/// (empty when every segment is consumed).
fn find(node: &Node, rest: &str, method: &str) -> Option<usize> {
    if rest.is_empty() {
        if let Some(rule) = node.end.as_ref().and_then(|t| t.select(method)) {
            return Some(rule);
        }
    } else {
        let (segment, after) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, ""),
        };
        if let Some(child) = node.literals.get(segment) {
            if let Some(rule) = find(child, after, method) {
                return Some(rule);
            }
        }
        if let Some(child) = &node.single {
            if let Some(rule) = find(child, after, method) {
                return Some(rule);
            }
        }
    }
    node.rest.as_ref().and_then(|t| t.select(method))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &[(&str, Option<&[&str]>)]) -> RouteTable {
        let mut table = RouteTable::new();
        for (index, (template, methods)) in rules.iter().enumerate() {
            let methods: Option<Vec<String>> =
                methods.map(|m| m.iter().map(|s| s.to_string()).collect());
            table
                .insert(
                    &Template::parse(template).unwrap(),
                    methods.as_deref(),
                    index,
                )
                .unwrap();
        }
        table
    }

    #[test]
    fn literal_beats_param_beats_rest() {
        let t = table(&[
            ("/api/**", None),
            ("/api/{id}", None),
            ("/api/export", None),
        ]);
        assert_eq!(t.best_match("/api/export", "GET"), Some(2));
        assert_eq!(t.best_match("/api/42", "GET"), Some(1));
        assert_eq!(t.best_match("/api/42/x", "GET"), Some(0));
        assert_eq!(
            t.best_match("/api", "GET"),
            Some(0),
            "** matches an empty rest"
        );
        assert_eq!(t.best_match("/other", "GET"), None);
    }

    #[test]
    fn specificity_is_decided_from_the_left() {
        let t = table(&[("/a/{x}/c", None), ("/{y}/b/c", None)]);
        assert_eq!(t.best_match("/a/b/c", "GET"), Some(0));
        assert_eq!(t.best_match("/z/b/c", "GET"), Some(1));
    }

    #[test]
    fn rule_listing_the_method_beats_rule_listing_none() {
        let t = table(&[("/a", None), ("/a", Some(&["GET"]))]);
        assert_eq!(t.best_match("/a", "GET"), Some(1));
        assert_eq!(t.best_match("/a", "DELETE"), Some(0));
    }

    #[test]
    fn head_is_not_implied_by_get() {
        let t = table(&[("/a", Some(&["GET"]))]);
        assert_eq!(t.best_match("/a", "HEAD"), None);
    }

    #[test]
    fn method_mismatch_backtracks_to_a_less_specific_rule() {
        let t = table(&[("/api/config", Some(&["GET"])), ("/api/**", None)]);
        assert_eq!(t.best_match("/api/config", "GET"), Some(0));
        assert_eq!(t.best_match("/api/config", "DELETE"), Some(1));
    }

    #[test]
    fn dead_end_literal_backtracks_to_wildcard() {
        let t = table(&[("/a/b/c", None), ("/a/{x}/d", None)]);
        assert_eq!(t.best_match("/a/b/d", "GET"), Some(1));
    }

    #[test]
    fn root_template_matches_only_root() {
        let t = table(&[("/", None)]);
        assert_eq!(t.best_match("/", "GET"), Some(0));
        assert_eq!(t.best_match("/a", "GET"), None);
    }

    #[test]
    fn same_shape_with_common_method_overlaps() {
        let mut t = table(&[("/a/{id}", Some(&["GET", "PUT"]))]);
        let err = t
            .insert(
                &Template::parse("/a/*").unwrap(),
                Some(&["PUT".to_owned()]),
                1,
            )
            .unwrap_err();
        assert_eq!(err, Overlap { existing: 0 });
        assert!(t
            .insert(
                &Template::parse("/a/*").unwrap(),
                Some(&["POST".to_owned()]),
                1
            )
            .is_ok());
    }

    #[test]
    fn two_any_method_rules_of_the_same_shape_overlap() {
        let mut t = table(&[("/a/**", None)]);
        assert_eq!(
            t.insert(&Template::parse("/a/**").unwrap(), None, 1),
            Err(Overlap { existing: 0 })
        );
    }

    #[test]
    fn ten_thousand_rules_match_by_walking_segments() {
        let mut t = RouteTable::new();
        for i in 0..10_000 {
            let template = Template::parse(&format!("/svc{i}/items/{{id}}")).unwrap();
            t.insert(&template, Some(&["GET".to_owned()]), i).unwrap();
        }
        assert_eq!(t.best_match("/svc9999/items/7", "GET"), Some(9999));
        assert_eq!(t.best_match("/svc10000/items/7", "GET"), None);
    }

    #[test]
    fn template_errors_name_the_problem() {
        assert_eq!(Template::parse("api"), Err(TemplateError::NotAbsolute));
        assert_eq!(Template::parse("/a//b"), Err(TemplateError::EmptySegment));
        assert_eq!(Template::parse("/a/"), Err(TemplateError::EmptySegment));
        assert_eq!(Template::parse("/**/a"), Err(TemplateError::RestNotLast));
        assert_eq!(Template::parse("/a/{}"), Err(TemplateError::EmptyParam));
        assert_eq!(
            Template::parse("/{id}/{id}"),
            Err(TemplateError::DuplicateParam("id".into()))
        );
        assert_eq!(
            Template::parse("/{1d}"),
            Err(TemplateError::BadParamName("1d".into()))
        );
        assert_eq!(
            Template::parse("/a*b"),
            Err(TemplateError::MixedSegment("a*b".into()))
        );
        assert_eq!(
            Template::parse("/x{id}"),
            Err(TemplateError::MixedSegment("x{id}".into()))
        );
        assert!(matches!(
            Template::parse("/a/../b"),
            Err(TemplateError::NonCanonicalLiteral { .. })
        ));
        assert!(matches!(
            Template::parse("/export."),
            Err(TemplateError::NonCanonicalLiteral { .. })
        ));
        assert!(matches!(
            Template::parse("/a;b"),
            Err(TemplateError::NonCanonicalLiteral { .. })
        ));
    }

    #[test]
    fn param_index_finds_the_segment() {
        let t = Template::parse("/tenants/{tenant}/items/{id}").unwrap();
        assert_eq!(t.param_index("tenant"), Some(1));
        assert_eq!(t.param_index("id"), Some(3));
        assert_eq!(t.param_index("other"), None);
    }
}
