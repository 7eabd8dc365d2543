//! End to end: which namespaces and sources hashroll acts on (`--namespaces`, `--ignore-namespaces`,
//! `--namespace-selector`, `--resource-label-selector`), `--dry-run`, and a namespace it may not read.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Env, Server, Setup, Until, e2e, env_from_secret, pod};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
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

e2e!(namespaces_flag_watches_only_those);
async fn namespaces_flag_watches_only_those(on: Server) {
    let env = Env::start(on).await;
    web_in(&env, &["a", "b"]).await;
    let _hr = env.hashroll(&["--namespaces", "a"]).await;
    env.wait_recorded("deployments", "a", "web").await;
    change_db(&env, &["a", "b"]).await;
    env.wait_rolls("deployments", "a", "web", 1).await;
    env.barrier("a").await;
    env.assert_untouched("deployments", "b", "web").await;
}

e2e!(ignore_namespaces_flag_leaves_them_alone);
async fn ignore_namespaces_flag_leaves_them_alone(on: Server) {
    let env = Env::start(on).await;
    web_in(&env, &["a", "b"]).await;
    let _hr = env.hashroll(&["--ignore-namespaces", "b"]).await;
    env.wait_recorded("deployments", "a", "web").await;
    change_db(&env, &["a", "b"]).await;
    env.wait_rolls("deployments", "a", "web", 1).await;
    // The watches are cluster-wide: a barrier in `a` covers `b` too.
    env.barrier("a").await;
    env.assert_untouched("deployments", "b", "web").await;
}

e2e!(namespace_selector_follows_namespace_labels);
async fn namespace_selector_follows_namespace_labels(on: Server) {
    let env = Env::start(on).await;
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
    env.assert_rolls("deployments", "later", "web", 0).await;
    env.secret("later", "db", &[("password", "p3")]).await;
    env.wait_rolls("deployments", "later", "web", 1).await;
}

e2e!(resource_label_selector_hides_unlabelled_sources);
async fn resource_label_selector_hides_unlabelled_sources(on: Server) {
    let env = Env::start(on).await;
    let ns = "labels";
    env.namespace(ns).await;
    env.secret_full(ns, "tracked", &[("k", "1")], &[], &[("tracked", "yes")])
        .await;
    env.secret(ns, "plain", &[("k", "1")]).await;
    env.deployment(ns, "uses-tracked", env_from_secret("tracked"))
        .await;
    env.deployment(ns, "uses-plain", env_from_secret("plain"))
        .await;
    let _hr = env
        .hashroll(&["--resource-label-selector", "tracked=yes"])
        .await;
    env.wait_recorded("deployments", ns, "uses-tracked").await;

    env.secret(ns, "plain", &[("k", "2")]).await;
    env.secret_full(ns, "tracked", &[("k", "2")], &[], &[("tracked", "yes")])
        .await;
    env.wait_rolls("deployments", ns, "uses-tracked", 1).await;
    env.barrier(ns).await;
    // hashroll cannot see the unlabelled Secret: its change rolls nothing. (Not whether uses-plain is
    // recorded: an unseen Secret is not a missing one, see the tests below.)
    env.assert_rolls("deployments", ns, "uses-plain", 0).await;
}

/// Secret `hidden` exists but `flags` keep it from hashroll; Deployment `web` uses it and ConfigMap `cfg`.
/// hashroll cannot see the Secret, so it cannot tell it is missing either: `web` is recorded at first sight
/// and rolls once when the ConfigMap changes (and never for the Secret, whose changes it cannot see).
async fn a_secret_hashroll_cannot_see_is_not_missing(
    env: &Env,
    ns: &str,
    flags: &[&str],
    watches_secrets: bool,
) {
    let labels = [("tracked", "yes")];
    env.configmap_full(ns, "cfg", &[("k", "1")], &[], &labels)
        .await;
    let spec = pod(json!({"envFrom": [
        {"secretRef": {"name": "hidden"}}, {"configMapRef": {"name": "cfg"}}]}));
    env.deployment(ns, "web", spec).await;
    let hr = env.hashroll(flags).await;
    env.wait_recorded("deployments", ns, "web").await;
    assert_eq!(
        hr.metric("hashroll_held_workloads", &[]).await,
        Some(0.0),
        "nothing is held"
    );

    env.configmap_full(ns, "cfg", &[("k", "2")], &[], &labels)
        .await;
    env.wait_rolls("deployments", ns, "web", 1).await;
    let barrier = async {
        if watches_secrets {
            env.barrier(ns).await
        } else {
            env.barrier_configmaps(ns).await
        }
    };
    barrier.await;
    env.assert_rolls("deployments", ns, "web", 1).await;
    env.assert_rolled_annotations("deployments", ns, "web")
        .await;
    let events = env.wait_event(ns, "web", "Reloaded").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].2.contains("ConfigMap cfg"), "{events:?}");
}

