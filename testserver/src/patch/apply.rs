//! Server-side apply (`application/apply-patch+yaml`): merges an applied configuration into the
//! live object, detects conflicts with other managers and records the applier's field set.

use serde_json::Value;

use super::PatchError;
use super::managed::{
    FieldPath, FieldSet, ListKind, ManagerEntry, Scope, Segment, UNOWNED_METADATA, changed_fields,
    collect_object, display_path, forget_missing, is_tracked, list_kind, parse_segment,
    read_entries, remove_at, value_at, write_entries,
};

/// Server-side apply. `current` None = create. Returns the new object with metadata.managedFields updated.
pub fn server_side_apply(
    current: Option<&Value>,
    applied: &[u8],
    field_manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, PatchError> {
    server_side_apply_in(Scope::Main, current, applied, field_manager, force, now)
}

/// Server-side apply for a given [`Scope`] (main resource, `/status`, or a kind without status).
pub fn server_side_apply_in(
    scope: Scope,
    current: Option<&Value>,
    applied: &[u8],
    field_manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, PatchError> {
    if field_manager.is_empty() {
        return Err(PatchError::BadRequest(
            "fieldManager is required for apply requests".to_string(),
        ));
    }
    let mut config = parse_apply_body(applied)?;
    let api_version = config["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(cur) = current {
        let (ours, theirs) = (&config["metadata"]["name"], &cur["metadata"]["name"]);
        if ours != theirs {
            return Err(PatchError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                ours.as_str().unwrap_or_default(),
                theirs.as_str().unwrap_or_default()
            )));
        }
    }
    strip_nulls(&mut config);
    if let Some(Value::Object(meta)) = config.get_mut("metadata") {
        // Server-managed metadata is never taken from the request (resourceVersion is a
        // precondition the caller checks before calling us).
        for field in UNOWNED_METADATA
            .iter()
            .filter(|f| !matches!(**f, "name" | "namespace"))
        {
            meta.remove(*field);
        }
    }
    let applied_set = collect_object(&config, scope);
    let Value::Object(config_map) = &mut config else {
        unreachable!("parse_apply_body only returns objects")
    };
    match scope {
        Scope::Main => {
            config_map.remove("status");
        }
        Scope::Status => config_map.retain(|k, _| k == "status"),
        Scope::Whole => {}
    }

    let Some(current) = current else {
        if scope == Scope::Status {
            return Err(PatchError::BadRequest(
                "cannot create an object through its status subresource".to_string(),
            ));
        }
        let mut created = config;
        let entry = ManagerEntry {
            manager: field_manager.to_string(),
            operation: "Apply".to_string(),
            api_version,
            time: Some(now.to_string()),
            subresource: None,
            fields: applied_set,
        };
        write_entries(&mut created, vec![entry]);
        return Ok(created);
    };

    let mut entries = read_entries(current);
    let is_own = |e: &ManagerEntry| {
        e.manager == field_manager
            && e.operation == "Apply"
            && e.subresource.as_deref() == scope.subresource()
    };
    let mut merged = apply_merge(current, &config, "");
    let mut changed = FieldSet::new();
    changed_fields(Some(current), Some(&merged), &[], "", &mut changed);
    changed.retain(|p| is_tracked(p, scope));

    let conflicts: Vec<(String, Vec<FieldPath>)> = entries
        .iter()
        .filter(|e| !is_own(e))
        .map(|e| {
            (
                e.describe(),
                e.fields.intersection(&changed).cloned().collect::<Vec<_>>(),
            )
        })
        .filter(|(_, paths)| !paths.is_empty())
        .collect();
    if !conflicts.is_empty() {
        if !force {
            return Err(PatchError::Conflict {
                message: conflict_message(conflicts),
            });
        }
        for e in entries.iter_mut().filter(|e| !is_own(e)) {
            e.fields.retain(|p| !changed.contains(p));
        }
    }

    // Fields this manager applied before but no longer applies go away unless someone else
    // still owns them (or something below them).
    let previous = entries
        .iter()
        .find(|e| is_own(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    // Sorted order visits a list item before its fields, so whole items go while their keys
    // still identify them.
    let dropped: Vec<&FieldPath> = previous.difference(&applied_set).collect();
    let others: Vec<&FieldSet> = entries
        .iter()
        .filter(|e| !is_own(e))
        .map(|e| &e.fields)
        .collect();
    let owned_at_or_below =
        |p: &[String]| others.iter().any(|s| s.iter().any(|q| q.starts_with(p)));
    let owned_exactly =
        |p: &[String]| applied_set.contains(p) || others.iter().any(|s| s.contains(p));
    // A field that was applied empty before (`annotations: {}`) and now has children is still applied.
    let applied_below = |p: &[String]| applied_set.iter().any(|q| q.starts_with(p));
    for path in dropped {
        if owned_at_or_below(path) || applied_below(path) || is_key_of_parent_item(path) {
            continue;
        }
        if remove_at(&mut merged, path) {
            prune_empty_parents(&mut merged, path, &owned_exactly);
        }
    }

    match entries.iter_mut().find(|e| is_own(e)) {
        Some(own) => {
            own.fields = applied_set;
            own.time = Some(now.to_string());
            own.api_version = api_version;
        }
        None => entries.push(ManagerEntry {
            manager: field_manager.to_string(),
            operation: "Apply".to_string(),
            api_version,
            time: Some(now.to_string()),
            subresource: scope.subresource().map(str::to_string),
            fields: applied_set,
        }),
    }
    forget_missing(&mut entries, &merged);
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// Whether `path` is a key field of the list item it sits in: an item that stays keeps its key.
fn is_key_of_parent_item(path: &[String]) -> bool {
    let [.., item, last] = path else {
        return false;
    };
    match (parse_segment(item), parse_segment(last)) {
        (Some(Segment::Key(keys)), Some(Segment::Field(name))) => keys.contains_key(&name),
        _ => false,
    }
}

/// Parses an apply body (JSON, else YAML) and checks the fields the real server requires.
fn parse_apply_body(body: &[u8]) -> Result<Value, PatchError> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => serde_yaml_ng::from_slice(body)
            .map_err(|e| PatchError::BadRequest(format!("error decoding YAML: {e}")))?,
    };
    if !value.is_object() {
        return Err(PatchError::BadRequest(
            "apply patch body must be an object".to_string(),
        ));
    }
    for field in ["apiVersion", "kind"] {
        if value
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(PatchError::BadRequest(format!(
                "Object '{}' is missing in the apply patch body",
                if field == "kind" { "Kind" } else { field }
            )));
        }
    }
    if value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(PatchError::Invalid(
            "metadata.name: Required value: name is required in an apply patch body".to_string(),
        ));
    }
    Ok(value)
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Merges an applied configuration into the live object: maps recurse, keyed lists merge item by
/// item, set lists take the union, and everything else is replaced by the applied value.
fn apply_merge(live: &Value, config: &Value, field: &str) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                let merged = match l.get(k) {
                    Some(lv) => apply_merge(lv, cv, k),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match (list_kind(field, l), list_kind(field, c)) {
            (ListKind::Keyed(kl), ListKind::Keyed(kc)) if kl == kc => {
                let mut out: Vec<Value> = l
                    .iter()
                    .map(
                        |item| match c.iter().find(|ci| ci.get(kc) == item.get(kc)) {
                            Some(ci) => apply_merge(item, ci, field),
                            None => item.clone(),
                        },
                    )
                    .collect();
                for ci in c {
                    if !l.iter().any(|item| item.get(kc) == ci.get(kc)) {
                        out.push(ci.clone());
                    }
                }
                Value::Array(out)
            }
            (ListKind::Set, ListKind::Set) => {
                let mut out = l.clone();
                out.extend(c.iter().filter(|v| !l.contains(v)).cloned());
                Value::Array(out)
            }
            _ => config.clone(),
        },
        _ => config.clone(),
    }
}

