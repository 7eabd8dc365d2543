//! What `hashroll explain` says, as data: printed as text by [`text`](super::text), or as JSON (`-o json`)
//! for tools. Names of sources and keys appear, never a value or a digest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::model::hashing::InstallationKey;
use crate::model::kind::{SourceId, WorkloadKind};
use crate::model::policy::PolicySettings;
use crate::model::references::KeySelection;
use crate::model::source::SourceSummary;
use crate::reconcile::decision::Visibility;

/// The controller's settings that change a verdict.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: PolicySettings,
    pub visibility: Visibility,
    pub workload_kinds: BTreeSet<WorkloadKind>,
    pub debounce: Duration,
    pub dry_run: bool,
}

/// What was read from the cluster, besides the object explained.
pub struct Cluster {
    /// The namespace's Secrets and ConfigMaps, as the controller's watches would hold them.
    pub sources: BTreeMap<Arc<SourceId>, SourceSummary>,
    /// When each source was last written (its newest `managedFields` entry, else its creation).
    pub written_at: HashMap<SourceId, Timestamp>,
    /// The installation key, or why it could not be read.
    pub key: Result<InstallationKey, String>,
    /// Why hashroll does not act in the namespace, if it does not.
    pub not_acted_on: Option<String>,
}

/// Everything `explain` says about one workload.
#[derive(Debug, Serialize)]
pub struct WorkloadReport {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub tracking: TrackingReport,
    pub sources: Vec<SourceLine>,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Whether the workload takes part, and why.
#[derive(Debug, Serialize)]
pub struct TrackingReport {
    pub state: TrackingState,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackingState {
    OptedIn,
    NotOptedIn,
    InvalidAnnotation,
}

/// One source the workload uses, tracks or excludes.
#[derive(Debug, Serialize)]
pub struct SourceLine {
    pub kind: &'static str,
    pub name: String,
    pub keys: Keys,
    pub optional: bool,
    /// Where the pod spec refers to it, or which annotation names it.
    pub via: Vec<String>,
    pub state: SourceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The keys a workload uses of a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Keys {
    /// `"all"`.
    All(&'static str),
    Some(Vec<String>),
}

impl Keys {
    pub fn of(k: &KeySelection) -> Keys {
        match k {
            KeySelection::All => Keys::All("all"),
            KeySelection::Keys(keys) => Keys::Some(keys.iter().map(str::to_string).collect()),
        }
    }
}

/// What is recorded on the workload for a source, against what the source holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    /// The keys it uses hold what was recorded.
    Same,
    /// One of the keys it uses differs from what was recorded (or it appeared or disappeared).
    Changed,
    /// Tracked but not recorded yet: recorded, without a roll, at the next decision.
    NotRecorded,
    /// Optional and absent: tracked as absent.
    Absent,
    /// Required and missing (or a required key is): the workload is held.
    Missing,
    /// hashroll does not see it in full, so does not track it.
    NotWatched,
    /// Ignored by an annotation on it (or lacking `reloader.stakater.com/match`): never rolls anything.
    Ignored,
    /// An exclude annotation on the workload names it.
    Excluded,
    /// Cannot be compared (the installation key could not be read).
    Unknown,
}

/// Would the workload roll now, and why (not).
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub outcome: Outcome,
    pub reason: String,
    /// The sources whose change would roll it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<ChangedSource>,
    /// When the roll would go out (a pause period or the debounce window), RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

impl Verdict {
    pub fn new(outcome: Outcome, reason: String) -> Verdict {
        Verdict {
            outcome,
            reason,
            changed: Vec::new(),
            at: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    WouldRoll,
    NothingToDo,
    WouldRecord,
    Held,
    Paused,
    Debounced,
    NotOptedIn,
    InvalidAnnotation,
    NotActedOn,
    Unknown,
}

/// A source whose change would roll the workload: one of the keys it uses differs.
#[derive(Debug, Serialize)]
pub struct ChangedSource {
    pub kind: &'static str,
    pub name: String,
    pub keys: Keys,
}

/// Everything `explain` says about one Secret or ConfigMap: the workloads that use it.
#[derive(Debug, Serialize)]
pub struct SourceReport {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub state: String,
    /// Its key names (never a value).
    pub keys: Vec<String>,
    pub users: Vec<User>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A workload that uses, tracks or excludes the source.
#[derive(Debug, Serialize)]
pub struct User {
    pub kind: &'static str,
    pub name: String,
    pub keys: Keys,
    pub optional: bool,
    pub via: Vec<String>,
    /// `tracked`, `excluded`, `not_opted_in`, `invalid_annotation`.
    pub state: &'static str,
}