e2e!(a_secret_of_a_kind_not_watched_is_not_missing);
async fn a_secret_of_a_kind_not_watched_is_not_missing(on: Server) {
    let env = Env::start(on).await;
    let ns = "cm-only";
    env.namespace(ns).await;
    env.secret(ns, "hidden", &[("password", "p1")]).await;
    a_secret_hashroll_cannot_see_is_not_missing(&env, ns, &["--watch", "configmaps"], false).await;
}

e2e!(a_secret_outside_the_resource_label_selector_is_not_missing);
async fn a_secret_outside_the_resource_label_selector_is_not_missing(on: Server) {
    let env = Env::start(on).await;
    let ns = "unlabelled";
    env.namespace(ns).await;
    env.secret(ns, "hidden", &[("password", "p1")]).await;
    a_secret_hashroll_cannot_see_is_not_missing(
        &env,
        ns,
        &["--resource-label-selector", "tracked=yes"],
        true,
    )
    .await;
}

e2e!(a_secret_of_an_excluded_type_is_not_missing);
async fn a_secret_of_an_excluded_type_is_not_missing(on: Server) {
    let env = Env::start(on).await;
    let ns = "excluded";
    env.namespace(ns).await;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "example.com/x",
        "metadata": {"name": "hidden", "namespace": ns},
        "stringData": {"password": "p1"},
    });
    kube::Api::<Secret>::namespaced(env.client.clone(), ns)
        .patch(
            "hidden",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("apply the typed Secret");
    a_secret_hashroll_cannot_see_is_not_missing(
        &env,
        ns,
        &["--exclude-secret-types", "example.com/x"],
        true,
    )
    .await;
}

e2e!(dry_run_reports_and_patches_nothing);
async fn dry_run_reports_and_patches_nothing(on: Server) {
    let env = Env::start(on).await;
    web_in(&env, &["dry"]).await;
    let hr = env.hashroll(&["--dry-run"]).await;
    // Nothing is recorded in a dry run; the first sight is remembered in memory only, and only the log
    // shows it happened (it must, before the change, or the change would be taken as the first sight).
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
    // README: a dry run logs what would roll; the log line is that behaviour.
    let lines = hr.log_lines_with(&["rolling workload", "dry/web", r#""dry_run":true"#]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    env.assert_untouched("deployments", "dry", "web").await;
    assert!(env.wait_event("dry", "web", "WouldReload").await.len() == 1);
    // No patch at all, not even one that changes nothing: the test server counts the requests; a real
    // server keeps the field manager of every write that changed something.
    match env.test_server() {
        Some(server) => assert_eq!(server.control().request_count("patch", "deployments"), 0),
        None => {
            let web = env.get("deployments", "dry", "web").await;
            let managers: Vec<_> = web
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .filter_map(|m| m.manager.clone())
                .collect();
            assert!(!managers.iter().any(|m| m == "hashroll"), "{managers:?}");
        }
    }
    assert!(
        env.events_for("dry", "web")
            .await
            .iter()
            .all(|(_, r, _)| r != "Reloaded")
    );
}

/// Creates, as admin, a Role with `rules` in `ns` and binds it to hashroll's ServiceAccount.
async fn grant(env: &Env, ns: &str, rules: serde_json::Value) {
    let create = |kind: &str, plural: &str, doc: serde_json::Value| {
        let ar = kube::core::ApiResource {
            group: "rbac.authorization.k8s.io".into(),
            version: "v1".into(),
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: kube::Api<kube::core::DynamicObject> =
            kube::Api::namespaced_with(env.client.clone(), ns, &ar);
        async move {
            api.create(
                &PostParams::default(),
                &serde_json::from_value(doc).unwrap(),
            )
            .await
            .unwrap();
        }
    };
    create(
        "Role",
        "roles",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "hashroll", "namespace": ns}, "rules": rules}),
    )
    .await;
    create(
        "RoleBinding",
        "rolebindings",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "hashroll", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hashroll"},
            "subjects": [{"kind": "ServiceAccount", "name": "hashroll", "namespace": "hashroll"}]}),
    )
    .await;
}

/// hashroll's ServiceAccount may act in `ns` only (plus its key in `hashroll`); returns its kubeconfig.
async fn namespaced_rbac(env: &Env, ns: &str) -> PathBuf {
    grant(
        env,
        ns,
        json!([
            {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"],
             "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
        ]),
    )
    .await;
    grant(
        env,
        "hashroll",
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]}]),
    )
    .await;
    let kubeconfig = env
        .kubeconfig_for_service_account("hashroll", "hashroll")
        .await;
    env.wait_allowed(&kubeconfig, "watch", "", "secrets", Some(ns))
        .await;
    env.wait_allowed(&kubeconfig, "create", "", "secrets", Some("hashroll"))
        .await;
    kubeconfig
}

