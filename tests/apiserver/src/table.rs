//! Server-side printing: `meta.k8s.io/v1` Table responses for `kubectl get`.

use serde_json::{Value, json};

use crate::resources::ResourceDef;
use crate::store::Obj;

/// How much of each object a Table row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Include {
    /// No object.
    None,
    /// PartialObjectMetadata (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl Include {
    /// Parses the `includeObject` query value.
    pub fn parse(s: Option<&str>) -> Include {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn col(name: &str, typ: &str, format: &str) -> Value {
    json!({ "name": name, "type": typ, "format": format, "description": format!("{name} column"), "priority": 0 })
}

fn int(obj: &Value, p: &str) -> i64 {
    obj.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn count(obj: &Value, field: &str) -> i64 {
    obj.get(field)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len() as i64)
}

/// Column definitions and cell values per kind; Name first and Age last, like the real printers.
fn columns(def: &ResourceDef) -> Vec<Value> {
    let mut cols = vec![col("Name", "string", "name")];
    let extra: &[(&str, &str)] = match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => &[("Status", "string")],
        ("", "Secret") => &[("Type", "string"), ("Data", "string")],
        ("", "ConfigMap") => &[("Data", "string")],
        ("", "Pod") => &[
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
        ],
        ("apps", "Deployment") => &[
            ("Ready", "string"),
            ("Up-to-date", "string"),
            ("Available", "string"),
        ],
        ("apps", "StatefulSet") => &[("Ready", "string")],
        ("apps", "ReplicaSet") => &[
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
        ],
        ("apps", "DaemonSet") => &[
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
        ],
        ("batch", "CronJob") => &[
            ("Schedule", "string"),
            ("Suspend", "boolean"),
            ("Active", "integer"),
        ],
        _ => &[],
    };
    cols.extend(extra.iter().map(|(n, t)| col(n, t, "")));
    cols.push(col("Age", "string", ""));
    cols
}

fn cells(def: &ResourceDef, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = obj.pointer("/metadata/name").cloned().unwrap_or(json!(""));
    let mut c = vec![name];
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => c.push(
            obj.pointer("/status/phase")
                .cloned()
                .unwrap_or(json!("Active")),
        ),
        ("", "Secret") => {
            c.push(obj.get("type").cloned().unwrap_or(json!("Opaque")));
            c.push(json!(count(obj, "data")));
        }
        ("", "ConfigMap") => c.push(json!(count(obj, "data") + count(obj, "binaryData"))),
        ("", "Pod") => {
            c.push(json!("0/1"));
            c.push(
                obj.pointer("/status/phase")
                    .cloned()
                    .unwrap_or(json!("Pending")),
            );
            c.push(json!(0));
        }
        ("apps", "Deployment") => {
            c.push(json!(format!(
                "{}/{}",
                int(obj, "/status/readyReplicas"),
                int(obj, "/spec/replicas")
            )));
            c.push(json!(int(obj, "/status/updatedReplicas")));
            c.push(json!(int(obj, "/status/availableReplicas")));
        }
        ("apps", "StatefulSet") => c.push(json!(format!(
            "{}/{}",
            int(obj, "/status/readyReplicas"),
            int(obj, "/spec/replicas")
        ))),
        ("apps", "ReplicaSet") => {
            c.push(json!(int(obj, "/spec/replicas")));
            c.push(json!(int(obj, "/status/replicas")));
            c.push(json!(int(obj, "/status/readyReplicas")));
        }
        ("apps", "DaemonSet") => {
            for f in [
                "desiredNumberScheduled",
                "currentNumberScheduled",
                "numberReady",
                "updatedNumberScheduled",
                "numberAvailable",
            ] {
                c.push(json!(int(obj, &format!("/status/{f}"))));
            }
        }
        ("batch", "CronJob") => {
            c.push(obj.pointer("/spec/schedule").cloned().unwrap_or(json!("")));
            c.push(json!(
                obj.pointer("/spec/suspend")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ));
            c.push(json!(
                obj.pointer("/status/active")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ));
        }
        _ => {}
    }
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok());
    c.push(json!(created.map_or_else(
        || "<unknown>".to_string(),
        |t| human_age((now - t).get_seconds())
    )));
    c
}

/// A compact age like kubectl prints: `42s`, `5m3s`, `3h`, `2d4h`, `400d`.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        format!("{m}m{}s", s % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24)
    } else if d < 730 {
        format!("{d}d")
    } else {
        format!("{}y{}d", d / 365, d % 365)
    }
}

fn row(def: &ResourceDef, obj: &Value, include: Include, now: jiff::Timestamp) -> Value {
    let object = match include {
        Include::None => Value::Null,
        Include::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        }),
        Include::Object => obj.clone(),
    };
    json!({ "cells": cells(def, obj, now), "object": object })
}

/// A Table of `items` read at `rv`.
pub fn table(
    def: &ResourceDef,
    items: &[Obj],
    rv: u64,
    cont: Option<&str>,
    include: Include,
) -> Value {
    let now = jiff::Timestamp::now();
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(def),
        "rows": items.iter().map(|o| row(def, &o.obj, include, now)).collect::<Vec<_>>(),
    })
}

/// A one-row Table for a watch event (kubectl get -w).
pub fn table_one(def: &ResourceDef, obj: &Value, include: Include) -> Value {
    let rv = obj
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(json!(""));
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": rv },
        "columnDefinitions": columns(def),
        "rows": [row(def, obj, include, jiff::Timestamp::now())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(125), "2m5s");
        assert_eq!(human_age(3600), "60m");
        assert_eq!(human_age(4 * 3600 + 60), "4h1m");
        assert_eq!(human_age(3 * 86_400 + 7200), "3d2h");
    }

    #[test]
    fn secret_rows_show_type_and_data_count() {
        let reg = Registry::new(&[]);
        let def = reg.find("", "v1", "secrets").unwrap();
        let obj = json!({"metadata": {"name": "s", "creationTimestamp": "2020-01-01T00:00:00Z"}, "type": "Opaque", "data": {"a": "", "b": ""}});
        let t = table_one(def, &obj, Include::Metadata);
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Type", "Data", "Age"]);
        assert_eq!(t["rows"][0]["cells"][0], "s");
        assert_eq!(t["rows"][0]["cells"][2], 2);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}
