//! A proxy-wasm ABI 0.2.1 host on wasmtime that drives a real filter `.wasm`
//! the way Envoy does, for tests.
//!
//! - Several workers, one VM instance each (Envoy runs one VM per worker
//!   thread); they share shared data, shared queues and metrics.
//! - Envoy's behaviour where the SDK or a filter depends on it: CAS on shared
//!   data, BadArgument for counter steps <= 0, only the first value from
//!   `get_header_map_value`, replace = remove all + add, `copyFrom` body
//!   edits, the plugin configuration visible only while configuring, HTTP
//!   calls refused for unknown clusters or missing pseudo-headers, pending
//!   calls cancelled when their context ends, queue wake-ups and
//!   `proxy_continue_stream` run after the current VM call returns.
//! - The HTTP filter is driven as with `allow_on_headers_stop_iteration: true`
//!   (what this project's Envoy config sets): after a `Pause` from the
//!   request headers, body callbacks still arrive and accumulate.
//! - A trap (a panic in the guest) is returned as an error carrying the
//!   worker's log lines, and the worker's VM is dead afterwards: every later
//!   call on it fails, as every later request on that Envoy worker would.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use avb_tests::host::{Action, HostBuilder};
//! let host = HostBuilder::new("dist/avb_edge.wasm")
//!     .configuration(br#"{"routes": []}"#.to_vec())
//!     .workers(2)
//!     .cluster("companion")
//!     .build()?;
//! let request = host.request(0);
//! request.set_property(&["source", "address"], "10.0.0.1:5000");
//! let action = request.headers(&[(":method", "GET"), (":path", "/v1/x"), (":authority", "a")], true)?;
//! assert_eq!(action, Action::Continue);
//! request.done()?;
//! # Ok(()) }
//! ```

mod abi;
mod calls;
mod headers;
mod link;
mod memory;
mod properties;
mod request;
mod shared;
mod vm;
mod wasi;

pub use abi::{Action, LogLevel, MetricKind};
pub use headers::HeaderMap;
pub use properties::encode_property_map;
pub use request::HttpRequest;
pub use shared::{HttpCall, LogLine};
pub use vm::LocalReply;

use abi::len_u32;
use anyhow::{anyhow, bail, Context as _};
use headers::header_map;
use shared::{Deferred, SharedState};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use vm::{lock, CallResponse, RootState, Settings, StreamState, VmState};
use wasmtime::{Engine, Instance, Module, Store, WasmParams, WasmResults};

/// One engine for the process; modules compiled on it are cached per file.
/// Cranelift's optimizer is off: the `.wasm` is already optimized by LLVM,
/// and compiling is most of a test binary's startup (about 20% less CPU).
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.cranelift_opt_level(wasmtime::OptLevel::None);
        Engine::new(&config).unwrap_or_else(|_| Engine::default())
    })
}

