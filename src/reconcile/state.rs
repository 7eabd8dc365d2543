//! The state machine: everything hashroll knows (sources as digests, workloads as summaries, the reverse
//! index, which watches have listed) and the rules that turn inputs into effects. No I/O and no clock: the
//! loop feeds it [`Input`]s and due workloads, and carries out the [`Effect`]s it returns.
//!
//! Nothing here is edge-triggered: every decision compares what a workload records with what its sources
//! are now, so a lost input is made good by the next list.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::alerts::{Alert, ChangedSource, Changes, Outcome};
use crate::error::ErrorClass;

use crate::k8s::patch::Write;
use crate::model::hashing::{InstallationKey, Stamp};
use crate::model::kind::{Namespace, SourceId, SourceKind, WorkloadId, WorkloadKind, source_label};
use crate::model::policy::Tracked;
use crate::model::source::SourceSummary;
use crate::model::workload::{RecordedSources, Stored, Tracking, Uid, WorkloadSummary};
use crate::reconcile::decision::{self, Action, Current, Missing, Visibility};
use crate::reconcile::gate::{Failure, FailureReason};
use crate::reconcile::index::ReverseIndex;
use crate::reconcile::input::{Input, Listed, WatchScope, Watched};
use crate::reconcile::scheduler::{Wid, shrink};
use crate::reconcile::scopes::{NamespaceFilter, Readiness, Scopes};
use crate::reconcile::skipped::{Pending, Reach, Reached, Skip, reach};
use crate::reconcile::wording::{
    change_halted_event, describe, invalid_annotation_event, reload_failed_event, roll_event,
    rollout_failed_event, vault_unavailable_event,
};
use crate::reconcile::writer::{EventRequest, WriteRequest};
use crate::telemetry::metrics::Metrics;

/// What the state machine is told once, at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dry_run: bool,
    pub namespaces: NamespaceFilter,
    /// Which sources hashroll sees in full.
    pub visibility: Visibility,
    /// Every watch that was started; readiness and per-namespace gating are computed from these.
    pub scopes: Vec<WatchScope>,
}

/// What the loop must do for the state machine.
#[derive(Debug)]
pub enum Effect {
    /// A source the workload uses changed: decide after the debounce window.
    Debounce(Wid),
    /// The workload itself changed, or a list covering it completed: decide now.
    DecideNow(Wid),
    /// A roll waits for its pause period to end: decide again after this long.
    DecideAfter(Wid, Duration),
    /// The workload is gone: drop whatever is scheduled for it.
    Forget(Wid),
    /// Record the workload's state, or record and roll it.
    Write(WriteRequest),
    /// Publish an Event of its own.
    Publish(EventRequest),
    /// Send an alert (a roll, or a roll that failed for good); dropped when alerts are off.
    Alert(Alert),
}

struct Entry {
    summary: WorkloadSummary,
    /// The workload's own pod template changed since the last decision (it rolls by itself).
    template_changed: bool,
}

/// Everything hashroll knows, and the rules.
pub struct State {
    settings: Settings,
    key: InstallationKey,
    metrics: Metrics,

    sources: BTreeMap<Arc<SourceId>, SourceSummary>,
    /// Boxed: the table's power-of-two capacity leaves up to half its slots empty, and an empty slot
    /// costs a pointer rather than a whole entry (~220 bytes).
    workloads: HashMap<Wid, Box<Entry>>,
    index: ReverseIndex,

    /// Which watches have listed, and which namespaces hashroll acts in.
    scopes: Scopes,

    /// Key names changed by each source's latest change, so a roll's Event can name them.
    changed_keys: HashMap<SourceId, BTreeSet<String>>,
    /// The last warning given per workload (malformed annotation), the last hold, and the unwatched sources
    /// last reported, to say each once.
    warned: HashMap<Wid, String>,
    held: HashMap<Wid, SourceId>,
    unwatched: HashMap<Wid, Vec<SourceId>>,
    /// Workloads whose roll waits for its pause period (to log the wait once).
    paused: HashSet<Wid>,
    /// Consecutive failed writes per workload, until one succeeds.
    failures: HashMap<Wid, FailureStreak>,
    /// The source changes that may roll each workload, until its decision.
    reached: Reached,
    /// How many workloads carry a malformed annotation (a gauge; counted, not recounted per change).
    invalid: usize,
    /// `--dry-run`: what would have been recorded on each workload.
    dry_records: HashMap<Wid, Stored>,
    /// Polled sources (Vault paths) read at least once: until then a workload using one is not decided
    /// (absent would look missing, and a change made while hashroll was down would be lost).
    polled: HashSet<SourceId>,
    /// The set of polled sources was published once (see [`State::take_polled_targets`]).
    targets_published: bool,
}

/// Failed writes to one workload since its last successful one.
#[derive(Debug, Default)]
struct FailureStreak {
    count: u32,
    /// `ReloadFailed` was published for this streak.
    reported: bool,
}

impl State {
    pub fn new(settings: Settings, key: InstallationKey, metrics: Metrics) -> State {
        State {
            key,
            metrics,
            sources: BTreeMap::new(),
            workloads: HashMap::new(),
            index: ReverseIndex::default(),
            scopes: Scopes::new(settings.scopes.clone(), settings.namespaces.clone()),
            changed_keys: HashMap::new(),
            warned: HashMap::new(),
            held: HashMap::new(),
            unwatched: HashMap::new(),
            paused: HashSet::new(),
            failures: HashMap::new(),
            reached: Reached::default(),
            invalid: 0,
            dry_records: HashMap::new(),
            polled: HashSet::new(),
            targets_published: false,
            settings,
        }
    }

    /// Takes in what a watch reported, received at `seen`; what must follow is pushed onto `out`.
    pub fn apply(&mut self, input: Input, seen: Instant, out: &mut Vec<Effect>) {
        match input {
            Input::SourceApplied(s) => self.source_applied(s, seen, out),
            Input::SourceDeleted(id) => self.source_deleted(&id, seen, out),
            Input::WorkloadApplied(w) => self.workload_applied(*w, out),
            Input::WorkloadDeleted(id) => self.workload_deleted(&id, out),
            Input::Namespace(name, present) => {
                if self.scopes.namespace(&name, present) {
                    self.decide_all_in(|ns| ns == name, out);
                }
            }
            Input::Synced(scope, listed) => {
                self.forget_unlisted(&scope, &listed, seen, out);
                self.scopes.synced(&scope);
                // After any (re-)list, re-check everything it covers: level-triggered.
                match scope.namespace.clone() {
                    Some(ns) => self.decide_all_in(|n| n == ns, out),
                    None => self.decide_all_in(|_| true, out),
                }
            }
            Input::WatchFailed(scope, error) => self.scopes.failed(scope, error),
            Input::Polled { covered, present } => self.polled_round(covered, &present, seen, out),
            // Timed by the loop; never a source.
            Input::Canary(_) => {}
        }
    }

    /// Which polled sources (Vault paths) workloads use, when that changed; None before every watch has
    /// listed (the set is not whole yet) and when nothing changed since the last call.
    pub fn take_polled_targets(&mut self) -> Option<Vec<SourceId>> {
        if self.readiness() != Readiness::Ready {
            return None;
        }
        let first = !std::mem::replace(&mut self.targets_published, true);
        match self.index.take_polled() {
            Some(ids) => Some(ids),
            None if first => Some(Vec::new()),
            None => None,
        }
    }

    /// A poll round read `covered`: what it did not find present is gone (or unreadable); the first read
    /// of a source lets its users be decided.
    fn polled_round(
        &mut self,
        covered: Vec<SourceId>,
        present: &Listed,
        seen: Instant,
        out: &mut Vec<Effect>,
    ) {
        for id in covered {
            if !present.contains(&id.namespace, &id.name) && self.sources.contains_key(&id) {
                self.source_deleted(&id, seen, out);
            }
            if !self.polled.contains(&id) {
                out.extend(self.index.affected(&id).into_iter().map(Effect::DecideNow));
                self.polled.insert(id);
            }
        }
    }

    /// Every watch has listed once (then, and only then, hashroll is ready); or which are failing.
    pub fn readiness(&self) -> Readiness {
        self.scopes.readiness()
    }

    /// Sources and workloads held (for the log line that says hashroll is ready).
    pub fn counts(&self) -> (usize, usize) {
        (self.sources.len(), self.workloads.len())
    }

