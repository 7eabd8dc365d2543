//! The Helm chart's RBAC is enough, and no more: render the chart with Helm's own engine, apply its
//! ServiceAccount and RBAC objects to the API server (the test server switched to RBAC mode, or the real
//! one), and run hashroll with the chart's ServiceAccount token (a real token from the TokenRequest API on
//! the real server), with the flags the chart passes. It must win the Lease, become ready, record, roll and
//! write its Event without one failed watch, patch or Event; and the server must refuse that token what
//! the chart does not grant: patching a Pod, writing the key Secret, and in per-namespace mode reading
//! Secrets of a namespace not listed.

mod common;

use std::process::{Command, Stdio};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::io::AsyncWriteExt;

use common::{Env, Server, e2e, secret_key_ref};

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
async fn rolls_with_chart_permissions(on: Server, values_json: &str, expect_leader: bool) {
    let Some(manifests) = render(values_json) else {
        return;
    };
    let env = Env::start(on).await;
    env.namespace("app").await;
    Api::<Namespace>::all(env.client.clone())
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    // A namespace the per-namespace chart does not list, with a Secret.
    env.namespace("other").await;
    env.secret("other", "elsewhere", &[("password", "x")]).await;
    apply_rbac(&env, &manifests).await;
    env.enforce_rbac();
    let kubeconfig = env
        .kubeconfig_for_service_account("hashroll", "hashroll")
        .await;
    let per_namespace = values_json.contains("watchNamespaces");
    // Each binding the chart made: a real authorizer learns of them a moment after they are stored.
    env.wait_allowed(&kubeconfig, "list", "", "secrets", Some("app"))
        .await;
    env.wait_allowed(&kubeconfig, "create", "", "secrets", Some("hashroll"))
        .await;
    if expect_leader {
        env.wait_allowed(
            &kubeconfig,
            "create",
            "coordination.k8s.io",
            "leases",
            Some("hashroll"),
        )
        .await;
    }
    if values_json.contains("namespaceSelector") {
        env.wait_allowed(&kubeconfig, "list", "", "namespaces", None)
            .await;
    }

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
    refused_what_the_chart_does_not_grant(&env, &kubeconfig, per_namespace).await;
}

/// The server refuses (403) the chart's ServiceAccount what the chart does not grant: patching a Pod,
/// writing the installation key (update, patch, delete: hashroll only creates and reads it), and, when
/// the chart lists namespaces, reading Secrets in another.
async fn refused_what_the_chart_does_not_grant(
    env: &Env,
    kubeconfig: &std::path::Path,
    per_namespace: bool,
) {
    let sa = common::client_from(kubeconfig).await;
    let forbidden = |what: &str, result: Result<(), kube::Error>| match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what} with the chart's ServiceAccount: expected 403, got {other:?}"),
    };
    // A Pod of the Deployment where the server runs them (the real one), else any name: the authorizer
    // answers before the object is looked up.
    let pod = Api::<Pod>::namespaced(env.client.clone(), "app")
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .first()
        .and_then(|p| p.metadata.name.clone())
        .unwrap_or_else(|| "web-0".into());
    let label = serde_json::json!({"metadata": {"labels": {"touched": "yes"}}});
    forbidden(
        "patch a Pod",
        Api::<Pod>::namespaced(sa.clone(), "app")
            .patch(&pod, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .map(drop),
    );
    let key = Api::<Secret>::namespaced(env.client.clone(), "hashroll")
        .get("hashroll-key")
        .await
        .expect("hashroll created its key");
    let keys = Api::<Secret>::namespaced(sa.clone(), "hashroll");
    forbidden(
        "update the key Secret",
        keys.replace("hashroll-key", &PostParams::default(), &key)
            .await
            .map(drop),
    );
    forbidden(
        "patch the key Secret",
        keys.patch(
            "hashroll-key",
            &PatchParams::default(),
            &Patch::Merge(&label),
        )
        .await
        .map(drop),
    );
    forbidden(
        "delete the key Secret",
        keys.delete("hashroll-key", &Default::default())
            .await
            .map(drop),
    );
    if per_namespace {
        let elsewhere = Api::<Secret>::namespaced(sa, "other");
        forbidden(
            "list Secrets in a namespace not listed",
            elsewhere.list(&Default::default()).await.map(drop),
        );
        forbidden(
            "get a Secret in a namespace not listed",
            elsewhere.get("elsewhere").await.map(drop),
        );
    }
}

e2e!(cluster_wide_chart_rbac_is_enough);
async fn cluster_wide_chart_rbac_is_enough(on: Server) {
    rolls_with_chart_permissions(on, "{}", true).await;
}

e2e!(per_namespace_chart_rbac_is_enough);
async fn per_namespace_chart_rbac_is_enough(on: Server) {
    rolls_with_chart_permissions(on, r#"{"watchNamespaces": ["app"]}"#, true).await;
}

e2e!(cluster_wide_chart_rbac_with_a_namespace_selector_is_enough);
async fn cluster_wide_chart_rbac_with_a_namespace_selector_is_enough(on: Server) {
    rolls_with_chart_permissions(on, r#"{"namespaceSelector": "team=a"}"#, true).await;
}

e2e!(per_namespace_chart_rbac_with_a_namespace_selector_is_enough);
async fn per_namespace_chart_rbac_with_a_namespace_selector_is_enough(on: Server) {
    rolls_with_chart_permissions(
        on,
        r#"{"watchNamespaces": ["app"], "namespaceSelector": "team=a"}"#,
        true,
    )
    .await;
}

e2e!(chart_rbac_without_leader_election_is_enough);
async fn chart_rbac_without_leader_election_is_enough(on: Server) {
    rolls_with_chart_permissions(on, r#"{"leaderElection": {"enabled": false}}"#, false).await;
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
