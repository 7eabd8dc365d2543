//! Prometheus metrics. Labels carry kinds, reasons and outcomes, never names of objects or anything from
//! their data; a namespace only with `--metrics-namespace-label`. Every metric is in README's table, and a
//! test holds the table to what `/metrics` serves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramTimer, HistogramVec, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::kind::WorkloadKind;
use crate::telemetry::process::ProcessMetrics;

/// The prefix of hashroll's own metrics (the process metrics have none, as everywhere).
const PREFIX: &str = "hashroll";

/// How the metrics are labelled and bucketed, from the flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsSettings {
    /// `--metrics-namespace-label`: per-workload counters and per-watch metrics carry `namespace`.
    pub namespace_label: bool,
    /// `--debounce`: reactions wait this long by design, so their buckets resolve milliseconds above it.
    pub debounce: Duration,
}

/// Every metric hashroll exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    namespace_label: bool,
    rolls: IntCounterVec,
    records: IntCounterVec,
    patch_errors: IntCounterVec,
    skipped: IntCounterVec,
    watch_errors: IntCounterVec,
    watch_restarts: IntCounterVec,
    watch_idle: GaugeVec,
    /// Every watch started, with its last sign of life; read at scrape time.
    watches: Arc<Mutex<Vec<WatchClock>>>,
    /// Secret and ConfigMap content changes and deletions seen, by kind.
    pub source_changes: IntCounterVec,
    /// Events that could not be published, by reason.
    pub event_errors: IntCounterVec,
    /// Alerts by sink and result (`sent`, `failed`, `dropped`).
    alerts: IntCounterVec,
    reaction: HistogramVec,
    patch_duration: HistogramVec,
    decision_batch: Histogram,
    /// Workloads skipped because of a malformed annotation.
    pub invalid_workloads: IntGauge,
    /// Workloads waiting for a required Secret or ConfigMap.
    pub held_workloads: IntGauge,
    /// Workloads whose roll has failed for good (a `ReloadFailed` Event) and not succeeded since.
    pub failing_workloads: IntGauge,
    /// Rolls decided and waiting for their turn under `--max-rollouts-per-minute`.
    pub waiting_rolls: IntGauge,
    /// Rollouts in progress under `--max-concurrent-rollouts`.
    pub rollouts_in_progress: IntGauge,
    /// Waiting rolls held back by a halt.
    pub halted_rolls: IntGauge,
    rollout_failures: IntCounterVec,
    canary_latency: Histogram,
    canary_last_seen: Gauge,
    /// 1 while a canary write has not come back within `--canary-timeout`.
    pub canary_stalled: IntGauge,
    /// Secrets and ConfigMaps held (as digests).
    pub sources: IntGauge,
    /// Workloads held.
    pub workloads: IntGauge,
    /// 1 once every watch has synced.
    pub ready: IntGauge,
    /// 1 while this process leads (always, without `--leader-elect`), 0 while it waits as a standby.
    pub leader: IntGauge,
    process: Option<Arc<ProcessMetrics>>,
    /// Registered by [`Metrics::enable_vault`] only when Vault is configured.
    vault: Arc<std::sync::OnceLock<VaultMetrics>>,
    /// The origin of the watches' clocks.
    started: Instant,
}

/// The results a Vault read is counted under.
const VAULT_READ_RESULTS: [&str; 4] = ["ok", "missing", "forbidden", "down"];

/// `hashroll_vault_up` and `hashroll_vault_reads_total`.
struct VaultMetrics {
    up: IntGauge,
    reads: IntCounterVec,
}

/// One watch's last sign of life (a list page, the end of a list, an event), for
/// `hashroll_watch_idle_seconds`. Cheap to touch: one atomic store.
#[derive(Clone)]
pub struct WatchClock {
    resource: &'static str,
    namespace: String,
    started: Instant,
    /// Milliseconds after `started`.
    last: Arc<AtomicU64>,
}

impl WatchClock {
    /// The watch is alive now.
    pub fn touch(&self) {
        self.last
            .store(millis(self.started.elapsed()), Ordering::Relaxed);
    }

