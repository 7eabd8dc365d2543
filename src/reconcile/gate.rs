//! The gate between "a roll is decided" and "the writer starts it": `--max-rollouts-per-minute`, a
//! fleet-wide token bucket. Off by default (every roll goes at once, as before).
//!
//! A roll the gate holds is not kept as a write: the workload waits in a queue, and when its turn comes it
//! is decided again, so the roll that goes carries the content of that moment, never a stale stamp. Its
//! turn's token is reserved for it; if its decision no longer rolls (the source went back), the token is
//! given back. Nothing here is persisted: after a restart or a failover the level-triggered pass decides
//! every workload again, and the gate holds the rolls again.

use std::collections::{HashSet, VecDeque};
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::kind::WorkloadId;
use crate::reconcile::scheduler::{Wid, shrink};

/// What the gate enforces, from the flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct GateSettings {
    /// `--max-rollouts-per-minute`: at most this many rolls started per minute, fleet-wide.
    pub per_minute: Option<NonZeroU32>,
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

    fn ready_at(&self) -> Instant {
        self.next
    }

    fn take(&mut self, now: Instant) {
        self.next = self.next.max(now) + self.interval;
    }

    /// A reserved token was not used: the next one comes as if it had not been taken.
    fn refund(&mut self, now: Instant) {
        self.next = (self.next - self.interval).max(now);
    }
}

/// Holds rolls back to the configured rate; hands them out, in the order they were decided, as tokens come.
#[derive(Debug)]
pub struct Gate {
    bucket: Option<Bucket>,
    /// Decided to roll and waiting for a token, in decision order (`queued` holds the same ids, to find
    /// them without a scan).
    queue: VecDeque<Wid>,
    queued: HashSet<Wid>,
    /// Given a token and sent to be decided again: their next roll goes through.
    released: HashSet<Wid>,
}

impl Gate {
    pub fn new(settings: GateSettings) -> Gate {
        Gate {
            bucket: settings.per_minute.map(Bucket::new),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            released: HashSet::new(),
        }
    }

    /// A roll of `id` is decided: true if it may be written now; false if it waits (the workload is
    /// queued, and handed out by [`Gate::next_release`] to be decided again).
    pub fn admit(&mut self, id: &Wid) -> bool {
        let Some(bucket) = &mut self.bucket else {
            return true;
        };
        if self.released.remove(id) {
            return true;
        }
        let now = Instant::now();
        // First come, first served: nothing overtakes a roll that waits already.
        if self.queue.is_empty() && bucket.ready_at() <= now {
            bucket.take(now);
            return true;
        }
        if self.queued.insert(id.clone()) {
            self.queue.push_back(id.clone());
        }
        false
    }

    /// `id` was decided; `rolls` says whether that decision was a roll (which then went through
    /// [`Gate::admit`]). A workload released with a token that decided not to roll gives it back.
    pub fn decided(&mut self, id: &WorkloadId, rolls: bool) {
        if !rolls
            && self.released.remove(id)
            && let Some(bucket) = &mut self.bucket
        {
            bucket.refund(Instant::now());
        }
    }

    /// The workload is gone.
    pub fn forget(&mut self, id: &WorkloadId) {
        if self.queued.remove(id) {
            self.queue.retain(|q| **q != *id);
        }
        self.decided(id, false);
    }

    /// Rolls waiting for their turn (a gauge).
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// The next workload whose roll may go, once its token is there: decide it again now. Pending while
    /// nothing waits. Cancel-safe: the token is taken only once the wait is over, without an await after.
    pub async fn next_release(&mut self) -> Wid {
        loop {
            let Some(at) = self
                .bucket
                .as_ref()
                .filter(|_| !self.queue.is_empty())
                .map(Bucket::ready_at)
            else {
                return std::future::pending().await;
            };
            tokio::time::sleep_until(at).await;
            let now = Instant::now();
            let (Some(bucket), Some(id)) = (&mut self.bucket, self.queue.pop_front()) else {
                continue;
            };
            bucket.take(now);
            self.queued.remove(&id);
            self.released.insert(id.clone());
            return id;
        }
    }

    /// After a burst, give the queue's capacity back.
    pub fn shrink(&mut self) {
        shrink(&mut self.queue);
        shrink(&mut self.queued);
        shrink(&mut self.released);
    }
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
        Gate::new(GateSettings {
            per_minute: NonZeroU32::new(n),
        })
    }

    /// Plays the reconcile loop: each workload decided to roll is admitted or waits; each released one
    /// is decided again (and rolls). Returns when each roll went, from the start.
    async fn roll_all(gate: &mut Gate, names: &[&str]) -> Vec<(String, Duration)> {
        let start = Instant::now();
        let mut went = Vec::new();
        for n in names {
            if gate.admit(&wid(n)) {
                went.push((n.to_string(), start.elapsed()));
            }
        }
        while went.len() < names.len() {
            let id = gate.next_release().await;
            assert!(gate.admit(&id), "a released roll goes through");
            gate.decided(&id, true);
            went.push((id.name.clone(), start.elapsed()));
        }
        went
    }

    #[tokio::test(start_paused = true)]
    async fn off_by_default_every_roll_goes_at_once() {
        let mut gate = Gate::new(GateSettings::default());
        for n in ["a", "b", "c"] {
            assert!(gate.admit(&wid(n)));
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
        assert!(gate.admit(&wid("a")));
        assert!(!gate.admit(&wid("b")));
        assert!(!gate.admit(&wid("c")));
        assert!(!gate.admit(&wid("b")), "still waits");
        assert_eq!(gate.waiting(), 2);
        assert_eq!(gate.next_release().await.name, "b");
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_workload_that_no_longer_rolls_gives_its_token_back() {
        let mut gate = per_minute(60);
        let start = Instant::now();
        assert!(gate.admit(&wid("a")));
        assert!(!gate.admit(&wid("b")));
        assert!(!gate.admit(&wid("c")));
        let b = gate.next_release().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // Its source went back meanwhile: decided, nothing to roll.
        gate.decided(&b, false);
        let c = gate.next_release().await;
        assert_eq!(
            (c.name.as_str(), start.elapsed()),
            ("c", Duration::from_secs(1)),
            "the token b did not use"
        );
        // A roll decided afresh after that waits for the next token, not for b's.
        gate.decided(&c, true);
        assert!(gate.admit(&c));
        assert!(!gate.admit(&wid("d")));
        assert_eq!(gate.next_release().await.name, "d");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_workload_leaves_the_queue() {
        let mut gate = per_minute(60);
        assert!(gate.admit(&wid("a")));
        assert!(!gate.admit(&wid("gone")));
        assert!(!gate.admit(&wid("b")));
        gate.forget(&wid("gone"));
        assert_eq!(gate.waiting(), 1);
        assert_eq!(gate.next_release().await.name, "b");
    }
}
