//! Fidelity suite: kube-rs (typed `Api`s and the `watcher`) drives an in-process `TestServer`, and each
//! test checks behaviour a kube-rs controller relies on: CRUD, every patch type, watch recovery,
//! optimistic concurrency, generation rules, Secret semantics, finalizers, selectors, faults and RBAC.
//!
//! `KUBE_TESTSERVER_FIDELITY=real` runs the same checks against a real kube-apiserver (`fidelity/mod.rs`).

mod fidelity;

use std::fmt::Debug;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use kube_testserver::{Control, Fault, RequestMatch, ServerOptions, TestServer};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Upper bound for any single expected event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

type Events<K> = Pin<Box<dyn Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send>>;

/// The server one test runs against: a `TestServer` of its own, or (`KUBE_TESTSERVER_FIDELITY=real`)
/// the binary's real cluster, in a namespace of the test's own. Clients default to that namespace
/// (`default` on the test server).
struct Target {
    server: Option<TestServer>,
    client: Client,
    ns: String,
    /// The real cluster's kubeconfig, for clients with other credentials.
    kubeconfig: Option<kube::config::Kubeconfig>,
}

impl Target {
    async fn start() -> Target {
        Target::start_with(ServerOptions::default()).await
    }

    /// `opts` apply to the test server; the real cluster is what it is (RBAC on).
    async fn start_with(opts: ServerOptions) -> Target {
        if !fidelity::real() {
            let server = TestServer::start_with(opts).await.unwrap();
            return Target {
                client: server.client(),
                server: Some(server),
                ns: "default".into(),
                kubeconfig: None,
            };
        }
        let cluster = fidelity::real_cluster();
        let kubeconfig = kube::config::Kubeconfig::read_from(&cluster.kubeconfig)
            .expect("the real cluster's kubeconfig");
        let ns = fidelity::unique_namespace();
        let mut config = kube::Config::from_custom_kubeconfig(
            kubeconfig.clone(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("a client config from the real cluster's kubeconfig");
        config.default_namespace = ns.clone();
        let client = Client::try_from(config).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &from_json(json!({ "metadata": { "name": ns } })),
            )
            .await
            .unwrap_or_else(|e| panic!("creating namespace {ns} on the real cluster: {e}"));
        Target {
            server: None,
            client,
            ns,
            kubeconfig: Some(kubeconfig),
        }
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    /// The test's namespace.
    fn ns(&self) -> &str {
        &self.ns
    }

    fn is_real(&self) -> bool {
        self.server.is_none()
    }

    /// The test server's controls; `None` on the real server.
    fn control(&self) -> Option<Control> {
        self.server.as_ref().map(TestServer::control)
    }

    /// A client for bearer `token` that does not retry 429/503/504 on its own.
    async fn client_for_token(&self, token: &str) -> Client {
        let mut config = match (&self.server, &self.kubeconfig) {
            (Some(server), _) => kube::Config::new(server.url().parse().unwrap()),
            (None, Some(kc)) => kube::Config::from_custom_kubeconfig(
                kc.clone(),
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .unwrap(),
            (None, None) => unreachable!("a real target has a kubeconfig"),
        };
        config.default_namespace = self.ns.clone();
        config.default_retry = false;
        config.auth_info = from_json(json!({ "token": token }));
        Client::try_from(config).unwrap()
    }

    /// Sends one request as the admin through the client's raw `send` (for what typed clients cannot
    /// express or do not expose, such as status codes and invalid bodies); returns the status code and
    /// the JSON body.
    async fn raw(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Accept", "application/json")
            .header("Content-Type", "application/json")
            .body(kube::client::Body::from(body.as_bytes().to_vec()))
            .unwrap();
        let resp = self.client.send(req).await.expect("an HTTP response");
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect_bytes().await.unwrap();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The Deployment once its controller is done with it: on the real server, once status reports every
    /// replica of the current generation updated and available and the object has stopped changing;
    /// on the test server (no controller) at once.
    async fn settled(&self, deploys: &Api<Deployment>, name: &str) -> Deployment {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut last: Option<(String, tokio::time::Instant)> = None;
        loop {
            let d = deploys.get(name).await.unwrap();
            if !self.is_real() {
                return d;
            }
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let s = d.status.clone().unwrap_or_default();
            let done = s.observed_generation == d.metadata.generation
                && s.replicas.unwrap_or(0) == want
                && s.updated_replicas.unwrap_or(0) == want
                && s.available_replicas.unwrap_or(0) == want;
            let rv = d.resource_version().unwrap_or_default();
            let now = tokio::time::Instant::now();
            match &last {
                Some((prev, since)) if done && *prev == rv => {
                    if now - *since >= Duration::from_millis(1500) {
                        return d;
                    }
                }
                _ => last = Some((rv, now)),
            }
            assert!(now < deadline, "deployment {name} did not settle: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shutdown(self) {
        if let Some(server) = self.server {
            server.shutdown().await;
        }
    }
}

fn from_json<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("test fixtures are valid objects")
}

fn config_map(name: &str, labels: Value, data: Value) -> ConfigMap {
    from_json(json!({ "metadata": { "name": name, "labels": labels }, "data": data }))
}

fn deployment(name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [
                    { "name": "app", "image": "nginx:1.25" },
                    { "name": "sidecar", "image": "busybox:1.36" }
                ] }
            }
        }
    })
}

/// A client for `token` that does not retry 429/503/504 on its own, so injected faults reach the test.
fn client_without_retries(server: &TestServer, token: &str) -> Client {
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.default_namespace = "default".into();
    config.default_retry = false;
    config.auth_info = from_json(json!({ "token": token }));
    Client::try_from(config).unwrap()
}

/// The API error inside a kube-rs error, or a test failure naming what was expected.
fn api_error(e: kube::Error, expected: &str) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error ({expected}), got {other:?}"),
    }
}

fn name_of<K: Resource>(k: &K) -> String {
    k.meta().name.clone().unwrap_or_default()
}

/// Polls `events` until `f` picks an item, failing with `what` after [`EVENT_TIMEOUT`].
async fn wait_for<K: Debug, T>(
    events: &mut Events<K>,
    what: &str,
    mut f: impl FnMut(&Result<watcher::Event<K>, watcher::Error>) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let item = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("the watcher ended while waiting for {what}"));
        if let Some(t) = f(&item) {
            return t;
        }
    }
}

