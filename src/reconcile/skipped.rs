//! Why a source change did not roll a workload: the reasons `hashroll_skipped_changes_total` counts.
//!
//! The unit is one (source change, workload it reaches) pair, counted at most once: either it is part of a
//! roll, or it is skipped for one reason. A change "reaches" a workload that tracks the source by name or
//! by a pattern it matches, or that would track it but for an exclude annotation. What a change means for
//! one workload is told apart here, purely, the moment the change is seen ([`reach`]); what becomes of the
//! changes that could roll it is known only at its decision ([`Reached`] keeps them until then).

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crate::model::kind::{SourceId, WorkloadId};
use crate::model::policy::{ReloadPolicy, Tracked};
use crate::model::references::KeySelection;
use crate::model::source::SourceSummary;
use crate::reconcile::decision::Visibility;
use crate::reconcile::scheduler::{Wid, shrink};
use crate::telemetry::metrics::Metrics;

/// Why a change that reached a workload did not roll it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The event changed nothing the workload uses: a label or another annotation, the same data written
    /// again, the object seen again by a re-list.
    Noop,
    /// Keys changed, but none the workload uses.
    KeyNotUsed,
    /// The source is ignored (`hashroll.dev/ignore`, `reloader.stakater.com/ignore`), or lacks
    /// `reloader.stakater.com/match` for a workload that tracks with `reloader.stakater.com/search`.
    Ignored,
    /// An exclude annotation on the workload names the source.
    Excluded,
    /// hashroll does not see the source in full: a Secret of a type in `--exclude-secret-types`, or a
    /// deletion seen through `--resource-label-selector` (the object may only have stopped matching).
    NotWatched,
    /// Folded into a roll with other changes: every change of a burst but the one the roll counts.
    Debounced,
    /// The decision found what the workload uses as recorded: the change was undone within the burst.
    Reverted,
    /// The workload waits for a required Secret, ConfigMap or key that is missing.
    Held,
    /// Recorded without a roll: the workload's own pod template changed too (its pods roll anyway), the
    /// source is newly tracked, or what was recorded was written under another key.
    Recorded,
    /// `--dry-run`: announced with a `WouldReload` Event, not rolled.
    DryRun,
}

impl Skip {
    pub const ALL: [Skip; 10] = [
        Skip::Noop,
        Skip::KeyNotUsed,
        Skip::Ignored,
        Skip::Excluded,
        Skip::NotWatched,
        Skip::Debounced,
        Skip::Reverted,
        Skip::Held,
        Skip::Recorded,
        Skip::DryRun,
    ];

    /// The value of the `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Skip::Noop => "noop",
            Skip::KeyNotUsed => "key_not_used",
            Skip::Ignored => "ignored",
            Skip::Excluded => "excluded",
            Skip::NotWatched => "not_watched",
            Skip::Debounced => "debounced",
            Skip::Reverted => "reverted",
            Skip::Held => "held",
            Skip::Recorded => "recorded",
            Skip::DryRun => "dry_run",
        }
    }
}

/// What one change of a source means for one workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The workload does not track the source (a pattern tracker of its kind the name does not match).
    Untracked,
    /// It cannot roll the workload, for this reason.
    Skipped(Skip),
    /// It may roll the workload: its decision tells.
    Relevant,
}

/// What a change of source `id` from `old` to `new` (None: absent) means for a workload that tracks
/// `tracked` under `policy`; `changed` holds the keys whose digests differ. Follows the rules of
/// [`crate::reconcile::decision::current`]: a source that is not watched is not tracked, an ignored one
/// keeps its recorded digest, and only the keys the workload uses count.
pub fn reach(
    policy: &ReloadPolicy,
    tracked: &Tracked,
    id: &SourceId,
    old: Option<&SourceSummary>,
    new: Option<&SourceSummary>,
    changed: &BTreeSet<String>,
    visible: &Visibility,
) -> Reach {
    let all = KeySelection::All;
    let (keys, require_match) = match tracked.exact.iter().find(|t| t.id == *id) {
        Some(t) => (&t.keys, t.require_stakater_match),
        None if tracked.excluded.contains(id) => return Reach::Skipped(Skip::Excluded),
        None => {
            let by_pattern = tracked
                .patterns
                .iter()
                .any(|(kind, p)| *kind == id.kind && p.matches(&id.name));
            if !by_pattern {
                return Reach::Untracked;
            }
            if policy.is_excluded(id.kind, &id.name) {
                return Reach::Skipped(Skip::Excluded);
            }
            (&all, false)
        }
    };
    let unwatched = |s: Option<&SourceSummary>| match s {
        Some(s) => s.excluded_type.is_some(),
        None => !visible.sees_absence(id.kind),
    };
    let frozen = |s: &SourceSummary| s.ignore || (require_match && !s.stakater_match);
    if unwatched(new) {
        return Reach::Skipped(Skip::NotWatched);
    }
    if new.is_some_and(frozen) {
        return Reach::Skipped(Skip::Ignored);
    }
    match (old, new) {
        (None, None) => Reach::Skipped(Skip::Noop),
        // Appeared or disappeared; or no longer ignored, so what changed meanwhile counts now.
        (None, Some(_)) | (Some(_), None) => Reach::Relevant,
        (Some(old), Some(_)) if frozen(old) || unwatched(Some(old)) => Reach::Relevant,
        _ if changed.iter().any(|k| keys.contains(k)) => Reach::Relevant,
        _ if changed.is_empty() => Reach::Skipped(Skip::Noop),
        _ => Reach::Skipped(Skip::KeyNotUsed),
    }
}

