//! Strategic merge patch, `application/strategic-merge-patch+json`: lists with a merge key
//! (containers by name, env by name, ...) merge item by item, `$patch` and friends are honoured.
//! The list knowledge here ([`MERGE_KEYS`], [`SET_LISTS`]) is shared with server-side apply.

use serde_json::{Map, Value};

use super::{PatchError, parse_json_body};

/// Applies a strategic merge patch body to `current`.
pub(super) fn apply(current: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let patch = parse_json_body(body, "strategic merge patch")?;
    let Value::Object(patch) = patch else {
        return Err(PatchError::BadRequest(
            "strategic merge patch body must be a JSON object".to_string(),
        ));
    };
    let empty = Map::new();
    let original = current.as_object().unwrap_or(&empty);
    match strategic_merge_map(original, &patch)? {
        Some(map) => Ok(Value::Object(map)),
        None => Err(PatchError::BadRequest(
            "a strategic merge patch cannot delete the whole object".to_string(),
        )),
    }
}

/// Lists merged item by item, by field name, with their candidate merge keys (first match wins:
/// container `ports` use `containerPort`, Service `ports` use `port`).
pub(super) const MERGE_KEYS: &[(&str, &[&str])] = &[
    ("containers", &["name"]),
    ("initContainers", &["name"]),
    ("ephemeralContainers", &["name"]),
    ("env", &["name"]),
    ("volumes", &["name"]),
    ("imagePullSecrets", &["name"]),
    ("volumeMounts", &["mountPath"]),
    ("volumeDevices", &["devicePath"]),
    ("ports", &["containerPort", "port"]),
    ("ownerReferences", &["uid"]),
    ("conditions", &["type"]),
    ("hostAliases", &["ip"]),
    ("topologySpreadConstraints", &["topologyKey"]),
    ("resourceClaims", &["name"]),
];

/// Primitive lists merged as sets.
pub(super) const SET_LISTS: &[&str] = &["finalizers"];

const DIRECTIVE_PATCH: &str = "$patch";
const DIRECTIVE_RETAIN_KEYS: &str = "$retainKeys";
const PREFIX_SET_ORDER: &str = "$setElementOrder/";
const PREFIX_DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

pub(super) fn merge_key_candidates(field: &str) -> Option<&'static [&'static str]> {
    MERGE_KEYS
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, keys)| *keys)
}

/// The first candidate key that every item carries; an empty list takes the first candidate.
pub(super) fn pick_merge_key<'v>(
    field: &str,
    items: impl Iterator<Item = &'v Value> + Clone,
) -> Option<&'static str> {
    merge_key_candidates(field)?
        .iter()
        .find(|key| items.clone().all(|item| item.get(**key).is_some()))
        .copied()
}

/// Whether a list item is nothing but a `{"$patch": ...}` directive.
fn is_directive_item(item: &Value) -> bool {
    item.as_object()
        .is_some_and(|m| !m.is_empty() && m.keys().all(|k| k == DIRECTIVE_PATCH))
}

/// Merges a strategic patch map into `original`. `None` means `$patch: delete` removed the map.
fn strategic_merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    let empty = Map::new();
    let base = match patch.get(DIRECTIVE_PATCH) {
        None => original,
        Some(Value::String(d)) if d == "merge" => original,
        // `replace` keeps only what the patch says; merging it into nothing also drops directives.
        Some(Value::String(d)) if d == "replace" => &empty,
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(other) => {
            return Err(PatchError::BadRequest(format!(
                "unknown strategic merge patch directive {DIRECTIVE_PATCH}: {other}"
            )));
        }
    };
    let mut result = base.clone();

    let mut set_orders: Vec<(&str, &Value)> = Vec::new();
    let mut retain_keys: Option<Vec<&str>> = None;
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(PREFIX_DELETE_PRIMITIVE) {
            let Value::Array(doomed) = value else {
                return Err(PatchError::BadRequest(format!(
                    "{key} must be a list of values to delete"
                )));
            };
            if let Some(Value::Array(items)) = result.get_mut(field) {
                items.retain(|item| !doomed.contains(item));
            }
        } else if let Some(field) = key.strip_prefix(PREFIX_SET_ORDER) {
            if !value.is_array() {
                return Err(PatchError::BadRequest(format!(
                    "{key} must be a list giving the element order"
                )));
            }
            set_orders.push((field, value));
        } else if key == DIRECTIVE_RETAIN_KEYS {
            let keys = value
                .as_array()
                .and_then(|keys| keys.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
                .ok_or_else(|| {
                    PatchError::BadRequest(format!("{key} must be a list of field names"))
                })?;
            retain_keys = Some(keys);
        } else if key.starts_with('$') && key != DIRECTIVE_PATCH {
            return Err(PatchError::BadRequest(format!(
                "unknown strategic merge patch directive {key:?}"
            )));
        }
    }

    for (key, value) in patch.iter().filter(|(k, _)| !k.starts_with('$')) {
        if value.is_null() {
            result.remove(key);
            continue;
        }
        match strategic_merge_value(result.get(key), value, key)? {
            Some(merged) => {
                result.insert(key.clone(), merged);
            }
            None => {
                result.remove(key);
            }
        }
    }

    for (field, order) in set_orders {
        if let (Some(Value::Array(items)), Value::Array(order)) = (result.get_mut(field), order) {
            apply_element_order(items, order, field);
        }
    }

    if let Some(keys) = retain_keys {
        if let Some(stray) = patch
            .iter()
            .find(|(k, v)| !k.starts_with('$') && !v.is_null() && !keys.contains(&k.as_str()))
        {
            return Err(PatchError::Invalid(format!(
                "the patch content does not match the {DIRECTIVE_RETAIN_KEYS} list: {:?} is not listed",
                stray.0
            )));
        }
        result.retain(|k, _| keys.contains(&k.as_str()));
    }
    Ok(Some(result))
}