/// Compiling a filter takes seconds and tests build many hosts: compile each
/// file once per process (keyed by path, size and mtime, so a rebuilt file
/// is compiled again).
fn compiled_module(path: &Path) -> anyhow::Result<Module> {
    type Key = (PathBuf, u64, Option<SystemTime>);
    static MODULES: OnceLock<Mutex<HashMap<Key, Module>>> = OnceLock::new();
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let key = (canonical, metadata.len(), metadata.modified().ok());
    let mut modules = lock(MODULES.get_or_init(Default::default));
    if let Some(module) = modules.get(&key) {
        return Ok(module.clone());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let module = Module::new(engine(), &bytes)
        .map_err(|e| anyhow!("compiling {}: {e:?}", path.display()))?;
    modules.insert(key, module.clone());
    Ok(module)
}

/// Configures and starts a [`Host`].
#[derive(Debug, Clone)]
pub struct HostBuilder {
    wasm_path: PathBuf,
    configuration: Vec<u8>,
    vm_configuration: Vec<u8>,
    env: Vec<(String, String)>,
    workers: usize,
    root_id: String,
    vm_id: String,
    plugin_name: String,
    clusters: Vec<String>,
    log_level: LogLevel,
    properties: BTreeMap<Vec<String>, Vec<u8>>,
    start_time: Option<SystemTime>,
    random_seed: u64,
}

impl HostBuilder {
    pub fn new(wasm_path: impl Into<PathBuf>) -> Self {
        Self {
            wasm_path: wasm_path.into(),
            configuration: Vec::new(),
            vm_configuration: Vec::new(),
            env: Vec::new(),
            workers: 1,
            root_id: String::new(),
            vm_id: String::new(),
            plugin_name: "avb-edge".to_owned(),
            clusters: Vec::new(),
            log_level: LogLevel::Trace,
            properties: BTreeMap::new(),
            start_time: None,
            random_seed: 0x5eed_5eed_5eed_5eed,
        }
    }

    /// The plugin configuration (`PluginConfiguration` buffer in on_configure).
    pub fn configuration(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.configuration = bytes.into();
        self
    }

    /// The VM configuration (`VmConfiguration` buffer).
    pub fn vm_configuration(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.vm_configuration = bytes.into();
        self
    }

    /// An environment variable the guest sees through WASI (Envoy's
    /// `vm_config.environment_variables`, Istio's `vmConfig.env`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Number of workers (VM instances); at least 1.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    pub fn root_id(mut self, root_id: impl Into<String>) -> Self {
        self.root_id = root_id.into();
        self
    }

    /// The VM id shared data and queues are scoped to (`resolve_shared_queue`
    /// must name it).
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.vm_id = vm_id.into();
        self
    }

    pub fn plugin_name(mut self, name: impl Into<String>) -> Self {
        self.plugin_name = name.into();
        self
    }

    /// A cluster `proxy_http_call` may name; calls to any other cluster get
    /// BadArgument, as in Envoy.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.clusters.push(name.into());
        self
    }

    /// The level `proxy_get_log_level` reports; lower log lines are dropped.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// A property every context can read (e.g. `["node", "id"]`).
    pub fn property(mut self, path: &[&str], value: impl Into<Vec<u8>>) -> Self {
        let path = path.iter().map(|s| (*s).to_owned()).collect();
        self.properties.insert(path, value.into());
        self
    }

    /// The host clock's start (default: the real time at `build`).
    pub fn start_time(mut self, time: SystemTime) -> Self {
        self.start_time = Some(time);
        self
    }

    pub fn random_seed(mut self, seed: u64) -> Self {
        self.random_seed = seed;
        self
    }

    /// Instantiates one VM per worker, runs `_initialize`, then creates the
    /// root context and runs `proxy_on_vm_start` and `proxy_on_configure` on
    /// each. A `false` from either is an error that carries the log lines.
    pub fn build(self) -> anyhow::Result<Host> {
        if self.workers == 0 {
            bail!("a host needs at least one worker");
        }
        let module = compiled_module(&self.wasm_path)?;
        if !module
            .exports()
            .any(|e| e.name() == "proxy_abi_version_0_2_1")
        {
            bail!(
                "{} does not export proxy_abi_version_0_2_1: not a proxy-wasm 0.2.1 module",
                self.wasm_path.display()
            );
        }
        let settings = Arc::new(Settings {
            vm_configuration: self.vm_configuration,
            env: self.env,
            vm_id: self.vm_id,
            root_id: self.root_id,
            plugin_name: self.plugin_name,
            clusters: self.clusters,
            log_level: self.log_level,
            properties: self.properties,
            random_seed: self.random_seed,
        });
        let shared = Arc::new(Mutex::new(SharedState::new(
            self.start_time.unwrap_or_else(SystemTime::now),
        )));
        let linker = link::linker(engine(), &module)?;
        let mut workers = Vec::with_capacity(self.workers);
        for worker in 0..self.workers {
            let mut store = Store::new(
                engine(),
                VmState::new(worker, shared.clone(), settings.clone()),
            );
            let instance = linker.instantiate(&mut store, &module).map_err(|e| {
                anyhow!(
                    "instantiating {} on worker {worker}: {e:?}",
                    self.wasm_path.display()
                )
            })?;
            workers.push(Worker {
                store,
                instance,
                root_context: 0,
                failure: None,
            });
        }
        let mut inner = HostInner { workers, shared };
        for worker in 0..self.workers {
            inner.call::<(), ()>(worker, 0, "_initialize", ())?;
            let root = inner.start_root(worker, &self.configuration)?;
            inner.workers[worker].root_context = root;
        }
        inner.drain()?;
        Ok(Host {
            inner: Arc::new(Mutex::new(inner)),
        })
    }
}

