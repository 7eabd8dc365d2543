//! End to end: a roll the API server keeps refusing is said to have failed for good, once, where users
//! look (a `ReloadFailed` Warning Event on the workload, and `/metrics`), while hashroll keeps retrying.

mod common;

use common::{Env, Server, e2e, secret_key_ref};
use kube_testserver::{Fault, RequestMatch};

const NS: &str = "failing";

e2e!(
    a_refused_roll_is_reported_once_with_sources_keys_and_the_apis_reason,
    test_server_only = "fault injection (three 403s on patches)"
);
async fn a_refused_roll_is_reported_once_with_sources_keys_and_the_apis_reason(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "hunter2"), ("user", "app")])
        .await;
    env.deployment(NS, "web", secret_key_ref("db", "password"))
        .await;
    let hr = env.hashroll(&[]).await;
    env.wait_recorded("deployments", NS, "web").await;

    // Three refusals in a row (RBAC, say), then the API server accepts the patch again.
    let patches = RequestMatch {
        verb: Some("patch".into()),
        resource: Some("deployments".into()),
        namespace: Some(NS.into()),
    };
    env.test_server()
        .expect("fault injection needs the test server")
        .control()
        .fail_next(3, patches, Fault::Status(403));
    env.secret(NS, "db", &[("password", "s3cret-v2"), ("user", "app")])
        .await;
    let failed = env.wait_event(NS, "web", "ReloadFailed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (type_, _, note) = &failed[0];
    assert_eq!(type_, "Warning");
    for part in ["Deployment", "Secret db", "password", "403 Forbidden"] {
        assert!(note.contains(part), "{part:?} in {note:?}");
    }
    for value in ["hunter2", "s3cret-v2", "app"] {
        assert!(!note.contains(value), "no value in {note:?}");
    }
    hr.wait_metric("hashroll_failing_workloads", &[], 1.0).await;

    // Retried with backoff until the API accepts it: one roll, and the failure said once.
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
    env.assert_rolled_annotations("deployments", NS, "web")
        .await;
    let events = env.events_for(NS, "web").await;
    let count = |reason: &str| events.iter().filter(|e| e.1 == reason).count();
    assert_eq!(
        (count("ReloadFailed"), count("Reloaded")),
        (1, 1),
        "{events:?}"
    );
    let rolls = |result| {
        let hr = &hr;
        async move {
            hr.metric(
                "hashroll_rolls_total",
                &[("kind", "Deployment"), ("result", result)],
            )
            .await
        }
    };
    assert_eq!(rolls("failure").await, Some(3.0));
    assert!(rolls("success").await >= Some(1.0));
    hr.wait_metric("hashroll_failing_workloads", &[], 0.0).await;
}