    /// Decides about one due workload: nothing, or a write or Event to carry out. `now` is the wall
    /// clock, read by the loop (pause periods are counted from the roll time recorded on the workload).
    pub fn decide(&mut self, id: &Wid, now: Timestamp) -> Option<Effect> {
        if !self.scopes.may_decide(&id.namespace) {
            return None;
        }
        let entry = self.workloads.get_mut(id)?;
        // The changes that may roll it are settled by this decision (or wait again, below).
        let reached = self.reached.take(id);
        let (policy, references) = match &entry.summary.tracking {
            Tracking::Off => {
                self.warned.remove(id);
                self.held.remove(id);
                self.nothing_to_write(id);
                return None;
            }
            Tracking::Invalid(e) => {
                let message = e.to_string();
                if self.warned.get(id) == Some(&message) {
                    return None;
                }
                tracing::warn!(workload = %id, annotation = %e.annotation, error = %message,
                    "skipping workload: malformed annotation");
                let event = invalid_annotation_event(id.kind, &message);
                let uid = entry.summary.uid.as_ref().map(Uid::to_string);
                self.warned.insert(id.clone(), message);
                return Some(Effect::Publish(EventRequest {
                    id: id.clone(),
                    uid,
                    event,
                    about_source: None,
                }));
            }
            Tracking::On { policy, references } => (policy, references),
        };
        self.warned.remove(id);
        let tracked = policy.tracked(&id.namespace, references);
        if self
            .settings
            .visibility
            .watched
            .contains(&SourceKind::Vault)
            && (tracked.exact.iter()).any(|t| t.id.kind.is_polled() && !self.polled.contains(&t.id))
        {
            // Decided once the poller has read it (`polled_round`).
            if let Some(r) = reached {
                self.reached.put_back(id.clone(), r);
            }
            return None;
        }
        // A dry run decides from what it would have written (the object carries nothing of it).
        let stored = self.dry_records.get(id).unwrap_or(&entry.summary.stored);
        let recorded = stored.read();
        let current = decision::current(
            policy,
            &tracked,
            &id.namespace,
            &self.sources,
            &self.settings.visibility,
            &recorded,
            &self.key,
        );
        if let Current::Ready { unwatched, .. } = &current {
            note_unwatched(&mut self.unwatched, id, unwatched);
        }
        let template_changed = std::mem::take(&mut entry.template_changed);
        let restart_at = id.kind == WorkloadKind::Rollout && policy.rollout_restart;
        let (pause, last_roll) = (policy.pause_period, stored.rolled_at);
        let skipped = |reason: Skip, n: u32| {
            self.metrics
                .skipped(reason.label(), &id.namespace, u64::from(n))
        };
        let changes = reached.map_or(0, |r| r.changes);
        let effect = match decision::decide(&recorded, current, template_changed, &self.key) {
            Action::Nothing => {
                skipped(Skip::Reverted, changes);
                self.held.remove(id);
                self.paused.remove(id);
                self.nothing_to_write(id);
                None
            }
            Action::Hold(Missing { source, key }) => {
                skipped(Skip::Held, changes);
                if self.held.get(id) != Some(&source) {
                    match &key {
                        Some(k) => tracing::info!(workload = %id, source = %source, key = %k,
                            "not rolling: a required key is missing; waiting for it"),
                        None => tracing::info!(workload = %id, source = %source,
                            "not rolling: a required source is missing; waiting for it"),
                    }
                    let vault = (source.kind == SourceKind::Vault)
                        .then(|| vault_unavailable_event(id.kind, &source.name));
                    self.held.insert(id.clone(), source);
                    if let Some(event) = vault {
                        self.metrics.held_workloads.set(self.held.len() as i64);
                        let uid = self
                            .workloads
                            .get(id)
                            .and_then(|e| e.summary.uid.as_ref().map(Uid::to_string));
                        return Some(Effect::Publish(EventRequest {
                            id: id.clone(),
                            uid,
                            event,
                            about_source: None,
                        }));
                    }
                }
                None
            }
            Action::Baseline { stamp, sources } => {
                skipped(Skip::Recorded, changes);
                self.held.remove(id);
                self.paused.remove(id);
                self.write(id, Write::Record, stamp, sources, None, now)
            }
            Action::Roll {
                stamp,
                sources,
                changed,
            } => {
                self.held.remove(id);
                if let Some(wait) = decision::pause_remaining(pause, last_roll, now) {
                    if self.paused.insert(id.clone()) {
                        tracing::info!(workload = %id, wait = ?wait,
                            "holding the roll until one pause period after the last one (deployment.reloader.stakater.com/pause-period)");
                    }
                    self.metrics.held_workloads.set(self.held.len() as i64);
                    if let Some(r) = reached {
                        self.reached.put_back(id.clone(), r);
                    }
                    return Some(Effect::DecideAfter(id.clone(), wait));
                }
                self.paused.remove(id);
                // One roll for every change of the burst; in a dry run, none.
                if self.settings.dry_run {
                    skipped(Skip::DryRun, changes);
                } else {
                    skipped(Skip::Debounced, changes.saturating_sub(1));
                }
                let what = describe(
                    &changed,
                    &tracked,
                    |id| self.sources.contains_key(id),
                    &self.changed_keys,
                );
                let write = if restart_at {
                    Write::RestartAt
                } else {
                    Write::RollTemplate
                };
                self.write(id, write, stamp, sources, Some(what), now)
                    .map(|e| match e {
                        Effect::Write(mut w) => {
                            w.changed_at = reached.map(|r| r.first_seen);
                            Effect::Write(w)
                        }
                        other => other,
                    })
            }
        };
        self.metrics.held_workloads.set(self.held.len() as i64);
        effect
    }

    /// A write came back: the response is the newest state, so the next decision starts from it.
    pub fn written(&mut self, summary: WorkloadSummary, out: &mut Vec<Effect>) {
        self.workload_applied(summary, out);
    }

    /// A write succeeded: its workload's failure streak, if any, is over. A roll (`rolled_for` names what
    /// changed) is alerted.
    pub fn write_succeeded(&mut self, id: &Wid, rolled_for: Option<Changes>) -> Option<Effect> {
        if let Some(streak) = self.failures.remove(id) {
            if streak.reported {
                tracing::info!(workload = %id, failures = streak.count, "patch succeeded again");
            }
            self.refresh_failing();
        }
        rolled_for.map(|changes| {
            Effect::Alert(Alert {
                workload: (**id).clone(),
                changes,
                outcome: Outcome::Rolled,
            })
        })
    }

    /// Nothing is left to write (the sources went back to what is recorded, or the workload opted out):
    /// a failure streak ends with it.
    fn nothing_to_write(&mut self, id: &WorkloadId) {
        if self.failures.remove(id).is_some() {
            self.refresh_failing();
        }
    }

    /// A write failed with an error of `class` (the API's `answer`) and will be retried. When it was a roll
    /// (`rolled_for` names what changed) and it has now failed for good, say so once per streak of
    /// failures, with a Warning Event on the workload and an alert.
    pub fn write_failed(
        &mut self,
        id: &Wid,
        class: ErrorClass,
        answer: &str,
        rolled_for: Option<&Changes>,
        changed_at: Option<Instant>,
    ) -> Vec<Effect> {
        // The retry carries the changes this roll was for: its reaction counts from the first of them.
        if let Some(first_seen) = changed_at {
            let pending = Pending {
                first_seen,
                changes: 1,
            };
            self.reached.put_back(id.clone(), pending);
        }
        let streak = self.failures.entry(id.clone()).or_default();
        streak.count += 1;
        let Some(what) = rolled_for else {
            return Vec::new();
        };
        if streak.reported || !decision::fails_for_good(class, streak.count) {
            return Vec::new();
        }
        streak.reported = true;
        let failures = streak.count;
        self.refresh_failing();
        tracing::warn!(workload = %id, failures, answer, changed = %what,
            "roll failed for good; still retrying");
        vec![
            Effect::Publish(EventRequest {
                id: id.clone(),
                uid: self
                    .workloads
                    .get(id)
                    .and_then(|e| e.summary.uid.as_ref().map(Uid::to_string)),
                event: reload_failed_event(id.kind, what, answer),
                about_source: None,
            }),
            Effect::Alert(Alert {
                workload: (**id).clone(),
                changes: what.clone(),
                outcome: Outcome::Failed {
                    answer: answer.to_string(),
                },
            }),
        ]
    }

