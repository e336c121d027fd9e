//! The host's test subject: a small proxy-wasm filter whose behaviour per
//! request is chosen by the `x-probe` request header, so one build exercises
//! every host function the avb-tests wasmtime host implements.
//!
//! Results are reported the way a real filter would: request headers added
//! for the upstream (`x-result`, ...), local replies, logs and metrics. The
//! host self-tests in `tests/tests/host_*.rs` read them back.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot::default()) });
}}

const QUEUE_NAME: &str = "probe_queue";

#[derive(Default, Clone, Copy)]
struct Metrics {
    requests: u32,
    inflight: u32,
    sizes: u32,
    ticks: u32,
    dequeued: u32,
    logged: u32,
}

#[derive(Default)]
struct ProbeRoot {
    metrics: Metrics,
    queue: u32,
}

fn log(level: LogLevel, message: &str) {
    // A failed log cannot be reported anywhere else; ignoring it is the only option.
    let _ = hostcalls::log(level, message);
}

fn define(kind: MetricType, name: &str) -> u32 {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => id,
        Err(status) => {
            log(
                LogLevel::Error,
                &format!("define_metric {name}: {status:?}"),
            );
            0
        }
    }
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let vm_config = hostcalls::get_buffer(BufferType::VmConfiguration, 0, usize::MAX);
        let text = match vm_config {
            Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(None) => "<none>".to_owned(),
            Err(status) => format!("<error {status:?}>"),
        };
        log(LogLevel::Info, &format!("vm_start vm_config={text}"));
        !text.contains("fail-vm-start")
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(None) => String::new(),
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("plugin configuration: {status:?}"),
                );
                return false;
            }
        };
        if config.contains("reject") {
            log(
                LogLevel::Error,
                &format!("configuration rejected: {config}"),
            );
            return false;
        }
        for line in config.lines() {
            if let Some(ms) = line.strip_prefix("tick_ms=") {
                match ms.trim().parse::<u64>() {
                    Ok(ms) => {
                        if let Err(status) = hostcalls::set_tick_period(Duration::from_millis(ms)) {
                            log(LogLevel::Error, &format!("set_tick_period: {status:?}"));
                        }
                    }
                    Err(_) => {
                        log(LogLevel::Error, &format!("bad tick_ms: {ms}"));
                        return false;
                    }
                }
            }
        }
        self.metrics = Metrics {
            requests: define(MetricType::Counter, "probe_requests"),
            inflight: define(MetricType::Gauge, "probe_inflight"),
            sizes: define(MetricType::Histogram, "probe_sizes"),
            ticks: define(MetricType::Counter, "probe_ticks"),
            dequeued: define(MetricType::Counter, "probe_dequeued"),
            logged: define(MetricType::Counter, "probe_logged"),
        };
        self.queue = match hostcalls::register_shared_queue(QUEUE_NAME) {
            Ok(id) => id,
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("register_shared_queue: {status:?}"),
                );
                return false;
            }
        };
        let greeting = std::env::var("PROBE_GREETING").unwrap_or_else(|_| "<unset>".to_owned());
        log(
            LogLevel::Info,
            &format!(
                "configured config={config} queue={} greeting={greeting}",
                self.queue
            ),
        );
        true
    }

    fn on_tick(&mut self) {
        let _ = hostcalls::increment_metric(self.metrics.ticks, 1);
        let nanos = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        log(LogLevel::Debug, &format!("tick at {nanos}"));
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        loop {
            match hostcalls::dequeue_shared_queue(queue_id) {
                Ok(Some(item)) => {
                    let _ = hostcalls::increment_metric(self.metrics.dequeued, 1);
                    log(
                        LogLevel::Info,
                        &format!("dequeued {}", String::from_utf8_lossy(&item)),
                    );
                }
                Ok(None) => break,
                Err(status) => {
                    log(LogLevel::Error, &format!("dequeue: {status:?}"));
                    break;
                }
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeRequest {
            context_id,
            metrics: self.metrics,
            mode: String::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ProbeRequest {
    context_id: u32,
    metrics: Metrics,
    mode: String,
}

fn header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

fn set_result(value: &str) {
    if let Err(status) = hostcalls::add_map_value(MapType::HttpRequestHeaders, "x-result", value) {
        log(LogLevel::Error, &format!("add x-result: {status:?}"));
    }
}

fn deny(status: u32, body: &str) {
    if let Err(e) = hostcalls::send_http_response(
        status,
        vec![("x-denied-by", "probe")],
        Some(body.as_bytes()),
    ) {
        log(LogLevel::Error, &format!("send_http_response: {e:?}"));
    }
}

impl ProbeRequest {
    fn on_headers(&mut self) -> Action {
        match self.mode.as_str() {
            "local" => {
                deny(403, "denied by probe");
                Action::Pause
            }
            "headers" => {
                let all = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
                let dupes = all.iter().filter(|(name, _)| name == "x-dupe").count();
                let first = header("x-dupe").unwrap_or_default();
                let _ = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    "x-replace",
                    Some("replaced"),
                );
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "x-remove");
                let size = all.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                set_result(&format!(
                    "dupes={dupes} first={first} count={} size={size}",
                    all.len()
                ));
                Action::Continue
            }
            "set-map" => {
                let _ = hostcalls::set_map(
                    MapType::HttpRequestHeaders,
                    vec![(":method", "GET"), (":path", "/rewritten"), ("x-only", "1")],
                );
                Action::Continue
            }
            "property" => {
                let path = header("x-property").unwrap_or_default();
                let parts: Vec<&str> = path.split('.').collect();
                let value = match hostcalls::get_property(parts) {
                    Ok(Some(bytes)) => format!("found:{}", hex(&bytes)),
                    Ok(None) => "missing".to_owned(),
                    Err(status) => format!("error:{status:?}"),
                };
                set_result(&value);
                Action::Continue
            }
            "set-property" => {
                let _ = hostcalls::set_property(vec!["probe", "mark"], Some(b"marked"));
                let value = hostcalls::get_property(vec!["probe", "mark"])
                    .ok()
                    .flatten();
                set_result(&String::from_utf8_lossy(&value.unwrap_or_default()));
                Action::Continue
            }
            "shared-set" => {
                let key = header("x-key").unwrap_or_default();
                let value = header("x-value").unwrap_or_default();
                let cas = header("x-cas").and_then(|c| c.parse::<u32>().ok());
                let result = match hostcalls::set_shared_data(&key, Some(value.as_bytes()), cas) {
                    Ok(()) => "ok".to_owned(),
                    Err(status) => format!("{status:?}"),
                };
                set_result(&result);
                Action::Continue
            }
            "shared-get" => {
                let key = header("x-key").unwrap_or_default();
                let result = match hostcalls::get_shared_data(&key) {
                    Ok((Some(value), cas)) => {
                        format!("{}@{}", String::from_utf8_lossy(&value), cas.unwrap_or(0))
                    }
                    Ok((None, _)) => "missing".to_owned(),
                    Err(status) => format!("{status:?}"),
                };
                set_result(&result);
                Action::Continue
            }
            "enqueue" => {
                let value = header("x-value").unwrap_or_default();
                let result = match hostcalls::resolve_shared_queue("", QUEUE_NAME) {
                    Ok(Some(queue)) => {
                        match hostcalls::enqueue_shared_queue(queue, Some(value.as_bytes())) {
                            Ok(()) => "enqueued".to_owned(),
                            Err(status) => format!("{status:?}"),
                        }
                    }
                    Ok(None) => "no-queue".to_owned(),
                    Err(status) => format!("{status:?}"),
                };
                set_result(&result);
                Action::Continue
            }
            "dequeue-unknown" => {
                let result = match hostcalls::dequeue_shared_queue(987_654) {
                    Ok(_) => "ok".to_owned(),
                    Err(status) => format!("{status:?}"),
                };
                set_result(&result);
                Action::Continue
            }
            "call" => {
                let upstream = header("x-upstream").unwrap_or_default();
                let mut headers = vec![(":method", "POST"), (":path", "/check")];
                if header("x-no-authority").is_none() {
                    headers.push((":authority", "companion"));
                }
                match hostcalls::dispatch_http_call(
                    &upstream,
                    headers,
                    Some(b"ping"),
                    vec![],
                    Duration::from_millis(1500),
                ) {
                    Ok(token) => {
                        log(LogLevel::Debug, &format!("dispatched token={token}"));
                        Action::Pause
                    }
                    Err(status) => {
                        set_result(&format!("dispatch-{status:?}"));
                        Action::Continue
                    }
                }
            }
            "metric" => {
                let _ = hostcalls::increment_metric(self.metrics.requests, 1);
                let zero = hostcalls::increment_metric(self.metrics.requests, 0);
                let _ = hostcalls::increment_metric(self.metrics.inflight, 5);
                let _ = hostcalls::increment_metric(self.metrics.inflight, -2);
                let _ = hostcalls::record_metric(self.metrics.sizes, 42);
                let histogram_read = hostcalls::get_metric(self.metrics.sizes);
                let unknown = hostcalls::increment_metric(999_999, 1);
                let value = hostcalls::get_metric(self.metrics.requests).unwrap_or(0);
                set_result(&format!(
                    "requests={value} zero={zero:?} histogram_read={histogram_read:?} unknown={unknown:?}"
                ));
                Action::Continue
            }
            "gauge-set" => {
                let _ = hostcalls::record_metric(self.metrics.inflight, 77);
                Action::Continue
            }
            "panic" => panic_on_purpose(),
            "time" => {
                let nanos = hostcalls::get_current_time()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                let std_nanos = std::time::SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                set_result(&format!("{nanos} {std_nanos}"));
                Action::Continue
            }
            "log" => {
                for level in [
                    LogLevel::Trace,
                    LogLevel::Debug,
                    LogLevel::Info,
                    LogLevel::Warn,
                    LogLevel::Error,
                    LogLevel::Critical,
                ] {
                    log(level, &format!("level {level:?}"));
                }
                let current = hostcalls::get_log_level();
                println!("probe stdout line");
                eprintln!("probe stderr line");
                set_result(&format!("{current:?}"));
                Action::Continue
            }
            "env" => {
                set_result(
                    &std::env::var("PROBE_GREETING").unwrap_or_else(|_| "<unset>".to_owned()),
                );
                Action::Continue
            }
            "random" => {
                // std seeds a HashMap's RandomState from WASI random_get.
                let mut seen = std::collections::HashMap::new();
                seen.insert("random", 1);
                set_result(&format!("ok {}", seen.len()));
                Action::Continue
            }
            "foreign" => {
                let result = hostcalls::call_foreign_function("no_such_function", None);
                set_result(&format!("{result:?}"));
                Action::Continue
            }
            "effective" => {
                let result = hostcalls::set_effective_context(777_777);
                set_result(&format!("{result:?}"));
                Action::Continue
            }
            "reset" => {
                let _ = hostcalls::reset_http_request();
                Action::Pause
            }
            "hold" => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.mode.as_str() {
            "body" | "hold" => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
                    Ok(body) => body.unwrap_or_default(),
                    Err(status) => {
                        log(LogLevel::Error, &format!("get body: {status:?}"));
                        return Action::Pause;
                    }
                };
                let _ = hostcalls::record_metric(self.metrics.sizes, body.len() as u64);
                if body.windows(4).any(|w| w == b"deny") {
                    deny(413, "body denied");
                    return Action::Pause;
                }
                let upper = body.to_ascii_uppercase();
                if let Err(status) =
                    hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, &upper)
                {
                    log(LogLevel::Error, &format!("set body: {status:?}"));
                }
                Action::Continue
            }
            "append-body" => {
                // start >= size appends; this checks the host's copyFrom semantics.
                let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, body_size, 0, b"+tail");
                Action::Continue
            }
            _ => Action::Continue,
        }
    }
}

