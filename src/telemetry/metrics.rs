//! Prometheus metrics. Labels carry kinds and outcomes, never names of objects or anything from their data.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric hashroll exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Roll patches, by kind and result (`success`, `failure`; each failed attempt counts).
    pub rolls: IntCounterVec,
    /// States recorded without rolling (first sight, re-baseline), by kind.
    pub records: IntCounterVec,
    /// Failed workload patches, by kind, HTTP status (or `transport`) and error class.
    pub patch_errors: IntCounterVec,
    /// Watch errors, by resource.
    pub watch_errors: IntCounterVec,
    /// Secret and ConfigMap changes seen, by kind.
    pub source_changes: IntCounterVec,
    /// Workloads skipped because of a malformed annotation.
    pub invalid_workloads: IntGauge,
    /// Workloads waiting for a required Secret or ConfigMap.
    pub held_workloads: IntGauge,
    /// Workloads whose roll has failed for good (a `ReloadFailed` Event) and not succeeded since.
    pub failing_workloads: IntGauge,
    /// Secrets and ConfigMaps held (as digests).
    pub sources: IntGauge,
    /// Workloads held.
    pub workloads: IntGauge,
    /// 1 once every watch has synced.
    pub ready: IntGauge,
    /// Events that could not be published.
    pub event_errors: IntCounterVec,
    /// 1 while this process leads (always, without `--leader-elect`), 0 while it waits as a standby.
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("hashroll".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        Metrics {
            rolls: counter(
                "rolls_total",
                "Roll patches sent, by result",
                &["kind", "result"],
            ),
            records: counter(
                "records_total",
                "States recorded without rolling",
                &["kind"],
            ),
            patch_errors: counter(
                "patch_errors_total",
                "Failed workload patches",
                &["kind", "code", "class"],
            ),
            watch_errors: counter("watch_errors_total", "Watch errors", &["resource"]),
            source_changes: counter(
                "source_changes_total",
                "Secret and ConfigMap changes seen",
                &["kind"],
            ),
            event_errors: counter(
                "event_errors_total",
                "Events that could not be published",
                &["reason"],
            ),
            invalid_workloads: gauge(
                "invalid_workloads",
                "Workloads skipped for a malformed annotation",
            ),
            held_workloads: gauge("held_workloads", "Workloads waiting for a required source"),
            failing_workloads: gauge(
                "failing_workloads",
                "Workloads whose roll failed for good and has not succeeded since",
            ),
            sources: gauge("sources", "Secrets and ConfigMaps held as digests"),
            workloads: gauge("workloads", "Workloads held"),
            ready: gauge("ready", "1 once every watch has synced"),
            leader: gauge(
                "leader",
                "1 while this replica leads (always without --leader-elect), 0 on a standby",
            ),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
