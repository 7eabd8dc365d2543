//! One error type for the crate. Every `kube::Error` is classified here, once, into what the caller can
//! do about it; the error names the object it is about, and its class is the label metrics count it by.

use std::fmt;

/// What can be done about a failed API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The server is unreachable, overloaded or failing: retry with backoff.
    Transient,
    /// Someone else wrote the object between our read and our write: read again.
    Conflict,
    /// The object (or its namespace) does not exist.
    NotFound,
    /// Authentication or RBAC refuses it: retrying will not help until an operator acts.
    Forbidden,
    /// The request itself is wrong (invalid, rejected by admission): retrying will not help.
    Fatal,
}

impl ErrorClass {
    /// Classifies a client error: HTTP status for API errors; anything that never got an answer (connection,
    /// TLS, timeouts, a body cut short) is transient.
    pub fn of(e: &kube::Error) -> ErrorClass {
        match e {
            kube::Error::Api(s) => match s.code {
                404 => ErrorClass::NotFound,
                409 => ErrorClass::Conflict,
                401 | 403 => ErrorClass::Forbidden,
                408 | 429 | 500..=599 => ErrorClass::Transient,
                _ => ErrorClass::Fatal,
            },
            kube::Error::BuildRequest(_)
            | kube::Error::SerdeError(_)
            | kube::Error::Discovery(_)
            | kube::Error::InferConfig(_)
            | kube::Error::InferKubeconfig(_) => ErrorClass::Fatal,
            _ => ErrorClass::Transient,
        }
    }

    /// The value of the `class` label on error metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Conflict => "conflict",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Forbidden => "forbidden",
            ErrorClass::Fatal => "fatal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric_label())
    }
}

/// A failed operation on one object: what was done, to which object, and why.
#[derive(Debug, thiserror::Error)]
#[error("{action} {object}: {cause}")]
pub struct Error {
    /// What hashroll was doing (`patching`, `reading`).
    pub action: &'static str,
    /// The object, as `Kind namespace/name`, and where useful the field.
    pub object: String,
    pub class: ErrorClass,
    #[source]
    pub cause: Cause,
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Api(kube::Error),
    /// The object was read but is not usable (a malformed field).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An API call on `object` failed.
    pub fn api(action: &'static str, object: impl fmt::Display, e: kube::Error) -> Error {
        Error {
            action,
            object: object.to_string(),
            class: ErrorClass::of(&e),
            cause: Cause::Api(e),
        }
    }

    /// The object is there but unusable; retrying will not help.
    pub fn invalid(
        action: &'static str,
        object: impl fmt::Display,
        why: impl Into<String>,
    ) -> Error {
        Error {
            action,
            object: object.to_string(),
            class: ErrorClass::Fatal,
            cause: Cause::Invalid(why.into()),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    /// What the API server answered, as an Event may say it: `403 Forbidden`. Never its message, which
    /// can quote the object (an admission webhook's denial, say).
    pub fn answer(&self) -> String {
        match &self.cause {
            Cause::Api(kube::Error::Api(s)) if s.reason.is_empty() => format!("HTTP {}", s.code),
            Cause::Api(kube::Error::Api(s)) => format!("{} {}", s.code, s.reason),
            Cause::Api(_) => "no answer (connection failed or timed out)".into(),
            Cause::Invalid(_) => "a response hashroll could not use".into(),
        }
    }

    /// The HTTP status of an API error, or `transport` when none came back (a metric label).
    pub fn code_label(&self) -> String {
        match &self.cause {
            Cause::Api(kube::Error::Api(s)) => s.code.to_string(),
            Cause::Api(_) => "transport".into(),
            Cause::Invalid(_) => "invalid".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("x", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn api_statuses_are_classified_once() {
        let class = |c| ErrorClass::of(&status(c));
        assert_eq!(class(404), ErrorClass::NotFound);
        assert_eq!(class(409), ErrorClass::Conflict);
        assert_eq!(class(403), ErrorClass::Forbidden);
        assert_eq!(class(401), ErrorClass::Forbidden);
        assert_eq!(class(429), ErrorClass::Transient);
        assert_eq!(class(500), ErrorClass::Transient);
        assert_eq!(class(503), ErrorClass::Transient);
        assert_eq!(class(422), ErrorClass::Fatal);
        assert_eq!(class(400), ErrorClass::Fatal);
    }

    #[test]
    fn the_error_names_the_object_and_its_labels_are_bounded() {
        let e = Error::api("patching", "Deployment shop/web", status(500));
        assert!(e.to_string().starts_with("patching Deployment shop/web: "));
        assert_eq!(e.code_label(), "500");
        assert_eq!(e.answer(), "500 Reason");
        assert!(e.is_transient());
        let bad = Error::invalid(
            "reading",
            "Secret hashroll/hashroll-key field data.key",
            "missing",
        );
        assert_eq!(
            bad.to_string(),
            "reading Secret hashroll/hashroll-key field data.key: missing"
        );
        assert!(!bad.is_transient());
    }
}
