//! State one Envoy shares between the VMs of its workers: the clock, logs,
//! shared data (with CAS), shared queues, metrics and outstanding HTTP calls,
//! plus the host functions that use them.

use super::abi::{LogLevel, MetricKind, Status};
use super::headers::HeaderMap;
use super::memory::{self, HostResult};
use super::vm::{lock, VmState};
use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;
use wasmtime::Caller;

/// One `proxy_log` line (or a line the guest wrote to stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub worker: usize,
    pub level: LogLevel,
    pub message: String,
}

/// An outgoing `proxy_http_call` waiting for the test to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    pub worker: usize,
    /// The context that dispatched it (its answer is delivered there).
    pub context: u32,
    pub upstream: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
    pub timeout_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Request,
    Response,
}

/// Work Envoy posts to a worker's dispatcher instead of running it inside the
/// current VM call; the host runs these after the call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Deferred {
    QueueReady {
        worker: usize,
        context: u32,
        queue: u32,
    },
    Resume {
        worker: usize,
        context: u32,
        flow: Flow,
    },
}

#[derive(Debug)]
pub(crate) struct Queue {
    pub name: String,
    /// The last registration wins, as in Envoy's shared queue registry.
    pub owner_worker: usize,
    pub owner_context: u32,
    pub items: VecDeque<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Metric {
    pub kind: MetricKind,
    pub value: i64,
    pub samples: Vec<u64>,
}

#[derive(Debug)]
pub(crate) struct SharedState {
    pub now: SystemTime,
    pub logs: Vec<LogLine>,
    pub data: BTreeMap<String, (Vec<u8>, u32)>,
    pub last_cas: u32,
    pub queues: BTreeMap<u32, Queue>,
    pub last_queue: u32,
    pub metrics: BTreeMap<String, Metric>,
    pub calls: BTreeMap<u32, HttpCall>,
    pub last_call: u32,
    pub deferred: VecDeque<Deferred>,
}

impl SharedState {
    pub(crate) fn new(now: SystemTime) -> Self {
        Self {
            now,
            logs: Vec::new(),
            data: BTreeMap::new(),
            last_cas: 0,
            queues: BTreeMap::new(),
            last_queue: 0,
            metrics: BTreeMap::new(),
            calls: BTreeMap::new(),
            last_call: 0,
            deferred: VecDeque::new(),
        }
    }

    /// CAS values are never 0: the guest's 0 means "no CAS check".
    fn next_cas(&mut self) -> u32 {
        self.last_cas = self.last_cas.wrapping_add(1).max(1);
        self.last_cas
    }

    pub(crate) fn next_call_token(&mut self) -> u32 {
        self.last_call = self.last_call.wrapping_add(1).max(1);
        self.last_call
    }

