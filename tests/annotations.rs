//! End to end: hashroll's own annotations, Stakater Reloader's annotations (and turning them off), opting
//! out under `--auto-reload-all`, and malformed annotations.

mod common;

use common::{Env, Server, e2e, env_from_configmap, env_from_secret, pod};
use serde_json::json;

const NS: &str = "notes";

fn both(secret: &str, configmap: &str) -> serde_json::Value {
    pod(
        json!({"envFrom": [{"secretRef": {"name": secret}}, {"configMapRef": {"name": configmap}}]}),
    )
}

e2e!(explicit_lists_excludes_and_ignored_sources);
async fn explicit_lists_excludes_and_ignored_sources(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    for s in ["listed", "skipped", "ignored"] {
        env.secret(NS, s, &[("k", "1")]).await;
    }
    env.configmap(NS, "listed-cm", &[("k", "1")]).await;
    env.configmap(NS, "skipped-cm", &[("k", "1")]).await;
    // Named sources the pod spec does not use: the lists alone opt the workload in.
    env.workload(
        "deployments",
        NS,
        "lists",
        &[
            ("hashroll.dev/secrets", "listed"),
            ("hashroll.dev/configmaps", "listed-cm"),
        ],
        pod(json!({})),
    )
    .await;
    let uses_all = pod(json!({"envFrom": [
        {"secretRef": {"name": "skipped"}}, {"configMapRef": {"name": "skipped-cm"}},
        {"secretRef": {"name": "ignored"}}, {"secretRef": {"name": "listed"}}]}));
    env.workload(
        "deployments",
        NS,
        "excludes",
        &[
            ("hashroll.dev/reload", "true"),
            ("hashroll.dev/exclude-secrets", "skipped"),
            ("hashroll.dev/exclude-configmaps", "skipped-cm"),
        ],
        uses_all,
    )
    .await;
    let _hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "lists").await;
    env.wait_recorded("deployments", NS, "excludes").await;

    env.secret(NS, "skipped", &[("k", "2")]).await;
    env.configmap(NS, "skipped-cm", &[("k", "2")]).await;
    env.secret_with(
        NS,
        "ignored",
        &[("k", "2")],
        &[("hashroll.dev/ignore", "true")],
    )
    .await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "lists", 0).await;
    env.assert_rolls("deployments", NS, "excludes", 0).await;
    // Removing the ignore annotation with the content it was first recorded with: still nothing.
    env.secret(NS, "ignored", &[("k", "1")]).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "excludes", 0).await;

    env.secret(NS, "listed", &[("k", "2")]).await;
    env.wait_rolls("deployments", NS, "lists", 1).await;
    env.wait_rolls("deployments", NS, "excludes", 1).await;
    env.configmap(NS, "listed-cm", &[("k", "2")]).await;
    env.wait_rolls("deployments", NS, "lists", 2).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "lists", 2).await;
    env.assert_rolls("deployments", NS, "excludes", 1).await;
    env.assert_rolled_annotations("deployments", NS, "lists")
        .await;
}

e2e!(stakater_auto_annotations);
async fn stakater_auto_annotations(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "s", &[("k", "1")]).await;
    env.configmap(NS, "c", &[("k", "1")]).await;
    let cases = [
        ("auto", "reloader.stakater.com/auto", true, true),
        (
            "secret-auto",
            "secret.reloader.stakater.com/auto",
            true,
            false,
        ),
        (
            "configmap-auto",
            "configmap.reloader.stakater.com/auto",
            false,
            true,
        ),
    ];
    for (name, annotation, _, _) in cases {
        env.workload(
            "deployments",
            NS,
            name,
            &[(annotation, "true")],
            both("s", "c"),
        )
        .await;
    }
    let _hr = env.hashroll(&[]).await;
    for (name, ..) in cases {
        env.wait_recorded("deployments", NS, name).await;
    }

    env.secret(NS, "s", &[("k", "2")]).await;
    for (name, _, secrets, _) in cases {
        if secrets {
            env.wait_rolls("deployments", NS, name, 1).await;
        }
    }
    env.barrier(NS).await;
    for (name, _, secrets, _) in cases {
        env.assert_rolls("deployments", NS, name, usize::from(secrets))
            .await;
    }

    env.configmap(NS, "c", &[("k", "2")]).await;
    for (name, _, secrets, configmaps) in cases {
        let n = usize::from(secrets) + usize::from(configmaps);
        env.wait_rolls("deployments", NS, name, n).await;
    }
    env.barrier(NS).await;
    for (name, _, secrets, configmaps) in cases {
        let n = usize::from(secrets) + usize::from(configmaps);
        env.assert_rolls("deployments", NS, name, n).await;
        env.assert_rolled_annotations("deployments", NS, name).await;
    }
}

