//! Where `*_env` secret references are resolved: an optional `KEY=VALUE` file
//! (such as `envoy/dev.env`) over the process environment.

use std::collections::BTreeMap;
use std::path::Path;

use super::CliError;

/// The variables a command may resolve. The file wins over the process
/// environment because naming a file on the command line is the more
/// deliberate choice.
#[derive(Debug, Default, Clone)]
pub struct Environment {
    from_file: BTreeMap<String, String>,
}

impl Environment {
    /// Reads `path` when given; the process environment is always consulted.
    pub fn load(path: Option<&Path>) -> Result<Environment, CliError> {
        let Some(path) = path else {
            return Ok(Environment::default());
        };
        let text = std::fs::read_to_string(path).map_err(|error| {
            CliError::Usage(format!("{}: cannot read env file: {error}", path.display()))
        })?;
        let from_file = parse_env_file(&text).map_err(|(line, problem)| {
            CliError::Usage(format!("{}:{line}:1: {problem}", path.display()))
        })?;
        Ok(Environment { from_file })
    }

    /// The value of `name`, if set and not empty.
    pub fn get(&self, name: &str) -> Option<String> {
        self.from_file
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .filter(|value| !value.is_empty())
    }

    /// The variables defined by the file (not the process environment).
    pub fn file_value(&self, name: &str) -> Option<&str> {
        self.from_file.get(name).map(String::as_str)
    }
}

/// Parses `KEY=VALUE` lines; `#` comments, blank lines and an `export `
/// prefix are allowed, and one pair of matching quotes around a value is
/// removed. Returns the 1-based line and the problem on error.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut values = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let assignment = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((name, value)) = assignment.split_once('=') else {
            return Err((line_number, "expected KEY=VALUE".to_owned()));
        };
        let name = name.trim();
        let well_formed = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            return Err((line_number, format!("`{name}` is not a variable name")));
        }
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|quote| {
                value
                    .strip_prefix(*quote)
                    .and_then(|rest| rest.strip_suffix(*quote))
            })
            .unwrap_or(value);
        values.insert(name.to_owned(), unquoted.to_owned());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blank_lines_export_and_quotes_are_understood() {
        let parsed = parse_env_file("# c\n\nexport A=1\nB='two words'\nC=\"x=y\"\n").unwrap();
        assert_eq!(parsed["A"], "1");
        assert_eq!(parsed["B"], "two words");
        assert_eq!(parsed["C"], "x=y");
    }

    #[test]
    fn a_line_without_equals_is_refused_with_its_line_number() {
        let error = parse_env_file("A=1\nnonsense\n").unwrap_err();
        assert_eq!(error.0, 2);
    }

    #[test]
    fn a_bad_variable_name_is_refused() {
        assert!(parse_env_file("1A=x\n").is_err());
    }
}
