//! What one worker's VM knows: its contexts (root and HTTP streams), the
//! context the current call runs in, and the per-request Envoy state the
//! host functions read and change.

use super::abi::LogLevel;
use super::headers::HeaderMap;
use super::shared::{Flow, SharedState};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A poisoned lock only means an earlier test thread panicked; the data is
/// still what the host wrote, so keep using it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Fixed for the life of a host (all workers).
#[derive(Debug)]
pub(crate) struct Settings {
    pub vm_configuration: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub vm_id: String,
    pub root_id: String,
    pub plugin_name: String,
    pub clusters: Vec<String>,
    pub log_level: LogLevel,
    pub properties: BTreeMap<Vec<String>, Vec<u8>>,
    pub random_seed: u64,
}

#[derive(Debug, Default)]
pub(crate) struct RootState {
    pub tick_period_ms: Option<u32>,
}

/// The answer of an HTTP call, visible to the guest only while
/// `proxy_on_http_call_response` runs.
#[derive(Debug, Default)]
pub(crate) struct CallResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

/// One direction of an HTTP stream as the filter sees it, and what has gone
/// past the filter (upstream for requests, downstream for responses).
#[derive(Debug, Default, Clone)]
pub(crate) struct FlowState {
    pub headers: Option<HeaderMap>,
    pub trailers: Option<HeaderMap>,
    /// The body buffer the guest can read: the current chunk, or everything
    /// buffered while the filter stopped iteration.
    pub body: Option<Vec<u8>>,
    /// The filter stopped iteration and has not continued yet.
    pub held: bool,
    pub end_of_stream: bool,
    /// `proxy_continue_stream` was called for this direction.
    pub continued: bool,
    pub sent_headers: Option<HeaderMap>,
    pub sent_body: Vec<u8>,
    pub sent_trailers: Option<HeaderMap>,
}

impl FlowState {
    /// Lets everything the filter held go on, as Envoy's continueDecoding /
    /// continueEncoding does.
    pub(crate) fn release(&mut self) {
        if self.sent_headers.is_none() {
            self.sent_headers = self.headers.clone();
        }
        if let Some(body) = self.body.take() {
            self.sent_body.extend_from_slice(&body);
        }
        if self.sent_trailers.is_none() {
            self.sent_trailers = self.trailers.clone();
        }
        self.held = false;
    }
}

/// A local reply sent with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub details: String,
    pub grpc_status: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `proxy_on_context_create` not called yet (Envoy creates the context
    /// when the request headers arrive).
    NotCreated,
    Open,
    /// on_done / on_log / on_delete have run; the context id is dead.
    Deleted,
}

#[derive(Debug)]
pub(crate) struct StreamState {
    pub root_context: u32,
    pub phase: Phase,
    pub request: FlowState,
    pub response: FlowState,
    pub properties: BTreeMap<Vec<String>, Vec<u8>>,
    pub local_reply: Option<LocalReply>,
    /// `proxy_close_stream` was called.
    pub reset: bool,
    pub on_done_result: Option<bool>,
}

impl StreamState {
    pub(crate) fn new(root_context: u32) -> Self {
        Self {
            root_context,
            phase: Phase::NotCreated,
            request: FlowState::default(),
            response: FlowState::default(),
            properties: BTreeMap::new(),
            local_reply: None,
            reset: false,
            on_done_result: None,
        }
    }

    pub(crate) fn flow_mut(&mut self, flow: Flow) -> &mut FlowState {
        match flow {
            Flow::Request => &mut self.request,
            Flow::Response => &mut self.response,
        }
    }

    pub(crate) fn flow(&self, flow: Flow) -> &FlowState {
        match flow {
            Flow::Request => &self.request,
            Flow::Response => &self.response,
        }
    }

    /// After a local reply or a reset Envoy stops feeding the filter.
    pub(crate) fn stopped(&self) -> bool {
        self.local_reply.is_some() || self.reset || self.phase == Phase::Deleted
    }
}

/// The data of one worker's wasmtime `Store`.
pub(crate) struct VmState {
    pub worker: usize,
    pub shared: Arc<Mutex<SharedState>>,
    pub settings: Arc<Settings>,
    /// The context the running callback belongs to; host functions act on it
    /// (`proxy_set_effective_context` changes it).
    pub current_context: u32,
    pub last_context: u32,
    pub roots: BTreeMap<u32, RootState>,
    pub streams: BTreeMap<u32, StreamState>,
    /// Set while a root context starts or is configured: Envoy exposes the
    /// plugin configuration only then.
    pub plugin_configuration: Option<Vec<u8>>,
    pub call_response: Option<CallResponse>,
    pub metric_ids: BTreeMap<u32, String>,
    pub last_metric: u32,
    /// Partial lines written to stdout (index 0) and stderr (index 1).
    pub output: [Vec<u8>; 2],
    pub random_state: u64,
    /// Root properties set by the guest with `proxy_set_property`.
    pub root_properties: BTreeMap<Vec<String>, Vec<u8>>,
    /// `proxy_on_log` is running: Envoy answers missing maps differently.
    pub access_log_phase: bool,
}

impl VmState {
    pub(crate) fn new(
        worker: usize,
        shared: Arc<Mutex<SharedState>>,
        settings: Arc<Settings>,
    ) -> Self {
        let random_state = settings.random_seed ^ ((worker as u64 + 1) << 32) | 1;
        Self {
            worker,
            shared,
            settings,
            current_context: 0,
            last_context: 0,
            roots: BTreeMap::new(),
            streams: BTreeMap::new(),
            plugin_configuration: None,
            call_response: None,
            metric_ids: BTreeMap::new(),
            last_metric: 0,
            output: [Vec::new(), Vec::new()],
            random_state,
            root_properties: BTreeMap::new(),
            access_log_phase: false,
        }
    }

    pub(crate) fn next_context_id(&mut self) -> u32 {
        self.last_context += 1;
        self.last_context
    }

    /// The root context of the running callback (itself, or the root its
    /// HTTP stream was created under).
    pub(crate) fn root_of_current(&self) -> Option<u32> {
        if self.roots.contains_key(&self.current_context) {
            return Some(self.current_context);
        }
        self.streams
            .get(&self.current_context)
            .map(|stream| stream.root_context)
    }

    /// The HTTP stream of the running callback, if it is one and is alive.
    pub(crate) fn current_stream(&mut self) -> Option<&mut StreamState> {
        self.streams
            .get_mut(&self.current_context)
            .filter(|stream| stream.phase == Phase::Open)
    }

    pub(crate) fn is_live_context(&self, context: u32) -> bool {
        self.roots.contains_key(&context)
            || self
                .streams
                .get(&context)
                .is_some_and(|stream| stream.phase == Phase::Open)
    }
}
