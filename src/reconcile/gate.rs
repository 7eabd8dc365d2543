//! The gate between "a roll is decided" and "the writer starts it", opt-in (by default every roll goes
//! at once, as before):
//!
//! - `--max-rollouts-per-minute`: a fleet-wide token bucket.
//! - `--max-concurrent-rollouts N`: health-gated waves. At most N rolls in progress at once; a roll is in
//!   progress from its patch until the workload's own controller reports its rollout done
//!   ([`crate::model::rollout`]). Within that, `hashroll.dev/rollout-wave` orders them: lower waves
//!   first, and none while a lower one is in progress. A rollout that fails (its controller gives up,
//!   or it is not done within `--rollout-timeout`) **halts** its change: every roll that carries one of
//!   the source digests it changed waits, until that source changes again. The halt is kept in the
//!   cluster (`hashroll.dev/rollout-failed` on the failed workload), so a restart or a failover keeps it.
//!
//! A roll the gate holds is not kept as a write: the workload waits in a queue, and when its turn comes it
//! is decided again, so the roll that goes carries the content of that moment, never a stale stamp. Its
//! turn is reserved for it; if its decision no longer rolls (the source went back), the turn is given
//! back. Only halts are persisted: after a restart or a failover the level-triggered pass decides every
//! workload again, and the gate holds the rolls again (nothing is released before every watch has
//! listed, so that every halt is known first).

use std::collections::{BTreeMap, HashMap};
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::hashing::Stamp;
use crate::model::kind::WorkloadId;
use crate::model::rollout::Progress;
use crate::model::workload::WorkloadSummary;
use crate::reconcile::scheduler::{Wid, shrink};

/// What the gate enforces, from the flags.
#[derive(Debug, Clone, Copy)]
pub struct GateSettings {
    /// `--max-rollouts-per-minute`: at most this many rolls started per minute, fleet-wide.
    pub per_minute: Option<NonZeroU32>,
    /// `--max-concurrent-rollouts`: at most this many rollouts in progress at once, fleet-wide.
    pub max_concurrent: Option<NonZeroUsize>,
    /// `--rollout-timeout`: a rollout in progress for longer fails (and halts its change).
    pub rollout_timeout: Duration,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            per_minute: None,
            max_concurrent: None,
            rollout_timeout: Duration::from_secs(600),
        }
    }
}

/// A token bucket holding one token: rolls start at most one every `60 s / N`, evenly spaced, so that a
/// change reaching the whole fleet never starts a burst of rolls (a larger bucket would let a quiet fleet
/// start N at once, which is what the limit is there to prevent).
#[derive(Debug)]
struct Bucket {
    interval: Duration,
    /// When the next token is there (in the past: there is one now).
    next: Instant,
}

impl Bucket {
    fn new(per_minute: NonZeroU32) -> Bucket {
        Bucket {
            interval: Duration::from_secs(60) / per_minute.get(),
            next: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) {
        self.next = self.next.max(now) + self.interval;
    }

    /// A reserved token was not used: the next one comes as if it had not been taken.
    fn refund(&mut self, now: Instant) {
        self.next = (self.next - self.interval).max(now);
    }
}

/// The wave of workloads without `hashroll.dev/rollout-wave`: after every numbered one.
const LAST_WAVE: u32 = u32::MAX;

/// A roll waiting for its turn.
#[derive(Debug)]
struct Waiting {
    wave: u32,
    seq: u64,
    /// The digests of the sources its latest decision changes (what halts are matched against).
    changed: BTreeMap<String, String>,
}

/// A rollout started and not done yet.
#[derive(Debug)]
struct Running {
    wave: u32,
    since: Instant,
    /// The resourceVersion of the patch's answer, once in: only status newer than that is about it.
    after: Option<u64>,
    /// The stamp the roll recorded (from the patch's answer).
    stamp: Option<Stamp>,
    /// The newest status seen before the patch's answer came in (a watch event can overtake it).
    early: Option<(u64, Progress)>,
    changed: BTreeMap<String, String>,
}

/// A halt: the stamp of the failed roll (the halt ends when the workload records another), and the
/// digests of the sources it changed.
#[derive(Debug)]
struct Halt {
    stamp: Option<Stamp>,
    changed: BTreeMap<String, String>,
}

/// A rollout that failed: the workload, why, the digests its roll changed, and the rolls held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub id: Wid,
    pub reason: FailureReason,
    pub changed: BTreeMap<String, String>,
    pub held: Vec<Wid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Its controller gave up (a Deployment's progress deadline, a Rollout `Degraded`).
    Failed,
    /// Not done within `--rollout-timeout`.
    Timeout,
}

impl FailureReason {
    /// The `reason` label of `hashroll_rollout_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Failed => "failed",
            FailureReason::Timeout => "timeout",
        }
    }
}

