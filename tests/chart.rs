//! The Helm chart's RBAC is enough: render the chart with Helm's own engine, apply its ServiceAccount and
//! RBAC objects to the test API server, switch the server to RBAC mode, and run hashroll with the chart's
//! ServiceAccount token, with the flags the chart passes. It must win the Lease, become ready, record,
//! roll and write its Event without one failed watch, patch or Event.

mod common;

use std::process::{Command, Stdio};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use tokio::io::AsyncWriteExt;

use common::{Env, secret_key_ref};

/// Rendered manifests; None (test skipped) only outside CI when Helm's engine is not installed.
fn render(values_json: &str) -> Option<String> {
    let out = Command::new("python3")
        .args([
            "charts/render.py",
            "--namespace",
            "hashroll",
            "--set-json",
            values_json,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("No module named 'helm_python'") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install helm-python-sdk (pip install helm-python-sdk)"
        );
        eprintln!("SKIPPED: pip install helm-python-sdk to run the chart tests");
        return None;
    }
    assert!(out.status.success(), "chart renders: {stderr}");
    Some(String::from_utf8(out.stdout).unwrap())
}

/// Applies the documents that grant permissions (everything but the Deployment and Service) as admin.
async fn apply_rbac(env: &Env, manifests: &str) {
    let docs: Vec<&str> = manifests
        .split("\n---")
        .filter(|d| {
            ["kind: ServiceAccount", "kind: ClusterRole", "kind: Role"]
                .iter()
                .any(|k| d.contains(k))
        })
        .collect();
    assert!(
        docs.len() >= 4,
        "chart renders a ServiceAccount and RBAC:\n{manifests}"
    );
    // Async: the test API server runs on this runtime and must answer kubectl meanwhile.
    let mut child = tokio::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            &env.kubeconfig.display().to_string(),
            "apply",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is on PATH (CI installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(docs.join("\n---\n").as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The args the chart gives hashroll, but those the harness sets itself (admin address, logging, and a
/// debounce of 0 so the test need not wait out the chart's).
fn chart_args(manifests: &str) -> Vec<&str> {
    const HARNESS: [&str; 4] = ["--admin-addr", "--log-format", "--log-level", "--debounce"];
    manifests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|a| a.starts_with("--") && !HARNESS.iter().any(|h| a.starts_with(h)))
        .collect()
}

/// Runs hashroll with the chart's flags and nothing but the chart's permissions; the namespace `app`
/// carries the label `team=a` (for a chart rendered with `namespaceSelector: team=a`).
async fn rolls_with_chart_permissions(values_json: &str, expect_leader: bool) {
    let Some(manifests) = render(values_json) else {
        return;
    };
    let env = Env::start().await;
    env.namespace("app").await;
    Api::<Namespace>::all(env.client.clone())
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    apply_rbac(&env, &manifests).await;
    env.server.control().set_rbac(true);
    let kubeconfig = env.dir.path().join("sa.kubeconfig");
    env.server
        .write_kubeconfig_for_token(&kubeconfig, "system:serviceaccount:hashroll:hashroll")
        .unwrap();

    env.secret("app", "db", &[("password", "one")]).await;
    env.deployment("app", "web", secret_key_ref("db", "password"))
        .await;
    // The chart's own flags (leader election, scope), so its permissions are exercised as deployed.
    let flags = chart_args(&manifests);
    // A change in how the chart writes its args must not silently drop leader election from this test.
    let leader = flags.iter().any(|a| a.starts_with("--leader-elect"));
    assert_eq!(leader, expect_leader, "{manifests}");
    // Ready: every watch has listed and, with leader election, it leads (a standby answers `standby`).
    let hashroll = env.hashroll_with_kubeconfig(&kubeconfig, &flags).await;
    if leader {
        assert_eq!(hashroll.metric("hashroll_leader", &[]).await, Some(1.0));
        let lease = Api::<Lease>::namespaced(env.client.clone(), "hashroll")
            .get("hashroll")
            .await
            .expect("the chart's Lease exists");
        assert!(
            lease.spec.and_then(|s| s.holder_identity).is_some(),
            "the Lease has a holder"
        );
    }
    env.wait_recorded("deployments", "app", "web").await;
    env.secret("app", "db", &[("password", "two")]).await;
    env.wait_rolls("deployments", "app", "web", 1).await;

    env.wait_event("app", "web", "Reloaded").await;
    // A permission it lacks shows as a failed watch, patch or Event (the key and the Lease: not ready).
    for (metric, labels) in [
        ("hashroll_watch_errors_total", &[][..]),
        ("hashroll_patch_errors_total", &[][..]),
        ("hashroll_event_errors_total", &[][..]),
    ] {
        assert_eq!(
            hashroll.metric(metric, labels).await,
            None,
            "hashroll hit a permission it lacks:\n{}",
            hashroll.metrics().await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_chart_rbac_is_enough() {
    rolls_with_chart_permissions("{}", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_namespace_chart_rbac_is_enough() {
    rolls_with_chart_permissions(r#"{"watchNamespaces": ["app"]}"#, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_chart_rbac_with_a_namespace_selector_is_enough() {
    rolls_with_chart_permissions(r#"{"namespaceSelector": "team=a"}"#, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_namespace_chart_rbac_with_a_namespace_selector_is_enough() {
    rolls_with_chart_permissions(
        r#"{"watchNamespaces": ["app"], "namespaceSelector": "team=a"}"#,
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_rbac_without_leader_election_is_enough() {
    rolls_with_chart_permissions(r#"{"leaderElection": {"enabled": false}}"#, false).await;
}

#[test]
fn leader_election_sets_two_replicas_and_a_lease_role() {
    let Some(on) = render("{}") else {
        return;
    };
    assert!(on.contains("replicas: 2"), "{on}");
    assert!(on.contains("- --leader-elect\n"), "{on}");
    assert!(on.contains("resources: [leases]"), "{on}");
    let Some(off) = render(r#"{"leaderElection": {"enabled": false}}"#) else {
        return;
    };
    assert!(off.contains("replicas: 1"), "{off}");
    assert!(
        !off.contains("--leader-elect") && !off.contains("leases"),
        "{off}"
    );
    let Some(three) = render(r#"{"replicaCount": 3}"#) else {
        return;
    };
    assert!(three.contains("replicas: 3"), "{three}");
}

#[test]
fn a_namespace_selector_in_per_namespace_mode_grants_reading_namespaces_cluster_wide() {
    let Some(selector) = render(r#"{"watchNamespaces": ["app"], "namespaceSelector": "team=a"}"#)
    else {
        return;
    };
    let cluster_role = selector
        .split("\n---")
        .find(|d| d.contains("\nkind: ClusterRole\n"))
        .unwrap_or_else(|| panic!("a ClusterRole:\n{selector}"));
    assert!(
        cluster_role.contains("resources: [namespaces]")
            && cluster_role.contains("verbs: [list, watch]"),
        "{cluster_role}"
    );
    assert!(
        selector.contains("\nkind: ClusterRoleBinding\n"),
        "{selector}"
    );
    let Some(plain) = render(r#"{"watchNamespaces": ["app"]}"#) else {
        return;
    };
    assert!(
        !plain.contains("kind: ClusterRole"),
        "per-namespace mode without a selector needs nothing cluster-wide:\n{plain}"
    );
}