#[allow(clippy::panic)]
fn panic_on_purpose() -> Action {
    panic!("probe panic requested")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Context for ProbeRequest {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if self.mode == "done-later" {
            log(LogLevel::Info, "flush answered: done");
            if let Err(e) = hostcalls::done() {
                log(LogLevel::Error, &format!("done: {e:?}"));
            }
            return;
        }
        if num_headers == 0 {
            log(LogLevel::Warn, &format!("call {token_id} failed"));
            deny(503, "upstream call failed");
            return;
        }
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .unwrap_or_default();
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        set_result(&format!(
            "call status={status} body={} context={}",
            String::from_utf8_lossy(&body),
            self.context_id
        ));
        if let Err(e) = hostcalls::resume_http_request() {
            log(LogLevel::Error, &format!("resume: {e:?}"));
        }
    }

    fn on_done(&mut self) -> bool {
        if self.mode == "done-later" {
            // Like a filter flushing an audit record before it lets go.
            let headers = vec![
                (":method", "POST"),
                (":path", "/flush"),
                (":authority", "companion"),
            ];
            match hostcalls::dispatch_http_call(
                "companion",
                headers,
                None,
                vec![],
                Duration::from_secs(1),
            ) {
                Ok(_) => {
                    log(LogLevel::Info, "done deferred");
                    return false;
                }
                Err(status) => log(LogLevel::Error, &format!("flush dispatch: {status:?}")),
            }
        }
        true
    }
}

impl HttpContext for ProbeRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.mode = header("x-probe").unwrap_or_default();
        self.on_headers()
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_body(body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        let _ = hostcalls::add_map_value(
            MapType::HttpRequestTrailers,
            "x-probe-trailers",
            &num_trailers.to_string(),
        );
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _ =
            hostcalls::add_map_value(MapType::HttpResponseHeaders, "x-probe-response", &self.mode);
        Action::Continue
    }

    fn on_log(&mut self) {
        let _ = hostcalls::increment_metric(self.metrics.logged, 1);
        // Envoy answers missing maps in this phase instead of refusing them.
        let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status");
        let pairs = hostcalls::get_map(MapType::HttpResponseHeaders).map(|pairs| pairs.len());
        log(
            LogLevel::Info,
            &format!(
                "on_log context={} status={status:?} response_pairs={pairs:?}",
                self.context_id
            ),
        );
        if self.mode == "done-later" {
            log(LogLevel::Info, "logged after deferred done");
        }
    }
}
