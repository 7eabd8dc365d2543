//! The reconcile loop. One task owns all state: reduced sources, reduced workloads, the reverse index and
//! the debounce queue. Watches feed it [`Input`]s; it decides with [`crate::decision`] and hands writes to
//! bounded patch tasks, whose results come back as messages. Nothing here is edge-triggered: every decision
//! compares what a workload records with what its sources are now.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use tokio::sync::{mpsc, watch as signal};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::decision::{self, Action, source_label};
use crate::events::{EventPublisher, EventType, WorkloadEvent};
use crate::hashing::{InstallationKey, Stamp};
use crate::index::ReverseIndex;
use crate::metrics::Metrics;
use crate::patching::{self, Write};
use crate::policy::{PolicySettings, Tracked};
use crate::source::{SourceId, SourceKind, SourceSummary};
use crate::watch::{Input, Listed, WatchScope, Watched, reduce_workload};
use crate::workload::{RecordedSources, Tracking, WorkloadId, WorkloadKind, WorkloadSummary};

/// Workload ids are allocated once, when first seen, and shared by every map and queue here and by the
/// reverse index: a tracked workload costs one copy of its namespace and name however often it is named.
type Wid = Arc<WorkloadId>;

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

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct Settings {
    pub debounce: Duration,
    pub dry_run: bool,
    pub namespaces: NamespaceFilter,
    pub policy: PolicySettings,
    pub patch_concurrency: usize,
    /// Every watch that was started; readiness and per-namespace gating are computed from these.
    pub scopes: Vec<WatchScope>,
}

/// A patch task's outcome.
struct Done {
    id: Wid,
    result: Result<Option<WorkloadSummary>, kube::Error>,
}

/// One patch waiting for a slot. Its body is built only when it is sent: at first sight thousands wait at
/// once, and a built JSON body costs several times what it is made of.
struct QueuedWrite {
    id: Wid,
    write: Write,
    stamp: Stamp,
    sources: RecordedSources,
    event: Option<WorkloadEvent>,
    uid: Option<String>,
    rolled: bool,
}

struct Entry {
    summary: WorkloadSummary,
    /// The workload's own pod template changed since the last decision (it rolls by itself).
    template_changed: bool,
}

/// The reconcile loop's state.
pub struct Controller {
    settings: Settings,
    key: InstallationKey,
    client: Client,
    events: EventPublisher,
    metrics: Metrics,
    ready: Arc<AtomicBool>,

    sources: BTreeMap<Arc<SourceId>, SourceSummary>,
    workloads: HashMap<Wid, Entry>,
    index: ReverseIndex,
    /// Debounce queue: due time → workload, and each pending workload's (due, first change).
    queue: BTreeSet<(Instant, Wid)>,
    pending: HashMap<Wid, (Instant, Instant)>,

    synced: HashSet<WatchScope>,
    failed: HashSet<WatchScope>,
    selected_namespaces: HashSet<String>,

    in_flight: HashSet<Wid>,
    redo: HashSet<Wid>,
    retries: HashMap<Wid, u32>,
    /// Key names changed by each source's latest change, so a roll's Event can name them.
    changed_keys: HashMap<SourceId, BTreeSet<String>>,
    /// The last warning given per workload (malformed annotation) and the last hold, to say each once.
    warned: HashMap<Wid, String>,
    held: HashMap<Wid, SourceId>,
    /// How many workloads carry a malformed annotation (a gauge; counted, not recounted per change).
    invalid: usize,
    /// Inputs handled since the allocator last gave memory back.
    churn: u64,

    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// Writes waiting for a free patch slot, and how many patch tasks run now: at most
    /// `patch_concurrency` tasks exist, however many workloads are due at once (6,000 at first sight).
    queued: VecDeque<QueuedWrite>,
    running: usize,
    tasks: JoinSet<()>,
}