/// Waits for an `Apply` of the named object.
async fn wait_applied<K: Resource + Clone + Debug>(events: &mut Events<K>, name: &str) -> K {
    wait_for(events, &format!("Apply of {name}"), |e| match e {
        Ok(watcher::Event::Apply(k)) if name_of(k) == name => Some(k.clone()),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn api_crud_round_trips_objects() {
    let server = Target::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());

    let created = cms
        .create(
            &PostParams::default(),
            &config_map("app", json!({ "a": "b" }), json!({ "k": "v1" })),
        )
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some(server.ns()));
    assert!(
        meta.uid.as_deref().is_some_and(|u| u.len() == 36),
        "{meta:?}"
    );
    assert!(meta.creation_timestamp.is_some());
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();

    let got = cms.get("app").await.unwrap();
    assert_eq!(got.data.as_ref().unwrap()["k"], "v1");
    assert_eq!(got.metadata.uid, created.metadata.uid);

    let mut changed = got.clone();
    changed.data = Some([("k".to_string(), "v2".to_string())].into());
    let replaced = cms
        .replace("app", &PostParams::default(), &changed)
        .await
        .unwrap();
    let rv2: u64 = replaced.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1, "an update moves resourceVersion forward");
    assert_eq!(replaced.data.unwrap()["k"], "v2");
    assert_eq!(replaced.metadata.uid, created.metadata.uid);

    // By label: a real cluster has a kube-root-ca.crt ConfigMap in every namespace.
    let list = cms
        .list(&ListParams::default().labels("a=b"))
        .await
        .unwrap();
    assert_eq!(list.items.iter().map(name_of).collect::<Vec<_>>(), ["app"]);
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= rv2);

    cms.delete("app", &DeleteParams::default()).await.unwrap();
    let err = api_error(cms.get("app").await.unwrap_err(), "404 after delete");
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (404, "NotFound", "configmaps \"app\" not found")
    );
    let err = api_error(
        cms.delete("app", &DeleteParams::default())
            .await
            .unwrap_err(),
        "404 on a second delete",
    );
    assert_eq!(err.code, 404);

    let deploys: Api<Deployment> = Api::default_namespaced(server.client());
    let err = api_error(
        deploys.get("nope").await.unwrap_err(),
        "404 for a missing deployment",
    );
    assert_eq!(err.message, "deployments.apps \"nope\" not found");
    server.shutdown().await;
}

#[tokio::test]
async fn delete_without_finalizers_answers_a_success_status() {
    let server = Target::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let created = cms
        .create(
            &PostParams::default(),
            &config_map("bye", json!({}), json!({})),
        )
        .await
        .unwrap();
    let answer = cms.delete("bye", &DeleteParams::default()).await.unwrap();
    assert!(
        answer.is_right(),
        "an immediately deleted ConfigMap answers a Status, not the object: {answer:?}"
    );
    let status = answer.right().unwrap();
    assert_eq!(
        status.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    let d = status.details.expect("a delete Status names the object");
    assert_eq!(
        (d.name.as_str(), d.kind.as_str(), Some(d.uid.as_str())),
        ("bye", "configmaps", created.metadata.uid.as_deref())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn every_patch_type_applies_its_own_semantics() {
    let server = Target::start().await;
    let deploys: Api<Deployment> = Api::default_namespaced(server.client());
    deploys
        .create(&PostParams::default(), &from_json(deployment("web", 2)))
        .await
        .unwrap();
    let images = |d: &Deployment| -> Vec<(String, String)> {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
            .collect()
    };

    // Strategic merge: containers merge by name.
    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({ "spec": { "template": { "spec": { "containers": [
                { "name": "app", "image": "nginx:1.27" }
            ] } } } })),
        )
        .await
        .unwrap();
    assert_eq!(
        images(&d),
        [
            ("app".into(), "nginx:1.27".into()),
            ("sidecar".into(), "busybox:1.36".into())
        ]
    );

    // JSON merge patch: lists are replaced, null deletes.
    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": { "labels": { "app": null, "tier": "fe" } },
                "spec": { "template": { "spec": { "containers": [
                    { "name": "only", "image": "alpine:3" }
                ] } } }
            })),
        )
        .await
        .unwrap();
    assert_eq!(images(&d), [("only".into(), "alpine:3".into())]);
    assert_eq!(
        d.metadata.labels.unwrap(),
        [("tier".to_string(), "fe".to_string())].into()
    );

    // JSON patch: ordered operations, and a failed test aborts the whole patch with 422.
    let ops = from_json(json!([
        { "op": "replace", "path": "/spec/replicas", "value": 7 },
        { "op": "add", "path": "/metadata/annotations", "value": { "note": "x" } }
    ]));
    let d = deploys
        .patch("web", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(7));
    assert_eq!(d.metadata.annotations.unwrap()["note"], "x");
    let failing = from_json(json!([
        { "op": "test", "path": "/spec/replicas", "value": 1 },
        { "op": "replace", "path": "/spec/replicas", "value": 1 }
    ]));
    let err = api_error(
        deploys
            .patch("web", &PatchParams::default(), &Patch::<()>::Json(failing))
            .await
            .unwrap_err(),
        "422 for a failed JSON patch test",
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "the server rejected our request due to an error in our request"
    );
    assert_eq!(
        deploys.get("web").await.unwrap().spec.unwrap().replicas,
        Some(7)
    );

    // Server-side apply: a field manager takes ownership; another manager conflicts without force.
    let d = deploys
        .patch(
            "web",
            &PatchParams::apply("mgr-a").force(),
            &Patch::Apply(deployment("web", 3)),
        )
        .await
        .unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    let mf = d.metadata.managed_fields.clone().unwrap();
    let a = mf
        .iter()
        .find(|m| m.manager.as_deref() == Some("mgr-a"))
        .expect("mgr-a has a managedFields entry");
    assert_eq!(a.operation.as_deref(), Some("Apply"));
    assert!(a.fields_v1.as_ref().unwrap().0["f:spec"]["f:replicas"].is_object());

    let err = api_error(
        deploys
            .patch(
                "web",
                &PatchParams::apply("mgr-b"),
                &Patch::Apply(deployment("web", 5)),
            )
            .await
            .unwrap_err(),
        "409 apply conflict",
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"mgr-a\": .spec.replicas"
    );
    assert_eq!(
        deploys.get("web").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );

    let d = deploys
        .patch(
            "web",
            &PatchParams::apply("mgr-b").force(),
            &Patch::Apply(deployment("web", 5)),
        )
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(5));
    let mf = d.metadata.managed_fields.unwrap();
    let a = mf
        .iter()
        .find(|m| m.manager.as_deref() == Some("mgr-a"))
        .expect("mgr-a keeps the fields it was not forced off");
    assert!(
        a.fields_v1.as_ref().unwrap().0["f:spec"]
            .get("f:replicas")
            .is_none(),
        "forcing moves .spec.replicas to mgr-b"
    );

    // Apply without a field manager is refused, as kube-apiserver does.
    let err = api_error(
        deploys
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Apply(deployment("web", 1)),
            )
            .await
            .unwrap_err(),
        "422 for apply without fieldManager",
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
        )
    );
    server.shutdown().await;
}

