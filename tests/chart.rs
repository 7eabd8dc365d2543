//! The Helm chart's RBAC is enough, and no more: render the chart with Helm's own engine, apply its
//! ServiceAccount and RBAC objects to the API server (the test server switched to RBAC mode, or the real
//! one), and run hashroll with the chart's ServiceAccount token (a real token from the TokenRequest API on
//! the real server), with the flags the chart passes. It must win the Lease, become ready, record, roll and
//! write its Event without one failed watch, patch or Event; and the server must refuse that token what
//! the chart does not grant: patching a Pod, writing the key Secret, and in per-namespace mode reading
//! Secrets of a namespace not listed.

mod common;

use std::process::{Command, Stdio};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::io::AsyncWriteExt;

use common::{Env, Server, e2e, secret_key_ref};

/// Rendered manifests; None (test skipped) only outside CI when Helm's engine is not installed.
fn render(values_json: &str) -> Option<String> {
    let (ok, out) = render_result(&["--set-json", values_json])?;
    assert!(ok, "chart renders: {out}");
    Some(out)
}

/// The manifests of a variant of charts/variants.json (release `hashroll`, namespace `hashroll`).
fn render_variant(variant: &str) -> Option<String> {
    let (ok, out) = render_result(&["--variant", variant])?;
    assert!(ok, "chart variant {variant} renders: {out}");
    Some(out)
}

/// charts/render.py with each of `runs` (args), at once (each run spends most of a second starting
/// Helm's engine); None when skipped.
fn render_many(runs: &[Vec<&str>]) -> Option<Vec<(bool, String)>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|args| s.spawn(move || render_result(args)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// charts/render.py with `args`: (succeeded, its output, or its error message when it failed).
fn render_result(args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new("python3")
        .args(["charts/render.py", "--namespace", "hashroll"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() && stderr.contains("No module named 'helm_python'") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install helm-python-sdk (pip install helm-python-sdk)"
        );
        eprintln!("SKIPPED: pip install helm-python-sdk to run the chart tests");
        return None;
    }
    if out.status.success() {
        Some((true, String::from_utf8(out.stdout).unwrap()))
    } else {
        Some((false, stderr))
    }
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
    kubectl_apply(env, &docs.join("\n---\n")).await;
}

/// `kubectl apply` of a YAML stream as admin (the server checks every field: strict validation).
async fn kubectl_apply(env: &Env, yaml: &str) {
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
        .write_all(yaml.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A controller flag, as `hashroll --help` lists it.
struct Flag {
    name: String,
    env: Option<String>,
    default: Option<String>,
    /// Takes no value (`--dry-run`), so `HASHROLL_DRY_RUN=true` is `--dry-run`.
    switch: bool,
}

/// The controller flags `hashroll --help` lists, with their variable and default.
fn controller_flags() -> Vec<Flag> {
    let out = Command::new(env!("CARGO_BIN_EXE_hashroll"))
        .arg("--help")
        .output()
        .expect("hashroll --help");
    let help = String::from_utf8(out.stdout).unwrap();
    let bracket = |text: &str, key: &str| -> Option<String> {
        let (_, rest) = text.split_once(&format!("[{key}: "))?;
        Some(rest.split(']').next().unwrap().to_string())
    };
    let mut flags: Vec<(Flag, String)> = Vec::new();
    for line in help.lines() {
        let l = line.trim_start();
        let header = l.strip_prefix("--").or_else(|| {
            l.strip_prefix('-')
                .and_then(|r| r.split_once(", --"))
                .map(|(_, r)| r)
        });
        match (header, flags.last_mut()) {
            (Some(rest), _) => {
                let name = rest.split([' ', '=', '<', '[']).next().unwrap().to_string();
                let switch = !rest.contains('<');
                flags.push((
                    Flag {
                        name,
                        env: None,
                        default: None,
                        switch,
                    },
                    String::new(),
                ));
            }
            (None, Some((_, text))) => {
                text.push_str(line);
                text.push(' ');
            }
            (None, None) => {}
        }
    }
    let flags: Vec<Flag> = flags
        .into_iter()
        .map(|(mut f, text)| {
            f.env = bracket(&text, "env").map(|e| {
                e.trim_end_matches('=')
                    .split('=')
                    .next()
                    .unwrap()
                    .to_string()
            });
            f.default = bracket(&text, "default");
            f
        })
        .collect();
    assert!(
        flags.len() > 20
            && flags
                .iter()
                .any(|f| f.env.as_deref() == Some("HASHROLL_DEBOUNCE")),
        "flags parsed from --help:\n{help}"
    );
    flags
}

/// The HASHROLL_* variables of the rendered Deployment: (name, value).
fn chart_env(manifests: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = manifests.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let name = w[0].strip_prefix("- name: ")?;
            let value = w[1].strip_prefix("value: ")?;
            name.starts_with("HASHROLL_").then(|| {
                let value: String = serde_json::from_str(value)
                    .unwrap_or_else(|e| panic!("{name}: value {value} is not quoted: {e}"));
                (name.to_string(), value)
            })
        })
        .collect()
}

/// The HASHROLL_* variables the rendered Deployment takes from a Secret (`valueFrom`), by name.
fn chart_env_from_secrets(manifests: &str) -> Vec<String> {
    let lines: Vec<&str> = manifests.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let name = w[0].strip_prefix("- name: ")?;
            (name.starts_with("HASHROLL_") && w[1].starts_with("valueFrom: { secretKeyRef:"))
                .then(|| name.to_string())
        })
        .collect()
}

