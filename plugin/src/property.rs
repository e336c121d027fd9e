//! Decoding of Envoy's proxy-wasm property encoding into JSON (pure code).
//!
//! `get_property` returns strings and bytes raw, numbers as 8-byte
//! little-endian doubles, booleans as one byte, and maps and lists as
//! proxy-wasm pairs (a u32 count, then a u32 key length and a u32 value length
//! per pair, then each key and value followed by a NUL), nested: each value is
//! itself encoded. A list puts each element in the key slot with an empty
//! value. The encoding carries no type tags, so decoding is by shape: bytes
//! that parse exactly as pairs are a map (or a list when every value is empty),
//! valid UTF-8 is a string, 8 bytes are a double, 1 byte is a bool.
//!
//! Used for the verified payload that Envoy's jwt_authn filter stores in
//! dynamic metadata (`identity.source: jwt_authn_metadata`).

use serde_json::{Map, Number, Value};

/// Upper bound on nesting, so hostile metadata cannot exhaust the stack.
const MAX_DEPTH: usize = 16;

/// Decodes a property value. Returns `None` only for bytes that fit no shape.
pub fn decode(bytes: &[u8]) -> Option<Value> {
    decode_at(bytes, 0)
}

fn decode_at(bytes: &[u8], depth: usize) -> Option<Value> {
    if depth < MAX_DEPTH {
        if let Some(pairs) = split_pairs(bytes) {
            if !pairs.is_empty() && pairs.iter().all(|(_, v)| v.is_empty()) {
                let items = pairs
                    .iter()
                    .map(|(k, _)| decode_at(k, depth + 1))
                    .collect::<Option<Vec<_>>>()?;
                return Some(Value::Array(items));
            }
            let mut map = Map::new();
            for (key, value) in pairs {
                let key = std::str::from_utf8(key).ok()?;
                map.insert(key.to_string(), decode_at(value, depth + 1)?);
            }
            return Some(Value::Object(map));
        }
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Some(Value::String(text.to_string()));
    }
    match bytes.len() {
        8 => {
            let n = f64::from_le_bytes(bytes.try_into().ok()?);
            Number::from_f64(n).map(Value::Number)
        }
        1 => Some(Value::Bool(bytes[0] != 0)),
        _ => None,
    }
}

/// Splits proxy-wasm pairs, or `None` unless `bytes` is exactly such an encoding.
fn split_pairs(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let header_end = 4usize.checked_add(count.checked_mul(8)?)?;
    if header_end > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut at = header_end;
    for i in 0..count {
        let base = 4 + i * 8;
        let key_len = u32::from_le_bytes(bytes.get(base..base + 4)?.try_into().ok()?) as usize;
        let value_len =
            u32::from_le_bytes(bytes.get(base + 4..base + 8)?.try_into().ok()?) as usize;
        let key = bytes.get(at..at.checked_add(key_len)?)?;
        at += key_len;
        if bytes.get(at) != Some(&0) {
            return None;
        }
        at += 1;
        let value = bytes.get(at..at.checked_add(value_len)?)?;
        at += value_len;
        if bytes.get(at) != Some(&0) {
            return None;
        }
        at += 1;
        pairs.push((key, value));
    }
    (at == bytes.len()).then_some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(items: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (items.len() as u32).to_le_bytes().to_vec();
        for (k, v) in items {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in items {
            out.extend_from_slice(k);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    #[test]
    fn nested_payload_decodes_to_json() {
        let roles = pairs(&[(b"ADMIN", b""), (b"OPERATOR", b"")]);
        let realm = pairs(&[(b"roles", &roles)]);
        let exp = 1_900_000_000f64.to_le_bytes();
        let payload = pairs(&[
            (b"sub", b"alice"),
            (b"realm_access", &realm),
            (b"exp", &exp),
        ]);
        assert_eq!(
            decode(&payload),
            Some(
                json!({"sub": "alice", "realm_access": {"roles": ["ADMIN", "OPERATOR"]}, "exp": 1.9e9})
            )
        );
    }

    #[test]
    fn plain_strings_stay_strings() {
        assert_eq!(decode(b"tenant-a"), Some(json!("tenant-a")));
    }

    #[test]
    fn truncated_pairs_are_not_a_map() {
        let mut payload = pairs(&[(b"sub", b"alice")]);
        payload.pop();
        // Not valid pairs any more; and not UTF-8 either (the count bytes),
        // nor 8 or 1 bytes long: nothing.
        payload[0] = 0xff;
        assert_eq!(decode(&payload), None);
    }

    #[test]
    fn huge_counts_do_not_allocate_or_panic() {
        let bytes = [0xff, 0xff, 0xff, 0x7f, 1, 2, 3];
        assert_eq!(decode(&bytes), None);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut value = b"x".to_vec();
        for _ in 0..100 {
            value = pairs(&[(b"a", &value)]);
        }
        // Past the depth limit a nested map is not expanded; the result is
        // still produced without recursion blowing the stack.
        let _ = decode(&value);
    }
}
