//! The decision: given what a workload tracks, the sources as they are now and what hashroll last recorded
//! on the workload, do nothing, record a baseline, hold, or roll. Pure functions, no I/O.
//!
//! Each tracked source gets a short keyed digest of the keys the workload uses; the map of those digests is
//! recorded on the workload. A source whose digest differs from the recorded one is a change and rolls. A
//! source that enters or leaves the tracked set without a recorded digest to compare with (the workload's own
//! spec changed, or a pattern newly matches) is recorded without rolling.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::error::ErrorClass;

use crate::model::hashing::{InstallationKey, Stamp, UsedSource, source_stamp, stamp_of_sources};
use crate::model::kind::{SourceId, SourceKind, source_label};
use crate::model::policy::{ReloadPolicy, Tracked, TrackedSource};
use crate::model::references::KeySelection;
use crate::model::source::SourceSummary;
use crate::model::workload::Recorded;

/// Read access to the reduced sources hashroll holds.
pub trait SourceLookup {
    fn get(&self, id: &SourceId) -> Option<&SourceSummary>;
    /// Every source of `kind` in `namespace` (for pattern rules).
    fn in_namespace(&self, kind: SourceKind, namespace: &str) -> Vec<&SourceSummary>;
}

impl SourceLookup for BTreeMap<Arc<SourceId>, SourceSummary> {
    fn get(&self, id: &SourceId) -> Option<&SourceSummary> {
        BTreeMap::get(self, id)
    }

    fn in_namespace(&self, kind: SourceKind, namespace: &str) -> Vec<&SourceSummary> {
        let start = SourceId::new(kind, namespace, "");
        self.range::<SourceId, _>(start..)
            .take_while(|(id, _)| id.kind == kind && id.namespace == namespace)
            .map(|(_, s)| s)
            .collect()
    }
}

/// A required source, or a required key of it, that is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub source: SourceId,
    /// The key, when the source exists but lacks it.
    pub key: Option<String>,
}

/// The state a workload should have now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// Rolling now would start pods that cannot run, so nothing is recorded or rolled until it is back.
    Hold(Missing),
    /// Per-source digests (`secret/db` → digest) of everything tracked, and the sources named that hashroll
    /// does not watch (so cannot tell missing from present): those are not tracked.
    Ready {
        sources: BTreeMap<String, String>,
        /// The source behind each entry of `sources`.
        ids: Vec<SourceId>,
        unwatched: Vec<SourceId>,
    },
}

/// What to do about one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Hold(Missing),
    /// Record the state on the workload's metadata without rolling.
    Baseline {
        stamp: Stamp,
        sources: BTreeMap<String, String>,
    },
    /// Record the state and change the pod template's annotation, so the workload rolls.
    Roll {
        stamp: Stamp,
        sources: BTreeMap<String, String>,
        /// The sources whose content changed, in label order.
        changed: Vec<SourceId>,
    },
}

/// Which Secrets and ConfigMaps hashroll sees in full, so that one missing from what it holds does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visibility {
    /// Kinds watched at all (`--watch`).
    pub watched: BTreeSet<SourceKind>,
    /// Kinds watched through a label filter (`--resource-label-selector`): an object hashroll does not hold
    /// may exist all the same. (Secrets of excluded types are still known by name.)
    pub filtered: BTreeSet<SourceKind>,
}

impl Visibility {
    /// Every kind watched, unfiltered.
    #[cfg(test)]
    pub fn everything() -> Visibility {
        Visibility {
            watched: SourceKind::ALL.into_iter().collect(),
            filtered: BTreeSet::new(),
        }
    }

    /// Whether an object of `kind` that hashroll does not hold is known not to exist.
    pub fn sees_absence(&self, kind: SourceKind) -> bool {
        self.watched.contains(&kind) && !self.filtered.contains(&kind)
    }
}

