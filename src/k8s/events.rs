//! Kubernetes Events on workloads (`events.k8s.io/v1`), one per roll and one per malformed annotation.
//!
//! kube-runtime's `Recorder` folds repeated events with the same reason into a series that keeps the first
//! note; every roll here must name its own sources, so each Event is created afresh.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::k8s::api_resource;
use crate::model::kind::WorkloadId;

/// `reportingController` of every Event hashroll writes.
pub const REPORTING_CONTROLLER: &str = "hashroll.dev/hashroll";

/// Normal or Warning, as `kubectl describe` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// One Event to publish about a workload.
#[derive(Debug, Clone)]
pub struct WorkloadEvent {
    pub type_: EventType,
    /// PascalCase reason (`Reloaded`, `InvalidAnnotation`).
    pub reason: &'static str,
    pub action: &'static str,
    /// The message; never contains values, only names of sources and keys.
    pub note: String,
}

/// Publishes Events; cheap to clone.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    instance: String,
}

impl EventPublisher {
    pub fn new(client: Client, instance: String) -> Self {
        EventPublisher { client, instance }
    }

    /// Creates the Event in the workload's namespace.
    pub async fn publish(
        &self,
        id: &WorkloadId,
        uid: Option<&str>,
        ev: &WorkloadEvent,
    ) -> kube::Result<()> {
        let ar = api_resource(id.kind);
        let now = Timestamp::now();
        let mut note = ev.note.clone();
        if note.len() > 1000 {
            let mut cut = 990;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push_str(" …");
        }
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", id.name, now.as_nanosecond())),
                namespace: Some(id.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(ev.action.into()),
            reason: Some(ev.reason.into()),
            note: Some(note),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            regarding: Some(ObjectReference {
                api_version: Some(ar.api_version),
                kind: Some(ar.kind),
                name: Some(id.name.clone()),
                namespace: Some(id.namespace.clone()),
                uid: uid.map(str::to_string),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &id.namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}