#[tokio::test]
async fn watcher_pages_through_a_large_initial_list() {
    let server = Target::start().await;
    // The request counts are the test server's (its request log); the rest is checked on both.
    let ctl = server.control();
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    futures::stream::iter(0..1200)
        .map(|i| {
            let cms = cms.clone();
            async move {
                cms.create(
                    &PostParams::default(),
                    &config_map(
                        &format!("bulk-{i:04}"),
                        json!({ "app": "bulk" }),
                        json!({ "i": i.to_string() }),
                    ),
                )
                .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    if let Some(ctl) = &ctl {
        ctl.reset_request_log();
    }

    let mut events: Events<ConfigMap> = watcher(
        cms.clone(),
        watcher::Config::default().labels("app=bulk").page_size(500),
    )
    .boxed();
    let mut names = Vec::new();
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, events.next())
            .await
            .expect("the initial list completes")
            .expect("the watcher keeps running")
            .expect("the initial list has no errors")
        {
            watcher::Event::Init => assert!(names.is_empty()),
            watcher::Event::InitApply(cm) => names.push(name_of(&cm)),
            watcher::Event::InitDone => break,
            other => panic!("unexpected event during the initial list: {other:?}"),
        }
    }
    let expected: Vec<String> = (0..1200).map(|i| format!("bulk-{i:04}")).collect();
    assert_eq!(names, expected, "every object exactly once, in name order");
    if let Some(ctl) = &ctl {
        assert_eq!(
            ctl.request_count("list", "configmaps"),
            3,
            "1,200 objects at 500 per page take three list requests"
        );
    }

    cms.create(
        &PostParams::default(),
        &config_map("bulk-late", json!({ "app": "bulk" }), json!({})),
    )
    .await
    .unwrap();
    wait_applied(&mut events, "bulk-late").await;
    // The watch started from the list's resourceVersion, so nothing listed was replayed.
    if let Some(ctl) = &ctl {
        assert_eq!(ctl.request_count("watch", "configmaps"), 1);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn streaming_lists_and_bookmarks() {
    let server = Target::start_with(ServerOptions {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    for n in ["s1", "s2", "s3"] {
        cms.create(
            &PostParams::default(),
            &config_map(n, json!({ "app": "s" }), json!({})),
        )
        .await
        .unwrap();
    }

    // kube-runtime starts a streaming list at resourceVersion "0" (any version the server holds), and
    // a real server answers that from its watch cache, which may not hold a write made a moment ago.
    // Wait until a resourceVersion-0 list (served the same way) shows all three.
    let any = ListParams::default().labels("app=s").match_any();
    for attempt in 0.. {
        if cms.list(&any).await.unwrap().items.len() == 3 {
            break;
        }
        assert!(
            attempt < 100,
            "the watch cache never caught up with three creates"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(ctl) = server.control() {
        ctl.reset_request_log();
    }

    // Streaming lists only finish when the server sends the initial-events-end bookmark.
    let mut events: Events<ConfigMap> = watcher(
        cms.clone(),
        watcher::Config::default().labels("app=s").streaming_lists(),
    )
    .boxed();
    let mut names = Vec::new();
    wait_for(&mut events, "InitDone of a streaming list", |e| match e {
        Ok(watcher::Event::InitApply(cm)) => {
            names.push(name_of(cm));
            None
        }
        Ok(watcher::Event::InitDone) => Some(()),
        Ok(watcher::Event::Init) => None,
        other => panic!("unexpected event during a streaming list: {other:?}"),
    })
    .await;
    names.sort();
    assert_eq!(names, ["s1", "s2", "s3"]);
    let Some(ctl) = server.control() else {
        fidelity::test_server_only(
            "from here: a 100 ms bookmark interval, compaction and watch cuts are test-server options",
        );
        return;
    };
    assert_eq!(ctl.request_count("list", "configmaps"), 0);

    // Plain watches that allow bookmarks get them, carrying the current resourceVersion.
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut raw = cms
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    let bm = tokio::time::timeout(Duration::from_secs(5), raw.try_next())
        .await
        .expect("a bookmark within the bookmark interval")
        .unwrap()
        .unwrap();
    match bm {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }

    // A watcher whose connection ends resumes from its last bookmark instead of re-listing. A write
    // elsewhere moves the store past s4, and compaction makes every older version too old: only a
    // watcher that took the bookmark's resourceVersion resumes without a 410 and a re-list.
    cms.create(
        &PostParams::default(),
        &config_map("s4", json!({ "app": "s" }), json!({})),
    )
    .await
    .unwrap();
    wait_applied(&mut events, "s4").await;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    secrets
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "elsewhere-bookmark" } })),
        )
        .await
        .unwrap();
    // Several bookmark intervals, so the watcher has seen one carrying the Secret's version.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl.compact();
    ctl.reset_request_log();
    ctl.close_watches();
    cms.create(
        &PostParams::default(),
        &config_map("s5", json!({ "app": "s" }), json!({})),
    )
    .await
    .unwrap();
    // A re-list (streaming lists re-list through a watch, so the request log cannot tell) starts with
    // Init; a resumed watch delivers s5 as a plain Apply.
    let resumed = wait_for(&mut events, "s5 after the reconnect", |e| match e {
        Ok(watcher::Event::Apply(cm)) if name_of(cm) == "s5" => Some(true),
        Ok(watcher::Event::Init) => Some(false),
        _ => None,
    })
    .await;
    assert!(
        resumed,
        "the watcher re-listed instead of resuming from its bookmark"
    );
    assert_eq!(ctl.request_count("list", "configmaps"), 0);
    assert!(ctl.request_count("watch", "configmaps") >= 1);
    server.shutdown().await;
}

/// Starts a watcher on `app=w` ConfigMaps and returns once its watch connection is live.
async fn live_watcher(cms: &Api<ConfigMap>, config: watcher::Config) -> Events<ConfigMap> {
    cms.create(
        &PostParams::default(),
        &config_map("w-initial", json!({ "app": "w" }), json!({})),
    )
    .await
    .unwrap();
    let mut events: Events<ConfigMap> = watcher(cms.clone(), config.labels("app=w"))
        .default_backoff()
        .boxed();
    wait_for(&mut events, "InitDone", |e| {
        matches!(e, Ok(watcher::Event::InitDone)).then_some(())
    })
    .await;
    // InitDone comes before the watch request; an event proves the watch stream is open.
    cms.create(
        &PostParams::default(),
        &config_map("w-sync", json!({ "app": "w" }), json!({})),
    )
    .await
    .unwrap();
    wait_applied(&mut events, "w-sync").await;
    events
}

/// Consumes events through a 410 and the full re-list (Init … InitDone) that follows it, returning
/// the re-listed names in order. Fails if the re-list was not preceded by a 410 error.
async fn wait_relist_after_410(events: &mut Events<ConfigMap>) -> Vec<String> {
    let mut saw_gone = false;
    let mut listed = None::<Vec<String>>;
    let names = wait_for(events, "a re-list after 410", |e| {
        match e {
            Err(watcher::Error::WatchError(s)) if s.code == 410 => saw_gone = true,
            Ok(watcher::Event::Init) => listed = Some(Vec::new()),
            Ok(watcher::Event::InitApply(cm)) => {
                if let Some(l) = listed.as_mut() {
                    l.push(name_of(cm));
                }
            }
            Ok(watcher::Event::InitDone) => return listed.take(),
            _ => {}
        }
        None
    })
    .await;
    assert!(
        saw_gone,
        "the re-list was caused by a 410 Expired watch error"
    );
    names
}

#[tokio::test]
async fn forced_410_makes_the_watcher_relist_and_carry_on() {
    if fidelity::test_server_only("fault injection: gone_next_watch and close_watches") {
        return;
    }
    let server = TestServer::start().await.unwrap();
    let ctl = server.control();
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut events = live_watcher(&cms, watcher::Config::default()).await;

    ctl.reset_request_log();
    ctl.gone_next_watch(RequestMatch {
        resource: Some("configmaps".into()),
        ..Default::default()
    });
    ctl.close_watches();
    assert_eq!(
        wait_relist_after_410(&mut events).await,
        ["w-initial", "w-sync"]
    );
    assert!(ctl.request_count("list", "configmaps") >= 1);

    cms.create(
        &PostParams::default(),
        &config_map("w-after", json!({ "app": "w" }), json!({})),
    )
    .await
    .unwrap();
    wait_applied(&mut events, "w-after").await;
    server.shutdown().await;
}

#[tokio::test]
async fn compaction_expires_a_resuming_watcher_which_relists() {
    if fidelity::test_server_only("compaction and close_watches are test-server hooks") {
        return;
    }
    let server = TestServer::start().await.unwrap();
    let ctl = server.control();
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    // No bookmarks: the watcher's resourceVersion stays at the last ConfigMap event it saw.
    let mut events = live_watcher(&cms, watcher::Config::default().disable_bookmarks()).await;

    // A write elsewhere moves the store past the watcher's RV; compaction then makes that RV too old.
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    secrets
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "elsewhere" } })),
        )
        .await
        .unwrap();
    ctl.compact();
    ctl.close_watches();
    assert_eq!(
        wait_relist_after_410(&mut events).await,
        ["w-initial", "w-sync"]
    );

    cms.create(
        &PostParams::default(),
        &config_map("w-after", json!({ "app": "w" }), json!({})),
    )
    .await
    .unwrap();
    wait_applied(&mut events, "w-after").await;
    server.shutdown().await;
}

