//! Binds the host functions to the module's imports. Every import the module
//! declares gets a function: the implemented ones, and for anything else a
//! stub that returns `Unimplemented` (module `env`) or ENOSYS (WASI), so an
//! unexpected import never stops instantiation and never traps by itself.

use super::abi::Status;
use super::memory::status_word;
use super::vm::VmState;
use super::{calls, headers, properties, shared, wasi};
use std::collections::BTreeSet;
use wasmtime::{Caller, Engine, ExternType, IntoFunc, Linker, Module, Val, ValType};

const ENV: &str = "env";
const WASI: &str = "wasi_snapshot_preview1";

struct Registry {
    linker: Linker<VmState>,
    defined: BTreeSet<(String, String)>,
}

impl Registry {
    fn wrap<Params, Args>(
        &mut self,
        module: &str,
        name: &str,
        func: impl IntoFunc<VmState, Params, Args>,
    ) -> anyhow::Result<()> {
        self.linker
            .func_wrap(module, name, func)
            .map_err(|e| anyhow::anyhow!("defining {module}::{name}: {e}"))?;
        self.defined.insert((module.to_owned(), name.to_owned()));
        Ok(())
    }
}

/// `hostcall!(registry, "name", path::to::fn, (arg: type, ...))` binds a
/// proxy-wasm host function returning a status word.
macro_rules! hostcall {
    ($registry:expr, $name:literal, $func:path, ($($arg:ident: $ty:ty),*)) => {
        $registry.wrap(ENV, $name, |caller: Caller<'_, VmState>, $($arg: $ty),*| -> wasmtime::Result<u32> {
            status_word($func(caller, $($arg),*))
        })?
    };
}

