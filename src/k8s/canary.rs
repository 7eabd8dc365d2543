//! The canary's writes (see [`crate::reconcile::canary`]): the leader applies its ConfigMap at every
//! interval with a fresh token, checks whether the writes come back through the watch in time, and says
//! so when they stop coming (a log line, a Warning Event on the ConfigMap, `hashroll_canary_stalled`) and
//! when they come again.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::time::Instant;

use crate::k8s::events::{EventPublisher, EventType, WorkloadEvent};
use crate::model::annotations::{CANARY_LABEL, CANARY_TOKEN_ANNOTATION};
use crate::reconcile::canary::{Canary, Verdict};
use crate::telemetry::metrics::Metrics;

/// The canary ConfigMap's name, in the controller namespace.
pub const CANARY_NAME: &str = "hashroll-canary";

/// Where and how often the canary is written.
#[derive(Debug, Clone)]
pub struct CanarySettings {
    pub namespace: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Labels it carries besides [`CANARY_LABEL`]: those `--resource-label-selector` asks for, so the
    /// ConfigMap watch sees it.
    pub labels: BTreeMap<String, String>,
}

/// Writes the canary until the task is aborted (with the controller, when it stops or loses the lead).
pub async fn run(
    client: Client,
    settings: CanarySettings,
    canary: Canary,
    metrics: Metrics,
    events: EventPublisher,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &settings.namespace);
    let mut labels = settings.labels.clone();
    labels.insert(CANARY_LABEL.into(), "true".into());
    let mut uid: Option<String> = None;
    let mut failing = false;
    tracing::info!(namespace = %settings.namespace, name = CANARY_NAME, interval = ?settings.interval,
        timeout = ?settings.timeout, "canary on");
    loop {
        let token = canary.with(|t| t.sending());
        let body = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CANARY_NAME, "labels": labels,
                "annotations": {CANARY_TOKEN_ANNOTATION: token}},
        });
        let params = PatchParams::apply("hashroll").force();
        match api.patch(CANARY_NAME, &params, &Patch::Apply(&body)).await {
            Ok(cm) => {
                uid = cm.metadata.uid;
                if std::mem::take(&mut failing) {
                    tracing::info!(name = CANARY_NAME, "canary written again");
                }
            }
            Err(e) => {
                canary.with(|t| t.not_sent(&token));
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(namespace = %settings.namespace, name = CANARY_NAME, error = %e,
                        "cannot write the canary ConfigMap (needs get, create and patch on configmaps in the controller namespace); retrying at each interval");
                }
            }
        }
        let next_write = Instant::now() + settings.interval;
        loop {
            // Once stalled, nothing more to wait for but the next write.
            let wake = canary
                .with(|t| t.late_at().filter(|_| !t.stalled()))
                .map_or(next_write, |late| late.min(next_write));
            // Just after the moment a write turns late, so the check sees it late.
            tokio::time::sleep_until(wake + Duration::from_millis(1)).await;
            let verdict = canary.with(|t| t.check());
            report(&verdict, &settings, uid.as_deref(), &metrics, &events).await;
            if Instant::now() >= next_write {
                break;
            }
        }
    }
}

async fn report(
    verdict: &Verdict,
    settings: &CanarySettings,
    uid: Option<&str>,
    metrics: &Metrics,
    events: &EventPublisher,
) {
    match verdict {
        Verdict::Same => {}
        Verdict::Stalled(waited) => {
            metrics.canary_stalled.set(1);
            let note = format!(
                "the canary ConfigMap {ns}/{CANARY_NAME} was written {waited:.0?} ago and has not come back \
                 through hashroll's ConfigMap watch (--canary-timeout {timeout:?}): changes to Secrets and \
                 ConfigMaps may not be seen; /readyz answers 503 until it comes back",
                ns = settings.namespace,
                timeout = settings.timeout,
            );
            tracing::error!(namespace = %settings.namespace, name = CANARY_NAME, waited = ?waited,
                "canary stalled: the watch pipeline is not delivering changes");
            let ev = WorkloadEvent {
                type_: EventType::Warning,
                reason: "CanaryStalled",
                action: "Watch",
                note,
            };
            let regarding = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
                name: Some(CANARY_NAME.into()),
                namespace: Some(settings.namespace.clone()),
                uid: uid.map(str::to_string),
                ..ObjectReference::default()
            };
            if let Err(e) = events.publish_regarding(regarding, &ev).await {
                metrics.event_errors.with_label_values(&[ev.reason]).inc();
                tracing::warn!(error = %e, "could not publish the CanaryStalled Event");
            }
        }
        Verdict::Recovered => {
            metrics.canary_stalled.set(0);
            tracing::info!(namespace = %settings.namespace, name = CANARY_NAME,
                "canary seen again: the watch pipeline delivers changes");
        }
    }
}