    /// A roll was decided but the gate (`--max-rollouts-per-minute`, `--max-concurrent-rollouts`) holds it
    /// (`queued`: it was not waiting already): the change it carries waits for the workload's next
    /// decision, which counts its reaction from when it was first seen.
    pub fn roll_held(&mut self, w: &WriteRequest, queued: bool) {
        if let Some(first_seen) = w.changed_at {
            let pending = Pending {
                first_seen,
                changes: 1,
            };
            self.reached.put_back(w.id.clone(), pending);
        }
        if queued {
            tracing::info!(workload = %w.id,
                "roll waits for its turn (--max-rollouts-per-minute, --max-concurrent-rollouts)");
        }
    }

    /// A rollout failed under `--max-concurrent-rollouts`: mark the roll on the workload (which halts its
    /// change, and keeps the halt across restarts and failovers) and say so with a Warning Event.
    pub fn rollout_failed(&mut self, f: &Failure, out: &mut Vec<Effect>) {
        self.metrics.rollout_failure(f.reason.label());
        let held: Vec<String> = f.held.iter().map(|w| w.to_string()).collect();
        let why = match f.reason {
            FailureReason::Failed => "failed (its controller gave up: progress deadline exceeded)",
            FailureReason::Timeout => "was not done within --rollout-timeout",
        };
        let changed: Vec<&str> = f.changed.keys().map(String::as_str).collect();
        let changed = changed.join(", ");
        tracing::error!(workload = %f.id, reason = f.reason.label(), changed = %changed,
            held = %held.join(", "), "rollout failed: halting the rest of its change's waves");
        // And on each source whose change is held back, where its users' owners look.
        let mut sources = Vec::new();
        for label in f.changed.keys() {
            let Some((kind, name)) = label.split_once('/') else {
                continue;
            };
            let kinds = SourceKind::ALL.into_iter().chain([SourceKind::Vault]);
            let Some(kind) = kinds.into_iter().find(|k| k.short() == kind) else {
                continue;
            };
            sources.push(ChangedSource {
                kind,
                name: name.to_string(),
                keys: Vec::new(),
                deleted: false,
            });
            if kind.is_polled() {
                continue; // No object to write an Event about.
            }
            let event = change_halted_event(&f.id, why, &held);
            out.push(Effect::Publish(EventRequest {
                id: f.id.clone(),
                uid: None,
                event,
                about_source: Some(SourceId::new(kind, &f.id.namespace, name)),
            }));
        }
        out.push(Effect::Alert(Alert {
            workload: (*f.id).clone(),
            changes: Changes(sources),
            outcome: Outcome::Halted {
                why: why.to_string(),
                held: held.len(),
            },
        }));
        let Some(entry) = self.workloads.get(&f.id) else {
            return;
        };
        let Some(stamp) = entry.summary.stored.stamp.clone() else {
            return;
        };
        let event = rollout_failed_event(f.id.kind, why, &changed, &held);
        out.push(Effect::Write(WriteRequest {
            id: f.id.clone(),
            write: Write::MarkFailed,
            stamp,
            sources: RecordedSources::from(f.changed.clone()),
            event: Some(event),
            uid: entry.summary.uid.as_ref().map(Uid::to_string),
            rolled_for: None,
            changed_at: None,
            changed: BTreeMap::new(),
        }));
    }

    /// After a burst, give the maps' spare capacity back.
    pub fn shrink(&mut self) {
        // Rebuilt from its own sorted entries: inserts in arrival order leave a B-tree's nodes about
        // two-thirds full, a build from sorted entries fills them (0.5 MiB less at M's 17,000 sources).
        self.sources = std::mem::take(&mut self.sources).into_iter().collect();
        shrink(&mut self.warned);
        shrink(&mut self.held);
        shrink(&mut self.unwatched);
        shrink(&mut self.changed_keys);
        shrink(&mut self.paused);
        shrink(&mut self.failures);
        self.reached.shrink();
        Namespace::forget_unused();
    }

    fn source_deleted(&mut self, id: &SourceId, seen: Instant, out: &mut Vec<Effect>) {
        let Some(old) = self.sources.get(id) else {
            return;
        };
        let reaches = self.reaches(id, Some(old), None, &BTreeSet::new());
        self.sources.remove(id);
        self.changed_keys.remove(id);
        self.metrics
            .source_changes
            .with_label_values(&[id.kind.as_str()])
            .inc();
        self.metrics.sources.set(self.sources.len() as i64);
        out.extend(
            self.reached
                .take_in(reaches, seen, &self.metrics)
                .map(Effect::Debounce),
        );
    }

    /// What a change of source `id` means for each workload it reaches; every one of them is
    /// [`Reach::Untracked`] until the watches covering its namespace have listed (before that, what
    /// arrives is the initial state, not a change).
    fn reaches(
        &self,
        id: &SourceId,
        old: Option<&SourceSummary>,
        new: Option<&SourceSummary>,
        changed: &BTreeSet<String>,
    ) -> Vec<(Wid, Reach)> {
        let affected = self.index.affected(id);
        if !self.scopes.may_decide(&id.namespace) {
            return affected
                .into_iter()
                .map(|w| (w, Reach::Untracked))
                .collect();
        }
        affected
            .into_iter()
            .map(|w| {
                let r = match self.workloads.get(&w).map(|e| &e.summary.tracking) {
                    Some(Tracking::On { policy, references }) => {
                        let tracked = policy.tracked(&w.namespace, references);
                        let visible = &self.settings.visibility;
                        reach(policy, &tracked, id, old, new, changed, visible)
                    }
                    _ => Reach::Untracked,
                };
                (w, r)
            })
            .collect()
    }

    fn workload_deleted(&mut self, id: &WorkloadId, out: &mut Vec<Effect>) {
        self.reached.forget(id);
        if let Some((id, old)) = self.workloads.remove_entry(id) {
            self.invalid -= usize::from(matches!(old.summary.tracking, Tracking::Invalid(_)));
            out.push(Effect::Forget(id));
        }
        self.index.remove(id);
        self.warned.remove(id);
        self.held.remove(id);
        self.unwatched.remove(id);
        self.paused.remove(id);
        self.dry_records.remove(id);
        self.nothing_to_write(id);
        self.refresh_gauges();
    }

    /// A list is complete: what is known in its scope but was not listed was deleted meanwhile (while the
    /// watch was down, or hashroll was); forget it like a deletion seen on the watch.
    fn forget_unlisted(
        &mut self,
        scope: &WatchScope,
        listed: &Listed,
        seen: Instant,
        out: &mut Vec<Effect>,
    ) {
        let in_scope = |ns: &str| scope.namespace.as_deref().is_none_or(|n| n == ns);
        let unlisted = |ns: &str, name: &str| !listed.contains(ns, name);
        match scope.resource {
            Watched::Source(_) | Watched::ExcludedSecrets(_) => {
                // Each watch forgets only what it reported itself.
                let (kind, excluded) = match scope.resource {
                    Watched::ExcludedSecrets(i) => (SourceKind::Secret, Some(i)),
                    Watched::Source(kind) => (kind, None),
                    _ => unreachable!("matched above"),
                };
                let gone: Vec<Arc<SourceId>> = self
                    .sources
                    .iter()
                    .filter(|(id, s)| {
                        id.kind == kind && s.excluded_type == excluded && in_scope(&id.namespace)
                    })
                    .filter(|(id, _)| unlisted(&id.namespace, &id.name))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in gone {
                    self.source_deleted(&id, seen, out);
                }
            }
            Watched::Workload(kind) => {
                let gone: Vec<Wid> = self
                    .workloads
                    .keys()
                    .filter(|id| id.kind == kind && in_scope(&id.namespace))
                    .filter(|id| unlisted(&id.namespace, &id.name))
                    .cloned()
                    .collect();
                for id in gone {
                    self.workload_deleted(&id, out);
                }
            }
            Watched::Namespaces => self.scopes.forget_unlisted_namespaces(listed),
        }
    }

