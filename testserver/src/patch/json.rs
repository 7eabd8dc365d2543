//! JSON patch (RFC 6902), `application/json-patch+json`.

use serde_json::{Map, Value};

use super::managed::json_equal;
use super::{PatchError, parse_json_body};

/// Applies an RFC 6902 JSON patch. A body that is not an array of objects is a bad request;
/// operations that do not apply to this document are `Invalid` (HTTP 422), as in the real server.
pub(super) fn apply(current: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let ops = parse_json_body(body, "JSON patch")?;
    let Value::Array(ops) = ops else {
        return Err(PatchError::BadRequest(
            "JSON patch body must be a JSON array of operations".to_string(),
        ));
    };
    let mut doc = current.clone();
    for (index, op) in ops.iter().enumerate() {
        let Value::Object(op) = op else {
            return Err(PatchError::BadRequest(format!(
                "JSON patch operation {index} is not a JSON object"
            )));
        };
        json_patch_op(&mut doc, op)?;
    }
    Ok(doc)
}

fn json_patch_op(doc: &mut Value, op: &Map<String, Value>) -> Result<(), PatchError> {
    let invalid = |m: String| PatchError::Invalid(m);
    let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
    let known = ["add", "remove", "replace", "move", "copy", "test"];
    if !known.contains(&kind) {
        return Err(invalid(format!("Unexpected kind: {kind}")));
    }
    let Some(path) = op.get("path").and_then(Value::as_str) else {
        return Err(invalid(format!(
            "{kind} operation does not apply: operation is missing the \"path\" field"
        )));
    };
    let ptr = parse_pointer(path, kind)?;
    let value = || {
        op.get("value").cloned().ok_or_else(|| {
            invalid(format!(
                "{kind} operation does not apply: operation is missing the \"value\" field"
            ))
        })
    };
    let from = || -> Result<(String, Vec<String>), PatchError> {
        let Some(from) = op.get("from").and_then(Value::as_str) else {
            return Err(invalid(format!(
                "{kind} operation does not apply: operation is missing the \"from\" field"
            )));
        };
        Ok((from.to_string(), parse_pointer(from, kind)?))
    };
    match kind {
        "add" => pointer_add(doc, &ptr, value()?).map_err(|()| {
            invalid(format!(
                "add operation does not apply: doc is missing path: {path:?}: missing value"
            ))
        }),
        "remove" => pointer_remove(doc, &ptr).map(drop).map_err(|()| {
            invalid(format!(
                "remove operation does not apply: doc is missing path: {path:?}: missing value"
            ))
        }),
        "replace" => {
            let value = value()?;
            match pointer_get_mut(doc, &ptr) {
                Some(target) => {
                    *target = value;
                    Ok(())
                }
                None => Err(invalid(format!(
                    "replace operation does not apply: doc is missing key: {path}: missing value"
                ))),
            }
        }
        "move" => {
            let (from_str, from) = from()?;
            if ptr.len() > from.len() && ptr.starts_with(&from) {
                return Err(invalid(format!(
                    "move operation does not apply: cannot move {from_str:?} into its own child {path:?}"
                )));
            }
            let moved = pointer_remove(doc, &from).map_err(|()| {
                invalid(format!(
                    "move operation does not apply: doc is missing from path: {from_str}: missing value"
                ))
            })?;
            pointer_add(doc, &ptr, moved).map_err(|()| {
                invalid(format!(
                    "move operation does not apply: doc is missing destination path: {path}: missing value"
                ))
            })
        }
        "copy" => {
            let (from_str, from) = from()?;
            let copied = pointer_get(doc, &from).cloned().ok_or_else(|| {
                invalid(format!(
                    "copy operation does not apply: doc is missing from path: {from_str}: missing value"
                ))
            })?;
            pointer_add(doc, &ptr, copied).map_err(|()| {
                invalid(format!(
                    "copy operation does not apply: doc is missing destination path: {path}: missing value"
                ))
            })
        }
        _ => {
            let expected = value()?;
            match pointer_get(doc, &ptr) {
                Some(actual) if json_equal(actual, &expected) => Ok(()),
                Some(_) => Err(invalid(format!("testing value {path} failed: test failed"))),
                None => Err(invalid(format!(
                    "testing value {path} failed: doc is missing path: missing value"
                ))),
            }
        }
    }
}

/// Splits an RFC 6901 pointer into unescaped reference tokens; `""` is the whole document.
fn parse_pointer(path: &str, kind: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PatchError::Invalid(format!(
            "{kind} operation does not apply: invalid JSON pointer {path:?}: it must start with '/'"
        )));
    };
    // "~1" must be decoded before "~0" so that "~01" means "~1", not "/".
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// Parses an array index token; `-` (one past the end) is accepted only when `allow_end`.
fn array_index(token: &str, len: usize, allow_end: bool) -> Option<usize> {
    if token == "-" {
        return allow_end.then_some(len);
    }
    let canonical = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if !canonical {
        return None;
    }
    let index: usize = token.parse().ok()?;
    let limit = if allow_end { len + 1 } else { len };
    (index < limit).then_some(index)
}