pub(crate) fn linker(engine: &Engine, module: &Module) -> anyhow::Result<Linker<VmState>> {
    let mut registry = Registry {
        linker: Linker::new(engine),
        defined: BTreeSet::new(),
    };
    let r = &mut registry;
    hostcall!(r, "proxy_log", shared::proxy_log, (level: u32, ptr: u32, len: u32));
    hostcall!(r, "proxy_get_log_level", shared::proxy_get_log_level, (ret: u32));
    hostcall!(r, "proxy_get_current_time_nanoseconds", shared::proxy_get_current_time_nanoseconds, (ret: u32));
    hostcall!(r, "proxy_set_tick_period_milliseconds", shared::proxy_set_tick_period_milliseconds, (period: u32));
    hostcall!(r, "proxy_get_configuration", headers::proxy_get_configuration, (ret: u32, size: u32));
    hostcall!(r, "proxy_get_buffer_bytes", headers::proxy_get_buffer_bytes,
        (kind: u32, start: u32, max: u32, ret: u32, size: u32));
    hostcall!(r, "proxy_set_buffer_bytes", headers::proxy_set_buffer_bytes,
        (kind: u32, start: u32, len: u32, ptr: u32, size: u32));
    hostcall!(r, "proxy_get_header_map_pairs", headers::proxy_get_header_map_pairs, (kind: u32, ret: u32, size: u32));
    hostcall!(r, "proxy_set_header_map_pairs", headers::proxy_set_header_map_pairs, (kind: u32, ptr: u32, len: u32));
    hostcall!(r, "proxy_get_header_map_value", headers::proxy_get_header_map_value,
        (kind: u32, key: u32, key_len: u32, ret: u32, size: u32));
    hostcall!(r, "proxy_replace_header_map_value", headers::proxy_replace_header_map_value,
        (kind: u32, key: u32, key_len: u32, value: u32, value_len: u32));
    hostcall!(r, "proxy_add_header_map_value", headers::proxy_add_header_map_value,
        (kind: u32, key: u32, key_len: u32, value: u32, value_len: u32));
    hostcall!(r, "proxy_remove_header_map_value", headers::proxy_remove_header_map_value,
        (kind: u32, key: u32, key_len: u32));
    hostcall!(r, "proxy_get_header_map_size", headers::proxy_get_header_map_size, (kind: u32, ret: u32));
    hostcall!(r, "proxy_get_property", properties::proxy_get_property, (path: u32, path_len: u32, ret: u32, size: u32));
    hostcall!(r, "proxy_set_property", properties::proxy_set_property,
        (path: u32, path_len: u32, value: u32, value_len: u32));
    hostcall!(r, "proxy_send_local_response", calls::proxy_send_local_response,
        (status: u32, details: u32, details_len: u32, body: u32, body_len: u32, headers: u32, headers_len: u32, grpc: i32));
    hostcall!(r, "proxy_continue_stream", calls::proxy_continue_stream, (kind: u32));
    hostcall!(r, "proxy_close_stream", calls::proxy_close_stream, (kind: u32));
    hostcall!(
        r,
        "proxy_continue_request",
        calls::proxy_continue_request,
        ()
    );
    hostcall!(
        r,
        "proxy_continue_response",
        calls::proxy_continue_response,
        ()
    );
    hostcall!(r, "proxy_http_call", calls::proxy_http_call,
        (upstream: u32, upstream_len: u32, headers: u32, headers_len: u32, body: u32, body_len: u32,
         trailers: u32, trailers_len: u32, timeout: u32, ret: u32));
    hostcall!(r, "proxy_set_effective_context", calls::proxy_set_effective_context, (context: u32));
    hostcall!(r, "proxy_done", calls::proxy_done, ());
    hostcall!(r, "proxy_call_foreign_function", calls::proxy_call_foreign_function,
        (name: u32, name_len: u32, args: u32, args_len: u32, ret: u32, size: u32));
    hostcall!(r, "proxy_get_shared_data", shared::proxy_get_shared_data,
        (key: u32, key_len: u32, ret: u32, size: u32, cas: u32));
    hostcall!(r, "proxy_set_shared_data", shared::proxy_set_shared_data,
        (key: u32, key_len: u32, value: u32, value_len: u32, cas: u32));
    hostcall!(r, "proxy_register_shared_queue", shared::proxy_register_shared_queue, (name: u32, name_len: u32, ret: u32));
    hostcall!(r, "proxy_resolve_shared_queue", shared::proxy_resolve_shared_queue,
        (vm_id: u32, vm_id_len: u32, name: u32, name_len: u32, ret: u32));
    hostcall!(r, "proxy_enqueue_shared_queue", shared::proxy_enqueue_shared_queue, (queue: u32, value: u32, value_len: u32));
    hostcall!(r, "proxy_dequeue_shared_queue", shared::proxy_dequeue_shared_queue, (queue: u32, ret: u32, size: u32));
    hostcall!(r, "proxy_define_metric", shared::proxy_define_metric, (kind: u32, name: u32, name_len: u32, ret: u32));
    hostcall!(r, "proxy_increment_metric", shared::proxy_increment_metric, (id: u32, offset: i64));
    hostcall!(r, "proxy_record_metric", shared::proxy_record_metric, (id: u32, value: u64));
    hostcall!(r, "proxy_get_metric", shared::proxy_get_metric, (id: u32, ret: u32));

    r.wrap(WASI, "environ_get", wasi::environ_get)?;
    r.wrap(WASI, "environ_sizes_get", wasi::environ_sizes_get)?;
    r.wrap(WASI, "args_get", wasi::args_get)?;
    r.wrap(WASI, "args_sizes_get", wasi::args_sizes_get)?;
    r.wrap(WASI, "fd_write", wasi::fd_write)?;
    r.wrap(WASI, "proc_exit", wasi::proc_exit)?;
    r.wrap(WASI, "random_get", wasi::random_get)?;
    r.wrap(WASI, "clock_time_get", wasi::clock_time_get)?;
    r.wrap(WASI, "clock_res_get", wasi::clock_res_get)?;
    r.wrap(WASI, "fd_prestat_get", wasi::fd_prestat_get)?;
    r.wrap(WASI, "sched_yield", wasi::sched_yield)?;

    define_stubs(&mut registry, module)?;
    Ok(registry.linker)
}

/// Stubs for the imports the host does not implement (gRPC calls and the
/// rest): `Unimplemented` in `env`, ENOSYS in WASI, zeros elsewhere.
fn define_stubs(registry: &mut Registry, module: &Module) -> anyhow::Result<()> {
    for import in module.imports() {
        let key = (import.module().to_owned(), import.name().to_owned());
        if registry.defined.contains(&key) {
            continue;
        }
        let ExternType::Func(func_type) = import.ty() else {
            anyhow::bail!(
                "the module imports {}::{} which is not a function; this host provides only functions",
                key.0,
                key.1
            );
        };
        let status = match key.0.as_str() {
            ENV => Status::Unimplemented.code(),
            WASI => wasi::ERRNO_NOSYS,
            _ => 0,
        };
        let results: Vec<ValType> = func_type.results().collect();
        registry
            .linker
            .func_new(
                &key.0,
                &key.1,
                func_type.clone(),
                move |_caller, _params, out| {
                    for (slot, ty) in out.iter_mut().zip(&results) {
                        *slot = match ty {
                            ValType::I32 => Val::I32(status as i32),
                            other => Val::default_for_ty(other).unwrap_or(Val::I32(0)),
                        };
                    }
                    Ok(())
                },
            )
            .map_err(|e| anyhow::anyhow!("stubbing {}::{}: {e}", key.0, key.1))?;
        registry.defined.insert(key);
    }
    Ok(())
}
