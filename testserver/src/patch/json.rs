//! JSON patch (RFC 6902), `application/json-patch+json`, by the `json-patch` crate. What is
//! kept here is how kube-apiserver reports failures.

use json_patch::PatchOperation;
use serde_json::Value;

use super::{PatchError, parse_json_body};

/// Applies a JSON patch body to a copy of `current`. As in the real server, a body that is not a
/// list of objects is a bad request (400); operations that cannot be carried out, unknown `op`s
/// included, fail the whole patch with 422 and leave the object as it was.
pub(super) fn apply(current: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let Value::Array(ops) = parse_json_body(body, "JSON patch")? else {
        return Err(PatchError::BadRequest(
            "JSON patch body must be a JSON array of operations".to_string(),
        ));
    };
    let mut patch = Vec::with_capacity(ops.len());
    for (index, op) in ops.into_iter().enumerate() {
        if !op.is_object() {
            return Err(PatchError::BadRequest(format!(
                "JSON patch operation {index} is not a JSON object"
            )));
        }
        // The real server's decoder takes any object; an unusable one fails when applied (422).
        let op: PatchOperation = serde_json::from_value(op)
            .map_err(|e| PatchError::NotApplicable(format!("operation {index}: {e}")))?;
        patch.push(op);
    }
    let mut doc = current.clone();
    // `doc` is a scratch copy, so the crate's undo log on failure is not needed.
    json_patch::patch_unsafe(&mut doc, &patch)
        .map_err(|e| PatchError::NotApplicable(e.to_string()))?;
    Ok(doc)
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
                {"op": "test", "path": "/spec/replicas", "value": 5},
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
    fn json_patch_test_compares_numbers_as_written() {
        // kube-apiserver's JSON patch library compares scalars by their JSON text, so 5.0 is not 5.
        let ops = json!([{"op": "test", "path": "/spec/replicas", "value": 2.0}]);
        let err =
            apply_patch(PatchType::Json, &deployment(), ops.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, PatchError::NotApplicable(_)), "{err:?}");
    }

    #[test]
    fn json_patch_failures_are_invalid_with_the_real_servers_message() {
        let cases = [
            (
                json!([{"op": "replace", "path": "/spec/replicas", "value": 9},
                       {"op": "test", "path": "/spec/replicas", "value": 3}]),
                "operation '/1' failed at path '/spec/replicas': value did not match",
            ),
            (
                json!([{"op": "replace", "path": "/spec/paused", "value": true}]),
                "operation '/0' failed at path '/spec/paused': path is invalid",
            ),
            (
                json!([{"op": "remove", "path": "/metadata/annotations"}]),
                "operation '/0' failed at path '/metadata/annotations': path is invalid",
            ),
            (
                json!([{"op": "add", "path": "/spec/template/spec/containers/7", "value": {}}]),
                "operation '/0' failed at path '/spec/template/spec/containers/7': path is invalid",
            ),
            (
                json!([{"op": "move", "from": "/spec", "path": "/spec/template/x"}]),
                "operation '/0' failed at path '/spec/template/x': cannot move the value inside itself",
            ),
            (
                json!([{"op": "add", "path": "/x", "value": 1}, {"op": "frobnicate", "path": "/x"}]),
                "operation 1: unknown variant `frobnicate`, expected one of `add`, `remove`, `replace`, `move`, `copy`, `test`",
            ),
            (
                json!([{"op": "add", "path": "x", "value": 1}]),
                "operation 0: json pointer failed to parse; does not start with a slash ('/') and is not empty",
            ),
        ];
        for (patch, detail) in cases {
            let err = apply_patch(PatchType::Json, &deployment(), patch.to_string().as_bytes())
                .unwrap_err();
            let PatchError::NotApplicable(why) = &err else {
                panic!("{patch}: {err:?}");
            };
            assert_eq!(why, detail, "{patch}");
            assert_eq!(
                err.to_string(),
                "the server rejected our request due to an error in our request"
            );
            assert_eq!((err.status_code(), err.reason()), (422, "Invalid"));
            let status = crate::status::ApiError::from(err).to_status();
            assert_eq!(status["details"], json!({}));
        }
        for body in [&b"{\"op\":\"add\"}"[..], b"[1]", b"[{"] {
            let err = apply_patch(PatchType::Json, &deployment(), body).unwrap_err();
            assert!(matches!(err, PatchError::BadRequest(_)), "{err:?}");
        }
    }
}
