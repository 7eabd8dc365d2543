//! End to end: what was deleted while one of hashroll's watches was down, and so was never seen as a
//! deletion, is forgotten when that watch re-lists (after a 410 Gone), without restarting hashroll.
//!
//! How a watch is taken down so that a deletion is genuinely unseen: every watch request on the resource
//! is made to fail (500, which clients do not retry on their own), then the open watches are closed and
//! the test waits until hashroll's reconnect has failed, so no stream of that resource is open. The object
//! is deleted and the server's history compacted, then the test itself uses up the remaining faults. The
//! next watch hashroll opens resumes from a compacted resourceVersion, gets 410 Expired and must list
//! again; the server's request log shows that list.
//!
//! Each case runs on both initial-list paths (`--initial-list`): paged LISTs, and streaming lists (a
//! watch with `sendInitialEvents=true`), where the re-list is a watch, not a LIST.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Env, Server, e2e, env_from_secret, optional_env_from_secret};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, WatchParams};
use kube_testserver::{Fault, RequestMatch};

const NS: &str = "relist";

/// More failing watch requests than hashroll's backoff can use up while the watch is down (its retries
/// are 0.8 s apart at first, then further); the test consumes the rest itself.
const DOWN_FAULTS: usize = 100;

/// An API for raw watch requests on `resource` in [`NS`].
fn raw_api(env: &Env, resource: &str) -> Api<DynamicObject> {
    let ar = match resource {
        "secrets" => ApiResource::erase::<Secret>(&()),
        "deployments" => ApiResource::erase::<Deployment>(&()),
        other => panic!("no raw API for {other}"),
    };
    Api::namespaced_with(env.client.clone(), NS, &ar)
}

/// Polls `cond` every 25 ms until it holds (fails after 15 s, saying `what`).
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Takes hashroll's watch of `resource` down: every watch request on it fails from now on, the open
/// watches are closed, and this returns once hashroll's reconnect has been refused, so nothing written to
/// `resource` from now on reaches hashroll until [`relist`].
async fn take_watch_down(env: &Env, resource: &str) {
    let ctl = env.control();
    let watches = ctl.request_count("watch", resource);
    ctl.fail_next(
        DOWN_FAULTS,
        RequestMatch {
            verb: Some("watch".into()),
            resource: Some(resource.into()),
            namespace: None,
        },
        Fault::Status(500),
    );
    ctl.close_watches();
    wait_until(&format!("hashroll tries to watch {resource} again"), || {
        ctl.request_count("watch", resource) > watches
    })
    .await;
}

/// Compacts the server's history (so hashroll's resourceVersion has expired), lets watches on `resource`
/// succeed again by using up the remaining faults, and waits until hashroll has listed `resource` again
/// (`path` "pages": a LIST; "stream": a resumed watch refused with 410, then a streaming-list watch).
async fn relist(env: &Env, resource: &str, path: &str) {
    let ctl = env.control();
    ctl.compact();
    let lists = ctl.request_count("list", resource);
    let api = raw_api(env, resource);
    let mut drained = 0;
    loop {
        match api.watch(&WatchParams::default(), "0").await {
            Ok(stream) => {
                drop(stream);
                break;
            }
            Err(kube::Error::Api(s)) if s.code == 500 => drained += 1,
            Err(e) => panic!("draining the watch faults on {resource}: {e}"),
        }
        assert!(drained <= DOWN_FAULTS, "the watch faults never ran out");
    }
    if path == "stream" {
        let watches = ctl.request_count("watch", resource);
        wait_until(&format!("hashroll streams {resource} again"), || {
            ctl.request_count("watch", resource) >= watches + 2
        })
        .await;
        assert_eq!(ctl.request_count("list", resource), lists, "no LIST");
        return;
    }
    wait_until(&format!("hashroll lists {resource} again"), || {
        ctl.request_count("list", resource) > lists
    })
    .await;
}

/// The per-source digests hashroll recorded on a Deployment in [`NS`].
async fn recorded_sources(env: &Env, name: &str) -> BTreeMap<String, String> {
    let a = env.annotations("deployments", NS, name).await;
    serde_json::from_str(&a["hashroll.dev/sources"]).expect("sources is a JSON map")
}

const PAGES: &str = "pages";
const STREAM: &str = "stream";

