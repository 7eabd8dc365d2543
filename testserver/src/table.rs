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

/// A column kubectl shows only with `-o wide`.
fn wide_col(name: &str) -> Value {
    let mut c = col(name, "string", "");
    c["priority"] = json!(1);
    c
}

/// Wide columns after Age, per kind.
fn wide_columns(def: &ResourceDef) -> &'static [&'static str] {
    match (def.group.as_str(), def.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") | ("batch", "CronJob") => {
            &["Containers", "Images", "Selector"]
        }
        ("apps", "StatefulSet") => &["Containers", "Images"],
        _ => &[],
    }
}

fn none_if_empty(s: String) -> Value {
    json!(if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    })
}

/// A label selector rendered like kubectl: `a=b,c in (d,e)`; keys sorted as Go renders them.
fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else { return String::new() };
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.sort();
    parts.join(",")
}

fn wide_cells(def: &ResourceDef, obj: &Value) -> Vec<Value> {
    let wide = wide_columns(def);
    if wide.is_empty() {
        return vec![];
    }
    let (pod_spec, selector) = if def.kind == "CronJob" {
        (
            obj.pointer("/spec/jobTemplate/spec/template/spec"),
            obj.pointer("/spec/jobTemplate/spec/selector"),
        )
    } else {
        (
            obj.pointer("/spec/template/spec"),
            obj.pointer("/spec/selector"),
        )
    };
    let containers: Vec<&Value> = pod_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let field = |f: &str| {
        containers
            .iter()
            .filter_map(|c| c[f].as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = vec![none_if_empty(field("name")), none_if_empty(field("image"))];
    if wide.len() > 2 {
        out.push(none_if_empty(selector_string(selector)));
    }
    out
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
    if def.kind == "Event" {
        // `kubectl get events`: what happened to which object, newest information first; Name only wide.
        let mut cols: Vec<Value> = ["Last Seen", "Type", "Reason", "Object", "Message"]
            .iter()
            .map(|n| col(n, "string", ""))
            .collect();
        let mut name = col("Name", "string", "name");
        name["priority"] = json!(1);
        cols.push(name);
        return cols;
    }
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
            ("Timezone", "string"),
            ("Suspend", "boolean"),
            ("Active", "integer"),
            ("Last Schedule", "string"),
        ],
        _ => &[],
    };
    cols.extend(extra.iter().map(|(n, t)| col(n, t, "")));
    cols.push(col("Age", "string", ""));
    cols.extend(wide_columns(def).iter().map(|n| wide_col(n)));
    cols
}

/// One row of `kubectl get events`, for either Event API's field names.
fn event_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str);
    let last = s("/series/lastObservedTime")
        .or(s("/lastTimestamp"))
        .or(s("/deprecatedLastTimestamp"))
        .or(s("/eventTime"))
        .or(s("/metadata/creationTimestamp"))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let regarding = obj.get("involvedObject").or(obj.get("regarding"));
    let object = regarding.map_or(String::new(), |r| {
        format!(
            "{}/{}",
            r["kind"].as_str().unwrap_or_default().to_lowercase(),
            r["name"].as_str().unwrap_or_default()
        )
    });
    vec![
        json!(last.map_or_else(
            || "<unknown>".to_string(),
            |t| human_age((now - t).get_seconds())
        )),
        json!(s("/type").unwrap_or_default()),
        json!(s("/reason").unwrap_or_default()),
        json!(object),
        json!(s("/message").or(s("/note")).unwrap_or_default()),
        obj.pointer("/metadata/name").cloned().unwrap_or(json!("")),
    ]
}

fn cells(def: &ResourceDef, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    if def.kind == "Event" {
        return event_cells(obj, now);
    }
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
            c.push(
                obj.pointer("/spec/timeZone")
                    .cloned()
                    .unwrap_or(json!("<none>")),
            );
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
            let last = obj
                .pointer("/status/lastScheduleTime")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<jiff::Timestamp>().ok());
            c.push(json!(last.map_or_else(
                || "<none>".to_string(),
                |t| human_age((now - t).get_seconds())
            )));
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
    c.extend(wide_cells(def, obj));
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
    fn deployment_wide_columns_follow_age() {
        let reg = Registry::new(&[]);
        let def = reg.find("apps", "v1", "deployments").unwrap();
        let obj = json!({
            "metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"tier": "x", "app": "web"}},
                "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1"}, {"name": "s", "image": "busybox"}]}}
            }
        });
        let t = table_one(def, &obj, Include::None);
        let cols: Vec<(&str, i64)> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_i64().unwrap()))
            .collect();
        assert_eq!(cols[4], ("Age", 0));
        assert_eq!(
            &cols[5..],
            [("Containers", 1), ("Images", 1), ("Selector", 1)]
        );
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(cells[1], "0/2");
        assert_eq!(
            &cells[5..],
            [
                json!("app,s"),
                json!("nginx:1,busybox"),
                json!("app=web,tier=x")
            ]
        );
        assert_eq!(cells.len(), cols.len());
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
