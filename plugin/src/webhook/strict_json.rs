//! JSON parsing that refuses duplicate object keys.
//!
//! `serde_json::Value` silently keeps the last of two equal keys. In a signed
//! token that lets a payload say one thing to one parser and another thing to
//! the next, so security-relevant JSON (JWT header and claims) goes through
//! this parser instead.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// A JSON value in which no object (at any depth) repeats a key.
pub(crate) struct UniqueKeysValue(pub(crate) Value);

/// Parses `bytes` as one JSON value, rejecting duplicate keys anywhere.
pub(crate) fn parse_unique_keys(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<UniqueKeysValue>(bytes).map(|parsed| parsed.0)
}

impl<'de> Deserialize<'de> for UniqueKeysValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeysValue;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value without duplicate object keys")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(UniqueKeysValue(Value::Bool(value)))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        Ok(UniqueKeysValue(Value::from(value)))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(UniqueKeysValue(Value::from(value)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
        Ok(UniqueKeysValue(Value::from(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(UniqueKeysValue(Value::String(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(UniqueKeysValue(Value::String(value)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(UniqueKeysValue(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(UniqueKeysValue(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeysValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(UniqueKeysValue(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom("duplicate object key"));
            }
            let UniqueKeysValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(UniqueKeysValue(Value::Object(object)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keys_parse_at_every_depth() {
        let value = parse_unique_keys(br#"{"a":1,"b":{"c":[true,null,"x",-2,1.5]}}"#).unwrap();
        assert_eq!(value["b"]["c"][3], -2);
    }

    #[test]
    fn top_level_duplicate_key_is_rejected() {
        assert!(parse_unique_keys(br#"{"data":"a","data":"b"}"#).is_err());
    }

    #[test]
    fn nested_duplicate_key_is_rejected() {
        assert!(parse_unique_keys(br#"{"a":[{"k":1,"k":1}]}"#).is_err());
    }

    #[test]
    fn keys_equal_after_unescaping_are_duplicates() {
        assert!(parse_unique_keys(br#"{"iss":"a","\u0069ss":"b"}"#).is_err());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        assert!(parse_unique_keys(br#"{"a":1} x"#).is_err());
    }
}
