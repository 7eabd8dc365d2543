//! End to end: `hashroll explain`, run as a user runs it against the test API server, gives each verdict
//! with its reason, lists a Secret's users, prints JSON tools can parse, and never a value or a digest.

mod common;

use common::{Env, Server, Setup, Until, e2e, env_from_secret, pod, secret_key_ref};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

const NS: &str = "shop";
const VALUE: &str = "correct-horse-battery-staple-42";

/// The source named `name` in an explained workload's `sources`.
fn source<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {report:#}"))
}

/// Runs hashroll until it has recorded each of `deployments`, then stops it.
async fn record(env: &Env, deployments: &[&str]) {
    let hr = env.hashroll(&[]).await;
    for d in deployments {
        env.wait_recorded("deployments", NS, d).await;
    }
    let (status, _) = hr.stop().await;
    assert!(status.success());
}

e2e!(a_workload_not_opted_in_is_said_so_with_what_it_uses);
async fn a_workload_not_opted_in_is_said_so_with_what_it_uses(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.workload(
        "deployments",
        NS,
        "plain",
        &[],
        secret_key_ref("db", "password"),
    )
    .await;
    let r = env.explain_json(&["deployment/plain", "-n", NS]).await;
    assert_eq!(r["verdict"]["outcome"], "not_opted_in", "{r:#}");
    assert_eq!(r["tracking"]["state"], "not_opted_in");
    assert!(
        r["tracking"]["detail"]
            .as_str()
            .unwrap()
            .contains("hashroll.dev/reload"),
        "{r:#}"
    );
    let db = source(&r, "db");
    assert_eq!(db["keys"], json!(["password"]));
    assert_eq!(
        db["via"],
        json!(["containers[app].env[V].valueFrom.secretKeyRef"])
    );
    let (code, text, _) = env.explain(&["deployment/plain", "-n", NS]).await;
    assert_eq!(code, 0);
    assert!(text.contains("not opted in"), "{text}");
}

e2e!(an_invalid_annotation_is_named_with_its_reason);
async fn an_invalid_annotation_is_named_with_its_reason(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    let bad = [("hashroll.dev/reload", "yes please")];
    env.workload("deployments", NS, "typo", &bad, env_from_secret("db"))
        .await;
    let r = env.explain_json(&["deployment/typo", "-n", NS]).await;
    assert_eq!(r["verdict"]["outcome"], "invalid_annotation", "{r:#}");
    let reason = r["verdict"]["reason"].as_str().unwrap();
    for part in [
        "hashroll.dev/reload",
        "yes please",
        "expected \"true\" or \"false\"",
    ] {
        assert!(reason.contains(part), "{part:?} in {reason:?}");
    }
}

e2e!(a_change_to_a_key_it_uses_would_roll_naming_the_key_and_no_value_or_digest_is_shown);
async fn a_change_to_a_key_it_uses_would_roll_naming_the_key_and_no_value_or_digest_is_shown(
    on: Server,
) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "first-value"), ("user", "app")])
        .await;
    env.deployment(NS, "web", secret_key_ref("db", "password"))
        .await;
    record(&env, &["web"]).await;
    env.secret(NS, "db", &[("password", VALUE), ("user", "app")])
        .await;

    let r = env.explain_json(&["deployment/web", "-n", NS]).await;
    assert_eq!(r["verdict"]["outcome"], "would_roll", "{r:#}");
    assert_eq!(
        r["verdict"]["changed"],
        json!([{"kind": "Secret", "name": "db", "keys": ["password"]}])
    );
    assert_eq!(source(&r, "db")["state"], "changed");
    let (code, text, err) = env.explain(&["deployment/web", "-n", NS]).await;
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("would roll now"), "{text}");
    assert!(text.contains("password"), "{text}");

    // A change the controller would still wait for: within --debounce of the latest write.
    let r = env
        .explain_json(&["deployment/web", "-n", NS, "--debounce=1h"])
        .await;
    assert_eq!(r["verdict"]["outcome"], "debounced", "{r:#}");

    // Never a value, in any form, nor a digest recorded on the workload.
    let (_, secret_text, _) = env.explain(&["secret/db", "-n", NS]).await;
    let secret_json = env.explain_json(&["secret/db", "-n", NS]).await;
    let outputs = [
        text,
        r.to_string(),
        secret_text,
        secret_json.to_string(),
        env.explain_json(&["deployment/web", "-n", NS])
            .await
            .to_string(),
    ];
    let recorded = env.annotations("deployments", NS, "web").await;
    let stamp = recorded["hashroll.dev/hash"].clone();
    let digests: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&recorded["hashroll.dev/sources"]).unwrap();
    let b64 = serde_json::to_value(k8s_openapi::ByteString(VALUE.as_bytes().to_vec())).unwrap();
    let mut forbidden = vec![VALUE.to_string(), b64.as_str().unwrap().to_string()];
    forbidden.push(stamp.rsplit('.').next().unwrap().to_string());
    forbidden.extend(digests.into_values());
    for out in &outputs {
        for f in &forbidden {
            assert!(
                !out.contains(f.as_str()),
                "{f:?} in explain's output:\n{out}"
            );
        }
    }
}

