//! What an alert says, and the body each sink receives: pure, so every format is tested here. An alert
//! names the workload, the sources and keys that changed, the result and the time; never a value or a
//! digest.

use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use crate::model::kind::{SourceKind, WorkloadId};

/// Where alerts go, and so the shape of their body.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sink {
    /// A Slack incoming webhook: `{"text": …}`.
    Slack,
    /// A Microsoft Teams incoming webhook: `{"text": …}`, as Reloader sends it.
    Teams,
    /// A Google Chat space webhook: `{"text": …}`.
    Gchat,
    /// hashroll's structured JSON body (README, Alerts), for other tools.
    Json,
    /// The message as plain text, as Reloader's default `webhook` sink sends it.
    Raw,
}

impl Sink {
    /// The `sink` label of `hashroll_alerts_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Slack => "slack",
            Sink::Teams => "teams",
            Sink::Gchat => "gchat",
            Sink::Json => "json",
            Sink::Raw => "raw",
        }
    }

    /// Reloader's `ALERT_SINK`: `slack`, `teams` and `gchat` as here (trimmed, any case); anything else,
    /// unset included, posts the message as plain text.
    pub fn from_stakater(value: Option<&str>) -> Sink {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Some("slack") => Sink::Slack,
            Some("teams") => Sink::Teams,
            Some("gchat") => Sink::Gchat,
            _ => Sink::Raw,
        }
    }
}

/// One source among the changes a roll is for, as Events and alerts name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangedSource {
    #[serde(serialize_with = "kind_name")]
    pub kind: SourceKind,
    pub name: String,
    /// The changed keys the workload uses; empty when it uses the whole object (or, through a name
    /// pattern, any key).
    pub keys: Vec<String>,
    /// The source is gone.
    pub deleted: bool,
}

/// What a roll is for: "Secret db (keys: password), ConfigMap app".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes(pub Vec<ChangedSource>);

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {}", s.kind, s.name)?;
            if s.deleted {
                f.write_str(" (deleted)")?;
            } else if !s.keys.is_empty() {
                write!(f, " (keys: {})", s.keys.join(", "))?;
            }
        }
        Ok(())
    }
}

/// A source kind as Events write it (`Secret`).
fn kind_name<S: serde::Serializer>(kind: &SourceKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

/// How a roll ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The workload was rolled.
    Rolled,
    /// The roll failed for good (as its `ReloadFailed` Event says); hashroll keeps retrying. `answer` is the
    /// API's status and reason, never its message.
    Failed { answer: String },
    /// Under `--max-concurrent-rollouts`, the rollout `why` (failed, or not done in time) and `held` rolls
    /// of the same change are held back until the source changes again.
    Halted { why: String, held: usize },
}

/// One alert: a roll, or a roll that failed for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub workload: WorkloadId,
    pub changes: Changes,
    pub outcome: Outcome,
}

impl Alert {
    /// `success` or `failure`, as `hashroll_rolls_total` says it.
    pub fn result(&self) -> &'static str {
        match self.outcome {
            Outcome::Rolled => "success",
            Outcome::Failed { .. } => "failure",
            Outcome::Halted { .. } => "halted",
        }
    }

    /// The one-line message chat sinks show.
    pub fn text(&self, at: Timestamp, additional_info: Option<&str>) -> String {
        let w = &self.workload;
        let what = &self.changes;
        let message = match &self.outcome {
            Outcome::Rolled => format!(
                "hashroll rolled {} {} in namespace {} because {what} changed ({at})",
                w.kind, w.name, w.namespace
            ),
            Outcome::Failed { answer } => format!(
                "hashroll could not roll {} {} in namespace {} after {what} changed: the API server \
                 answered {answer}; it keeps retrying ({at})",
                w.kind, w.name, w.namespace
            ),
            Outcome::Halted { why, held } => format!(
                "the rollout of {} {} in namespace {} after {what} changed {why}: hashroll holds back \
                 {held} more roll(s) of that change until the source changes again ({at})",
                w.kind, w.name, w.namespace
            ),
        };
        // Reloader puts its additional information (a cluster's name, say) in front the same way.
        match additional_info {
            Some(info) => format!("{info} : {message}"),
            None => message,
        }
    }
}

