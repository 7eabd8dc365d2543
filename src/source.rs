//! Secrets and ConfigMaps, reduced at the edge of the watch to what reload decisions need.
//!
//! hashroll never keeps Secret or ConfigMap data: each object becomes a [`SourceSummary`] holding
//! its identity, one SHA-256 digest per key, and the two annotations that change decisions.

use std::collections::BTreeMap;
use std::fmt;

/// The two kinds of object whose changes roll workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Secret,
    ConfigMap,
}

impl SourceKind {
    /// The Kubernetes kind, as written in Events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Secret => "Secret",
            SourceKind::ConfigMap => "ConfigMap",
        }
    }

    /// The lower-case form used in annotation maps (`secret/db`).
    pub fn short(self) -> &'static str {
        match self {
            SourceKind::Secret => "secret",
            SourceKind::ConfigMap => "configmap",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Secret or ConfigMap by kind, namespace and name; it may not exist (yet).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    pub kind: SourceKind,
    pub namespace: String,
    pub name: String,
}

impl SourceId {
    pub fn new(kind: SourceKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        SourceId {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// SHA-256 of one key's section, name and value (see `hashing::key_digest`). Kept in memory only.
pub type KeyDigest = [u8; 32];

/// What hashroll keeps of one Secret or ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSummary {
    pub id: SourceId,
    /// One digest per key, `data` and `binaryData` (and a Secret's `stringData`) folded together.
    pub keys: BTreeMap<String, KeyDigest>,
    /// `hashroll.dev/ignore: "true"` or `reloader.stakater.com/ignore: "true"`: changes never roll.
    pub ignore: bool,
    /// `reloader.stakater.com/match: "true"`: eligible for workloads using `reloader.stakater.com/search`.
    pub stakater_match: bool,
}