struct Worker {
    store: Store<VmState>,
    instance: Instance,
    /// The root context new requests are created under.
    root_context: u32,
    /// Set when the VM trapped: Envoy would fail every later request here.
    failure: Option<String>,
}

pub(crate) struct HostInner {
    workers: Vec<Worker>,
    shared: Arc<Mutex<SharedState>>,
}

/// A running host. Cheap to clone; clones drive the same VMs.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Mutex<HostInner>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("workers", &self.workers())
            .finish()
    }
}

impl HostInner {
    fn worker_mut(&mut self, worker: usize) -> anyhow::Result<&mut Worker> {
        let count = self.workers.len();
        self.workers
            .get_mut(worker)
            .ok_or_else(|| anyhow!("no worker {worker}: the host has {count}"))
    }

    /// Calls a guest export in `context`. `Ok(None)` when the module does not
    /// export it (Envoy then uses the default). A trap kills the worker's VM
    /// and comes back as an error with the worker's log lines.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        worker: usize,
        context: u32,
        export: &str,
        params: P,
    ) -> anyhow::Result<Option<R>> {
        let shared = self.shared.clone();
        let w = self.worker_mut(worker)?;
        if let Some(failure) = &w.failure {
            bail!("the VM of worker {worker} is dead (Envoy fails every request there): {failure}");
        }
        let Some(func) = w.instance.get_func(&mut w.store, export) else {
            return Ok(None);
        };
        let typed = func
            .typed::<P, R>(&w.store)
            .map_err(|e| anyhow!("export {export} has an unexpected signature: {e}"))?;
        w.store.data_mut().current_context = context;
        let result = typed.call(&mut w.store, params);
        wasi::flush_output(w.store.data_mut(), result.is_err());
        match result {
            Ok(value) => Ok(Some(value)),
            Err(error) => {
                let failure = format!("{export}(context {context}) trapped: {error:?}");
                w.failure = Some(failure.clone());
                let logs = shared::log_text(&lock(&shared), Some(worker));
                Err(anyhow!("wasm trap on worker {worker}: {failure}\nlog lines of worker {worker}:\n{logs}"))
            }
        }
    }

    fn start_root(&mut self, worker: usize, configuration: &[u8]) -> anyhow::Result<u32> {
        let state = self.worker_mut(worker)?.store.data_mut();
        let root = state.next_context_id();
        state.roots.insert(root, RootState::default());
        state.plugin_configuration = Some(configuration.to_vec());
        let outcome = self.configure_root(worker, root, len_u32(configuration.len()));
        let state = self.worker_mut(worker)?.store.data_mut();
        state.plugin_configuration = None;
        if outcome.is_err() {
            state.roots.remove(&root);
        }
        outcome.map(|()| root)
    }

    fn configure_root(
        &mut self,
        worker: usize,
        root: u32,
        configuration_len: u32,
    ) -> anyhow::Result<()> {
        self.call::<(u32, u32), ()>(worker, root, "proxy_on_context_create", (root, 0))?;
        let vm_configuration_len = len_u32(
            self.worker_mut(worker)?
                .store
                .data()
                .settings
                .vm_configuration
                .len(),
        );
        let started = self.call::<(u32, u32), u32>(
            worker,
            root,
            "proxy_on_vm_start",
            (root, vm_configuration_len),
        )?;
        if started == Some(0) {
            bail!(
                "proxy_on_vm_start returned false on worker {worker}\n{}",
                self.log_text(worker)
            );
        }
        let configured = self.call::<(u32, u32), u32>(
            worker,
            root,
            "proxy_on_configure",
            (root, configuration_len),
        )?;
        if configured == Some(0) {
            bail!(
                "proxy_on_configure rejected the configuration on worker {worker}\n{}",
                self.log_text(worker)
            );
        }
        Ok(())
    }

    fn log_text(&self, worker: usize) -> String {
        format!(
            "log lines of worker {worker}:\n{}",
            shared::log_text(&lock(&self.shared), Some(worker))
        )
    }

    /// Runs what Envoy would post to the workers' dispatchers (queue
    /// wake-ups, stream continuations) until nothing is left.
    fn drain(&mut self) -> anyhow::Result<()> {
        loop {
            let next = lock(&self.shared).deferred.pop_front();
            let Some(event) = next else {
                return Ok(());
            };
            match event {
                Deferred::QueueReady {
                    worker,
                    context,
                    queue,
                } => {
                    let alive = self
                        .workers
                        .get(worker)
                        .is_some_and(|w| w.failure.is_none());
                    if alive {
                        self.call::<(u32, u32), ()>(
                            worker,
                            context,
                            "proxy_on_queue_ready",
                            (context, queue),
                        )?;
                    }
                }
                Deferred::Resume {
                    worker,
                    context,
                    flow,
                } => {
                    if let Ok(stream) = self.stream_mut(worker, context) {
                        if !stream.stopped() {
                            stream.flow_mut(flow).release();
                        }
                    }
                }
            }
        }
    }

    fn stream_mut(&mut self, worker: usize, context: u32) -> anyhow::Result<&mut StreamState> {
        self.worker_mut(worker)?
            .store
            .data_mut()
            .streams
            .get_mut(&context)
            .ok_or_else(|| anyhow!("no request context {context} on worker {worker}"))
    }

    fn stream(&self, worker: usize, context: u32) -> Option<&StreamState> {
        self.workers.get(worker)?.store.data().streams.get(&context)
    }
}

