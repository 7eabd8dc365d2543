//! JSON merge patch (RFC 7386), `application/merge-patch+json`, by the `json-patch` crate.

use serde_json::Value;

use super::{PatchError, parse_json_body};

/// Applies a merge patch body to a copy of `current`: objects merge recursively, `null` deletes,
/// everything else (arrays included) replaces.
pub(super) fn apply(current: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let patch = parse_json_body(body, "merge patch")?;
    if !patch.is_object() {
        return Err(PatchError::BadRequest(
            "merge patch body must be a JSON object".to_string(),
        ));
    }
    let mut doc = current.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{PatchError, PatchType, apply_patch};
    use serde_json::json;

    #[test]
    fn merge_patch_null_deletes_and_lists_replace() {
        let out = patched(
            PatchType::Merge,
            &deployment(),
            json!({"metadata": {"labels": {"app": null, "tier": "fe"}},
                   "spec": {"template": {"spec": {"containers": [{"name": "only"}]}}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"tier": "fe"}));
        assert_eq!(pod_spec(&out)["containers"], json!([{"name": "only"}]));
        assert_eq!(out["spec"]["replicas"], 2);
        let err = apply_patch(PatchType::Merge, &deployment(), b"{not json").unwrap_err();
        assert!(matches!(err, PatchError::BadRequest(_)), "{err:?}");
    }
}