/// Merges one patch value under field `field`. `None` means the field is to be removed.
fn strategic_merge_value(
    original: Option<&Value>,
    patch: &Value,
    field: &str,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(patch) => {
            let empty = Map::new();
            let original = original.and_then(Value::as_object).unwrap_or(&empty);
            Ok(strategic_merge_map(original, patch)?.map(Value::Object))
        }
        Value::Array(patch) => {
            let original = original.and_then(Value::as_array).map(Vec::as_slice);
            Ok(strategic_merge_list(original, patch, field)?.map(Value::Array))
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

/// Cleans a patch value that has nothing to merge with: drops nulls and directives.
fn strategic_fresh(patch: &Value, field: &str) -> Result<Option<Value>, PatchError> {
    strategic_merge_value(None, patch, field)
}

fn strategic_merge_list(
    original: Option<&[Value]>,
    patch: &[Value],
    field: &str,
) -> Result<Option<Vec<Value>>, PatchError> {
    let mut original = original;
    let mut items: Vec<&Value> = Vec::new();
    for item in patch {
        if !is_directive_item(item) {
            items.push(item);
            continue;
        }
        match item.get(DIRECTIVE_PATCH).and_then(Value::as_str) {
            Some("replace") => original = None,
            Some("delete") => return Ok(None),
            Some("merge") => {}
            _ => {
                return Err(PatchError::BadRequest(format!(
                    "unknown strategic merge patch directive in list {field:?}: {item}"
                )));
            }
        }
    }

    if SET_LISTS.contains(&field) && items.iter().all(|i| !i.is_object() && !i.is_array()) {
        let mut result = original.map(<[Value]>::to_vec).unwrap_or_default();
        for item in items {
            if !result.contains(item) {
                result.push(item.clone());
            }
        }
        return Ok(Some(result));
    }

    let all_objects = items.iter().all(|i| i.is_object());
    if let (Some(candidates), true) = (merge_key_candidates(field), all_objects) {
        let key = pick_merge_key(field, items.iter().copied()).ok_or_else(|| {
            let missing = items
                .iter()
                .find(|i| candidates.iter().all(|k| i.get(*k).is_none()))
                .map(|i| i.to_string())
                .unwrap_or_default();
            PatchError::BadRequest(format!(
                "list {field:?}: item {missing} does not contain the declared merge key {:?}",
                candidates[0]
            ))
        })?;
        let mut result = original.map(<[Value]>::to_vec).unwrap_or_default();
        for item in items {
            let id = &item[key];
            let position = result.iter().position(|o| o.get(key) == Some(id));
            match (item.get(DIRECTIVE_PATCH).and_then(Value::as_str), position) {
                (Some("delete"), _) => result.retain(|o| o.get(key) != Some(id)),
                (Some("replace"), _) => {
                    let mut fresh = item.clone();
                    if let Value::Object(m) = &mut fresh {
                        m.remove(DIRECTIVE_PATCH);
                    }
                    if let Some(fresh) = strategic_fresh(&fresh, field)? {
                        match position {
                            Some(p) => result[p] = fresh,
                            None => result.push(fresh),
                        }
                    }
                }
                (_, None) => {
                    if let Some(fresh) = strategic_fresh(item, field)? {
                        result.push(fresh);
                    }
                }
                (_, Some(p)) => {
                    let empty = Map::new();
                    let existing = result[p].as_object().unwrap_or(&empty);
                    let patch_map = item.as_object().unwrap_or(&empty);
                    match strategic_merge_map(existing, patch_map)? {
                        Some(merged) => result[p] = Value::Object(merged),
                        None => {
                            result.remove(p);
                        }
                    }
                }
            }
        }
        return Ok(Some(result));
    }

    // Every other list is atomic: the patch's list replaces the stored one.
    let mut result = Vec::with_capacity(items.len());
    for item in items {
        if let Some(item) = strategic_fresh(item, field)? {
            result.push(item);
        }
    }
    Ok(Some(result))
}

/// Honours `$setElementOrder/<field>`: items named in `order` take the slots that such items
/// already occupy, in the given order; items the order does not name keep their positions.
fn apply_element_order(items: &mut [Value], order: &[Value], field: &str) {
    let candidates = merge_key_candidates(field).unwrap_or_default();
    let identity = |v: &Value| -> Value {
        match v {
            Value::Object(m) => candidates
                .iter()
                .find_map(|k| {
                    m.get(*k)
                        .map(|id| Value::Array(vec![Value::from(*k), id.clone()]))
                })
                .unwrap_or_else(|| v.clone()),
            other => other.clone(),
        }
    };
    let ids: Vec<Value> = items.iter().map(identity).collect();
    let mut taken = vec![false; items.len()];
    let mut sources = Vec::new();
    for wanted in order.iter().map(identity) {
        if let Some(i) = (0..items.len()).find(|&i| !taken[i] && ids[i] == wanted) {
            taken[i] = true;
            sources.push(i);
        }
    }
    let mut slots = sources.clone();
    slots.sort_unstable();
    let snapshot: Vec<Value> = sources.iter().map(|&i| items[i].clone()).collect();
    for (slot, value) in slots.into_iter().zip(snapshot) {
        items[slot] = value;
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{PatchError, PatchType, apply_patch};
    use serde_json::{Value, json};

    #[test]
    fn strategic_merges_containers_by_name() {
        let out = strategic(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}}),
        );
        let containers = &pod_spec(&out)["containers"];
        assert_eq!(containers[0]["image"], "app:2");
        assert_eq!(containers[0]["args"], json!(["--a"]));
        assert_eq!(containers[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(
            containers[1],
            json!({"name": "sidecar", "image": "proxy:1"})
        );
    }

    #[test]
    fn strategic_merges_env_volumes_and_mounts_by_key() {
        let out = strategic(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "containers": [{
                    "name": "app",
                    "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true},
                                     {"name": "extra", "mountPath": "/extra"}]
                }],
                "volumes": [{"name": "extra", "secret": {"secretName": "s"}},
                            {"name": "cfg", "configMap": {"optional": true}}]
            }}}}),
        );
        let app = &pod_spec(&out)["containers"][0];
        assert_eq!(
            app["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(
            app["volumeMounts"],
            json!([{"name": "cfg", "mountPath": "/etc/cfg"},
                   {"name": "data", "mountPath": "/data", "readOnly": true},
                   {"name": "extra", "mountPath": "/extra"}])
        );
        assert_eq!(
            pod_spec(&out)["volumes"],
            json!([{"name": "cfg", "configMap": {"name": "cfg", "optional": true}},
                   {"name": "data", "emptyDir": {}},
                   {"name": "extra", "secret": {"secretName": "s"}}])
        );
    }

    #[test]
    fn strategic_patch_delete_removes_list_items() {
        let out = strategic(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "$patch": "delete"},
                {"name": "app", "env": [{"name": "A", "$patch": "delete"}]}
            ]}}}}),
        );
        let containers = pod_spec(&out)["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["env"], json!([{"name": "B", "value": "2"}]));
    }

    #[test]
    fn strategic_rollout_restart_adds_template_annotation() {
        let out = strategic(
            &deployment(),
            json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-01-02T03:04:05Z"}}}}}),
        );
        let meta = &out["spec"]["template"]["metadata"];
        assert_eq!(
            meta["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(meta["labels"], json!({"app": "web"}));
        assert_eq!(pod_spec(&out), pod_spec(&deployment()));
    }

    #[test]
    fn strategic_replaces_lists_without_merge_keys() {
        let out = strategic(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "tolerations": [{"key": "b", "operator": "Exists"}],
                "containers": [{"name": "app", "args": ["--b", "--c"]}]
            }}}}),
        );
        assert_eq!(
            pod_spec(&out)["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
        assert_eq!(
            pod_spec(&out)["containers"][0]["args"],
            json!(["--b", "--c"])
        );
    }

    #[test]
    fn strategic_directives_order_replace_retain_and_primitive_delete() {
        let mut current = deployment();
        current["metadata"]["finalizers"] = json!(["a", "b"]);
        let out = strategic(
            &current,
            json!({
                "metadata": {"finalizers": ["c", "a"]},
                "spec": {
                    "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                    "template": {
                        "metadata": {"labels": {"$patch": "replace", "tier": "fe"}},
                        "spec": {
                            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                            "containers": [{"name": "app", "image": "app:3"}]
                        }
                    }
                }
            }),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            out["spec"]["template"]["metadata"]["labels"],
            json!({"tier": "fe"})
        );
        let names: Vec<&Value> = pod_spec(&out)["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, [&json!("sidecar"), &json!("app")]);
        assert_eq!(pod_spec(&out)["containers"][1]["image"], "app:3");

        let out = strategic(
            &out,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "c"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn strategic_rejects_items_without_merge_key_and_unknown_directives() {
        for patch in [
            json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
            json!({"spec": {"$patch": "explode"}}),
            json!({"spec": {"$frob": 1}}),
        ] {
            let err = apply_patch(
                PatchType::Strategic,
                &deployment(),
                patch.to_string().as_bytes(),
            )
            .unwrap_err();
            assert!(matches!(err, PatchError::BadRequest(_)), "{err:?}");
        }
    }
}
