//! The root context: loads the policy (refusing a bad one), defines the
//! metrics, and drives the audit outbox on its tick.

use super::host;
use super::metrics::Metrics;
use super::outbox::Outbox;
use super::request::EdgeRequest;
use crate::policy::{Policy, TokenCache};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// What every request context of one plugin configuration shares.
pub struct Shared {
    pub policy: Policy,
    pub metrics: Metrics,
    pub outbox: Option<RefCell<Outbox>>,
    /// Verified tokens of this policy only: a new configuration gets a new cache.
    pub tokens: RefCell<TokenCache>,
    pub ids: DecisionIds,
}

/// Decision ids: 64 random bits per VM (unique across workers and Envoy
/// instances) followed by a per-VM counter.
pub struct DecisionIds {
    prefix: u64,
    next: Cell<u64>,
}

impl DecisionIds {
    fn new() -> DecisionIds {
        let mut seed = [0u8; 16];
        if getrandom::getrandom(&mut seed).is_err() {
            // No randomness from the host: fall back on the clock, still
            // unique per VM start in practice.
            seed[..8].copy_from_slice(&host::now_millis().to_le_bytes());
        }
        let (prefix, start) = seed.split_at(8);
        DecisionIds {
            prefix: u64::from_le_bytes(prefix.try_into().unwrap_or([0; 8])),
            next: Cell::new(u64::from_le_bytes(start.try_into().unwrap_or([0; 8])) >> 16),
        }
    }

    pub fn next(&self) -> String {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        format!("{:016x}{:016x}", self.prefix, n)
    }
}

/// Envoy creates one root context per plugin configuration (a new policy
/// means a new root context; in-flight requests keep the old `Shared`).
pub struct EdgeRoot {
    shared: Option<Rc<Shared>>,
}

impl EdgeRoot {
    pub fn new() -> EdgeRoot {
        EdgeRoot { shared: None }
    }
}

impl Context for EdgeRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        if let Some(shared) = &self.shared {
            if let Some(outbox) = &shared.outbox {
                outbox.borrow_mut().answered(
                    token,
                    host::http_call_status(),
                    host::now_millis(),
                    &shared.metrics,
                );
            }
        }
    }

    fn on_done(&mut self) -> bool {
        // Envoy is draining this configuration: hand the open chunk to the
        // shared queue so another worker (or the next configuration) ships it.
        if let Some(shared) = &self.shared {
            if let Some(outbox) = &shared.outbox {
                outbox.borrow_mut().seal(&shared.metrics);
            }
        }
        true
    }
}

impl RootContext for EdgeRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        let Some(config) = host::buffer(BufferType::PluginConfiguration, size) else {
            host::log(
                LogLevel::Critical,
                "avb-edge: policy refused: the plugin configuration is empty",
            );
            return false;
        };
        let policy = match Policy::from_json(&config, &|name| std::env::var(name).ok()) {
            Ok(policy) => policy,
            Err(err) => {
                host::log(
                    LogLevel::Critical,
                    &format!("avb-edge: policy refused: {err}"),
                );
                return false;
            }
        };
        let metrics = Metrics::define(
            policy.rules().iter().map(|r| r.name()),
            policy.webhook_names(),
        );
        let outbox = policy.audit().map(|settings| Outbox::new(settings.clone()));
        if let Some(outbox) = &outbox {
            let _ = proxy_wasm::hostcalls::set_tick_period(outbox.flush_interval());
        }
        host::log(
            LogLevel::Info,
            &format!(
                "avb-edge: policy {} loaded: {} rules, audit {}",
                policy.revision(),
                policy.rules().len(),
                if outbox.is_some() { "on" } else { "off" }
            ),
        );
        self.shared = Some(Rc::new(Shared {
            policy,
            metrics,
            outbox: outbox.map(RefCell::new),
            tokens: RefCell::new(TokenCache::default()),
            ids: DecisionIds::new(),
        }));
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            if let Some(outbox) = &shared.outbox {
                outbox
                    .borrow_mut()
                    .pump(host::now_millis(), &shared.metrics);
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EdgeRequest::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
