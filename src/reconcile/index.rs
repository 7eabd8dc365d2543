//! The reverse index: which workloads to re-evaluate when a Secret or ConfigMap changes.
//!
//! A pure data structure, updated by the controller whenever it (re)reads a workload. Each workload is
//! registered under the exact sources it names (whether they exist or not, so creating a missing Secret
//! finds its waiting workloads) and, for pattern rules, under (namespace, kind): those workloads are
//! re-evaluated for every source of that kind in their namespace.
//!
//! Memory depends on the number of objects and references only. Every workload id and every source id is
//! allocated once and shared through `Arc`s between the forward and backward maps.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::model::kind::{Namespace, SourceId, SourceKind, WorkloadId};

/// (namespace, kind, name) → workloads, including names that do not exist yet; plus per (namespace, kind) the
/// workloads that track by pattern (regular expressions) and must be checked against every source of that kind.
#[derive(Debug, Default)]
pub struct ReverseIndex {
    /// Exact source → the workloads naming it.
    by_source: HashMap<Arc<SourceId>, Users>,
    /// Namespace → pattern trackers per source kind. Never holds an entry with both sets empty.
    patterns: HashMap<Namespace, PatternTrackers>,
    /// Workload → what it registered, so `set` and `remove` can undo exactly that.
    by_workload: HashMap<Arc<WorkloadId>, Registration>,
    /// A source of a polled kind (Vault) entered or left `by_source` since [`ReverseIndex::take_polled`].
    polled_changed: bool,
}

/// The workloads of one namespace tracking sources by pattern.
#[derive(Debug, Default)]
struct PatternTrackers {
    secrets: BTreeSet<Arc<WorkloadId>>,
    config_maps: BTreeSet<Arc<WorkloadId>>,
    provider_classes: BTreeSet<Arc<WorkloadId>>,
    /// Vault paths are never tracked by pattern: always empty.
    vault: BTreeSet<Arc<WorkloadId>>,
}

impl PatternTrackers {
    fn of(&self, kind: SourceKind) -> &BTreeSet<Arc<WorkloadId>> {
        match kind {
            SourceKind::Secret => &self.secrets,
            SourceKind::ConfigMap => &self.config_maps,
            SourceKind::SecretProviderClass => &self.provider_classes,
            SourceKind::Vault => &self.vault,
        }
    }

    fn of_mut(&mut self, kind: SourceKind) -> &mut BTreeSet<Arc<WorkloadId>> {
        match kind {
            SourceKind::Secret => &mut self.secrets,
            SourceKind::ConfigMap => &mut self.config_maps,
            SourceKind::SecretProviderClass => &mut self.provider_classes,
            SourceKind::Vault => &mut self.vault,
        }
    }

    fn is_empty(&self) -> bool {
        self.secrets.is_empty()
            && self.config_maps.is_empty()
            && self.provider_classes.is_empty()
            && self.vault.is_empty()
    }
}

/// The workloads naming one source, sorted and distinct, never none. Most sources have one user, held
/// inline: a `BTreeSet` would allocate a node of eleven slots (112 bytes) per source even for one.
#[derive(Debug)]
enum Users {
    One(Arc<WorkloadId>),
    Many(Vec<Arc<WorkloadId>>),
}

impl Users {
    fn as_slice(&self) -> &[Arc<WorkloadId>] {
        match self {
            Users::One(w) => std::slice::from_ref(w),
            Users::Many(ws) => ws,
        }
    }

    fn insert(&mut self, w: Arc<WorkloadId>) {
        match self {
            Users::One(one) => match (**one).cmp(&*w) {
                Ordering::Equal => {}
                Ordering::Less => *self = Users::Many(vec![Arc::clone(one), w]),
                Ordering::Greater => *self = Users::Many(vec![w, Arc::clone(one)]),
            },
            Users::Many(ws) => {
                if let Err(at) = ws.binary_search(&w) {
                    ws.insert(at, w);
                }
            }
        }
    }

