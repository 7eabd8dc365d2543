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
            WatchEvent::Bookmark(_) => {}
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

    // A cut connection surfaces as a transport error, not as a status.
    ctl.cut_next(
        1,
        RequestMatch {
            resource: Some("deployments".into()),
            ..Default::default()
        },
    );
    let err = deploys.get("web").await.unwrap_err();
    assert!(!matches!(err, kube::Error::Api(_)), "{err:?}");
    deploys.get("web").await.unwrap();
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

#[tokio::test]
async fn streaming_list_watcher_and_selector_transitions() {
    use kube::runtime::watcher;

    let server = TestServer::start().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    for i in 0..5 {
        secrets
            .create(&PostParams::default(), &secret(&format!("s{i}"), "v"))
            .await
            .unwrap();
    }

    // Pagination: pages of two, all five names, in order.
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = secrets.list(&lp).await.unwrap();
        names.extend(page.items.iter().map(|s| s.metadata.name.clone().unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4"]);

    // kube-runtime's streaming-list watcher relies on sendInitialEvents and the initial-events-end bookmark.
    let cfg = watcher::Config::default()
        .labels("app=smoke")
        .streaming_lists();
    let mut stream = watcher(secrets.clone(), cfg).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::Init => {}
            watcher::Event::InitApply(s) => initial.push(s.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected event before InitDone: {other:?}"),
        }
    }
    assert_eq!(initial.len(), 5);

    // Relabelling an object out of the selector reads as a deletion to this watcher.
    let relabel = json!({ "metadata": { "labels": { "app": "other" } } });
    secrets
        .patch("s3", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        watcher::Event::Delete(s) => assert_eq!(s.metadata.name.as_deref(), Some("s3")),
        other => panic!("expected Delete for s3, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn rbac_denies_with_the_real_message_until_bound() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

    let server = TestServer::start_with(ServerOptions {
        rbac: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = server.client();
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap(),
    )
    .await
    .unwrap();
    let sa = server.client_for_token("system:serviceaccount:hr:hashroll");
    let theirs: Api<Secret> = Api::namespaced(sa.clone(), "team-a");
    let err = theirs.list(&ListParams::default()).await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected a Status, got {err:?}")
    };
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "secrets is forbidden: User \"system:serviceaccount:hr:hashroll\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team-a\""
    );

    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "read-secrets"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), "team-a")
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "hashroll"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets"},
        "subjects": [{"kind": "ServiceAccount", "name": "hashroll", "namespace": "hr"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin, "team-a")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    assert!(
        theirs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Bound for list, not for get.
    let err = theirs.get("x").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403 && s.message.starts_with("secrets \"x\" is forbidden")),
        "{err:?}"
    );

    let nobody = server.client_for_token("not-a-token");
    let err = Api::<Secret>::namespaced(nobody, "team-a")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 401),
        "{err:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bookmarks_timeouts_and_closed_watches() {
    let opts = ServerOptions {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let server = TestServer::start_with(opts).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let s = secrets
        .create(&PostParams::default(), &secret("b", "v"))
        .await
        .unwrap();
    let rv = s.metadata.resource_version.unwrap();

    let mut events = secrets
        .watch(
            &WatchParams {
                bookmarks: true,
                ..Default::default()
            },
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }

    // timeoutSeconds ends the stream cleanly.
    let quiet = WatchParams {
        bookmarks: false,
        ..Default::default()
    };
    let mut short = secrets
        .watch(&quiet.clone().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    let end = tokio::time::timeout(Duration::from_secs(5), short.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(end.is_none(), "{end:?}");

    // close_watches ends every open watch.
    let mut open = secrets.watch(&quiet, &rv).await.unwrap().boxed();
    server.control().close_watches();
    let end = tokio::time::timeout(Duration::from_secs(5), open.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(end.is_none(), "{end:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn metadata_only_requests_get_partial_object_metadata() {
    use kube::core::PartialObjectMeta;
    use kube::runtime::{WatchStreamExt, watcher};

    let server = TestServer::start().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    secrets
        .create(&PostParams::default(), &secret("m", "v"))
        .await
        .unwrap();
    let meta = secrets.get_metadata("m").await.unwrap();
    assert_eq!(meta.types.unwrap().kind, "PartialObjectMetadata");
    let list = secrets.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("m"));

    // Api<PartialObjectMeta<K>> sends metadata-only Accept headers for list and watch.
    let metas: Api<PartialObjectMeta<Secret>> = Api::namespaced(server.client(), "default");
    let mut stream = watcher(metas, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("m"));
    secrets
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"n": "2"}}})),
        )
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.types.unwrap().kind, "PartialObjectMetadata");
    assert_eq!(next.metadata.labels.unwrap()["n"], "2");
    server.shutdown().await;
}

#[tokio::test]
async fn namespace_deletion_cascades_and_protects_default() {
    use k8s_openapi::api::core::v1::Namespace;

    let server = TestServer::start().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(server.client());
    let err = namespaces
        .delete("default", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );

    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "gone"}})).unwrap(),
        )
        .await
        .unwrap();
    let inside: Api<Secret> = Api::namespaced(server.client(), "gone");
    inside
        .create(&PostParams::default(), &secret("s", "v"))
        .await
        .unwrap();
    namespaces
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        Api::<Secret>::all(server.client())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let err = inside
        .create(&PostParams::default(), &secret("t", "v"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.message == "namespaces \"gone\" not found"),
        "{err:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn delayed_and_stuck_workload_status() {
    let opts = ServerOptions {
        workload_controller: WorkloadSim::Delay(Duration::from_millis(300)),
        ..Default::default()
    };
    let server = TestServer::start_with(opts).await.unwrap();
    let deploys: Api<Deployment> = Api::namespaced(server.client(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "slow" },
        "spec": {
            "selector": { "matchLabels": { "app": "slow" } },
            "template": { "metadata": { "labels": { "app": "slow" } }, "spec": { "containers": [{ "name": "c", "image": "i" }] } }
        }
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let observed = |d: &Deployment| d.status.as_ref().and_then(|s| s.observed_generation);
    assert_eq!(observed(&deploys.get("slow").await.unwrap()), None);
    // Observed after the simulated delay; polled, so a loaded machine does not fail it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let now = loop {
        let d = deploys.get("slow").await.unwrap();
        if observed(&d).is_some() || std::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(observed(&now), Some(1));
    assert_eq!(now.status.unwrap().available_replicas, Some(1));

    // Never: a later spec change is never observed.
    server.control().set_workload_controller(WorkloadSim::Never);
    let roll = json!({ "spec": { "template": { "metadata": { "annotations": { "x": "1" } } } } });
    deploys
        .patch("slow", &PatchParams::default(), &Patch::Merge(&roll))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stuck = deploys.get("slow").await.unwrap();
    assert_eq!(
        (stuck.metadata.generation, observed(&stuck)),
        (Some(2), Some(1))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn kube_rs_works_through_the_written_kubeconfig_over_tls() {
    use kube::config::{KubeConfigOptions, Kubeconfig};

    let server = TestServer::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("kube-testserver-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    server
        .write_kubeconfig_for_token(&path, "serviceaccount:hr:hashroll")
        .unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        config
            .cluster_url
            .to_string()
            .starts_with("https://127.0.0.1:")
    );
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let secrets: Api<Secret> = Api::default_namespaced(client);
    secrets
        .create(&PostParams::default(), &secret("tls", "v"))
        .await
        .unwrap();
    assert_eq!(server.control().request_count("create", "secrets"), 1);
    std::fs::remove_dir_all(&dir).unwrap();
    server.shutdown().await;
}
