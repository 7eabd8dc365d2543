//! Patch engines of the test API server, one module per patch type: JSON patch (RFC 6902,
//! [`json`]) and JSON merge patch (RFC 7386, [`merge`]), both by the `json-patch` crate; strategic
//! merge patch ([`strategic`]); server-side apply ([`apply`]) with its `metadata.managedFields`
//! bookkeeping ([`managed`]).
//!
//! Everything here is pure. The HTTP layer hands in the stored object and the request body and
//! gets back the object to store, or a [`PatchError`] that maps onto a Kubernetes `Status`.
//! `resourceVersion`, `generation` and `uid` are left to the caller.

use std::fmt;

use serde_json::Value;

use crate::status::ApiError;

mod apply;
mod json;
mod managed;
mod merge;
mod strategic;

pub use apply::{server_side_apply, server_side_apply_in};
pub use managed::{Scope, record_update_manager, record_update_manager_in};

/// The four PATCH flavours the Kubernetes API accepts, told apart by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// Maps a `Content-Type` value to a patch type, ignoring parameters such as `charset`.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media = ct.split(';').next().unwrap_or_default().trim();
        [
            PatchType::Merge,
            PatchType::Json,
            PatchType::Strategic,
            PatchType::Apply,
        ]
        .into_iter()
        .find(|pt| pt.content_type().eq_ignore_ascii_case(media))
    }

    /// The media type a client sends for this patch type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Json => "application/json-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a patch was refused; each variant corresponds to one HTTP status / `Status.reason`.
#[derive(Debug)]
pub enum PatchError {
    /// The request body is malformed (HTTP 400, reason `BadRequest`).
    BadRequest(String),
    /// The patch is well formed but cannot be applied to this object (HTTP 422, reason `Invalid`).
    Invalid(String),
    /// A JSON patch operation does not apply (a failed `test`, a missing path, an unknown `op`):
    /// HTTP 422 `Invalid`. The real server does not say why (its message is the generic
    /// [`NOT_APPLICABLE_MESSAGE`]), so the reason given here is for debugging only.
    NotApplicable(String),
    /// Server-side apply would take fields owned by another manager (HTTP 409, reason `Conflict`).
    Conflict {
        /// Full message, e.g. `Apply failed with 1 conflict: conflict with "x": .spec.replicas`.
        message: String,
    },
    /// The `Content-Type` is not a patch type this resource accepts (HTTP 415).
    UnsupportedMediaType(String),
}

impl PatchError {
    /// The 415 error a real server returns for an unknown PATCH content type. Custom resources
    /// do not accept strategic merge patches, so `strategic_allowed` is false for them.
    pub fn unsupported_media_type(content_type: &str, strategic_allowed: bool) -> PatchError {
        let mut accepted = vec![
            PatchType::Json.content_type(),
            PatchType::Merge.content_type(),
            PatchType::Apply.content_type(),
        ];
        if strategic_allowed {
            accepted.push(PatchType::Strategic.content_type());
        }
        PatchError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: {}",
            accepted.join(", ")
        ))
    }

    /// HTTP status code for this error.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::BadRequest(_) => 400,
            PatchError::Invalid(_) | PatchError::NotApplicable(_) => 422,
            PatchError::Conflict { .. } => 409,
            PatchError::UnsupportedMediaType(_) => 415,
        }
    }

    /// `Status.reason` for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            PatchError::BadRequest(_) => "BadRequest",
            PatchError::Invalid(_) | PatchError::NotApplicable(_) => "Invalid",
            PatchError::Conflict { .. } => "Conflict",
            PatchError::UnsupportedMediaType(_) => "UnsupportedMediaType",
        }
    }
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::BadRequest(m)
            | PatchError::Invalid(m)
            | PatchError::UnsupportedMediaType(m)
            | PatchError::Conflict { message: m } => f.write_str(m),
            PatchError::NotApplicable(_) => f.write_str(NOT_APPLICABLE_MESSAGE),
        }
    }
}

/// What kube-apiserver answers when a JSON patch fails to apply: it wraps the patch library's
/// error in `NewGenericServerResponse(422, ...)`, which keeps this fixed text and drops the error.
pub const NOT_APPLICABLE_MESSAGE: &str =
    "the server rejected our request due to an error in our request";

impl From<PatchError> for ApiError {
    fn from(e: PatchError) -> ApiError {
        let mut api = ApiError::new(e.status_code(), e.reason(), e.to_string());
        if let PatchError::NotApplicable(_) = e {
            // An empty `details`, as the real server sends: kubectl then prints the message.
            api.details = Some(Value::Object(Default::default()));
        }
        api
    }
}

impl std::error::Error for PatchError {}

/// Non-apply patches. `current` is the stored object. Returns the new object (metadata.managedFields untouched).
pub fn apply_patch(pt: PatchType, current: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let patched = match pt {
        PatchType::Merge => merge::apply(current, patch)?,
        PatchType::Json => json::apply(current, patch)?,
        PatchType::Strategic => strategic::apply(current, patch)?,
        PatchType::Apply => {
            // Apply needs a field manager and ownership rules, so it has its own entry point.
            return Err(PatchError::BadRequest(
                "apply patches must go through server_side_apply".to_string(),
            ));
        }
    };
    if !patched.is_object() {
        return Err(PatchError::Invalid(
            "the patched object is not a JSON object".to_string(),
        ));
    }
    Ok(patched)
}

fn parse_json_body(body: &[u8], what: &str) -> Result<Value, PatchError> {
    serde_json::from_slice(body)
        .map_err(|e| PatchError::BadRequest(format!("invalid JSON in {what} body: {e}")))
}

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_ignores_parameters_and_case() {
        let cases = [
            (
                "application/merge-patch+json; charset=utf-8",
                Some(PatchType::Merge),
            ),
            ("Application/JSON-Patch+JSON", Some(PatchType::Json)),
            (
                "application/strategic-merge-patch+json",
                Some(PatchType::Strategic),
            ),
            (
                " application/apply-patch+yaml ;charset=UTF-8",
                Some(PatchType::Apply),
            ),
            ("application/json", None),
        ];
        for (ct, want) in cases {
            assert_eq!(PatchType::from_content_type(ct), want, "{ct}");
        }
        let err = PatchError::unsupported_media_type("application/json", false);
        assert_eq!(err.status_code(), 415);
        assert!(!err.to_string().contains("strategic"), "{err}");
    }
}