e2e!(nothing_to_do_when_only_keys_it_does_not_use_changed);
async fn nothing_to_do_when_only_keys_it_does_not_use_changed(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1"), ("user", "app")])
        .await;
    env.deployment(NS, "web", secret_key_ref("db", "password"))
        .await;
    record(&env, &["web"]).await;
    env.secret(NS, "db", &[("password", "p1"), ("user", "other")])
        .await;
    let r = env.explain_json(&["deployment/web", "-n", NS]).await;
    assert_eq!(r["verdict"]["outcome"], "nothing_to_do", "{r:#}");
    assert_eq!(source(&r, "db")["state"], "same");
}

e2e!(a_missing_required_source_holds_the_workload);
async fn a_missing_required_source_holds_the_workload(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.deployment(NS, "web", env_from_secret("absent")).await;
    let r = env.explain_json(&["deployment/web", "-n", NS]).await;
    assert_eq!(r["verdict"]["outcome"], "held", "{r:#}");
    assert!(
        r["verdict"]["reason"]
            .as_str()
            .unwrap()
            .contains("Secret absent is missing"),
        "{r:#}"
    );
    assert_eq!(source(&r, "absent")["state"], "missing");
}

e2e!(sources_not_watched_ignored_or_excluded_are_said_so);
async fn sources_not_watched_ignored_or_excluded_are_said_so(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    let helm: Secret = serde_json::from_value(json!({
        "metadata": {"name": "release", "namespace": NS},
        "type": "helm.sh/release.v1",
        "stringData": {"release": "chart"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), NS)
        .create(&PostParams::default(), &helm)
        .await
        .unwrap();
    env.secret_with(
        NS,
        "quiet",
        &[("k", "v")],
        &[("hashroll.dev/ignore", "true")],
    )
    .await;
    env.secret(NS, "old", &[("k", "v")]).await;
    env.configmap(NS, "settings", &[("mode", "fast")]).await;
    let spec = pod(json!({"envFrom": [
        {"secretRef": {"name": "release"}},
        {"secretRef": {"name": "quiet"}},
        {"secretRef": {"name": "old"}},
        {"configMapRef": {"name": "settings"}},
    ]}));
    let annotations = [
        ("hashroll.dev/reload", "true"),
        ("hashroll.dev/exclude-secrets", "old"),
    ];
    env.workload("deployments", NS, "web", &annotations, spec)
        .await;
    record(&env, &["web"]).await;

    let r = env.explain_json(&["deployment/web", "-n", NS]).await;
    assert_eq!(source(&r, "release")["state"], "not_watched", "{r:#}");
    assert!(
        source(&r, "release")["detail"]
            .as_str()
            .unwrap()
            .contains("--exclude-secret-types")
    );
    assert_eq!(source(&r, "quiet")["state"], "ignored");
    assert_eq!(source(&r, "old")["state"], "excluded");
    assert_eq!(source(&r, "settings")["state"], "same");
    assert_eq!(r["verdict"]["outcome"], "nothing_to_do");
    // With --watch leaving Secrets out, every Secret is not watched.
    let r = env
        .explain_json(&["deployment/web", "-n", NS, "--watch", "configmaps"])
        .await;
    assert_eq!(source(&r, "quiet")["state"], "not_watched", "{r:#}");
}

e2e!(a_secret_lists_the_workloads_that_use_it_and_which_keys);
async fn a_secret_lists_the_workloads_that_use_it_and_which_keys(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1"), ("user", "app")])
        .await;
    env.deployment(NS, "web", secret_key_ref("db", "password"))
        .await;
    env.workload(
        "cronjobs",
        NS,
        "report",
        &[("hashroll.dev/reload", "true")],
        env_from_secret("db"),
    )
    .await;
    env.workload(
        "deployments",
        NS,
        "plain",
        &[],
        secret_key_ref("db", "user"),
    )
    .await;
    let excludes = [
        ("hashroll.dev/reload", "true"),
        ("hashroll.dev/exclude-secrets", "db"),
    ];
    env.workload("deployments", NS, "ex", &excludes, env_from_secret("db"))
        .await;
    env.deployment(NS, "other", env_from_secret("unrelated"))
        .await;

    let r = env.explain_json(&["secret/db", "-n", NS]).await;
    assert_eq!(r["state"], "exists", "{r:#}");
    assert_eq!(r["keys"], json!(["password", "user"]));
    let users: Vec<(String, String, Value)> = r["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                format!(
                    "{}/{}",
                    u["kind"].as_str().unwrap(),
                    u["name"].as_str().unwrap()
                ),
                u["state"].as_str().unwrap().to_string(),
                u["keys"].clone(),
            )
        })
        .collect();
    for want in [
        ("Deployment/web", "tracked", json!(["password"])),
        ("CronJob/report", "tracked", json!("all")),
        ("Deployment/plain", "not_opted_in", json!(["user"])),
        ("Deployment/ex", "excluded", json!("all")),
    ] {
        let want = (want.0.to_string(), want.1.to_string(), want.2);
        assert!(users.contains(&want), "{want:?} in {users:?}");
    }
    assert_eq!(users.len(), 4, "{users:?}");
    let (code, text, _) = env.explain(&["secret/db", "-n", NS]).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("Deployment web: tracked") && text.contains("keys: password"),
        "{text}"
    );
}

