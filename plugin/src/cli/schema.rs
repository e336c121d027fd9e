//! `avb-policy schema`: the JSON Schema (draft 2020-12) of the policy format,
//! and a small validator for exactly the keywords that schema uses, so tests
//! can check documents against it without a schema library.

use serde_json::Value;

const SCHEMA: &str = include_str!("schema.json");

/// The schema text, as shipped in `plugin/policy.schema.json`.
pub fn policy_schema() -> &'static str {
    SCHEMA
}

/// One place where a document breaks the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {problem}")]
pub struct SchemaViolation {
    /// JSON pointer into the document (`""` is the root).
    pub pointer: String,
    pub problem: String,
}

/// Keywords the validator understands; any other keyword in a schema is an
/// error, so the schema cannot silently use something left unchecked.
const KNOWN_KEYWORDS: [&str; 20] = [
    "$schema",
    "$id",
    "$defs",
    "$ref",
    "title",
    "description",
    "type",
    "properties",
    "additionalProperties",
    "required",
    "items",
    "minItems",
    "uniqueItems",
    "enum",
    "const",
    "minLength",
    "minimum",
    "maximum",
    "oneOf",
    "default",
];

/// Validates `document` against `schema` (whose `$ref`s point into its own `$defs`).
pub fn validate_against_schema(schema: &Value, document: &Value) -> Vec<SchemaViolation> {
    let mut violations = Vec::new();
    validate(schema, schema, document, "", &mut violations);
    violations
}

fn violation(pointer: &str, problem: impl Into<String>, out: &mut Vec<SchemaViolation>) {
    out.push(SchemaViolation {
        pointer: pointer.to_owned(),
        problem: problem.into(),
    });
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn validate(
    root: &Value,
    schema: &Value,
    value: &Value,
    pointer: &str,
    out: &mut Vec<SchemaViolation>,
) {
    let Some(schema) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            violation(pointer, "is not allowed", out);
        }
        return;
    };
    for keyword in schema.keys() {
        if !KNOWN_KEYWORDS.contains(&keyword.as_str()) {
            violation(
                pointer,
                format!("schema uses unsupported keyword `{keyword}`"),
                out,
            );
        }
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        match reference
            .strip_prefix("#/$defs/")
            .and_then(|name| root.get("$defs").and_then(|defs| defs.get(name)))
        {
            Some(target) => validate(root, target, value, pointer, out),
            None => violation(
                pointer,
                format!("schema reference `{reference}` does not resolve"),
                out,
            ),
        }
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        if !type_matches(expected, value) {
            violation(pointer, format!("must be of type {expected}"), out);
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            violation(
                pointer,
                format!("must be one of {}", Value::from(allowed.clone())),
                out,
            );
        }
    }
    if let Some(constant) = schema.get("const") {
        if value != constant {
            violation(pointer, format!("must be {constant}"), out);
        }
    }
    if let (Some(min), Some(text)) = (
        schema.get("minLength").and_then(Value::as_u64),
        value.as_str(),
    ) {
        if (text.chars().count() as u64) < min {
            violation(pointer, format!("must have at least {min} characters"), out);
        }
    }
    if let Some(number) = value.as_f64().filter(|_| value.is_number()) {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if number < min {
                violation(pointer, format!("must be at least {min}"), out);
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if number > max {
                violation(pointer, format!("must be at most {max}"), out);
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                violation(pointer, format!("must have at least {min} items"), out);
            }
        }
        if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
            for (index, item) in items.iter().enumerate() {
                if items[..index].contains(item) {
                    violation(
                        &format!("{pointer}/{index}"),
                        "duplicates an earlier item",
                        out,
                    );
                }
            }
        }
        if let Some(item_schema) = schema.get("items") {
            for (index, item) in items.iter().enumerate() {
                validate(root, item_schema, item, &format!("{pointer}/{index}"), out);
            }
        }
    }
    if let Some(object) = value.as_object() {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    violation(pointer, format!("is missing required field `{name}`"), out);
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            let field_pointer = format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"));
            match properties.and_then(|properties| properties.get(name)) {
                Some(field_schema) => validate(root, field_schema, field, &field_pointer, out),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        violation(pointer, format!("has unknown field `{name}`"), out)
                    }
                    Some(additional) if additional.is_object() => {
                        validate(root, additional, field, &field_pointer, out)
                    }
                    _ => {}
                },
            }
        }
    }
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = alternatives
            .iter()
            .filter(|alternative| {
                let mut scratch = Vec::new();
                validate(root, alternative, value, pointer, &mut scratch);
                scratch.is_empty()
            })
            .count();
        if matching != 1 {
            violation(
                pointer,
                format!(
                    "must match exactly one of {} alternatives (matches {matching})",
                    alternatives.len()
                ),
                out,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        serde_json::from_str(policy_schema()).unwrap()
    }

    #[test]
    fn the_schema_is_valid_json_of_draft_2020_12() {
        assert_eq!(
            schema()["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
    }

    #[test]
    fn minimal_policy_is_valid() {
        let violations = validate_against_schema(&schema(), &json!({"rules": []}));
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[test]
    fn unknown_field_is_a_violation() {
        let document =
            json!({"rules": [{"name": "a", "path": "/a", "any_off": ["X"], "public": true}]});
        let violations = validate_against_schema(&schema(), &document);
        assert!(
            violations.iter().any(|v| v.problem.contains("any_off")),
            "{violations:?}"
        );
    }

    #[test]
    fn rule_with_two_kinds_is_a_violation() {
        let document =
            json!({"rules": [{"name": "a", "path": "/a", "public": true, "any_of": ["X"]}]});
        let violations = validate_against_schema(&schema(), &document);
        assert!(
            violations.iter().any(|v| v.problem.contains("exactly one")),
            "{violations:?}"
        );
    }

    #[test]
    fn missing_rules_and_wrong_types_are_violations() {
        let violations = validate_against_schema(&schema(), &json!({"mode": "sometimes"}));
        assert!(
            violations.iter().any(|v| v.problem.contains("`rules`")),
            "{violations:?}"
        );
        assert!(
            violations.iter().any(|v| v.pointer == "/mode"),
            "{violations:?}"
        );
    }

    #[test]
    fn unsupported_schema_keywords_are_reported() {
        let violations = validate_against_schema(&json!({"pattern": "x"}), &json!("y"));
        assert_eq!(violations.len(), 1);
    }

    #[test]
    fn every_object_in_the_schema_closes_additional_properties() {
        fn walk(schema: &Value, path: &str) {
            if let Some(object) = schema.as_object() {
                if object.get("type") == Some(&Value::from("object")) {
                    assert!(
                        object.contains_key("additionalProperties"),
                        "{path} is open"
                    );
                }
                for (key, child) in object {
                    walk(child, &format!("{path}/{key}"));
                }
            }
        }
        walk(&schema(), "");
    }
}
