//! Smoke test: the server starts, and kube-rs can create, read, list, update, watch and delete through it.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube_testserver::{Fault, RequestMatch, ServerOptions, TestServer, WorkloadSim};
use serde_json::json;

fn secret(name: &str, value: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": "smoke" } },
        "stringData": { "key": value },
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_and_watch_through_kube_rs() {
    let server = TestServer::start().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");

    let created = secrets
        .create(&PostParams::default(), &secret("one", "v1"))
        .await
        .unwrap();
    let rv0 = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());
    assert_eq!(created.data.unwrap()["key"].0, b"v1");

    // A watch from the creation RV sees exactly the later changes, in order.
    let mut events = secrets
        .watch(&WatchParams::default().timeout(10), &rv0)
        .await
        .unwrap()
        .boxed();

    let patch = json!({ "stringData": { "key": "v2" } });
    secrets
        .patch("one", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &secret("two", "x"))
        .await
        .unwrap();
    secrets
        .delete("one", &DeleteParams::default())
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(s) => seen.push(format!("ADDED {}", s.metadata.name.unwrap())),
            WatchEvent::Modified(s) => {
                assert_eq!(s.data.unwrap()["key"].0, b"v2");
                seen.push(format!("MODIFIED {}", s.metadata.name.unwrap()))
            }
            WatchEvent::Deleted(s) => seen.push(format!("DELETED {}", s.metadata.name.unwrap())),
            other => panic!("unexpected watch event {other:?}"),
        }
    }
    assert_eq!(seen, ["MODIFIED one", "ADDED two", "DELETED one"]);

    let listed = secrets
        .list(&ListParams::default().labels("app=smoke"))
        .await
        .unwrap();
    let names: Vec<_> = listed
        .items
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["two"]);

    let err = secrets.get("one").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.message == "secrets \"one\" not found"),
        "{err:?}"
    );

    // A stale resourceVersion on update is a 409 Conflict.
    let mut stale = secrets.get("two").await.unwrap();
    secrets
        .patch(
            "two",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    stale.metadata.labels = Some([("z".to_string(), "1".to_string())].into());
    let err = secrets
        .replace("two", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    server.shutdown().await;
}

#[tokio::test]
async fn workload_simulator_rollout_record_and_faults() {
    let opts = ServerOptions {
        workload_controller: WorkloadSim::Immediate,
        ..Default::default()
    };
    let server = TestServer::start_with(opts).await.unwrap();
    let ctl = server.control();
    let deploys: Api<Deployment> = Api::namespaced(server.client(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "c", "image": "i" }] } }
        }
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let roll = json!({ "spec": { "template": { "metadata": { "annotations": { "hashroll/stamp": "abc" } } } } });
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&roll))
        .await
        .unwrap();

    let now = deploys.get("web").await.unwrap();
    assert_eq!(now.metadata.generation, Some(2));
    let status = now.status.unwrap();
    assert_eq!(
        (status.observed_generation, status.updated_replicas),
        (Some(2), Some(2))
    );

    let record = ctl.rollouts("deployments", "default", "web");
    assert_eq!(record.len(), 2);
    assert_eq!(record[1].annotations["hashroll/stamp"], "abc");
    assert_eq!(record[1].generation, 2);

    // kube-rs retries 503s by itself, so inject a 500 to see the error surface.
    ctl.fail_next(
        1,
        RequestMatch {
            verb: Some("get".into()),
            ..Default::default()
        },
        Fault::Status(500),
    );
    let err = deploys.get("web").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 500 && s.reason == "InternalError"),
        "{err:?}"
    );
    deploys.get("web").await.unwrap();
    assert_eq!(ctl.request_count("get", "deployments"), 3);
    assert_eq!(ctl.request_count("patch", "deployments"), 1);

    server.shutdown().await;
}

#[tokio::test]
async fn restart_keeps_data_and_compaction_expires_old_watches() {
    let server = TestServer::start().await.unwrap();
    let ctl = server.control();
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let s = secrets
        .create(&PostParams::default(), &secret("kept", "v"))
        .await
        .unwrap();
    let old_rv = s.metadata.resource_version.unwrap();
    secrets
        .patch(
            "kept",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"n": "1"}}})),
        )
        .await
        .unwrap();

    ctl.restart(Duration::from_millis(100)).await;
    let after = secrets.get("kept").await.unwrap();
    assert_eq!(after.metadata.labels.unwrap()["n"], "1");

    ctl.compact();
    let mut events = secrets
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message
                    .starts_with(&format!("too old resource version: {old_rv} (")),
                "{}",
                e.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    server.shutdown().await;
}
