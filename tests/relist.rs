//! End to end: what was deleted while one of hashroll's watches was down, and so was never seen as a
//! deletion, is forgotten when that watch re-lists (after a 410 Gone), without restarting hashroll.
//!
//! How a watch is taken down so that a deletion is genuinely unseen: every watch request on the resource
//! is made to fail (500, which clients do not retry on their own), then the open watches are closed and
//! the test waits until hashroll's reconnect has failed, so no stream of that resource is open. The object
//! is deleted and the server's history compacted, then the test itself uses up the remaining faults. The
//! next watch hashroll opens resumes from a compacted resourceVersion, gets 410 Expired and must list
//! again; the server's request log shows that list.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Env, Hashroll, env_from_secret, optional_env_from_secret};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, WatchParams};
use kube_testserver::{Fault, RequestMatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let ctl = env.server.control();
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
/// succeed again by using up the remaining faults, and waits until hashroll has listed `resource` again.
async fn relist(env: &Env, resource: &str) {
    let ctl = env.server.control();
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
    wait_until(&format!("hashroll lists {resource} again"), || {
        ctl.request_count("list", resource) > lists
    })
    .await;
}

/// Starts hashroll with its admin server on a free local port; returns it with that address.
async fn hashroll_with_metrics(env: &Env) -> (Hashroll, String) {
    let hr = env.hashroll(&["--admin-addr=127.0.0.1:0"]).await;
    let addr = hr
        .log_lines_with(&["admin server listening"])
        .iter()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["addr"].as_str().map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no admin address in the log:\n{}", hr.logs()));
    (hr, addr)
}

/// hashroll's `/metrics` text.
async fn metrics(addr: &str) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the admin server");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .await
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "GET /metrics: {head}");
    body.to_string()
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The per-source digests hashroll recorded on a Deployment in [`NS`].
async fn recorded_sources(env: &Env, name: &str) -> BTreeMap<String, String> {
    let a = env.annotations("deployments", NS, name).await;
    serde_json::from_str(&a["hashroll.dev/sources"]).expect("sources is a JSON map")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_secret_deleted_while_the_secret_watch_was_down_rolls_once_after_the_relist() {
    let env = Env::start().await;
    env.namespace(NS).await;
    env.secret(NS, "extra", &[("flag", "on")]).await;
    env.deployment(NS, "web", optional_env_from_secret("extra"))
        .await;
    // One hashroll process throughout: the relist alone must bring it up to date.
    let _hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 0);
    let before = recorded_sources(&env, "web").await;

    take_watch_down(&env, "secrets").await;
    env.delete_secret(NS, "extra").await;
    env.assert_rolls("deployments", NS, "web", 0);
    relist(&env, "secrets").await;

    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_deleted_while_the_deployment_watch_was_down_is_forgotten_after_the_relist() {
    let env = Env::start().await;
    env.namespace(NS).await;
    env.secret(NS, "only-old", &[("password", "p1")]).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.deployment(NS, "old", env_from_secret("only-old")).await;
    env.deployment(NS, "web", env_from_secret("db")).await;
    let (hr, admin) = hashroll_with_metrics(&env).await;
    env.wait_recorded("deployments", NS, "old").await;
    env.wait_recorded("deployments", NS, "web").await;
    env.barrier(NS).await;
    let tracked = metric(&metrics(&admin).await, "hashroll_workloads").expect("workloads gauge");
    assert_eq!(tracked, 3, "old, web and the barrier's Deployment");

    take_watch_down(&env, "deployments").await;
    env.dynamic("deployments", NS)
        .delete("old", &Default::default())
        .await
        .expect("delete deployment");
    relist(&env, "deployments").await;

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = metric(&metrics(&admin).await, "hashroll_workloads");
        if now == Some(tracked - 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hashroll_workloads stays {now:?} after the relist, expected {}",
            tracked - 1
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // The Secret only the deleted Deployment used changes: hashroll has nothing left to roll for it.
    let seen = hr.logs().len();
    env.secret(NS, "only-old", &[("password", "p2")]).await;
    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    let after = hr.logs()[seen..].to_string();
    let about_old: Vec<&str> = after
        .lines()
        .filter(|l| l.contains("relist/old\""))
        .collect();
    assert!(
        about_old.is_empty(),
        "hashroll still acts on the deleted Deployment: {about_old:#?}"
    );
    let text = metrics(&admin).await;
    let not_found: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("hashroll_patch_errors_total{") && l.contains("code=\"404\""))
        .collect();
    assert!(
        not_found.is_empty(),
        "no patch hit a missing workload: {not_found:?}"
    );
    assert_eq!(metric(&text, "hashroll_workloads"), Some(tracked - 1));
    env.assert_rolls("deployments", NS, "web", 1);
}