fn pointer_get<'a>(doc: &'a Value, ptr: &[String]) -> Option<&'a Value> {
    ptr.iter().try_fold(doc, |node, token| match node {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(array_index(token, items.len(), false)?),
        _ => None,
    })
}

fn pointer_get_mut<'a>(doc: &'a mut Value, ptr: &[String]) -> Option<&'a mut Value> {
    ptr.iter().try_fold(doc, |node, token| match node {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => {
            let index = array_index(token, items.len(), false)?;
            items.get_mut(index)
        }
        _ => None,
    })
}

fn pointer_add(doc: &mut Value, ptr: &[String], value: Value) -> Result<(), ()> {
    let Some((last, parent)) = ptr.split_last() else {
        *doc = value;
        return Ok(());
    };
    match pointer_get_mut(doc, parent).ok_or(())? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = array_index(last, items.len(), true).ok_or(())?;
            items.insert(index, value);
            Ok(())
        }
        _ => Err(()),
    }
}

fn pointer_remove(doc: &mut Value, ptr: &[String]) -> Result<Value, ()> {
    let (last, parent) = ptr.split_last().ok_or(())?;
    match pointer_get_mut(doc, parent).ok_or(())? {
        Value::Object(map) => map.remove(last).ok_or(()),
        Value::Array(items) => {
            let index = array_index(last, items.len(), false).ok_or(())?;
            Ok(items.remove(index))
        }
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{PatchError, PatchType, apply_patch};
    use serde_json::json;

    #[test]
    fn json_patch_add_replace_remove() {
        let out = patched(
            PatchType::Json,
            &deployment(),
            json!([
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/example.com~1restarted", "value": "now"},
                {"op": "replace", "path": "/spec/replicas", "value": 5},
                {"op": "remove", "path": "/spec/template/spec/containers/1"},
                {"op": "add", "path": "/spec/template/spec/tolerations/-", "value": {"key": "b"}},
                {"op": "test", "path": "/spec/replicas", "value": 5.0},
                {"op": "copy", "from": "/metadata/labels", "path": "/spec/template/metadata/annotations"},
                {"op": "move", "from": "/spec/revisionHistoryLimit", "path": "/spec/minReadySeconds"}
            ]),
        );
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"example.com/restarted": "now"})
        );
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(pod_spec(&out)["containers"].as_array().unwrap().len(), 1);
        assert_eq!(pod_spec(&out)["tolerations"][1], json!({"key": "b"}));
        assert_eq!(
            out["spec"]["template"]["metadata"]["annotations"],
            json!({"app": "web"})
        );
        assert_eq!(out["spec"]["minReadySeconds"], 10);
        assert!(out["spec"].get("revisionHistoryLimit").is_none());
    }

    #[test]
    fn json_patch_failures_are_invalid_with_the_failing_path() {
        let cases = [
            (
                json!([{"op": "replace", "path": "/spec/replicas", "value": 9},
                       {"op": "test", "path": "/spec/replicas", "value": 3}]),
                "testing value /spec/replicas failed: test failed",
            ),
            (
                json!([{"op": "replace", "path": "/spec/paused", "value": true}]),
                "replace operation does not apply: doc is missing key: /spec/paused: missing value",
            ),
            (
                json!([{"op": "remove", "path": "/metadata/annotations"}]),
                "remove operation does not apply: doc is missing path: \"/metadata/annotations\": missing value",
            ),
            (
                json!([{"op": "add", "path": "/spec/template/spec/containers/7", "value": {}}]),
                "add operation does not apply: doc is missing path: \"/spec/template/spec/containers/7\": missing value",
            ),
            (
                json!([{"op": "frobnicate", "path": "/x"}]),
                "Unexpected kind: frobnicate",
            ),
        ];
        for (patch, message) in cases {
            let err = apply_patch(PatchType::Json, &deployment(), patch.to_string().as_bytes())
                .unwrap_err();
            assert!(matches!(err, PatchError::Invalid(_)), "{err:?}");
            assert_eq!(err.to_string(), message);
            assert_eq!(err.status_code(), 422);
        }
        for body in [&b"{\"op\":\"add\"}"[..], b"[1]", b"[{"] {
            let err = apply_patch(PatchType::Json, &deployment(), body).unwrap_err();
            assert!(matches!(err, PatchError::BadRequest(_)), "{err:?}");
        }
    }
}
