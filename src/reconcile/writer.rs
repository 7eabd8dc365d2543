//! The writer: a bounded pool of API writes (the patch that records or rolls, then its Event; Events of
//! their own). At most `concurrency` run at once, however many are due (6,000 at first sight); the rest
//! wait in a queue as what they are made of, and are built into request bodies only when sent.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use kube::Client;
use tokio::task::JoinSet;

use crate::alerts::{Alert, AlertQueue, Changes};
use crate::error::Error;
use crate::k8s::events::{EventPublisher, WorkloadEvent};
use crate::k8s::patch::{self, Write};
use crate::model::hashing::Stamp;
use crate::model::kind::SourceId;
use crate::model::policy::PolicySettings;
use crate::model::workload::{RecordedSources, WorkloadSummary};
use crate::reconcile::scheduler::{Wid, shrink};
use crate::telemetry::metrics::Metrics;
use k8s_openapi::api::core::v1::ObjectReference;

/// A write to one workload: record its state, or record and roll it.
#[derive(Debug)]
pub struct WriteRequest {
    pub id: Wid,
    pub write: Write,
    pub stamp: Stamp,
    pub sources: RecordedSources,
    /// Published once the patch succeeded (a roll's `Reloaded`).
    pub event: Option<WorkloadEvent>,
    /// The workload's uid, for the Event's reference.
    pub uid: Option<String>,
    /// For a roll, what changed (`Secret db (keys: password)`), for its alert and, if it fails for good,
    /// its Event.
    pub rolled_for: Option<Changes>,
    /// For a roll, when the first change it carries was seen: its reaction time counts from there.
    pub changed_at: Option<Instant>,
    /// For a roll, the digests of the sources it changes (`secret/db` → digest): what a halt of its
    /// wave is keyed by.
    pub changed: BTreeMap<String, String>,
}

/// An Event on its own (a malformed annotation, a dry run's `WouldReload`).
#[derive(Debug)]
pub struct EventRequest {
    pub id: Wid,
    pub uid: Option<String>,
    pub event: WorkloadEvent,
    /// The Event is about this source instead (a halt, on the source whose change it holds back).
    pub about_source: Option<SourceId>,
}

enum Job {
    Write(WriteRequest),
    Event(EventRequest),
}

/// The outcome of one write: the workload as stored afterwards, or why it failed.
pub struct Written {
    pub id: Wid,
    /// The roll's [`WriteRequest::rolled_for`]; its [`WriteRequest::changed_at`] when it failed.
    pub rolled_for: Option<Changes>,
    pub changed_at: Option<Instant>,
    pub result: Result<Option<WorkloadSummary>, Error>,
}

/// Runs writes against the API server, a bounded number at a time.
pub struct Writer {
    client: Client,
    events: EventPublisher,
    metrics: Metrics,
    policy: PolicySettings,
    concurrency: usize,
    /// Alerts are not API writes: they go to their own queue at once, whatever is in flight here.
    alerts: AlertQueue,
    queued: VecDeque<Job>,
    /// Each task returns its write's outcome (None for an Event on its own).
    tasks: JoinSet<Option<Written>>,
}

impl Writer {
    pub fn new(
        client: Client,
        events: EventPublisher,
        metrics: Metrics,
        policy: PolicySettings,
        concurrency: usize,
        alerts: AlertQueue,
    ) -> Writer {
        Writer {
            client,
            events,
            metrics,
            policy,
            concurrency: concurrency.max(1),
            alerts,
            queued: VecDeque::new(),
            tasks: JoinSet::new(),
        }
    }

    pub fn write(&mut self, w: WriteRequest) {
        self.queued.push_back(Job::Write(w));
        self.pump();
    }

    pub fn publish(&mut self, e: EventRequest) {
        self.queued.push_back(Job::Event(e));
        self.pump();
    }

    /// Hands an alert to the alert queue, without waiting (dropped and counted if it is full).
    pub fn alert(&self, a: Alert) {
        self.alerts.send(a);
    }