/// The container's args: only `extraArgs`, as given.
fn extra_args(manifests: &str) -> Vec<String> {
    let Some((_, args)) = manifests.split_once("\n          args:\n") else {
        return Vec::new();
    };
    args.lines()
        .map_while(|l| l.strip_prefix("            - "))
        .map(|a| serde_json::from_str(a).unwrap_or_else(|e| panic!("{a} is not quoted: {e}")))
        .collect()
}

/// The chart's settings as flags: each HASHROLL_* variable turned into the flag it sets (a variable no
/// flag reads fails the test: hashroll would ignore it without a word).
fn chart_flags(manifests: &str) -> Vec<(Flag, String)> {
    let mut flags = controller_flags();
    chart_env(manifests)
        .into_iter()
        .map(|(name, value)| {
            let i = flags
                .iter()
                .position(|f| f.env.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("{name} is the variable of no hashroll flag"));
            (flags.remove(i), value)
        })
        .collect()
}

/// The chart's settings as args, but those the harness sets itself (admin address, logging, and a
/// debounce of 0 so the test need not wait out the chart's).
fn chart_args(manifests: &str) -> Vec<String> {
    const HARNESS: [&str; 4] = ["admin-addr", "log-format", "log-level", "debounce"];
    chart_flags(manifests)
        .into_iter()
        .filter(|(f, _)| !HARNESS.contains(&f.name.as_str()))
        .filter_map(|(f, value)| match (f.switch, value.as_str()) {
            (true, "true") => Some(format!("--{}", f.name)),
            (true, "false") => None,
            (true, v) => panic!("--{}: a switch set to {v:?}", f.name),
            (false, v) => Some(format!("--{}={v}", f.name)),
        })
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
    let args = chart_args(&manifests);
    let flags: Vec<&str> = args.iter().map(String::as_str).collect();
    // A change in how the chart writes its settings must not silently drop leader election here.
    let leader = flags.contains(&"--leader-elect");
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
    let narrowed = values_json.contains("workloadKinds");
    refused_what_the_chart_does_not_grant(&env, &kubeconfig, per_namespace, narrowed).await;
}