/// What the gate asks of the loop.
#[derive(Debug)]
pub enum Release {
    /// Its turn: decide it again now.
    Decide(Wid),
    /// A rollout failed: mark it (which halts its change) and say so.
    Failed(Failure),
}

/// Holds rolls back to the configured rate and waves; hands them out as they may go.
#[derive(Debug)]
pub struct Gate {
    bucket: Option<Bucket>,
    max_concurrent: Option<NonZeroUsize>,
    timeout: Duration,
    /// Nothing is released before every watch has listed (every halt and rollout in progress is known).
    ready: bool,
    /// Decided to roll and waiting, in (wave, decision) order; `waiting` holds the same ids.
    queue: BTreeMap<(u32, u64), Wid>,
    waiting: HashMap<Wid, Waiting>,
    seq: u64,
    /// Given their turn and sent to be decided again: their next roll goes through.
    released: HashMap<Wid, u32>,
    /// Rollouts in progress (with waves on).
    running: HashMap<Wid, Running>,
    /// Each workload's `hashroll.dev/rollout-wave`, where it has one (with waves on).
    waves: HashMap<Wid, u32>,
    /// Halts: per failed workload, the source digests its roll changed.
    halts: HashMap<Wid, Halt>,
}

impl Gate {
    pub fn new(settings: GateSettings) -> Gate {
        Gate {
            bucket: settings.per_minute.map(Bucket::new),
            max_concurrent: settings.max_concurrent,
            timeout: settings.rollout_timeout,
            ready: false,
            queue: BTreeMap::new(),
            waiting: HashMap::new(),
            seq: 0,
            released: HashMap::new(),
            running: HashMap::new(),
            waves: HashMap::new(),
            halts: HashMap::new(),
        }
    }

    fn is_on(&self) -> bool {
        self.bucket.is_some() || self.max_concurrent.is_some()
    }

    fn waves_on(&self) -> bool {
        self.max_concurrent.is_some()
    }

    /// Every watch has listed (or not any more): releases may start.
    pub fn set_ready(&mut self, ready: bool) {
        self.ready = ready;
    }

    /// A roll of `id`, changing the sources whose digests are `changed`, is decided: true if it may be
    /// written now; false if it waits (the workload is queued, and handed out by
    /// [`Gate::next_release`] to be decided again).
    pub fn admit(&mut self, id: &Wid, changed: &BTreeMap<String, String>) -> bool {
        if !self.is_on() {
            return true;
        }
        if let Some(wave) = self.released.remove(id) {
            self.start(id, wave, changed);
            return true;
        }
        let now = Instant::now();
        // Without waves, first come first served: nothing overtakes a roll that waits already. With
        // waves, every roll queues, so a burst decided at once is ordered by wave before any goes.
        if !self.waves_on()
            && self.ready
            && self.queue.is_empty()
            && let Some(bucket) = &mut self.bucket
            && bucket.next <= now
        {
            bucket.take(now);
            return true;
        }
        let wave = self.wave_of(id);
        match self.waiting.get_mut(id) {
            Some(w) => w.changed = changed.clone(),
            None => {
                self.seq += 1;
                self.queue.insert((wave, self.seq), id.clone());
                let changed = changed.clone();
                let seq = self.seq;
                self.waiting
                    .insert(id.clone(), Waiting { wave, seq, changed });
            }
        }
        false
    }

    /// `id` was decided; `rolls` says whether that decision was a roll (which then went through
    /// [`Gate::admit`]). A workload given its turn that decided not to roll gives it back.
    pub fn decided(&mut self, id: &WorkloadId, rolls: bool) {
        if !rolls
            && self.released.remove(id).is_some()
            && let Some(bucket) = &mut self.bucket
        {
            bucket.refund(Instant::now());
        }
    }

