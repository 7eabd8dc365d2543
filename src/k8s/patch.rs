//! The one write hashroll makes: a JSON merge patch of hashroll's own annotations (and, for Argo Rollouts
//! that ask for it, `spec.restartAt`). Never a full update, so GitOps tools and humans keep their fields.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::k8s::api_resource;
use crate::k8s::wire::WorkloadWire;
use crate::model::annotations::{
    ROLLED_AT_ANNOTATION, ROLLOUT_FAILED_ANNOTATION, SOURCES_ANNOTATION, STAMP_ANNOTATION,
    TEMPLATE_ANNOTATION,
};
use crate::model::hashing::Stamp;
use crate::model::kind::{WorkloadId, WorkloadKind};
use crate::model::workload::RecordedSources;

/// The field manager recorded in `managedFields` for hashroll's writes.
pub const FIELD_MANAGER: &str = "hashroll";

/// What the patch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Record on the workload's metadata only.
    Record,
    /// Record and change the pod template annotation, so the workload's controller rolls the pods.
    RollTemplate,
    /// Record and set `spec.restartAt` (Argo Rollouts' own restart), leaving the template alone.
    RestartAt,
    /// Only mark the roll recorded on the workload (the stamp) as failed, naming the source digests it
    /// carried (`sources`): `hashroll.dev/rollout-failed`, which halts their waves.
    MarkFailed,
}

impl Write {
    /// Whether the write rolls the workload's pods.
    pub fn rolls(self) -> bool {
        matches!(self, Write::RollTemplate | Write::RestartAt)
    }
}

/// Builds the merge patch for `kind`. `now` is RFC 3339: a roll records it on the metadata
/// (`hashroll.dev/rolled-at`), and [`Write::RestartAt`] sets it as `spec.restartAt`.
pub fn patch_body(
    kind: WorkloadKind,
    write: Write,
    stamp: &Stamp,
    sources: &RecordedSources,
    now: &str,
) -> Value {
    if write == Write::MarkFailed {
        let marker = format!("{} {}", stamp.as_str(), sources.as_json());
        return json!({ "metadata": { "annotations": { ROLLOUT_FAILED_ANNOTATION: marker } } });
    }
    let mut body = json!({
        "metadata": { "annotations": {
            STAMP_ANNOTATION: stamp.as_str(),
            SOURCES_ANNOTATION: sources.as_json(),
        }}
    });
    if write != Write::Record {
        body["metadata"]["annotations"][ROLLED_AT_ANNOTATION] = json!(now);
    }
    match write {
        Write::Record | Write::MarkFailed => {}
        Write::RestartAt => body["spec"] = json!({ "restartAt": now }),
        Write::RollTemplate => {
            // Nested along the kind's template path; a CronJob's suspend and schedule stay untouched.
            let mut node = &mut body;
            for step in kind.template_path() {
                node = &mut node[*step];
            }
            *node =
                json!({ "metadata": { "annotations": { TEMPLATE_ANNOTATION: stamp.as_str() } } });
        }
    }
    body
}

/// Sends the patch and returns the workload as stored afterwards.
pub async fn send(client: &Client, id: &WorkloadId, body: &Value) -> kube::Result<WorkloadWire> {
    let api: Api<WorkloadWire> =
        Api::namespaced_with(client.clone(), &id.namespace, &api_resource(id.kind));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(&id.name, &params, &Patch::Merge(body)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::hashing::InstallationKey;
    use std::collections::BTreeMap;

    fn stamp() -> Stamp {
        let key = InstallationKey::from_bytes(&[1u8; 32]).unwrap();
        crate::model::hashing::stamp_of_sources(
            &key,
            &BTreeMap::from([("secret/db".into(), "abc".into())]),
        )
    }

    #[test]
    fn a_failed_rollout_is_marked_in_one_annotation_read_back_as_a_halt() {
        use crate::model::workload::Stored;
        let s = stamp();
        let changed = BTreeMap::from([("secret/db".to_string(), "0123456789ab".to_string())]);
        let body = patch_body(
            WorkloadKind::Deployment,
            Write::MarkFailed,
            &s,
            &changed.clone().into(),
            "t",
        );
        let annotations = &body["metadata"]["annotations"];
        assert_eq!(body.as_object().unwrap().len(), 1, "metadata only: {body}");
        assert_eq!(annotations.as_object().unwrap().len(), 1, "{body}");
        let mark = annotations[ROLLOUT_FAILED_ANNOTATION].as_str().unwrap();
        let stored = Stored::from_annotations(&BTreeMap::from([
            (STAMP_ANNOTATION.to_string(), s.as_str().to_string()),
            (ROLLOUT_FAILED_ANNOTATION.to_string(), mark.to_string()),
        ]));
        assert_eq!(stored.rollout_failed, Some(Box::new((s, changed))));
    }

    #[test]
    fn record_touches_metadata_only() {
        let s = stamp();
        let body = patch_body(
            WorkloadKind::Deployment,
            Write::Record,
            &s,
            &BTreeMap::new().into(),
            "t",
        );
        assert_eq!(
            body["metadata"]["annotations"][STAMP_ANNOTATION],
            s.as_str()
        );
        assert_eq!(body["metadata"]["annotations"][SOURCES_ANNOTATION], "{}");
        assert!(
            body["metadata"]["annotations"]
                .get(ROLLED_AT_ANNOTATION)
                .is_none()
        );
        assert!(body.get("spec").is_none());
    }

    #[test]
    fn roll_sets_the_template_annotation_where_each_kind_keeps_its_template() {
        let s = stamp();
        let m = BTreeMap::from([("secret/db".to_string(), "abc".to_string())]);
        for kind in [
            WorkloadKind::Deployment,
            WorkloadKind::StatefulSet,
            WorkloadKind::DaemonSet,
            WorkloadKind::Rollout,
        ] {
            let body = patch_body(kind, Write::RollTemplate, &s, &m.clone().into(), "t");
            assert_eq!(
                body["spec"]["template"]["metadata"]["annotations"][TEMPLATE_ANNOTATION],
                s.as_str()
            );
        }
        let body = patch_body(
            WorkloadKind::CronJob,
            Write::RollTemplate,
            &s,
            &m.into(),
            "t",
        );
        let t = &body["spec"]["jobTemplate"]["spec"]["template"];
        assert_eq!(
            t["metadata"]["annotations"][TEMPLATE_ANNOTATION],
            s.as_str()
        );
        assert!(body["spec"].get("suspend").is_none());
        assert_eq!(
            body["metadata"]["annotations"][SOURCES_ANNOTATION],
            r#"{"secret/db":"abc"}"#
        );
    }

    #[test]
    fn restart_at_leaves_the_template_alone() {
        let body = patch_body(
            WorkloadKind::Rollout,
            Write::RestartAt,
            &stamp(),
            &BTreeMap::new().into(),
            "2026-11-23T10:00:00Z",
        );
        assert_eq!(body["spec"]["restartAt"], "2026-11-23T10:00:00Z");
        assert!(body["spec"].get("template").is_none());
        assert_eq!(
            body["metadata"]["annotations"][ROLLED_AT_ANNOTATION],
            "2026-11-23T10:00:00Z"
        );
    }
}
