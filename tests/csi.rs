//! End to end: workloads mounting a SecretProviderClass (the Secrets Store CSI driver) roll once per
//! rotation, however many pods report it and in whatever order, never for their own new pods, and never
//! for an ignored class; what rotated while hashroll was down rolls once when it starts.

mod common;

use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

use common::{Env, Server, e2e, pod};

const NS: &str = "vaulted";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "secrets-store.csi.x-k8s.io".into(),
        version: "v1".into(),
        api_version: "secrets-store.csi.x-k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn classes(env: &Env) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client.clone(),
        NS,
        &resource("SecretProviderClass", "secretproviderclasses"),
    )
}

fn statuses(env: &Env) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client.clone(),
        NS,
        &resource(
            "SecretProviderClassPodStatus",
            "secretproviderclasspodstatuses",
        ),
    )
}

async fn class(env: &Env, name: &str, annotations: serde_json::Value) {
    let obj = json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"provider": "vault", "parameters": {"roleName": "app"}},
    });
    classes(env)
        .create(
            &PostParams::default(),
            &serde_json::from_value(obj).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("create SecretProviderClass {name}: {e}"));
}

/// What the driver writes for pod `pod` mounting class `class`: the versions of its objects. Created
/// when missing, its status replaced otherwise (as the driver rewrites it at each rotation).
async fn pod_status(env: &Env, pod: &str, class: &str, versions: &[(&str, &str)]) {
    let name = format!("{pod}-{NS}-{class}");
    let api = statuses(env);
    if api.get_opt(&name).await.unwrap().is_none() {
        let obj = json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClassPodStatus",
            "metadata": {"name": name, "namespace": NS,
                         "labels": {"internal.secrets-store.csi.k8s.io/node-name": "node-1"}},
        });
        api.create(
            &PostParams::default(),
            &serde_json::from_value(obj).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("create status {name}: {e}"));
    }
    let objects: Vec<_> = versions
        .iter()
        .map(|(id, v)| json!({"id": id, "version": v}))
        .collect();
    let status = json!({"status": {
        "podName": pod, "secretProviderClassName": class, "mounted": true,
        "targetPath": format!("/var/lib/kubelet/pods/{pod}/volumes/kubernetes.io~csi/secrets/mount"),
        "objects": objects,
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("write status {name}: {e}"));
}

async fn pod_gone(env: &Env, pod: &str, class: &str) {
    statuses(env)
        .delete(&format!("{pod}-{NS}-{class}"), &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete status of {pod}: {e}"));
}

fn mounting(class: &str) -> serde_json::Value {
    let mut spec = pod(json!({"volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets"}]}));
    spec["volumes"] = json!([{"name": "secrets", "csi": {
        "driver": "secrets-store.csi.k8s.io", "readOnly": true,
        "volumeAttributes": {"secretProviderClass": class}}}]);
    spec
}

const V1: [(&str, &str); 2] = [("secret/db-password", "1"), ("secret/api-key", "7")];
const V2: [(&str, &str); 2] = [("secret/db-password", "2"), ("secret/api-key", "7")];
const V3: [(&str, &str); 2] = [("secret/db-password", "3"), ("secret/api-key", "7")];

e2e!(a_rotation_seen_through_three_pods_statuses_rolls_once);
async fn a_rotation_seen_through_three_pods_statuses_rolls_once(on: Server) {
    let env = Env::start_csi(on).await;
    env.namespace(NS).await;
    class(&env, "vault-db", json!({})).await;
    env.workload(
        "deployments",
        NS,
        "web",
        &[("hashroll.dev/reload", "true")],
        mounting("vault-db"),
    )
    .await;
    for p in ["web-a", "web-b", "web-c"] {
        pod_status(&env, p, "vault-db", &V1).await;
    }
    let hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 0).await;

    // The driver rotates db-password pod after pod (hashroll's debounce is 0 here: each is seen apart).
    for p in ["web-a", "web-b", "web-c"] {
        pod_status(&env, p, "vault-db", &V2).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.wait_rolls("deployments", NS, "web", 1).await;
    // The roll replaces the pods: new ones mount the new versions, the old ones go.
    for (new, old) in [("web-d", "web-a"), ("web-e", "web-b"), ("web-f", "web-c")] {
        pod_status(&env, new, "vault-db", &V2).await;
        pod_gone(&env, old, "vault-db").await;
    }
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
    let events = env.wait_event(NS, "web", "Reloaded").await;
    let note = &events[0].2;
    assert!(
        note.contains("SecretProviderClass vault-db (keys: secret/db-password)"),
        "{note}"
    );

    // A restart with nothing rotated rolls nothing; a rotation while hashroll is down rolls once.
    hr.stop().await;
    let hr = env.hashroll(&[]).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
    hr.stop().await;
    pod_status(&env, "web-e", "vault-db", &V3).await;
    let _hr = env.hashroll(&[]).await;
    env.wait_rolls("deployments", NS, "web", 2).await;
    for p in ["web-d", "web-f"] {
        pod_status(&env, p, "vault-db", &V3).await;
    }
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 2).await;

    // `explain` reads the class as the controller does: tracked, and as recorded.
    let (code, out, err) = env.explain(&["deployment/web", "-n", NS]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("SecretProviderClass vault-db: same as recorded"),
        "{out}"
    );
}

e2e!(an_ignored_secret_provider_class_rolls_nothing);
async fn an_ignored_secret_provider_class_rolls_nothing(on: Server) {
    let env = Env::start_csi(on).await;
    env.namespace(NS).await;
    class(
        &env,
        "ignored",
        json!({"reloader.stakater.com/ignore": "true"}),
    )
    .await;
    class(&env, "watched", json!({})).await;
    // Opted in with Reloader's annotation for SecretProviderClasses.
    let opt_in = [("secretproviderclass.reloader.stakater.com/auto", "true")];
    env.workload("deployments", NS, "quiet", &opt_in, mounting("ignored"))
        .await;
    env.workload("deployments", NS, "loud", &opt_in, mounting("watched"))
        .await;
    pod_status(&env, "quiet-a", "ignored", &V1).await;
    pod_status(&env, "loud-a", "watched", &V1).await;
    let _hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "quiet").await;
    env.wait_recorded("deployments", NS, "loud").await;

    pod_status(&env, "quiet-a", "ignored", &V2).await;
    pod_status(&env, "loud-a", "watched", &V2).await;
    env.wait_rolls("deployments", NS, "loud", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "quiet", 0).await;
    env.assert_rolls("deployments", NS, "loud", 1).await;
}
