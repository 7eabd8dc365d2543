//! End to end: the canary (`--canary-interval`). The leader writes a ConfigMap of its own and times its
//! return through its own ConfigMap watch; it never rolls anything; and when the watch stops delivering,
//! `/readyz` fails and a Warning Event says so, until the watch delivers again.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Hashroll, Server, e2e, pod};
use k8s_openapi::api::core::v1::ConfigMap;
use kube_testserver::{Fault, RequestMatch};
use serde_json::json;

/// hashroll's own namespace in the harness: where the canary lives.
const NS: &str = "hashroll";

/// Waits until `f` holds for hashroll's metrics (fails after `limit`).
async fn wait_metrics(hr: &Hashroll, what: &str, limit: Duration, f: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let text = hr.metrics().await;
        if f(&text) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} (timed out):\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn value(text: &str, name: &str) -> f64 {
    common::metric_value(text, name, &[]).unwrap_or_else(|| panic!("{name} not served"))
}

e2e!(the_canary_times_its_own_watch_and_never_rolls_anything);
async fn the_canary_times_its_own_watch_and_never_rolls_anything(on: Server) {
    let env = Env::start(on).await;
    // A workload that names the canary ConfigMap (optional): were it a source, every write would roll it.
    let spec =
        pod(json!({"envFrom": [{"configMapRef": {"name": "hashroll-canary", "optional": true}}]}));
    env.deployment(NS, "uses-canary", spec).await;
    let started = jiff::Timestamp::now().as_second() as f64;
    let hr = env
        .hashroll(&["--canary-interval=300ms", "--canary-timeout=10s"])
        .await;
    env.wait_recorded("deployments", NS, "uses-canary").await;
    wait_metrics(&hr, "five canaries back", Duration::from_secs(15), |m| {
        value(m, "hashroll_canary_latency_seconds_count") >= 5.0
    })
    .await;
    let m = hr.metrics().await;
    let seen = value(&m, "hashroll_canary_last_seen_timestamp_seconds");
    assert!(seen >= started, "last seen {seen}, started {started}");
    // Each round trip (a patch, then the watch event through the loop) is well under a second here.
    let mean = value(&m, "hashroll_canary_latency_seconds_sum")
        / value(&m, "hashroll_canary_latency_seconds_count");
    assert!(mean < 1.0, "mean canary latency {mean} s");
    assert_eq!(value(&m, "hashroll_canary_stalled"), 0.0);
    assert_eq!(hr.readyz().await, (200, "ready".into()));
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(env.client.clone(), NS);
    let cm = cms
        .get("hashroll-canary")
        .await
        .expect("the canary ConfigMap");
    let labels = cm.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("hashroll.dev/canary").map(String::as_str),
        Some("true")
    );
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "uses-canary", 0).await;
}

e2e!(
    a_stuck_watch_makes_the_canary_fail_readiness_until_it_delivers_again,
    test_server_only = "cuts the ConfigMap watch with injected faults, and lets it recover"
);
async fn a_stuck_watch_makes_the_canary_fail_readiness_until_it_delivers_again(on: Server) {
    let env = Env::start(on).await;
    let hr = env
        .hashroll(&["--canary-interval=300ms", "--canary-timeout=2s"])
        .await;
    wait_metrics(&hr, "a canary back", Duration::from_secs(15), |m| {
        value(m, "hashroll_canary_latency_seconds_count") >= 1.0
    })
    .await;
    assert_eq!(hr.readyz().await.0, 200);

    // The ConfigMap watch stops delivering: every new watch and list of ConfigMaps fails (the canary's
    // own writes still succeed).
    let control = env.control();
    for verb in ["watch", "list"] {
        let m = RequestMatch {
            verb: Some(verb.into()),
            resource: Some("configmaps".into()),
            namespace: None,
        };
        control.fail_next(100_000, m, Fault::Status(500));
    }
    control.close_watches();
    let cut = Instant::now();
    let deadline = cut + Duration::from_secs(15);
    let body = loop {
        let (code, body) = hr.readyz().await;
        if code == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "/readyz still {code} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        cut.elapsed() >= Duration::from_secs(2),
        "not ready after {:?}, before the timeout",
        cut.elapsed()
    );
    assert!(body.contains("canary"), "{body}");
    let events = env.wait_event(NS, "hashroll-canary", "CanaryStalled").await;
    assert_eq!(events[0].0, "Warning", "{events:?}");
    assert!(events[0].2.contains("--canary-timeout"), "{events:?}");
    hr.wait_metric("hashroll_canary_stalled", &[], 1.0).await;

    // The watch delivers again: ready again, and said so.
    let before = value(&hr.metrics().await, "hashroll_canary_latency_seconds_count");
    control.clear_faults();
    let deadline = Instant::now() + Duration::from_secs(45);
    while hr.readyz().await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(value(&hr.metrics().await, "hashroll_canary_latency_seconds_count") > before);
    hr.wait_metric("hashroll_canary_stalled", &[], 0.0).await;
    hr.wait_for_log("canary seen again", Duration::from_secs(5))
        .await;
    assert_eq!(
        env.wait_event(NS, "hashroll-canary", "CanaryStalled")
            .await
            .len(),
        1,
        "one Warning per stall"
    );
}
