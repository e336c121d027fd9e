//! Reading a policy file (YAML or JSON) and compiling it with the engine,
//! with every error pointing at `file:line:column`.

use std::path::{Path, PathBuf};

use crate::policy::{Policy, RawPolicy};

use super::env_file::Environment;
use super::secrets::OfflineSecrets;

/// How a policy file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// A policy file as read and parsed (not yet compiled).
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    pub path: PathBuf,
    pub text: String,
    pub format: Format,
    pub raw: RawPolicy,
    /// The document as the filter loads it: JSON, keys in the order written.
    pub filter_json: String,
}

/// A policy file that cannot be used. Each message starts with `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: cannot read: {message}")]
    Read { path: String, message: String },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Compile {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads and parses a policy file. `.json` files are JSON, `.yaml`/`.yml`
/// YAML; any other name is JSON when it starts with `{`, else YAML.
pub fn load_policy(path: &Path) -> Result<PolicyDocument, SourceError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| SourceError::Read {
        path: shown.clone(),
        message: error.to_string(),
    })?;
    parse_policy(path, text)
}

/// Parses policy text that came from `path` (used for messages and format detection).
pub fn parse_policy(path: &Path, text: String) -> Result<PolicyDocument, SourceError> {
    let format = detect_format(path, &text);
    let shown = path.display().to_string();
    let parse_error = |line: usize, column: usize, message: String| SourceError::Parse {
        path: shown.clone(),
        line,
        column,
        message,
    };
    let (raw, filter_json) = match format {
        Format::Json => {
            let raw: RawPolicy = serde_json::from_str(&text).map_err(|error| {
                parse_error(
                    error.line(),
                    error.column(),
                    strip_location(&error.to_string()),
                )
            })?;
            (raw, text.clone())
        }
        Format::Yaml => {
            // Parsing into a generic value first catches duplicate keys and
            // syntax errors with their location; the typed parse then names
            // unknown or missing fields, also with a location.
            let value: serde_yaml::Value =
                serde_yaml::from_str(&text).map_err(|error| yaml_error(&error, &parse_error))?;
            let raw: RawPolicy =
                serde_yaml::from_str(&text).map_err(|error| yaml_error(&error, &parse_error))?;
            let filter_json = serde_json::to_string_pretty(&value).map_err(|error| {
                parse_error(1, 1, format!("cannot be expressed as json: {error}"))
            })?;
            (raw, filter_json)
        }
    };
    Ok(PolicyDocument {
        path: path.to_path_buf(),
        text,
        format,
        raw,
        filter_json,
    })
}

fn detect_format(path: &Path, text: &str) -> Format {
    match path.extension().and_then(|ext| ext.to_str()) {
        Some("json") => Format::Json,
        Some("yaml" | "yml") => Format::Yaml,
        _ if text.trim_start().starts_with('{') => Format::Json,
        _ => Format::Yaml,
    }
}

fn yaml_error(
    error: &serde_yaml::Error,
    parse_error: &dyn Fn(usize, usize, String) -> SourceError,
) -> SourceError {
    let (line, column) = error
        .location()
        .map_or((1, 1), |location| (location.line(), location.column()));
    parse_error(line, column, strip_location(&error.to_string()))
}

/// serde_json and serde_yaml append " at line L column C" (and serde_yaml a
/// field path prefix); the location is printed in front instead.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// A compiled policy plus the `*_env` names that were checked with placeholders.
pub struct Compiled {
    pub policy: Policy,
    pub placeholders: Vec<String>,
}

impl PolicyDocument {
    /// Compiles the document exactly as the filter would (from its JSON form),
    /// resolving secrets from `environment` or placeholders.
    pub fn compile(&self, environment: &Environment) -> Result<Compiled, SourceError> {
        let secrets = OfflineSecrets::new(&self.raw, environment);
        let policy = Policy::from_json(self.filter_json.as_bytes(), &|name: &str| {
            secrets.lookup(name)
        })
        .map_err(|error| self.compile_error(&error.to_string()))?;
        Ok(Compiled {
            policy,
            placeholders: secrets.placeholders().to_vec(),
        })
    }

