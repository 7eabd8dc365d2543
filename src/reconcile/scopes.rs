//! The watch scopes: which have listed once, which fail before their first list, and which namespaces
//! hashroll acts in. From these come readiness and the gate in front of every decision.

use std::collections::{HashMap, HashSet};

use crate::reconcile::input::{Listed, WatchScope, Watched};

/// Which namespaces hashroll acts in.
#[derive(Debug, Clone, Default)]
pub struct NamespaceFilter {
    /// `--namespaces`: only these (None = all).
    pub only: Option<HashSet<String>>,
    /// `--ignore-namespaces`.
    pub ignore: HashSet<String>,
    /// `--namespace-selector` is set: act only in namespaces the namespace watch reports.
    pub by_selector: bool,
}

/// Whether hashroll is ready: every watch has listed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every watch has listed.
    Ready,
    /// Some watches have not listed yet, none has failed.
    Syncing,
    /// These watches failed before their first list (`resource in namespace: error`): hashroll cannot
    /// act where they are needed until they list.
    Failing(Vec<String>),
}

/// What the watches have said so far about their scopes.
#[derive(Debug)]
pub struct Scopes {
    /// Every watch that was started.
    all: Vec<WatchScope>,
    namespaces: NamespaceFilter,
    synced: HashSet<WatchScope>,
    /// Watches that failed before their first list, with their latest error.
    failing: HashMap<WatchScope, String>,
    /// Namespaces matching `--namespace-selector`, as the namespace watch reports them.
    selected: HashSet<String>,
}

impl Scopes {
    pub fn new(all: Vec<WatchScope>, namespaces: NamespaceFilter) -> Scopes {
        Scopes {
            all,
            namespaces,
            synced: HashSet::new(),
            failing: HashMap::new(),
            selected: HashSet::new(),
        }
    }

    /// The scope's list is complete.
    pub fn synced(&mut self, scope: &WatchScope) {
        self.failing.remove(scope);
        if self.synced.insert(scope.clone()) {
            tracing::info!(
                resource = scope.resource.resource_name(),
                namespace = scope.namespace.as_deref().unwrap_or("(all)"),
                "watch synced"
            );
        }
    }

    /// The scope's watch failed; it counts against readiness only until its first list.
    pub fn failed(&mut self, scope: WatchScope, error: String) {
        if !self.synced.contains(&scope) {
            self.failing.insert(scope, error);
        }
    }

    /// A namespace matching the selector appeared (true) or left (false); true when newly selected.
    pub fn namespace(&mut self, name: &str, present: bool) -> bool {
        if present {
            self.selected.insert(name.to_string())
        } else {
            self.selected.remove(name);
            false
        }
    }

    /// The namespace watch re-listed: namespaces it no longer holds are no longer selected.
    pub fn forget_unlisted_namespaces(&mut self, listed: &Listed) {
        self.selected.retain(|n| listed.contains("", n));
    }

    /// Every watch has listed once (then, and only then, hashroll is ready); or which are failing.
    pub fn readiness(&self) -> Readiness {
        let mut failing: Vec<String> = self
            .all
            .iter()
            .filter(|s| !self.synced.contains(*s))
            .filter_map(|s| {
                let error = self.failing.get(s)?;
                Some(format!(
                    "{} in {}: {error}",
                    s.resource.resource_name(),
                    s.namespace.as_deref().unwrap_or("all namespaces")
                ))
            })
            .collect();
        if !failing.is_empty() {
            failing.sort();
            Readiness::Failing(failing)
        } else if self.all.iter().all(|s| self.synced.contains(s)) {
            Readiness::Ready
        } else {
            Readiness::Syncing
        }
    }

    /// Whether a workload in `ns` may be decided now: hashroll acts there, and every Secret/ConfigMap (and
    /// namespace) watch covering it has listed once; before that "not listed yet" would look like "deleted".
    pub fn may_decide(&self, ns: &str) -> bool {
        let f = &self.namespaces;
        let allowed = !f.ignore.contains(ns)
            && f.only.as_ref().is_none_or(|only| only.contains(ns))
            && (!f.by_selector || self.selected.contains(ns));
        allowed
            && self
                .all
                .iter()
                .filter(|s| {
                    matches!(
                        s.resource,
                        Watched::Source(_) | Watched::ExcludedSecrets(_) | Watched::Namespaces
                    )
                })
                .filter(|s| s.namespace.as_deref().is_none_or(|n| n == ns))
                .all(|s| self.synced.contains(s))
    }
}