    /// The roll's patch failed: it is not in progress (its retry is decided, and gated, again).
    pub fn write_failed(&mut self, id: &WorkloadId) {
        self.running.remove(id);
    }

    /// The workload as it is now (a watch event, or the answer to a patch): its wave, whether its
    /// rollout is done or failed, and whether it carries a halt. A failure to report is returned.
    pub fn observe(&mut self, w: &WorkloadSummary) -> Option<Failure> {
        if !self.waves_on() {
            return None;
        }
        match w.wave {
            Some(wave) => self.waves.insert(w.id.clone(), wave),
            None => self.waves.remove(&w.id),
        };
        match w.halted() {
            Some(changed) => {
                let halt = Halt {
                    stamp: w.stored.stamp.clone(),
                    changed: changed.clone(),
                };
                self.halts.insert(w.id.clone(), halt);
            }
            // Written on since it failed (rolled again, or recorded): the halt is over. Until the mark is
            // stored, the halt is known from the failure itself, and the workload records its stamp.
            None => {
                if self
                    .halts
                    .get(&w.id)
                    .is_some_and(|h| h.stamp != w.stored.stamp)
                {
                    self.halts.remove(&w.id);
                }
            }
        }
        if !self.ready
            && w.progress == Progress::Rolling
            && w.halted().is_none()
            && !self.running.contains_key(&w.id)
            && rolled_within(w, self.timeout)
        {
            // Rolled by a previous leader and still rolling out: its wave is not over.
            let wave = self.wave_of(&w.id);
            let running = Running {
                wave,
                since: Instant::now(),
                after: w.resource_version,
                stamp: w.stored.stamp.clone(),
                early: None,
                changed: BTreeMap::new(),
            };
            self.running.insert(w.id.clone(), running);
            return None;
        }
        let r = self.running.get_mut(&w.id)?;
        match (r.after, w.resource_version) {
            (Some(after), Some(rv)) if rv >= after => self.judge(&w.id, w.progress),
            // Before the patch's answer: it may be the status of the roll (kept), or of before it.
            (None, Some(rv)) => {
                if r.early.is_none_or(|(seen, _)| rv > seen) {
                    r.early = Some((rv, w.progress));
                }
                None
            }
            _ => None,
        }
    }

    fn judge(&mut self, id: &Wid, progress: Progress) -> Option<Failure> {
        match progress {
            Progress::Rolling => None,
            Progress::Done => {
                self.running.remove(id);
                None
            }
            Progress::Failed => Some(self.fail(id, FailureReason::Failed)),
        }
    }

    /// The answer to a roll's patch came in: only status from that version on is about this roll.
    pub fn patched(&mut self, w: &WorkloadSummary) -> Option<Failure> {
        let Some(r) = self.running.get_mut(&w.id) else {
            return self.observe(w);
        };
        r.after = w.resource_version;
        r.stamp = w.stored.stamp.clone();
        let early = r.early.take();
        if let Some(f) = self.observe(w) {
            return Some(f);
        }
        // A status newer than the answer came first: it is the one that counts.
        match (early, w.resource_version) {
            (Some((seen, progress)), Some(rv)) if seen > rv && self.running.contains_key(&w.id) => {
                self.judge(&w.id, progress)
            }
            _ => None,
        }
    }

    /// The workload is gone.
    pub fn forget(&mut self, id: &WorkloadId) {
        if let Some(w) = self.waiting.remove(id) {
            self.queue.remove(&(w.wave, w.seq));
        }
        self.decided(id, false);
        self.running.remove(id);
        self.waves.remove(id);
        self.halts.remove(id);
    }

    /// Whether a roll of `id` waits for its turn.
    pub fn is_waiting(&self, id: &WorkloadId) -> bool {
        self.waiting.contains_key(id)
    }

    /// Rolls waiting for their turn (a gauge).
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Rollouts in progress (a gauge).
    pub fn in_progress(&self) -> usize {
        self.running.len()
    }

    /// Rolls held back by a halt (a gauge).
    pub fn halted(&self) -> usize {
        if self.halts.is_empty() {
            return 0;
        }
        self.waiting.values().filter(|w| self.is_halted(w)).count()
    }

