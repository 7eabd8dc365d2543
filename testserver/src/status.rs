//! Kubernetes `Status` error responses with the reasons and codes the real API server uses.

use serde_json::{Value, json};

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` object (name, group, kind, causes), if any.
    pub details: Option<Value>,
    /// Seconds for the `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

fn details(name: &str, group: &str, kind: &str) -> Option<Value> {
    let mut d = json!({});
    if !name.is_empty() {
        d["name"] = json!(name);
    }
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    if !kind.is_empty() {
        d["kind"] = json!(kind);
    }
    Some(d)
}

impl ApiError {
    /// A bare error with a code, reason and message.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// 404: `<qualified> "<name>" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> ApiError {
        let q = qualify(plural, group);
        ApiError {
            details: details(name, group, plural),
            ..ApiError::new(404, "NotFound", format!("{q} \"{name}\" not found"))
        }
    }

    /// 409: `<qualified> "<name>" already exists`.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> ApiError {
        let q = qualify(plural, group);
        ApiError {
            details: details(name, group, plural),
            ..ApiError::new(
                409,
                "AlreadyExists",
                format!("{q} \"{name}\" already exists"),
            )
        }
    }

    /// 409 Conflict: the optimistic-concurrency message.
    pub fn conflict_modified(group: &str, plural: &str, name: &str) -> ApiError {
        ApiError::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 Conflict with a custom explanation.
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> ApiError {
        let q = qualify(plural, group);
        ApiError {
            details: details(name, group, plural),
            ..ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {q} \"{name}\": {why}"),
            )
        }
    }

    /// 422 Invalid on one field: `<Kind> "<name>" is invalid: <field>: <detail>`.
    pub fn invalid(group: &str, kind: &str, name: &str, field: &str, detail: &str) -> ApiError {
        let mut d = details(name, group, kind).unwrap_or_default();
        d["causes"] = json!([{ "reason": "FieldValueInvalid", "message": detail, "field": field }]);
        ApiError {
            details: Some(d),
            ..ApiError::new(
                422,
                "Invalid",
                format!("{kind} \"{name}\" is invalid: {field}: {detail}"),
            )
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 403 Forbidden with a complete message.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 410 Expired: the requested resourceVersion has been compacted.
    pub fn expired(requested: u64, oldest: u64) -> ApiError {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    /// 429 TooManyRequests with a Retry-After hint.
    pub fn too_many_requests(retry_after_secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_secs),
            details: Some(json!({ "retryAfterSeconds": retry_after_secs })),
            ..ApiError::new(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            )
        }
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// `plural.group`, or the bare plural for the core group.
pub fn qualify(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_message_matches_the_real_server() {
        let e = ApiError::conflict_modified("apps", "deployments", "x");
        assert_eq!(
            e.message,
            "Operation cannot be fulfilled on deployments.apps \"x\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let s = e.to_status();
        assert_eq!(s["code"], 409);
        assert_eq!(s["reason"], "Conflict");
        assert_eq!(s["details"]["group"], "apps");
    }

    #[test]
    fn not_found_names_the_resource_without_group_for_core() {
        let s = ApiError::not_found("", "namespaces", "x").to_status();
        assert_eq!(s["message"], "namespaces \"x\" not found");
        assert_eq!(s["details"], json!({"name": "x", "kind": "namespaces"}));
        assert_eq!(s["status"], "Failure");
    }

    #[test]
    fn too_many_requests_carries_retry_after() {
        let e = ApiError::too_many_requests(3);
        assert_eq!(e.retry_after, Some(3));
        assert_eq!(e.to_status()["details"]["retryAfterSeconds"], 3);
    }
}