    fn source_applied(&mut self, mut s: SourceSummary, seen: Instant, out: &mut Vec<Effect>) {
        // Keep the id allocation the map (or else the index) already holds: one per source id.
        if let Some(known) = self
            .sources
            .get_key_value(&*s.id)
            .map(|(k, _)| k)
            .or_else(|| self.index.source_id(&s.id))
        {
            s.id = Arc::clone(known);
        }
        let id = Arc::clone(&s.id);
        let old = self.sources.get(&*id);
        if old == Some(&s) {
            // Nothing hashroll holds changed: a no-op for every workload that tracks it.
            for (w, r) in self.reaches(&id, old, Some(&s), &BTreeSet::new()) {
                if r != Reach::Untracked {
                    self.metrics.skipped(Skip::Noop.label(), &w.namespace, 1);
                }
            }
            return;
        }
        // Key names are remembered only for real content changes (to name them in Events): a source seen
        // for the first time costs nothing here.
        let changed: BTreeSet<String> = match old {
            Some(old) if old.keys != s.keys => old
                .keys
                .changed_keys(&s.keys)
                .into_iter()
                .map(str::to_string)
                .collect(),
            _ => BTreeSet::new(),
        };
        let reaches = self.reaches(&id, old, Some(&s), &changed);
        if !changed.is_empty() {
            self.changed_keys.insert(SourceId::clone(&id), changed);
            self.metrics
                .source_changes
                .with_label_values(&[id.kind.as_str()])
                .inc();
        }
        self.sources.insert(Arc::clone(&id), s);
        self.metrics.sources.set(self.sources.len() as i64);
        out.extend(
            self.reached
                .take_in(reaches, seen, &self.metrics)
                .map(Effect::Debounce),
        );
    }

    fn workload_applied(&mut self, mut w: WorkloadSummary, out: &mut Vec<Effect>) {
        // One allocation per workload id, shared with the index and the queues.
        if let Some((known, _)) = self.workloads.get_key_value(&w.id) {
            w.id = Arc::clone(known);
        }
        let id = Arc::clone(&w.id);
        // Most changes in substance are hashroll's own writes (a new stamp): what the workload tracks is
        // the same, and so is its place in the index (`retrack` false).
        let (template_changed, retrack) = match self.workloads.get_mut(&id) {
            // A watch event can arrive after the response to hashroll's own patch: never go back.
            Some(old) if w.is_older_than(&old.summary) => return,
            Some(old) if !old.summary.differs_in_substance(&w) => {
                old.summary.resource_version = w.resource_version;
                return;
            }
            Some(old) => (
                old.template_changed || old.summary.template_digest != w.template_digest,
                old.summary.tracking != w.tracking,
            ),
            None => (false, true),
        };
        let invalid = |w: &WorkloadSummary| matches!(w.tracking, Tracking::Invalid(_));
        if retrack {
            match &w.tracking {
                Tracking::On { policy, references } => {
                    let tracked = policy.tracked(&id.namespace, references);
                    self.index_workload(&id, &tracked);
                }
                _ => self.index.remove(&id),
            }
        }
        self.invalid += usize::from(invalid(&w));
        let entry = Entry {
            summary: w,
            template_changed,
        };
        // The entry's allocation is reused: one per workload for its life, not one per change.
        match self.workloads.get_mut(&id) {
            Some(old) => {
                self.invalid -= usize::from(invalid(&old.summary));
                **old = entry;
            }
            None => {
                self.workloads.insert(Arc::clone(&id), Box::new(entry));
            }
        }
        self.refresh_gauges();
        out.push(Effect::DecideNow(id));
    }

    /// Indexes the workload under what it tracks, and what it excludes (so those changes are counted).
    fn index_workload(&mut self, id: &Wid, tracked: &Tracked) {
        let kinds: BTreeSet<SourceKind> = tracked.patterns.iter().map(|(k, _)| *k).collect();
        let kinds: Vec<SourceKind> = kinds.into_iter().collect();
        // The source map's id allocations, where the sources are known, so the index holds no copies.
        let shared = |s: &SourceId| match self.sources.get_key_value(s) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::new(s.clone()),
        };
        let exact = tracked.exact.iter().map(|t| shared(&t.id));
        let exact: Vec<Arc<SourceId>> = exact.chain(tracked.excluded.iter().map(shared)).collect();
        self.index.set(id, exact, &kinds);
    }

    fn refresh_failing(&self) {
        let failing = self.failures.values().filter(|s| s.reported).count();
        self.metrics.failing_workloads.set(failing as i64);
    }

    fn refresh_gauges(&self) {
        self.metrics.workloads.set(self.workloads.len() as i64);
        self.metrics.invalid_workloads.set(self.invalid as i64);
    }

    /// Every workload is to be decided (a takeover by a warm standby).
    pub fn decide_all(&self, out: &mut Vec<Effect>) {
        self.decide_all_in(|_| true, out);
    }

    /// Every workload held, as last seen.
    pub fn summaries(&self) -> impl Iterator<Item = &WorkloadSummary> {
        self.workloads.values().map(|e| &e.summary)
    }

    fn decide_all_in(&self, matches: impl Fn(&str) -> bool, out: &mut Vec<Effect>) {
        out.extend(
            self.workloads
                .keys()
                .filter(|id| matches(&id.namespace))
                .cloned()
                .map(Effect::DecideNow),
        );
    }

    fn write(
        &mut self,
        id: &Wid,
        write: Write,
        stamp: Stamp,
        sources: BTreeMap<String, String>,
        rolled_for: Option<Changes>,
        now: Timestamp,
    ) -> Option<Effect> {
        let dry_run = self.settings.dry_run;
        let entry = self.workloads.get_mut(id)?;
        let uid = entry.summary.uid.as_ref().map(Uid::to_string);
        let event = rolled_for
            .as_ref()
            .map(|what| roll_event(id.kind, what, dry_run));
        match &rolled_for {
            Some(what) => {
                tracing::info!(workload = %id, changed = %what, dry_run, "rolling workload")
            }
            None => tracing::debug!(workload = %id, dry_run, "recording state without rolling"),
        }
        let changed = match (&rolled_for, entry.summary.stored.sources.as_ref()) {
            (None, _) => BTreeMap::new(),
            (Some(_), None) => sources.clone(),
            (Some(_), Some(recorded)) => {
                let recorded = recorded.to_map();
                sources
                    .iter()
                    .filter(|(k, d)| recorded.get(*k) != Some(*d))
                    .map(|(k, d)| (k.clone(), d.clone()))
                    .collect()
            }
        };
        let sources = RecordedSources::from(sources);
        if dry_run {
            // Remember what would have been written, so the same change is reported once; apart from the
            // workload's summary, which every watch event of the workload replaces.
            let would = self
                .dry_records
                .entry(id.clone())
                .or_insert_with(|| entry.summary.stored.clone());
            would.stamp = Some(stamp);
            would.sources = Some(sources);
            if rolled_for.is_some() {
                would.rolled_at = Some(now);
            }
            return event.map(|event| {
                Effect::Publish(EventRequest {
                    id: id.clone(),
                    uid,
                    event,
                    about_source: None,
                })
            });
        }
        Some(Effect::Write(WriteRequest {
            id: id.clone(),
            write,
            stamp,
            sources,
            event,
            uid,
            rolled_for,
            changed_at: None,
            changed,
        }))
    }
}

