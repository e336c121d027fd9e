//! `proxy_get_property` / `proxy_set_property`.
//!
//! Lookup order: what the test or the guest set on the current request, then
//! what the guest set on the VM, then host-wide properties from the builder,
//! then the few attributes Envoy derives from the request headers
//! (`request.path`, `request.url_path`, `request.method`, `request.host`,
//! `request.scheme`, `request.id`) and the plugin identity. Paths match
//! exactly: set the full path the filter reads.

use super::abi::{decode_path, encode_pairs, Status};
use super::headers::first_value;
use super::memory::{self, HostResult};
use super::vm::VmState;
use wasmtime::Caller;

/// Encodes a struct-valued property (for example the jwt_authn payload in
/// dynamic metadata) the way Envoy serializes one for `get_property`:
/// proxy-wasm pairs, nested values already encoded by the caller.
pub fn encode_property_map(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let owned: Vec<(String, Vec<u8>)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect();
    encode_pairs(&owned)
}

fn derived(state: &mut VmState, path: &[String]) -> Option<Vec<u8>> {
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["plugin_name"] => return Some(state.settings.plugin_name.clone().into_bytes()),
        ["plugin_root_id"] => return Some(state.settings.root_id.clone().into_bytes()),
        ["plugin_vm_id"] => return Some(state.settings.vm_id.clone().into_bytes()),
        _ => {}
    }
    let headers = state.current_stream()?.request.headers.clone()?;
    let header = |name: &str| first_value(&headers, name).map(|v| v.as_bytes().to_vec());
    match segments.as_slice() {
        ["request", "path"] => header(":path"),
        // Envoy drops the query string but keeps a fragment.
        ["request", "url_path"] => {
            let path = first_value(&headers, ":path")?;
            Some(
                path.split('?')
                    .next()
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec(),
            )
        }
        ["request", "method"] => header(":method"),
        ["request", "host"] => header(":authority"),
        ["request", "scheme"] => header(":scheme"),
        ["request", "id"] => header("x-request-id"),
        _ => None,
    }
}

pub(crate) fn lookup(state: &mut VmState, path: &[String]) -> Option<Vec<u8>> {
    if let Some(value) = state
        .current_stream()
        .and_then(|s| s.properties.get(path).cloned())
    {
        return Some(value);
    }
    if let Some(value) = state.root_properties.get(path) {
        return Some(value.clone());
    }
    if let Some(value) = state.settings.properties.get(path) {
        return Some(value.clone());
    }
    derived(state, path)
}

pub(crate) fn proxy_get_property(
    mut caller: Caller<'_, VmState>,
    path_ptr: u32,
    path_len: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let path = decode_path(&memory::read(&mut caller, path_ptr, path_len)?);
    let value = lookup(caller.data_mut(), &path).ok_or(Status::NotFound)?;
    memory::return_bytes(&mut caller, &value, return_data, return_size)
}

pub(crate) fn proxy_set_property(
    mut caller: Caller<'_, VmState>,
    path_ptr: u32,
    path_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostResult {
    let path = decode_path(&memory::read(&mut caller, path_ptr, path_len)?);
    let value = memory::read(&mut caller, value_ptr, value_len)?;
    if path.is_empty() {
        return Err(Status::BadArgument.into());
    }
    let state = caller.data_mut();
    match state.current_stream() {
        Some(stream) => {
            stream.properties.insert(path, value);
        }
        None => {
            state.root_properties.insert(path, value);
        }
    }
    Ok(())
}
