//! End to end: what rolls and what does not across hashroll's and the sources' lifecycles (first sight,
//! restarts, deletions, optional and required sources, bursts, fan-out, failures, shutdown), and each
//! workload kind's own way of rolling.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Env, Server, Setup, e2e, env_from_secret, optional_env_from_secret, pod};
use kube_testserver::{Fault, RequestMatch};
use serde_json::json;

const NS: &str = "life";

e2e!(first_sight_records_on_metadata_and_rolls_nothing);
async fn first_sight_records_on_metadata_and_rolls_nothing(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.deployment(NS, "web", env_from_secret("db")).await;
    let _hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;
    env.barrier(NS).await;

    env.assert_rolls("deployments", NS, "web", 0).await;
    let meta = env.annotations("deployments", NS, "web").await;
    assert!(meta["hashroll.dev/hash"].starts_with("v1."), "{meta:?}");
    let sources: BTreeMap<String, String> =
        serde_json::from_str(&meta["hashroll.dev/sources"]).expect("sources is a JSON map");
    assert_eq!(sources.keys().collect::<Vec<_>>(), ["secret/db"]);
    let digest = &sources["secret/db"];
    assert!(
        digest.len() == 12 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "per-source digest is 12 hex digits: {digest:?}"
    );
    let template = env.get("deployments", NS, "web").await.data["spec"]["template"].clone();
    assert!(
        template["metadata"]["annotations"]
            .get("hashroll.dev/hash")
            .is_none(),
        "first sight must not touch the pod template: {template}"
    );
    assert!(env.events_for(NS, "web").await.is_empty());
}

e2e!(restarts_roll_nothing_unless_something_changed_while_down);
async fn restarts_roll_nothing_unless_something_changed_while_down(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.deployment(NS, "web", env_from_secret("db")).await;
    let hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;
    env.barrier(NS).await;
    let (status, _) = hr.stop().await;
    assert!(status.success());

    // Restart with no change.
    let hr = env.hashroll(&[]).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 0).await;
    assert!(hr.stop().await.0.success());

    // Stop, change, start: one roll.
    env.secret(NS, "db", &[("password", "p2")]).await;
    let _hr = env.hashroll(&[]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
    env.assert_rolled_annotations("deployments", NS, "web")
        .await;
    let events = env.wait_event(NS, "web", "Reloaded").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].2.contains("Secret db"),
        "names the source: {events:?}"
    );
}

e2e!(deleting_and_recreating_a_secret_rolls_only_for_different_content);
async fn deleting_and_recreating_a_secret_rolls_only_for_different_content(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.deployment(NS, "web", env_from_secret("db")).await;
    let hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;
    let recorded = env.annotations("deployments", NS, "web").await;

    env.delete_secret(NS, "db").await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 0).await;
    assert_eq!(
        env.annotations("deployments", NS, "web").await,
        recorded,
        "holding records nothing"
    );
    assert_eq!(
        hr.metric("hashroll_held_workloads", &[]).await,
        Some(1.0),
        "web is held"
    );

    env.secret(NS, "db", &[("password", "p1")]).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 0).await;
    assert_eq!(
        hr.metric("hashroll_held_workloads", &[]).await,
        Some(0.0),
        "back with the same content: no longer held"
    );

    env.delete_secret(NS, "db").await;
    env.barrier(NS).await;
    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
}