#[tokio::test]
async fn watcher_recovers_from_a_server_restart() {
    if fidelity::test_server_only("restarts the server in place") {
        return;
    }
    let server = TestServer::start().await.unwrap();
    let ctl = server.control();
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut events = live_watcher(&cms, watcher::Config::default()).await;

    ctl.restart(Duration::from_millis(300)).await;
    // Data survives the restart.
    assert!(cms.get("w-sync").await.is_ok());
    cms.create(
        &PostParams::default(),
        &config_map("w-after", json!({ "app": "w" }), json!({})),
    )
    .await
    .unwrap();
    let after = wait_applied(&mut events, "w-after").await;
    assert_eq!(after.labels()["app"], "w");
    server.shutdown().await;
}

#[tokio::test]
async fn stale_resource_version_is_a_409_conflict() {
    let server = Target::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    secrets
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "s" }, "stringData": { "k": "1" } })),
        )
        .await
        .unwrap();
    let mut stale = secrets.get("s").await.unwrap();
    secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } })),
        )
        .await
        .unwrap();

    stale.metadata.annotations = Some([("a".to_string(), "b".to_string())].into());
    let err = api_error(
        secrets
            .replace("s", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
        "409 on a stale replace",
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on secrets \"s\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // A merge patch carrying a stale resourceVersion is a precondition and conflicts too.
    let old_rv = stale.resource_version().unwrap();
    let err = api_error(
        secrets
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({ "metadata": { "resourceVersion": old_rv, "labels": { "z": "1" } } }),
                ),
            )
            .await
            .unwrap_err(),
        "409 on a stale patch",
    );
    assert_eq!(err.code, 409);
    let now = secrets.get("s").await.unwrap();
    assert!(now.annotations().is_empty());
    assert!(!now.labels().contains_key("z"));
    server.shutdown().await;
}

#[tokio::test]
async fn generation_moves_with_spec_only_and_no_op_writes_keep_the_resource_version() {
    let server = Target::start().await;
    let deploys: Api<Deployment> = Api::default_namespaced(server.client());
    let d = deploys
        .create(&PostParams::default(), &from_json(deployment("web", 2)))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let rv0 = d.resource_version().unwrap();

    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "tier": "fe" } } })),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1), "label-only change");
    let rv1 = d.resource_version().unwrap();
    assert_ne!(rv1, rv0);

    // A Deployment's annotations are copied to its ReplicaSets, so kube-apiserver moves its generation
    // on an annotation change too (only for Deployments).
    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { "n": "1" } } })),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(2), "annotation change");

    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "template": { "metadata": { "annotations": { "roll": "1" } } } } })),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(3), "pod template change");
    // A real cluster's deployment controller now rolls the pods and writes status: wait until it is
    // done, so that the writes below are the only ones.
    let d = server.settled(&deploys, "web").await;
    assert_eq!(
        d.metadata.generation,
        Some(3),
        "status writes keep the generation"
    );
    let rv2 = d.resource_version().unwrap();

    // Identical writes: same resourceVersion, same generation, and no watch event.
    let mut watch = deploys
        .watch(
            &WatchParams::default().disable_bookmarks().timeout(10),
            &rv2,
        )
        .await
        .unwrap()
        .boxed();
    let same = deploys
        .replace("web", &PostParams::default(), &d)
        .await
        .unwrap();
    assert_eq!(same.resource_version().unwrap(), rv2, "identical replace");
    let same = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 2 } })),
        )
        .await
        .unwrap();
    assert_eq!(same.resource_version().unwrap(), rv2, "identical patch");
    assert_eq!(same.metadata.generation, Some(3));

    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(4));
    match tokio::time::timeout(Duration::from_secs(5), watch.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Modified(m) => {
            assert_eq!(
                m.spec.unwrap().replicas,
                Some(3),
                "the no-ops made no event"
            )
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    // The status subresource never moves generation, and main-resource writes ignore status.
    let d = deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "observedGeneration": 4, "replicas": 3 } })),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(4));
    assert_eq!(d.status.unwrap().replicas, Some(3));
    // (A real deployment controller rewrites that status; once done, it reports 3 replicas too.)
    server.settled(&deploys, "web").await;
    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "replicas": 99 } })),
        )
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().replicas, Some(3));
    server.shutdown().await;
}

