//! When to decide about each workload: debounce with a max-wait, per-workload backoff after a failed write,
//! and "once more" for a workload that changed while its write was in flight.
//!
//! kube-runtime's scheduler debounces too, but has no max-wait: a source that changes every second would
//! push a roll back forever. The timer wheel is tokio-util's `DelayQueue`; the rules are here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

use crate::model::kind::WorkloadId;

/// Workload ids are allocated once and shared by every map and queue (see the state machine).
pub type Wid = Arc<WorkloadId>;

/// A burst is debounced for at most this many windows after its first change.
const MAX_WAIT_WINDOWS: u32 = 5;

/// A failed write is retried after 0.5 s, doubling up to one minute, for as long as it keeps failing.
fn retry_backoff() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(60))
        .without_max_times()
        .build()
}

struct Pending {
    /// Where it waits in the delay queue; None while it waits in the ready queue.
    key: Option<Key>,
    due: Instant,
    /// When the burst this decision belongs to began: the max-wait counts from here.
    first: Instant,
}

/// Decides when each workload is due; hands out due workloads one at a time.
pub struct Scheduler {
    window: Duration,
    queue: DelayQueue<Wid>,
    /// Due now: handed out without a trip through the timer wheel, whose millisecond ticks would add up
    /// to a millisecond to every reaction. May hold stale ids (rescheduled or forgotten since): skipped.
    ready: VecDeque<Wid>,
    pending: HashMap<Wid, Pending>,
    in_flight: HashSet<Wid>,
    /// Became due while in flight: decide again once the write is done.
    redo: HashSet<Wid>,
    backoff: HashMap<Wid, ExponentialBackoff>,
}

impl Scheduler {
    /// `window`: the debounce window (zero decides at once).
    pub fn new(window: Duration) -> Scheduler {
        Scheduler {
            window,
            queue: DelayQueue::new(),
            ready: VecDeque::new(),
            pending: HashMap::new(),
            in_flight: HashSet::new(),
            redo: HashSet::new(),
            backoff: HashMap::new(),
        }
    }

    /// A source changed: decide after the window, pushing the decision back while changes keep coming,
    /// but never more than five windows after the first.
    pub fn debounce(&mut self, id: Wid) {
        let now = Instant::now();
        let (due, first) = match self.pending.get(&id) {
            Some(p) => (
                (now + self.window).min(p.first + self.window * MAX_WAIT_WINDOWS),
                p.first,
            ),
            None => (now + self.window, now),
        };
        self.set(id, due, first);
    }

    /// The workload itself changed (or a list completed): decide now, unless a decision is pending
    /// already (a status update must not cut a burst of source changes short).
    pub fn now(&mut self, id: Wid) {
        if !self.pending.contains_key(&id) {
            let now = Instant::now();
            self.set(id, now, now);
        }
    }

    /// A roll waits (a pause period): decide again after `wait`, or earlier if a decision is due
    /// sooner (it finds the roll still waiting, and asks again).
    pub fn after(&mut self, id: Wid, wait: Duration) {
        let due = Instant::now() + wait;
        match self.pending.get(&id) {
            Some(p) if p.due <= due => {}
            _ => self.set(id, due, due),
        }
    }

    /// The workload is gone: forget everything about it.
    pub fn forget(&mut self, id: &WorkloadId) {
        if let Some(Pending { key: Some(key), .. }) = self.pending.remove(id) {
            self.queue.remove(&key);
        }
        self.redo.remove(id);
        self.backoff.remove(id);
    }

    /// A write for `id` was handed to the writer.
    pub fn started(&mut self, id: Wid) {
        self.in_flight.insert(id);
    }

    /// The write succeeded: the backoff starts over, and a change seen meanwhile is decided now.
    pub fn succeeded(&mut self, id: &Wid) {
        self.in_flight.remove(id);
        self.backoff.remove(id);
        if self.redo.remove(id) {
            self.now(id.clone());
        }
    }

    /// The write failed and is worth retrying: decide again after this workload's next backoff delay
    /// (returned, for the log). A change seen meanwhile is covered by that decision.
    pub fn failed(&mut self, id: &Wid) -> Duration {
        self.in_flight.remove(id);
        self.redo.remove(id);
        let delay = self
            .backoff
            .entry(id.clone())
            .or_insert_with(retry_backoff)
            .next()
            .unwrap_or(Duration::from_secs(60));
        let due = Instant::now() + delay;
        // A retry is a decision of its own, not part of a burst: it may come earlier, never later.
        match self.pending.get(id) {
            Some(p) if p.due <= due => {}
            _ => self.set(id.clone(), due, due),
        }
        delay
    }

    /// The write failed for good (the workload is gone, or the write can never succeed): nothing to retry.
    pub fn abandoned(&mut self, id: &Wid) {
        self.in_flight.remove(id);
        self.redo.remove(id);
        self.backoff.remove(id);
    }

