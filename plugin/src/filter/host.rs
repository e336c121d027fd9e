//! Fallible, panic-free wrappers over proxy-wasm host calls.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, Bytes, LogLevel, MapType};

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Whether the host keeps messages at `level` (so callers can skip formatting).
pub fn log_enabled(level: LogLevel) -> bool {
    match hostcalls::get_log_level() {
        Ok(current) => (level as u32) >= (current as u32),
        Err(_) => true,
    }
}

pub fn now_millis() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn buffer(kind: BufferType, size: usize) -> Option<Bytes> {
    hostcalls::get_buffer(kind, 0, size).ok().flatten()
}

/// All request headers with their raw value bytes (every value of a repeated
/// header is its own pair).
pub fn request_headers() -> Vec<(String, Bytes)> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
}

pub fn remove_request_header(name: &str) {
    let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
}

pub fn set_request_header(name: &str, value: &str) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
}

pub fn response_status() -> Option<u16> {
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
}

pub fn http_call_status() -> Option<u16> {
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
}

pub fn property_string(path: Vec<&str>) -> Option<String> {
    hostcalls::get_property(path)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

pub fn property_bytes(path: Vec<&str>) -> Option<Bytes> {
    hostcalls::get_property(path).ok().flatten()
}

pub fn send_reply(status: u16, headers: &[(&str, &str)], body: &[u8]) {
    if hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body)).is_err() {
        log(LogLevel::Error, "avb-edge: the host refused a local reply");
    }
}
