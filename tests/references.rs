//! End to end: every way a pod spec can use a Secret or ConfigMap rolls the workload when (and only when)
//! a key it uses changes, against the real `hashroll` binary and the test API server.

mod common;

use common::{Env, Server, e2e, pod};
use serde_json::{Value, json};

const NS: &str = "refs";

/// One way of using a source.
struct Case {
    /// Workload and source name.
    name: &'static str,
    /// `true`: a Secret, `false`: a ConfigMap.
    secret: bool,
    /// Whether a change of the `username` key (the pod spec may use `password` only) rolls.
    username_rolls: bool,
    pod_spec: Value,
}

fn env_key_ref(secret: bool, name: &str) -> Value {
    let selector = if secret {
        "secretKeyRef"
    } else {
        "configMapKeyRef"
    };
    json!({"env": [{"name": "PASSWORD", "valueFrom": {selector: {"name": name, "key": "password"}}}]})
}

fn env_from(secret: bool, name: &str) -> Value {
    let r = if secret { "secretRef" } else { "configMapRef" };
    json!({"envFrom": [{r: {"name": name}}]})
}

/// A pod whose init container carries `container` and whose main container uses nothing.
fn init_pod(container: Value) -> Value {
    let mut init = container;
    init["name"] = json!("init");
    init["image"] = json!("registry.example/init:1");
    let mut spec = pod(json!({}));
    spec["initContainers"] = json!([init]);
    spec
}

fn with_volume(volume: Value) -> Value {
    let mut spec = pod(json!({"volumeMounts": [{"name": "v", "mountPath": "/config"}]}));
    let mut v = volume;
    v["name"] = json!("v");
    spec["volumes"] = json!([v]);
    spec
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (secret, kind) in [(true, "secret"), (false, "cm")] {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let name = leak(format!("{kind}-env-key"));
        out.push(Case {
            name,
            secret,
            username_rolls: false,
            pod_spec: pod(env_key_ref(secret, name)),
        });
        let name = leak(format!("{kind}-init-env-key"));
        out.push(Case {
            name,
            secret,
            username_rolls: false,
            pod_spec: init_pod(env_key_ref(secret, name)),
        });
        let name = leak(format!("{kind}-env-from"));
        out.push(Case {
            name,
            secret,
            username_rolls: true,
            pod_spec: pod(env_from(secret, name)),
        });
        let name = leak(format!("{kind}-init-env-from"));
        out.push(Case {
            name,
            secret,
            username_rolls: true,
            pod_spec: init_pod(env_from(secret, name)),
        });
        let name = leak(format!("{kind}-volume"));
        let volume = if secret {
            json!({"secret": {"secretName": name}})
        } else {
            json!({"configMap": {"name": name}})
        };
        out.push(Case {
            name,
            secret,
            username_rolls: true,
            pod_spec: with_volume(volume),
        });
        let name = leak(format!("{kind}-volume-items"));
        let items = json!([{"key": "password", "path": "password.txt"}]);
        let volume = if secret {
            json!({"secret": {"secretName": name, "items": items}})
        } else {
            json!({"configMap": {"name": name, "items": items}})
        };
        out.push(Case {
            name,
            secret,
            username_rolls: false,
            pod_spec: with_volume(volume),
        });
        let source = if secret { "secret" } else { "configMap" };
        let name = leak(format!("{kind}-projected"));
        out.push(Case {
            name,
            secret,
            username_rolls: true,
            pod_spec: with_volume(json!({"projected": {"sources": [{source: {"name": name}}]}})),
        });
        let name = leak(format!("{kind}-projected-items"));
        out.push(Case {
            name,
            secret,
            username_rolls: false,
            pod_spec: with_volume(json!({"projected": {"sources": [
                {source: {"name": name, "items": items}}]}})),
        });
    }
    out
}

async fn set_source(env: &Env, c: &Case, username: &str, password: &str) {
    let data = [("username", username), ("password", password)];
    if c.secret {
        env.secret(NS, c.name, &data).await
    } else {
        env.configmap(NS, c.name, &data).await
    }
}