    /// Places an engine message on the line of the first name it quotes
    /// (rule names, fields, key ids, webhooks appear in backticks), else on
    /// line 1.
    pub fn compile_error(&self, message: &str) -> SourceError {
        let (line, column) = quoted_names(message)
            .iter()
            .find_map(|name| self.locate(name))
            .unwrap_or((1, 1));
        SourceError::Compile {
            path: self.path.display().to_string(),
            line,
            column,
            message: message.to_owned(),
        }
    }

    /// The first place `name` appears as a whole scalar (a rule name is
    /// preferred over the same text elsewhere).
    fn locate(&self, name: &str) -> Option<(usize, usize)> {
        let mut fallback = None;
        for (index, line) in self.text.lines().enumerate() {
            let mut from = 0;
            while let Some(found) = line[from..].find(name) {
                let start = from + found;
                let end = start + name.len();
                if is_whole_scalar(line, start, end) {
                    let position = (index + 1, start + 1);
                    let before = &line[..start];
                    if before.contains("name") {
                        return Some(position);
                    }
                    fallback = fallback.or(Some(position));
                }
                from = end;
            }
        }
        fallback
    }
}

fn is_whole_scalar(line: &str, start: usize, end: usize) -> bool {
    let scalar_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    let before_ok = line[..start]
        .chars()
        .next_back()
        .is_none_or(|c| !scalar_char(c));
    let after_ok = line[end..].chars().next().is_none_or(|c| !scalar_char(c));
    before_ok && after_ok
}

/// Text between backticks, in order of appearance.
fn quoted_names(message: &str) -> Vec<String> {
    message
        .split('`')
        .enumerate()
        .filter(|(index, part)| index % 2 == 1 && !part.is_empty())
        .map(|(_, part)| part.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_unknown_field_is_reported_at_its_line() {
        let text = "rules:\n  - name: a\n    path: /a\n    any_off: [X]\n".to_owned();
        let error = parse_policy(Path::new("p.yaml"), text).unwrap_err();
        let SourceError::Parse { line, message, .. } = &error else {
            panic!("unexpected {error:?}");
        };
        assert_eq!(*line, 4, "{error}");
        assert!(message.contains("any_off"), "{message}");
    }

    #[test]
    fn yaml_duplicate_key_is_refused() {
        let text = "rules: []\nmode: enforce\nmode: dry_run\n".to_owned();
        let error = parse_policy(Path::new("p.yaml"), text).unwrap_err();
        assert!(error.to_string().starts_with("p.yaml:"), "{error}");
    }

    #[test]
    fn json_syntax_error_is_reported_at_its_line_and_column() {
        let text = "{\n  \"rules\": [,]\n}".to_owned();
        let error = parse_policy(Path::new("p.json"), text).unwrap_err();
        assert!(error.to_string().starts_with("p.json:2:"), "{error}");
    }

    #[test]
    fn unreadable_file_is_a_read_error() {
        let error = load_policy(Path::new("/nonexistent/policy.yaml")).unwrap_err();
        assert!(matches!(error, SourceError::Read { .. }));
    }

    #[test]
    fn yaml_becomes_json_with_keys_in_written_order() {
        let text = "unmatched: deny\nrules: []\nmode: enforce\n".to_owned();
        let document = parse_policy(Path::new("p.yaml"), text).unwrap();
        let unmatched = document.filter_json.find("unmatched").unwrap();
        let mode = document.filter_json.find("mode").unwrap();
        assert!(unmatched < mode, "{}", document.filter_json);
    }

    #[test]
    fn compile_error_points_at_the_rule_named_in_backticks() {
        let text = "rules:\n  - {name: a.b, path: /x, public: true}\n  - {name: c, path: /y, public: true}\n"
            .to_owned();
        let document = parse_policy(Path::new("p.yaml"), text).unwrap();
        let error = document.compile_error("rule `c` is broken");
        assert!(error.to_string().starts_with("p.yaml:3:"), "{error}");
        let error = document.compile_error("nothing quoted");
        assert!(error.to_string().starts_with("p.yaml:1:1:"), "{error}");
    }
}