    /// Removes `w`; false when no user is left.
    fn remove(&mut self, w: &WorkloadId) -> bool {
        match self {
            Users::One(one) => **one != *w,
            Users::Many(ws) => {
                if let Ok(at) = ws.binary_search_by(|u| (**u).cmp(w)) {
                    ws.remove(at);
                }
                if let [last] = ws.as_slice() {
                    *self = Users::One(Arc::clone(last));
                }
                true
            }
        }
    }
}

/// What one workload is registered under.
#[derive(Debug)]
struct Registration {
    /// Sorted, distinct.
    exact: Box<[Arc<SourceId>]>,
    /// Sorted, distinct.
    pattern_kinds: Box<[SourceKind]>,
}

impl ReverseIndex {
    /// Registers what `workload` uses now, replacing its previous entries. Duplicates are fine.
    ///
    /// Pattern trackers are registered in the workload's own namespace. A workload that uses nothing is
    /// not kept at all (the same as [`ReverseIndex::remove`]).
    /// Source ids are taken as given (the controller passes the allocation its source map holds, so one
    /// source id is allocated once), unless the index already holds an equal one.
    pub fn set(
        &mut self,
        workload: &Arc<WorkloadId>,
        exact: impl IntoIterator<Item = Arc<SourceId>>,
        pattern_kinds: &[SourceKind],
    ) {
        let exact: BTreeSet<Arc<SourceId>> = exact.into_iter().collect();
        let kinds: BTreeSet<SourceKind> = pattern_kinds.iter().copied().collect();

        // Keep the allocation the index already holds (the controller shares it) when re-registered.
        let w = match self.by_workload.remove_entry(&**workload) {
            Some((w, old)) => {
                self.unregister(&w, old);
                w
            }
            None => Arc::clone(workload),
        };
        if exact.is_empty() && kinds.is_empty() {
            return;
        }

        let mut shared = Vec::with_capacity(exact.len());
        for id in exact {
            let key = match self.by_source.get_key_value(&id) {
                Some((k, _)) => Arc::clone(k),
                None => {
                    self.polled_changed |= id.kind.is_polled();
                    id
                }
            };
            match self.by_source.get_mut(&key) {
                Some(users) => users.insert(Arc::clone(&w)),
                None => {
                    self.by_source
                        .insert(Arc::clone(&key), Users::One(Arc::clone(&w)));
                }
            }
            shared.push(key);
        }
        if !kinds.is_empty() {
            let trackers = match self.patterns.get_mut(&w.namespace) {
                Some(t) => t,
                None => self.patterns.entry(w.namespace.clone()).or_default(),
            };
            for &kind in &kinds {
                trackers.of_mut(kind).insert(Arc::clone(&w));
            }
        }
        self.by_workload.insert(
            w,
            Registration {
                exact: shared.into_boxed_slice(),
                pattern_kinds: kinds.into_iter().collect(),
            },
        );
    }

    /// The allocation the index holds for `source`, if any workload names it: the controller's source map
    /// shares it rather than holding a second copy of the id.
    pub fn source_id(&self, source: &SourceId) -> Option<&Arc<SourceId>> {
        self.by_source.get_key_value(source).map(|(k, _)| k)
    }

    /// Forgets `workload` entirely; sources nobody else uses disappear from the index.
    pub fn remove(&mut self, workload: &WorkloadId) {
        if let Some((w, old)) = self.by_workload.remove_entry(workload) {
            self.unregister(&w, old);
        }
    }

    /// Workloads to re-evaluate when `source` changes: exact users + pattern trackers of that kind in its namespace. Sorted, no duplicates.
    pub fn affected(&self, source: &SourceId) -> Vec<Arc<WorkloadId>> {
        let exact = self.by_source.get(source);
        let pattern = self
            .patterns
            .get(&source.namespace)
            .map(|t| t.of(source.kind));
        let merged: BTreeSet<&Arc<WorkloadId>> = exact
            .map(Users::as_slice)
            .into_iter()
            .flatten()
            .chain(pattern.into_iter().flatten())
            .collect();
        merged.into_iter().cloned().collect()
    }

