//! End to end: hashroll's own annotations, Stakater Reloader's annotations read as Reloader reads them
//! (booleans, exact excludes, where they are looked up, Argo Rollouts' restart, the pause period), and
//! turning them off, opting out under `--auto-reload-all`, and malformed annotations.

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
            // Exact names, as in Reloader.
            ("secrets.exclude.reloader.stakater.com/reload", "skip-1"),
            (
                "configmaps.exclude.reloader.stakater.com/reload",
                "other, skip-1",
            ),
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

e2e!(reloader_booleans_are_read_like_go_parse_bool);
async fn reloader_booleans_are_read_like_go_parse_bool(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "s", &[("k", "1")]).await;
    env.configmap(NS, "c", &[("k", "1")]).await;
    let truthy = ["1", "t", "T", "TRUE", "true", "True"];
    let falsy = ["0", "f", "F", "FALSE", "false", "False"];
    // (name prefix, annotation, rolls for a Secret change, rolls for a ConfigMap change)
    let annotations = [
        ("auto", "reloader.stakater.com/auto", 1, 1),
        ("secret", "secret.reloader.stakater.com/auto", 1, 0),
        ("configmap", "configmap.reloader.stakater.com/auto", 0, 1),
    ];
    let name = |prefix: &str, truth: &str, i: usize| format!("{prefix}-{truth}-{i}");
    for (prefix, annotation, ..) in annotations {
        for (truth, values) in [("yes", truthy), ("no", falsy)] {
            for (i, v) in values.iter().enumerate() {
                let w = name(prefix, truth, i);
                env.workload("deployments", NS, &w, &[(annotation, v)], both("s", "c"))
                    .await;
            }
        }
    }
    let _hr = env.hashroll(&[]).await;
    for (prefix, ..) in annotations {
        for i in 0..truthy.len() {
            env.wait_recorded("deployments", NS, &name(prefix, "yes", i))
                .await;
        }
    }

    env.secret(NS, "s", &[("k", "2")]).await;
    for (prefix, _, secrets, _) in annotations {
        for i in 0..truthy.len() {
            env.wait_rolls("deployments", NS, &name(prefix, "yes", i), secrets)
                .await;
        }
    }
    env.configmap(NS, "c", &[("k", "2")]).await;
    for (prefix, _, secrets, configmaps) in annotations {
        for i in 0..truthy.len() {
            let w = name(prefix, "yes", i);
            env.wait_rolls("deployments", NS, &w, secrets + configmaps)
                .await;
        }
    }
    env.barrier(NS).await;
    for (prefix, _, secrets, configmaps) in annotations {
        for i in 0..truthy.len() {
            let w = name(prefix, "yes", i);
            env.assert_rolls("deployments", NS, &w, secrets + configmaps)
                .await;
            // Read, not rejected: no Warning.
            assert!(
                env.events_for(NS, &w)
                    .await
                    .iter()
                    .all(|e| e.0 != "Warning")
            );
        }
        for i in 0..falsy.len() {
            let w = name(prefix, "no", i);
            env.assert_untouched("deployments", NS, &w).await;
            assert!(env.events_for(NS, &w).await.is_empty(), "{w}: no Event");
        }
    }
}