/// Says once per workload (and again when the set changes) which sources it names that are not watched.
fn note_unwatched(noted: &mut HashMap<Wid, Vec<SourceId>>, id: &Wid, unwatched: &[SourceId]) {
    if unwatched.is_empty() {
        noted.remove(id);
        return;
    }
    if noted.get(id).map(Vec::as_slice) != Some(unwatched) {
        let names: Vec<String> = unwatched
            .iter()
            .map(|s| source_label(s.kind, &s.name))
            .collect();
        tracing::info!(workload = %id, sources = %names.join(", "),
            "not tracking sources hashroll does not watch (--watch, --resource-label-selector, --exclude-secret-types)");
        noted.insert(id.clone(), unwatched.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::hashing::{Section, key_digest};
    use crate::model::policy::PolicySettings;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    const NS: &str = "shop";

    fn scope(resource: Watched) -> WatchScope {
        WatchScope {
            resource,
            namespace: None,
        }
    }

    fn all_scopes(watched: &[SourceKind]) -> Vec<WatchScope> {
        let mut s: Vec<WatchScope> = watched.iter().map(|k| scope(Watched::Source(*k))).collect();
        s.push(scope(Watched::Workload(WorkloadKind::Deployment)));
        s
    }

    fn state_with(watched: &[SourceKind], dry_run: bool) -> State {
        let settings = Settings {
            dry_run,
            namespaces: NamespaceFilter::default(),
            visibility: Visibility {
                watched: watched.iter().copied().collect(),
                filtered: BTreeSet::new(),
            },
            scopes: all_scopes(watched),
        };
        let key = InstallationKey::from_bytes(&[9u8; 32]).unwrap();
        State::new(settings, key, Metrics::new())
    }

    fn state() -> State {
        state_with(&[SourceKind::Secret, SourceKind::ConfigMap], false)
    }

    fn source(kind: SourceKind, name: &str, kv: &[(&str, &str)]) -> Input {
        let meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        };
        let keys = kv
            .iter()
            .map(|(k, v)| (k.to_string(), key_digest(Section::Data, k, v.as_bytes())))
            .collect();
        Input::SourceApplied(SourceSummary::new(kind, &meta, keys, true).unwrap())
    }

    /// An opted-in Deployment whose container takes all of Secret `db` and ConfigMap `app` as env.
    fn deployment(
        name: &str,
        annotations: &[(&str, &str)],
        stored: &[(&str, &str)],
    ) -> WorkloadSummary {
        let mut a: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        a.extend(stored.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            uid: Some(format!("uid-{name}")),
            annotations: Some(a),
            ..ObjectMeta::default()
        };
        let template: PodTemplateSpec = serde_json::from_value(json!({"spec": {"containers": [{
            "name": "app", "image": "app:1",
            "envFrom": [{"secretRef": {"name": "db"}}, {"configMapRef": {"name": "app"}}]}]}}))
        .unwrap();
        WorkloadSummary::reduce(
            WorkloadKind::Deployment,
            &meta,
            Some(&template),
            PolicySettings {
                auto_reload_all: false,
                stakater_compat: true,
                vault_key_level: false,
            },
        )
        .unwrap()
    }

    fn opted_in(name: &str) -> Input {
        Input::WorkloadApplied(Box::new(deployment(
            name,
            &[("hashroll.dev/reload", "true")],
            &[],
        )))
    }

    fn synced(resource: Watched, names: &[&str]) -> Input {
        let mut listed = Listed::default();
        for n in names {
            listed.insert(NS.into(), n.to_string());
        }
        Input::Synced(scope(resource), listed)
    }

    fn apply(s: &mut State, inputs: Vec<Input>) -> Vec<Effect> {
        let mut out = Vec::new();
        for i in inputs {
            s.apply(i, Instant::now(), &mut out);
        }
        out
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn wid(name: &str) -> Wid {
        Arc::new(WorkloadId::new(WorkloadKind::Deployment, NS, name))
    }

    /// Syncs every watch with `db` and `app` present and Deployment `web` opted in.
    fn synced_state(s: &mut State) {
        apply(
            s,
            vec![
                source(SourceKind::Secret, "db", &[("password", "a")]),
                source(SourceKind::ConfigMap, "app", &[("level", "info")]),
                opted_in("web"),
                synced(Watched::Source(SourceKind::Secret), &["db"]),
                synced(Watched::Source(SourceKind::ConfigMap), &["app"]),
                synced(Watched::Workload(WorkloadKind::Deployment), &["web"]),
            ],
        );
    }

    /// Applies a write as the API server would, and returns the stored workload.
    fn record(s: &mut State, w: &WriteRequest) {
        let stored = [
            ("hashroll.dev/hash", w.stamp.as_str()),
            ("hashroll.dev/sources", w.sources.as_json()),
        ];
        let mut out = Vec::new();
        s.written(
            deployment(&w.id.name, &[("hashroll.dev/reload", "true")], &stored),
            &mut out,
        );
    }

    /// The non-zero samples of `hashroll_skipped_changes_total`, by reason.
    fn skipped(s: &State) -> BTreeMap<String, u64> {
        s.metrics
            .render()
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("hashroll_skipped_changes_total{reason=\"")?;
                let (reason, n) = rest.split_once("\"} ")?;
                Some((reason.to_string(), n.parse().ok()?))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
    }

    #[test]
    fn each_change_reaching_a_workload_rolls_it_or_is_counted_skipped_once() {
        let mut s = state();
        let excludes = [
            ("hashroll.dev/reload", "true"),
            ("hashroll.dev/exclude-secrets", "db"),
        ];
        synced_state(&mut s);
        let ex = Input::WorkloadApplied(Box::new(deployment("ex", &excludes, &[])));
        apply(&mut s, vec![ex]);
        for (name, annotations) in [("web", &excludes[..1]), ("ex", &excludes[..])] {
            let Some(Effect::Write(w)) = s.decide(&wid(name), now()) else {
                panic!("first sight records {name}");
            };
            let stored = [
                ("hashroll.dev/hash", w.stamp.as_str()),
                ("hashroll.dev/sources", w.sources.as_json()),
            ];
            s.written(deployment(name, annotations, &stored), &mut Vec::new());
        }
        assert!(skipped(&s).is_empty(), "the initial state is no change");

        // The same data written again (a no-op for both); then a change while the Secret is ignored, and
        // the annotation removed again with the content as recorded.
        let db = |v: &str| source(SourceKind::Secret, "db", &[("password", v)]);
        let Input::SourceApplied(mut ignored) = db("b") else {
            unreachable!()
        };
        ignored.ignore = true;
        apply(&mut s, vec![db("a"), Input::SourceApplied(ignored)]);
        assert!(s.decide(&wid("web"), now()).is_none());
        apply(&mut s, vec![db("a")]);
        assert!(s.decide(&wid("web"), now()).is_none(), "as recorded");
        assert_eq!(
            skipped(&s),
            counts(&[
                ("noop", 2),
                ("ignored", 1),
                ("reverted", 1),
                ("excluded", 2)
            ])
        );

        // Two changes in one burst: one roll, carrying when the first was seen; the excluding workload
        // is not even decided.
        let before = Instant::now();
        let out = apply(&mut s, vec![db("c"), db("d")]);
        assert!(
            out.iter()
                .all(|e| matches!(e, Effect::Debounce(id) if &*id.name == "web")),
            "{out:?}"
        );
        let Some(Effect::Write(w)) = s.decide(&wid("web"), now()) else {
            panic!("rolls");
        };
        assert_eq!(w.write, Write::RollTemplate);
        assert!(w.changed_at.is_some_and(|t| t >= before));
        record(&mut s, &w);
        // A required Secret deleted: held.
        apply(
            &mut s,
            vec![Input::SourceDeleted(SourceId::new(
                SourceKind::Secret,
                NS,
                "db",
            ))],
        );
        assert!(s.decide(&wid("web"), now()).is_none());
        assert_eq!(
            skipped(&s),
            counts(&[
                ("noop", 2),
                ("ignored", 1),
                ("reverted", 1),
                ("excluded", 5),
                ("debounced", 1),
                ("held", 1),
            ])
        );
    }

    #[test]
    fn a_failed_roll_is_retried_with_the_time_of_its_first_change() {
        let mut s = state();
        synced_state(&mut s);
        let Some(Effect::Write(w)) = s.decide(&wid("web"), now()) else {
            panic!("first sight records");
        };
        record(&mut s, &w);
        apply(
            &mut s,
            vec![source(SourceKind::Secret, "db", &[("password", "b")])],
        );
        let Some(Effect::Write(w)) = s.decide(&wid("web"), now()) else {
            panic!("rolls");
        };
        let first = w.changed_at.expect("a roll for a change seen");
        s.write_failed(
            &w.id,
            ErrorClass::Transient,
            "500 InternalError",
            w.rolled_for.as_ref(),
            w.changed_at,
        );
        let Some(Effect::Write(retry)) = s.decide(&wid("web"), now()) else {
            panic!("retried");
        };
        assert_eq!(retry.changed_at, Some(first));
        assert!(skipped(&s).is_empty(), "{:?}", skipped(&s));
    }

    #[test]
    fn ready_only_once_every_watch_has_listed_and_a_failing_watch_is_named() {
        let mut s = state();
        assert_eq!(s.readiness(), Readiness::Syncing);
        apply(
            &mut s,
            vec![Input::WatchFailed(
                scope(Watched::Source(SourceKind::Secret)),
                "403 forbidden".into(),
            )],
        );
        assert_eq!(
            s.readiness(),
            Readiness::Failing(vec!["secrets in all namespaces: 403 forbidden".into()])
        );
        synced_state(&mut s);
        assert_eq!(s.readiness(), Readiness::Ready);
        // A watch that fails after its first list restarts and re-lists; hashroll stays ready.
        apply(
            &mut s,
            vec![Input::WatchFailed(
                scope(Watched::Source(SourceKind::Secret)),
                "connection reset".into(),
            )],
        );
        assert_eq!(s.readiness(), Readiness::Ready);
    }

    #[test]
    fn nothing_is_decided_before_the_sources_have_listed_then_first_sight_records() {
        let mut s = state();
        let out = apply(&mut s, vec![opted_in("web")]);
        assert!(matches!(&out[..], [Effect::DecideNow(id)] if &*id.name == "web"));
        assert!(
            s.decide(&wid("web"), now()).is_none(),
            "sources not listed yet"
        );
        synced_state(&mut s);
        match s.decide(&wid("web"), now()) {
            Some(Effect::Write(w)) => {
                assert_eq!(w.write, Write::Record);
                assert!(w.event.is_none());
            }
            other => panic!("expected a record, got {other:?}"),
        }
    }

    #[test]
    fn a_source_change_debounces_its_users_and_rolls_naming_the_changed_key() {
        let mut s = state();
        synced_state(&mut s);
        let Some(Effect::Write(w)) = s.decide(&wid("web"), now()) else {
            panic!("first sight records");
        };
        record(&mut s, &w);
        assert!(
            s.decide(&wid("web"), now()).is_none(),
            "recorded: nothing to do"
        );
        let out = apply(
            &mut s,
            vec![source(
                SourceKind::Secret,
                "db",
                &[("password", "b"), ("user", "u")],
            )],
        );
        assert!(matches!(&out[..], [Effect::Debounce(id)] if &*id.name == "web"));
        match s.decide(&wid("web"), now()) {
            Some(Effect::Write(w)) => {
                assert_eq!(w.write, Write::RollTemplate);
                let ev = w.event.expect("a roll has its Event");
                assert_eq!(ev.reason, "Reloaded");
                assert_eq!(
                    ev.note,
                    "Rolled Deployment because Secret db (keys: password, user) changed"
                );
            }
            other => panic!("expected a roll, got {other:?}"),
        }
    }

    #[test]
    fn a_relist_forgets_what_it_no_longer_holds() {
        let mut s = state();
        synced_state(&mut s);
        let out = apply(
            &mut s,
            vec![synced(Watched::Workload(WorkloadKind::Deployment), &[])],
        );
        assert!(
            out.iter()
                .any(|e| matches!(e, Effect::Forget(id) if &*id.name == "web"))
        );
        assert!(s.decide(&wid("web"), now()).is_none());
        assert_eq!(s.counts(), (2, 0));
        // A Secret deleted while the watch was down is forgotten too, and its users re-decided.
        let out = apply(
            &mut s,
            vec![
                opted_in("web"),
                synced(Watched::Source(SourceKind::Secret), &[]),
            ],
        );
        assert!(
            out.iter()
                .any(|e| matches!(e, Effect::Debounce(id) if &*id.name == "web"))
        );
        assert_eq!(s.counts(), (1, 1));
    }

    #[test]
    fn a_required_source_that_is_missing_holds_but_one_not_watched_is_not_tracked() {
        // Everything watched: `db` missing holds the workload.
        let mut s = state();
        apply(
            &mut s,
            vec![
                source(SourceKind::ConfigMap, "app", &[("level", "info")]),
                opted_in("web"),
                synced(Watched::Source(SourceKind::Secret), &[]),
                synced(Watched::Source(SourceKind::ConfigMap), &["app"]),
            ],
        );
        assert!(s.decide(&wid("web"), now()).is_none(), "held");
        assert_eq!(s.metrics.held_workloads.get(), 1);

        // Secrets not watched: `db` is simply not tracked, and the ConfigMap alone is recorded.
        let mut s = state_with(&[SourceKind::ConfigMap], false);
        apply(
            &mut s,
            vec![
                source(SourceKind::ConfigMap, "app", &[("level", "info")]),
                opted_in("web"),
                synced(Watched::Source(SourceKind::ConfigMap), &["app"]),
            ],
        );
        let Some(Effect::Write(w)) = s.decide(&wid("web"), now()) else {
            panic!("recorded, not held");
        };
        assert_eq!(
            w.sources.to_map().keys().collect::<Vec<_>>(),
            ["configmap/app"]
        );
        assert_eq!(s.metrics.held_workloads.get(), 0);
    }

    #[test]
    fn a_secret_of_an_excluded_type_is_known_to_exist_but_not_tracked() {
        let base = state();
        let mut settings = base.settings.clone();
        settings.scopes.push(scope(Watched::ExcludedSecrets(0)));
        let mut s = State::new(settings, base.key.clone(), Metrics::new());
        let meta = ObjectMeta {
            name: Some("db".into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        };
        apply(
            &mut s,
            vec![
                source(SourceKind::ConfigMap, "app", &[("level", "info")]),
                Input::SourceApplied(SourceSummary::excluded(&meta, 0).unwrap()),
                opted_in("web"),
                synced(Watched::Source(SourceKind::Secret), &[]),
                synced(Watched::Source(SourceKind::ConfigMap), &["app"]),
            ],
        );
        assert!(
            s.decide(&wid("web"), now()).is_none(),
            "not decided before the excluded Secrets have listed"
        );
        apply(&mut s, vec![synced(Watched::ExcludedSecrets(0), &["db"])]);
        let Some(Effect::Write(w)) = s.decide(&wid("web"), now()) else {
            panic!("recorded, not held");
        };
        assert_eq!(
            w.sources.to_map().keys().collect::<Vec<_>>(),
            ["configmap/app"]
        );
        // The Secret watch's re-list does not forget what the excluded-type watch reported, nor the reverse.
        apply(
            &mut s,
            vec![synced(Watched::Source(SourceKind::Secret), &[])],
        );
        assert_eq!(s.counts().0, 2);
        apply(&mut s, vec![synced(Watched::ExcludedSecrets(0), &[])]);
        assert_eq!(s.counts().0, 1);
    }

    #[test]
    fn a_malformed_annotation_is_reported_once() {
        let mut s = state();
        synced_state(&mut s);
        let bad = deployment("bad", &[("hashroll.dev/reload", "yes please")], &[]);
        apply(&mut s, vec![Input::WorkloadApplied(Box::new(bad))]);
        match s.decide(&wid("bad"), now()) {
            Some(Effect::Publish(e)) => {
                assert_eq!(e.event.reason, "InvalidAnnotation");
                assert!(
                    e.event.note.contains("hashroll.dev/reload"),
                    "{}",
                    e.event.note
                );
            }
            other => panic!("expected a Warning Event, got {other:?}"),
        }
        assert!(s.decide(&wid("bad"), now()).is_none(), "said once");
        assert_eq!(s.metrics.invalid_workloads.get(), 1);
    }

    #[test]
    fn a_change_to_a_secret_with_thousands_of_keys_reads_each_key_a_bounded_number_of_times() {
        use crate::model::source::ENTRIES_READ;
        const KEYS: usize = 5_000;
        let mut s = state();
        synced_state(&mut s);
        let wide = |v: &str| {
            let kv: Vec<(String, String)> = (0..KEYS)
                .map(|i| (format!("key-{i:05}"), format!("{v}-{i}")))
                .collect();
            let kv: Vec<(&str, &str)> = kv.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            source(SourceKind::Secret, "db", &kv)
        };
        apply(&mut s, vec![wide("a")]);
        let changed = wide("b");
        ENTRIES_READ.with(|n| n.set(0));
        apply(&mut s, vec![changed]);
        let read = ENTRIES_READ.with(|n| n.get());
        // One walk over the old and the new keys; a lookup per key would read about KEYS² / 2 entries.
        assert!(
            read <= 2 * (KEYS + 1),
            "{read} entries read for a change of {KEYS} keys"
        );
        assert_eq!(
            s.changed_keys[&SourceId::new(SourceKind::Secret, NS, "db")].len(),
            KEYS
        );
    }

    #[test]
    fn a_dry_run_announces_each_roll_once_and_writes_nothing() {
        let mut s = state_with(&[SourceKind::Secret, SourceKind::ConfigMap], true);
        synced_state(&mut s);
        assert!(
            s.decide(&wid("web"), now()).is_none(),
            "first sight: nothing to announce"
        );
        apply(
            &mut s,
            vec![source(SourceKind::Secret, "db", &[("password", "b")])],
        );
        match s.decide(&wid("web"), now()) {
            Some(Effect::Publish(e)) => assert_eq!(e.event.reason, "WouldReload"),
            other => panic!("expected WouldReload, got {other:?}"),
        }
        assert!(s.decide(&wid("web"), now()).is_none(), "announced once");
    }

    #[test]
    fn a_dry_run_keeps_what_it_would_have_recorded_across_the_workloads_own_updates() {
        let mut s = state_with(&[SourceKind::Secret, SourceKind::ConfigMap], true);
        synced_state(&mut s);
        assert!(s.decide(&wid("web"), now()).is_none());
        // The Secret changes, then the workload's controller updates it (a label, its status) before the
        // debounced decision: the object still carries no record of hashroll's.
        let mut relabelled = deployment("web", &[("hashroll.dev/reload", "true")], &[]);
        relabelled.resource_version = Some(99);
        relabelled.template_digest[0] ^= 1;
        apply(
            &mut s,
            vec![
                source(SourceKind::Secret, "db", &[("password", "b")]),
                Input::WorkloadApplied(Box::new(relabelled)),
            ],
        );
        // Its own template changed too, so it rolls by itself: recorded, not announced.
        assert!(s.decide(&wid("web"), now()).is_none());
        // A later change is announced: the would-be record survived the update.
        apply(
            &mut s,
            vec![source(SourceKind::Secret, "db", &[("password", "c")])],
        );
        match s.decide(&wid("web"), now()) {
            Some(Effect::Publish(e)) => assert_eq!(e.event.reason, "WouldReload"),
            other => panic!("expected WouldReload, got {other:?}"),
        }
    }

    #[test]
    fn a_dry_run_announces_a_change_seen_before_an_update_of_the_workload_that_changes_nothing() {
        let mut s = state_with(&[SourceKind::Secret, SourceKind::ConfigMap], true);
        synced_state(&mut s);
        assert!(s.decide(&wid("web"), now()).is_none());
        // A label or status update: a new version of the object, same template, no record on it.
        let mut updated = deployment("web", &[("hashroll.dev/reload", "true")], &[]);
        updated.resource_version = Some(99);
        apply(
            &mut s,
            vec![
                source(SourceKind::Secret, "db", &[("password", "b")]),
                Input::WorkloadApplied(Box::new(updated)),
            ],
        );
        match s.decide(&wid("web"), now()) {
            Some(Effect::Publish(e)) => assert_eq!(e.event.reason, "WouldReload"),
            other => panic!("the change was absorbed: {other:?}"),
        }
    }

    #[test]
    fn a_pause_period_holds_later_rolls_until_a_period_after_the_last_one() {
        let paused = [
            ("reloader.stakater.com/auto", "true"),
            ("deployment.reloader.stakater.com/pause-period", "3s"),
        ];
        let mut s = state();
        synced_state(&mut s);
        apply(
            &mut s,
            vec![Input::WorkloadApplied(Box::new(deployment(
                "p",
                &paused,
                &[],
            )))],
        );
        let at = |secs: i64| Timestamp::from_second(1_700_000_000 + secs).unwrap();
        // As the API server stores a write hashroll made at `t`.
        let store = |s: &mut State, w: &WriteRequest, t: Timestamp| {
            let t = t.to_string();
            let mut stored = vec![
                ("hashroll.dev/hash", w.stamp.as_str()),
                ("hashroll.dev/sources", w.sources.as_json()),
            ];
            if w.write != Write::Record {
                stored.push(("hashroll.dev/rolled-at", t.as_str()));
            }
            s.written(deployment("p", &paused, &stored), &mut Vec::new());
        };
        let Some(Effect::Write(w)) = s.decide(&wid("p"), at(0)) else {
            panic!("first sight records");
        };
        store(&mut s, &w, at(0));
        // Never rolled: the first change rolls at once.
        apply(
            &mut s,
            vec![source(SourceKind::Secret, "db", &[("password", "b")])],
        );
        let Some(Effect::Write(w)) = s.decide(&wid("p"), at(1)) else {
            panic!("rolls at once");
        };
        assert_eq!(w.write, Write::RollTemplate);
        store(&mut s, &w, at(1));
        // The next changes within the period wait for its end, then roll once with the latest content.
        apply(
            &mut s,
            vec![source(SourceKind::Secret, "db", &[("password", "c")])],
        );
        match s.decide(&wid("p"), at(2)) {
            Some(Effect::DecideAfter(id, wait)) => {
                assert_eq!((&*id.name, wait), ("p", Duration::from_secs(2)))
            }
            other => panic!("expected to wait, got {other:?}"),
        }
        apply(
            &mut s,
            vec![source(SourceKind::Secret, "db", &[("password", "d")])],
        );
        assert!(matches!(
            s.decide(&wid("p"), at(3)),
            Some(Effect::DecideAfter(_, wait)) if wait == Duration::from_secs(1)
        ));
        let Some(Effect::Write(w)) = s.decide(&wid("p"), at(4)) else {
            panic!("rolls when the period is over");
        };
        assert_eq!(w.write, Write::RollTemplate);
        store(&mut s, &w, at(4));
        assert!(
            s.decide(&wid("p"), at(5)).is_none(),
            "the latest content is rolled"
        );
        // A workload without a pause period is never held.
        apply(
            &mut s,
            vec![source(SourceKind::Secret, "db", &[("password", "e")])],
        );
        assert!(matches!(
            s.decide(&wid("web"), at(5)),
            Some(Effect::Write(_))
        ));
    }

    #[test]
    fn a_roll_that_fails_for_good_is_reported_once_per_streak() {
        use crate::error::ErrorClass::{Forbidden, Transient};
        let mut s = state();
        synced_state(&mut s);
        let web = wid("web");
        let changes = Changes(vec![crate::alerts::ChangedSource {
            kind: SourceKind::Secret,
            name: "db".into(),
            keys: vec!["password".into()],
            deleted: false,
        }]);
        let what = Some(&changes);
        // Once failed for good: a ReloadFailed Warning and an alert, each naming what changed and the answer.
        let reported = |e: Vec<Effect>| match &e[..] {
            [Effect::Publish(e), Effect::Alert(a)] => {
                assert_eq!(e.event.reason, "ReloadFailed");
                assert!(
                    e.event.note.contains("Secret db (keys: password)"),
                    "{}",
                    e.event.note
                );
                let answer = match &a.outcome {
                    Outcome::Failed { answer } => answer,
                    other => panic!("a failure alert, got {other:?}"),
                };
                assert!(e.event.note.contains(answer.as_str()), "{}", e.event.note);
                assert_eq!((&a.workload, &a.changes), (&*web, &changes));
                true
            }
            [] => false,
            other => panic!("expected an Event and an alert, or nothing, got {other:?}"),
        };
        // A refused roll fails for good at once; said once however often it is retried.
        assert!(reported(s.write_failed(
            &web,
            Forbidden,
            "403 Forbidden",
            what,
            None
        )));
        assert_eq!(s.metrics.failing_workloads.get(), 1);
        assert!(!reported(s.write_failed(
            &web,
            Forbidden,
            "403 Forbidden",
            what,
            None
        )));
        // A roll that goes through is alerted; a record is not.
        assert!(matches!(
            s.write_succeeded(&web, Some(changes.clone())),
            Some(Effect::Alert(Alert {
                outcome: Outcome::Rolled,
                ..
            }))
        ));
        assert!(s.write_succeeded(&web, None).is_none());
        assert_eq!(s.metrics.failing_workloads.get(), 0);
        // A failing server: after five failures in a row (a record's included), once.
        assert!(!reported(s.write_failed(
            &web,
            Transient,
            "500 InternalError",
            None,
            None
        )));
        for _ in 0..3 {
            assert!(!reported(s.write_failed(
                &web,
                Transient,
                "500 InternalError",
                what,
                None
            )));
        }
        assert!(matches!(
            &s.write_failed(&web, Transient, "500 InternalError", what, None)[..],
            [Effect::Publish(e), Effect::Alert(_)] if e.event.note.contains("500 InternalError")
        ));
        // Nothing left to roll (the source went back): the streak is over.
        assert_eq!(s.metrics.failing_workloads.get(), 1);
        let Some(Effect::Write(w)) = s.decide(&web, now()) else {
            panic!("first sight records");
        };
        record(&mut s, &w);
        assert!(s.decide(&web, now()).is_none());
        assert_eq!(s.metrics.failing_workloads.get(), 0);

        // A record that fails is not a roll: never a ReloadFailed.
        let mut s = state();
        synced_state(&mut s);
        assert!(!reported(s.write_failed(
            &web,
            Forbidden,
            "403 Forbidden",
            None,
            None
        )));
    }

    /// An opted-in Deployment whose env reads `secret/data/app#password` from Vault.
    fn vault_user(name: &str, stored: &[(&str, &str)]) -> Input {
        let a: BTreeMap<String, String> = [("hashroll.dev/reload", "true")]
            .iter()
            .chain(stored)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            uid: Some(format!("uid-{name}")),
            annotations: Some(a),
            ..ObjectMeta::default()
        };
        let template: PodTemplateSpec = serde_json::from_value(json!({"spec": {"containers": [{
            "name": "app", "image": "app:1",
            "env": [{"name": "P", "value": "vault:secret/data/app#password"}]}]}}))
        .unwrap();
        let w = WorkloadSummary::reduce(
            WorkloadKind::Deployment,
            &meta,
            Some(&template),
            PolicySettings::default(),
        )
        .unwrap();
        Input::WorkloadApplied(Box::new(w))
    }

    fn vault_id() -> SourceId {
        SourceId::new(SourceKind::Vault, NS, "secret/data/app")
    }

    /// The poller's report of the path at `version`.
    fn vault_version(version: &str) -> Vec<Input> {
        let keys = [(
            "version".to_string(),
            key_digest(Section::Data, "version", version.as_bytes()),
        )];
        let mut present = Listed::default();
        present.insert(NS.into(), "secret/data/app".into());
        vec![
            Input::SourceApplied(SourceSummary {
                id: Arc::new(vault_id()),
                keys: keys.into_iter().collect(),
                ignore: false,
                stakater_match: false,
                excluded_type: None,
            }),
            Input::Polled {
                covered: vec![vault_id()],
                present,
            },
        ]
    }

    #[test]
    fn a_vault_path_is_decided_once_read_rolls_on_a_new_version_and_warns_once_when_unreadable() {
        let base = state();
        let mut settings = base.settings.clone();
        settings.visibility.watched.insert(SourceKind::Vault);
        let mut s = State::new(settings, base.key.clone(), Metrics::new());
        assert_eq!(
            s.take_polled_targets(),
            None,
            "not before every watch listed"
        );
        apply(
            &mut s,
            vec![
                vault_user("web", &[]),
                synced(Watched::Source(SourceKind::Secret), &[]),
                synced(Watched::Source(SourceKind::ConfigMap), &[]),
                synced(Watched::Workload(WorkloadKind::Deployment), &["web"]),
            ],
        );
        assert_eq!(s.take_polled_targets(), Some(vec![vault_id()]));
        assert_eq!(s.take_polled_targets(), None, "published once per change");
        // Not read yet: neither missing nor recorded.
        assert!(s.decide(&wid("web"), now()).is_none());
        assert_eq!(s.metrics.held_workloads.get(), 0);

        let out = apply(&mut s, vault_version("1"));
        assert!(
            out.iter()
                .any(|e| matches!(e, Effect::DecideNow(id) if &*id.name == "web"))
        );
        let Some(Effect::Write(w)) = s.decide(&wid("web"), now()) else {
            panic!("first read records");
        };
        assert_eq!(w.write, Write::Record);
        assert_eq!(
            w.sources.to_map().keys().collect::<Vec<_>>(),
            ["vault/secret/data/app"]
        );
        let stored = [
            ("hashroll.dev/hash", w.stamp.as_str().to_string()),
            ("hashroll.dev/sources", w.sources.as_json().to_string()),
        ];
        let stored: Vec<(&str, &str)> = stored.iter().map(|(k, v)| (*k, v.as_str())).collect();
        apply(&mut s, vec![vault_user("web", &stored)]);
        assert!(s.decide(&wid("web"), now()).is_none(), "nothing changed");

        // The same version read again changes nothing; a new one rolls.
        let out = apply(&mut s, vault_version("1"));
        assert!(!out.iter().any(|e| matches!(e, Effect::Debounce(_))));
        let out = apply(&mut s, vault_version("2"));
        assert!(
            out.iter()
                .any(|e| matches!(e, Effect::Debounce(id) if &*id.name == "web"))
        );
        let Some(Effect::Write(w)) = s.decide(&wid("web"), now()) else {
            panic!("a new version rolls");
        };
        assert_eq!(w.write, Write::RollTemplate);
        assert!(
            w.event
                .as_ref()
                .unwrap()
                .note
                .contains("Vault secret/data/app"),
            "{:?}",
            w.event
        );

        // Read, and not there (or not readable): held, with one Warning.
        let out = apply(
            &mut s,
            vec![Input::Polled {
                covered: vec![vault_id()],
                present: Listed::default(),
            }],
        );
        assert!(
            out.iter()
                .any(|e| matches!(e, Effect::Debounce(id) if &*id.name == "web"))
        );
        let Some(Effect::Publish(e)) = s.decide(&wid("web"), now()) else {
            panic!("a Warning");
        };
        assert_eq!(e.event.reason, "VaultPathUnavailable");
        assert!(s.decide(&wid("web"), now()).is_none(), "once");
        assert_eq!(s.metrics.held_workloads.get(), 1);
    }

    #[test]
    fn a_roll_names_the_digests_of_the_sources_it_changes_and_a_failed_rollout_marks_it() {
        let mut s = state();
        synced_state(&mut s);
        let Some(Effect::Write(w)) = s.decide(&wid("web"), now()) else {
            panic!("first sight records");
        };
        assert!(w.changed.is_empty(), "a record changes nothing");
        record(&mut s, &w);
        apply(
            &mut s,
            vec![source(SourceKind::Secret, "db", &[("password", "b")])],
        );
        let Some(Effect::Write(roll)) = s.decide(&wid("web"), now()) else {
            panic!("rolls");
        };
        assert_eq!(roll.changed.keys().collect::<Vec<_>>(), ["secret/db"]);
        assert_eq!(
            roll.changed["secret/db"],
            roll.sources.to_map()["secret/db"]
        );
        record(&mut s, &roll);

        let failure = Failure {
            id: wid("web"),
            reason: FailureReason::Timeout,
            changed: roll.changed.clone(),
            held: vec![wid("api"), wid("worker")],
        };
        let mut out = Vec::new();
        s.rollout_failed(&failure, &mut out);
        let [
            Effect::Publish(on_source),
            Effect::Alert(alert),
            Effect::Write(mark),
        ] = out.as_slice()
        else {
            panic!("an Event on the source, an alert and a mark on the workload: {out:?}");
        };
        assert_eq!(alert.workload, *wid("web"));
        assert_eq!(alert.changes.to_string(), "Secret db");
        assert_eq!(
            alert.outcome,
            Outcome::Halted {
                why: "was not done within --rollout-timeout".into(),
                held: 2
            }
        );
        let about = on_source.about_source.as_ref().expect("about the Secret");
        assert_eq!((about.kind, &*about.name), (SourceKind::Secret, "db"));
        assert_eq!(on_source.event.reason, "RolloutHalted");
        assert!(
            on_source.event.note.contains("2 roll(s)"),
            "{}",
            on_source.event.note
        );
        assert_eq!(mark.write, Write::MarkFailed);
        assert_eq!(mark.stamp, roll.stamp, "the roll that failed");
        assert_eq!(mark.sources.to_map(), roll.changed);
        let event = mark.event.as_ref().expect("RolloutFailed");
        assert_eq!(event.reason, "RolloutFailed");
        assert!(
            event
                .note
                .contains("Deployment shop/api, Deployment shop/worker"),
            "{}",
            event.note
        );
        assert!(event.note.contains("--rollout-timeout"), "{}", event.note);
    }
}
