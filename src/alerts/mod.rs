//! Alerts: one webhook message after each roll and each roll that failed for good, for chat (Slack, Teams,
//! Google Chat), other tools (`json`) or as plain text. `message` is what an alert says, pure; `settings`
//! reads the flags (and Reloader's `ALERT_*` variables); `sender` posts them, off the decision path.

pub mod message;
pub mod sender;
pub mod settings;

pub use message::{Alert, ChangedSource, Changes, Outcome};
pub use sender::AlertQueue;
