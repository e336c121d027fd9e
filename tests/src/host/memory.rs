//! Reading and writing guest memory, and handing values to the guest in
//! memory it allocated itself (`proxy_on_memory_allocate`), as Envoy does.

use super::abi::{len_u32, Status};
use super::vm::VmState;
use wasmtime::{Caller, Extern, Memory};

/// Why a host function did not return `Ok`: a status for the guest, or a trap
/// (the guest's allocator trapped while the host was handing it a value).
#[derive(Debug)]
pub(crate) enum Fault {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for Fault {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

pub(crate) type HostResult = Result<(), Fault>;

/// Turns a host function's outcome into the `u32` status the ABI returns.
pub(crate) fn status_word(result: HostResult) -> wasmtime::Result<u32> {
    match result {
        Ok(()) => Ok(Status::Ok.code()),
        Err(Fault::Status(status)) => Ok(status.code()),
        Err(Fault::Trap(error)) => Err(error),
    }
}

fn memory(caller: &mut Caller<'_, VmState>) -> Result<Memory, Status> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(Status::InvalidMemoryAccess),
    }
}

pub(crate) fn read(
    caller: &mut Caller<'_, VmState>,
    ptr: u32,
    len: u32,
) -> Result<Vec<u8>, Status> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let memory = memory(caller)?;
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data(&*caller)
        .get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

pub(crate) fn read_string(
    caller: &mut Caller<'_, VmState>,
    ptr: u32,
    len: u32,
) -> Result<String, Status> {
    let bytes = read(caller, ptr, len)?;
    String::from_utf8(bytes).map_err(|_| Status::BadArgument)
}

pub(crate) fn write(
    caller: &mut Caller<'_, VmState>,
    ptr: u32,
    bytes: &[u8],
) -> Result<(), Status> {
    let memory = memory(caller)?;
    memory
        .write(&mut *caller, ptr as usize, bytes)
        .map_err(|_| Status::InvalidMemoryAccess)
}

pub(crate) fn write_u32(
    caller: &mut Caller<'_, VmState>,
    ptr: u32,
    value: u32,
) -> Result<(), Fault> {
    write(caller, ptr, &value.to_le_bytes()).map_err(Fault::from)
}

pub(crate) fn write_u64(
    caller: &mut Caller<'_, VmState>,
    ptr: u32,
    value: u64,
) -> Result<(), Fault> {
    write(caller, ptr, &value.to_le_bytes()).map_err(Fault::from)
}

/// Copies `bytes` into fresh guest memory and stores its address and size at
/// `return_ptr` / `return_size`. An empty value is returned as a null
/// pointer with size 0 (no allocation), exactly as Envoy does; the SDK reads
/// that as "no value" for properties and buffers.
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, VmState>,
    bytes: &[u8],
    return_ptr: u32,
    return_size: u32,
) -> Result<(), Fault> {
    let mut address = 0;
    if !bytes.is_empty() {
        address = allocate(caller, len_u32(bytes.len()))?;
        write(caller, address, bytes)?;
    }
    write_u32(caller, return_ptr, address)?;
    write_u32(caller, return_size, len_u32(bytes.len()))
}

fn allocate(caller: &mut Caller<'_, VmState>, size: u32) -> Result<u32, Fault> {
    let allocate = match caller.get_export("proxy_on_memory_allocate") {
        Some(Extern::Func(func)) => func
            .typed::<u32, u32>(&*caller)
            .map_err(|_| Status::InternalFailure)?,
        _ => return Err(Status::InternalFailure.into()),
    };
    let address = allocate.call(&mut *caller, size).map_err(Fault::Trap)?;
    if address == 0 {
        return Err(Status::InvalidMemoryAccess.into());
    }
    Ok(address)
}
