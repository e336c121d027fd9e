//! Host functions that act on the stream or the outside world: HTTP calls,
//! local replies, continue/close, effective context, foreign functions.

use super::abi::{decode_pairs, stream_type, Status};
use super::headers::{first_value, header_map, HeaderMap};
use super::memory::{self, HostResult};
use super::shared::{Deferred, Flow, HttpCall};
use super::vm::{lock, LocalReply, VmState};
use wasmtime::Caller;

fn read_map(caller: &mut Caller<'_, VmState>, ptr: u32, len: u32) -> Result<HeaderMap, Status> {
    let bytes = memory::read(caller, ptr, len)?;
    let pairs = decode_pairs(&bytes).ok_or(Status::BadArgument)?;
    let owned: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let borrowed: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Ok(header_map(&borrowed))
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
pub(crate) fn proxy_http_call(
    mut caller: Caller<'_, VmState>,
    upstream_ptr: u32,
    upstream_len: u32,
    headers_ptr: u32,
    headers_len: u32,
    body_ptr: u32,
    body_len: u32,
    trailers_ptr: u32,
    trailers_len: u32,
    timeout_ms: u32,
    return_token: u32,
) -> HostResult {
    let upstream = memory::read_string(&mut caller, upstream_ptr, upstream_len)?;
    let headers = read_map(&mut caller, headers_ptr, headers_len)?;
    let body = memory::read(&mut caller, body_ptr, body_len)?;
    let trailers = read_map(&mut caller, trailers_ptr, trailers_len)?;
    let state = caller.data();
    // Envoy refuses a call to a cluster it does not know, and one without the
    // pseudo-headers it needs to build the request.
    if !state.settings.clusters.contains(&upstream) {
        return Err(Status::BadArgument.into());
    }
    if [":method", ":path", ":authority"]
        .iter()
        .any(|name| first_value(&headers, name).is_none())
    {
        return Err(Status::BadArgument.into());
    }
    let token = {
        let mut shared = lock(&state.shared);
        let token = shared.next_call_token();
        let call = HttpCall {
            token,
            worker: state.worker,
            context: state.current_context,
            upstream,
            headers,
            body,
            trailers,
            timeout_ms,
        };
        shared.calls.insert(token, call);
        token
    };
    memory::write_u32(&mut caller, return_token, token)
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
pub(crate) fn proxy_send_local_response(
    mut caller: Caller<'_, VmState>,
    status: u32,
    details_ptr: u32,
    details_len: u32,
    body_ptr: u32,
    body_len: u32,
    headers_ptr: u32,
    headers_len: u32,
    grpc_status: i32,
) -> HostResult {
    let details =
        String::from_utf8_lossy(&memory::read(&mut caller, details_ptr, details_len)?).into_owned();
    let body = memory::read(&mut caller, body_ptr, body_len)?;
    let headers = read_map(&mut caller, headers_ptr, headers_len)?;
    // Outside an HTTP stream Envoy has no stream to answer and ignores it.
    if let Some(stream) = caller.data_mut().current_stream() {
        // A second local reply on an answered stream goes nowhere in Envoy.
        if stream.local_reply.is_none() {
            stream.local_reply = Some(LocalReply {
                status,
                headers,
                body,
                details,
                grpc_status,
            });
        }
    }
    Ok(())
}

fn flow_of(kind: u32) -> Result<Flow, Status> {
    match kind {
        stream_type::HTTP_REQUEST => Ok(Flow::Request),
        stream_type::HTTP_RESPONSE => Ok(Flow::Response),
        _ => Err(Status::BadArgument),
    }
}

/// Envoy runs continueDecoding/continueEncoding after the VM call returns;
/// so does the host.
pub(crate) fn proxy_continue_stream(mut caller: Caller<'_, VmState>, kind: u32) -> HostResult {
    let flow = flow_of(kind)?;
    resume(&mut caller, flow);
    Ok(())
}

fn resume(caller: &mut Caller<'_, VmState>, flow: Flow) {
    let state = caller.data_mut();
    let (worker, context) = (state.worker, state.current_context);
    if let Some(stream) = state.current_stream() {
        stream.flow_mut(flow).continued = true;
        lock(&state.shared).deferred.push_back(Deferred::Resume {
            worker,
            context,
            flow,
        });
    }
}

/// ABI 0.1.0 spelling of `proxy_continue_stream(HttpRequest)`.
pub(crate) fn proxy_continue_request(mut caller: Caller<'_, VmState>) -> HostResult {
    resume(&mut caller, Flow::Request);
    Ok(())
}

/// ABI 0.1.0 spelling of `proxy_continue_stream(HttpResponse)`.
pub(crate) fn proxy_continue_response(mut caller: Caller<'_, VmState>) -> HostResult {
    resume(&mut caller, Flow::Response);
    Ok(())
}

pub(crate) fn proxy_close_stream(mut caller: Caller<'_, VmState>, kind: u32) -> HostResult {
    flow_of(kind)?;
    if let Some(stream) = caller.data_mut().current_stream() {
        stream.reset = true;
    }
    Ok(())
}

pub(crate) fn proxy_set_effective_context(
    mut caller: Caller<'_, VmState>,
    context: u32,
) -> HostResult {
    let state = caller.data_mut();
    if !state.is_live_context(context) {
        return Err(Status::BadArgument.into());
    }
    state.current_context = context;
    Ok(())
}

/// HTTP contexts do not wait for `proxy_done` in Envoy (it matters only for
/// root contexts at VM shutdown, which a test host never reaches).
pub(crate) fn proxy_done(_caller: Caller<'_, VmState>) -> HostResult {
    Ok(())
}

/// No foreign functions are registered in this host.
pub(crate) fn proxy_call_foreign_function(
    _caller: Caller<'_, VmState>,
    _name_ptr: u32,
    _name_len: u32,
    _args_ptr: u32,
    _args_len: u32,
    _return_data: u32,
    _return_size: u32,
) -> HostResult {
    Err(Status::NotFound.into())
}