e2e!(every_reference_kind_rolls_for_the_keys_it_uses_only);
async fn every_reference_kind_rolls_for_the_keys_it_uses_only(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    let cases = cases();
    for c in &cases {
        set_source(&env, c, "user-1", &format!("{}-pw-1", c.name)).await;
        env.deployment(NS, c.name, c.pod_spec.clone()).await;
    }
    let hr = env.hashroll(&[]).await;
    for c in &cases {
        env.wait_recorded("deployments", NS, c.name).await;
        env.assert_rolls("deployments", NS, c.name, 0).await;
    }

    // A key the pod spec does not use: only whole-source uses roll.
    for c in &cases {
        set_source(&env, c, "user-2", &format!("{}-pw-1", c.name)).await;
    }
    for c in cases.iter().filter(|c| c.username_rolls) {
        env.wait_rolls("deployments", NS, c.name, 1).await;
    }
    env.barrier(NS).await;
    for c in &cases {
        env.assert_rolls("deployments", NS, c.name, usize::from(c.username_rolls))
            .await;
    }

    // The key every use covers: each rolls exactly once more.
    for c in &cases {
        set_source(&env, c, "user-2", &format!("{}-pw-2", c.name)).await;
    }
    for c in &cases {
        let expected = usize::from(c.username_rolls) + 1;
        env.wait_rolls("deployments", NS, c.name, expected).await;
    }
    env.barrier(NS).await;
    for c in &cases {
        let expected = usize::from(c.username_rolls) + 1;
        env.assert_rolls("deployments", NS, c.name, expected).await;
        env.assert_rolled_annotations("deployments", NS, c.name)
            .await;
        let kind = if c.secret { "Secret" } else { "ConfigMap" };
        let reloaded = env.wait_event(NS, c.name, "Reloaded").await;
        assert_eq!(reloaded.len(), expected, "{}: one Event per roll", c.name);
        let last_password_roll = reloaded
            .iter()
            .find(|(_, _, note)| note.contains("password"))
            .unwrap_or_else(|| panic!("{}: no Event names the key password: {reloaded:?}", c.name));
        assert!(
            last_password_roll.2.contains(&format!("{kind} {}", c.name)),
            "{}: the Event names the source: {:?}",
            c.name,
            last_password_roll.2
        );
        for (type_, _, note) in &reloaded {
            assert_eq!(type_, "Normal");
            assert!(
                !note.contains("pw-") && !note.contains("user-"),
                "{}: an Event reveals a value: {note:?}",
                c.name
            );
        }
    }
    drop(hr);
}

e2e!(metadata_only_changes_and_identical_writes_roll_nothing);
async fn metadata_only_changes_and_identical_writes_roll_nothing(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.configmap(NS, "app", &[("mode", "fast")]).await;
    let spec =
        pod(json!({"envFrom": [{"secretRef": {"name": "db"}}, {"configMapRef": {"name": "app"}}]}));
    env.deployment(NS, "web", spec).await;
    let _hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;

    // Labels only, then annotations only.
    env.secret_full(NS, "db", &[("password", "p1")], &[], &[("team", "a")])
        .await;
    env.configmap_full(NS, "app", &[("mode", "fast")], &[], &[("team", "a")])
        .await;
    env.secret_full(
        NS,
        "db",
        &[("password", "p1")],
        &[("owner", "someone")],
        &[("team", "a")],
    )
    .await;
    env.configmap_with(NS, "app", &[("mode", "fast")], &[("owner", "someone")])
        .await;
    // Identical data written another way: base64 `data` by a full replace instead of `stringData`.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), NS);
    let mut current = secrets.get("db").await.unwrap();
    current.string_data = None;
    current.data = Some(
        [(
            "password".to_string(),
            k8s_openapi::ByteString(b"p1".to_vec()),
        )]
        .into(),
    );
    current
        .metadata
        .labels
        .get_or_insert_default()
        .insert("rev".into(), "2".into());
    secrets
        .replace("db", &Default::default(), &current)
        .await
        .unwrap();
    let stored = secrets.get("db").await.unwrap().metadata;
    assert_eq!(
        (
            stored.labels.unwrap_or_default().get("rev"),
            stored.annotations.unwrap_or_default().get("owner")
        ),
        (Some(&"2".to_string()), Some(&"someone".to_string())),
        "the metadata writes really happened"
    );
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 0).await;
    assert!(
        !env.template_annotations("deployments", NS, "web")
            .await
            .contains_key("hashroll.dev/hash")
    );

    // The same workload still rolls for a real change.
    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.assert_rolled_annotations("deployments", NS, "web")
        .await;
}