e2e!(reloader_excludes_are_exact_names);
async fn reloader_excludes_are_exact_names(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.configmap(NS, "cfg.v1", &[("k", "1")]).await;
    env.configmap(NS, "cfgxv1", &[("k", "1")]).await;
    let spec = pod(json!({"envFrom": [
        {"configMapRef": {"name": "cfg.v1"}}, {"configMapRef": {"name": "cfgxv1"}}]}));
    env.workload(
        "deployments",
        NS,
        "web",
        &[
            ("reloader.stakater.com/auto", "true"),
            ("configmaps.exclude.reloader.stakater.com/reload", "cfg.v1"),
        ],
        spec,
    )
    .await;
    let _hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;

    env.configmap(NS, "cfg.v1", &[("k", "2")]).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 0).await;
    // `cfg.v1` is a name, not an expression whose `.` would match the `x`.
    env.configmap(NS, "cfgxv1", &[("k", "2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
}

e2e!(reloader_rollout_strategy_restart_sets_restart_at_and_leaves_the_template);
async fn reloader_rollout_strategy_restart_sets_restart_at_and_leaves_the_template(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    let auto = ("reloader.stakater.com/auto", "true");
    env.workload(
        "rollouts",
        NS,
        "restart",
        &[auto, ("reloader.stakater.com/rollout-strategy", "restart")],
        env_from_secret("db"),
    )
    .await;
    env.workload(
        "rollouts",
        NS,
        "rollout",
        &[auto, ("reloader.stakater.com/rollout-strategy", "rollout")],
        env_from_secret("db"),
    )
    .await;
    let created = env.get("rollouts", NS, "restart").await.data["spec"]["template"].clone();
    let _hr = env.hashroll(&[]).await;
    env.wait_recorded("rollouts", NS, "restart").await;
    env.wait_recorded("rollouts", NS, "rollout").await;

    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("rollouts", NS, "rollout", 1).await;
    env.wait_event(NS, "restart", "Reloaded").await;
    env.barrier(NS).await;
    env.assert_rolls("rollouts", NS, "rollout", 1).await;
    env.assert_restarted_at(NS, "restart", &created).await;
}

e2e!(reloader_annotations_are_read_on_the_metadata_else_on_the_template);
async fn reloader_annotations_are_read_on_the_metadata_else_on_the_template(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "s", &[("k", "1")]).await;
    env.configmap(NS, "c", &[("k", "1")]).await;
    env.configmap(NS, "named", &[("k", "1")]).await;
    let uses =
        || pod(json!({"envFrom": [{"secretRef": {"name": "s"}}, {"configMapRef": {"name": "c"}}]}));
    struct Case {
        name: &'static str,
        metadata: &'static [(&'static str, &'static str)],
        template: &'static [(&'static str, &'static str)],
        /// Rolls for a change of Secret `s`, of ConfigMap `c`, of ConfigMap `named`.
        rolls: [usize; 3],
    }
    const AUTO_ON_TEMPLATE: &[(&str, &str)] = &[("reloader.stakater.com/auto", "true")];
    let cases = [
        // An opt-in key on the metadata: the template's are not read.
        Case {
            name: "search-on-metadata",
            metadata: &[("reloader.stakater.com/search", "true")],
            template: AUTO_ON_TEMPLATE,
            rolls: [0, 0, 0],
        },
        // No opt-in key on the metadata (an exclude is none): the template's count; excludes only
        // on the metadata, so the template's exclude of `s` does not.
        Case {
            name: "auto-on-template",
            metadata: &[("configmaps.exclude.reloader.stakater.com/reload", "c")],
            template: &[
                ("reloader.stakater.com/auto", "true"),
                ("secrets.exclude.reloader.stakater.com/reload", "s"),
            ],
            rolls: [1, 0, 0],
        },
        Case {
            name: "auto-false-on-metadata",
            metadata: &[("reloader.stakater.com/auto", "false")],
            template: AUTO_ON_TEMPLATE,
            rolls: [0, 0, 0],
        },
        // Per source kind: a ConfigMap list on the metadata leaves Secrets to the template.
        Case {
            name: "per-kind",
            metadata: &[("configmap.reloader.stakater.com/reload", "named")],
            template: AUTO_ON_TEMPLATE,
            rolls: [1, 0, 1],
        },
    ];
    for c in &cases {
        env.deployment_with_template_annotations(NS, c.name, c.metadata, c.template, uses())
            .await;
    }
    let _hr = env.hashroll(&[]).await;
    for name in ["search-on-metadata", "auto-on-template", "per-kind"] {
        env.wait_recorded("deployments", NS, name).await;
    }

    let changes = [("s", true), ("c", false), ("named", false)];
    for (i, (source, secret)) in changes.into_iter().enumerate() {
        if secret {
            env.secret(NS, source, &[("k", "2")]).await;
        } else {
            env.configmap(NS, source, &[("k", "2")]).await;
        }
        env.barrier(NS).await;
        for c in &cases {
            let n = c.rolls[..=i].iter().sum();
            env.assert_rolls("deployments", NS, c.name, n).await;
        }
    }
    // Opted out on the metadata: not even recorded.
    env.assert_untouched("deployments", NS, "auto-false-on-metadata")
        .await;
}

/// Asserts hashroll has never paused the Deployment (Reloader's way of batching, which can leave it
/// paused for good).
async fn assert_not_paused(env: &Env, name: &str) {
    let d = env.get("deployments", NS, name).await;
    assert_ne!(d.data["spec"]["paused"], json!(true), "{name} is paused");
    let a = d.metadata.annotations.unwrap_or_default();
    assert!(
        !a.contains_key("deployment.reloader.stakater.com/paused-at"),
        "{name}: {a:?}"
    );
}

e2e!(a_pause_period_rolls_once_per_period_and_a_restart_loses_nothing);
async fn a_pause_period_rolls_once_per_period_and_a_restart_loses_nothing(on: Server) {
    const PERIOD: std::time::Duration = std::time::Duration::from_secs(3);
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.workload(
        "deployments",
        NS,
        "web",
        &[
            ("reloader.stakater.com/auto", "true"),
            ("deployment.reloader.stakater.com/pause-period", "3s"),
        ],
        env_from_secret("db"),
    )
    .await;
    let period = jiff::SignedDuration::try_from(PERIOD).unwrap();
    let within_period =
        |since: jiff::Timestamp| jiff::Timestamp::now().duration_since(since) < period;
    let hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;

    // Never rolled: the first change rolls at once.
    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    let first = env.rolled_at("deployments", NS, "web").await;
    // Three changes within the period: held (the barrier proves they were seen) ...
    for p in ["p3", "p4", "p5"] {
        env.secret(NS, "db", &[("password", p)]).await;
    }
    env.barrier(NS).await;
    assert!(
        within_period(first),
        "the test was too slow to make its changes within the period"
    );
    env.assert_rolls("deployments", NS, "web", 1).await;
    assert_not_paused(&env, "web").await;
    // ... then one roll at its end, carrying the latest content: nothing follows it.
    env.wait_rolls("deployments", NS, "web", 2).await;
    let second = env.rolled_at("deployments", NS, "web").await;
    assert!(second.duration_since(first) >= period);
    env.assert_rolled_annotations("deployments", NS, "web")
        .await;
    tokio::time::sleep(PERIOD + std::time::Duration::from_millis(500)).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 2).await;
    assert_not_paused(&env, "web").await;

    // The period is over: the next change rolls at once. One more within the new period is held, and
    // hashroll dies before the period ends and starts again: the held roll happens once, when the
    // period ends, and nothing was left paused.
    env.secret(NS, "db", &[("password", "p6")]).await;
    env.wait_rolls("deployments", NS, "web", 3).await;
    let third = env.rolled_at("deployments", NS, "web").await;
    env.secret(NS, "db", &[("password", "p7")]).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 3).await;
    assert!(
        within_period(third),
        "the test was too slow to restart hashroll within the period"
    );
    hr.kill().await;
    let _hr = env.hashroll(&[]).await;
    env.wait_rolls("deployments", NS, "web", 4).await;
    let fourth = env.rolled_at("deployments", NS, "web").await;
    assert!(fourth.duration_since(third) >= period);
    tokio::time::sleep(PERIOD + std::time::Duration::from_millis(500)).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 4).await;
    assert_not_paused(&env, "web").await;
    assert_eq!(env.wait_event(NS, "web", "Reloaded").await.len(), 4);
}
