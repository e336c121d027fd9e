//! Baselines for `make bench`, priced against the avb-edge filter.
//!
//! - Default (empty plugin configuration): the cheapest useful proxy-wasm
//!   filter. It reads one request header and lets the request go on: what any
//!   Rust Wasm filter costs in Envoy (VM entry, context creation, one host
//!   call), the floor under avb-edge's own cost.
//! - Configuration `avb-host-calls`: the same host calls avb-edge makes on an
//!   allowed request (the whole header map, the source address, the clock,
//!   two counters, five request headers set), with no logic in between. The
//!   difference to avb-edge is then the filter's own computing, and the
//!   difference to the default is the host calls themselves.
//!   `avb-host-calls:` followed by a comma-separated subset of `headers`,
//!   `source`, `clock`, `counters`, `set-headers` makes only those calls (to
//!   price them one by one).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(BaselineRoot::default()) });
}}

const HOST_CALLS_MODE: &str = "avb-host-calls";

/// Which of avb-edge's host calls the host-calls mode makes.
#[derive(Clone, Copy)]
struct HostCalls {
    header_map: bool,
    source_address: bool,
    clock: bool,
    counters: Option<Counters>,
    set_headers: bool,
}

/// Counter ids.
#[derive(Clone, Copy)]
struct Counters {
    allowed: u32,
    rule_allowed: u32,
}

#[derive(Default)]
struct BaselineRoot {
    host_calls: Option<HostCalls>,
}

impl Context for BaselineRoot {}

impl RootContext for BaselineRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let configuration = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let configuration = String::from_utf8_lossy(&configuration);
        let Some(rest) = configuration.strip_prefix(HOST_CALLS_MODE) else {
            self.host_calls = None;
            return configuration.is_empty();
        };
        let all = ["headers", "source", "clock", "counters", "set-headers"];
        let chosen: Vec<&str> = match rest.strip_prefix(':') {
            Some(list) => list.split(',').map(str::trim).collect(),
            None if rest.is_empty() => all.to_vec(),
            // Refuse a configuration it does not understand rather than
            // measure something else.
            None => return false,
        };
        if chosen.iter().any(|call| !all.contains(call)) {
            return false;
        }
        let counters = if chosen.contains(&"counters") {
            let define = |name| hostcalls::define_metric(MetricType::Counter, name).ok();
            match (
                define("bench.allowed"),
                define("bench.rule.audit.logs.list.allowed"),
            ) {
                (Some(allowed), Some(rule_allowed)) => Some(Counters {
                    allowed,
                    rule_allowed,
                }),
                _ => return false,
            }
        } else {
            None
        };
        self.host_calls = Some(HostCalls {
            header_map: chosen.contains(&"headers"),
            source_address: chosen.contains(&"source"),
            clock: chosen.contains(&"clock"),
            counters,
            set_headers: chosen.contains(&"set-headers"),
        });
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match self.host_calls {
            Some(calls) => Box::new(AvbHostCalls { calls }) as Box<dyn HttpContext>,
            None => Box::new(ReadOneHeader),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ReadOneHeader;

impl Context for ReadOneHeader {}

impl HttpContext for ReadOneHeader {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // The value is read (one host call, one copy into the VM) and dropped:
        // the point is to pay for reading a header, not to act on it.
        let _authorization = self.get_http_request_header("authorization");
        Action::Continue
    }
}

struct AvbHostCalls {
    calls: HostCalls,
}

impl Context for AvbHostCalls {}

impl HttpContext for AvbHostCalls {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Results are dropped on purpose: only the cost of the calls matters.
        let calls = self.calls;
        if calls.header_map {
            let _headers = self.get_http_request_headers_bytes();
        }
        if calls.source_address {
            let _source = self.get_property(vec!["source", "address"]);
        }
        if calls.clock {
            let _now = self.get_current_time();
        }
        if let Some(counters) = calls.counters {
            let _ = hostcalls::increment_metric(counters.allowed, 1);
            let _ = hostcalls::increment_metric(counters.rule_allowed, 1);
        }
        if !calls.set_headers {
            return Action::Continue;
        }
        for (name, value) in [
            ("x-avb-subject", "bench-user"),
            ("x-avb-roles", "OPERATOR"),
            ("x-avb-tenant", "t-bench"),
            ("x-avb-rule", "audit.logs.list"),
            ("x-avb-decision-id", "0123456789abcdef0123456789abcdef"),
        ] {
            self.set_http_request_header(name, Some(value));
        }
        Action::Continue
    }
}