/// Computes the per-source digests of everything `tracked` names, or why the workload must hold.
pub fn current(
    policy: &ReloadPolicy,
    tracked: &Tracked,
    namespace: &str,
    sources: &impl SourceLookup,
    visible: &Visibility,
    recorded: &Recorded,
    key: &InstallationKey,
) -> Current {
    let mut out = BTreeMap::new();
    let mut ids = Vec::new();
    let mut unwatched = Vec::new();
    let previous = |label: &str| {
        recorded
            .sources
            .as_ref()
            .and_then(|m| m.get(label))
            .map(String::as_str)
    };

    for t in &tracked.exact {
        let label = source_label(t.id.kind, &t.id.name);
        match source_state(t, sources.get(&t.id), visible, previous(&label), key) {
            SourceState::Unwatched => unwatched.push(t.id.clone()),
            SourceState::Missing(missing) => return Current::Hold(missing),
            SourceState::Frozen(Some(digest)) | SourceState::Tracked { digest, .. } => {
                out.insert(label, digest);
            }
            SourceState::Frozen(None) => {}
        }
    }

    let mut pattern_ids = Vec::new();
    for (kind, pattern) in &tracked.patterns {
        for s in sources.in_namespace(*kind, namespace) {
            if !pattern.matches(&s.id.name)
                || policy.is_excluded(*kind, &s.id.name)
                || s.excluded_type.is_some()
            {
                continue;
            }
            let label = source_label(*kind, &s.id.name);
            if out.contains_key(&label) {
                continue;
            }
            let t = TrackedSource {
                id: SourceId::clone(&s.id),
                keys: KeySelection::All,
                optional: true,
                require_stakater_match: false,
            };
            let stamp = match previous(&label) {
                Some(prev) if s.ignore => prev.to_string(),
                _ => present_stamp(key, &t, s).unwrap_or_default(),
            };
            out.insert(label, stamp);
            pattern_ids.push(t.id);
        }
    }
    // Every exact source present in `out` (absent optional ones too), then the pattern matches.
    ids.extend(
        tracked
            .exact
            .iter()
            .map(|t| &t.id)
            .filter(|id| out.contains_key(&id.label()))
            .cloned(),
    );
    ids.extend(pattern_ids);
    Current::Ready {
        sources: out,
        ids,
        unwatched,
    }
}

/// What one source known by name contributes to a workload's state now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    /// Not watched, filtered out, or of a type whose content is not watched: hashroll cannot know
    /// whether it exists, so does not track it.
    Unwatched,
    /// Required and missing, or missing a required key: rolling would start pods that cannot run.
    Missing(Missing),
    /// Ignored (or lacking the Stakater match a `search` workload needs): its changes never roll, so it
    /// keeps the digest recorded before (None: not tracked at all).
    Frozen(Option<String>),
    /// Tracked: its digest now; `present` is false for an optional source that is absent.
    Tracked { digest: String, present: bool },
}

/// The state of one tracked source: `s` is what hashroll holds of it (None: nothing), `previous` the
/// digest recorded for it on the workload.
pub fn source_state(
    t: &TrackedSource,
    s: Option<&SourceSummary>,
    visible: &Visibility,
    previous: Option<&str>,
    key: &InstallationKey,
) -> SourceState {
    match s {
        // Not watched, or filtered out: hashroll cannot know whether it exists, so does not track it.
        None if !visible.sees_absence(t.id.kind) => SourceState::Unwatched,
        // Known to exist, but of a type whose content is not watched.
        Some(s) if s.excluded_type.is_some() => SourceState::Unwatched,
        None if t.optional => SourceState::Tracked {
            digest: source_stamp(key, &UsedSource::Absent { id: &t.id }),
            present: false,
        },
        None => SourceState::Missing(Missing {
            source: t.id.clone(),
            key: None,
        }),
        Some(s) if s.ignore || (t.require_stakater_match && !s.stakater_match) => {
            // Changes of an ignored source never roll: keep what was recorded (or its state now, the
            // first time), so removing the annotation later does not look like a change either.
            SourceState::Frozen(match previous {
                Some(prev) => Some(prev.to_string()),
                None if !t.require_stakater_match => {
                    Some(present_stamp(key, t, s).unwrap_or_default())
                }
                None => None,
            })
        }
        Some(s) => match present_stamp(key, t, s) {
            Ok(digest) => SourceState::Tracked {
                digest,
                present: true,
            },
            Err(missing_key) => SourceState::Missing(Missing {
                source: t.id.clone(),
                key: Some(missing_key),
            }),
        },
    }
}