impl Controller {
    pub fn new(
        settings: Settings,
        key: InstallationKey,
        client: Client,
        events: EventPublisher,
        metrics: Metrics,
        ready: Arc<AtomicBool>,
    ) -> Controller {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Controller {
            settings,
            key,
            client,
            events,
            metrics,
            ready,
            sources: BTreeMap::new(),
            workloads: HashMap::new(),
            index: ReverseIndex::default(),
            queue: BTreeSet::new(),
            pending: HashMap::new(),
            synced: HashSet::new(),
            failed: HashSet::new(),
            selected_namespaces: HashSet::new(),
            in_flight: HashSet::new(),
            redo: HashSet::new(),
            retries: HashMap::new(),
            changed_keys: HashMap::new(),
            warned: HashMap::new(),
            held: HashMap::new(),
            invalid: 0,
            churn: 0,
            done_tx,
            done_rx,
            queued: VecDeque::new(),
            running: 0,
            tasks: JoinSet::new(),
        }
    }

    /// Runs until `shutdown` turns true or the inputs end; then waits (bounded) for patches in flight.
    pub async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut shutdown: signal::Receiver<bool>,
    ) {
        loop {
            let next_due = self.queue.first().map(|(t, _)| *t);
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(done) = self.done_rx.recv() => self.on_done(done),
                msg = inputs.recv() => match msg {
                    Some(m) => {
                        self.on_input(m);
                        // Drain what is already queued before deciding, so a burst is seen as one.
                        while let Ok(m) = inputs.try_recv() {
                            self.on_input(m);
                        }
                    }
                    None => break,
                },
                _ = sleep_until(next_due), if next_due.is_some() => self.run_due(),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
            self.release_spare_capacity();
            self.release_memory_after_burst();
        }
        tracing::info!(
            in_flight = self.tasks.len(),
            "stopping: finishing patches in flight"
        );
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!("patches still in flight after 5s; exiting anyway");
        }
    }

    /// Once a burst (the initial sync, a re-list, a fan-out) is over and no write is queued or running, the
    /// allocator's free pages go back to the OS: otherwise the peak's memory stays resident for good.
    fn release_memory_after_burst(&mut self) {
        const BURST: u64 = 1024;
        let idle = self.queued.is_empty() && self.running == 0;
        if self.churn >= BURST && idle && self.ready.load(Ordering::Relaxed) {
            self.churn = 0;
            crate::memory::release_free_memory();
        }
    }

    /// The first sight of every workload fills the queues at once (thousands of entries, each pending
    /// write with its patch body); once they have drained, their capacity is given back instead of kept for
    /// the life of the process.
    fn release_spare_capacity(&mut self) {
        /// Worth shrinking: large, and at most an eighth used.
        fn spare(len: usize, capacity: usize) -> bool {
            capacity > 64 && len < capacity / 8
        }
        macro_rules! shrink {
            ($($c:expr),*) => {$(
                if spare($c.len(), $c.capacity()) {
                    $c.shrink_to_fit();
                }
            )*};
        }
        shrink!(
            self.pending,
            self.retries,
            self.warned,
            self.held,
            self.changed_keys,
            self.in_flight,
            self.redo,
            self.queued
        );
    }

    fn on_input(&mut self, input: Input) {
        self.churn += 1;
        match input {
            Input::SourceApplied(s) => self.source_applied(s),
            Input::SourceDeleted(id) => self.source_deleted(&id),
            Input::WorkloadApplied(w) => self.workload_applied(*w),
            Input::WorkloadDeleted(id) => self.workload_deleted(&id),
            Input::Namespace(name, present) => {
                if present {
                    if self.selected_namespaces.insert(name.clone()) {
                        self.schedule_namespace(|ns| ns == name);
                    }
                } else {
                    self.selected_namespaces.remove(&name);
                }
            }
            Input::Synced(scope, listed) => {
                self.forget_unlisted(&scope, &listed);
                self.failed.remove(&scope);
                if self.synced.insert(scope.clone()) {
                    tracing::info!(
                        resource = scope.resource.resource_name(),
                        namespace = scope.namespace.as_deref().unwrap_or("(all)"),
                        "watch synced"
                    );
                }
                // After any (re-)list, re-check everything it covers: level-triggered.
                match scope.namespace.clone() {
                    Some(ns) => self.schedule_namespace(|n| n == ns),
                    None => self.schedule_namespace(|_| true),
                }
                self.update_ready();
            }
            Input::WatchFailed(scope) => {
                if !self.synced.contains(&scope) {
                    self.failed.insert(scope);
                    self.update_ready();
                }
            }
        }
    }

    fn source_deleted(&mut self, id: &SourceId) {
        if self.sources.remove(id).is_some() {
            self.changed_keys.remove(id);
            self.metrics
                .source_changes
                .with_label_values(&[id.kind.as_str()])
                .inc();
            self.metrics.sources.set(self.sources.len() as i64);
            for w in self.index.affected(id) {
                self.schedule_debounced(w);
            }
        }
    }

    fn workload_deleted(&mut self, id: &WorkloadId) {
        if let Some(old) = self.workloads.remove(id) {
            self.invalid -= usize::from(matches!(old.summary.tracking, Tracking::Invalid(_)));
        }
        self.index.remove(id);
        self.unschedule(id);
        self.warned.remove(id);
        self.held.remove(id);
        self.retries.remove(id);
        self.refresh_gauges();
    }

    /// A list is complete: what is known in its scope but was not listed was deleted meanwhile (while the
    /// watch was down, or hashroll was); forget it like a deletion seen on the watch.
    fn forget_unlisted(&mut self, scope: &WatchScope, listed: &Listed) {
        let in_scope = |ns: &str| scope.namespace.as_deref().is_none_or(|n| n == ns);
        let unlisted = |ns: &str, name: &str| !listed.contains(ns, name);
        match scope.resource {
            Watched::Source(kind) => {
                let gone: Vec<Arc<SourceId>> = self
                    .sources
                    .keys()
                    .filter(|id| id.kind == kind && in_scope(&id.namespace))
                    .filter(|id| unlisted(&id.namespace, &id.name))
                    .cloned()
                    .collect();
                for id in gone {
                    self.source_deleted(&id);
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
                    self.workload_deleted(&id);
                }
            }
            Watched::Namespaces => self.selected_namespaces.retain(|n| !unlisted("", n)),
        }
    }

    fn source_applied(&mut self, mut s: SourceSummary) {
        // Keep the id allocation the map already holds: the key and the summary share it.
        if let Some((known, _)) = self.sources.get_key_value(&*s.id) {
            s.id = Arc::clone(known);
        }
        let id = Arc::clone(&s.id);
        let old = self.sources.get(&*id);
        if old == Some(&s) {
            return;
        }
        // Key names are remembered only for real content changes (to name them in Events): a source seen
        // for the first time costs nothing here.
        if let Some(old) = old
            && old.keys != s.keys
        {
            let changed: BTreeSet<String> = old
                .keys
                .iter()
                .filter(|(k, d)| s.keys.get(k) != Some(*d))
                .map(|(k, _)| k.to_string())
                .chain(
                    s.keys
                        .keys()
                        .filter(|k| !old.keys.contains_key(k))
                        .map(str::to_string),
                )
                .collect();
            self.changed_keys.insert(SourceId::clone(&id), changed);
            self.metrics
                .source_changes
                .with_label_values(&[id.kind.as_str()])
                .inc();
        }
        self.sources.insert(Arc::clone(&id), s);
        self.metrics.sources.set(self.sources.len() as i64);
        for w in self.index.affected(&id) {
            self.schedule_debounced(w);
        }
    }

    fn workload_applied(&mut self, mut w: WorkloadSummary) {
        // One allocation per workload id, shared with the index and the queues.
        if let Some((known, _)) = self.workloads.get_key_value(&w.id) {
            w.id = Arc::clone(known);
        }
        let id = Arc::clone(&w.id);
        let template_changed = match self.workloads.get_mut(&id) {
            // A watch event can arrive after the response to hashroll's own patch: never go back.
            Some(old) if w.is_older_than(&old.summary) => return,
            Some(old) if !old.summary.differs_in_substance(&w) => {
                old.summary.resource_version = w.resource_version;
                return;
            }
            Some(old) => old.template_changed || old.summary.template_digest != w.template_digest,
            None => false,
        };
        let invalid = |w: &WorkloadSummary| matches!(w.tracking, Tracking::Invalid(_));
        match &w.tracking {
            Tracking::On { policy, references } => {
                let tracked = policy.tracked(&id.namespace, references);
                self.index_workload(&id, &tracked);
            }
            _ => self.index.remove(&id),
        }
        self.invalid += usize::from(invalid(&w));
        let old = self.workloads.insert(
            Arc::clone(&id),
            Entry {
                summary: w,
                template_changed,
            },
        );
        self.invalid -= usize::from(old.is_some_and(|o| invalid(&o.summary)));
        self.refresh_gauges();
        self.schedule_now(id);
    }

    fn index_workload(&mut self, id: &Wid, tracked: &Tracked) {
        let kinds: Vec<SourceKind> = tracked
            .patterns
            .iter()
            .map(|(k, _)| *k)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.index
            .set(id, tracked.exact.iter().map(|t| t.id.clone()), &kinds);
    }

    fn refresh_gauges(&self) {
        self.metrics.workloads.set(self.workloads.len() as i64);
        self.metrics.invalid_workloads.set(self.invalid as i64);
    }

    // ---- scheduling -------------------------------------------------------------------------------

    /// A source changed: decide after the debounce window, pushing the decision back while changes keep
    /// coming, but never more than five windows after the first.
    fn schedule_debounced(&mut self, id: Wid) {
        let now = Instant::now();
        let window = self.settings.debounce;
        let (due, first) = match self.pending.get(&id) {
            Some(&(_, first)) => ((now + window).min(first + window * 5), first),
            None => (now + window, now),
        };
        self.set_due(id, due, first);
    }

    /// The workload itself changed: decide now, unless a debounced decision is already pending (a status
    /// update must not cut a burst of source changes short).
    fn schedule_now(&mut self, id: Wid) {
        if self.pending.contains_key(&id) {
            return;
        }
        let now = Instant::now();
        self.set_due(id, now, now);
    }

    fn schedule_at(&mut self, id: Wid, due: Instant) {
        self.set_due(id, due, due);
    }

    fn set_due(&mut self, id: Wid, due: Instant, first: Instant) {
        if let Some((old, _)) = self.pending.insert(id.clone(), (due, first)) {
            self.queue.remove(&(old, id.clone()));
        }
        self.queue.insert((due, id));
    }

    fn unschedule(&mut self, id: &WorkloadId) {
        if let Some((id, (due, _))) = self.pending.remove_entry(id) {
            self.queue.remove(&(due, id));
        }
    }

    fn schedule_namespace(&mut self, matches: impl Fn(&str) -> bool) {
        let ids: Vec<Wid> = self
            .workloads
            .keys()
            .filter(|id| matches(&id.namespace))
            .cloned()
            .collect();
        for id in ids {
            self.schedule_now(id);
        }
    }

    fn run_due(&mut self) {
        let now = Instant::now();
        while let Some((due, _)) = self.queue.first() {
            if *due > now {
                break;
            }
            let (_, id) = self.queue.pop_first().expect("non-empty");
            self.pending.remove(&id);
            self.reconcile(&id);
        }
    }

    // ---- deciding ---------------------------------------------------------------------------------

    fn namespace_allowed(&self, ns: &str) -> bool {
        let f = &self.settings.namespaces;
        !f.ignore.contains(ns)
            && f.only.as_ref().is_none_or(|only| only.contains(ns))
            && (!f.by_selector || self.selected_namespaces.contains(ns))
    }

    /// Every Secret/ConfigMap (and namespace) watch covering `ns` has listed once: decisions before that
    /// would mistake "not listed yet" for "deleted".
    fn synced_for(&self, ns: &str) -> bool {
        self.settings
            .scopes
            .iter()
            .filter(|s| matches!(s.resource, Watched::Source(_) | Watched::Namespaces))
            .filter(|s| s.namespace.as_deref().is_none_or(|n| n == ns))
            .all(|s| self.synced.contains(s))
    }

    fn update_ready(&self) {
        let ready = self
            .settings
            .scopes
            .iter()
            .all(|s| self.synced.contains(s) || self.failed.contains(s));
        if ready && !self.ready.swap(true, Ordering::Relaxed) {
            tracing::info!(
                sources = self.sources.len(),
                workloads = self.workloads.len(),
                "ready: every watch has listed"
            );
        }
        self.metrics.ready.set(ready as i64);
    }

    fn reconcile(&mut self, id: &Wid) {
        if !self.namespace_allowed(&id.namespace) || !self.synced_for(&id.namespace) {
            return;
        }
        if self.in_flight.contains(id) {
            self.redo.insert(id.clone());
            return;
        }
        let Some(entry) = self.workloads.get_mut(id) else {
            return;
        };
        let (policy, references) = match &entry.summary.tracking {
            Tracking::Off => {
                self.warned.remove(id);
                self.held.remove(id);
                return;
            }
            Tracking::Invalid(e) => {
                let message = e.to_string();
                if self.warned.get(id) != Some(&message) {
                    tracing::warn!(workload = %id, annotation = %e.annotation, error = %message,
                        "skipping workload: malformed annotation");
                    let ev = WorkloadEvent {
                        type_: EventType::Warning,
                        reason: "InvalidAnnotation",
                        action: "Validate",
                        note: format!("hashroll skips this {}: {message}", id.kind),
                    };
                    let uid = entry.summary.uid.clone();
                    self.warned.insert(id.clone(), message);
                    self.publish_later(id.clone(), uid, ev);
                }
                return;
            }
            Tracking::On { policy, references } => (policy, references),
        };
        self.warned.remove(id);
        let tracked = policy.tracked(&id.namespace, references);
        let recorded = entry.summary.stored.read();
        let current = decision::current(
            policy,
            &tracked,
            &id.namespace,
            &self.sources,
            &recorded,
            &self.key,
        );
        let template_changed = std::mem::take(&mut entry.template_changed);
        let action = decision::decide(&recorded, current, template_changed, &self.key);
        let restart_at = id.kind == WorkloadKind::Rollout && policy.rollout_restart;
        match action {
            Action::Nothing => {
                self.held.remove(id);
            }
            Action::Hold { missing, key } => {
                if self.held.get(id) != Some(&missing) {
                    match &key {
                        Some(k) => tracing::info!(workload = %id, source = %missing, key = %k,
                            "not rolling: a required key is missing; waiting for it"),
                        None => tracing::info!(workload = %id, source = %missing,
                            "not rolling: a required source is missing; waiting for it"),
                    }
                    self.held.insert(id.clone(), missing);
                }
            }
            Action::Baseline { stamp, sources } => {
                self.held.remove(id);
                self.write(id, Write::Record, stamp, sources, None);
            }
            Action::Roll {
                stamp,
                sources,
                changed,
            } => {
                self.held.remove(id);
                let what = self.describe(&changed, &tracked);
                let write = if restart_at {
                    Write::RestartAt
                } else {
                    Write::RollTemplate
                };
                self.write(id, write, stamp, sources, Some(what));
            }
        }
        self.metrics.held_workloads.set(self.held.len() as i64);
    }

    /// "Secret db (keys: password), ConfigMap app" — names only, never values.
    fn describe(&self, changed: &[String], tracked: &Tracked) -> String {
        changed
            .iter()
            .map(|label| {
                let Some(t) = tracked
                    .exact
                    .iter()
                    .find(|t| source_label(t.id.kind, &t.id.name) == *label)
                else {
                    // Tracked through a name pattern: the whole object counts.
                    return match label.split_once('/') {
                        Some(("secret", name)) => format!("Secret {name}"),
                        Some(("configmap", name)) => format!("ConfigMap {name}"),
                        _ => label.clone(),
                    };
                };
                let state = if self.sources.contains_key(&t.id) {
                    ""
                } else {
                    " (deleted)"
                };
                let keys: Vec<&str> = self
                    .changed_keys
                    .get(&t.id)
                    .into_iter()
                    .flatten()
                    .filter(|k| t.keys.contains(k))
                    .map(String::as_str)
                    .collect();
                if keys.is_empty() || !state.is_empty() {
                    format!("{} {}{state}", t.id.kind, t.id.name)
                } else {
                    format!("{} {} (keys: {})", t.id.kind, t.id.name, keys.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    // ---- writing ----------------------------------------------------------------------------------

    fn write(
        &mut self,
        id: &Wid,
        write: Write,
        stamp: Stamp,
        sources: BTreeMap<String, String>,
        rolled_for: Option<String>,
    ) {
        let Some(entry) = self.workloads.get_mut(id) else {
            return;
        };
        let uid = entry.summary.uid.clone();
        let event = rolled_for.as_ref().map(|what| WorkloadEvent {
            type_: EventType::Normal,
            reason: if self.settings.dry_run {
                "WouldReload"
            } else {
                "Reloaded"
            },
            action: "Reload",
            note: format!(
                "{} {} because {what} changed",
                if self.settings.dry_run {
                    "Would roll"
                } else {
                    "Rolled"
                },
                id.kind
            ),
        });
        if let Some(what) = &rolled_for {
            tracing::info!(workload = %id, changed = %what, dry_run = self.settings.dry_run,
                "rolling workload");
        } else {
            tracing::debug!(workload = %id, dry_run = self.settings.dry_run, "recording state without rolling");
        }

        let sources = RecordedSources::from(sources);
        if self.settings.dry_run {
            // Remember what would have been written, so the same change is reported once.
            entry.summary.stored.stamp = Some(stamp);
            entry.summary.stored.sources = Some(sources);
            if let Some(ev) = event {
                self.publish_later(id.clone(), uid, ev);
            }
            return;
        }

        self.in_flight.insert(id.clone());
        self.queued.push_back(QueuedWrite {
            id: id.clone(),
            write,
            stamp,
            sources,
            event,
            uid,
            rolled: rolled_for.is_some(),
        });
        self.pump();
    }

    /// Starts queued patches while fewer than `patch_concurrency` run.
    fn pump(&mut self) {
        while self.running < self.settings.patch_concurrency.max(1) {
            let Some(w) = self.queued.pop_front() else {
                return;
            };
            self.running += 1;
            let (client, events, metrics) = (
                self.client.clone(),
                self.events.clone(),
                self.metrics.clone(),
            );
            let (done, policy) = (self.done_tx.clone(), self.settings.policy);
            self.tasks.spawn(async move {
                let QueuedWrite {
                    id,
                    write,
                    stamp,
                    sources,
                    event,
                    uid,
                    rolled,
                } = w;
                // `now` only matters for Argo Rollouts' restartAt: the time the patch is sent.
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let body = patching::patch_body(id.kind, write, &stamp, &sources, &now);
                let result = match patching::send(&client, &id, &body).await {
                    Ok(obj) => {
                        let counter = if rolled {
                            &metrics.rolls
                        } else {
                            &metrics.records
                        };
                        counter.with_label_values(&[id.kind.as_str()]).inc();
                        if let Some(ev) = &event
                            && let Err(e) = events.publish(&id, uid.as_deref(), ev).await
                        {
                            metrics.event_errors.with_label_values(&[ev.reason]).inc();
                            tracing::warn!(workload = %id, error = %e, "could not publish Event");
                        }
                        Ok(reduce_workload(id.kind, &obj, policy))
                    }
                    Err(e) => Err(e),
                };
                let _ = done.send(Done { id, result });
            });
        }
    }

    fn publish_later(&mut self, id: Wid, uid: Option<String>, ev: WorkloadEvent) {
        let (events, metrics) = (self.events.clone(), self.metrics.clone());
        self.tasks.spawn(async move {
            if let Err(e) = events.publish(&id, uid.as_deref(), &ev).await {
                metrics.event_errors.with_label_values(&[ev.reason]).inc();
                tracing::warn!(workload = %id, error = %e, "could not publish Event");
            }
        });
    }

    fn on_done(&mut self, done: Done) {
        let Done { id, result } = done;
        self.running = self.running.saturating_sub(1);
        self.pump();
        self.in_flight.remove(&id);
        match result {
            Ok(summary) => {
                self.retries.remove(&id);
                if let Some(s) = summary {
                    // The response is the newest state: take it, so the next decision starts from it.
                    self.workload_applied(s);
                }
            }
            Err(e) => {
                let code = match &e {
                    kube::Error::Api(s) => s.code.to_string(),
                    _ => "transport".to_string(),
                };
                self.metrics
                    .patch_errors
                    .with_label_values(&[id.kind.as_str(), &code])
                    .inc();
                if code == "404" {
                    tracing::info!(workload = %id, "workload is gone; nothing to roll");
                    self.redo.remove(&id);
                    return;
                }
                let attempt = self.retries.entry(id.clone()).or_insert(0);
                *attempt += 1;
                let backoff = Duration::from_millis(500 * (1u64 << (*attempt).min(7)))
                    .min(Duration::from_secs(60));
                tracing::warn!(workload = %id, error = %e, retry_in = ?backoff, "patch failed; will retry");
                self.redo.remove(&id);
                self.schedule_at(id, Instant::now() + backoff);
                return;
            }
        }
        if self.redo.remove(&id) {
            self.schedule_now(id);
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