/// The server refuses (403) the chart's ServiceAccount what the chart does not grant: patching a Pod,
/// writing the installation key (update, patch, delete: hashroll only creates and reads it), and, when
/// the chart lists namespaces, reading Secrets in another; when it narrows `watch` to Secrets and
/// `workloadKinds` to Deployments, reading ConfigMaps and reading or patching StatefulSets.
async fn refused_what_the_chart_does_not_grant(
    env: &Env,
    kubeconfig: &std::path::Path,
    per_namespace: bool,
    narrowed: bool,
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
    if narrowed {
        forbidden(
            "list ConfigMaps (not watched)",
            Api::<ConfigMap>::namespaced(sa.clone(), "app")
                .list(&Default::default())
                .await
                .map(drop),
        );
        let statefulsets = Api::<StatefulSet>::namespaced(sa.clone(), "app");
        forbidden(
            "list StatefulSets (not a workload kind rolled)",
            statefulsets.list(&Default::default()).await.map(drop),
        );
        forbidden(
            "patch a StatefulSet (not a workload kind rolled)",
            statefulsets
                .patch("db", &PatchParams::default(), &Patch::Merge(&label))
                .await
                .map(drop),
        );
    }
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

e2e!(chart_rbac_narrowed_to_secrets_and_deployments_is_enough);
async fn chart_rbac_narrowed_to_secrets_and_deployments_is_enough(on: Server) {
    rolls_with_chart_permissions(
        on,
        r#"{"watch": ["secrets"], "workloadKinds": ["deployments"]}"#,
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
    let leader = |manifests: &str| chart_args(manifests).contains(&"--leader-elect".to_string());
    assert!(on.contains("replicas: 2"), "{on}");
    assert!(leader(&on), "{on}");
    assert!(on.contains("resources: [leases]"), "{on}");
    let Some(off) = render(r#"{"leaderElection": {"enabled": false}}"#) else {
        return;
    };
    assert!(off.contains("replicas: 1"), "{off}");
    assert!(
        !leader(&off) && !off.contains("LEADER_ELECTION") && !off.contains("leases"),
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

/// `helm install` with a bad value fails, and Helm's message names the value (values.schema.json);
/// good values of the same keys pass.
#[test]
fn the_schema_rejects_bad_values_naming_them() {
    let bad = [
        (r#"{"debounce": "soon"}"#, "'/debounce'"),
        (r#"{"debounce": 2}"#, "'/debounce'"),
        (
            r#"{"workloadKinds": ["deployments", "jobs"]}"#,
            "'/workloadKinds/1'",
        ),
        (r#"{"workloadKinds": []}"#, "'/workloadKinds'"),
        (r#"{"watch": ["secret"]}"#, "'/watch/0'"),
        (r#"{"replicaCount": -1}"#, "'/replicaCount'"),
        (r#"{"replicaCount": "two"}"#, "'/replicaCount'"),
        (r#"{"patchConcurrency": 0}"#, "'/patchConcurrency'"),
        (
            r#"{"leaderElection": {"leaseDuration": "15"}}"#,
            "'/leaderElection/leaseDuration'",
        ),
        (r#"{"logFormat": "xml"}"#, "'/logFormat'"),
        (r#"{"initialList": "all"}"#, "'/initialList'"),
        (r#"{"watchNamespaces": ["Shop"]}"#, "'/watchNamespaces/0'"),
        (r#"{"image": {"digest": "latest"}}"#, "'/image/digest'"),
        // A misspelt key would otherwise be ignored without a word.
        (r#"{"debouce": "1s"}"#, "'debouce' not allowed"),
        (
            r#"{"metrics": {"prometheusRule": {"disabled": ["HashrollNoSuchAlert"]}}}"#,
            "'/metrics/prometheusRule/disabled/0'",
        ),
    ];
    let good = [
        r#"{"debounce": "0"}"#,
        r#"{"debounce": "1m30s"}"#,
        r#"{"debounce": "500ms"}"#,
        r#"{"workloadKinds": ["rollouts"], "watch": ["configmaps"]}"#,
        r#"{"replicaCount": 0}"#,
    ];
    let runs: Vec<Vec<&str>> = bad
        .iter()
        .map(|(values, _)| *values)
        .chain(good)
        .map(|values| vec!["--set-json", values])
        .collect();
    let Some(results) = render_many(&runs) else {
        return;
    };
    for ((values, named), (ok, message)) in bad.iter().zip(&results) {
        assert!(!ok, "{values} must be refused");
        assert!(
            message.contains(named),
            "{values}: the message names {named}:\n{message}"
        );
    }
    for (values, (ok, message)) in good.iter().zip(&results[bad.len()..]) {
        assert!(ok, "{values} is accepted: {message}");
    }
}

/// What the chart cannot express is refused with a message naming the values, not rendered wrong.
#[test]
fn contradictory_values_fail_naming_them() {
    let bad = [
        (
            r#"{"leaderElection": {"enabled": false}, "replicaCount": 2}"#,
            "leaderElection.enabled",
        ),
        (
            r#"{"metrics": {"serviceMonitor": {"enabled": true}, "podMonitor": {"enabled": true}}}"#,
            "metrics.serviceMonitor and metrics.podMonitor",
        ),
        (
            r#"{"metrics": {"service": false, "serviceMonitor": {"enabled": true}}}"#,
            "metrics.service",
        ),
        (
            r#"{"metrics": {"prometheusRule": {"enabled": true}}, "resources": {"limits": {"memory": "lots"}}}"#,
            "resources.limits.memory",
        ),
    ];
    let runs: Vec<Vec<&str>> = bad.iter().map(|(v, _)| vec!["--set-json", *v]).collect();
    let Some(results) = render_many(&runs) else {
        return;
    };
    for ((values, named), (ok, message)) in bad.iter().zip(results) {
        assert!(!ok, "{values} must be refused");
        assert!(
            message.contains(named),
            "{values}: the message names {named}:\n{message}"
        );
    }
}

/// Every controller flag has a value in the chart (set in the `every-value` variant), but those that
/// make no sense in a pod (which cluster to talk to: the pod's own) and help/version.
#[test]
fn every_controller_flag_has_a_value() {
    let Some(manifests) = render_variant("every-value") else {
        return;
    };
    let from_secrets = chart_env_from_secrets(&manifests);
    let mut set: Vec<String> = chart_flags(&manifests)
        .into_iter()
        .map(|(f, _)| f.name)
        .collect();
    set.extend(
        controller_flags()
            .into_iter()
            .filter(|f| f.env.as_ref().is_some_and(|e| from_secrets.contains(e)))
            .map(|f| f.name),
    );
    let not_in_a_pod = ["kubeconfig", "context", "help", "version"];
    let missing: Vec<String> = controller_flags()
        .into_iter()
        .map(|f| f.name)
        .filter(|f| !not_in_a_pod.contains(&f.as_str()) && !set.contains(f))
        .collect();
    assert!(
        missing.is_empty(),
        "flags the chart has no value for: {missing:?}"
    );
}

/// The chart's defaults are the binary's, but those it chooses on purpose (README "Helm chart").
#[test]
fn the_chart_defaults_are_the_binarys() {
    let Some(manifests) = render("{}") else {
        return;
    };
    let on_purpose = [
        ("log-format", "json"),
        ("leader-elect", "true"),
        ("leader-election-lease-name", "hashroll"),
        ("canary-interval", "2m"),
    ];
    for (flag, value) in chart_flags(&manifests) {
        if on_purpose.contains(&(flag.name.as_str(), value.as_str())) {
            continue;
        }
        match (&flag.default, flag.switch) {
            (Some(d), _) => assert_eq!(&value, d, "--{}: the chart's default", flag.name),
            (None, true) => assert_eq!(value, "false", "--{}: the chart's default", flag.name),
            (None, false) => panic!(
                "--{}={value}: set by default, the binary has none",
                flag.name
            ),
        }
    }
}

/// hashroll accepts the settings of every variant, given as the chart gives them (variables and args):
/// it gets past its flags (an invalid one exits 2 naming it, before any connection) to the cluster,
/// which here does not exist.
#[test]
fn hashroll_accepts_the_settings_of_every_variant() {
    let variants: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/charts/variants.json"))
            .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        kube_testserver::kubeconfig_yaml("http://127.0.0.1:1", "none"),
    )
    .unwrap();
    let runs: Vec<Vec<&str>> = variants.keys().map(|n| vec!["--variant", n]).collect();
    let Some(rendered) = render_many(&runs) else {
        return;
    };
    let mut running = Vec::new();
    for (name, (ok, manifests)) in variants.keys().zip(rendered) {
        assert!(ok, "{name} renders: {manifests}");
        let env = chart_env(&manifests);
        let child = Command::new(env!("CARGO_BIN_EXE_hashroll"))
            .args(extra_args(&manifests))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("POD_NAMESPACE", "hashroll")
            .env("HASHROLL_KUBECONFIG", &kubeconfig)
            // Its own admin port: another variant's may be taken.
            .env("HASHROLL_ADMIN_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hashroll runs");
        running.push((name, env, child));
    }
    // Settings are checked at once; after that hashroll retries the cluster until it is stopped.
    std::thread::sleep(std::time::Duration::from_secs(2));
    for (name, env, mut child) in running {
        let exited = child.try_wait().unwrap();
        if exited.is_none() {
            child.kill().unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert_ne!(
            exited.and_then(|s| s.code()),
            Some(2),
            "{name}: hashroll refuses the chart's settings {env:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// More than one replica: a PodDisruptionBudget and replicas preferring different nodes; one replica:
/// neither (a budget of one pod that may not be evicted would block every node drain).
#[test]
fn several_replicas_get_a_disruption_budget_and_spread_over_nodes() {
    let Some(two) = render("{}") else {
        return;
    };
    assert!(two.contains("\nkind: PodDisruptionBudget\n"), "{two}");
    assert!(
        two.contains("preferredDuringSchedulingIgnoredDuringExecution"),
        "{two}"
    );
    let Some(one) = render_variant("single-replica") else {
        return;
    };
    assert!(one.contains("replicas: 1"), "{one}");
    assert!(
        !one.contains("PodDisruptionBudget") && !one.contains("podAntiAffinity"),
        "{one}"
    );
    let Some(own) = render(r#"{"affinity": {"nodeAffinity": {}}}"#) else {
        return;
    };
    assert!(
        own.contains("nodeAffinity") && !own.contains("podAntiAffinity"),
        "the user's affinity replaces the default:\n{own}"
    );
}

/// The Prometheus Operator's kinds the chart may render (ServiceMonitor, PodMonitor, PrometheusRule),
/// served by the API server as the operator's CustomResourceDefinitions would. Their schemas here accept
/// any spec: what a spec says is checked by tests/chart_monitoring.rs (the alerts and the dashboard) and
/// by `the_monitoring_objects_point_at_the_admin_port`.
async fn serve_monitoring_kinds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PodMonitor", "podmonitors"),
        ("PrometheusRule", "prometheusrules"),
    ] {
        let name = format!("{plural}.monitoring.coreos.com");
        if crds.get_opt(&name).await.unwrap().is_none() {
            let crd = serde_json::json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": name},
                "spec": {
                    "group": "monitoring.coreos.com", "scope": "Namespaced",
                    "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                              "listKind": format!("{kind}List")},
                    "versions": [{"name": "v1", "served": true, "storage": true, "schema": {
                        "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                            "type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}],
                },
            });
            crds.create(
                &PostParams::default(),
                &serde_json::from_value(crd).unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("create the {kind} CRD: {e}"));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !client
            .list_api_group_resources("monitoring.coreos.com/v1")
            .await
            .is_ok_and(|l| l.resources.iter().any(|r| r.name == plural))
        {
            assert!(std::time::Instant::now() < deadline, "{kind} never served");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Every variant of charts/variants.json, rendered by Helm's engine as release `hashroll-<variant>`, is
/// accepted whole by a real API server with RBAC on (strict field validation, RBAC's escalation check on
/// the Roles, the Deployment, PodDisruptionBudget, NetworkPolicy, Service and dashboard ConfigMap as
/// served). Real server only: the test server serves none of those kinds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chart_variant_applies_to_a_real_api_server() {
    Server::Real.run(every_variant_applies).await;
}

async fn every_variant_applies(on: Server) {
    let variants: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/charts/variants.json"))
            .unwrap(),
    )
    .unwrap();
    let releases: Vec<String> = variants.keys().map(|n| format!("hashroll-{n}")).collect();
    let runs: Vec<Vec<&str>> = variants
        .keys()
        .zip(&releases)
        .map(|(n, r)| vec!["--variant", n, "--release", r])
        .collect();
    let Some(results) = render_many(&runs) else {
        return;
    };
    let mut rendered = Vec::new();
    for (name, (ok, manifests)) in variants.keys().zip(results) {
        assert!(ok, "{name} renders: {manifests}");
        rendered.push((name.clone(), manifests));
    }
    let env = Env::start(on).await;
    serve_monitoring_kinds(&env.client).await;
    for (name, manifests) in &rendered {
        // The namespaces the objects go to (the release's, listed ones, the controller's).
        let namespaces: std::collections::BTreeSet<&str> = manifests
            .lines()
            .filter_map(|l| l.strip_prefix("  namespace: "))
            .collect();
        for ns in namespaces {
            env.namespace(ns).await;
        }
        eprintln!("{name}: applying");
        let started = std::time::Instant::now();
        kubectl_apply(&env, manifests).await;
        eprintln!("{name}: applied in {:?}", started.elapsed());
    }
}

/// The objects of a variant, parsed (Helm's YAML parser, through render.py).
fn objects(variant: &str) -> Option<Vec<serde_json::Value>> {
    let (ok, out) = render_result(&["--variant", variant, "--json"])?;
    assert!(ok, "{variant} renders: {out}");
    Some(serde_json::from_str(&out).expect("render.py --json prints JSON"))
}

fn the<'a>(objects: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("a {kind} among {objects:#?}"))
}

/// `selector` (matchLabels) selects an object labelled `labels`.
fn selects(selector: &serde_json::Value, labels: &serde_json::Value) -> bool {
    let wanted = selector.as_object().expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What each monitoring object points at exists: the ServiceMonitor selects the Service and scrapes
/// its admin port, which reaches the pods' admin port; the PodMonitor selects the pods and their admin
/// port; both name the job the alerts select; the NetworkPolicy lets that port in; the dashboard
/// ConfigMap holds the dashboard, as valid JSON, labelled for Grafana's sidecar.
#[test]
fn the_monitoring_objects_point_at_the_admin_port() {
    let Some(monitoring) = objects("monitoring") else {
        return;
    };
    let deployment = the(&monitoring, "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["name"], "admin", "{container}");
    let service = the(&monitoring, "Service");
    assert!(
        selects(&service["spec"]["selector"], pod_labels),
        "{service}"
    );
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "admin");
    let sm = the(&monitoring, "ServiceMonitor");
    assert!(
        selects(
            &sm["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "{sm}"
    );
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"][0], "hashroll");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    let job =
        serde_json::json!([{"action": "replace", "targetLabel": "job", "replacement": "hashroll"}]);
    assert_eq!(endpoint["relabelings"], job, "{sm}");
    let rule = the(&monitoring, "PrometheusRule");
    for r in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        assert!(
            r["expr"]
                .as_str()
                .unwrap()
                .contains(r#"job="hashroll", namespace="hashroll""#),
            "{r}"
        );
        assert_eq!(r["labels"]["team"], "platform", "{r}");
    }
    let policy = the(&monitoring, "NetworkPolicy");
    assert!(
        selects(&policy["spec"]["podSelector"]["matchLabels"], pod_labels),
        "{policy}"
    );
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "admin");
    let dashboard = the(&monitoring, "ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: serde_json::Value =
        serde_json::from_str(dashboard["data"]["hashroll.json"].as_str().unwrap())
            .expect("the dashboard ConfigMap holds valid JSON");
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/charts/hashroll/dashboards/hashroll.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(shipped, file, "the ConfigMap holds the chart's dashboard");

    let Some(pods) = objects("pod-monitor") else {
        return;
    };
    let pod_labels = &the(&pods, "Deployment")["spec"]["template"]["metadata"]["labels"];
    let pm = the(&pods, "PodMonitor");
    assert!(
        selects(&pm["spec"]["selector"]["matchLabels"], pod_labels),
        "{pm}"
    );
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "admin");
    assert_eq!(endpoint["relabelings"], job, "{pm}");
    assert!(
        !pods.iter().any(|o| o["kind"] == "Service"),
        "metrics.service: false"
    );
}

/// `extraArgs` reach hashroll as given, each one argument, after the chart's own settings (variables,
/// which an argument overrides).
#[test]
fn extra_args_are_passed_as_given() {
    let Some(manifests) =
        render(r#"{"extraArgs": ["--log-level=hashroll=debug, kube=warn", "--dry-run"]}"#)
    else {
        return;
    };
    assert_eq!(
        extra_args(&manifests),
        ["--log-level=hashroll=debug, kube=warn", "--dry-run"]
    );
    let Some(none) = render("{}") else {
        return;
    };
    assert!(!none.contains("args:"), "{none}");
}

/// `podLabels` label the pods, but cannot take the selector's labels away (the Deployment would no longer
/// select its pods, and the monitors and PodDisruptionBudget would miss them).
#[test]
fn pod_labels_add_to_the_selector_labels() {
    let Some(manifests) =
        render(r#"{"podLabels": {"team": "a", "app.kubernetes.io/name": "other"}}"#)
    else {
        return;
    };
    let pod = manifests
        .split_once("  template:\n    metadata:\n      labels:\n")
        .unwrap_or_else(|| panic!("a pod template:\n{manifests}"))
        .1;
    let labels: Vec<&str> = pod
        .lines()
        .take_while(|l| l.starts_with("        "))
        .collect();
    assert_eq!(
        labels,
        [
            "        app.kubernetes.io/instance: hashroll",
            "        app.kubernetes.io/name: hashroll",
            "        team: a",
        ]
    );
}