e2e!(optional_source_appearing_and_disappearing_each_roll);
async fn optional_source_appearing_and_disappearing_each_roll(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.deployment(NS, "web", optional_env_from_secret("extra"))
        .await;
    let _hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;

    env.secret(NS, "extra", &[("flag", "on")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;

    env.delete_secret(NS, "extra").await;
    env.wait_rolls("deployments", NS, "web", 2).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 2).await;
    env.assert_rolled_annotations("deployments", NS, "web")
        .await;
}

e2e!(missing_required_source_holds_and_its_first_appearance_rolls_nothing);
async fn missing_required_source_holds_and_its_first_appearance_rolls_nothing(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.deployment(NS, "web", env_from_secret("later")).await;
    env.deployment(NS, "keyed", common::secret_key_ref("keyless", "password"))
        .await;
    env.secret(NS, "keyless", &[("username", "u")]).await;
    let hr = env.hashroll(&[]).await;
    env.barrier(NS).await;
    env.assert_untouched("deployments", NS, "web").await;
    env.assert_untouched("deployments", NS, "keyed").await;
    assert_eq!(
        hr.metric("hashroll_held_workloads", &[]).await,
        Some(2.0),
        "web (its Secret missing) and keyed (its key missing) are held"
    );

    env.secret(NS, "later", &[("password", "p1")]).await;
    env.secret(NS, "keyless", &[("username", "u"), ("password", "p1")])
        .await;
    env.wait_recorded("deployments", NS, "web").await;
    env.wait_recorded("deployments", NS, "keyed").await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 0).await;
    env.assert_rolls("deployments", NS, "keyed", 0).await;
    assert_eq!(hr.metric("hashroll_held_workloads", &[]).await, Some(0.0));

    // From now on it is a normal tracked source.
    env.secret(NS, "later", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
}

e2e!(a_burst_of_changes_within_the_debounce_window_rolls_once);
async fn a_burst_of_changes_within_the_debounce_window_rolls_once(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    let names: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let env_from: Vec<_> = names
        .iter()
        .map(|n| json!({"secretRef": {"name": n}}))
        .collect();
    for n in &names {
        env.secret(NS, n, &[("v", "1")]).await;
    }
    env.deployment(NS, "web", pod(json!({"envFrom": env_from})))
        .await;
    let _hr = env.hashroll(&["--debounce=1s"]).await;
    env.wait_recorded("deployments", NS, "web").await;

    let started = Instant::now();
    for n in &names {
        env.secret(NS, n, &[("v", "2")]).await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the burst must fit in the window to test anything (took {:?})",
        started.elapsed()
    );
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
    let events = env.wait_event(NS, "web", "Reloaded").await;
    assert_eq!(events.len(), 1, "{events:?}");
}

e2e!(one_secret_used_by_fifty_workloads_rolls_each_exactly_once);
async fn one_secret_used_by_fifty_workloads_rolls_each_exactly_once(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "shared", &[("password", "p1")]).await;
    let names: Vec<String> = (0..50).map(|i| format!("app-{i:02}")).collect();
    for n in &names {
        env.deployment(NS, n, env_from_secret("shared")).await;
    }
    // hashroll's own default: patches run 16 at a time.
    let _hr = env.hashroll(&["--patch-concurrency=16"]).await;
    for n in &names {
        env.wait_recorded("deployments", NS, n).await;
    }
    env.secret(NS, "shared", &[("password", "p2")]).await;
    for n in &names {
        env.wait_rolls("deployments", NS, n, 1).await;
    }
    env.barrier(NS).await;
    // With patches in parallel the barrier's may overtake one decided before it: give a second roll of
    // any of the fifty time to land (the barrier alone is exact only one patch at a time).
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in &names {
        env.assert_rolls("deployments", NS, n, 1).await;
        env.assert_rolled_annotations("deployments", NS, n).await;
    }
}

e2e!(a_workload_with_a_253_character_name_rolls_and_gets_its_reloaded_event);
async fn a_workload_with_a_253_character_name_rolls_and_gets_its_reloaded_event(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    // The longest name Kubernetes allows for a Deployment: a DNS-1123 subdomain of 253 characters.
    let name = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".");
    assert_eq!(name.len(), 253);
    // Written by hand: the harness labels pods with the workload's name, and a label value is at most
    // 63 characters on a real API server.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": {"hashroll.dev/reload": "true"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "long"}},
            "template": {"metadata": {"labels": {"app": "long"}}, "spec": env_from_secret("db")},
        },
    });
    env.dynamic("deployments", NS)
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(deployment).unwrap(),
        )
        .await
        .expect("a 253-character Deployment name is valid");
    env.wait_controller_saw("deployments", NS, &name).await;
    let hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, &name).await;

    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, &name, 1).await;
    env.assert_rolled_annotations("deployments", NS, &name)
        .await;
    let events = env.wait_event(NS, &name, "Reloaded").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].2.contains("Secret db"), "{events:?}");
    assert_eq!(
        hr.metric("hashroll_event_errors_total", &[]).await,
        None,
        "every Event was accepted"
    );
}

