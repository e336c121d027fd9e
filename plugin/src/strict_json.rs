//! JSON parsing that refuses duplicate object keys.
//!
//! `serde_json::Value` keeps the last of two equal keys, while other parsers
//! keep the first. For a token's header and claims, or a policy's role map,
//! that difference is an attack surface (the issuer and the filter would read
//! different claims), so duplicates are an error here.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a document was refused.
#[derive(Debug, thiserror::Error)]
pub enum StrictJsonError {
    #[error("duplicate key `{key}`")]
    DuplicateKey { key: String },
    #[error("{0}")]
    Syntax(#[source] serde_json::Error),
}

/// Parse one JSON document into a [`Value`], refusing duplicate keys at any depth.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictSeed {
        duplicate: &duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(value),
        Err(error) => match duplicate.into_inner() {
            Some(key) => Err(StrictJsonError::DuplicateKey { key }),
            None => Err(StrictJsonError::Syntax(error)),
        },
    }
}

#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let message = format!("duplicate key `{key}`");
                *self.duplicate.borrow_mut() = Some(key);
                return Err(de::Error::custom(message));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The canonical JSON encoding: no whitespace, object keys sorted by their
/// UTF-8 bytes at every depth, strings and numbers as serde_json writes them.
/// It is what the policy revision and the audit hash chain are computed over.
///
/// Sorting is done here rather than relying on `serde_json::Map` ordering,
/// because a feature flag elsewhere in the build (`preserve_order`) would
/// silently change that ordering and with it every hash.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_objects_and_arrays_parse_like_serde_json() {
        let text = br#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":{"d":"e"}}"#;
        let strict = parse_strict(text).unwrap();
        let loose: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(strict, loose);
    }

    #[test]
    fn duplicate_top_level_key_is_refused_and_named() {
        let err = parse_strict(br#"{"sub":"alice","sub":"admin"}"#).unwrap_err();
        assert!(matches!(err, StrictJsonError::DuplicateKey { ref key } if key == "sub"));
        assert_eq!(err.to_string(), "duplicate key `sub`");
    }

    #[test]
    fn duplicate_nested_key_is_refused() {
        let err = parse_strict(br#"{"realm_access":{"roles":[],"roles":["ADMIN"]}}"#).unwrap_err();
        assert!(matches!(err, StrictJsonError::DuplicateKey { .. }));
    }

    #[test]
    fn trailing_garbage_is_a_syntax_error() {
        let err = parse_strict(br#"{"a":1} x"#).unwrap_err();
        assert!(matches!(err, StrictJsonError::Syntax(_)));
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
        assert!(matches!(
            parse_strict(deep.as_bytes()),
            Err(StrictJsonError::Syntax(_))
        ));
    }

    #[test]
    fn truncated_document_is_a_syntax_error() {
        assert!(matches!(
            parse_strict(br#"{"a":"#),
            Err(StrictJsonError::Syntax(_))
        ));
    }
}