/// A request body and its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// The `json` sink's body: [`JSON_VERSION`] names its shape (README, Alerts).
#[derive(Serialize)]
struct JsonAlert<'a> {
    version: u32,
    result: &'static str,
    time: String,
    workload: JsonWorkload<'a>,
    sources: &'a [ChangedSource],
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_info: Option<&'a str>,
    message: String,
}

#[derive(Serialize)]
struct JsonWorkload<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
}

/// The version of the `json` sink's body; bumped only if a field changes meaning or goes away.
pub const JSON_VERSION: u32 = 1;

/// The body `sink` receives for `alert`, sent at `at`.
pub fn body(sink: Sink, alert: &Alert, at: Timestamp, additional_info: Option<&str>) -> Body {
    let text = alert.text(at, additional_info);
    let json = |v: serde_json::Value| Body {
        content_type: "application/json",
        bytes: v.to_string().into_bytes(),
    };
    match sink {
        Sink::Slack => json(serde_json::json!({ "text": slack_escape(&text) })),
        Sink::Teams | Sink::Gchat => json(serde_json::json!({ "text": text })),
        Sink::Raw => Body {
            content_type: "text/plain; charset=utf-8",
            bytes: text.into_bytes(),
        },
        Sink::Json => {
            let w = &alert.workload;
            let body = JsonAlert {
                version: JSON_VERSION,
                result: alert.result(),
                time: at.to_string(),
                workload: JsonWorkload {
                    kind: w.kind.as_str(),
                    namespace: &w.namespace,
                    name: &w.name,
                },
                sources: &alert.changes.0,
                answer: match &alert.outcome {
                    Outcome::Failed { answer } => Some(answer),
                    Outcome::Rolled | Outcome::Halted { .. } => None,
                },
                additional_info,
                message: text,
            };
            Body {
                content_type: "application/json",
                bytes: serde_json::to_vec(&body).unwrap_or_default(),
            }
        }
    }
}

