//! The chart's alerts and Grafana dashboard refer only to metrics hashroll serves, with labels those
//! metrics carry: every PromQL expression they hold parses (charts/promql_refs.py, Prometheus's grammar),
//! and each metric and label it names is in README's metrics table, which tests/metrics.rs checks is
//! what `/metrics` serves, both ways. The dashboard JSON must be valid, and show what the issue asked
//! for: rolls and failures, reaction latency, tracked objects, memory.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

#[path = "common/readme.rs"]
mod readme;

/// Labels every scraped series gets from a Prometheus Operator monitor (the target's), not hashroll.
const TARGET_LABELS: [&str; 7] = [
    "job",
    "namespace",
    "pod",
    "instance",
    "container",
    "endpoint",
    "service",
];

/// README's metrics table: family → (type, labels).
fn readme_metrics() -> BTreeMap<String, (String, BTreeSet<String>)> {
    readme::metrics_rows()
        .iter()
        .map(|cells| {
            let name = readme::ticked(&cells[1]).remove(0);
            let labels = readme::ticked(&cells[3]).into_iter().collect();
            (name, (cells[2].clone(), labels))
        })
        .collect()
}

/// The series names a family serves, each with the labels it may carry.
fn series(
    families: &BTreeMap<String, (String, BTreeSet<String>)>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (name, (type_, labels)) in families {
        let mut labels = labels.clone();
        labels.extend(TARGET_LABELS.iter().map(|l| l.to_string()));
        if type_ == "histogram" {
            let mut bucket = labels.clone();
            bucket.insert("le".into());
            out.insert(format!("{name}_bucket"), bucket);
            out.insert(format!("{name}_sum"), labels.clone());
            out.insert(format!("{name}_count"), labels);
        } else {
            out.insert(name.clone(), labels);
        }
    }
    out
}

#[derive(serde::Deserialize, Debug)]
struct Selector {
    metric: String,
    labels: Vec<String>,
}

#[derive(serde::Deserialize, Debug)]
struct Expression {
    #[serde(rename = "where")]
    where_: String,
    expr: String,
    error: Option<String>,
    selectors: Vec<Selector>,
    grouping: Vec<String>,
    #[serde(default)]
    legend: Vec<String>,
}

/// charts/promql_refs.py's answer; None (skipped) only outside CI when its libraries are missing.
fn expressions() -> Option<Vec<Expression>> {
    let out = Command::new("python3")
        .arg("charts/promql_refs.py")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("No module named") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install helm-python-sdk and promql-parser: {stderr}"
        );
        eprintln!("SKIPPED: pip install helm-python-sdk promql-parser to run this test");
        return None;
    }
    assert!(out.status.success(), "promql_refs.py: {stderr}");
    Some(serde_json::from_slice(&out.stdout).expect("promql_refs.py prints JSON"))
}

#[test]
fn the_alerts_and_dashboard_refer_only_to_served_metrics_and_labels() {
    let Some(exprs) = expressions() else {
        return;
    };
    let served = series(&readme_metrics());
    let mut problems = Vec::new();
    for e in &exprs {
        if let Some(err) = &e.error {
            problems.push(format!("{}: does not parse: {err}\n  {}", e.where_, e.expr));
            continue;
        }
        if e.selectors.is_empty() {
            problems.push(format!("{}: selects no metric\n  {}", e.where_, e.expr));
        }
        let mut labels_here = BTreeSet::new();
        for s in &e.selectors {
            match served.get(&s.metric) {
                None => problems.push(format!(
                    "{}: {} is not a metric hashroll serves\n  {}",
                    e.where_, s.metric, e.expr
                )),
                Some(labels) => {
                    labels_here.extend(labels.iter().cloned());
                    for l in s.labels.iter().filter(|l| !labels.contains(*l)) {
                        problems.push(format!(
                            "{}: {} has no label {l}\n  {}",
                            e.where_, s.metric, e.expr
                        ));
                    }
                }
            }
        }
        for l in e.legend.iter().filter(|l| !labels_here.contains(*l)) {
            problems.push(format!(
                "{}: its legend shows {{{{{l}}}}}, which none of its metrics carries\n  {}",
                e.where_, e.expr
            ));
        }
        for l in e.grouping.iter().filter(|l| !labels_here.contains(*l)) {
            problems.push(format!(
                "{}: groups or matches by {l}, which none of its metrics carries\n  {}",
                e.where_, e.expr
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker itself: a metric or label that does not exist is reported (so the test above can fail).
#[test]
fn a_metric_or_label_that_does_not_exist_is_caught() {
    let served = series(&readme_metrics());
    assert!(served["hashroll_rolls_total"].contains("result"));
    assert!(served["hashroll_reaction_seconds_bucket"].contains("le"));
    assert!(!served.contains_key("hashroll_reaction_seconds"));
    assert!(!served.contains_key("hashroll_reloads_total"));
    assert!(!served["hashroll_rolls_total"].contains("le"));
    assert!(!served["hashroll_sources"].contains("kind"));
}

#[test]
fn the_dashboard_shows_rolls_failures_latency_tracked_objects_and_memory() {
    let Some(exprs) = expressions() else {
        return;
    };
    let dashboard: BTreeSet<&str> = exprs
        .iter()
        .filter(|e| e.where_.starts_with("dashboard panel"))
        .flat_map(|e| e.selectors.iter().map(|s| s.metric.as_str()))
        .collect();
    for metric in [
        "hashroll_rolls_total",
        "hashroll_patch_errors_total",
        "hashroll_failing_workloads",
        "hashroll_reaction_seconds_bucket",
        "hashroll_sources",
        "hashroll_workloads",
        "process_resident_memory_bytes",
    ] {
        assert!(
            dashboard.contains(metric),
            "the dashboard shows {metric}: {dashboard:?}"
        );
    }
    let latency: Vec<&Expression> = exprs
        .iter()
        .filter(|e| e.expr.contains("hashroll_reaction_seconds_bucket"))
        .collect();
    for q in ["0.5", "0.9", "0.99"] {
        assert!(
            latency
                .iter()
                .any(|e| e.expr.starts_with(&format!("histogram_quantile({q},"))),
            "reaction latency p{q}: {latency:?}"
        );
    }
}

#[test]
fn the_alerts_cover_the_failure_modes() {
    let Some(exprs) = expressions() else {
        return;
    };
    let alerts: BTreeSet<&str> = exprs
        .iter()
        .filter_map(|e| e.where_.strip_prefix("variant monitoring: alert "))
        .collect();
    for (alert, what) in [
        ("HashrollRollFailed", "a roll failed for good"),
        ("HashrollRollsFailing", "rolls failing"),
        ("HashrollWatchErrors", "a watch erroring"),
        ("HashrollWatchSilent", "a watch stuck"),
        ("HashrollNotReady", "not ready"),
        ("HashrollNoLeader", "no leader"),
        ("HashrollMemoryNearLimit", "memory near the limit"),
    ] {
        assert!(alerts.contains(alert), "{what}: {alert} in {alerts:?}");
    }
}
