//! Shared fixtures for the patch unit tests.

use serde_json::{Value, json};

use super::{PatchError, PatchType, apply_patch, server_side_apply};

pub(super) const NOW: &str = "2026-01-02T03:04:05Z";
pub(super) const LATER: &str = "2026-01-02T04:00:00Z";

pub(super) fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:1",
                            "args": ["--a"],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "volumeMounts": [
                                {"name": "cfg", "mountPath": "/etc/cfg"},
                                {"name": "data", "mountPath": "/data"}
                            ]
                        },
                        {"name": "sidecar", "image": "proxy:1"}
                    ],
                    "volumes": [
                        {"name": "cfg", "configMap": {"name": "cfg"}},
                        {"name": "data", "emptyDir": {}}
                    ],
                    "tolerations": [{"key": "a", "operator": "Exists"}]
                }
            }
        }
    })
}

pub(super) fn patched(pt: PatchType, current: &Value, patch: Value) -> Value {
    apply_patch(pt, current, patch.to_string().as_bytes()).expect("patch applies")
}

pub(super) fn strategic(current: &Value, patch: Value) -> Value {
    patched(PatchType::Strategic, current, patch)
}

pub(super) fn pod_spec(obj: &Value) -> &Value {
    &obj["spec"]["template"]["spec"]
}

pub(super) fn ssa(
    current: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, PatchError> {
    server_side_apply(current, config.to_string().as_bytes(), manager, force, NOW)
}

pub(super) fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap().to_string(),
                        e["operation"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn fields_of<'a>(obj: &'a Value, manager: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["manager"] == manager))
        .map(|e| &e["fieldsV1"])
        .unwrap_or(&Value::Null)
}

pub(super) fn applied_deployment(replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}
        }
    })
}