/// The resources hashroll watches in each namespace (the test server serves no Rollouts).
const NAMESPACED: [&str; 6] = [
    "secrets",
    "configmaps",
    "deployments",
    "statefulsets",
    "daemonsets",
    "cronjobs",
];

e2e!(a_forbidden_namespace_does_not_stop_the_others);
async fn a_forbidden_namespace_does_not_stop_the_others(on: Server) {
    let env = Env::start_with(
        on,
        Setup {
            rollouts: false,
            rbac: true,
        },
    )
    .await;
    web_in(&env, &["a", "b"]).await;
    let kubeconfig = namespaced_rbac(&env, "a").await;
    // Not waiting for readiness: whether a watch that cannot list keeps hashroll unready is another
    // test's subject (readyz_answers_503_naming_a_watch_that_fails_before_its_first_list).
    let hr = env
        .hashroll_until(&kubeconfig, &["--namespaces", "a,b"], Until::Listening)
        .await;
    env.wait_recorded("deployments", "a", "web").await;
    change_db(&env, &["a", "b"]).await;
    env.wait_rolls("deployments", "a", "web", 1).await;
    env.wait_event("a", "web", "Reloaded").await;
    env.barrier("a").await;
    env.assert_untouched("deployments", "b", "web").await;
    // b's watches are forbidden and counted as failing, while a's work (a's rolled above).
    for resource in NAMESPACED {
        let failed = hr
            .metric("hashroll_watch_errors_total", &[("resource", resource)])
            .await;
        assert!(
            failed.is_some_and(|n| n >= 1.0),
            "b's {resource} watch failure is counted: {failed:?}"
        );
    }
    let (status, _) = hr.stop().await;
    assert!(status.success(), "hashroll kept running and stops cleanly");
}

e2e!(readyz_answers_503_naming_a_watch_that_fails_before_its_first_list);
async fn readyz_answers_503_naming_a_watch_that_fails_before_its_first_list(on: Server) {
    let env = Env::start_with(
        on,
        Setup {
            rollouts: false,
            rbac: true,
        },
    )
    .await;
    web_in(&env, &["a"]).await;
    // One object of every kind hashroll watches in `a`, so that its gauges show what it has listed.
    env.configmap("a", "cfg", &[("k", "1")]).await;
    let opt_in = [("hashroll.dev/reload", "true")];
    for kind in ["statefulsets", "daemonsets", "cronjobs"] {
        env.workload(kind, "a", "web", &opt_in, env_from_secret("db"))
            .await;
    }
    kube::Api::<Namespace>::all(env.client.clone())
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    // Roles in `a` only: the cluster-wide Namespace list that --namespace-selector needs is forbidden.
    let kubeconfig = namespaced_rbac(&env, "a").await;
    let flags = ["--namespaces", "a", "--namespace-selector", "team=a"];
    let hr = env
        .hashroll_until(&kubeconfig, &flags, Until::Listening)
        .await;

    // Every other watch has listed: hashroll holds every Secret, ConfigMap and workload in `a` (as the
    // admin lists them: a real server adds the ConfigMap kube-root-ca.crt to every namespace); and the
    // Namespace watch has failed.
    let mut sources = 0;
    for resource in ["secrets", "configmaps"] {
        sources += env.count(resource, "a").await;
    }
    let mut workloads = 0;
    for resource in ["deployments", "statefulsets", "daemonsets", "cronjobs"] {
        workloads += env.count(resource, "a").await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let held = (
            hr.metric("hashroll_sources", &[]).await,
            hr.metric("hashroll_workloads", &[]).await,
        );
        let listed = held == (Some(sources as f64), Some(workloads as f64));
        let failed = hr
            .metric("hashroll_watch_errors_total", &[("resource", "namespaces")])
            .await;
        if listed && failed.is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hashroll never got as far as watching (sources and workloads held: {held:?} of \
             {sources} and {workloads}; namespace watch errors: {failed:?})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // While the Namespace watch keeps failing, hashroll is not ready, and says which watch holds it back.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let (status, body) = hr.readyz().await;
        assert!(
            status == 503 && body.contains("namespaces"),
            "/readyz answered {status} {body:?} while the namespaces watch cannot list (403)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for kind in ["deployments", "statefulsets", "daemonsets", "cronjobs"] {
        env.assert_untouched(kind, "a", "web").await;
    }
}
