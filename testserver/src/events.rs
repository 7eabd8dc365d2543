//! One store, two views of Events: a real API server keeps `v1` and `events.k8s.io/v1` Events as one
//! object, so an Event written through either API is read through both (`kubectl get events` and
//! `kubectl describe` read `v1`; controllers often write `events.k8s.io/v1`). Here every write of one view
//! is mirrored into the other with the field conversion the real server applies.

use serde_json::{Map, Value};

/// Store id of `v1` Events.
pub const CORE: &str = "/events";
/// Store id of `events.k8s.io/v1` Events.
pub const EVENTS_V1: &str = "events.k8s.io/events";

/// The other view's store id and the object converted to it, if `rid` is one of the two Event views.
pub fn mirror(rid: &str, obj: &Value) -> Option<(&'static str, Value)> {
    match rid {
        CORE => Some((EVENTS_V1, core_to_v1(obj))),
        EVENTS_V1 => Some((CORE, v1_to_core(obj))),
        _ => None,
    }
}

/// Field pairs: (`v1` name, `events.k8s.io/v1` name).
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("count", "deprecatedCount"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("source", "deprecatedSource"),
    ("reportingComponent", "reportingController"),
];
const SAME: &[&str] = &[
    "metadata",
    "reason",
    "type",
    "action",
    "related",
    "eventTime",
    "series",
    "reportingInstance",
];

fn convert(obj: &Value, api_version: &str, to_v1: bool) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    for f in SAME {
        if let Some(v) = obj.get(*f) {
            out.insert((*f).into(), v.clone());
        }
    }
    for (core, v1) in RENAMED {
        let (from, to) = if to_v1 { (core, v1) } else { (v1, core) };
        if let Some(v) = obj.get(*from) {
            out.insert((*to).into(), v.clone());
        }
    }
    Value::Object(out)
}

fn core_to_v1(obj: &Value) -> Value {
    let mut out = convert(obj, "events.k8s.io/v1", true);
    // Old-style events name their reporter only in `source.component`.
    if out.get("reportingController").is_none()
        && let Some(c) = obj.pointer("/source/component").cloned()
    {
        out["reportingController"] = c;
    }
    out
}

fn v1_to_core(obj: &Value) -> Value {
    let mut out = convert(obj, "v1", false);
    // kubectl's LAST SEEN falls back to eventTime; `source.component` is what `describe` shows as From.
    if out.get("source").is_none()
        && let Some(c) = obj.get("reportingController").cloned()
    {
        out["source"] = serde_json::json!({ "component": c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_event_reads_as_core_event_and_back() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "app"},
            "regarding": {"kind": "Deployment", "name": "web", "namespace": "app"},
            "note": "Rolled", "reason": "Reloaded", "type": "Normal", "action": "Reload",
            "eventTime": "2026-11-23T10:00:00.000000Z",
            "reportingController": "hashroll.dev/hashroll", "reportingInstance": "pod-1"
        });
        let (rid, core) = mirror(EVENTS_V1, &v1).unwrap();
        assert_eq!(rid, CORE);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "Rolled");
        assert_eq!(core["reportingComponent"], "hashroll.dev/hashroll");
        assert_eq!(core["source"]["component"], "hashroll.dev/hashroll");
        let (rid, back) = mirror(CORE, &core).unwrap();
        assert_eq!(rid, EVENTS_V1);
        for f in [
            "metadata",
            "regarding",
            "note",
            "reason",
            "type",
            "action",
            "eventTime",
            "reportingController",
        ] {
            assert_eq!(back[f], v1[f], "{f}");
        }
    }

    #[test]
    fn other_resources_are_not_mirrored() {
        assert!(mirror("/secrets", &json!({})).is_none());
    }
}