e2e!(without_the_key_it_says_what_it_can_still_tell);
async fn without_the_key_it_says_what_it_can_still_tell(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.deployment(NS, "web", env_from_secret("db")).await;
    env.deployment(NS, "waiting", env_from_secret("absent"))
        .await;
    record(&env, &["web"]).await;
    let other_key = ["--key-secret", "not-there"];
    let r = env
        .explain_json(&["deployment/web", "-n", NS, other_key[0], other_key[1]])
        .await;
    assert_eq!(r["verdict"]["outcome"], "unknown", "{r:#}");
    assert_eq!(source(&r, "db")["state"], "unknown");
    assert!(
        r["notes"][0]
            .as_str()
            .unwrap()
            .contains("cannot read the installation key"),
        "{r:#}"
    );
    // A hold does not need the key.
    let r = env
        .explain_json(&["deployment/waiting", "-n", NS, other_key[0], other_key[1]])
        .await;
    assert_eq!(r["verdict"]["outcome"], "held", "{r:#}");
    // An object that does not exist is an error, said on stderr.
    let (code, _, err) = env.explain(&["deployment/nope", "-n", NS]).await;
    assert_eq!(code, 1);
    assert!(err.contains("Deployment shop/nope not found"), "{err}");
}

/// Binds a Role with `rules` in `ns` to hashroll's ServiceAccount.
async fn grant(env: &Env, ns: &str, rules: Value) {
    let rbac = |kind: &str, plural: &str| {
        let ar = ApiResource {
            group: "rbac.authorization.k8s.io".into(),
            version: "v1".into(),
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        Api::<DynamicObject>::namespaced_with(env.client.clone(), ns, &ar)
    };
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "hashroll", "namespace": ns}, "rules": rules});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "hashroll", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hashroll"},
        "subjects": [{"kind": "ServiceAccount", "name": "hashroll", "namespace": "hashroll"}]});
    for (api, doc) in [
        (rbac("Role", "roles"), role),
        (rbac("RoleBinding", "rolebindings"), binding),
    ] {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(doc).unwrap(),
        )
        .await
        .unwrap();
    }
}

e2e!(it_needs_no_more_than_the_controllers_rbac);
async fn it_needs_no_more_than_the_controllers_rbac(on: Server) {
    let env = Env::start_with(
        on,
        // No Rollouts served: the grant below is the chart's without them.
        Setup {
            rbac: true,
            rollouts: false,
        },
    )
    .await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1"), ("user", "app")])
        .await;
    env.deployment(NS, "web", secret_key_ref("db", "password"))
        .await;
    // The chart's rules: list and watch, patch the workloads, create Events; the key Secret by name.
    grant(
        &env,
        NS,
        json!([
            {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"],
             "verbs": ["list", "watch", "patch"]},
            {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["list", "watch", "patch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
        ]),
    )
    .await;
    grant(
        &env,
        "hashroll",
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["hashroll-key"],
             "verbs": ["get"]},
        ]),
    )
    .await;
    let kubeconfig = env
        .kubeconfig_for_service_account("hashroll", "hashroll")
        .await;
    env.wait_allowed(&kubeconfig, "list", "apps", "deployments", Some(NS))
        .await;
    env.wait_allowed(&kubeconfig, "create", "", "secrets", Some("hashroll"))
        .await;
    let as_hashroll = kubeconfig.display().to_string();

    let hr = env
        .hashroll_until(&kubeconfig, &["--namespaces", NS], Until::Ready)
        .await;
    env.wait_recorded("deployments", NS, "web").await;
    assert!(hr.stop().await.0.success());
    env.secret(NS, "db", &[("password", "p2"), ("user", "app")])
        .await;
    let flags = ["-n", NS, "--kubeconfig", &as_hashroll, "--namespaces", NS];
    let r = env
        .explain_json(&[&["deployment/web"][..], &flags].concat())
        .await;
    assert_eq!(r["verdict"]["outcome"], "would_roll", "{r:#}");
    let r = env
        .explain_json(&[&["secret/db"][..], &flags].concat())
        .await;
    assert_eq!(r["users"][0]["name"], "web", "{r:#}");
    assert!(r.get("notes").is_none(), "{r:#}");
}