    pub(crate) fn log(&mut self, worker: usize, level: LogLevel, message: String) {
        self.logs.push(LogLine {
            worker,
            level,
            message,
        });
    }
}

pub(crate) fn proxy_log(
    mut caller: Caller<'_, VmState>,
    level: u32,
    ptr: u32,
    len: u32,
) -> HostResult {
    let level = LogLevel::from_raw(level).ok_or(Status::BadArgument)?;
    let message = memory::read(&mut caller, ptr, len)?;
    let state = caller.data();
    if level >= state.settings.log_level {
        lock(&state.shared).log(
            state.worker,
            level,
            String::from_utf8_lossy(&message).into_owned(),
        );
    }
    Ok(())
}

pub(crate) fn proxy_get_log_level(
    mut caller: Caller<'_, VmState>,
    return_level: u32,
) -> HostResult {
    let level = caller.data().settings.log_level.raw();
    memory::write_u32(&mut caller, return_level, level)
}

pub(crate) fn proxy_get_current_time_nanoseconds(
    mut caller: Caller<'_, VmState>,
    return_time: u32,
) -> HostResult {
    let nanos = now_nanos(caller.data());
    memory::write_u64(&mut caller, return_time, nanos)
}

pub(crate) fn now_nanos(state: &VmState) -> u64 {
    let now = lock(&state.shared).now;
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(crate) fn proxy_set_tick_period_milliseconds(
    caller: Caller<'_, VmState>,
    period: u32,
) -> HostResult {
    let mut caller = caller;
    let state = caller.data_mut();
    let root = state.root_of_current().ok_or(Status::BadArgument)?;
    if let Some(root) = state.roots.get_mut(&root) {
        root.tick_period_ms = (period > 0).then_some(period);
    }
    Ok(())
}

pub(crate) fn proxy_get_shared_data(
    mut caller: Caller<'_, VmState>,
    key_ptr: u32,
    key_len: u32,
    return_value: u32,
    return_size: u32,
    return_cas: u32,
) -> HostResult {
    let key = memory::read_string(&mut caller, key_ptr, key_len)?;
    let entry = lock(&caller.data().shared).data.get(&key).cloned();
    let (value, cas) = entry.ok_or(Status::NotFound)?;
    memory::return_bytes(&mut caller, &value, return_value, return_size)?;
    memory::write_u32(&mut caller, return_cas, cas)
}

pub(crate) fn proxy_set_shared_data(
    mut caller: Caller<'_, VmState>,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
    cas: u32,
) -> HostResult {
    let key = memory::read_string(&mut caller, key_ptr, key_len)?;
    let value = memory::read(&mut caller, value_ptr, value_len)?;
    let mut shared = lock(&caller.data().shared);
    // Envoy checks the CAS only when the key exists and the guest gave one.
    if let Some((_, current)) = shared.data.get(&key) {
        if cas != 0 && cas != *current {
            return Err(Status::CasMismatch.into());
        }
    }
    let next = shared.next_cas();
    shared.data.insert(key, (value, next));
    Ok(())
}

pub(crate) fn proxy_register_shared_queue(
    mut caller: Caller<'_, VmState>,
    name_ptr: u32,
    name_len: u32,
    return_id: u32,
) -> HostResult {
    let name = memory::read_string(&mut caller, name_ptr, name_len)?;
    let state = caller.data();
    let context = state.root_of_current().ok_or(Status::BadArgument)?;
    let worker = state.worker;
    let id = {
        let mut shared = lock(&state.shared);
        let existing = shared
            .queues
            .iter()
            .find(|(_, queue)| queue.name == name)
            .map(|(id, _)| *id);
        match existing {
            Some(id) => {
                if let Some(queue) = shared.queues.get_mut(&id) {
                    queue.owner_worker = worker;
                    queue.owner_context = context;
                }
                id
            }
            None => {
                shared.last_queue += 1;
                let id = shared.last_queue;
                shared.queues.insert(
                    id,
                    Queue {
                        name,
                        owner_worker: worker,
                        owner_context: context,
                        items: VecDeque::new(),
                    },
                );
                id
            }
        }
    };
    memory::write_u32(&mut caller, return_id, id)
}

pub(crate) fn proxy_resolve_shared_queue(
    mut caller: Caller<'_, VmState>,
    vm_id_ptr: u32,
    vm_id_len: u32,
    name_ptr: u32,
    name_len: u32,
    return_id: u32,
) -> HostResult {
    let vm_id = memory::read_string(&mut caller, vm_id_ptr, vm_id_len)?;
    let name = memory::read_string(&mut caller, name_ptr, name_len)?;
    if vm_id != caller.data().settings.vm_id {
        return Err(Status::NotFound.into());
    }
    let id = lock(&caller.data().shared)
        .queues
        .iter()
        .find(|(_, queue)| queue.name == name)
        .map(|(id, _)| *id)
        .ok_or(Status::NotFound)?;
    memory::write_u32(&mut caller, return_id, id)
}

pub(crate) fn proxy_enqueue_shared_queue(
    mut caller: Caller<'_, VmState>,
    queue_id: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostResult {
    let value = memory::read(&mut caller, value_ptr, value_len)?;
    let mut shared = lock(&caller.data().shared);
    let queue = shared.queues.get_mut(&queue_id).ok_or(Status::NotFound)?;
    queue.items.push_back(value);
    let wake = Deferred::QueueReady {
        worker: queue.owner_worker,
        context: queue.owner_context,
        queue: queue_id,
    };
    shared.deferred.push_back(wake);
    Ok(())
}

pub(crate) fn proxy_dequeue_shared_queue(
    mut caller: Caller<'_, VmState>,
    queue_id: u32,
    return_value: u32,
    return_size: u32,
) -> HostResult {
    let item = {
        let mut shared = lock(&caller.data().shared);
        let queue = shared.queues.get_mut(&queue_id).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)?
    };
    memory::return_bytes(&mut caller, &item, return_value, return_size)
}

// Metric ids carry their kind in the low two bits, as in Envoy, so a guest
// that mixes ids of different kinds up is caught the same way.
const METRIC_KIND_BITS: u32 = 2;

fn kind_tag(kind: MetricKind) -> u32 {
    match kind {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
    }
}

pub(crate) fn proxy_define_metric(
    mut caller: Caller<'_, VmState>,
    kind: u32,
    name_ptr: u32,
    name_len: u32,
    return_id: u32,
) -> HostResult {
    let kind = MetricKind::from_raw(kind).ok_or(Status::BadArgument)?;
    let name = memory::read_string(&mut caller, name_ptr, name_len)?;
    let state = caller.data_mut();
    state.last_metric += 1;
    let id = (state.last_metric << METRIC_KIND_BITS) | kind_tag(kind);
    state.metric_ids.insert(id, name.clone());
    lock(&state.shared).metrics.entry(name).or_insert(Metric {
        kind,
        value: 0,
        samples: Vec::new(),
    });
    memory::write_u32(&mut caller, return_id, id)
}

fn metric_name(state: &VmState, id: u32) -> Result<String, Status> {
    state.metric_ids.get(&id).cloned().ok_or(Status::NotFound)
}

pub(crate) fn proxy_increment_metric(
    caller: Caller<'_, VmState>,
    id: u32,
    offset: i64,
) -> HostResult {
    let state = caller.data();
    let name = metric_name(state, id)?;
    let mut shared = lock(&state.shared);
    let metric = shared.metrics.get_mut(&name).ok_or(Status::NotFound)?;
    match metric.kind {
        // Envoy's counters only go up: a zero or negative step is refused.
        MetricKind::Counter if offset <= 0 => Err(Status::BadArgument.into()),
        MetricKind::Counter | MetricKind::Gauge => {
            metric.value = metric.value.saturating_add(offset);
            Ok(())
        }
        MetricKind::Histogram => Err(Status::BadArgument.into()),
    }
}

pub(crate) fn proxy_record_metric(caller: Caller<'_, VmState>, id: u32, value: u64) -> HostResult {
    let state = caller.data();
    let name = metric_name(state, id)?;
    let mut shared = lock(&state.shared);
    let metric = shared.metrics.get_mut(&name).ok_or(Status::NotFound)?;
    let signed = i64::try_from(value).unwrap_or(i64::MAX);
    match metric.kind {
        MetricKind::Counter => metric.value = metric.value.saturating_add(signed),
        MetricKind::Gauge => metric.value = signed,
        MetricKind::Histogram => metric.samples.push(value),
    }
    Ok(())
}

pub(crate) fn proxy_get_metric(
    mut caller: Caller<'_, VmState>,
    id: u32,
    return_value: u32,
) -> HostResult {
    let value = {
        let state = caller.data();
        let name = metric_name(state, id)?;
        let shared = lock(&state.shared);
        let metric = shared.metrics.get(&name).ok_or(Status::NotFound)?;
        if metric.kind == MetricKind::Histogram {
            return Err(Status::BadArgument.into());
        }
        metric.value
    };
    memory::write_u64(&mut caller, return_value, value as u64)
}

/// Used by `Host::queue_len`.
pub(crate) fn queue_len(shared: &SharedState, name: &str) -> Option<usize> {
    shared
        .queues
        .values()
        .find(|queue| queue.name == name)
        .map(|queue| queue.items.len())
}

pub(crate) fn log_text(shared: &SharedState, worker: Option<usize>) -> String {
    let mut out = String::new();
    for line in shared
        .logs
        .iter()
        .filter(|line| worker.is_none_or(|w| w == line.worker))
    {
        out.push_str(&format!(
            "  [worker {} {:?}] {}\n",
            line.worker, line.level, line.message
        ));
    }
    if out.is_empty() {
        out.push_str("  (no log lines)\n");
    }
    out
}
