//! What the watches tell the reconcile loop: objects reduced to summaries, deletions, and the end of each
//! (re-)list with the names it held.

use std::collections::{HashMap, HashSet};

use crate::model::kind::{SourceId, SourceKind, WorkloadId, WorkloadKind};
use crate::model::source::SourceSummary;
use crate::model::workload::WorkloadSummary;

/// What a watch covers: one resource, cluster-wide (`namespace` None) or in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchScope {
    pub resource: Watched,
    pub namespace: Option<String>,
}

/// The resources hashroll watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watched {
    Source(SourceKind),
    Workload(WorkloadKind),
    /// Secrets of the i-th type in `--exclude-secret-types`, by metadata only: so that a Secret a workload
    /// uses is known to exist even though its content is not watched.
    ExcludedSecrets(u8),
    Namespaces,
}

impl Watched {
    /// The plural resource name, for logs and metrics.
    pub fn resource_name(self) -> &'static str {
        match self {
            Watched::Source(k) => k.info().plural,
            Watched::Workload(k) => k.info().plural,
            Watched::ExcludedSecrets(_) => SourceKind::Secret.info().plural,
            Watched::Namespaces => "namespaces",
        }
    }
}

/// What the watches tell the controller.
#[derive(Debug)]
pub enum Input {
    SourceApplied(SourceSummary),
    SourceDeleted(SourceId),
    WorkloadApplied(Box<WorkloadSummary>),
    WorkloadDeleted(WorkloadId),
    /// A namespace matching `--namespace-selector` exists (true) or no longer does (false).
    Namespace(String, bool),
    /// The scope's list is complete (first time or after a re-list), with the (namespace, name) of every
    /// object it held: what the controller knows in this scope and the list lacks was deleted meanwhile.
    Synced(WatchScope, Listed),
    /// The scope's watch failed (the error, for readiness and logs); it retries with backoff.
    WatchFailed(WatchScope, String),
    /// A poll round (Vault) read every source in `covered`: those `present` lists were reported just before
    /// as `SourceApplied`, the others do not exist (or may not be read). Sources not covered stay as they
    /// were (Vault down): nothing is known about them now.
    Polled {
        covered: Vec<SourceId>,
        present: Listed,
    },
    /// The canary ConfigMap (`--canary-interval`), with the token of the write it carries: never a source.
    Canary(String),
}

/// The names of every object one list returned, by namespace (empty for cluster-scoped objects), so the
/// controller can look its own ids up without building a key per lookup.
#[derive(Debug, Default)]
pub struct Listed(HashMap<String, HashSet<String>>);

impl Listed {
    pub fn insert(&mut self, namespace: String, name: String) {
        self.0.entry(namespace).or_default().insert(name);
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.0
            .get(namespace)
            .is_some_and(|names| names.contains(name))
    }
}