/// The digest of the keys `t` uses of `s`; Err(key) when a required key is missing.
fn present_stamp(
    key: &InstallationKey,
    t: &TrackedSource,
    s: &SourceSummary,
) -> Result<String, String> {
    let keys: Vec<(&str, Option<&crate::model::hashing::KeyDigest>)> = match &t.keys {
        KeySelection::All => s.keys.iter().map(|(k, d)| (k, Some(d))).collect(),
        KeySelection::Keys(selected) => {
            let mut keys = Vec::with_capacity(selected.len());
            for k in selected.iter() {
                let d = s.keys.get(k);
                if d.is_none() && !t.optional {
                    return Err(k.to_string());
                }
                keys.push((k, d));
            }
            keys
        }
    };
    Ok(source_stamp(key, &UsedSource::Present { id: &s.id, keys }))
}

/// Decides what to do, comparing the state now with what the workload records.
///
/// `template_changed`: the workload's own pod template changed since hashroll last looked, so it is rolling
/// (or rolled) anyway and its new pods see the current config: record, don't roll again.
pub fn decide(
    recorded: &Recorded,
    current: Current,
    template_changed: bool,
    key: &InstallationKey,
) -> Action {
    let (sources, ids) = match current {
        Current::Hold(missing) => return Action::Hold(missing),
        Current::Ready { sources, ids, .. } => (sources, ids),
    };
    let stamp = stamp_of_sources(key, &sources);
    if recorded.stamp.as_ref() == Some(&stamp) && recorded.sources.as_ref() == Some(&sources) {
        return Action::Nothing;
    }
    let recorded = match (&recorded.stamp, &recorded.sources) {
        // First sight, or written with another key or algorithm version: re-baseline, never roll.
        (Some(s), Some(map)) if s.is_current(key) => map,
        _ => return Action::Baseline { stamp, sources },
    };
    let mut changed: Vec<SourceId> = ids
        .into_iter()
        .filter(|id| {
            let label = id.label();
            recorded
                .get(&label)
                .is_some_and(|old| sources.get(&label) != Some(old))
        })
        .collect();
    changed.sort_by_cached_key(SourceId::label);
    if changed.is_empty() || template_changed {
        Action::Baseline { stamp, sources }
    } else {
        Action::Roll {
            stamp,
            sources,
            changed,
        }
    }
}

/// How long a roll must wait, if at all: a Deployment with a pause period (Reloader's
/// `deployment.reloader.stakater.com/pause-period`) rolls at most once per period, so the changes made
/// within one go out together, in one roll carrying the latest content, when it ends. Counted from the
/// last roll recorded on the workload, so a restart or failover neither loses nor extends it; never
/// longer than one period from `now`, whatever the recorded time says (a clock ahead, a hand edit).
pub fn pause_remaining(
    period: Option<Duration>,
    last_roll: Option<Timestamp>,
    now: Timestamp,
) -> Option<Duration> {
    let period = period?;
    let since = now.duration_since(last_roll?);
    let since = Duration::try_from(since).unwrap_or(Duration::ZERO);
    period.checked_sub(since).filter(|left| !left.is_zero())
}

/// Consecutive failed writes to one workload after which its roll is said to fail for good (about 15 s
/// of retries with the scheduler's backoff).
pub const FAILURES_FOR_GOOD: u32 = 5;