    /// The next thing to do: a workload whose turn came (decide it again), or a rollout that ran out of
    /// time. Pending while there is neither. Cancel-safe: nothing changes before the wait is over, and
    /// nothing is awaited after.
    pub async fn next_release(&mut self) -> Release {
        loop {
            let now = Instant::now();
            if let Some(id) = self.timed_out(now) {
                return Release::Failed(self.fail(&id, FailureReason::Timeout));
            }
            let next = self.next_candidate();
            let token_at = self.bucket.as_ref().map(|b| b.next);
            let timeout_at = self.running.values().map(|r| r.since + self.timeout).min();
            match (next, token_at) {
                (Some(id), None) => return self.release(id, now),
                (Some(id), Some(at)) if at <= now => return self.release(id, now),
                (Some(_), Some(at)) => {
                    let wake = timeout_at.map_or(at, |t| t.min(at));
                    tokio::time::sleep_until(wake).await;
                }
                (None, _) => match timeout_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                },
            }
        }
    }

    /// After a burst, give the maps' capacity back.
    pub fn shrink(&mut self) {
        shrink(&mut self.waiting);
        shrink(&mut self.released);
        shrink(&mut self.running);
    }

    fn wave_of(&self, id: &WorkloadId) -> u32 {
        self.waves.get(id).copied().unwrap_or(LAST_WAVE)
    }

    fn start(&mut self, id: &Wid, wave: u32, changed: &BTreeMap<String, String>) {
        if self.waves_on() {
            let running = Running {
                wave,
                since: Instant::now(),
                after: None,
                stamp: None,
                early: None,
                changed: changed.clone(),
            };
            self.running.insert(id.clone(), running);
        }
    }

    fn is_halted(&self, w: &Waiting) -> bool {
        self.halts.values().any(|halt| {
            halt.changed
                .iter()
                .any(|(source, digest)| w.changed.get(source) == Some(digest))
        })
    }

    /// The first waiting roll in (wave, decision) order that may go now, but for a token.
    fn next_candidate(&self) -> Option<Wid> {
        if !self.ready {
            return None;
        }
        if let Some(max) = self.max_concurrent
            && self.running.len() + self.released.len() >= max.get()
        {
            return None;
        }
        // No roll starts while one of a lower wave is in progress or given its turn.
        let lowest_busy = self
            .running
            .values()
            .map(|r| r.wave)
            .chain(self.released.values().copied())
            .min();
        self.queue
            .values()
            .find(|id| !self.is_halted(&self.waiting[*id]))
            .filter(|id| lowest_busy.is_none_or(|low| self.waiting[*id].wave <= low))
            .cloned()
    }

    fn release(&mut self, id: Wid, now: Instant) -> Release {
        if let Some(bucket) = &mut self.bucket {
            bucket.take(now);
        }
        let w = self.waiting.remove(&id).expect("a candidate waits");
        self.queue.remove(&(w.wave, w.seq));
        self.released.insert(id.clone(), w.wave);
        Release::Decide(id)
    }

    fn timed_out(&self, now: Instant) -> Option<Wid> {
        self.running
            .iter()
            .find(|(_, r)| r.since + self.timeout <= now)
            .map(|(id, _)| id.clone())
    }

    fn fail(&mut self, id: &Wid, reason: FailureReason) -> Failure {
        let r = self.running.remove(id).expect("a rollout in progress");
        let halt = Halt {
            stamp: r.stamp,
            changed: r.changed.clone(),
        };
        self.halts.insert(id.clone(), halt);
        let held = self
            .waiting
            .iter()
            .filter(|(_, w)| self.is_halted(w))
            .map(|(id, _)| id.clone())
            .collect();
        Failure {
            id: id.clone(),
            reason,
            changed: r.changed,
            held,
        }
    }
}