    fn idle(&self, now: Duration) -> Duration {
        now.saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// 1 ms doubling to about 65 s: patches, and reactions without debounce, resolve single milliseconds.
fn latency_buckets() -> Vec<f64> {
    (0..17).map(|i| 0.001 * f64::from(1u32 << i)).collect()
}

/// The latency ladder plus the same fine steps (1 ms to 512 ms) above the debounce window, where
/// reactions land when `--debounce` is set: 2.001 s and 2.040 s are told apart.
fn reaction_buckets(debounce: Duration) -> Vec<f64> {
    let mut buckets = latency_buckets();
    let window = debounce.as_secs_f64();
    if window > 0.0 {
        // Rounded to the microsecond, so each bound prints as written (`2.256`, not `2.2560000000000002`).
        let step = |i: u32| ((window + 0.001 * f64::from(1u32 << i)) * 1e6).round() / 1e6;
        buckets.extend((0..10).map(step));
    }
    buckets.sort_by(f64::total_cmp);
    buckets.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    buckets
}

/// 100 µs doubling to about 3 s: deciding one workload takes microseconds, a burst milliseconds.
fn decision_buckets() -> Vec<f64> {
    (0..16).map(|i| 0.0001 * f64::from(1u32 << i)).collect()
}

impl Metrics {
    /// Metrics without a namespace label, for no debounce window.
    pub fn new() -> Metrics {
        Metrics::with(MetricsSettings::default())
    }

    pub fn with(settings: MetricsSettings) -> Metrics {
        let registry = Registry::new();
        let ns_label = settings.namespace_label;
        let counter = |name: &str, help: &str, labels: &[&str], by_namespace: bool| {
            let mut labels = labels.to_vec();
            if by_namespace && ns_label {
                labels.push("namespace");
            }
            let c = IntCounterVec::new(Opts::new(name, help).namespace(PREFIX), &labels)
                .expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g =
                IntGauge::with_opts(Opts::new(name, help).namespace(PREFIX)).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let opts = HistogramOpts::new(name, help)
                .namespace(PREFIX)
                .buckets(buckets);
            let h = HistogramVec::new(opts, labels).expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let watch_labels: &[&str] = if ns_label {
            &["resource", "namespace"]
        } else {
            &["resource"]
        };
        let watch_idle = GaugeVec::new(
            Opts::new(
                "watch_idle_seconds",
                "Seconds since the watch last delivered a list or an event",
            )
            .namespace(PREFIX),
            watch_labels,
        )
        .expect("valid metric");
        registry
            .register(Box::new(watch_idle.clone()))
            .expect("unique metric");
        let decision_batch = Histogram::with_opts(
            HistogramOpts::new(
                "decision_batch_seconds",
                "Time to decide one batch of due workloads",
            )
            .namespace(PREFIX)
            .buckets(decision_buckets()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(decision_batch.clone()))
            .expect("unique metric");
        let canary_latency = Histogram::with_opts(
            HistogramOpts::new(
                "canary_latency_seconds",
                "From a canary ConfigMap write to its arrival through hashroll's own watch",
            )
            .namespace(PREFIX)
            .buckets(latency_buckets()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(canary_latency.clone()))
            .expect("unique metric");
        let canary_last_seen = Gauge::with_opts(
            Opts::new(
                "canary_last_seen_timestamp_seconds",
                "When the latest canary write came back through the watch (Unix time; 0: never)",
            )
            .namespace(PREFIX),
        )
        .expect("valid metric");
        registry
            .register(Box::new(canary_last_seen.clone()))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "1, labelled with the version of hashroll").namespace(PREFIX),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
            .register(Box::new(build_info))
            .expect("unique metric");
        Metrics {
            rolls: counter(
                "rolls_total",
                "Roll patches sent, by result",
                &["kind", "result"],
                true,
            ),
            records: counter(
                "records_total",
                "States recorded without rolling",
                &["kind"],
                true,
            ),
            patch_errors: counter(
                "patch_errors_total",
                "Failed workload patches",
                &["kind", "code", "class"],
                true,
            ),
            skipped: counter(
                "skipped_changes_total",
                "Source changes that reached a workload and did not roll it, by reason",
                &["reason"],
                true,
            ),
            watch_errors: counter("watch_errors_total", "Watch errors", &["resource"], false),
            watch_restarts: counter(
                "watch_restarts_total",
                "Watch restarts, by cause",
                &["resource", "cause"],
                true,
            ),
            watch_idle,
            watches: Arc::default(),
            source_changes: counter(
                "source_changes_total",
                "Source content changes and deletions seen",
                &["kind"],
                false,
            ),
            event_errors: counter(
                "event_errors_total",
                "Events that could not be published",
                &["reason"],
                false,
            ),
            alerts: counter(
                "alerts_total",
                "Alerts sent, failed after retries, or dropped from a full queue",
                &["sink", "result"],
                false,
            ),
            reaction: histogram(
                "reaction_seconds",
                "From a source change seen on the watch to the roll patch acknowledged",
                &["kind"],
                reaction_buckets(settings.debounce),
            ),
            patch_duration: histogram(
                "patch_duration_seconds",
                "Workload patches (records and rolls), sent to answered",
                &["kind"],
                latency_buckets(),
            ),
            decision_batch,
            invalid_workloads: gauge(
                "invalid_workloads",
                "Workloads skipped for a malformed annotation",
            ),
            held_workloads: gauge("held_workloads", "Workloads waiting for a required source"),
            failing_workloads: gauge(
                "failing_workloads",
                "Workloads whose roll failed for good and has not succeeded since",
            ),
            waiting_rolls: gauge(
                "waiting_rolls",
                "Rolls decided and waiting for their turn (--max-rollouts-per-minute)",
            ),
            rollouts_in_progress: gauge(
                "rollouts_in_progress",
                "Rollouts started and not done yet (--max-concurrent-rollouts)",
            ),
            halted_rolls: gauge(
                "halted_rolls",
                "Waiting rolls held back because a rollout of their change failed",
            ),
            rollout_failures: counter(
                "rollout_failures_total",
                "Rollouts that failed under --max-concurrent-rollouts, halting their change, by reason",
                &["reason"],
                false,
            ),
            canary_latency,
            canary_last_seen,
            canary_stalled: gauge(
                "canary_stalled",
                "1 while a canary write has not come back through the watch within --canary-timeout",
            ),
            sources: gauge("sources", "Sources held as digests"),
            workloads: gauge("workloads", "Workloads held"),
            ready: gauge("ready", "1 once every watch has synced"),
            leader: gauge(
                "leader",
                "1 while this replica leads (always without --leader-elect), 0 on a standby",
            ),
            process: ProcessMetrics::register(&registry).map(Arc::new),
            vault: Arc::default(),
            namespace_label: ns_label,
            registry,
            started: Instant::now(),
        }
    }

    /// Registers the Vault metrics (with `--vault-addr` only: without Vault they would say nothing).
    pub fn enable_vault(&self) {
        self.vault.get_or_init(|| {
            let up = IntGauge::with_opts(
                Opts::new(
                    "vault_up",
                    "1 while Vault answers hashroll's reads, 0 while it is down",
                )
                .namespace(PREFIX),
            )
            .expect("valid metric");
            let reads = IntCounterVec::new(
                Opts::new("vault_reads_total", "Vault path reads, by result").namespace(PREFIX),
                &["result"],
            )
            .expect("valid metric");
            for r in VAULT_READ_RESULTS {
                reads.with_label_values(&[r]);
            }
            for m in [
                Box::new(up.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(reads.clone()),
            ] {
                self.registry.register(m).expect("unique metric");
            }
            VaultMetrics { up, reads }
        });
    }

    /// Vault answers (true) or is down (false).
    pub fn vault_up(&self, up: bool) {
        if let Some(v) = self.vault.get() {
            v.up.set(i64::from(up));
        }
    }

    /// One read of a Vault path: `ok`, `missing`, `forbidden` or `down`.
    pub fn vault_read(&self, result: &str) {
        if let Some(v) = self.vault.get() {
            v.reads.with_label_values(&[result]).inc();
        }
    }

    /// Creates the series whose label values are known at start at zero, so they are served (and
    /// `rate()` sees their first increment) before anything happens: per workload kind watched, and per
    /// skip reason (`reasons`) unless the namespace is a label.
    pub fn preset(&self, kinds: impl IntoIterator<Item = WorkloadKind>, reasons: &[&str]) {
        for reason in ["failed", "timeout"] {
            self.rollout_failures.with_label_values(&[reason]);
        }
        for kind in kinds {
            let kind = kind.as_str();
            self.reaction.with_label_values(&[kind]);
            self.patch_duration.with_label_values(&[kind]);
            if !self.namespace_label {
                for result in ["success", "failure"] {
                    self.rolls.with_label_values(&[kind, result]);
                }
                self.records.with_label_values(&[kind]);
            }
        }
        if !self.namespace_label {
            for reason in reasons {
                self.skipped.with_label_values(&[reason]);
            }
        }
    }

    /// Increments `vec` by `by` for `labels`, plus the workload's namespace when it is a label.
    fn inc<const N: usize>(&self, vec: &IntCounterVec, labels: [&str; N], ns: &str, by: u64) {
        if self.namespace_label {
            let mut all = labels.to_vec();
            all.push(ns);
            vec.with_label_values(&all).inc_by(by);
        } else {
            vec.with_label_values(&labels).inc_by(by);
        }
    }

    /// A roll patch was answered: `success` or `failure`.
    pub fn roll(&self, kind: WorkloadKind, namespace: &str, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.inc(&self.rolls, [kind.as_str(), result], namespace, 1);
    }

    /// An alert to `sink` was `sent`, `failed` (after its retries) or `dropped` (the queue was full).
    pub fn alert(&self, sink: &str, result: &str) {
        self.alerts.with_label_values(&[sink, result]).inc();
    }

    /// The alert series of the configured sink, at zero from the start.
    pub fn preset_alert(&self, sink: &str, result: &str) {
        self.alerts.with_label_values(&[sink, result]);
    }

    /// A state was recorded without rolling.
    pub fn record(&self, kind: WorkloadKind, namespace: &str) {
        self.inc(&self.records, [kind.as_str()], namespace, 1);
    }

    /// A workload patch failed with HTTP status `code` (or `transport`), of error class `class`.
    pub fn patch_error(&self, kind: WorkloadKind, namespace: &str, code: &str, class: &str) {
        self.inc(
            &self.patch_errors,
            [kind.as_str(), code, class],
            namespace,
            1,
        );
    }

    /// `changes` source changes reached a workload in `namespace` and did not roll it, for `reason`.
    pub fn skipped(&self, reason: &str, namespace: &str, changes: u64) {
        if changes > 0 {
            self.inc(&self.skipped, [reason], namespace, changes);
        }
    }

    /// Times one workload patch; records when dropped, whatever the outcome.
    pub fn patch_timer(&self, kind: WorkloadKind) -> HistogramTimer {
        self.patch_duration
            .with_label_values(&[kind.as_str()])
            .start_timer()
    }

    /// A roll was acknowledged `took` after the first change it carries was seen.
    pub fn reaction(&self, kind: WorkloadKind, took: Duration) {
        self.reaction
            .with_label_values(&[kind.as_str()])
            .observe(took.as_secs_f64());
    }

    /// Times one batch of decisions; records when dropped.
    /// A rollout failed (`failed`, `timeout`) and halted its change.
    pub fn rollout_failure(&self, reason: &str) {
        self.rollout_failures.with_label_values(&[reason]).inc();
    }

    /// A canary write came back through the watch after `took`.
    pub fn canary_seen(&self, took: Duration) {
        self.canary_latency.observe(took.as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.canary_last_seen.set(now.as_secs_f64());
    }

    pub fn decision_timer(&self) -> HistogramTimer {
        self.decision_batch.start_timer()
    }

    /// A watch starts: its clock, to touch at every sign of life. Its idle time counts from now.
    pub fn watch_started(&self, resource: &'static str, namespace: Option<&str>) -> WatchClock {
        let clock = WatchClock {
            resource,
            namespace: namespace.unwrap_or_default().to_string(),
            started: self.started,
            last: Arc::default(),
        };
        clock.touch();
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(clock.clone());
        clock
    }

    /// A watch failed and restarts (what it retries depends on `cause`).
    pub fn watch_restarted(&self, resource: &str, namespace: Option<&str>, cause: &str) {
        self.watch_errors.with_label_values(&[resource]).inc();
        self.inc(
            &self.watch_restarts,
            [resource, cause],
            namespace.unwrap_or_default(),
            1,
        );
    }

    /// The text exposition format; what is computed at scrape time (idle watches, the process) first.
    pub fn render(&self) -> String {
        self.refresh_watch_idle();
        if let Some(p) = &self.process {
            p.refresh();
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }

    /// Sets each watch's idle time; without the namespace label, watches of one resource in several
    /// namespaces (`--namespaces`) show the idlest.
    fn refresh_watch_idle(&self) {
        let now = self.started.elapsed();
        let mut idle: BTreeMap<(&str, &str), Duration> = BTreeMap::new();
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        for w in watches.iter() {
            let ns = if self.namespace_label {
                w.namespace.as_str()
            } else {
                ""
            };
            let e = idle.entry((w.resource, ns)).or_default();
            *e = (*e).max(w.idle(now));
        }
        for ((resource, ns), d) in idle {
            let g = if self.namespace_label {
                self.watch_idle.with_label_values(&[resource, ns])
            } else {
                self.watch_idle.with_label_values(&[resource])
            };
            g.set(d.as_secs_f64());
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_resolve_milliseconds_and_the_debounce_window() {
        let b = latency_buckets();
        assert_eq!(b[..3], [0.001, 0.002, 0.004]);
        assert!(*b.last().unwrap() > 60.0);
        let r = reaction_buckets(Duration::from_secs(2));
        for edge in [0.001, 2.001, 2.002, 2.004, 2.256, 2.512] {
            assert!(r.contains(&edge), "{edge} in {r:?}");
        }
        assert!(r.windows(2).all(|w| w[0] < w[1]), "sorted, distinct: {r:?}");
        assert_eq!(reaction_buckets(Duration::ZERO), b);
        assert_eq!(decision_buckets()[0], 0.0001);
    }

    #[test]
    fn names_are_prefixed_and_the_namespace_is_a_label_only_when_asked() {
        let m = Metrics::new();
        m.preset([WorkloadKind::Deployment], &["noop"]);
        m.roll(WorkloadKind::Deployment, "shop", true);
        m.skipped("noop", "shop", 2);
        let text = m.render();
        for line in [
            r#"hashroll_rolls_total{kind="Deployment",result="success"} 1"#,
            r#"hashroll_rolls_total{kind="Deployment",result="failure"} 0"#,
            r#"hashroll_skipped_changes_total{reason="noop"} 2"#,
            r#"hashroll_build_info{version=""#,
            "# TYPE hashroll_reaction_seconds histogram",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        assert!(!text.contains("shop"), "{text}");

        let m = Metrics::with(MetricsSettings {
            namespace_label: true,
            debounce: Duration::ZERO,
        });
        m.roll(WorkloadKind::Deployment, "shop", true);
        m.watch_started("secrets", Some("shop"));
        let text = m.render();
        assert!(
            text.contains(
                r#"hashroll_rolls_total{kind="Deployment",namespace="shop",result="success"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"hashroll_watch_idle_seconds{namespace="shop",resource="secrets"}"#),
            "{text}"
        );
    }

    #[test]
    fn a_watch_is_as_idle_as_its_last_sign_of_life() {
        let m = Metrics::new();
        let a = m.watch_started("secrets", Some("a"));
        m.watch_started("secrets", Some("b"));
        a.last.store(0, Ordering::Relaxed);
        let now = m.started.elapsed() + Duration::from_secs(5);
        assert!(a.idle(now) >= Duration::from_secs(5));
        a.touch();
        assert!(a.idle(m.started.elapsed()) < Duration::from_secs(1));
        assert!(
            m.render()
                .contains(r#"hashroll_watch_idle_seconds{resource="secrets"}"#)
        );
    }
}