e2e!(stakater_reload_lists_with_regexes_and_excludes);
async fn stakater_reload_lists_with_regexes_and_excludes(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    for s in ["db", "app-1", "xapp-1", "other", "skip-1", "keep"] {
        env.secret(NS, s, &[("k", "1")]).await;
        env.configmap(NS, s, &[("k", "1")]).await;
    }
    // Not referenced by the pod spec: tracked because the expressions name them.
    env.workload(
        "deployments",
        NS,
        "secret-list",
        &[("secret.reloader.stakater.com/reload", "db, app-.*")],
        pod(json!({})),
    )
    .await;
    env.workload(
        "deployments",
        NS,
        "configmap-list",
        &[("configmap.reloader.stakater.com/reload", "app-[0-9]+")],
        pod(json!({})),
    )
    .await;
    let refs = pod(json!({"envFrom": [
        {"secretRef": {"name": "skip-1"}}, {"secretRef": {"name": "keep"}},
        {"configMapRef": {"name": "skip-1"}}, {"configMapRef": {"name": "keep"}}]}));
    env.workload(
        "deployments",
        NS,
        "excludes",
        &[
            ("reloader.stakater.com/auto", "true"),
            ("secrets.exclude.reloader.stakater.com/reload", "skip-.*"),
            ("configmaps.exclude.reloader.stakater.com/reload", "skip-.*"),
        ],
        refs,
    )
    .await;
    let _hr = env.hashroll(&[]).await;
    for w in ["secret-list", "configmap-list", "excludes"] {
        env.wait_recorded("deployments", NS, w).await;
    }

    // Names the expressions do not match as a whole, and excluded names: nothing.
    for s in ["xapp-1", "other", "skip-1"] {
        env.secret(NS, s, &[("k", "2")]).await;
        env.configmap(NS, s, &[("k", "2")]).await;
    }
    env.configmap(NS, "db", &[("k", "2")]).await;
    env.barrier(NS).await;
    for w in ["secret-list", "configmap-list", "excludes"] {
        env.assert_rolls("deployments", NS, w, 0).await;
    }

    env.secret(NS, "db", &[("k", "2")]).await;
    env.wait_rolls("deployments", NS, "secret-list", 1).await;
    env.secret(NS, "app-1", &[("k", "2")]).await;
    env.wait_rolls("deployments", NS, "secret-list", 2).await;
    env.configmap(NS, "app-1", &[("k", "2")]).await;
    env.wait_rolls("deployments", NS, "configmap-list", 1).await;
    env.secret(NS, "keep", &[("k", "2")]).await;
    env.wait_rolls("deployments", NS, "excludes", 1).await;
    env.configmap(NS, "keep", &[("k", "2")]).await;
    env.wait_rolls("deployments", NS, "excludes", 2).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "secret-list", 2).await;
    env.assert_rolls("deployments", NS, "configmap-list", 1)
        .await;
    env.assert_rolls("deployments", NS, "excludes", 2).await;
}

e2e!(stakater_search_match_and_ignore);
async fn stakater_search_match_and_ignore(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    let matched = [("reloader.stakater.com/match", "true")];
    env.secret_with(NS, "matched", &[("k", "1")], &matched)
        .await;
    env.secret(NS, "unmatched", &[("k", "1")]).await;
    env.configmap_with(NS, "matched-cm", &[("k", "1")], &matched)
        .await;
    env.secret(NS, "ignored", &[("k", "1")]).await;
    let spec = pod(json!({"envFrom": [
        {"secretRef": {"name": "matched"}}, {"secretRef": {"name": "unmatched"}},
        {"configMapRef": {"name": "matched-cm"}}]}));
    env.workload(
        "deployments",
        NS,
        "search",
        &[("reloader.stakater.com/search", "true")],
        spec,
    )
    .await;
    env.workload(
        "deployments",
        NS,
        "auto",
        &[("reloader.stakater.com/auto", "true")],
        env_from_secret("ignored"),
    )
    .await;
    let _hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "search").await;
    env.wait_recorded("deployments", NS, "auto").await;

    env.secret(NS, "unmatched", &[("k", "2")]).await;
    env.secret_with(
        NS,
        "ignored",
        &[("k", "2")],
        &[("reloader.stakater.com/ignore", "true")],
    )
    .await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "search", 0).await;
    env.assert_rolls("deployments", NS, "auto", 0).await;

    env.secret_with(NS, "matched", &[("k", "2")], &matched)
        .await;
    env.wait_rolls("deployments", NS, "search", 1).await;
    env.configmap_with(NS, "matched-cm", &[("k", "2")], &matched)
        .await;
    env.wait_rolls("deployments", NS, "search", 2).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "search", 2).await;
}