/// Whether hashroll rolled the workload less than `timeout` ago (by the time it recorded).
fn rolled_within(w: &WorkloadSummary, timeout: Duration) -> bool {
    let Some(at) = w.stored.rolled_at else {
        return false;
    };
    let age = jiff::Timestamp::now().duration_since(at);
    age.is_positive() && age.unsigned_abs() < timeout
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kind::WorkloadKind;
    use std::sync::Arc;

    fn wid(name: &str) -> Wid {
        Arc::new(WorkloadId::new(WorkloadKind::Deployment, "ns", name))
    }

    fn per_minute(n: u32) -> Gate {
        let mut g = Gate::new(GateSettings {
            per_minute: NonZeroU32::new(n),
            ..GateSettings::default()
        });
        g.set_ready(true);
        g
    }

    fn none() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn admit(g: &mut Gate, name: &str) -> bool {
        g.admit(&wid(name), &none())
    }

    /// The next workload given its turn.
    async fn release(g: &mut Gate) -> Wid {
        match g.next_release().await {
            Release::Decide(id) => id,
            other => panic!("expected a turn, got {other:?}"),
        }
    }

    /// Plays the reconcile loop: each workload decided to roll is admitted or waits; each released one
    /// is decided again (and rolls). Returns when each roll went, from the start.
    async fn roll_all(gate: &mut Gate, names: &[&str]) -> Vec<(String, Duration)> {
        let start = Instant::now();
        let mut went = Vec::new();
        for n in names {
            if admit(gate, n) {
                went.push((n.to_string(), start.elapsed()));
            }
        }
        while went.len() < names.len() {
            let id = release(gate).await;
            assert!(gate.admit(&id, &none()), "a released roll goes through");
            gate.decided(&id, true);
            went.push((id.name.to_string(), start.elapsed()));
        }
        went
    }

    #[tokio::test(start_paused = true)]
    async fn off_by_default_every_roll_goes_at_once() {
        let mut gate = Gate::new(GateSettings::default());
        for n in ["a", "b", "c"] {
            assert!(admit(&mut gate, n));
        }
        assert_eq!(gate.waiting(), 0);
        let idle = tokio::time::timeout(Duration::from_secs(3600), gate.next_release()).await;
        assert!(idle.is_err(), "nothing is ever released");
    }

    #[tokio::test(start_paused = true)]
    async fn rolls_are_spaced_evenly_at_the_rate_in_the_order_they_were_decided() {
        let mut gate = per_minute(30);
        let went = roll_all(&mut gate, &["a", "b", "c", "d"]).await;
        let s = Duration::from_secs;
        assert_eq!(
            went,
            [
                ("a".into(), s(0)),
                ("b".into(), s(2)),
                ("c".into(), s(4)),
                ("d".into(), s(6))
            ]
        );
        assert_eq!(gate.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_fleet_saves_up_no_burst() {
        let mut gate = per_minute(60);
        tokio::time::sleep(Duration::from_secs(600)).await;
        let went = roll_all(&mut gate, &["a", "b", "c"]).await;
        let times: Vec<u64> = went.iter().map(|(_, d)| d.as_secs()).collect();
        assert_eq!(times, [0, 1, 2], "one token, not ten minutes' worth");
    }

    #[tokio::test(start_paused = true)]
    async fn a_workload_decided_again_while_it_waits_keeps_its_place() {
        let mut gate = per_minute(60);
        assert!(admit(&mut gate, "a"));
        assert!(!admit(&mut gate, "b"));
        assert!(!admit(&mut gate, "c"));
        assert!(!admit(&mut gate, "b"), "still waits");
        assert_eq!(gate.waiting(), 2);
        assert_eq!(&*release(&mut gate).await.name, "b");
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_workload_that_no_longer_rolls_gives_its_token_back() {
        let mut gate = per_minute(60);
        let start = Instant::now();
        assert!(admit(&mut gate, "a"));
        assert!(!admit(&mut gate, "b"));
        assert!(!admit(&mut gate, "c"));
        let b = release(&mut gate).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // Its source went back meanwhile: decided, nothing to roll.
        gate.decided(&b, false);
        let c = release(&mut gate).await;
        assert_eq!(
            (&*c.name, start.elapsed()),
            ("c", Duration::from_secs(1)),
            "the token b did not use"
        );
        // A roll decided afresh after that waits for the next token, not for b's.
        gate.decided(&c, true);
        assert!(gate.admit(&c, &none()));
        assert!(!admit(&mut gate, "d"));
        assert_eq!(&*release(&mut gate).await.name, "d");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_workload_leaves_the_queue() {
        let mut gate = per_minute(60);
        assert!(admit(&mut gate, "a"));
        assert!(!admit(&mut gate, "gone"));
        assert!(!admit(&mut gate, "b"));
        gate.forget(&wid("gone"));
        assert_eq!(gate.waiting(), 1);
        assert_eq!(&*release(&mut gate).await.name, "b");
    }

    // ---- waves ----

    const TIMEOUT: Duration = Duration::from_secs(300);

    fn waves_of(n: usize) -> Gate {
        let mut g = Gate::new(GateSettings {
            max_concurrent: NonZeroUsize::new(n),
            rollout_timeout: TIMEOUT,
            ..GateSettings::default()
        });
        g.set_ready(true);
        g
    }

    fn db(digest: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("secret/db".to_string(), digest.to_string())])
    }

    /// Workload `name` as a watch reports it: its version, its rollout and its wave.
    fn seen(name: &str, rv: u64, progress: Progress, wave: Option<u32>) -> WorkloadSummary {
        let mut annotations = BTreeMap::from([("hashroll.dev/reload".into(), "true".into())]);
        if let Some(w) = wave {
            annotations.insert("hashroll.dev/rollout-wave".into(), w.to_string());
        }
        let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            resource_version: Some(rv.to_string()),
            annotations: Some(annotations),
            ..Default::default()
        };
        let policy = crate::model::policy::PolicySettings::default();
        let mut s = WorkloadSummary::reduce(WorkloadKind::Deployment, &meta, None, policy).unwrap();
        s.progress = progress;
        s
    }

    /// Plays the loop for the next turn: decided again, the roll goes, its patch is answered at `rv`.
    async fn start_next(g: &mut Gate, changed: &BTreeMap<String, String>, rv: u64) -> String {
        let id = release(g).await;
        assert!(g.admit(&id, changed));
        g.decided(&id, true);
        assert_eq!(
            g.patched(&seen(&id.name, rv, Progress::Rolling, None)),
            None
        );
        id.name.to_string()
    }

    async fn nothing_within(g: &mut Gate, d: Duration) -> bool {
        tokio::time::timeout(d, g.next_release()).await.is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn waves_of_two_start_the_next_only_when_one_in_progress_is_done() {
        let mut g = waves_of(2);
        for n in ["a", "b", "c", "d", "e"] {
            assert!(!g.admit(&wid(n), &db("d1")), "{n}: every roll queues");
        }
        assert_eq!(start_next(&mut g, &db("d1"), 10).await, "a");
        assert_eq!(start_next(&mut g, &db("d1"), 11).await, "b");
        assert_eq!(g.in_progress(), 2);
        assert!(nothing_within(&mut g, Duration::from_secs(60)).await);
        // A status older than the roll's patch says nothing of it.
        assert_eq!(g.observe(&seen("a", 9, Progress::Done, None)), None);
        assert!(nothing_within(&mut g, Duration::from_secs(1)).await);
        assert_eq!(g.observe(&seen("a", 12, Progress::Done, None)), None);
        assert_eq!(start_next(&mut g, &db("d1"), 13).await, "c");
        assert!(nothing_within(&mut g, Duration::from_secs(1)).await);
        assert_eq!(g.observe(&seen("b", 14, Progress::Done, None)), None);
        assert_eq!(g.observe(&seen("c", 15, Progress::Done, None)), None);
        assert_eq!(start_next(&mut g, &db("d1"), 16).await, "d");
        assert_eq!(start_next(&mut g, &db("d1"), 17).await, "e");
        assert_eq!((g.waiting(), g.in_progress()), (0, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_status_that_overtakes_the_patchs_answer_counts() {
        let mut g = waves_of(1);
        for n in ["a", "b"] {
            assert!(!g.admit(&wid(n), &db("d1")));
        }
        let a = release(&mut g).await;
        assert!(g.admit(&a, &db("d1")));
        // The controller finished at once; its watch event comes before the answer to the patch.
        assert_eq!(g.observe(&seen("a", 11, Progress::Done, None)), None);
        assert_eq!(g.patched(&seen("a", 10, Progress::Rolling, None)), None);
        assert_eq!(g.in_progress(), 0);
        assert_eq!(&*release(&mut g).await.name, "b");
    }

    #[tokio::test(start_paused = true)]
    async fn lower_waves_go_first_and_no_wave_starts_while_a_lower_one_is_in_progress() {
        let mut g = waves_of(5);
        g.observe(&seen("canary", 1, Progress::Done, Some(0)));
        g.observe(&seen("early", 1, Progress::Done, Some(1)));
        for n in ["late", "early", "canary"] {
            assert!(!g.admit(&wid(n), &db("d1")));
        }
        assert_eq!(start_next(&mut g, &db("d1"), 10).await, "canary");
        assert!(
            nothing_within(&mut g, Duration::from_secs(60)).await,
            "room for more, but the canary's wave is not done"
        );
        g.observe(&seen("canary", 11, Progress::Done, Some(0)));
        assert_eq!(start_next(&mut g, &db("d1"), 12).await, "early");
        assert!(nothing_within(&mut g, Duration::from_secs(1)).await);
        g.observe(&seen("early", 13, Progress::Done, Some(1)));
        assert_eq!(start_next(&mut g, &db("d1"), 14).await, "late");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_rollout_halts_the_rolls_of_its_change_until_the_source_changes_again() {
        let mut g = waves_of(1);
        for n in ["a", "b", "c"] {
            assert!(!g.admit(&wid(n), &db("d1")));
        }
        // Another change, by another source: not halted by db's.
        let other = BTreeMap::from([("configmap/x".to_string(), "x1".to_string())]);
        assert!(!g.admit(&wid("x"), &other));
        assert_eq!(start_next(&mut g, &db("d1"), 10).await, "a");
        let failure = g
            .observe(&seen("a", 11, Progress::Failed, None))
            .expect("a failure");
        assert_eq!(&*failure.id.name, "a");
        assert_eq!(failure.reason, FailureReason::Failed);
        assert_eq!(failure.changed, db("d1"));
        let mut held: Vec<&str> = failure.held.iter().map(|w| &*w.name).collect();
        held.sort();
        assert_eq!(held, ["b", "c"]);
        assert_eq!((g.in_progress(), g.halted()), (0, 2));
        assert_eq!(start_next(&mut g, &db("d1"), 12).await, "x", "x goes");
        g.observe(&seen("x", 13, Progress::Done, None));
        assert!(
            nothing_within(&mut g, TIMEOUT * 2).await,
            "b and c are held"
        );
        // db changes again: what is still behind rolls, in waves.
        assert!(!g.admit(&wid("b"), &db("d2")));
        assert_eq!(start_next(&mut g, &db("d2"), 14).await, "b");
        assert!(
            nothing_within(&mut g, Duration::from_secs(1)).await,
            "c is still at d1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollout_not_done_in_time_fails_and_a_halt_marked_on_a_workload_is_known_after_a_restart()
     {
        let mut g = waves_of(1);
        for n in ["a", "b"] {
            assert!(!g.admit(&wid(n), &db("d1")));
        }
        assert_eq!(start_next(&mut g, &db("d1"), 10).await, "a");
        let start = Instant::now();
        match g.next_release().await {
            Release::Failed(f) => {
                assert_eq!((&*f.id.name, f.reason), ("a", FailureReason::Timeout));
                assert_eq!(f.held.len(), 1);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(start.elapsed(), TIMEOUT);

        // A new leader: the mark on `a` (the stamp it records, and what its roll changed) halts `b`.
        let mut g = waves_of(1);
        g.set_ready(false);
        let mut a = seen("a", 20, Progress::Rolling, None);
        let stamp = Stamp::parse(&format!("v1.{}.{}", "0".repeat(8), "1".repeat(32)));
        a.stored.stamp = stamp.clone();
        a.stored.rollout_failed = Some(Box::new((stamp.unwrap(), db("d1"))));
        assert!(a.halted().is_some());
        assert_eq!(g.observe(&a), None);
        assert!(!g.admit(&wid("b"), &db("d1")));
        assert!(
            nothing_within(&mut g, Duration::from_secs(1)).await,
            "nothing before the lists"
        );
        g.set_ready(true);
        assert_eq!(g.halted(), 1);
        assert!(nothing_within(&mut g, TIMEOUT).await);
    }
}
