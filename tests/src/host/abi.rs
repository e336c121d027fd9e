//! proxy-wasm ABI 0.2.1 numbers and the wire format of header maps.
//!
//! The values are the ABI's (the Rust SDK's `types.rs` mirrors them); the
//! guest transmutes the returned `u32` into its own enums, so a value the SDK
//! does not know is undefined behaviour on its side: return only these.

/// `WasmResult` codes returned by every host function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

impl Status {
    pub(crate) fn code(self) -> u32 {
        self as u32
    }
}

/// Log levels of `proxy_log` / `proxy_get_log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }

    pub(crate) fn raw(self) -> u32 {
        match self {
            Self::Trace => 0,
            Self::Debug => 1,
            Self::Info => 2,
            Self::Warn => 3,
            Self::Error => 4,
            Self::Critical => 5,
        }
    }
}

/// What a `proxy_on_*_headers/body/trailers` callback asked the host to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the data go on to the next filter (upstream for requests).
    Continue,
    /// Stop iteration; for bodies: buffer (Envoy's `StopIterationAndBuffer`).
    Pause,
}

impl Action {
    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Continue),
            1 => Some(Self::Pause),
            _ => None,
        }
    }
}

pub(crate) mod buffer_type {
    pub const HTTP_REQUEST_BODY: u32 = 0;
    pub const HTTP_RESPONSE_BODY: u32 = 1;
    pub const HTTP_CALL_RESPONSE_BODY: u32 = 4;
    pub const VM_CONFIGURATION: u32 = 6;
    pub const PLUGIN_CONFIGURATION: u32 = 7;
}

pub(crate) mod map_type {
    pub const HTTP_REQUEST_HEADERS: u32 = 0;
    pub const HTTP_REQUEST_TRAILERS: u32 = 1;
    pub const HTTP_RESPONSE_HEADERS: u32 = 2;
    pub const HTTP_RESPONSE_TRAILERS: u32 = 3;
    pub const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: u32 = 7;
}

pub(crate) mod stream_type {
    pub const HTTP_REQUEST: u32 = 0;
    pub const HTTP_RESPONSE: u32 = 1;
}

/// Metric kinds of `proxy_define_metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Counter),
            1 => Some(Self::Gauge),
            2 => Some(Self::Histogram),
            _ => None,
        }
    }
}

pub type Pairs = Vec<(String, Vec<u8>)>;

/// Serializes pairs the ABI way: count, then (key len, value len) per pair,
/// then each key and value followed by a NUL byte.
pub(crate) fn encode_pairs(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&len_u32(key.len()).to_le_bytes());
        out.extend_from_slice(&len_u32(value.len()).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// The inverse of [`encode_pairs`]; `None` on a malformed or truncated map.
pub(crate) fn decode_pairs(bytes: &[u8]) -> Option<Pairs> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(bytes, 0)? as usize;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let at = 4usize.checked_add(index.checked_mul(8)?)?;
        sizes.push((
            read_u32(bytes, at)? as usize,
            read_u32(bytes, at + 4)? as usize,
        ));
    }
    let mut at = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut pairs = Vec::with_capacity(sizes.len());
    for (key_len, value_len) in sizes {
        let key = bytes.get(at..at.checked_add(key_len)?)?;
        at += key_len + 1;
        let value = bytes.get(at..at.checked_add(value_len)?)?;
        at += value_len + 1;
        pairs.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    Some(pairs)
}

/// A property path is its segments joined by NUL bytes.
pub(crate) fn decode_path(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|segment| String::from_utf8_lossy(segment).into_owned())
        .collect()
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// Guest sizes are 32-bit; the host never builds anything near 4 GiB.
pub(crate) fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_through_the_abi_encoding() {
        let pairs = vec![
            (":path".to_owned(), b"/a".to_vec()),
            ("x-empty".to_owned(), Vec::new()),
        ];
        assert_eq!(decode_pairs(&encode_pairs(&pairs)), Some(pairs));
    }

    #[test]
    fn truncated_pairs_are_rejected_not_misread() {
        let encoded = encode_pairs(&[("key".to_owned(), b"value".to_vec())]);
        assert_eq!(decode_pairs(&encoded[..encoded.len() - 3]), None);
        assert_eq!(decode_pairs(&[1, 0, 0, 0]), None);
    }

    #[test]
    fn property_path_splits_on_nul() {
        assert_eq!(decode_path(b"source\0address"), vec!["source", "address"]);
        assert!(decode_path(b"").is_empty());
    }

    #[test]
    fn unknown_action_and_level_values_are_not_guessed() {
        assert_eq!(Action::from_raw(7), None);
        assert_eq!(LogLevel::from_raw(6), None);
        assert_eq!(MetricKind::from_raw(3), None);
    }
}
