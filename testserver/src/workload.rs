//! The workload status simulator: writes the status a healthy controller would report after a spec change.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::control::WorkloadSim;
use crate::resources::{ResourceDef, SimKind};
use crate::server::State;
use crate::store::Store;

/// Reacts to a spec change (or creation) of a simulated workload, per the configured `WorkloadSim`.
pub(crate) fn on_spec_change(
    state: &Arc<State>,
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    created: bool,
) {
    match state.ctl.sim() {
        WorkloadSim::Off => {}
        WorkloadSim::Never => {
            if created {
                write_status(store, def, ns, name);
            }
        }
        WorkloadSim::Immediate => write_status(store, def, ns, name),
        WorkloadSim::Delay(d) => {
            let (state, def, ns, name) =
                (state.clone(), def.clone(), ns.to_string(), name.to_string());
            let generation = generation_of(store, &def, &ns, &name);
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                let mut store = state.store.lock().unwrap();
                // A newer spec change has its own timer; converging early would shorten its delay.
                if generation_of(&store, &def, &ns, &name) == generation {
                    write_status(&mut store, &def, &ns, &name);
                }
            });
        }
    }
}

fn generation_of(store: &Store, def: &ResourceDef, ns: &str, name: &str) -> Option<i64> {
    store.get(&def.store_id(), ns, name).and_then(|o| {
        o.obj
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
    })
}

/// Writes the converged status for the object's current generation, unless it is already there.
pub(crate) fn write_status(store: &mut Store, def: &ResourceDef, ns: &str, name: &str) {
    let rid: Arc<str> = def.store_id().into();
    let Some(cur) = store.get(&rid, ns, name) else {
        return;
    };
    let Some(kind) = def.sim else { return };
    let new = converged(kind, &cur.obj);
    if new != cur.obj {
        store.put(&rid, ns, name, new);
    }
}

/// Sets a True condition, keeping an existing True one (and its timestamps) untouched.
fn set_condition(status: &mut Value, typ: &str, reason: &str, message: &str) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let conds = status["conditions"]
        .as_array_mut()
        .expect("conditions was just made an array");
    if conds
        .iter()
        .any(|c| c["type"] == typ && c["status"] == "True")
    {
        return;
    }
    conds.retain(|c| c["type"] != typ);
    let now = crate::write::now();
    conds.push(json!({
        "type": typ,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }));
}

/// The object with the status a finished rollout reports.
pub fn converged(kind: SimKind, obj: &Value) -> Value {
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut out = obj.clone();
    if !out["status"].is_object() {
        out["status"] = json!({});
    }
    let s = &mut out["status"];
    s["observedGeneration"] = json!(generation);
    match kind {
        SimKind::Replicas => {
            for f in [
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
            ] {
                s[f] = json!(replicas);
            }
            match obj.get("kind").and_then(Value::as_str) {
                Some("StatefulSet") => s["currentReplicas"] = json!(replicas),
                // `kubectl wait --for=condition=Available` and rollout tooling read these.
                Some("Deployment") => {
                    set_condition(
                        s,
                        "Available",
                        "MinimumReplicasAvailable",
                        "Deployment has minimum availability.",
                    );
                    set_condition(
                        s,
                        "Progressing",
                        "NewReplicaSetAvailable",
                        "The rollout has completed.",
                    );
                }
                _ => {}
            }
        }
        SimKind::DaemonSet => {
            for f in [
                "desiredNumberScheduled",
                "currentNumberScheduled",
                "numberReady",
                "updatedNumberScheduled",
                "numberAvailable",
            ] {
                s[f] = json!(1);
            }
            s["numberMisscheduled"] = json!(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_status_converges_to_spec_replicas_and_generation() {
        let d = json!({"kind": "Deployment", "metadata": {"generation": 3}, "spec": {"replicas": 4}, "status": {}});
        let out = converged(SimKind::Replicas, &d);
        assert_eq!(out["status"]["observedGeneration"], 3);
        assert_eq!(out["status"]["availableReplicas"], 4);
        assert_eq!(out["status"]["updatedReplicas"], 4);
        let conds = out["status"]["conditions"].as_array().unwrap();
        assert!(
            conds
                .iter()
                .any(|c| c["type"] == "Available" && c["status"] == "True")
        );
        // A second convergence keeps the conditions (and their timestamps) as they were: start from
        // timestamps far in the past, so a condition rebuilt with the current time would show.
        let mut old = out.clone();
        for c in old["status"]["conditions"].as_array_mut().unwrap() {
            c["lastTransitionTime"] = json!("2000-01-01T00:00:00Z");
            c["lastUpdateTime"] = json!("2000-01-01T00:00:00Z");
        }
        assert_eq!(
            converged(SimKind::Replicas, &old)["status"]["conditions"],
            old["status"]["conditions"]
        );
    }

    #[test]
    fn daemonset_uses_scheduled_counts() {
        let d = json!({"kind": "DaemonSet", "metadata": {"generation": 2}, "spec": {}});
        let out = converged(SimKind::DaemonSet, &d);
        assert_eq!(out["status"]["numberAvailable"], 1);
        assert_eq!(out["status"]["observedGeneration"], 2);
    }
}