/// Slack reads `&`, `<` and `>` as markup (links, mentions); its documentation asks for them escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kind::WorkloadKind;
    use serde_json::{Value, json};

    fn at() -> Timestamp {
        "2026-11-30T16:00:00Z".parse().unwrap()
    }

    fn rolled() -> Alert {
        Alert {
            workload: WorkloadId::new(WorkloadKind::Deployment, "shop", "api"),
            changes: Changes(vec![
                ChangedSource {
                    kind: SourceKind::Secret,
                    name: "db".into(),
                    keys: vec!["password".into(), "user".into()],
                    deleted: false,
                },
                ChangedSource {
                    kind: SourceKind::ConfigMap,
                    name: "app".into(),
                    keys: vec![],
                    deleted: true,
                },
            ]),
            outcome: Outcome::Rolled,
        }
    }

    fn failed() -> Alert {
        Alert {
            outcome: Outcome::Failed {
                answer: "403 Forbidden".into(),
            },
            ..rolled()
        }
    }

    fn parsed(b: &Body) -> Value {
        assert_eq!(b.content_type, "application/json");
        serde_json::from_slice(&b.bytes).unwrap()
    }

    const ROLLED: &str = "hashroll rolled Deployment api in namespace shop because Secret db (keys: \
                          password, user), ConfigMap app (deleted) changed (2026-11-30T16:00:00Z)";

    #[test]
    fn the_message_names_workload_kind_namespace_sources_keys_result_and_time() {
        assert_eq!(rolled().text(at(), None), ROLLED);
        assert_eq!(
            failed().text(at(), Some("prod-eu")),
            "prod-eu : hashroll could not roll Deployment api in namespace shop after Secret db \
             (keys: password, user), ConfigMap app (deleted) changed: the API server answered 403 \
             Forbidden; it keeps retrying (2026-11-30T16:00:00Z)"
        );
        assert_eq!(
            (rolled().result(), failed().result()),
            ("success", "failure")
        );
    }

    #[test]
    fn a_halted_change_says_which_rollout_failed_and_how_many_rolls_wait() {
        let halted = Alert {
            outcome: Outcome::Halted {
                why: "was not done within --rollout-timeout".into(),
                held: 3,
            },
            ..rolled()
        };
        assert_eq!(halted.result(), "halted");
        assert_eq!(
            halted.text(at(), None),
            "the rollout of Deployment api in namespace shop after Secret db (keys: password, user), \
             ConfigMap app (deleted) changed was not done within --rollout-timeout: hashroll holds back \
             3 more roll(s) of that change until the source changes again (2026-11-30T16:00:00Z)"
        );
        let json = parsed(&body(Sink::Json, &halted, at(), None));
        assert_eq!(json["result"], "halted");
        assert!(json.get("answer").is_none());
    }

    #[test]
    fn chat_sinks_get_the_text_field_and_raw_gets_plain_text() {
        for sink in [Sink::Slack, Sink::Teams, Sink::Gchat] {
            assert_eq!(
                parsed(&body(sink, &rolled(), at(), None)),
                json!({ "text": ROLLED }),
                "{sink:?}"
            );
        }
        let raw = body(Sink::Raw, &rolled(), at(), None);
        assert_eq!(raw.content_type, "text/plain; charset=utf-8");
        assert_eq!(String::from_utf8(raw.bytes).unwrap(), ROLLED);
    }

    #[test]
    fn slack_markup_characters_are_escaped() {
        let b = body(Sink::Slack, &rolled(), at(), Some("<prod> & co"));
        assert_eq!(
            parsed(&b)["text"],
            format!("&lt;prod&gt; &amp; co : {ROLLED}")
        );
        // Elsewhere the text is as written.
        let b = body(Sink::Gchat, &rolled(), at(), Some("<prod> & co"));
        assert_eq!(parsed(&b)["text"], format!("<prod> & co : {ROLLED}"));
    }

    #[test]
    fn the_json_sink_is_the_documented_structure() {
        assert_eq!(
            parsed(&body(Sink::Json, &rolled(), at(), None)),
            json!({
                "version": 1,
                "result": "success",
                "time": "2026-11-30T16:00:00Z",
                "workload": {"kind": "Deployment", "namespace": "shop", "name": "api"},
                "sources": [
                    {"kind": "Secret", "name": "db", "keys": ["password", "user"], "deleted": false},
                    {"kind": "ConfigMap", "name": "app", "keys": [], "deleted": true},
                ],
                "message": ROLLED,
            })
        );
        let v = parsed(&body(Sink::Json, &failed(), at(), Some("prod-eu")));
        assert_eq!(v["result"], "failure");
        assert_eq!(v["answer"], "403 Forbidden");
        assert_eq!(v["additional_info"], "prod-eu");
    }

    #[test]
    fn reloader_alert_sink_values() {
        for (v, sink) in [
            (Some("slack"), Sink::Slack),
            (Some(" Teams "), Sink::Teams),
            (Some("GCHAT"), Sink::Gchat),
            (Some("webhook"), Sink::Raw),
            (Some("raw"), Sink::Raw),
            (Some(""), Sink::Raw),
            (None, Sink::Raw),
        ] {
            assert_eq!(Sink::from_stakater(v), sink, "{v:?}");
        }
    }

    #[test]
    fn changes_read_as_events_write_them() {
        assert_eq!(
            rolled().changes.to_string(),
            "Secret db (keys: password, user), ConfigMap app (deleted)"
        );
        assert_eq!(Changes::default().to_string(), "");
    }
}
