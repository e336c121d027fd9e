//! Header maps and body buffers: the `proxy_*_header_map_*` and
//! `proxy_*_buffer_bytes` host functions with Envoy's semantics.

use super::abi::{buffer_type, decode_pairs, encode_pairs, len_u32, map_type, Status};
use super::memory::{self, HostResult};
use super::vm::VmState;
use wasmtime::Caller;

/// Header names are lowercase, as Envoy's codecs and `LowerCaseString` make them.
pub type HeaderMap = Vec<(String, String)>;

/// Builds a header map from test input: names lowercased, order kept.
pub(crate) fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        add_header(&mut map, name, value);
    }
    map
}

/// Envoy keeps pseudo-headers (`:path`, ...) ahead of ordinary ones.
pub(crate) fn add_header(map: &mut HeaderMap, name: &str, value: &str) {
    let name = name.to_ascii_lowercase();
    if name.starts_with(':') {
        let at = map
            .iter()
            .take_while(|(key, _)| key.starts_with(':'))
            .count();
        map.insert(at, (name, value.to_owned()));
    } else {
        map.push((name, value.to_owned()));
    }
}

pub(crate) fn remove_header(map: &mut HeaderMap, name: &str) {
    let name = name.to_ascii_lowercase();
    map.retain(|(key, _)| *key != name);
}

/// Envoy's `setCopy`: every existing value goes, one new value is added.
pub(crate) fn replace_header(map: &mut HeaderMap, name: &str, value: &str) {
    remove_header(map, name);
    add_header(map, name, value);
}

/// Only the first value: Envoy's `get_header_map_value` ignores the rest.
pub(crate) fn first_value<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    map.iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.as_str())
}

fn map_mut(state: &mut VmState, kind: u32) -> Result<&mut HeaderMap, Status> {
    let map = match kind {
        map_type::HTTP_CALL_RESPONSE_HEADERS => {
            state.call_response.as_mut().map(|r| &mut r.headers)
        }
        map_type::HTTP_CALL_RESPONSE_TRAILERS => {
            state.call_response.as_mut().map(|r| &mut r.trailers)
        }
        _ => {
            let stream = state.current_stream().ok_or(Status::BadArgument)?;
            match kind {
                map_type::HTTP_REQUEST_HEADERS => stream.request.headers.as_mut(),
                map_type::HTTP_REQUEST_TRAILERS => stream.request.trailers.as_mut(),
                map_type::HTTP_RESPONSE_HEADERS => stream.response.headers.as_mut(),
                map_type::HTTP_RESPONSE_TRAILERS => stream.response.trailers.as_mut(),
                _ => None,
            }
        }
    };
    // Envoy answers BadArgument for a map the current phase does not have.
    map.ok_or(Status::BadArgument)
}

pub(crate) fn proxy_get_header_map_pairs(
    mut caller: Caller<'_, VmState>,
    kind: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let state = caller.data_mut();
    let access_log_phase = state.access_log_phase;
    let map = match map_mut(state, kind) {
        Ok(map) => map.clone(),
        // In the access log phase Envoy answers a missing map with no pairs.
        Err(_) if access_log_phase => HeaderMap::new(),
        Err(status) => return Err(status.into()),
    };
    let encoded = if map.is_empty() {
        Vec::new()
    } else {
        let pairs: Vec<(String, Vec<u8>)> =
            map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        encode_pairs(&pairs)
    };
    memory::return_bytes(&mut caller, &encoded, return_data, return_size)
}

pub(crate) fn proxy_set_header_map_pairs(
    mut caller: Caller<'_, VmState>,
    kind: u32,
    ptr: u32,
    len: u32,
) -> HostResult {
    let bytes = memory::read(&mut caller, ptr, len)?;
    let pairs = decode_pairs(&bytes).ok_or(Status::BadArgument)?;
    let map = map_mut(caller.data_mut(), kind)?;
    map.clear();
    for (name, value) in pairs {
        add_header(map, &name, &String::from_utf8_lossy(&value));
    }
    Ok(())
}

pub(crate) fn proxy_get_header_map_value(
    mut caller: Caller<'_, VmState>,
    kind: u32,
    key_ptr: u32,
    key_len: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let key = memory::read_string(&mut caller, key_ptr, key_len)?;
    let state = caller.data_mut();
    let access_log_phase = state.access_log_phase;
    let map = match map_mut(state, kind) {
        Ok(map) => map,
        // In the access log phase Envoy answers a missing map with NotFound.
        Err(_) if access_log_phase => return Err(Status::NotFound.into()),
        Err(status) => return Err(status.into()),
    };
    let value = first_value(map, &key).ok_or(Status::NotFound)?.to_owned();
    memory::return_bytes(&mut caller, value.as_bytes(), return_data, return_size)
}

fn key_and_value(
    caller: &mut Caller<'_, VmState>,
    key: (u32, u32),
    value: (u32, u32),
) -> Result<(String, String), Status> {
    let key = memory::read_string(caller, key.0, key.1)?;
    let value = memory::read(caller, value.0, value.1)?;
    Ok((key, String::from_utf8_lossy(&value).into_owned()))
}