/// The changes that may roll one workload, since its last decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// When the first of them was seen: the roll's reaction time counts from here.
    pub first_seen: Instant,
    pub changes: u32,
}

/// Per workload, the changes that may roll it and wait for its decision. Empty between bursts.
#[derive(Debug, Default)]
pub struct Reached(HashMap<Wid, Pending>);

impl Reached {
    /// Takes in what a change seen at `seen` means for each workload it reaches: counts what cannot roll
    /// them, keeps what may for their decisions, and returns the workloads to decide (not those that
    /// exclude the source: it cannot change their decision).
    pub fn take_in<'a>(
        &'a mut self,
        reaches: Vec<(Wid, Reach)>,
        seen: Instant,
        metrics: &'a Metrics,
    ) -> impl Iterator<Item = Wid> + 'a {
        reaches.into_iter().filter_map(move |(w, r)| {
            match r {
                Reach::Skipped(skip) => metrics.skipped(skip.label(), &w.namespace, 1),
                Reach::Relevant => self.change(&w, seen),
                Reach::Untracked => {}
            }
            (r != Reach::Skipped(Skip::Excluded)).then_some(w)
        })
    }

    /// A change seen at `seen` may roll `id`.
    pub fn change(&mut self, id: &Wid, seen: Instant) {
        self.put_back(
            id.clone(),
            Pending {
                first_seen: seen,
                changes: 1,
            },
        );
    }

    /// The workload is being decided: what reached it, if anything.
    pub fn take(&mut self, id: &WorkloadId) -> Option<Pending> {
        self.0.remove(id)
    }

    /// Its roll waits, or failed and will be retried: the changes wait again (with any seen meanwhile).
    pub fn put_back(&mut self, id: Wid, p: Pending) {
        match self.0.entry(id) {
            Entry::Occupied(mut e) => {
                let e = e.get_mut();
                e.first_seen = e.first_seen.min(p.first_seen);
                e.changes += p.changes;
            }
            Entry::Vacant(e) => {
                e.insert(p);
            }
        }
    }

    /// The workload is gone.
    pub fn forget(&mut self, id: &WorkloadId) {
        self.0.remove(id);
    }

    /// After a burst, give the map's spare capacity back.
    pub fn shrink(&mut self) {
        shrink(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::model::kind::{SourceKind, WorkloadKind};
    use crate::model::references::Reference;
    use crate::reconcile::fixtures;

    const NS: &str = "shop";

    fn policy(annotations: &[(&str, &str)]) -> ReloadPolicy {
        fixtures::policy(annotations)
    }

    fn secret(name: &str, kv: &[(&str, &str)]) -> SourceSummary {
        fixtures::secret(NS, name, kv)
    }

    fn uses(name: &str, key: Option<&str>) -> Reference {
        Reference {
            kind: SourceKind::Secret,
            name: name.into(),
            keys: key.map_or(KeySelection::All, KeySelection::key),
            optional: false,
        }
    }

    fn keys(k: &[&str]) -> BTreeSet<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    /// What a change of Secret `name` from `old` to `new` means for a workload using `refs` under `p`.
    fn of(
        p: &ReloadPolicy,
        refs: &[Reference],
        old: Option<&SourceSummary>,
        new: Option<&SourceSummary>,
        changed: &[&str],
    ) -> Reach {
        let id = old.or(new).map(|s| SourceId::clone(&s.id)).unwrap();
        let tracked = p.tracked(NS, refs);
        reach(
            p,
            &tracked,
            &id,
            old,
            new,
            &keys(changed),
            &Visibility::everything(),
        )
    }

    #[test]
    fn only_the_keys_a_workload_uses_count() {
        let p = policy(&[("hashroll.dev/reload", "true")]);
        let refs = [uses("db", Some("password"))];
        let (a, b) = (
            secret("db", &[("password", "a"), ("user", "u")]),
            secret("db", &[("password", "a"), ("user", "v")]),
        );
        assert_eq!(
            of(&p, &refs, Some(&a), Some(&b), &["user"]),
            Reach::Skipped(Skip::KeyNotUsed)
        );
        let c = secret("db", &[("password", "b"), ("user", "u")]);
        assert_eq!(
            of(&p, &refs, Some(&a), Some(&c), &["password"]),
            Reach::Relevant
        );
        // A whole-object use counts every key; a change of nothing but labels counts none.
        let whole = [uses("db", None)];
        assert_eq!(
            of(&p, &whole, Some(&a), Some(&b), &["user"]),
            Reach::Relevant
        );
        assert_eq!(
            of(&p, &whole, Some(&a), Some(&a), &[]),
            Reach::Skipped(Skip::Noop)
        );
        // Appearing and disappearing always count.
        assert_eq!(of(&p, &refs, None, Some(&a), &[]), Reach::Relevant);
        assert_eq!(of(&p, &refs, Some(&a), None, &[]), Reach::Relevant);
    }

    #[test]
    fn ignored_excluded_and_not_watched_sources() {
        let p = policy(&[
            ("hashroll.dev/reload", "true"),
            ("hashroll.dev/exclude-secrets", "old"),
        ]);
        let refs = [uses("db", None), uses("old", None)];
        let a = secret("db", &[("k", "1")]);
        let mut ignored = secret("db", &[("k", "2")]);
        ignored.ignore = true;
        assert_eq!(
            of(&p, &refs, Some(&a), Some(&ignored), &["k"]),
            Reach::Skipped(Skip::Ignored)
        );
        // No longer ignored: what changed while it was counts now.
        let back = secret("db", &[("k", "2")]);
        assert_eq!(
            of(&p, &refs, Some(&ignored), Some(&back), &[]),
            Reach::Relevant
        );
        let old = secret("old", &[("k", "1")]);
        assert_eq!(
            of(
                &p,
                &refs,
                Some(&old),
                Some(&secret("old", &[("k", "2")])),
                &["k"]
            ),
            Reach::Skipped(Skip::Excluded)
        );
        let mut helm = secret("db", &[]);
        helm.excluded_type = Some(0);
        assert_eq!(
            of(&p, &refs, None, Some(&helm), &[]),
            Reach::Skipped(Skip::NotWatched)
        );
        // Through a label selector, a deletion may only mean the object stopped matching.
        let filtered = Visibility {
            watched: SourceKind::ALL.into_iter().collect(),
            filtered: [SourceKind::Secret].into_iter().collect(),
        };
        let tracked = p.tracked(NS, &refs);
        assert_eq!(
            reach(&p, &tracked, &a.id, Some(&a), None, &keys(&[]), &filtered),
            Reach::Skipped(Skip::NotWatched)
        );
    }

    #[test]
    fn pattern_trackers_are_reached_only_by_names_they_match() {
        let p = policy(&[
            ("secret.reloader.stakater.com/reload", "db-.*"),
            ("secrets.exclude.reloader.stakater.com/reload", "db-old"),
        ]);
        let (main, other, old) = (
            secret("db-main", &[("k", "1")]),
            secret("cache", &[("k", "1")]),
            secret("db-old", &[("k", "1")]),
        );
        assert_eq!(of(&p, &[], None, Some(&main), &[]), Reach::Relevant);
        assert_eq!(of(&p, &[], None, Some(&other), &[]), Reach::Untracked);
        assert_eq!(
            of(&p, &[], None, Some(&old), &[]),
            Reach::Skipped(Skip::Excluded)
        );
    }

    #[test]
    fn pending_changes_merge_and_keep_the_first_time() {
        let id = Arc::new(WorkloadId::new(WorkloadKind::Deployment, NS, "web"));
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_millis(5);
        let mut r = Reached::default();
        r.change(&id, t1);
        r.change(&id, t0);
        assert_eq!(
            r.take(&id),
            Some(Pending {
                first_seen: t0,
                changes: 2
            })
        );
        assert_eq!(r.take(&id), None);
        r.put_back(
            id.clone(),
            Pending {
                first_seen: t1,
                changes: 1,
            },
        );
        r.forget(&id);
        assert_eq!(r.take(&id), None);
    }
}