/// After a removal, drops map fields left empty that nobody owns (Go omits empty maps anyway).
fn prune_empty_parents(doc: &mut Value, removed: &[String], owned: &dyn Fn(&[String]) -> bool) {
    for len in (1..removed.len()).rev() {
        let parent = &removed[..len];
        let is_field = parent.last().is_some_and(|s| s.starts_with("f:"));
        if !is_field || parent == ["f:metadata"] || owned(parent) {
            return;
        }
        let empty = match value_at(doc, parent) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if !empty || !remove_at(doc, parent) {
            return;
        }
    }
}

/// Builds the real server's conflict message from (manager description, paths) pairs.
fn conflict_message(mut conflicts: Vec<(String, Vec<FieldPath>)>) -> String {
    let total: usize = conflicts.iter().map(|(_, p)| p.len()).sum();
    let plural = if total == 1 { "" } else { "s" };
    let body = if total == 1 {
        let (manager, paths) = &conflicts[0];
        format!("conflict with {manager}: {}", display_path(&paths[0]))
    } else {
        conflicts.sort();
        let mut lines = Vec::new();
        for (manager, paths) in &conflicts {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(paths.iter().map(|p| format!("- {}", display_path(p))));
        }
        lines.join("\n")
    };
    format!("Apply failed with {total} conflict{plural}: {body}")
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{PatchError, record_update_manager};
    use super::*;
    use serde_json::json;

    #[test]
    fn ssa_create_from_yaml_records_apply_entry() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  resourceVersion: \"7\"\n  labels:\n    app: web\ndata:\n  a: \"1\"\n";
        let out = server_side_apply(None, yaml.as_bytes(), "kubectl", false, NOW).unwrap();
        assert_eq!(out["data"], json!({"a": "1"}));
        assert!(out["metadata"].get("resourceVersion").is_none());
        assert_eq!(
            out["metadata"]["managedFields"],
            json!([{
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": "v1",
                "time": NOW,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}
            }])
        );
    }

    #[test]
    fn ssa_keyed_lists_use_key_segments_and_reapply_is_stable() {
        let created = ssa(None, &applied_deployment(2), "kubectl", false).unwrap();
        assert_eq!(
            fields_of(&created, "kubectl"),
            &json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:template": {"f:spec": {"f:containers": {
                        "k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}
                    }}}
                }
            })
        );
        let again = ssa(Some(&created), &applied_deployment(2), "kubectl", false).unwrap();
        assert_eq!(again, created);
    }

    #[test]
    fn ssa_conflicts_name_the_owner_and_paths() {
        let mut live = deployment();
        record_update_manager(None, &mut live, "kubectl-client-side-apply", NOW);
        let err = ssa(Some(&live), &applied_deployment(5), "kubectl", false).unwrap_err();
        assert!(matches!(err, PatchError::Conflict { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );

        let mut config = applied_deployment(5);
        config["spec"]["revisionHistoryLimit"] = json!(3);
        config["spec"]["template"]["spec"]["containers"][0]["image"] = json!("app:2");
        let err = ssa(Some(&live), &config, "kubectl", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 3 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n\
             - .spec.replicas\n\
             - .spec.revisionHistoryLimit\n\
             - .spec.template.spec.containers[name=\"app\"].image"
        );

        // Apply managers are named without an apiVersion.
        let helm = ssa(None, &applied_deployment(2), "helm", false).unwrap();
        let err = ssa(Some(&helm), &applied_deployment(4), "argocd", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"helm\": .spec.replicas"
        );
    }

    #[test]
    fn ssa_force_takes_ownership() {
        let mut live = deployment();
        record_update_manager(None, &mut live, "kubectl-client-side-apply", NOW);
        let out = ssa(Some(&live), &applied_deployment(5), "kubectl", true).unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(
            fields_of(&out, "kubectl")["f:spec"]["f:replicas"],
            json!({})
        );
        let old_owner = fields_of(&out, "kubectl-client-side-apply");
        assert!(
            old_owner["f:spec"].get("f:replicas").is_none(),
            "{old_owner}"
        );
        // Fields applied with the same value stay shared; the rest stay with the old owner.
        assert_eq!(old_owner["f:metadata"]["f:labels"]["f:app"], json!({}));
        assert_eq!(old_owner["f:spec"]["f:revisionHistoryLimit"], json!({}));
        // Having taken ownership, the next non-forced apply by the new owner goes through.
        assert!(ssa(Some(&out), &applied_deployment(6), "kubectl", false).is_ok());
    }

    #[test]
    fn ssa_dropping_a_field_removes_it() {
        let mut config = applied_deployment(2);
        config["metadata"]["annotations"] = json!({"note": "x"});
        config["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar", "image": "proxy:1", "args": ["-v"]}));
        let live = ssa(None, &config, "kubectl", false).unwrap();
        assert_eq!(live["metadata"]["annotations"], json!({"note": "x"}));

        let out = ssa(Some(&live), &applied_deployment(2), "kubectl", false).unwrap();
        assert!(
            out["metadata"].get("annotations").is_none(),
            "{}",
            out["metadata"]
        );
        assert_eq!(
            pod_spec(&out)["containers"],
            json!([{"name": "app", "image": "app:1"}])
        );
        assert_eq!(
            managers(&out),
            [("kubectl".to_string(), "Apply".to_string())]
        );
    }

    #[test]
    fn ssa_shared_field_survives_when_one_owner_drops_it() {
        let live = ssa(None, &applied_deployment(2), "team-a", false).unwrap();
        let live = ssa(Some(&live), &applied_deployment(2), "team-b", false).unwrap();
        assert_eq!(managers(&live).len(), 2);

        let config =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        let out = ssa(Some(&live), &config, "team-b", false).unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(pod_spec(&out)["containers"][0]["image"], "app:1");
        // team-b owns nothing any more, so its entry is gone.
        assert_eq!(
            managers(&out),
            [("team-a".to_string(), "Apply".to_string())]
        );
    }

    #[test]
    fn ssa_keeps_fields_of_other_writers_and_ignores_status() {
        let mut live = ssa(None, &applied_deployment(2), "kubectl", false).unwrap();
        let before = live.clone();
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "injected", "image": "mesh:1"}));
        live["status"] = json!({"readyReplicas": 2});
        record_update_manager(Some(&before), &mut live, "injector", NOW);

        let mut config = applied_deployment(2);
        config["status"] = json!({"readyReplicas": 99});
        let out = ssa(Some(&live), &config, "kubectl", false).unwrap();
        assert_eq!(pod_spec(&out)["containers"][1]["name"], "injected");
        assert_eq!(out["status"], json!({"readyReplicas": 2}));
        assert!(fields_of(&out, "kubectl").get("f:status").is_none());
    }

    #[test]
    fn ssa_rejects_bodies_without_identity() {
        let no_name = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
        assert!(matches!(
            ssa(None, &no_name, "m", false),
            Err(PatchError::Invalid(_))
        ));
        let no_kind = json!({"apiVersion": "v1", "metadata": {"name": "x"}});
        assert!(matches!(
            ssa(None, &no_kind, "m", false),
            Err(PatchError::BadRequest(_))
        ));
        let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert!(matches!(
            ssa(None, &ok, "", false),
            Err(PatchError::BadRequest(_))
        ));
        let live = ssa(None, &ok, "m", false).unwrap();
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y"}});
        assert!(matches!(
            ssa(Some(&live), &other, "m", false),
            Err(PatchError::BadRequest(_))
        ));
        assert!(matches!(
            server_side_apply(None, b"a: [", "m", false, NOW),
            Err(PatchError::BadRequest(_))
        ));
    }

    #[test]
    fn ssa_empty_map_then_children_keeps_the_children() {
        let first = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"t","annotations":{},"labels":{}},"stringData":{"a":"1"}}"#;
        let created = server_side_apply(None, first, "kubectl", false, "t0").unwrap();
        let second = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"t","annotations":{"x":"y"},"labels":{"l":"v"}},"stringData":{"a":"1"}}"#;
        let out = server_side_apply(Some(&created), second, "kubectl", false, "t1").unwrap();
        assert_eq!(out["metadata"]["annotations"]["x"], "y");
        assert_eq!(out["metadata"]["labels"]["l"], "v");
    }

    #[test]
    fn ssa_on_status_changes_and_owns_status_only() {
        let live = ssa(None, &applied_deployment(2), "kubectl", false).unwrap();
        let mut config = applied_deployment(7);
        config["status"] = json!({"readyReplicas": 2});
        let body = config.to_string();
        let out = server_side_apply_in(
            Scope::Status,
            Some(&live),
            body.as_bytes(),
            "ctrl",
            false,
            NOW,
        )
        .unwrap();
        assert_eq!(out["status"], json!({"readyReplicas": 2}));
        assert_eq!(out["spec"], live["spec"]);
        let entry = &out["metadata"]["managedFields"][1];
        assert_eq!(
            (
                &entry["manager"],
                &entry["operation"],
                &entry["subresource"]
            ),
            (&json!("ctrl"), &json!("Apply"), &json!("status"))
        );
        assert_eq!(
            entry["fieldsV1"],
            json!({"f:status": {"f:readyReplicas": {}}})
        );
        // The main-resource applier owns no status, so nothing conflicts; a status applier does.
        config["status"] = json!({"readyReplicas": 1});
        let body = config.to_string();
        let err = server_side_apply_in(
            Scope::Status,
            Some(&out),
            body.as_bytes(),
            "other",
            false,
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"ctrl\" with subresource \"status\": .status.readyReplicas"
        );
        let err = server_side_apply_in(Scope::Status, None, body.as_bytes(), "ctrl", false, NOW)
            .unwrap_err();
        assert!(matches!(err, PatchError::BadRequest(_)), "{err:?}");
    }
}