    /// Nothing queued or running.
    pub fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.tasks.is_empty()
    }

    /// The next finished write; pending while none is running. Cancel-safe.
    pub async fn next_written(&mut self) -> Written {
        loop {
            if self.tasks.is_empty() {
                std::future::pending::<()>().await;
            }
            let finished = self.tasks.join_next().await;
            self.pump();
            if let Some(Ok(Some(written))) = finished {
                return written;
            }
            // An Event task, or a task that panicked (its workload is retried at the next change).
        }
    }

    /// Stops taking work and waits (at most `limit`) for what runs now; what is only queued is dropped,
    /// and found again by the next start's level-triggered pass.
    pub async fn drain(mut self, limit: Duration) {
        self.queued.clear();
        tracing::info!(
            in_flight = self.tasks.len(),
            "stopping: finishing patches in flight"
        );
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("patches still in flight after {limit:?}; exiting anyway");
        }
    }

    /// After a burst, give the queue's capacity back.
    pub fn shrink(&mut self) {
        shrink(&mut self.queued);
    }

    fn pump(&mut self) {
        while self.tasks.len() < self.concurrency {
            let Some(job) = self.queued.pop_front() else {
                return;
            };
            let (client, events, metrics, policy) = (
                self.client.clone(),
                self.events.clone(),
                self.metrics.clone(),
                self.policy,
            );
            self.tasks.spawn(async move {
                match job {
                    Job::Write(w) => Some(send(&client, &events, &metrics, policy, w).await),
                    Job::Event(EventRequest {
                        about_source: Some(source),
                        event,
                        ..
                    }) => {
                        let regarding = ObjectReference {
                            api_version: Some("v1".into()),
                            kind: Some(source.kind.info().kind.into()),
                            name: Some(source.name.to_string()),
                            namespace: Some(source.namespace.to_string()),
                            ..ObjectReference::default()
                        };
                        if let Err(e) = events.publish_regarding(regarding, &event).await {
                            metrics
                                .event_errors
                                .with_label_values(&[event.reason])
                                .inc();
                            tracing::warn!(source = %source, error = %e, "could not publish Event");
                        }
                        None
                    }
                    Job::Event(e) => {
                        publish(&events, &metrics, &e.id, e.uid.as_deref(), &e.event).await;
                        None
                    }
                }
            });
        }
    }
}

async fn send(
    client: &Client,
    events: &EventPublisher,
    metrics: &Metrics,
    policy: PolicySettings,
    w: WriteRequest,
) -> Written {
    let WriteRequest {
        id,
        write,
        stamp,
        sources,
        event,
        uid,
        rolled_for,
        changed_at,
        changed: _,
    } = w;
    // `now` only matters for Argo Rollouts' restartAt: the time the patch is sent.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let body = patch::patch_body(id.kind, write, &stamp, &sources, &now);
    let result = {
        let _timer = metrics.patch_timer(id.kind);
        patch::send(client, &id, &body).await
    };
    match write {
        Write::Record if result.is_ok() => metrics.record(id.kind, &id.namespace),
        Write::Record | Write::MarkFailed => {}
        Write::RollTemplate | Write::RestartAt => {
            metrics.roll(id.kind, &id.namespace, result.is_ok());
            if let (Ok(_), Some(seen)) = (&result, changed_at) {
                metrics.reaction(id.kind, seen.elapsed());
            }
        }
    }
    match result {
        Ok(obj) => {
            if let Some(ev) = &event {
                publish(events, metrics, &id, uid.as_deref(), ev).await;
            }
            Written {
                result: Ok(obj.summary(id.kind, policy)),
                rolled_for,
                changed_at: None,
                id,
            }
        }
        Err(e) => Written {
            result: Err(Error::api("patching", &*id, e)),
            rolled_for,
            changed_at,
            id,
        },
    }
}

async fn publish(
    events: &EventPublisher,
    metrics: &Metrics,
    id: &Wid,
    uid: Option<&str>,
    ev: &WorkloadEvent,
) {
    if let Err(e) = events.publish(id, uid, ev).await {
        metrics.event_errors.with_label_values(&[ev.reason]).inc();
        tracing::warn!(workload = %id, error = %e, "could not publish Event");
    }
}