e2e!(
    optional_secret_deleted_while_the_secret_watch_was_down_rolls_once_after_the_relist,
    test_server_only =
        "fault injection and compaction take the watch down; the request log shows the relist"
);
async fn optional_secret_deleted_while_the_secret_watch_was_down_rolls_once_after_the_relist(
    on: Server,
) {
    optional_secret_deleted(on, PAGES).await;
}

e2e!(
    optional_secret_deleted_while_the_secret_stream_was_down_rolls_once_after_the_relist,
    test_server_only =
        "fault injection and compaction take the watch down; the request log shows the relist"
);
async fn optional_secret_deleted_while_the_secret_stream_was_down_rolls_once_after_the_relist(
    on: Server,
) {
    optional_secret_deleted(on, STREAM).await;
}

async fn optional_secret_deleted(on: Server, path: &str) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "extra", &[("flag", "on")]).await;
    env.deployment(NS, "web", optional_env_from_secret("extra"))
        .await;
    // One hashroll process throughout: the relist alone must bring it up to date.
    let flag = format!("--initial-list={path}");
    let _hr = env.hashroll(&[&flag]).await;
    env.wait_recorded("deployments", NS, "web").await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 0).await;
    let before = recorded_sources(&env, "web").await;

    take_watch_down(&env, "secrets").await;
    env.delete_secret(NS, "extra").await;
    env.assert_rolls("deployments", NS, "web", 0).await;
    relist(&env, "secrets", path).await;

    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
    env.assert_rolled_annotations("deployments", NS, "web")
        .await;
    let after = recorded_sources(&env, "web").await;
    assert_ne!(
        after.get("secret/extra"),
        before.get("secret/extra"),
        "the record of the Secret changed from present to absent"
    );
    let events = env.wait_event(NS, "web", "Reloaded").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].2.contains("Secret extra"),
        "names the source: {events:?}"
    );
}

e2e!(
    deployment_deleted_while_the_deployment_watch_was_down_is_forgotten_after_the_relist,
    test_server_only =
        "fault injection and compaction take the watch down; the request log counts patches"
);
async fn deployment_deleted_while_the_deployment_watch_was_down_is_forgotten_after_the_relist(
    on: Server,
) {
    deployment_deleted(on, PAGES).await;
}

e2e!(
    deployment_deleted_while_the_deployment_stream_was_down_is_forgotten_after_the_relist,
    test_server_only =
        "fault injection and compaction take the watch down; the request log counts patches"
);
async fn deployment_deleted_while_the_deployment_stream_was_down_is_forgotten_after_the_relist(
    on: Server,
) {
    deployment_deleted(on, STREAM).await;
}

async fn deployment_deleted(on: Server, path: &str) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "only-old", &[("password", "p1")]).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.deployment(NS, "old", env_from_secret("only-old")).await;
    env.deployment(NS, "web", env_from_secret("db")).await;
    let flag = format!("--initial-list={path}");
    let hr = env.hashroll(&[&flag]).await;
    env.wait_recorded("deployments", NS, "old").await;
    env.wait_recorded("deployments", NS, "web").await;
    env.barrier(NS).await;
    let tracked = hr
        .metric("hashroll_workloads", &[])
        .await
        .expect("workloads gauge");
    assert_eq!(tracked, 3.0, "old, web and the barrier's Deployment");

    take_watch_down(&env, "deployments").await;
    env.dynamic("deployments", NS)
        .delete("old", &Default::default())
        .await
        .expect("delete deployment");
    relist(&env, "deployments", path).await;

    hr.wait_metric("hashroll_workloads", &[], tracked - 1.0)
        .await;

    // The Secret only the deleted Deployment used changes: hashroll has nothing left to roll for it.
    // Acting on `old` would mean a patch (a roll, or a record): count every patch from here on.
    let patches = env.control().request_count("patch", "deployments");
    env.secret(NS, "only-old", &[("password", "p2")]).await;
    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    assert_eq!(
        env.control().request_count("patch", "deployments") - patches,
        3,
        "one patch for web and two for the barrier; none for the deleted Deployment"
    );
    assert_eq!(
        hr.metric("hashroll_patch_errors_total", &[("code", "404")])
            .await,
        None,
        "no patch hit a missing workload"
    );
    assert_eq!(
        hr.metric("hashroll_workloads", &[]).await,
        Some(tracked - 1.0)
    );
    env.assert_rolls("deployments", NS, "web", 1).await;
}