/// The managedFields entry of `manager`, as (operation, subresource, fieldsV1).
fn managed_entry<K: Resource>(d: &K, manager: &str) -> (String, Option<String>, Value) {
    let e = d
        .meta()
        .managed_fields
        .as_ref()
        .and_then(|l| l.iter().find(|e| e.manager.as_deref() == Some(manager)))
        .unwrap_or_else(|| panic!("{manager} has a managedFields entry"));
    (
        e.operation.clone().unwrap_or_default(),
        e.subresource.clone(),
        e.fields_v1
            .as_ref()
            .map(|f| f.0.clone())
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn server_side_apply_on_status_applies_status_and_owns_it() {
    // server_side_apply_on_status_of_a_suspended_cronjob checks the same on both servers.
    if fidelity::test_server_only(
        "a real deployment controller owns and rewrites Deployment status",
    ) {
        return;
    }
    let server = TestServer::start().await.unwrap();
    let deploys: Api<Deployment> = Api::default_namespaced(server.client());
    deploys
        .create(&PostParams::default(), &from_json(deployment("web", 2)))
        .await
        .unwrap();

    // A controller's status write is recorded as an Update of the status subresource.
    let ctrl = PatchParams {
        field_manager: Some("ctrl".into()),
        ..Default::default()
    };
    let status = json!({ "status": { "observedGeneration": 1, "replicas": 2 } });
    let d = deploys
        .patch_status("web", &ctrl, &Patch::Merge(status))
        .await
        .unwrap();
    let (op, sub, fields) = managed_entry(&d, "ctrl");
    assert_eq!((op.as_str(), sub.as_deref()), ("Update", Some("status")));
    assert_eq!(
        fields,
        json!({ "f:status": { "f:observedGeneration": {}, "f:replicas": {} } })
    );

    // Applying status someone else owns conflicts, naming the owner's subresource.
    let mut applied = deployment("web", 9);
    applied["status"] = json!({ "replicas": 5 });
    let err = api_error(
        deploys
            .patch_status(
                "web",
                &PatchParams::apply("applier"),
                &Patch::Apply(applied.clone()),
            )
            .await
            .unwrap_err(),
        "409 status apply conflict",
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"ctrl\" with subresource \"status\" using apps/v1: .status.replicas"
    );

    // Forced, it changes status only: spec in the body is ignored and generation stays.
    let d = deploys
        .patch_status(
            "web",
            &PatchParams::apply("applier").force(),
            &Patch::Apply(applied.clone()),
        )
        .await
        .unwrap();
    assert_eq!(d.status.as_ref().unwrap().replicas, Some(5));
    assert_eq!(d.status.as_ref().unwrap().observed_generation, Some(1));
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(d.metadata.generation, Some(1));
    let (op, sub, fields) = managed_entry(&d, "applier");
    assert_eq!((op.as_str(), sub.as_deref()), ("Apply", Some("status")));
    assert_eq!(fields, json!({ "f:status": { "f:replicas": {} } }));
    let (_, _, fields) = managed_entry(&d, "ctrl");
    assert_eq!(
        fields,
        json!({ "f:status": { "f:observedGeneration": {} } })
    );
    let stored = deploys.get("web").await.unwrap();
    assert_eq!(stored.status.unwrap().replicas, Some(5));

    // Applying the same again changes nothing, so nothing is written.
    let again = deploys
        .patch_status(
            "web",
            &PatchParams::apply("applier"),
            &Patch::Apply(applied),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), d.resource_version());

    // Status cannot be applied into existence.
    let err = api_error(
        deploys
            .patch_status(
                "nope",
                &PatchParams::apply("applier"),
                &Patch::Apply(deployment("nope", 1)),
            )
            .await
            .unwrap_err(),
        "404 for status apply on a missing object",
    );
    assert_eq!(err.code, 404);
    server.shutdown().await;
}

/// A suspended CronJob: no controller writes its status, so the same status checks as above hold on a
/// real cluster too.
fn suspended_cronjob(name: &str, schedule: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": { "name": name },
        "spec": {
            "schedule": schedule,
            "suspend": true,
            "jobTemplate": { "spec": { "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{ "name": "job", "image": "busybox:1.36" }]
            } } } }
        }
    })
}

