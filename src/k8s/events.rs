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
        let regarding = ObjectReference {
            api_version: Some(ar.api_version),
            kind: Some(ar.kind),
            name: Some(id.name.to_string()),
            namespace: Some(id.namespace.to_string()),
            uid: uid.map(str::to_string),
            ..ObjectReference::default()
        };
        self.publish_regarding(regarding, ev).await
    }

    /// Creates an Event about any namespaced object (the canary ConfigMap), in its namespace.
    pub async fn publish_regarding(
        &self,
        regarding: ObjectReference,
        ev: &WorkloadEvent,
    ) -> kube::Result<()> {
        let (Some(name), Some(namespace)) = (regarding.name.clone(), regarding.namespace.clone())
        else {
            return Ok(());
        };
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
                name: Some(event_name(&name, now.as_nanosecond())),
                namespace: Some(namespace.clone()),
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
            regarding: Some(regarding),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

/// The longest object name Kubernetes accepts (a DNS-1123 subdomain).
const MAX_NAME: usize = 253;

/// `<workload>.<time in hex>`, as kubectl's Events are named, cut so that it stays a valid name for any
/// valid workload name: the workload part is shortened to fit, and never ends in `-` or `.`.
fn event_name(workload: &str, nanos: i128) -> String {
    let suffix = format!(".{:x}", nanos.max(0));
    let room = MAX_NAME - suffix.len();
    // Workload names are ASCII (DNS-1123), so any byte index is a character boundary.
    let mut base = &workload[..workload.len().min(room)];
    base = base.trim_end_matches(['-', '.']);
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::names::is_dns1123_subdomain;

    #[test]
    fn event_names_are_valid_for_every_valid_workload_name() {
        let now = 0x1877_5b4a_93c2_5a00_i128;
        assert_eq!(event_name("web", now), "web.18775b4a93c25a00");
        let longest = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        assert_eq!(longest.len(), 253);
        // Cut where a `-` or `.` would end the kept part.
        let dotted = format!("{}.{}", "a".repeat(235), "b".repeat(17));
        let dashed = format!("{}-{}", "a".repeat(235), "b".repeat(17));
        for w in [longest.as_str(), dotted.as_str(), dashed.as_str(), "a"] {
            let name = event_name(w, now);
            assert!(name.len() <= 253, "{} chars", name.len());
            assert!(is_dns1123_subdomain(&name), "{name}");
            assert!(name.starts_with(&w[..w.len().min(200)]));
        }
    }
}
