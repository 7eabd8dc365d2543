//! Sending alerts, off the decision path: the loop hands each alert to a bounded queue and never waits
//! (a full queue drops the alert and counts it); one task posts them in order, retrying a failed post
//! with backoff. A dead or slow webhook delays alerts, never a roll.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::alerts::message::{Alert, Sink, body};
use crate::alerts::settings::AlertSettings;
use crate::telemetry::metrics::Metrics;

/// Alerts waiting to be sent; more are dropped (and counted) until the webhook catches up.
pub const QUEUE: usize = 256;
/// One post may take this long, connecting included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries after the first attempt, with backoff from 500 ms doubling to 8 s (about 15 s in all).
const RETRIES: usize = 5;

/// Where the loop hands alerts over; does nothing when alerts are off. Cheap to clone.
#[derive(Clone)]
pub struct AlertQueue {
    inner: Option<(mpsc::Sender<(Alert, Timestamp)>, Sink)>,
    metrics: Metrics,
}

impl AlertQueue {
    /// Alerts off.
    pub fn off(metrics: Metrics) -> AlertQueue {
        AlertQueue {
            inner: None,
            metrics,
        }
    }

    /// Queues `alert`, stamped with the time now, without waiting.
    pub fn send(&self, alert: Alert) {
        let Some((tx, sink)) = &self.inner else {
            return;
        };
        if let Err(e) = tx.try_send((alert, Timestamp::now())) {
            let (alert, _) = e.into_inner();
            self.metrics.alert(sink.as_str(), "dropped");
            tracing::warn!(workload = %alert.workload, result = alert.result(),
                "alert dropped: the alert queue is full (the webhook is slow or down)");
        }
    }
}

/// Starts the sender; the queue's last handle dropped, it sends what is queued and ends.
pub fn start(settings: AlertSettings, metrics: Metrics) -> (AlertQueue, Option<JoinHandle<()>>) {
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the alert webhook's HTTP client; no alerts");
            return (AlertQueue::off(metrics), None);
        }
    };
    let sink = settings.sink;
    for result in ["sent", "failed", "dropped"] {
        metrics.preset_alert(sink.as_str(), result);
    }
    tracing::info!(
        sink = sink.as_str(),
        host = settings.host(),
        set_by = settings.origin,
        "sending an alert after each roll"
    );
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(rx, settings, client, metrics.clone()));
    let queue = AlertQueue {
        inner: Some((tx, sink)),
        metrics,
    };
    (queue, Some(task))
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client() -> std::io::Result<HttpClient> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

async fn run(
    mut rx: mpsc::Receiver<(Alert, Timestamp)>,
    settings: AlertSettings,
    client: HttpClient,
    metrics: Metrics,
) {
    let sink = settings.sink.as_str();
    let backoff = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(8))
        .with_max_times(RETRIES)
        .with_jitter();
    while let Some((alert, at)) = rx.recv().await {
        let body = body(
            settings.sink,
            &alert,
            at,
            settings.additional_info.as_deref(),
        );
        let post = || post(&client, &settings, &body);
        let sent = post
            .retry(backoff)
            .when(Failure::worth_retrying)
            .notify(|e, retry_in| {
                tracing::debug!(workload = %alert.workload, error = %e, ?retry_in, "alert not sent yet; retrying")
            })
            .await;
        match sent {
            Ok(()) => metrics.alert(sink, "sent"),
            Err(e) => {
                metrics.alert(sink, "failed");
                tracing::warn!(workload = %alert.workload, result = alert.result(), host = settings.host(),
                    error = %e, "could not send the alert");
            }
        }
    }
}

/// Why a post failed, without the URL (it may hold a token).
#[derive(Debug)]
enum Failure {
    Status(StatusCode),
    Transport(String),
    Timeout,
}

impl Failure {
    /// The webhook may answer later: it is unreachable, slow, overloaded, or failing. Any other refusal
    /// (a wrong token, a malformed body) will not change.
    fn worth_retrying(&self) -> bool {
        match self {
            Failure::Status(s) => {
                s.is_server_error()
                    || *s == StatusCode::TOO_MANY_REQUESTS
                    || *s == StatusCode::REQUEST_TIMEOUT
            }
            Failure::Transport(_) | Failure::Timeout => true,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "the webhook answered {s}"),
            Failure::Transport(e) => write!(f, "{e}"),
            Failure::Timeout => write!(f, "no answer within {ATTEMPT_TIMEOUT:?}"),
        }
    }
}

/// One post; a redirect is not followed (it counts as a refusal, as in Reloader).
async fn post(
    client: &HttpClient,
    settings: &AlertSettings,
    body: &crate::alerts::message::Body,
) -> Result<(), Failure> {
    let request = Request::post(settings.url.clone())
        .header(hyper::header::CONTENT_TYPE, body.content_type)
        .header(
            hyper::header::USER_AGENT,
            concat!("hashroll/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body.bytes.clone())))
        .map_err(|e| Failure::Transport(e.to_string()))?;
    let response = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request))
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(|e| Failure::Transport(transport_error(&e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure::Status(status))
    }
}

/// hyper-util's error and its causes, which name the failure (connection refused, TLS) but not the URL.
fn transport_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::message::{Changes, Outcome};
    use crate::model::kind::{WorkloadId, WorkloadKind};

    fn alert(name: &str) -> Alert {
        Alert {
            workload: WorkloadId::new(WorkloadKind::Deployment, "ns", name),
            changes: Changes::default(),
            outcome: Outcome::Rolled,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Metrics::new();
        let (tx, mut rx) = mpsc::channel(2);
        let queue = AlertQueue {
            inner: Some((tx, Sink::Teams)),
            metrics: metrics.clone(),
        };
        for name in ["a", "b", "c", "d"] {
            queue.send(alert(name));
        }
        let dropped = |m: &Metrics| {
            m.render()
                .lines()
                .find(|l| {
                    l.starts_with("hashroll_alerts_total{")
                        && l.contains(r#"sink="teams""#)
                        && l.contains(r#"result="dropped""#)
                })
                .and_then(|l| l.rsplit_once(' '))
                .map(|(_, v)| v.parse::<f64>().unwrap())
        };
        assert_eq!(dropped(&metrics), Some(2.0));
        // The oldest are kept, in order.
        assert_eq!(&*rx.try_recv().unwrap().0.workload.name, "a");
        assert_eq!(&*rx.try_recv().unwrap().0.workload.name, "b");
        // Alerts off: nothing queued, nothing counted.
        let off = AlertQueue::off(Metrics::new());
        off.send(alert("e"));
        assert_eq!(dropped(&off.metrics), None);
    }

    #[test]
    fn only_what_may_change_is_retried() {
        for (status, retried) in [
            (500, true),
            (503, true),
            (429, true),
            (408, true),
            (400, false),
            (403, false),
            (404, false),
            (302, false),
        ] {
            let f = Failure::Status(StatusCode::from_u16(status).unwrap());
            assert_eq!(f.worth_retrying(), retried, "{status}");
        }
        assert!(Failure::Timeout.worth_retrying());
        assert!(Failure::Transport("connection refused".into()).worth_retrying());
    }
}
