//! End to end: after each roll, and each roll that failed for good, one alert reaches the webhook in its
//! sink's format, naming workload, kind, namespace, sources, keys, result and time, never a value or a
//! hash; Reloader's `ALERT_*` variables work under `--stakater-compat`; and a dead webhook delays no roll.

mod common;

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use common::{Env, Server, e2e, secret_key_ref};
use kube_testserver::{Fault, RequestMatch};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const NS: &str = "alerted";
/// Values that must never reach a webhook.
const VALUES: [&str; 3] = ["hunter2-v1", "s3cret-v2", "t0psecret-v3"];

/// One alert as the webhook received it.
#[derive(Debug)]
struct Received {
    content_type: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        assert_eq!(self.content_type, "application/json", "{self:?}");
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A local webhook answering every POST with `status`, recording what it received.
struct Webhook {
    url: String,
    received: mpsc::UnboundedReceiver<Received>,
}

impl Webhook {
    async fn start(status: StatusCode) -> Webhook {
        let (tx, received) = mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(Received { content_type, body });
                status
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/T0/tok3n", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Webhook { url, received }
    }

    /// The next alert about workload `name` (alerts about the harness's barrier Deployment are skipped).
    async fn next_about(&mut self, name: &str) -> Received {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = tokio::time::timeout(left, self.received.recv())
                .await
                .unwrap_or_else(|_| panic!("no alert about {name} within 20 s"))
                .expect("the webhook runs");
            if !r.body.contains("zz-barrier") {
                assert!(r.body.contains(name), "an alert about {name}: {r:?}");
                return r;
            }
        }
    }

    /// Nothing but barrier alerts arrived so far.
    fn assert_no_more(&mut self) {
        while let Ok(r) = self.received.try_recv() {
            assert!(r.body.contains("zz-barrier"), "unexpected alert: {r:?}");
        }
    }
}

/// No value, and no run of 12 or more hex digits (a plain or keyed hash, or a digest).
fn assert_secret_free(body: &str) {
    for v in VALUES {
        assert!(!body.contains(v), "a value in the alert: {body}");
    }
    let longest_hex = body
        .split(|c: char| !c.is_ascii_hexdigit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest_hex < 12,
        "something like a hash in the alert: {body}"
    );
}

async fn setup(env: &Env) {
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", VALUES[0]), ("user", "u")])
        .await;
    env.deployment(NS, "web", secret_key_ref("db", "password"))
        .await;
}

e2e!(each_sink_receives_one_alert_per_roll_in_its_format);
async fn each_sink_receives_one_alert_per_roll_in_its_format(on: Server) {
    let env = Env::start(on).await;
    setup(&env).await;
    let text = "hashroll rolled Deployment web in namespace alerted because Secret db (keys: \
                password) changed (";
    let mut rolls = 0;
    for sink in ["json", "slack", "teams", "gchat", "raw"] {
        let mut hook = Webhook::start(StatusCode::OK).await;
        let sink_flag = format!("--alert-sink={sink}");
        let hr = env
            .hashroll(&["--alert-webhook-url", &hook.url, &sink_flag])
            .await;
        env.wait_recorded("deployments", NS, "web").await;
        let value = VALUES[1 + rolls % 2];
        env.secret(NS, "db", &[("password", value), ("user", "u")])
            .await;
        rolls += 1;
        env.wait_rolls("deployments", NS, "web", rolls).await;
        let got = hook.next_about("web").await;
        assert_secret_free(&got.body);
        match sink {
            "json" => {
                let mut v = got.json();
                let time: jiff::Timestamp = v["time"].as_str().unwrap().parse().unwrap();
                assert!(
                    (jiff::Timestamp::now() - time).get_seconds().abs() < 60,
                    "{time}"
                );
                v.as_object_mut().unwrap().remove("time");
                let message = v.as_object_mut().unwrap().remove("message").unwrap();
                assert!(message.as_str().unwrap().starts_with(text), "{message}");
                assert_eq!(
                    v,
                    json!({
                        "version": 1,
                        "result": "success",
                        "workload": {"kind": "Deployment", "namespace": NS, "name": "web"},
                        "sources": [{"kind": "Secret", "name": "db", "keys": ["password"],
                                     "deleted": false}],
                    })
                );
            }
            "slack" | "teams" | "gchat" => {
                let v = got.json();
                let t = v["text"].as_str().unwrap();
                assert!(t.starts_with(text), "{sink}: {v}");
                assert_eq!(v.as_object().unwrap().len(), 1, "{sink}: only text: {v}");
            }
            _ => {
                assert_eq!(got.content_type, "text/plain; charset=utf-8");
                assert!(got.body.starts_with(text), "{got:?}");
            }
        }
        // A key the workload does not use: no roll, no alert (the barrier rolls twice: two alerts).
        env.secret(NS, "db", &[("password", value), ("user", sink)])
            .await;
        env.barrier(NS).await;
        env.assert_rolls("deployments", NS, "web", rolls).await;
        hook.assert_no_more();
        hr.wait_metric(
            "hashroll_alerts_total",
            &[("sink", sink), ("result", "sent")],
            3.0,
        )
        .await;
        hr.stop().await;
    }
}