    /// The next workload due, in due order; pending while none is. A workload that falls due while its
    /// write is in flight is not handed out but remembered, and decided when the write is done.
    /// Cancel-safe: nothing is taken out of the queue across an await.
    pub async fn next_due(&mut self) -> Wid {
        loop {
            if let Some(id) = self.next_ready() {
                return id;
            }
            if self.queue.is_empty() {
                std::future::pending::<()>().await;
            }
            let Some(expired) = self.queue.next().await else {
                continue;
            };
            let id = expired.into_inner();
            self.pending.remove(&id);
            if self.in_flight.contains(&id) {
                self.redo.insert(id);
                continue;
            }
            return id;
        }
    }

    /// The next workload due now without waiting, if any: lets the loop decide a burst (thousands at first
    /// sight) in one go instead of one per turn, behind every write that finishes meanwhile.
    pub fn next_ready(&mut self) -> Option<Wid> {
        while let Some(id) = self.ready.pop_front() {
            if self.pending.get(&id).is_none_or(|p| p.key.is_some()) {
                continue;
            }
            self.pending.remove(&id);
            if self.in_flight.contains(&id) {
                self.redo.insert(id);
                continue;
            }
            return Some(id);
        }
        None
    }

    /// Nothing is scheduled, in flight or waiting to be redone.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.in_flight.is_empty() && self.redo.is_empty()
    }

    /// After a burst (thousands of first sights), give the maps' capacity back.
    pub fn shrink(&mut self) {
        shrink(&mut self.pending);
        shrink(&mut self.in_flight);
        shrink(&mut self.redo);
        shrink(&mut self.backoff);
        shrink(&mut self.ready);
        if self.queue.is_empty() && self.queue.capacity() > SHRINK_ABOVE {
            self.queue.shrink_to_fit();
        }
    }

    fn set(&mut self, id: Wid, due: Instant, first: Instant) {
        let due_now = due <= Instant::now();
        match self.pending.get_mut(&id) {
            Some(p) => {
                p.due = due;
                p.first = first;
                match (p.key.take(), due_now) {
                    (Some(key), true) => {
                        self.queue.remove(&key);
                        self.ready.push_back(id);
                    }
                    (Some(key), false) => {
                        self.queue.reset_at(&key, due);
                        p.key = Some(key);
                    }
                    // Already in the ready queue.
                    (None, true) => {}
                    // Pushed back: its entry in the ready queue goes stale.
                    (None, false) => p.key = Some(self.queue.insert_at(id, due)),
                }
            }
            None => {
                let key = if due_now {
                    self.ready.push_back(id.clone());
                    None
                } else {
                    Some(self.queue.insert_at(id.clone(), due))
                };
                self.pending.insert(id, Pending { key, due, first });
            }
        }
    }
}

/// Collections smaller than this are not worth shrinking.
const SHRINK_ABOVE: usize = 64;

/// Something with a length and a capacity that can be shrunk.
pub trait Shrink {
    fn len_and_capacity(&self) -> (usize, usize);
    fn shrink_to_fit(&mut self);
}

impl<K: Eq + std::hash::Hash, V> Shrink for HashMap<K, V> {
    fn len_and_capacity(&self) -> (usize, usize) {
        (self.len(), self.capacity())
    }
    fn shrink_to_fit(&mut self) {
        HashMap::shrink_to_fit(self)
    }
}

impl<K: Eq + std::hash::Hash> Shrink for HashSet<K> {
    fn len_and_capacity(&self) -> (usize, usize) {
        (self.len(), self.capacity())
    }
    fn shrink_to_fit(&mut self) {
        HashSet::shrink_to_fit(self)
    }
}

impl<T> Shrink for std::collections::VecDeque<T> {
    fn len_and_capacity(&self) -> (usize, usize) {
        (self.len(), self.capacity())
    }
    fn shrink_to_fit(&mut self) {
        std::collections::VecDeque::shrink_to_fit(self)
    }
}

