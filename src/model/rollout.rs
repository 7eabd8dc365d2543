//! Whether a workload has finished rolling out, as its own controller reports it in its status: the small
//! verdict health-gated waves (`--max-concurrent-rollouts`) wait for. Only the status fields read here are
//! parsed; the rest of the status is skipped.

use serde::Deserialize;

use crate::model::kind::WorkloadKind;

/// A workload's rollout, as its controller reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Every replica runs the latest template (or there is nothing to roll: a CronJob, zero replicas).
    Done,
    Rolling,
    /// The controller gave up: a Deployment's progress deadline exceeded, an Argo Rollout `Degraded`.
    Failed,
}

/// The status fields the verdict reads, for every kind (absent ones are None).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusWire {
    /// An integer everywhere but in some Argo Rollouts versions, which write it as a string.
    #[serde(default)]
    observed_generation: Option<serde_json::Value>,
    #[serde(default)]
    replicas: Option<i64>,
    #[serde(default)]
    updated_replicas: Option<i64>,
    #[serde(default)]
    available_replicas: Option<i64>,
    #[serde(default)]
    ready_replicas: Option<i64>,
    #[serde(default)]
    current_revision: Option<String>,
    #[serde(default)]
    update_revision: Option<String>,
    #[serde(default)]
    desired_number_scheduled: Option<i64>,
    #[serde(default)]
    updated_number_scheduled: Option<i64>,
    #[serde(default)]
    number_available: Option<i64>,
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    conditions: Vec<ConditionWire>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ConditionWire {
    #[serde(default, rename = "type")]
    type_: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

impl StatusWire {
    fn observed_generation(&self) -> Option<i64> {
        match self.observed_generation.as_ref()? {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The controller has seen the latest spec.
    fn caught_up(&self, generation: Option<i64>) -> bool {
        match (generation, self.observed_generation()) {
            (Some(g), Some(o)) => o >= g,
            (None, _) => true,
            (Some(_), None) => false,
        }
    }
}

/// The verdict for a workload of `kind` whose `metadata.generation` is `generation` and whose spec asks for
/// `desired` replicas (None: the kind's default, one; DaemonSets say it in their status).
pub fn progress(
    kind: WorkloadKind,
    generation: Option<i64>,
    desired: Option<i64>,
    status: Option<&StatusWire>,
) -> Progress {
    let default = StatusWire::default();
    let s = status.unwrap_or(&default);
    let desired = desired.unwrap_or(1);
    let n = |v: Option<i64>| v.unwrap_or(0);
    let done = |yes: bool| {
        if yes {
            Progress::Done
        } else {
            Progress::Rolling
        }
    };
    match kind {
        WorkloadKind::CronJob => Progress::Done,
        WorkloadKind::Deployment => {
            let deadline_exceeded = s.conditions.iter().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            });
            if deadline_exceeded && s.caught_up(generation) {
                return Progress::Failed;
            }
            done(
                desired == 0
                    || (s.caught_up(generation)
                        && n(s.updated_replicas) >= desired
                        && n(s.available_replicas) >= desired
                        // The old replicas are gone.
                        && n(s.replicas) <= n(s.updated_replicas)),
            )
        }
        WorkloadKind::StatefulSet => done(
            desired == 0
                || (s.caught_up(generation)
                    && s.update_revision == s.current_revision
                    && n(s.ready_replicas) >= desired),
        ),
        WorkloadKind::DaemonSet => {
            let want = n(s.desired_number_scheduled);
            done(
                s.caught_up(generation)
                    && n(s.updated_number_scheduled) >= want
                    && n(s.number_available) >= want,
            )
        }
        WorkloadKind::Rollout => match s.phase.as_deref() {
            _ if desired == 0 => Progress::Done,
            _ if !s.caught_up(generation) => Progress::Rolling,
            Some("Healthy") => Progress::Done,
            Some("Degraded") => Progress::Failed,
            _ => Progress::Rolling,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn verdict(
        kind: WorkloadKind,
        generation: i64,
        desired: Option<i64>,
        status: Value,
    ) -> Progress {
        let s: StatusWire = serde_json::from_value(status).unwrap();
        progress(kind, Some(generation), desired, Some(&s))
    }

    #[test]
    fn a_deployment_is_done_when_its_controller_caught_up_and_every_replica_is_new_and_available() {
        use WorkloadKind::Deployment as D;
        let done = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
            "availableReplicas": 3});
        assert_eq!(verdict(D, 2, Some(3), done.clone()), Progress::Done);
        assert_eq!(
            verdict(D, 3, Some(3), done),
            Progress::Rolling,
            "not seen the latest spec"
        );
        let surge = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3,
            "availableReplicas": 3});
        assert_eq!(
            verdict(D, 2, Some(3), surge),
            Progress::Rolling,
            "an old pod left"
        );
        let unavailable = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
            "availableReplicas": 2});
        assert_eq!(verdict(D, 2, Some(3), unavailable), Progress::Rolling);
        let stuck = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded"}]});
        assert_eq!(verdict(D, 2, Some(1), stuck.clone()), Progress::Failed);
        assert_eq!(
            verdict(D, 3, Some(1), stuck),
            Progress::Rolling,
            "the deadline of an older spec says nothing of this one"
        );
        assert_eq!(
            verdict(D, 5, Some(0), json!({})),
            Progress::Done,
            "zero replicas"
        );
        assert_eq!(
            progress(D, Some(1), None, None),
            Progress::Rolling,
            "no status yet"
        );
    }

    #[test]
    fn a_statefulset_is_done_when_its_revisions_agree_and_its_replicas_are_ready() {
        use WorkloadKind::StatefulSet as S;
        let status = |cur: &str, upd: &str, ready: i64| {
            json!({"observedGeneration": 4, "currentRevision": cur, "updateRevision": upd,
                "readyReplicas": ready})
        };
        assert_eq!(
            verdict(S, 4, Some(2), status("r2", "r2", 2)),
            Progress::Done
        );
        assert_eq!(
            verdict(S, 4, Some(2), status("r1", "r2", 2)),
            Progress::Rolling
        );
        assert_eq!(
            verdict(S, 4, Some(2), status("r2", "r2", 1)),
            Progress::Rolling
        );
        assert_eq!(verdict(S, 4, Some(0), json!({})), Progress::Done);
    }

    #[test]
    fn a_daemonset_is_done_when_every_scheduled_pod_is_updated_and_available() {
        use WorkloadKind::DaemonSet as DS;
        let status = |updated: i64, available: i64| {
            json!({"observedGeneration": 7, "desiredNumberScheduled": 3,
                "updatedNumberScheduled": updated, "numberAvailable": available})
        };
        assert_eq!(verdict(DS, 7, None, status(3, 3)), Progress::Done);
        assert_eq!(verdict(DS, 7, None, status(2, 3)), Progress::Rolling);
        assert_eq!(verdict(DS, 7, None, status(3, 2)), Progress::Rolling);
        assert_eq!(verdict(DS, 8, None, status(3, 3)), Progress::Rolling);
    }

    #[test]
    fn an_argo_rollout_is_judged_by_its_phase_and_a_cronjob_is_done_at_once() {
        use WorkloadKind::Rollout as R;
        let phase = |p: &str| json!({"observedGeneration": "3", "phase": p});
        assert_eq!(verdict(R, 3, Some(2), phase("Healthy")), Progress::Done);
        assert_eq!(
            verdict(R, 3, Some(2), phase("Progressing")),
            Progress::Rolling
        );
        assert_eq!(verdict(R, 3, Some(2), phase("Degraded")), Progress::Failed);
        assert_eq!(verdict(R, 4, Some(2), phase("Healthy")), Progress::Rolling);
        assert_eq!(
            progress(WorkloadKind::CronJob, Some(9), None, None),
            Progress::Done
        );
    }
}
