//! End to end: which namespaces and sources hashroll acts on (`--namespaces`, `--ignore-namespaces`,
//! `--namespace-selector`, `--resource-label-selector`), `--dry-run`, and a namespace it may not read.

mod common;

use common::{Env, env_from_secret};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams, PostParams};
use kube_testserver::ServerOptions;
use serde_json::json;

/// Creates Secret `db` and an opted-in Deployment `web` using it in each namespace.
async fn web_in(env: &Env, namespaces: &[&str]) {
    for ns in namespaces {
        env.namespace(ns).await;
        env.secret(ns, "db", &[("password", "p1")]).await;
        env.deployment(ns, "web", env_from_secret("db")).await;
    }
}

async fn change_db(env: &Env, namespaces: &[&str]) {
    for ns in namespaces {
        env.secret(ns, "db", &[("password", "p2")]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_flag_watches_only_those() {
    let env = Env::start().await;
    web_in(&env, &["a", "b"]).await;
    let _hr = env.hashroll(&["--namespaces", "a"]).await;
    env.wait_recorded("deployments", "a", "web").await;
    change_db(&env, &["a", "b"]).await;
    env.wait_rolls("deployments", "a", "web", 1).await;
    env.barrier("a").await;
    env.assert_untouched("deployments", "b", "web").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_namespaces_flag_leaves_them_alone() {
    let env = Env::start().await;
    web_in(&env, &["a", "b"]).await;
    let _hr = env.hashroll(&["--ignore-namespaces", "b"]).await;
    env.wait_recorded("deployments", "a", "web").await;
    change_db(&env, &["a", "b"]).await;
    env.wait_rolls("deployments", "a", "web", 1).await;
    // The watches are cluster-wide: a barrier in `a` covers `b` too.
    env.barrier("a").await;
    env.assert_untouched("deployments", "b", "web").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_selector_follows_namespace_labels() {
    let env = Env::start().await;
    web_in(&env, &["a", "later"]).await;
    let namespaces: kube::Api<Namespace> = kube::Api::all(env.client.clone());
    let label = |v: &str| json!({"metadata": {"labels": {"hashroll": v}}});
    namespaces
        .patch("a", &PatchParams::default(), &Patch::Merge(label("on")))
        .await
        .unwrap();
    let _hr = env.hashroll(&["--namespace-selector", "hashroll=on"]).await;
    env.wait_recorded("deployments", "a", "web").await;
    change_db(&env, &["a", "later"]).await;
    env.wait_rolls("deployments", "a", "web", 1).await;
    env.barrier("a").await;
    env.assert_untouched("deployments", "later", "web").await;

    // Labelled later: its workloads are handled from then on (first sight records, no roll).
    namespaces
        .patch("later", &PatchParams::default(), &Patch::Merge(label("on")))
        .await
        .unwrap();
    env.wait_recorded("deployments", "later", "web").await;
    env.assert_rolls("deployments", "later", "web", 0);
    env.secret("later", "db", &[("password", "p3")]).await;
    env.wait_rolls("deployments", "later", "web", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_label_selector_hides_unlabelled_sources() {
    let env = Env::start().await;
    let ns = "labels";
    env.namespace(ns).await;
    env.secret_full(ns, "tracked", &[("k", "1")], &[], &[("tracked", "yes")])
        .await;
    env.secret(ns, "plain", &[("k", "1")]).await;
    env.deployment(ns, "uses-tracked", env_from_secret("tracked"))
        .await;
    env.deployment(ns, "uses-plain", env_from_secret("plain"))
        .await;
    let hr = env
        .hashroll(&["--resource-label-selector", "tracked=yes"])
        .await;
    env.wait_recorded("deployments", ns, "uses-tracked").await;

    env.secret(ns, "plain", &[("k", "2")]).await;
    env.secret_full(ns, "tracked", &[("k", "2")], &[], &[("tracked", "yes")])
        .await;
    env.wait_rolls("deployments", ns, "uses-tracked", 1).await;
    env.barrier(ns).await;
    // hashroll cannot see the unlabelled Secret: it waits for it rather than rolling.
    env.assert_untouched("deployments", ns, "uses-plain").await;
    assert_eq!(
        hr.log_lines_with(&["required source is missing", "labels/uses-plain"])
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_and_patches_nothing() {
    let env = Env::start().await;
    web_in(&env, &["dry"]).await;
    let hr = env.hashroll(&["--dry-run"]).await;
    // Nothing is recorded in a dry run; the first sight is remembered in memory only.
    hr.wait_for_log(
        "recording state without rolling",
        std::time::Duration::from_secs(15),
    )
    .await;
    change_db(&env, &["dry"]).await;
    let events = env.wait_event("dry", "web", "WouldReload").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "Normal");
    assert!(events[0].2.contains("Secret db"), "{events:?}");
    let lines = hr.log_lines_with(&["rolling workload", "dry/web", r#""dry_run":true"#]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    env.assert_untouched("deployments", "dry", "web").await;
    assert!(env.wait_event("dry", "web", "WouldReload").await.len() == 1);
    assert_eq!(
        env.server.control().request_count("patch", "deployments"),
        0
    );
    assert!(
        env.events_for("dry", "web")
            .await
            .iter()
            .all(|(_, r, _)| r != "Reloaded")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_namespace_does_not_stop_the_others() {
    let env = Env::start_with(ServerOptions {
        rbac: true,
        ..ServerOptions::default()
    })
    .await;
    web_in(&env, &["a", "b"]).await;
    let rbac = |doc: serde_json::Value| async {
        let kind = doc["kind"].as_str().unwrap().to_string();
        let ns = doc["metadata"]["namespace"].as_str().unwrap().to_string();
        let plural = if kind == "Role" {
            "roles"
        } else {
            "rolebindings"
        };
        let ar = kube::core::ApiResource {
            group: "rbac.authorization.k8s.io".into(),
            version: "v1".into(),
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind,
            plural: plural.into(),
        };
        let api: kube::Api<kube::core::DynamicObject> =
            kube::Api::namespaced_with(env.client.clone(), &ns, &ar);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(doc).unwrap(),
        )
        .await
        .unwrap();
    };
    let subject = json!([{"kind": "ServiceAccount", "name": "hashroll", "namespace": "hashroll"}]);
    let role_and_binding = |ns: &str, rules: serde_json::Value| {
        (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "hashroll", "namespace": ns}, "rules": rules}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "hashroll", "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hashroll"},
                "subjects": subject.clone()}),
        )
    };
    let (role, binding) = role_and_binding(
        "a",
        json!([
            {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"],
             "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
        ]),
    );
    rbac(role).await;
    rbac(binding).await;
    let (role, binding) = role_and_binding(
        "hashroll",
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]}]),
    );
    rbac(role).await;
    rbac(binding).await;

    let kubeconfig = env.dir.path().join("kubeconfig-sa");
    env.server
        .write_kubeconfig_for_token(&kubeconfig, "system:serviceaccount:hashroll:hashroll")
        .unwrap();
    let hr = env
        .hashroll_with_kubeconfig(&kubeconfig, &["--namespaces", "a,b"])
        .await;
    env.wait_recorded("deployments", "a", "web").await;
    change_db(&env, &["a", "b"]).await;
    env.wait_rolls("deployments", "a", "web", 1).await;
    env.wait_event("a", "web", "Reloaded").await;
    env.barrier("a").await;
    env.assert_untouched("deployments", "b", "web").await;
    let forbidden = hr.log_lines_with(&["watch failed", r#""namespace":"b""#]);
    assert!(!forbidden.is_empty(), "b's watch failure is logged");
    assert!(
        forbidden
            .iter()
            .any(|l| l.contains("403") || l.contains("forbidden")),
        "{forbidden:?}"
    );
    let (status, _) = hr.stop().await;
    assert!(status.success(), "hashroll kept running and stops cleanly");
}
