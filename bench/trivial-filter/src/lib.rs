//! The cheapest useful proxy-wasm filter: it reads one request header and
//! lets the request go on. `make bench` runs it to measure what any Rust Wasm
//! filter costs in Envoy (VM entry, context creation, one host call), the
//! floor under the avb-edge filter's own cost.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(TrivialRoot) });
}}

struct TrivialRoot;

impl Context for TrivialRoot {}

impl RootContext for TrivialRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ReadOneHeader))
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