#[tokio::test]
async fn server_side_apply_on_status_of_a_suspended_cronjob() {
    let server = Target::start().await;
    let jobs: Api<CronJob> = Api::default_namespaced(server.client());
    jobs.create(
        &PostParams::default(),
        &from_json(suspended_cronjob("tick", "*/30 * * * *")),
    )
    .await
    .unwrap();

    let ctrl = PatchParams {
        field_manager: Some("ctrl".into()),
        ..Default::default()
    };
    let status = json!({ "status": {
        "lastScheduleTime": "2025-01-01T00:00:00Z",
        "lastSuccessfulTime": "2025-01-01T00:01:00Z"
    } });
    let c = jobs
        .patch_status("tick", &ctrl, &Patch::Merge(status))
        .await
        .unwrap();
    let (op, sub, fields) = managed_entry(&c, "ctrl");
    assert_eq!((op.as_str(), sub.as_deref()), ("Update", Some("status")));
    assert_eq!(
        fields,
        json!({ "f:status": { "f:lastScheduleTime": {}, "f:lastSuccessfulTime": {} } })
    );

    let mut applied = suspended_cronjob("tick", "*/5 * * * *");
    applied["status"] = json!({ "lastScheduleTime": "2025-02-01T00:00:00Z" });
    let err = api_error(
        jobs.patch_status(
            "tick",
            &PatchParams::apply("applier"),
            &Patch::Apply(applied.clone()),
        )
        .await
        .unwrap_err(),
        "409 status apply conflict",
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"ctrl\" with subresource \"status\" using batch/v1: .status.lastScheduleTime"
    );

    let c = jobs
        .patch_status(
            "tick",
            &PatchParams::apply("applier").force(),
            &Patch::Apply(applied.clone()),
        )
        .await
        .unwrap();
    let st = c.status.as_ref().unwrap();
    assert_eq!(
        st.last_schedule_time.as_ref().map(|t| t.0.to_string()),
        Some("2025-02-01T00:00:00Z".into())
    );
    assert!(st.last_successful_time.is_some());
    assert_eq!(
        c.spec.as_ref().unwrap().schedule,
        "*/30 * * * *",
        "spec is ignored"
    );
    assert_eq!(c.metadata.generation, Some(1));
    let (op, sub, fields) = managed_entry(&c, "applier");
    assert_eq!((op.as_str(), sub.as_deref()), ("Apply", Some("status")));
    assert_eq!(fields, json!({ "f:status": { "f:lastScheduleTime": {} } }));
    let (_, _, fields) = managed_entry(&c, "ctrl");
    assert_eq!(
        fields,
        json!({ "f:status": { "f:lastSuccessfulTime": {} } })
    );

    let again = jobs
        .patch_status(
            "tick",
            &PatchParams::apply("applier"),
            &Patch::Apply(applied),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), c.resource_version());

    let err = api_error(
        jobs.patch_status(
            "nope",
            &PatchParams::apply("applier"),
            &Patch::Apply(suspended_cronjob("nope", "*/30 * * * *")),
        )
        .await
        .unwrap_err(),
        "404 for status apply on a missing object",
    );
    assert_eq!(err.code, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn secret_string_data_is_folded_into_data() {
    let server = Target::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    let s = secrets
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": { "name": "creds" },
                "data": { "a": "b2xk", "b": "a2VlcA==" },
                "stringData": { "a": "new", "c": "plain" }
            })),
        )
        .await
        .unwrap();
    assert!(s.string_data.is_none(), "stringData is never stored");
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    let data = s.data.unwrap();
    // stringData wins over data for the same key.
    assert_eq!(data["a"].0, b"new");
    assert_eq!(data["b"].0, b"keep");
    assert_eq!(data["c"].0, b"plain");

    let s = secrets
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "b": "changed" } })),
        )
        .await
        .unwrap();
    assert!(s.string_data.is_none());
    let data = s.data.unwrap();
    assert_eq!(data["b"].0, b"changed");
    assert_eq!(data.len(), 3);

    // Invalid base64 cannot be expressed with typed objects, so this one goes out raw.
    let path = format!("/api/v1/namespaces/{}/secrets", server.ns());
    let (code, status) = server.raw("POST", &path, BAD_BASE64_SECRET).await;
    assert_eq!((code, &status["reason"]), (400, &json!("BadRequest")));
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Secret in version \"v1\" cannot be handled as a Secret: ")
            && message.contains("illegal base64 data"),
        "{message}"
    );
    assert!(secrets.get_opt("bad").await.unwrap().is_none());
    server.shutdown().await;
}

/// A Secret whose data value is not base64 (byte 3 is a space).
const BAD_BASE64_SECRET: &str =
    r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"bad"},"data":{"k":"not base64!"}}"#;

#[tokio::test]
async fn invalid_secret_base64_reports_the_byte_offset() {
    let server = Target::start().await;
    let path = format!("/api/v1/namespaces/{}/secrets", server.ns());
    let (code, status) = server.raw("POST", &path, BAD_BASE64_SECRET).await;
    assert_eq!(code, 400);
    assert_eq!(
        status["message"],
        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 3"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn immutable_secret_refuses_data_changes() {
    let server = Target::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    secrets
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": { "name": "locked" },
                "immutable": true,
                "stringData": { "k": "v" }
            })),
        )
        .await
        .unwrap();

    let err = api_error(
        secrets
            .patch(
                "locked",
                &PatchParams::default(),
                &Patch::Merge(json!({ "stringData": { "k": "other" } })),
            )
            .await
            .unwrap_err(),
        "422 for changing immutable data",
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Secret \"locked\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
    let err = api_error(
        secrets
            .patch(
                "locked",
                &PatchParams::default(),
                &Patch::Merge(json!({ "immutable": false })),
            )
            .await
            .unwrap_err(),
        "422 for un-setting immutable",
    );
    assert_eq!(err.code, 422);

    // Metadata is still writable.
    let s = secrets
        .patch(
            "locked",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "ok": "yes" } } })),
        )
        .await
        .unwrap();
    assert_eq!(s.labels()["ok"], "yes");
    assert_eq!(s.data.unwrap()["k"].0, b"v");
    server.shutdown().await;
}