/// Whether a roll that keeps failing has failed for good, and should be reported where users look:
/// at once when the API refuses it (forbidden, or a request it rejects as such), else after
/// [`FAILURES_FOR_GOOD`] failures in a row. hashroll keeps retrying either way.
pub fn fails_for_good(class: ErrorClass, consecutive: u32) -> bool {
    matches!(class, ErrorClass::Forbidden | ErrorClass::Fatal) || consecutive >= FAILURES_FOR_GOOD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::references::Reference;
    use crate::model::workload::Stored;
    use crate::reconcile::fixtures;

    const NS: &str = "team-a";

    fn key() -> InstallationKey {
        InstallationKey::from_bytes(&[7u8; 32]).unwrap()
    }

    fn secret(name: &str, kv: &[(&str, &str)]) -> SourceSummary {
        fixtures::secret(NS, name, kv)
    }

    fn store(items: Vec<SourceSummary>) -> BTreeMap<Arc<SourceId>, SourceSummary> {
        items.into_iter().map(|s| (s.id.clone(), s)).collect()
    }

    fn policy(annotations: &[(&str, &str)]) -> ReloadPolicy {
        fixtures::policy(annotations)
    }

    fn key_ref(name: &str, k: &str, optional: bool) -> Reference {
        Reference {
            kind: SourceKind::Secret,
            name: name.into(),
            keys: KeySelection::key(k),
            optional,
        }
    }

    fn all_ref(name: &str, optional: bool) -> Reference {
        Reference {
            kind: SourceKind::Secret,
            name: name.into(),
            keys: KeySelection::All,
            optional,
        }
    }

    /// Runs one decision and returns the action plus the state it would record.
    fn step(
        p: &ReloadPolicy,
        refs: &[Reference],
        sources: &BTreeMap<Arc<SourceId>, SourceSummary>,
        stored: &Stored,
    ) -> (Action, Stored) {
        let tracked = p.tracked(NS, refs);
        let cur = current(
            p,
            &tracked,
            NS,
            sources,
            &Visibility::everything(),
            &stored.read(),
            &key(),
        );
        let action = decide(&stored.read(), cur, false, &key());
        let next = match &action {
            Action::Baseline { stamp, sources } | Action::Roll { stamp, sources, .. } => Stored {
                stamp: Some(stamp.clone()),
                sources: Some(sources.clone().into()),
                rolled_at: None,
                rollout_failed: None,
            },
            _ => stored.clone(),
        };
        (action, next)
    }

    fn is_roll(a: &Action) -> bool {
        matches!(a, Action::Roll { .. })
    }

    #[test]
    fn first_sight_records_without_rolling_then_nothing() {
        let p = policy(&[("hashroll.dev/reload", "true")]);
        let refs = [all_ref("db", false)];
        let s = store(vec![secret("db", &[("password", "hunter2")])]);
        let (a, stored) = step(&p, &refs, &s, &Stored::default());
        assert!(matches!(a, Action::Baseline { .. }), "{a:?}");
        let (a, _) = step(&p, &refs, &s, &stored);
        assert_eq!(a, Action::Nothing);
    }

    #[test]
    fn content_change_rolls_once_and_names_the_source() {
        let p = policy(&[("hashroll.dev/reload", "true")]);
        let refs = [all_ref("db", false)];
        let (_, stored) = step(
            &p,
            &refs,
            &store(vec![secret("db", &[("p", "1")])]),
            &Stored::default(),
        );
        let changed = store(vec![secret("db", &[("p", "2")])]);
        let (a, stored) = step(&p, &refs, &changed, &stored);
        match &a {
            Action::Roll { changed, .. } => {
                assert_eq!(changed, &vec![SourceId::new(SourceKind::Secret, NS, "db")])
            }
            other => panic!("expected a roll, got {other:?}"),
        }
        assert_eq!(step(&p, &refs, &changed, &stored).0, Action::Nothing);
    }

    #[test]
    fn key_level_precision() {
        let p = policy(&[("hashroll.dev/reload", "true")]);
        let refs = [key_ref("db", "password", false)];
        let before = store(vec![secret("db", &[("password", "a"), ("username", "u")])]);
        let (_, stored) = step(&p, &refs, &before, &Stored::default());
        let user_changed = store(vec![secret("db", &[("password", "a"), ("username", "v")])]);
        assert_eq!(step(&p, &refs, &user_changed, &stored).0, Action::Nothing);
        let pw_changed = store(vec![secret("db", &[("password", "b"), ("username", "u")])]);
        assert!(is_roll(&step(&p, &refs, &pw_changed, &stored).0));
    }

    #[test]
    fn required_source_missing_holds_and_recreation_with_same_content_rolls_nothing() {
        let p = policy(&[("hashroll.dev/reload", "true")]);
        let refs = [all_ref("db", false)];
        let original = store(vec![secret("db", &[("p", "1")])]);
        let (_, stored) = step(&p, &refs, &original, &Stored::default());
        let (a, held) = step(&p, &refs, &store(vec![]), &stored);
        assert!(matches!(a, Action::Hold(_)), "{a:?}");
        assert_eq!(held, stored, "holding records nothing");
        assert_eq!(step(&p, &refs, &original, &held).0, Action::Nothing);
        let different = store(vec![secret("db", &[("p", "2")])]);
        assert!(is_roll(&step(&p, &refs, &different, &held).0));
    }

    #[test]
    fn required_key_missing_holds() {
        let p = policy(&[("hashroll.dev/reload", "true")]);
        let refs = [key_ref("db", "password", false)];
        let s = store(vec![secret("db", &[("username", "u")])]);
        match step(&p, &refs, &s, &Stored::default()).0 {
            Action::Hold(m) => assert_eq!(m.key.as_deref(), Some("password")),
            other => panic!("expected hold, got {other:?}"),
        }
    }

    #[test]
    fn optional_source_appearing_and_disappearing_rolls() {
        let p = policy(&[("hashroll.dev/reload", "true")]);
        let refs = [all_ref("extra", true)];
        let (a, stored) = step(&p, &refs, &store(vec![]), &Stored::default());
        assert!(matches!(a, Action::Baseline { .. }));
        let present = store(vec![secret("extra", &[("k", "v")])]);
        let (a, stored) = step(&p, &refs, &present, &stored);
        assert!(is_roll(&a), "appearing: {a:?}");
        let (a, _) = step(&p, &refs, &store(vec![]), &stored);
        assert!(is_roll(&a), "disappearing: {a:?}");
    }

    #[test]
    fn ignored_source_never_rolls_even_when_the_annotation_goes_away() {
        let p = policy(&[("hashroll.dev/reload", "true")]);
        let refs = [all_ref("db", false)];
        let (_, stored) = step(
            &p,
            &refs,
            &store(vec![secret("db", &[("p", "1")])]),
            &Stored::default(),
        );
        let mut ignored = secret("db", &[("p", "2")]);
        ignored.ignore = true;
        let (a, stored) = step(&p, &refs, &store(vec![ignored]), &stored);
        assert_eq!(a, Action::Nothing);
        // Un-ignoring later with the content from before the ignore: nothing to roll.
        assert_eq!(
            step(
                &p,
                &refs,
                &store(vec![secret("db", &[("p", "1")])]),
                &stored
            )
            .0,
            Action::Nothing
        );
    }

    #[test]
    fn a_newly_referenced_source_is_recorded_not_rolled() {
        let p = policy(&[("hashroll.dev/reload", "true")]);
        let s = store(vec![secret("a", &[("k", "1")]), secret("b", &[("k", "1")])]);
        let (_, stored) = step(&p, &[all_ref("a", false)], &s, &Stored::default());
        let (a, _) = step(&p, &[all_ref("a", false), all_ref("b", false)], &s, &stored);
        assert!(matches!(a, Action::Baseline { .. }), "{a:?}");
    }

    #[test]
    fn a_stamp_from_another_key_is_rebaselined_not_rolled() {
        let p = policy(&[("hashroll.dev/reload", "true")]);
        let refs = [all_ref("db", false)];
        let s = store(vec![secret("db", &[("p", "1")])]);
        let other = InstallationKey::from_bytes(&[9u8; 32]).unwrap();
        let tracked = p.tracked(NS, &refs);
        let cur = current(
            &p,
            &tracked,
            NS,
            &s,
            &Visibility::everything(),
            &Recorded::default(),
            &other,
        );
        let Current::Ready { sources, .. } = cur.clone() else {
            panic!()
        };
        let old = Stored {
            rollout_failed: None,
            stamp: Some(stamp_of_sources(&other, &sources)),
            sources: Some(sources.into()),
            rolled_at: None,
        };
        let changed = store(vec![secret("db", &[("p", "2")])]);
        let cur = current(
            &p,
            &tracked,
            NS,
            &changed,
            &Visibility::everything(),
            &old.read(),
            &key(),
        );
        assert!(matches!(
            decide(&old.read(), cur, false, &key()),
            Action::Baseline { .. }
        ));
    }

    #[test]
    fn own_template_change_records_instead_of_rolling() {
        let p = policy(&[("hashroll.dev/reload", "true")]);
        let refs = [all_ref("db", false)];
        let (_, stored) = step(
            &p,
            &refs,
            &store(vec![secret("db", &[("p", "1")])]),
            &Stored::default(),
        );
        let changed = store(vec![secret("db", &[("p", "2")])]);
        let tracked = p.tracked(NS, &refs);
        let cur = current(
            &p,
            &tracked,
            NS,
            &changed,
            &Visibility::everything(),
            &stored.read(),
            &key(),
        );
        assert!(matches!(
            decide(&stored.read(), cur, true, &key()),
            Action::Baseline { .. }
        ));
    }

    #[test]
    fn patterns_track_matching_sources_but_not_excluded_ones() {
        let p = policy(&[
            ("secret.reloader.stakater.com/reload", "db-.*"),
            ("secrets.exclude.reloader.stakater.com/reload", "db-old"),
        ]);
        let s = store(vec![
            secret("db-main", &[("k", "1")]),
            secret("db-old", &[("k", "1")]),
            secret("other", &[("k", "1")]),
        ]);
        let (_, stored) = step(&p, &[], &s, &Stored::default());
        let labels: Vec<_> = stored
            .sources
            .as_ref()
            .unwrap()
            .to_map()
            .into_keys()
            .collect();
        assert_eq!(labels, vec!["secret/db-main".to_string()]);
        let s2 = store(vec![
            secret("db-main", &[("k", "1")]),
            secret("db-old", &[("k", "2")]),
            secret("other", &[("k", "2")]),
        ]);
        assert_eq!(step(&p, &[], &s2, &stored).0, Action::Nothing);
        let s3 = store(vec![secret("db-main", &[("k", "2")])]);
        assert!(is_roll(&step(&p, &[], &s3, &stored).0));
    }

    #[test]
    fn in_namespace_scans_only_that_kind_and_namespace() {
        let mut s = store(vec![secret("a", &[]), secret("b", &[])]);
        let other_ns = SourceSummary {
            id: Arc::new(SourceId::new(SourceKind::Secret, "team-b", "c")),
            ..secret("c", &[])
        };
        s.insert(other_ns.id.clone(), other_ns);
        let names: Vec<_> = s
            .in_namespace(SourceKind::Secret, NS)
            .iter()
            .map(|x| x.id.name.to_string())
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert!(s.in_namespace(SourceKind::ConfigMap, NS).is_empty());
    }

    #[test]
    fn a_pause_period_holds_a_roll_until_one_period_after_the_last() {
        let t = |secs: i64| Timestamp::from_second(1_700_000_000 + secs).unwrap();
        let period = Some(Duration::from_secs(300));
        // No period, or never rolled: roll now.
        assert_eq!(pause_remaining(None, Some(t(0)), t(10)), None);
        assert_eq!(pause_remaining(period, None, t(10)), None);
        assert_eq!(
            pause_remaining(period, Some(t(0)), t(10)),
            Some(Duration::from_secs(290))
        );
        assert_eq!(pause_remaining(period, Some(t(0)), t(300)), None);
        assert_eq!(pause_remaining(period, Some(t(0)), t(301)), None);
        // A last roll in the future (a clock ahead) holds one period at most.
        assert_eq!(
            pause_remaining(period, Some(t(1_000)), t(0)),
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn a_refused_write_fails_for_good_at_once_a_failing_server_after_five_tries() {
        assert!(fails_for_good(ErrorClass::Forbidden, 1));
        assert!(fails_for_good(ErrorClass::Fatal, 1));
        for class in [ErrorClass::Transient, ErrorClass::Conflict] {
            assert!(!fails_for_good(class, FAILURES_FOR_GOOD - 1));
            assert!(fails_for_good(class, FAILURES_FOR_GOOD));
        }
    }
}