impl Host {
    fn lock(&self) -> std::sync::MutexGuard<'_, HostInner> {
        lock(&self.inner)
    }

    pub fn workers(&self) -> usize {
        self.lock().workers.len()
    }

    /// Starts a request on `worker`. The VM context is created when the
    /// request headers arrive, as in Envoy; properties can be set before.
    pub fn request(&self, worker: usize) -> HttpRequest {
        let mut inner = self.lock();
        let context = match inner.workers.get_mut(worker) {
            Some(w) => {
                let root = w.root_context;
                let state = w.store.data_mut();
                let context = state.next_context_id();
                state.streams.insert(context, StreamState::new(root));
                context
            }
            // The first call on the request reports the bad worker index.
            None => 0,
        };
        HttpRequest::new(self.clone(), worker, context)
    }

    /// Fires `proxy_on_tick` on the worker's root context. An error if the
    /// filter never set a tick period (Envoy would never tick it).
    pub fn tick(&self, worker: usize) -> anyhow::Result<()> {
        let mut inner = self.lock();
        let w = inner.worker_mut(worker)?;
        let root = w.root_context;
        let period = w
            .store
            .data()
            .roots
            .get(&root)
            .and_then(|r| r.tick_period_ms);
        if period.is_none() {
            bail!("worker {worker}'s root context never set a tick period; Envoy would not call on_tick");
        }
        inner.call::<u32, ()>(worker, root, "proxy_on_tick", root)?;
        inner.drain()
    }

    /// The tick period the worker's root context asked for, if any.
    pub fn tick_period(&self, worker: usize) -> Option<Duration> {
        let inner = self.lock();
        let w = inner.workers.get(worker)?;
        let period = w.store.data().roots.get(&w.root_context)?.tick_period_ms?;
        Some(Duration::from_millis(u64::from(period)))
    }

    /// Sets the host clock (`proxy_get_current_time_nanoseconds`, WASI clocks).
    pub fn set_time(&self, time: SystemTime) {
        lock(&self.lock().shared).now = time;
    }

    pub fn advance(&self, by: Duration) {
        let inner = self.lock();
        let mut shared = lock(&inner.shared);
        shared.now += by;
    }

    pub fn now(&self) -> SystemTime {
        lock(&self.lock().shared).now
    }

    /// Counters and gauges by the name the filter defined them with.
    pub fn metrics(&self) -> BTreeMap<String, i64> {
        lock(&self.lock().shared)
            .metrics
            .iter()
            .filter(|(_, m)| m.kind != MetricKind::Histogram)
            .map(|(name, m)| (name.clone(), m.value))
            .collect()
    }

    pub fn metric(&self, name: &str) -> Option<i64> {
        self.metrics().get(name).copied()
    }

    /// Values recorded into a histogram, oldest first.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        let inner = self.lock();
        let shared = lock(&inner.shared);
        shared
            .metrics
            .get(name)
            .filter(|m| m.kind == MetricKind::Histogram)
            .map(|m| m.samples.clone())
    }

    /// Every log line of every worker, oldest first (stdout/stderr lines are
    /// prefixed `stdout: ` / `stderr: `).
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.log_lines()
            .into_iter()
            .map(|line| (line.level, line.message))
            .collect()
    }

    pub fn log_lines(&self) -> Vec<LogLine> {
        lock(&self.lock().shared).logs.clone()
    }

    /// HTTP calls dispatched and not yet answered (or cancelled).
    pub fn http_calls(&self) -> Vec<HttpCall> {
        lock(&self.lock().shared).calls.values().cloned().collect()
    }

    /// Answers a pending call: `proxy_on_http_call_response` runs in the
    /// context that dispatched it, with `:status` first in the headers.
    pub fn respond_http_call(
        &self,
        token: u32,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<()> {
        let status = status.to_string();
        let mut all = vec![(":status", status.as_str())];
        all.extend_from_slice(headers);
        self.deliver_call_response(token, header_map(&all), body.to_vec())
    }

    /// Fails a pending call the way Envoy reports a reset or timeout: a
    /// response with no headers, no body, no trailers.
    pub fn fail_http_call(&self, token: u32) -> anyhow::Result<()> {
        self.deliver_call_response(token, HeaderMap::new(), Vec::new())
    }

    fn deliver_call_response(
        &self,
        token: u32,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> anyhow::Result<()> {
        let mut inner = self.lock();
        let call = lock(&inner.shared).calls.remove(&token).ok_or_else(|| {
            anyhow!("no pending http call with token {token} (answered already, or cancelled when its context ended)")
        })?;
        let (worker, context) = (call.worker, call.context);
        let sizes = (len_u32(headers.len()), len_u32(body.len()));
        let state = inner.worker_mut(worker)?.store.data_mut();
        if !state.is_live_context(context) {
            bail!("http call {token} belongs to context {context}, which has ended");
        }
        state.call_response = Some(CallResponse {
            headers,
            body,
            trailers: HeaderMap::new(),
        });
        let result = inner.call::<(u32, u32, u32, u32, u32), ()>(
            worker,
            context,
            "proxy_on_http_call_response",
            (context, token, sizes.0, sizes.1, 0),
        );
        inner.worker_mut(worker)?.store.data_mut().call_response = None;
        result?;
        inner.drain()
    }

    /// The value and CAS of a shared data key.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.lock().shared).data.get(key).cloned()
    }

    /// Items waiting in the shared queue named `name` (None: not registered).
    pub fn queue_len(&self, name: &str) -> Option<usize> {
        shared::queue_len(&lock(&self.lock().shared), name)
    }

    /// Why the worker's VM is dead, if it is.
    pub fn vm_failure(&self, worker: usize) -> Option<String> {
        self.lock().workers.get(worker)?.failure.clone()
    }

    /// A new plugin configuration, as Envoy applies one: each worker gets a
    /// new root context (on_context_create, on_vm_start, on_configure);
    /// requests already started keep the old one. If any worker rejects it,
    /// the error carries the log lines and every worker keeps the old root.
    pub fn reconfigure(&self, configuration: impl Into<Vec<u8>>) -> anyhow::Result<()> {
        let configuration = configuration.into();
        let mut inner = self.lock();
        let mut new_roots = Vec::with_capacity(inner.workers.len());
        for worker in 0..inner.workers.len() {
            new_roots.push(inner.start_root(worker, &configuration)?);
        }
        for (worker, root) in new_roots.into_iter().enumerate() {
            inner.worker_mut(worker)?.root_context = root;
        }
        inner.drain()
    }

    pub(crate) fn with_inner<R>(&self, f: impl FnOnce(&mut HostInner) -> R) -> R {
        f(&mut self.lock())
    }
}

/// Where the probe filter's `.wasm` is: `AVB_PROBE_WASM`, else
/// `target/probe/avb_probe_filter.wasm` under the workspace root.
pub fn probe_wasm_path() -> PathBuf {
    if let Some(path) = std::env::var_os("AVB_PROBE_WASM") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target/probe/avb_probe_filter.wasm")
}