#[tokio::test]
async fn create_in_a_missing_namespace_is_404() {
    let server = Target::start().await;
    // The test's own namespace name plus a suffix: unique on a shared cluster too.
    let nope = format!("{}-nope", server.ns());
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), &nope);
    let err = api_error(
        cms.create(
            &PostParams::default(),
            &config_map("c", json!({}), json!({})),
        )
        .await
        .unwrap_err(),
        "404 for a missing namespace",
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (
            404,
            "NotFound",
            format!("namespaces \"{nope}\" not found").as_str()
        )
    );

    // Once the namespace exists the same create works.
    let nss: Api<Namespace> = Api::all(server.client());
    nss.create(
        &PostParams::default(),
        &from_json(json!({ "metadata": { "name": nope } })),
    )
    .await
    .unwrap();
    cms.create(
        &PostParams::default(),
        &config_map("c", json!({}), json!({})),
    )
    .await
    .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = Target::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let created = cms
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": { "name": "held", "finalizers": ["example.com/hold"] },
                "data": { "k": "v" }
            })),
        )
        .await
        .unwrap();
    // This object only: a real cluster adds kube-root-ca.crt to a new namespace whenever it gets to it.
    let mut watch = cms
        .watch(
            &WatchParams::default()
                .fields("metadata.name=held")
                .disable_bookmarks()
                .timeout(10),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();

    let answer = cms.delete("held", &DeleteParams::default()).await.unwrap();
    let obj = answer
        .left()
        .expect("a delete held by finalizers returns the object");
    assert!(obj.metadata.deletion_timestamp.is_some(), "{obj:?}");
    let held = cms.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.finalizers(), ["example.com/hold"]);

    let err = api_error(
        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "finalizers": ["example.com/hold", "example.com/more"] } }),
            ),
        )
        .await
        .unwrap_err(),
        "422 for a new finalizer while deleting",
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        err.message
    );

    let last = cms
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
        )
        .await
        .unwrap();
    // The answer is the object as written: no finalizers, still marked for deletion.
    assert!(last.finalizers().is_empty(), "{last:?}");
    assert!(last.metadata.deletion_timestamp.is_some(), "{last:?}");
    let err = api_error(cms.get("held").await.unwrap_err(), "gone after finalizers");
    assert_eq!(err.code, 404);

    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), watch.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Modified(cm) => seen.push(format!(
                "MODIFIED deleting={}",
                cm.metadata.deletion_timestamp.is_some()
            )),
            WatchEvent::Deleted(cm) => {
                seen.push(format!("DELETED finalizers={}", cm.finalizers().len()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The write that empties the finalizers is not stored: the object is deleted as it last stood, so
    // the DELETED event still lists the finalizer (kube-apiserver's deleteWithoutFinalizers).
    assert_eq!(seen, ["MODIFIED deleting=true", "DELETED finalizers=1"]);
    server.shutdown().await;
}

#[tokio::test]
async fn delete_held_by_finalizers_answers_200_with_the_object() {
    let server = Target::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    cms.create(
        &PostParams::default(),
        &from_json(json!({ "metadata": { "name": "held", "finalizers": ["example.com/hold"] } })),
    )
    .await
    .unwrap();
    let path = format!("/api/v1/namespaces/{}/configmaps/held", server.ns());
    let (code, body) = server.raw("DELETE", &path, "").await;
    assert_eq!(code, 200, "{body}");
    assert!(body["metadata"]["deletionTimestamp"].is_string(), "{body}");
    // Deleting again while finalizers are pending also answers 200 with the object.
    let (code, _) = server.raw("DELETE", &path, "").await;
    assert_eq!(code, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let server = Target::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    for (name, labels, typ) in [
        ("a", json!({ "app": "web", "tier": "fe" }), "Opaque"),
        ("b", json!({ "app": "web", "tier": "be" }), "Opaque"),
        ("c", json!({ "app": "db" }), "example.com/custom"),
        ("d", json!({}), "Opaque"),
    ] {
        secrets
            .create(
                &PostParams::default(),
                &from_json(json!({ "metadata": { "name": name, "labels": labels }, "type": typ })),
            )
            .await
            .unwrap();
    }
    let names = |lp: ListParams| {
        let secrets = secrets.clone();
        async move {
            secrets
                .list(&lp)
                .await
                .unwrap()
                .items
                .iter()
                .map(name_of)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(ListParams::default().labels("app=web")).await,
        ["a", "b"]
    );
    assert_eq!(
        names(ListParams::default().labels("app=web,tier!=fe")).await,
        ["b"]
    );
    assert_eq!(
        names(ListParams::default().labels("tier in (fe,be)")).await,
        ["a", "b"]
    );
    assert_eq!(
        names(ListParams::default().labels("app notin (web)")).await,
        ["c", "d"]
    );
    assert_eq!(names(ListParams::default().labels("!app")).await, ["d"]);
    assert_eq!(
        names(ListParams::default().labels("app")).await,
        ["a", "b", "c"]
    );
    assert_eq!(
        names(ListParams::default().fields("type=Opaque")).await,
        ["a", "b", "d"]
    );
    assert_eq!(
        names(ListParams::default().fields("metadata.name=c")).await,
        ["c"]
    );
    assert_eq!(
        names(
            ListParams::default()
                .labels("app=web")
                .fields("metadata.name!=a,type=Opaque")
        )
        .await,
        ["b"]
    );

    let err = api_error(
        secrets
            .list(&ListParams::default().fields("data.k=v"))
            .await
            .unwrap_err(),
        "400 for an unsupported field selector",
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (400, "field label not supported: data.k")
    );
    let err = api_error(
        secrets
            .list(&ListParams::default().labels("app in (web"))
            .await
            .unwrap_err(),
        "400 for a malformed label selector",
    );
    assert_eq!(err.code, 400);

    // Selectors apply to watches too: a label change that leaves the selection is a DELETED event.
    let rv = secrets.get("a").await.unwrap().resource_version().unwrap();
    let mut watch = secrets
        .watch(
            &WatchParams::default()
                .disable_bookmarks()
                .labels("tier=fe")
                .timeout(10),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    secrets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "tier": "be" } } })),
        )
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), watch.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Deleted(s) => assert_eq!(name_of(&s), "a"),
        other => panic!("expected DELETED for leaving the selection, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn rollout_record_keeps_each_distinct_template() {
    if fidelity::test_server_only("the rollout record is a test-server hook") {
        return;
    }
    let server = TestServer::start().await.unwrap();
    let ctl = server.control();
    let deploys: Api<Deployment> = Api::default_namespaced(server.client());
    deploys
        .create(&PostParams::default(), &from_json(deployment("web", 1)))
        .await
        .unwrap();
    let stamp = |v: &str| {
        Patch::Merge(
            json!({ "spec": { "template": { "metadata": { "annotations": { "hashroll/stamp": v } } } } }),
        )
    };
    deploys
        .patch("web", &PatchParams::default(), &stamp("one"))
        .await
        .unwrap();
    // Neither a metadata change nor a repeated template adds a record.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } })),
        )
        .await
        .unwrap();
    deploys
        .patch("web", &PatchParams::default(), &stamp("one"))
        .await
        .unwrap();
    let last = deploys
        .patch("web", &PatchParams::default(), &stamp("two"))
        .await
        .unwrap();

    let record = ctl.rollouts("deployments", "default", "web");
    let stamps: Vec<Option<&str>> = record
        .iter()
        .map(|r| r.annotations.get("hashroll/stamp").map(String::as_str))
        .collect();
    assert_eq!(stamps, [None, Some("one"), Some("two")]);
    assert_eq!(
        record.iter().map(|r| r.generation).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(record[2].resource_version, last.resource_version().unwrap());
    assert_eq!(record[2].template["spec"]["containers"][0]["name"], "app");
    assert!(ctl.rollouts("deployments", "default", "other").is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn request_log_counts_by_verb_and_resource() {
    if fidelity::test_server_only("the request log is a test-server hook") {
        return;
    }
    let server = TestServer::start().await.unwrap();
    let ctl = server.control();
    let cms: Api<ConfigMap> = Api::default_namespaced(server.client());
    let deploys: Api<Deployment> = Api::default_namespaced(server.client());
    ctl.reset_request_log();

    cms.create(
        &PostParams::default(),
        &config_map("c", json!({}), json!({})),
    )
    .await
    .unwrap();
    cms.get("c").await.unwrap();
    cms.get("missing").await.unwrap_err();
    cms.list(&ListParams::default()).await.unwrap();
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "k": "v" } })),
    )
    .await
    .unwrap();
    deploys
        .create(&PostParams::default(), &from_json(deployment("web", 1)))
        .await
        .unwrap();
    deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "replicas": 1 } })),
        )
        .await
        .unwrap();
    cms.delete("c", &DeleteParams::default()).await.unwrap();

    let counts: Vec<((String, String), u64)> = ctl.request_counts().into_iter().collect();
    let want = [
        (("create", "configmaps"), 1),
        (("create", "deployments"), 1),
        (("delete", "configmaps"), 1),
        (("get", "configmaps"), 2),
        (("list", "configmaps"), 1),
        (("patch", "configmaps"), 1),
        (("patch", "deployments/status"), 1),
    ];
    let want: Vec<((String, String), u64)> = want
        .iter()
        .map(|((v, r), n)| ((v.to_string(), r.to_string()), *n))
        .collect();
    assert_eq!(counts, want);
    ctl.reset_request_log();
    assert_eq!(ctl.request_count("get", "configmaps"), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn injected_503_and_429_reach_kube_rs() {
    if fidelity::test_server_only("fault injection") {
        return;
    }
    let server = TestServer::start().await.unwrap();
    let ctl = server.control();
    let raw: Api<ConfigMap> = Api::default_namespaced(client_without_retries(&server, "admin"));
    raw.create(
        &PostParams::default(),
        &config_map("c", json!({}), json!({})),
    )
    .await
    .unwrap();
    let gets = RequestMatch {
        verb: Some("get".into()),
        resource: Some("configmaps".into()),
        ..Default::default()
    };

    ctl.fail_next(1, gets.clone(), Fault::Status(503));
    let err = api_error(raw.get("c").await.unwrap_err(), "injected 503");
    assert_eq!((err.code, err.reason.as_str()), (503, "ServiceUnavailable"));

    ctl.fail_next(
        1,
        gets.clone(),
        Fault::TooManyRequests {
            retry_after_secs: 2,
        },
    );
    let err = api_error(raw.get("c").await.unwrap_err(), "injected 429");
    assert_eq!((err.code, err.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        err.details.map(|d| d.retry_after_seconds),
        Some(2),
        "429 carries retryAfterSeconds"
    );
    raw.get("c").await.expect("faults are used up");

    // Writes and other resources are not affected by a rule for configmap gets.
    ctl.fail_next(1, gets.clone(), Fault::Status(503));
    raw.list(&ListParams::default()).await.unwrap();
    let e = api_error(raw.get("c").await.unwrap_err(), "503 still armed");
    assert_eq!(e.code, 503);

    // kube-rs' default client retries 503 (honouring Retry-After) and then succeeds.
    ctl.reset_request_log();
    ctl.fail_next(1, gets, Fault::Status(503));
    let retrying: Api<ConfigMap> = Api::default_namespaced(server.client());
    retrying.get("c").await.expect("the retry succeeds");
    assert_eq!(ctl.request_count("get", "configmaps"), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn rbac_allows_what_a_role_grants_and_forbids_the_rest() {
    // RBAC is always on in a real cluster; on the test server it is an option.
    let server = Target::start_with(ServerOptions {
        rbac: true,
        ..Default::default()
    })
    .await;
    let admin = server.client();
    let nss: Api<Namespace> = Api::all(admin.clone());
    let (team_a, team_b) = (format!("{}-a", server.ns()), format!("{}-b", server.ns()));
    for ns in [&team_a, &team_b] {
        nss.create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": ns } })),
        )
        .await
        .unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
        cms.create(
            &PostParams::default(),
            &config_map("cfg", json!({ "t": "rbac" }), json!({ "k": ns })),
        )
        .await
        .unwrap();
    }
    Api::<ServiceAccount>::namespaced(admin.clone(), &team_a)
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "reader" } })),
        )
        .await
        .unwrap();
    Api::<Role>::namespaced(admin.clone(), &team_a)
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": { "name": "cm-reader" },
                "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"] }]
            })),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &team_a)
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": { "name": "cm-reader" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader" },
                "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": team_a }]
            })),
        )
        .await
        .unwrap();

    let user = format!("system:serviceaccount:{team_a}:reader");
    // The test server takes the user name as a token; a real cluster issues one (TokenRequest).
    let token = if server.is_real() {
        Api::<ServiceAccount>::namespaced(admin.clone(), &team_a)
            .create_token_request(
                "reader",
                &PostParams::default(),
                &from_json(json!({ "spec": { "audiences": [] } })),
            )
            .await
            .unwrap()
            .status
            .expect("a TokenRequest answers with a token")
            .token
    } else {
        user.clone()
    };
    let sa = server.client_for_token(&token).await;
    let own: Api<ConfigMap> = Api::namespaced(sa.clone(), &team_a);
    assert_eq!(own.get("cfg").await.unwrap().data.unwrap()["k"], team_a);
    // By label: a real cluster has a kube-root-ca.crt ConfigMap in every namespace.
    assert_eq!(
        own.list(&ListParams::default().labels("t=rbac"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let other: Api<ConfigMap> = Api::namespaced(sa.clone(), &team_b);
    let err = api_error(
        other.list(&ListParams::default()).await.unwrap_err(),
        "403 in another namespace",
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        format!(
            "configmaps is forbidden: User \"{user}\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"{team_b}\""
        )
    );
    let err = api_error(other.get("cfg").await.unwrap_err(), "403 get");
    assert_eq!(
        err.message,
        format!(
            "configmaps \"cfg\" is forbidden: User \"{user}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"{team_b}\""
        )
    );
    let err = api_error(
        own.create(
            &PostParams::default(),
            &config_map("new", json!({}), json!({})),
        )
        .await
        .unwrap_err(),
        "403 for a verb the role lacks",
    );
    assert_eq!(
        err.message,
        format!(
            "configmaps is forbidden: User \"{user}\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"{team_a}\""
        )
    );
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), &team_a);
    let err = api_error(
        secrets.list(&ListParams::default()).await.unwrap_err(),
        "403 for a resource the role lacks",
    );
    assert_eq!(err.code, 403);
    let all: Api<ConfigMap> = Api::all(sa);
    let err = api_error(
        all.list(&ListParams::default()).await.unwrap_err(),
        "403 cluster-wide",
    );
    assert_eq!(
        err.message,
        format!(
            "configmaps is forbidden: User \"{user}\" cannot list resource \"configmaps\" in API group \"\" at the cluster scope"
        )
    );
    // Unknown tokens are not authenticated at all.
    let anon: Api<ConfigMap> =
        Api::namespaced(server.client_for_token("no-such-token").await, &team_a);
    let err = api_error(anon.get("cfg").await.unwrap_err(), "401");
    assert_eq!((err.code, err.reason.as_str()), (401, "Unauthorized"));
    server.shutdown().await;
}
