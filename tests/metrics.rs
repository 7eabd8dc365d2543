//! End to end: README's table of metrics is what `/metrics` serves, both ways (every family served is in the
//! table with its type and labels, every row is served), and the namespace becomes a label only with
//! `--metrics-namespace-label`, only on the rows that say so.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::readme::ticked;
use common::{Env, Server, e2e, secret_key_ref};
use kube_testserver::{Fault, RequestMatch};

const NS: &str = "metered";

/// A row of README's table: type, labels, and the labels `--metrics-namespace-label` adds.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    type_: String,
    labels: BTreeSet<String>,
    namespaced: bool,
}

/// The rows of the table under `## Metrics` in README.md.
fn readme_table() -> BTreeMap<String, Row> {
    common::readme::metrics_rows()
        .iter()
        .map(|cells| {
            let (name, type_, labels) = (&cells[1], &cells[2], cells[3].as_str());
            let (base, flagged) = labels.split_once("(+").unwrap_or((labels, ""));
            assert!(
                flagged.is_empty() || ticked(flagged) == ["namespace"],
                "only `namespace` is added by the flag: {cells:?}"
            );
            let row = Row {
                type_: type_.clone(),
                labels: ticked(base).into_iter().collect(),
                namespaced: !flagged.is_empty(),
            };
            (ticked(name).remove(0), row)
        })
        .collect()
}

/// The families `/metrics` serves: type, and every label name their samples carry (but `le`).
fn served(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut families: BTreeMap<String, (String, BTreeSet<String>)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, type_) = l.split_once(' ').unwrap();
            (name.to_string(), (type_.to_string(), BTreeSet::new()))
        })
        .collect();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').unwrap().0;
        let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| metric.strip_suffix(s))
            .filter(|f| families.contains_key(*f))
            .unwrap_or(metric);
        let entry = families
            .get_mut(family)
            .unwrap_or_else(|| panic!("sample of no family: {line}"));
        for kv in labels.trim_end_matches('}').split(',') {
            if let Some((k, _)) = kv.split_once('=')
                && k != "le"
            {
                entry.1.insert(k.to_string());
            }
        }
    }
    families
}

e2e!(
    the_readme_table_is_what_metrics_serves_both_ways,
    test_server_only = "fault injection and a forced re-list make every metric family appear"
);
async fn the_readme_table_is_what_metrics_serves_both_ways(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1"), ("user", "app")])
        .await;
    env.deployment(NS, "web", secret_key_ref("db", "password"))
        .await;
    // Alerts on (their series exist once a sink is set), to a port nobody listens on.
    let hr = env
        .hashroll(&["--alert-webhook-url=http://127.0.0.1:9/hook"])
        .await;
    env.wait_recorded("deployments", NS, "web").await;

    // A roll whose first patch fails and whose Event cannot be published; a change of a key it does not
    // use; a watch that has to list again.
    let ctl = env
        .test_server()
        .expect("fault injection needs the test server")
        .control();
    let request = |verb: &str, resource: &str| RequestMatch {
        verb: Some(verb.into()),
        resource: Some(resource.into()),
        namespace: Some(NS.into()),
    };
    ctl.fail_next(1, request("patch", "deployments"), Fault::Status(500));
    ctl.fail_next(1, request("create", "events"), Fault::Status(500));
    env.secret(NS, "db", &[("password", "p2"), ("user", "app")])
        .await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.secret(NS, "db", &[("password", "p2"), ("user", "other")])
        .await;
    let mut gone = request("watch", "configmaps");
    gone.namespace = None;
    ctl.gone_next_watch(gone);
    ctl.close_watches();
    env.barrier(NS).await;
    hr.wait_metric(
        "hashroll_watch_restarts_total",
        &[("resource", "configmaps"), ("cause", "expired")],
        1.0,
    )
    .await;
    hr.wait_metric(
        "hashroll_event_errors_total",
        &[("reason", "Reloaded")],
        1.0,
    )
    .await;

    let text = hr.metrics().await;
    let table = readme_table();
    let served = served(&text);
    for (name, (type_, labels)) in &served {
        let row = table
            .get(name)
            .unwrap_or_else(|| panic!("{name} is served but not in README's table"));
        assert_eq!(&row.type_, type_, "{name}: type");
        assert_eq!(&row.labels, labels, "{name}: labels");
    }
    // The Vault rows are served only with `--vault-addr` (tests/vault.rs reads them).
    for name in table.keys().filter(|n| !n.starts_with("hashroll_vault_")) {
        assert!(
            served.contains_key(name),
            "{name} is in README's table but not served:\n{text}"
        );
    }
    // What the events above must have counted.
    for (metric, labels) in [
        ("hashroll_rolls_total", &[("result", "failure")][..]),
        ("hashroll_patch_errors_total", &[("code", "500")][..]),
        (
            "hashroll_skipped_changes_total",
            &[("reason", "key_not_used")][..],
        ),
    ] {
        let n = common::metric_value(&text, metric, labels);
        assert!(n >= Some(1.0), "{metric}{labels:?}: {n:?}");
    }
    assert_eq!(
        common::metric_value(
            &text,
            "hashroll_reaction_seconds_count",
            &[("kind", "Deployment")]
        ),
        Some(3.0),
        "two rolls (the web Deployment's and the barrier's), retried once: one reaction each... {text}"
    );
    assert!(!text.contains(NS), "no namespace without the flag");
}

e2e!(the_namespace_is_a_label_only_where_the_table_says_and_only_with_the_flag);
async fn the_namespace_is_a_label_only_where_the_table_says_and_only_with_the_flag(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1"), ("user", "app")])
        .await;
    env.deployment(NS, "web", secret_key_ref("db", "password"))
        .await;
    let hr = env.hashroll(&["--metrics-namespace-label"]).await;
    env.wait_recorded("deployments", NS, "web").await;
    env.secret(NS, "db", &[("password", "p2"), ("user", "app")])
        .await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.secret(NS, "db", &[("password", "p2"), ("user", "other")])
        .await;
    env.barrier(NS).await;
    let text = hr.metrics().await;
    let table = readme_table();
    for (name, (_, labels)) in served(&text) {
        let row = &table[&name];
        let mut want = row.labels.clone();
        if row.namespaced {
            want.insert("namespace".into());
        }
        assert_eq!(
            labels, want,
            "{name}: labels with --metrics-namespace-label"
        );
    }
    for (metric, labels) in [
        (
            "hashroll_rolls_total",
            &[("namespace", NS), ("result", "success")][..],
        ),
        ("hashroll_records_total", &[("namespace", NS)][..]),
        (
            "hashroll_skipped_changes_total",
            &[("namespace", NS), ("reason", "key_not_used")][..],
        ),
    ] {
        let n = common::metric_value(&text, metric, labels);
        assert!(n >= Some(1.0), "{metric}{labels:?}: {n:?}");
    }
}
