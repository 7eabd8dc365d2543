//! The Helm chart's RBAC is enough: render the chart with Helm's own engine, apply its ServiceAccount and
//! RBAC objects to the test API server, switch the server to RBAC mode, and run hashroll with the chart's
//! ServiceAccount token, with the leader election flags the chart passes. It must win the Lease, record,
//! roll and write its Event without one `403`.

mod common;

use std::process::{Command, Stdio};

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

async fn rolls_with_chart_permissions(
    values_json: &str,
    extra_flags: &[&str],
    expect_leader: bool,
) {
    let Some(manifests) = render(values_json) else {
        return;
    };
    let env = Env::start().await;
    env.namespace("app").await;
    apply_rbac(&env, &manifests).await;
    env.server.control().set_rbac(true);
    let kubeconfig = env.dir.path().join("sa.kubeconfig");
    env.server
        .write_kubeconfig_for_token(&kubeconfig, "system:serviceaccount:hashroll:hashroll")
        .unwrap();

    env.secret("app", "db", &[("password", "one")]).await;
    env.deployment("app", "web", secret_key_ref("db", "password"))
        .await;
    // The chart's own leader election flags, so its Lease permissions are exercised as deployed.
    let leader_flags: Vec<&str> = manifests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|a| a.starts_with("--leader-elect"))
        .collect();
    // A change in how the chart writes its args must not silently drop leader election from this test.
    assert_eq!(!leader_flags.is_empty(), expect_leader, "{manifests}");
    let flags = [extra_flags, leader_flags.as_slice()].concat();
    let hashroll = env.hashroll_with_kubeconfig(&kubeconfig, &flags).await;
    if !leader_flags.is_empty() {
        assert!(
            hashroll.logs().contains("became leader"),
            "{}",
            hashroll.logs()
        );
    }
    env.wait_recorded("deployments", "app", "web").await;
    env.secret("app", "db", &[("password", "two")]).await;
    env.wait_rolls("deployments", "app", "web", 1).await;

    env.wait_event("app", "web", "Reloaded").await;
    let logs = hashroll.logs();
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "hashroll hit a permission it lacks:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_chart_rbac_is_enough() {
    rolls_with_chart_permissions("{}", &[], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_namespace_chart_rbac_is_enough() {
    rolls_with_chart_permissions(
        r#"{"watchNamespaces": ["app"]}"#,
        &["--namespaces", "app"],
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_rbac_without_leader_election_is_enough() {
    rolls_with_chart_permissions(r#"{"leaderElection": {"enabled": false}}"#, &[], false).await;
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