/// Gives back the capacity a burst left behind: worth it when large and at most an eighth used.
pub fn shrink(c: &mut impl Shrink) {
    let (len, capacity) = c.len_and_capacity();
    if capacity > SHRINK_ABOVE && len < capacity / 8 {
        c.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kind::WorkloadKind;

    fn wid(name: &str) -> Wid {
        Arc::new(WorkloadId::new(WorkloadKind::Deployment, "ns", name))
    }

    const W: Duration = Duration::from_secs(2);

    /// The next due workload and when it came due, measured on the paused clock.
    async fn next(s: &mut Scheduler, start: Instant) -> (String, Duration) {
        let id = s.next_due().await;
        (id.name.to_string(), Instant::now() - start)
    }

    /// Whether anything falls due within `d`.
    async fn due_within(s: &mut Scheduler, d: Duration) -> bool {
        tokio::time::timeout(d, s.next_due()).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_decided_once_a_window_after_its_last_change() {
        let mut s = Scheduler::new(W);
        let start = Instant::now();
        s.debounce(wid("web"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.debounce(wid("web"));
        assert_eq!(
            next(&mut s, start).await,
            ("web".into(), W + Duration::from_secs(1))
        );
        assert!(!due_within(&mut s, W * 10).await, "decided once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_every_second_is_decided_five_windows_after_the_first() {
        let mut s = Scheduler::new(W);
        let start = Instant::now();
        s.debounce(wid("web"));
        let decided = loop {
            tokio::select! {
                id = s.next_due() => break (id.name.clone(), Instant::now() - start),
                _ = tokio::time::sleep(Duration::from_secs(1)) => s.debounce(wid("web")),
            }
        };
        assert_eq!(decided, ("web".into(), W * 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_window_decides_at_once_and_workloads_come_in_due_order() {
        let mut s = Scheduler::new(Duration::ZERO);
        let start = Instant::now();
        s.debounce(wid("a"));
        assert_eq!(next(&mut s, start).await, ("a".into(), Duration::ZERO));

        let mut s = Scheduler::new(W);
        s.debounce(wid("late"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.now(wid("early"));
        assert_eq!(next(&mut s, start).await.0, "early");
        assert_eq!(next(&mut s, start).await, ("late".into(), W));
    }

    #[tokio::test(start_paused = true)]
    async fn a_status_update_does_not_cut_a_burst_short() {
        let mut s = Scheduler::new(W);
        let start = Instant::now();
        s.debounce(wid("web"));
        s.now(wid("web"));
        assert_eq!(next(&mut s, start).await, ("web".into(), W));
    }

    #[tokio::test(start_paused = true)]
    async fn a_decision_due_now_joins_a_burst_that_starts_before_it_is_taken() {
        let mut s = Scheduler::new(W);
        let start = Instant::now();
        s.now(wid("web"));
        s.debounce(wid("web"));
        assert_eq!(next(&mut s, start).await, ("web".into(), W));
        assert!(!due_within(&mut s, W * 10).await, "decided once");
        // And back: due now again after being pushed back, it is handed out once, at once.
        s.debounce(wid("api"));
        s.forget(&wid("api"));
        s.now(wid("api"));
        let start = Instant::now();
        assert_eq!(next(&mut s, start).await, ("api".into(), Duration::ZERO));
        assert!(!due_within(&mut s, W * 10).await);
    }

    #[tokio::test(start_paused = true)]
    async fn due_while_in_flight_is_decided_again_when_the_write_is_done() {
        let mut s = Scheduler::new(Duration::ZERO);
        let start = Instant::now();
        s.now(wid("web"));
        let id = s.next_due().await;
        s.started(id.clone());
        s.debounce(wid("web"));
        assert!(!due_within(&mut s, W).await, "held back while in flight");
        s.succeeded(&id);
        assert_eq!(next(&mut s, start).await.0, "web");
        assert!(s.is_idle());
        // Without a change meanwhile, success schedules nothing.
        s.started(id.clone());
        s.succeeded(&id);
        assert!(!due_within(&mut s, W).await);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_writes_back_off_from_half_a_second_doubling_to_a_minute() {
        let mut s = Scheduler::new(Duration::ZERO);
        let id = wid("web");
        let mut delays = Vec::new();
        for _ in 0..10 {
            s.started(id.clone());
            let start = Instant::now();
            let d = s.failed(&id);
            assert_eq!(next(&mut s, start).await, ("web".into(), d));
            delays.push(d.as_millis());
        }
        assert_eq!(
            delays,
            [
                500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000
            ]
        );
        // Success starts the backoff over.
        s.started(id.clone());
        s.succeeded(&id);
        s.started(id.clone());
        assert_eq!(s.failed(&id), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_roll_is_decided_after_its_wait_or_sooner_when_something_else_is_due() {
        let mut s = Scheduler::new(W);
        let start = Instant::now();
        s.after(wid("web"), Duration::from_secs(30));
        assert_eq!(
            next(&mut s, start).await,
            ("web".into(), Duration::from_secs(30))
        );
        // A change meanwhile is decided as usual (and finds the roll still waiting, if it is).
        let start = Instant::now();
        s.after(wid("web"), Duration::from_secs(30));
        s.debounce(wid("web"));
        assert_eq!(next(&mut s, start).await, ("web".into(), W));
        // A wait never postpones a decision due sooner.
        let start = Instant::now();
        s.debounce(wid("web"));
        s.after(wid("web"), Duration::from_secs(30));
        assert_eq!(next(&mut s, start).await, ("web".into(), W));
        assert!(s.is_idle());
    }

    #[tokio::test(start_paused = true)]
    async fn a_forgotten_workload_is_never_due() {
        let mut s = Scheduler::new(W);
        s.debounce(wid("gone"));
        s.forget(&wid("gone"));
        assert!(!due_within(&mut s, W * 10).await);
        assert!(s.is_idle());
    }
}
