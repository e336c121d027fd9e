//! Counters in Envoy's stats (Envoy shows them with a `wasmcustom.` prefix).

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

#[derive(Clone, Copy, Default)]
pub struct Metric(Option<u32>);

impl Metric {
    pub fn counter(name: &str) -> Metric {
        Metric(hostcalls::define_metric(MetricType::Counter, name).ok())
    }
    pub fn gauge(name: &str) -> Metric {
        Metric(hostcalls::define_metric(MetricType::Gauge, name).ok())
    }
    pub fn add(self, n: u64) {
        if let (Some(id), true) = (self.0, n > 0) {
            let _ = hostcalls::increment_metric(id, n.min(i64::MAX as u64) as i64);
        }
    }
    pub fn inc(self) {
        self.add(1);
    }
    pub fn set(self, value: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

pub struct RuleMetrics {
    pub allowed: Metric,
    pub denied: Metric,
    pub unauthenticated: Metric,
    pub dry_run_denied: Metric,
}

pub struct WebhookMetrics {
    pub verified: Metric,
    pub duplicate: Metric,
    pub rejected: HashMap<&'static str, Metric>,
}

/// Every metric the filter reports, defined once per plugin configuration.
pub struct Metrics {
    pub allowed: Metric,
    pub denied: Metric,
    pub unauthenticated: Metric,
    pub rejected: Metric,
    pub dry_run_denied: Metric,
    pub rules: Vec<RuleMetrics>,
    pub webhooks: HashMap<String, WebhookMetrics>,
    pub audit_sent: Metric,
    pub audit_failed: Metric,
    pub audit_dropped: Metric,
    pub audit_queue_depth: Metric,
}

pub const WEBHOOK_REJECTIONS: [&str; 4] = [
    "missing_signature",
    "unsupported_algorithm",
    "invalid_signature",
    "payload_too_large",
];

impl Metrics {
    pub fn define<'a>(
        rule_names: impl Iterator<Item = &'a str>,
        webhook_names: impl Iterator<Item = &'a str>,
    ) -> Metrics {
        Metrics {
            allowed: Metric::counter("avb.allowed"),
            denied: Metric::counter("avb.denied"),
            unauthenticated: Metric::counter("avb.unauthenticated"),
            rejected: Metric::counter("avb.rejected"),
            dry_run_denied: Metric::counter("avb.dry_run_denied"),
            rules: rule_names
                .map(|name| RuleMetrics {
                    allowed: Metric::counter(&format!("avb.rule.{name}.allowed")),
                    denied: Metric::counter(&format!("avb.rule.{name}.denied")),
                    unauthenticated: Metric::counter(&format!("avb.rule.{name}.unauthenticated")),
                    dry_run_denied: Metric::counter(&format!("avb.rule.{name}.dry_run_denied")),
                })
                .collect(),
            webhooks: webhook_names
                .map(|name| {
                    let metrics = WebhookMetrics {
                        verified: Metric::counter(&format!("avb.webhook.{name}.verified")),
                        duplicate: Metric::counter(&format!("avb.webhook.{name}.duplicate")),
                        rejected: WEBHOOK_REJECTIONS
                            .iter()
                            .map(|r| {
                                (
                                    *r,
                                    Metric::counter(&format!("avb.webhook.{name}.rejected.{r}")),
                                )
                            })
                            .collect(),
                    };
                    (name.to_string(), metrics)
                })
                .collect(),
            audit_sent: Metric::counter("avb.audit.sent"),
            audit_failed: Metric::counter("avb.audit.failed"),
            audit_dropped: Metric::counter("avb.audit.dropped"),
            audit_queue_depth: Metric::gauge("avb.audit.queue_depth"),
        }
    }
}