e2e!(statefulsets_daemonsets_and_cronjobs_roll_their_own_templates);
async fn statefulsets_daemonsets_and_cronjobs_roll_their_own_templates(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    let opt_in = [("hashroll.dev/reload", "true")];
    for kind in ["statefulsets", "daemonsets", "cronjobs"] {
        env.workload(kind, NS, "web", &opt_in, env_from_secret("db"))
            .await;
    }
    let _hr = env.hashroll(&[]).await;
    for kind in ["statefulsets", "daemonsets", "cronjobs"] {
        env.wait_recorded(kind, NS, "web").await;
    }
    env.secret(NS, "db", &[("password", "p2")]).await;
    for kind in ["statefulsets", "daemonsets", "cronjobs"] {
        env.wait_rolls(kind, NS, "web", 1).await;
    }
    env.barrier(NS).await;
    for kind in ["statefulsets", "daemonsets", "cronjobs"] {
        env.assert_rolls(kind, NS, "web", 1).await;
        env.assert_rolled_annotations(kind, NS, "web").await;
    }

    // The CronJob: the annotation is in spec.jobTemplate.spec.template, no Job is made, suspend stays.
    let cj = env.get("cronjobs", NS, "web").await;
    assert_eq!(cj.data["spec"]["suspend"], json!(true));
    assert!(
        cj.data["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"]
            .get("hashroll.dev/hash")
            .is_some()
    );
    assert!(cj.data["spec"].get("template").is_none());
    if let Some(server) = env.test_server() {
        assert_eq!(server.control().request_count("create", "jobs"), 0);
    }
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(env.client.clone(), NS);
    assert!(
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

e2e!(argo_rollouts_roll_by_template_or_by_restart_at);
async fn argo_rollouts_roll_by_template_or_by_restart_at(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.workload(
        "rollouts",
        NS,
        "by-template",
        &[("hashroll.dev/reload", "true")],
        env_from_secret("db"),
    )
    .await;
    env.workload(
        "rollouts",
        NS,
        "by-restart",
        &[
            ("hashroll.dev/reload", "true"),
            ("hashroll.dev/rollout-strategy", "restart"),
        ],
        env_from_secret("db"),
    )
    .await;
    let created = env.get("rollouts", NS, "by-restart").await.data["spec"]["template"].clone();
    let _hr = env.hashroll(&[]).await;
    env.wait_recorded("rollouts", NS, "by-template").await;
    env.wait_recorded("rollouts", NS, "by-restart").await;
    let before = env.annotations("rollouts", NS, "by-restart").await;

    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("rollouts", NS, "by-template", 1).await;
    env.wait_event(NS, "by-restart", "Reloaded").await;
    env.barrier(NS).await;
    env.assert_rolls("rollouts", NS, "by-template", 1).await;
    env.assert_rolled_annotations("rollouts", NS, "by-template")
        .await;

    let restarted = env.assert_restarted_at(NS, "by-restart", &created).await;
    let after = restarted.metadata.annotations.unwrap_or_default();
    assert_ne!(
        after.get("hashroll.dev/hash"),
        before.get("hashroll.dev/hash"),
        "the new state is recorded"
    );
}

e2e!(without_the_rollout_resource_hashroll_says_so_once_and_works);
async fn without_the_rollout_resource_hashroll_says_so_once_and_works(on: Server) {
    let env = Env::start_with(
        on,
        Setup {
            rollouts: false,
            ..Setup::default()
        },
    )
    .await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.deployment(NS, "web", env_from_secret("db")).await;
    let hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;
    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    // It works without them: ready (checked at start), and no watch of Rollouts failing.
    assert_eq!(
        hr.metric("hashroll_watch_errors_total", &[("resource", "rollouts")])
            .await,
        None
    );
    // Saying so, once and as information rather than a warning, is a log line: nothing else shows it.
    let lines = hr.log_lines_with(&["Rollouts are not served"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(r#""level":"INFO""#), "{}", lines[0]);
    assert!(
        hr.log_lines_with(&["\"level\":\"WARN\""]).is_empty()
            && hr.log_lines_with(&["\"level\":\"ERROR\""]).is_empty(),
        "no warnings or errors:\n{}",
        hr.logs()
    );
}

e2e!(
    a_failing_patch_is_retried_and_rolls_exactly_once,
    test_server_only = "fault injection (the next patches answer 500 and 503)"
);
async fn a_failing_patch_is_retried_and_rolls_exactly_once(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.deployment(NS, "web", env_from_secret("db")).await;
    let hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;

    let patches = RequestMatch {
        verb: Some("patch".into()),
        resource: Some("deployments".into()),
        namespace: Some(NS.into()),
    };
    let control = env.control();
    control.fail_next(1, patches.clone(), Fault::Status(500));
    control.fail_next(1, patches, Fault::Status(503));
    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
    env.assert_rolled_annotations("deployments", NS, "web")
        .await;
    // kube's client retries a 503 itself; the 500 reaches hashroll, which counts it and retries.
    assert_eq!(
        hr.metric(
            "hashroll_patch_errors_total",
            &[("kind", "Deployment"), ("code", "500")]
        )
        .await,
        Some(1.0),
        "the failure is counted"
    );
    assert_eq!(env.wait_event(NS, "web", "Reloaded").await.len(), 1);
}

e2e!(sigterm_exits_zero_promptly);
async fn sigterm_exits_zero_promptly(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    let hr = env.hashroll(&[]).await;
    let (status, took) = hr.stop().await;
    // A clean stop is exit status 0 (a process the signal killed has no exit code).
    assert_eq!(status.code(), Some(0), "exit status");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn an_invalid_flag_exits_non_zero_naming_it_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hashroll"))
        .arg("--debounce=soon")
        .env("KUBECONFIG", dir.path().join("none"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--debounce"), "{stderr}");
    assert!(stderr.contains("soon"), "{stderr}");
    assert!(!stderr.contains("kubeconfig"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