    /// Every source of a polled kind some workload uses, sorted, when that set changed since the last call
    /// (the poller reads exactly these). Walks the index only when something changed.
    pub fn take_polled(&mut self) -> Option<Vec<SourceId>> {
        if !std::mem::take(&mut self.polled_changed) {
            return None;
        }
        let mut ids: Vec<SourceId> = (self.by_source.keys())
            .filter(|id| id.kind.is_polled())
            .map(|id| SourceId::clone(id))
            .collect();
        ids.sort_unstable();
        Some(ids)
    }

    /// The exact sources `workload` is registered under, sorted.
    #[cfg(test)]
    pub fn sources_of(&self, workload: &WorkloadId) -> Vec<SourceId> {
        self.by_workload
            .get(workload)
            .map(|r| r.exact.iter().map(|s| SourceId::clone(s)).collect())
            .unwrap_or_default()
    }

    /// The source kinds `workload` tracks by pattern in its namespace, sorted.
    #[cfg(test)]
    pub fn pattern_kinds_of(&self, workload: &WorkloadId) -> Vec<SourceKind> {
        self.by_workload
            .get(workload)
            .map(|r| r.pattern_kinds.to_vec())
            .unwrap_or_default()
    }

    /// True when `workload` is registered (it uses at least one source or pattern).
    #[cfg(test)]
    pub fn contains(&self, workload: &WorkloadId) -> bool {
        self.by_workload.contains_key(workload)
    }

    /// Number of workloads registered.
    #[cfg(test)]
    pub fn workload_count(&self) -> usize {
        self.by_workload.len()
    }

    /// Number of distinct exact source ids indexed (existing or not).
    #[cfg(test)]
    pub fn source_count(&self) -> usize {
        self.by_source.len()
    }