e2e!(
    a_roll_that_fails_for_good_is_alerted_once,
    test_server_only = "fault injection (three 403s on patches)"
);
async fn a_roll_that_fails_for_good_is_alerted_once(on: Server) {
    let env = Env::start(on).await;
    setup(&env).await;
    let mut hook = Webhook::start(StatusCode::OK).await;
    let _hr = env
        .hashroll(&[
            "--alert-webhook-url",
            &hook.url,
            "--alert-additional-info",
            "prod-eu",
        ])
        .await;
    env.wait_recorded("deployments", NS, "web").await;
    env.control().fail_next(
        3,
        RequestMatch {
            verb: Some("patch".into()),
            resource: Some("deployments".into()),
            namespace: Some(NS.into()),
        },
        Fault::Status(403),
    );
    env.secret(NS, "db", &[("password", VALUES[1]), ("user", "u")])
        .await;
    let failed = hook.next_about("web").await.json();
    assert_eq!(failed["result"], "failure");
    assert_eq!(failed["answer"], "403 Forbidden");
    assert_eq!(failed["additional_info"], "prod-eu");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "prod-eu : hashroll could not roll Deployment web in namespace alerted after Secret db \
             (keys: password) changed: the API server answered 403 Forbidden; it keeps retrying"
        ),
        "{message}"
    );
    // Retried until the API accepts it: then the roll's own alert, and nothing more.
    let rolled = hook.next_about("web").await.json();
    assert_eq!(rolled["result"], "success");
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    hook.assert_no_more();
}

e2e!(reloader_alert_variables_work_under_stakater_compat);
async fn reloader_alert_variables_work_under_stakater_compat(on: Server) {
    let env = Env::start(on).await;
    setup(&env).await;
    let mut hook = Webhook::start(StatusCode::OK).await;
    let vars = [
        ("ALERT_ON_RELOAD", "true"),
        ("ALERT_WEBHOOK_URL", hook.url.as_str()),
        ("ALERT_SINK", "slack"),
        ("ALERT_ADDITIONAL_INFO", "cluster-a"),
    ];
    // Without the compat, Reloader's variables mean nothing.
    let hr = env
        .hashroll_with_vars(&["--stakater-compat=false"], &vars)
        .await;
    env.wait_recorded("deployments", NS, "web").await;
    env.secret(NS, "db", &[("password", VALUES[1]), ("user", "u")])
        .await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    assert!(
        hook.received.try_recv().is_err(),
        "no alert without --stakater-compat"
    );
    assert_eq!(hr.metric("hashroll_alerts_total", &[]).await, None);
    hr.stop().await;

    let hr = env.hashroll_with_vars(&[], &vars).await;
    env.secret(NS, "db", &[("password", VALUES[2]), ("user", "u")])
        .await;
    env.wait_rolls("deployments", NS, "web", 2).await;
    let v = hook.next_about("web").await.json();
    let t = v["text"].as_str().unwrap();
    assert!(
        t.starts_with(
            "cluster-a : hashroll rolled Deployment web in namespace alerted because Secret db \
             (keys: password) changed"
        ),
        "{t}"
    );
    hr.wait_metric(
        "hashroll_alerts_total",
        &[("sink", "slack"), ("result", "sent")],
        1.0,
    )
    .await;
    assert!(
        !hr.logs().contains("tok3n"),
        "the webhook URL (it holds a token) is never logged"
    );
}

e2e!(a_dead_webhook_delays_no_roll);
async fn a_dead_webhook_delays_no_roll(on: Server) {
    let env = Env::start(on).await;
    setup(&env).await;
    // A webhook that accepts connections and never answers.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", dead.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = dead.accept().await {
            open.push(conn);
        }
    });
    let hr = env.hashroll(&["--alert-webhook-url", &url]).await;
    env.wait_recorded("deployments", NS, "web").await;
    // Each roll goes out while the alerts before it hang: as fast as without alerts.
    for (i, value) in ["a1", "a2", "a3", "a4"].iter().enumerate() {
        let start = Instant::now();
        env.secret(NS, "db", &[("password", value), ("user", "u")])
            .await;
        env.wait_rolls("deployments", NS, "web", i + 1).await;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "roll {} took {:?}",
            i + 1,
            start.elapsed()
        );
    }
    assert_eq!(
        hr.metric("hashroll_alerts_total", &[("result", "sent")])
            .await,
        Some(0.0)
    );
    held.abort();
}
