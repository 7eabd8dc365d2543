//! The canary: the pipeline tests itself. The leader writes a ConfigMap of its own at `--canary-interval`
//! and times how long its own ConfigMap watch, through the reconcile loop, takes to bring the change back.
//! A stuck watch is the classic silent failure of a controller; a canary that does not come back within
//! `--canary-timeout` makes it loud (`/readyz` fails, a Warning Event, `hashroll_canary_stalled`).
//!
//! This is the bookkeeping, with no I/O and no wall clock; the writes are in [`crate::k8s::canary`]. Each
//! write carries a token (`<run>.<sequence>`) in an annotation; the run is random per process, so the
//! writes of a previous leader are never taken for this one's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A change in the canary's verdict, for the log, the Event and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing new.
    Same,
    /// The oldest write not seen back is older than the timeout: the pipeline is stalled (since how long).
    Stalled(Duration),
    /// Stalled before, and a write came back.
    Recovered,
}

/// The writes sent and not yet seen back, and whether the pipeline counts as stalled.
#[derive(Debug)]
pub struct Tracker {
    run: String,
    timeout: Duration,
    next_seq: u64,
    /// Writes sent, oldest first, with when they were sent.
    sent: VecDeque<(u64, Instant)>,
    stalled: bool,
}

impl Tracker {
    /// `run` tells this process's writes apart from any other's.
    pub fn new(run: String, timeout: Duration) -> Tracker {
        Tracker {
            run,
            timeout,
            next_seq: 0,
            sent: VecDeque::new(),
            stalled: false,
        }
    }

    /// The token of the next write, counted as sent now.
    pub fn sending(&mut self) -> String {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sent.push_back((seq, Instant::now()));
        format!("{}.{seq}", self.run)
    }

    /// The write with `token` could not be made: it will never come back, and says nothing of the watch.
    pub fn not_sent(&mut self, token: &str) {
        if let Some(seq) = self.ours(token) {
            self.sent.retain(|(s, _)| *s != seq);
        }
    }

    /// The watch delivered the canary carrying `token`: how long it took, if it is one of ours not seen
    /// yet. A later write seen settles the earlier ones too (a re-list delivers only the latest state).
    pub fn seen(&mut self, token: &str) -> Option<Duration> {
        let seq = self.ours(token)?;
        let (_, at) = *self.sent.iter().find(|(s, _)| *s == seq)?;
        self.sent.retain(|(s, _)| *s > seq);
        Some(at.elapsed())
    }

    /// Whether the pipeline counts as stalled now, and what changed since the last check.
    pub fn check(&mut self) -> Verdict {
        let late = self
            .sent
            .front()
            .map(|(_, at)| at.elapsed())
            .filter(|waited| *waited > self.timeout);
        match (late, self.stalled) {
            (Some(waited), false) => {
                self.stalled = true;
                Verdict::Stalled(waited)
            }
            (None, true) => {
                self.stalled = false;
                Verdict::Recovered
            }
            _ => Verdict::Same,
        }
    }

    /// When the oldest write still out will count as late (for the next check), if any is out.
    pub fn late_at(&self) -> Option<Instant> {
        self.sent.front().map(|(_, at)| *at + self.timeout)
    }

    /// Whether the last check found the pipeline stalled.
    pub fn stalled(&self) -> bool {
        self.stalled
    }

    /// Whether a write is late now (for `/readyz`, between two checks).
    pub fn is_late(&self) -> bool {
        self.late_at().is_some_and(|at| at < Instant::now())
    }

    fn ours(&self, token: &str) -> Option<u64> {
        let (run, seq) = token.rsplit_once('.')?;
        (run == self.run).then(|| seq.parse().ok()).flatten()
    }
}

/// The tracker, shared by the canary's writer and the reconcile loop (which reports what the watch
/// delivered). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Canary(Arc<Mutex<Tracker>>);

impl Canary {
    pub fn new(tracker: Tracker) -> Canary {
        Canary(Arc::new(Mutex::new(tracker)))
    }

    /// Runs `f` on the tracker.
    pub fn with<T>(&self, f: impl FnOnce(&mut Tracker) -> T) -> T {
        // A panic while holding the lock cannot leave the tracker half-updated in a way that matters.
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_write_seen_back_is_timed_once() {
        let mut t = Tracker::new("r1".into(), TIMEOUT);
        let token = t.sending();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(t.seen(&token), Some(Duration::from_millis(40)));
        assert_eq!(t.seen(&token), None, "seen again (a re-list): not timed");
        assert_eq!(t.check(), Verdict::Same);
        assert_eq!(t.late_at(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn another_processs_canary_is_not_ours() {
        let mut t = Tracker::new("r1".into(), TIMEOUT);
        let mine = t.sending();
        assert_eq!(t.seen("r0.0"), None);
        assert_eq!(t.seen("garbage"), None);
        assert_eq!(t.seen(&mine.replace("r1", "r10")), None);
        assert!(t.seen(&mine).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_not_seen_within_the_timeout_stalls_until_one_comes_back() {
        let mut t = Tracker::new("r".into(), TIMEOUT);
        let first = t.sending();
        tokio::time::sleep(TIMEOUT).await;
        assert_eq!(t.check(), Verdict::Same, "not late yet at the timeout");
        assert_eq!(t.late_at(), Some(Instant::now()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            t.check(),
            Verdict::Stalled(TIMEOUT + Duration::from_secs(1))
        );
        assert!(t.is_late());
        assert_eq!(t.check(), Verdict::Same, "said once");
        let second = t.sending();
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Only the latest comes back (a re-list after the watch recovered): it settles both.
        assert_eq!(t.seen(&second), Some(Duration::from_secs(5)));
        assert_eq!(t.seen(&first), None);
        assert!(!t.is_late(), "ready again as soon as it is seen");
        assert_eq!(t.check(), Verdict::Recovered);
        assert_eq!(t.check(), Verdict::Same);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_failed_is_not_waited_for() {
        let mut t = Tracker::new("r".into(), TIMEOUT);
        let token = t.sending();
        t.not_sent(&token);
        tokio::time::sleep(TIMEOUT * 2).await;
        assert_eq!(t.check(), Verdict::Same);
    }
}