    /// Removes `w` from everything `reg` lists, dropping entries left empty.
    fn unregister(&mut self, w: &Arc<WorkloadId>, reg: Registration) {
        for id in reg.exact.iter() {
            if let Some(users) = self.by_source.get_mut(&**id)
                && !users.remove(w)
            {
                self.by_source.remove(&**id);
                self.polled_changed |= id.kind.is_polled();
            }
        }
        if !reg.pattern_kinds.is_empty()
            && let Some(trackers) = self.patterns.get_mut(&w.namespace)
        {
            for &kind in reg.pattern_kinds.iter() {
                trackers.of_mut(kind).remove(w);
            }
            if trackers.is_empty() {
                self.patterns.remove(&w.namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kind::WorkloadKind;

    fn deploy(ns: &str, name: &str) -> Arc<WorkloadId> {
        Arc::new(WorkloadId::new(WorkloadKind::Deployment, ns, name))
    }

    fn secret(ns: &str, name: &str) -> SourceId {
        SourceId::new(SourceKind::Secret, ns, name)
    }

    fn cm(ns: &str, name: &str) -> SourceId {
        SourceId::new(SourceKind::ConfigMap, ns, name)
    }

    /// `ReverseIndex::set` with plain ids.
    fn set<const N: usize>(
        ix: &mut ReverseIndex,
        w: &Arc<WorkloadId>,
        exact: [SourceId; N],
        kinds: &[SourceKind],
    ) {
        ix.set(w, exact.map(Arc::new), kinds);
    }

    /// Checks the index's internal invariants: both directions agree and nothing empty is kept.
    fn assert_consistent(ix: &ReverseIndex) {
        for (src, users) in &ix.by_source {
            let users = users.as_slice();
            assert!(!users.is_empty(), "empty user set kept for {src}");
            assert!(users.is_sorted() && users.windows(2).all(|p| p[0] != p[1]));
            if let Users::Many(ws) = &ix.by_source[src] {
                assert!(ws.len() > 1, "one user of {src} kept in a vector");
            }
            for w in users {
                let reg = ix.by_workload.get(&**w).expect("user is registered");
                assert!(
                    reg.exact.iter().any(|s| s == src),
                    "{w} not registered under {src}"
                );
            }
        }
        for (ns, t) in &ix.patterns {
            assert!(!t.is_empty(), "empty pattern entry kept for {ns}");
            for (kind, set) in [
                (SourceKind::Secret, &t.secrets),
                (SourceKind::ConfigMap, &t.config_maps),
            ] {
                for w in set {
                    assert_eq!(&w.namespace, ns);
                    assert!(ix.by_workload[&**w].pattern_kinds.contains(&kind));
                }
            }
        }
        for (w, reg) in &ix.by_workload {
            assert!(!reg.exact.is_empty() || !reg.pattern_kinds.is_empty());
            for s in reg.exact.iter() {
                assert!(ix.by_source[&**s].as_slice().contains(w));
                // Shared, not copied: the forward and backward maps hold the same allocation.
                let (key, _) = ix.by_source.get_key_value(&**s).unwrap();
                assert!(Arc::ptr_eq(key, s));
            }
        }
    }

    #[test]
    fn exact_users_are_found_including_missing_sources() {
        let mut ix = ReverseIndex::default();
        let (a, b) = (deploy("ns", "a"), deploy("ns", "b"));
        set(&mut ix, &a, [secret("ns", "db"), cm("ns", "app")], &[]);
        set(
            &mut ix,
            &b,
            [secret("ns", "db"), secret("ns", "not-created-yet")],
            &[],
        );
        assert_consistent(&ix);

        assert_eq!(ix.affected(&secret("ns", "db")), vec![a.clone(), b.clone()]);
        assert_eq!(ix.affected(&cm("ns", "app")), vec![a.clone()]);
        assert_eq!(
            ix.affected(&secret("ns", "not-created-yet")),
            vec![b.clone()]
        );
        // Same name, other kind or namespace: unrelated.
        assert!(ix.affected(&cm("ns", "db")).is_empty());
        assert!(ix.affected(&secret("other", "db")).is_empty());

        assert_eq!(ix.workload_count(), 2);
        assert_eq!(ix.source_count(), 3);
        assert_eq!(ix.sources_of(&a), vec![secret("ns", "db"), cm("ns", "app")]);
        assert!(ix.sources_of(&deploy("ns", "unknown")).is_empty());
    }

    #[test]
    fn set_replaces_and_drops_stale_sources() {
        let mut ix = ReverseIndex::default();
        let a = deploy("ns", "a");
        set(
            &mut ix,
            &a,
            [secret("ns", "old"), secret("ns", "kept")],
            &[],
        );
        set(
            &mut ix,
            &a,
            [secret("ns", "kept"), secret("ns", "new")],
            &[],
        );
        assert_consistent(&ix);

        assert!(ix.affected(&secret("ns", "old")).is_empty());
        assert_eq!(ix.affected(&secret("ns", "new")), vec![a.clone()]);
        assert_eq!(ix.affected(&secret("ns", "kept")), vec![a.clone()]);
        assert_eq!(ix.source_count(), 2, "the old source must not linger");
        assert_eq!(ix.workload_count(), 1);
        assert_eq!(
            ix.sources_of(&a),
            vec![secret("ns", "kept"), secret("ns", "new")]
        );
    }

    #[test]
    fn duplicates_are_registered_once() {
        let mut ix = ReverseIndex::default();
        let a = deploy("ns", "a");
        set(
            &mut ix,
            &a,
            [secret("ns", "db"), secret("ns", "db")],
            &[SourceKind::Secret, SourceKind::Secret],
        );
        assert_consistent(&ix);
        assert_eq!(ix.sources_of(&a), vec![secret("ns", "db")]);
        assert_eq!(ix.pattern_kinds_of(&a), vec![SourceKind::Secret]);
        // Exact and pattern match for the same source: listed once.
        assert_eq!(ix.affected(&secret("ns", "db")), vec![a]);
    }

    #[test]
    fn remove_leaves_no_stale_entries() {
        let mut ix = ReverseIndex::default();
        let (a, b) = (deploy("ns", "a"), deploy("ns", "b"));
        set(
            &mut ix,
            &a,
            [secret("ns", "shared"), secret("ns", "only-a")],
            &[SourceKind::ConfigMap],
        );
        set(&mut ix, &b, [secret("ns", "shared")], &[]);
        ix.remove(&a);
        assert_consistent(&ix);

        assert!(!ix.contains(&a));
        assert!(ix.affected(&secret("ns", "only-a")).is_empty());
        assert!(ix.affected(&cm("ns", "anything")).is_empty());
        assert_eq!(ix.affected(&secret("ns", "shared")), vec![b.clone()]);
        assert_eq!(ix.source_count(), 1);
        assert!(ix.patterns.is_empty());

        ix.remove(&b);
        ix.remove(&b); // removing twice is harmless
        assert_eq!((ix.workload_count(), ix.source_count()), (0, 0));
        assert!(ix.by_source.is_empty() && ix.patterns.is_empty() && ix.by_workload.is_empty());
    }

    #[test]
    fn setting_nothing_forgets_the_workload() {
        let mut ix = ReverseIndex::default();
        let a = deploy("ns", "a");
        set(&mut ix, &a, [secret("ns", "db")], &[SourceKind::Secret]);
        set(&mut ix, &a, [], &[]);
        assert_consistent(&ix);
        assert!(!ix.contains(&a));
        assert_eq!((ix.workload_count(), ix.source_count()), (0, 0));
        assert!(ix.patterns.is_empty());
    }

    #[test]
    fn pattern_trackers_see_every_source_of_their_kind_in_their_namespace() {
        let mut ix = ReverseIndex::default();
        let p = deploy("ns", "pattern");
        let e = deploy("ns", "exact");
        let other = deploy("other", "pattern");
        set(&mut ix, &p, [], &[SourceKind::Secret]);
        set(&mut ix, &e, [secret("ns", "db")], &[]);
        set(
            &mut ix,
            &other,
            [],
            &[SourceKind::Secret, SourceKind::ConfigMap],
        );
        assert_consistent(&ix);

        assert_eq!(ix.affected(&secret("ns", "anything")), vec![p.clone()]);
        // Sorted by workload id: "exact" < "pattern".
        assert_eq!(ix.affected(&secret("ns", "db")), vec![e.clone(), p.clone()]);
        assert!(ix.affected(&cm("ns", "anything")).is_empty());
        assert_eq!(ix.affected(&cm("other", "x")), vec![other.clone()]);
        assert_eq!(ix.source_count(), 1, "patterns add no exact sources");
        assert_eq!(ix.workload_count(), 3);

        // Switching from pattern to exact tracking removes the pattern registration.
        set(&mut ix, &p, [secret("ns", "tls")], &[]);
        assert_consistent(&ix);
        assert!(ix.affected(&secret("ns", "anything")).is_empty());
        assert_eq!(ix.affected(&secret("ns", "tls")), vec![p.clone()]);
        assert!(ix.pattern_kinds_of(&p).is_empty());
    }

    #[test]
    fn affected_is_sorted_across_kinds_of_workload() {
        let mut ix = ReverseIndex::default();
        let ids = [
            WorkloadId::new(WorkloadKind::Rollout, "ns", "a"),
            WorkloadId::new(WorkloadKind::Deployment, "ns", "z"),
            WorkloadId::new(WorkloadKind::CronJob, "ns", "m"),
            WorkloadId::new(WorkloadKind::Deployment, "ns", "b"),
        ]
        .map(Arc::new);
        for w in &ids {
            set(&mut ix, w, [cm("ns", "shared")], &[]);
        }
        let mut expected = ids.to_vec();
        expected.sort();
        assert_eq!(ix.affected(&cm("ns", "shared")), expected);
    }

    #[test]
    fn many_workloads_share_one_source_entry() {
        let mut ix = ReverseIndex::default();
        for i in 0..1000 {
            set(
                &mut ix,
                &deploy("ns", &format!("w{i}")),
                [cm("ns", "ca"), secret("ns", &format!("s{i}"))],
                &[],
            );
        }
        assert_eq!(ix.source_count(), 1001);
        assert_eq!(ix.affected(&cm("ns", "ca")).len(), 1000);
        assert_consistent(&ix);
        for i in 0..1000 {
            ix.remove(&deploy("ns", &format!("w{i}")));
        }
        assert_eq!((ix.workload_count(), ix.source_count()), (0, 0));
    }
}