pub(crate) fn proxy_replace_header_map_value(
    mut caller: Caller<'_, VmState>,
    kind: u32,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostResult {
    let (key, value) = key_and_value(&mut caller, (key_ptr, key_len), (value_ptr, value_len))?;
    replace_header(map_mut(caller.data_mut(), kind)?, &key, &value);
    Ok(())
}

pub(crate) fn proxy_add_header_map_value(
    mut caller: Caller<'_, VmState>,
    kind: u32,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostResult {
    let (key, value) = key_and_value(&mut caller, (key_ptr, key_len), (value_ptr, value_len))?;
    add_header(map_mut(caller.data_mut(), kind)?, &key, &value);
    Ok(())
}

pub(crate) fn proxy_remove_header_map_value(
    mut caller: Caller<'_, VmState>,
    kind: u32,
    key_ptr: u32,
    key_len: u32,
) -> HostResult {
    let key = memory::read_string(&mut caller, key_ptr, key_len)?;
    remove_header(map_mut(caller.data_mut(), kind)?, &key);
    Ok(())
}

/// Envoy reports the byte size of the map: the sum of name and value lengths.
pub(crate) fn proxy_get_header_map_size(
    mut caller: Caller<'_, VmState>,
    kind: u32,
    return_size: u32,
) -> HostResult {
    let map = map_mut(caller.data_mut(), kind)?;
    let size: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    memory::write_u32(&mut caller, return_size, len_u32(size))
}

fn buffer(state: &mut VmState, kind: u32) -> Result<Option<&mut Vec<u8>>, Status> {
    Ok(match kind {
        buffer_type::HTTP_REQUEST_BODY => {
            state.current_stream().and_then(|s| s.request.body.as_mut())
        }
        buffer_type::HTTP_RESPONSE_BODY => state
            .current_stream()
            .and_then(|s| s.response.body.as_mut()),
        buffer_type::HTTP_CALL_RESPONSE_BODY => state.call_response.as_mut().map(|r| &mut r.body),
        buffer_type::PLUGIN_CONFIGURATION => state.plugin_configuration.as_mut(),
        buffer_type::VM_CONFIGURATION => None,
        _ => return Err(Status::BadArgument),
    })
}

pub(crate) fn proxy_get_buffer_bytes(
    mut caller: Caller<'_, VmState>,
    kind: u32,
    start: u32,
    max_size: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let state = caller.data_mut();
    let bytes = if kind == buffer_type::VM_CONFIGURATION {
        state.settings.vm_configuration.clone()
    } else {
        buffer(state, kind)?.ok_or(Status::NotFound)?.clone()
    };
    let start = start as usize;
    if start.checked_add(max_size as usize).is_none() {
        return Err(Status::BadArgument.into());
    }
    let end = start.saturating_add(max_size as usize).min(bytes.len());
    let slice = bytes.get(start..end).unwrap_or_default();
    memory::return_bytes(&mut caller, slice, return_data, return_size)
}

/// Envoy's `Buffer::copyFrom`: at start 0 it drops `size` bytes and prepends
/// the data (so `(0, len)` replaces the whole buffer); at or past the end it
/// appends; anywhere else is a BadArgument.
pub(crate) fn proxy_set_buffer_bytes(
    mut caller: Caller<'_, VmState>,
    kind: u32,
    start: u32,
    size: u32,
    data_ptr: u32,
    data_len: u32,
) -> HostResult {
    let data = memory::read(&mut caller, data_ptr, data_len)?;
    let body = match kind {
        buffer_type::HTTP_REQUEST_BODY
        | buffer_type::HTTP_RESPONSE_BODY
        | buffer_type::HTTP_CALL_RESPONSE_BODY => {
            buffer(caller.data_mut(), kind)?.ok_or(Status::NotFound)?
        }
        _ => return Err(Status::BadArgument.into()),
    };
    let (start, size) = (start as usize, size as usize);
    if start == 0 {
        body.drain(..size.min(body.len()));
        body.splice(0..0, data);
    } else if start >= body.len() {
        body.extend_from_slice(&data);
    } else {
        return Err(Status::BadArgument.into());
    }
    Ok(())
}

/// ABI 0.1.0's way to read the plugin configuration (0.2.x uses
/// `proxy_get_buffer_bytes` with `PluginConfiguration`).
pub(crate) fn proxy_get_configuration(
    mut caller: Caller<'_, VmState>,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let configuration = caller
        .data()
        .plugin_configuration
        .clone()
        .ok_or(Status::NotFound)?;
    memory::return_bytes(&mut caller, &configuration, return_data, return_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_headers_stay_ahead_of_ordinary_ones() {
        let mut map = header_map(&[(":method", "GET"), ("x-a", "1")]);
        add_header(&mut map, ":path", "/p");
        assert_eq!(map[1].0, ":path");
        assert_eq!(map[2].0, "x-a");
    }

    #[test]
    fn replace_drops_every_duplicate() {
        let mut map = header_map(&[("X-Dupe", "1"), ("x-dupe", "2"), ("x-other", "o")]);
        replace_header(&mut map, "x-dupe", "3");
        assert_eq!(
            map,
            vec![
                ("x-other".to_owned(), "o".to_owned()),
                ("x-dupe".to_owned(), "3".to_owned())
            ]
        );
    }

    #[test]
    fn first_value_ignores_later_duplicates_and_missing_is_none() {
        let map = header_map(&[("x-dupe", "1"), ("x-dupe", "2")]);
        assert_eq!(first_value(&map, "X-Dupe"), Some("1"));
        assert_eq!(first_value(&map, "x-none"), None);
    }
}