e2e!(stakater_compat_false_ignores_reloader_annotations);
async fn stakater_compat_false_ignores_reloader_annotations(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "s", &[("k", "1")]).await;
    env.configmap(NS, "c", &[("k", "1")]).await;
    let annotations = [
        ("reloader.stakater.com/auto", "true"),
        ("secret.reloader.stakater.com/auto", "true"),
        ("configmap.reloader.stakater.com/auto", "true"),
        ("secret.reloader.stakater.com/reload", "s"),
        ("configmap.reloader.stakater.com/reload", "c"),
        ("reloader.stakater.com/search", "true"),
    ];
    for (i, a) in annotations.iter().enumerate() {
        env.workload("deployments", NS, &format!("w{i}"), &[*a], both("s", "c"))
            .await;
    }
    // hashroll's own annotation still works, and the source ignore annotation of Reloader is not read.
    env.secret_with(
        NS,
        "not-ignored",
        &[("k", "1")],
        &[("reloader.stakater.com/ignore", "true")],
    )
    .await;
    env.deployment(NS, "own", env_from_secret("not-ignored"))
        .await;
    let _hr = env.hashroll(&["--stakater-compat=false"]).await;
    env.wait_recorded("deployments", NS, "own").await;

    env.secret(NS, "s", &[("k", "2")]).await;
    env.configmap(NS, "c", &[("k", "2")]).await;
    env.secret_with(
        NS,
        "not-ignored",
        &[("k", "2")],
        &[("reloader.stakater.com/ignore", "true")],
    )
    .await;
    env.wait_rolls("deployments", NS, "own", 1).await;
    env.barrier(NS).await;
    for i in 0..annotations.len() {
        env.assert_untouched("deployments", NS, &format!("w{i}"))
            .await;
    }
}

e2e!(reload_false_opts_out_under_auto_reload_all);
async fn reload_false_opts_out_under_auto_reload_all(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "s", &[("k", "1")]).await;
    env.workload("deployments", NS, "plain", &[], env_from_secret("s"))
        .await;
    env.workload(
        "deployments",
        NS,
        "opted-out",
        &[("hashroll.dev/reload", "false")],
        env_from_secret("s"),
    )
    .await;
    env.workload(
        "deployments",
        NS,
        "stakater-out",
        &[("reloader.stakater.com/auto", "false")],
        env_from_secret("s"),
    )
    .await;
    let _hr = env.hashroll(&["--auto-reload-all"]).await;
    env.wait_recorded("deployments", NS, "plain").await;
    env.secret(NS, "s", &[("k", "2")]).await;
    env.wait_rolls("deployments", NS, "plain", 1).await;
    env.barrier(NS).await;
    env.assert_untouched("deployments", NS, "opted-out").await;
    env.assert_untouched("deployments", NS, "stakater-out")
        .await;
}

e2e!(a_malformed_annotation_warns_once_and_leaves_others_working);
async fn a_malformed_annotation_warns_once_and_leaves_others_working(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("k", "1")]).await;
    env.workload(
        "deployments",
        NS,
        "bad-bool",
        &[("hashroll.dev/reload", "yes please")],
        env_from_secret("db"),
    )
    .await;
    env.workload(
        "deployments",
        NS,
        "bad-regex",
        &[("secret.reloader.stakater.com/reload", "db-(")],
        env_from_secret("db"),
    )
    .await;
    env.deployment(NS, "good", env_from_secret("db")).await;
    env.configmap(NS, "cfg", &[("k", "1")]).await;
    env.deployment(NS, "good-cm", env_from_configmap("cfg"))
        .await;
    let hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "good").await;

    for (name, annotation) in [
        ("bad-bool", "hashroll.dev/reload"),
        ("bad-regex", "secret.reloader.stakater.com/reload"),
    ] {
        let events = env.wait_event(NS, name, "InvalidAnnotation").await;
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert_eq!(events[0].0, "Warning");
        assert!(events[0].2.contains(annotation), "{name}: {events:?}");
    }
    env.secret(NS, "db", &[("k", "2")]).await;
    env.wait_rolls("deployments", NS, "good", 1).await;
    env.barrier(NS).await;
    env.assert_untouched("deployments", NS, "bad-bool").await;
    env.assert_untouched("deployments", NS, "bad-regex").await;
    assert_eq!(
        hr.metric("hashroll_invalid_workloads", &[]).await,
        Some(2.0),
        "both are counted as skipped"
    );
    for (name, annotation) in [
        ("bad-bool", "hashroll.dev/reload"),
        ("bad-regex", "secret.reloader.stakater.com/reload"),
    ] {
        // README: one log line naming the workload and the annotation; only the log can show it.
        let lines =
            hr.log_lines_with(&["malformed annotation", &format!("{NS}/{name}"), annotation]);
        assert_eq!(lines.len(), 1, "{name}: one log line: {lines:?}");
        assert_eq!(
            env.events_for(NS, name)
                .await
                .iter()
                .filter(|(_, r, _)| r == "InvalidAnnotation")
                .count(),
            1,
            "{name}: one Warning"
        );
    }
}
