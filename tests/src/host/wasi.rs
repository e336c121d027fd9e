//! The few `wasi_snapshot_preview1` functions a `wasm32-wasip1` filter uses:
//! environment variables (Envoy's `vm_config.environment_variables`),
//! stdout/stderr into the log capture, the host clock, a deterministic
//! random source, and `proc_exit` as a trap. Everything else is a stub that
//! answers ENOSYS (see `link.rs`).

use super::abi::LogLevel;
use super::memory;
use super::shared::now_nanos;
use super::vm::{lock, VmState};
use wasmtime::Caller;

pub(crate) const ERRNO_SUCCESS: u32 = 0;
pub(crate) const ERRNO_BADF: u32 = 8;
pub(crate) const ERRNO_FAULT: u32 = 21;
pub(crate) const ERRNO_INVAL: u32 = 28;
pub(crate) const ERRNO_NOSYS: u32 = 52;

fn errno<T>(result: Result<T, impl Sized>) -> u32 {
    match result {
        Ok(_) => ERRNO_SUCCESS,
        Err(_) => ERRNO_FAULT,
    }
}

fn environment(state: &VmState) -> Vec<Vec<u8>> {
    state
        .settings
        .env
        .iter()
        .map(|(key, value)| {
            let mut entry = format!("{key}={value}").into_bytes();
            entry.push(0);
            entry
        })
        .collect()
}

pub(crate) fn environ_sizes_get(
    mut caller: Caller<'_, VmState>,
    count_ptr: u32,
    size_ptr: u32,
) -> u32 {
    let entries = environment(caller.data());
    let size: usize = entries.iter().map(Vec::len).sum();
    errno(
        memory::write_u32(&mut caller, count_ptr, super::abi::len_u32(entries.len()))
            .and_then(|()| memory::write_u32(&mut caller, size_ptr, super::abi::len_u32(size))),
    )
}

pub(crate) fn environ_get(mut caller: Caller<'_, VmState>, environ_ptr: u32, buf_ptr: u32) -> u32 {
    let entries = environment(caller.data());
    let mut pointer_at = environ_ptr;
    let mut string_at = buf_ptr;
    for entry in entries {
        let written = memory::write_u32(&mut caller, pointer_at, string_at)
            .and_then(|()| memory::write(&mut caller, string_at, &entry).map_err(Into::into));
        if written.is_err() {
            return ERRNO_FAULT;
        }
        pointer_at = pointer_at.wrapping_add(4);
        string_at = string_at.wrapping_add(super::abi::len_u32(entry.len()));
    }
    ERRNO_SUCCESS
}

pub(crate) fn args_sizes_get(
    mut caller: Caller<'_, VmState>,
    count_ptr: u32,
    size_ptr: u32,
) -> u32 {
    errno(
        memory::write_u32(&mut caller, count_ptr, 0)
            .and_then(|()| memory::write_u32(&mut caller, size_ptr, 0)),
    )
}

pub(crate) fn args_get(_caller: Caller<'_, VmState>, _argv: u32, _buf: u32) -> u32 {
    ERRNO_SUCCESS
}

/// Lines the guest prints (a Rust panic message goes to stderr) land in the
/// log capture, so a trap's report shows them.
pub(crate) fn fd_write(
    mut caller: Caller<'_, VmState>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    written_ptr: u32,
) -> u32 {
    let stream = match fd {
        1 => 0,
        2 => 1,
        _ => return ERRNO_BADF,
    };
    let mut total: u32 = 0;
    for index in 0..iovs_len {
        let at = iovs.wrapping_add(index.wrapping_mul(8));
        let Ok(iov) = memory::read(&mut caller, at, 8) else {
            return ERRNO_FAULT;
        };
        let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        let Ok(bytes) = memory::read(&mut caller, ptr, len) else {
            return ERRNO_FAULT;
        };
        caller.data_mut().output[stream].extend_from_slice(&bytes);
        total = total.wrapping_add(len);
    }
    flush_output(caller.data_mut(), false);
    errno(memory::write_u32(&mut caller, written_ptr, total))
}

/// Moves complete lines (all output when `everything`) into the log capture.
pub(crate) fn flush_output(state: &mut VmState, everything: bool) {
    for stream in 0..2 {
        let buffer = &mut state.output[stream];
        let cut = if everything {
            buffer.len()
        } else {
            buffer
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |at| at + 1)
        };
        if cut == 0 {
            continue;
        }
        let text: Vec<u8> = buffer.drain(..cut).collect();
        let (level, name) = if stream == 0 {
            (LogLevel::Info, "stdout")
        } else {
            (LogLevel::Error, "stderr")
        };
        let mut shared = lock(&state.shared);
        for line in String::from_utf8_lossy(&text).lines() {
            shared.log(state.worker, level, format!("{name}: {line}"));
        }
    }
}

pub(crate) fn proc_exit(_caller: Caller<'_, VmState>, code: u32) -> wasmtime::Result<()> {
    wasmtime::bail!("the guest called proc_exit({code})")
}

/// xorshift64: deterministic per host seed, so a test run can be repeated.
pub(crate) fn random_get(mut caller: Caller<'_, VmState>, buf: u32, len: u32) -> u32 {
    let mut bytes = Vec::with_capacity(len as usize);
    let state = caller.data_mut();
    while bytes.len() < len as usize {
        let mut x = state.random_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.random_state = x;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len as usize);
    errno(memory::write(&mut caller, buf, &bytes))
}

/// Realtime and monotonic clocks both read the host clock (it only moves
/// when the test moves it).
pub(crate) fn clock_time_get(
    mut caller: Caller<'_, VmState>,
    clock: u32,
    _precision: u64,
    time_ptr: u32,
) -> u32 {
    if clock > 3 {
        return ERRNO_INVAL;
    }
    let nanos = now_nanos(caller.data());
    errno(memory::write_u64(&mut caller, time_ptr, nanos))
}

pub(crate) fn clock_res_get(mut caller: Caller<'_, VmState>, clock: u32, res_ptr: u32) -> u32 {
    if clock > 3 {
        return ERRNO_INVAL;
    }
    errno(memory::write_u64(&mut caller, res_ptr, 1))
}

/// No preopened directories: std stops scanning at the first EBADF.
pub(crate) fn fd_prestat_get(_caller: Caller<'_, VmState>, _fd: u32, _ptr: u32) -> u32 {
    ERRNO_BADF
}

pub(crate) fn sched_yield(_caller: Caller<'_, VmState>) -> u32 {
    ERRNO_SUCCESS
}
