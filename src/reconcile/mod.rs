//! The reconcile loop: a thin `select!` over three parts with one job each. The [`state`] machine turns
//! inputs into effects (record, roll, hold, forget, publish); the [`scheduler`] says when each workload is
//! due (debounce, backoff, redo after a write in flight); the [`gate`] holds rolls back to the fleet-wide
//! rate and the rollout waves (opt-in); the [`writer`] carries writes out, a bounded number at a time (and
//! hands alerts to their own queue, never waiting). The loop only moves messages between them.

pub mod canary;
pub mod decision;
#[cfg(test)]
mod fixtures;
pub mod gate;
pub mod index;
pub mod input;
pub(crate) mod memory;
pub mod scheduler;
pub mod scopes;
pub mod skipped;
pub mod state;
pub mod wording;
pub mod writer;

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::ErrorClass;
use crate::reconcile::canary::Canary;
use crate::reconcile::gate::{Gate, Release};
use crate::reconcile::input::Input;
use crate::reconcile::scheduler::Scheduler;
use crate::reconcile::scopes::Readiness;
use crate::reconcile::state::{Effect, State};
use crate::reconcile::writer::{Writer, Written};
use crate::telemetry::metrics::Metrics;

/// How long writes in flight may take to finish at shutdown.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Inputs handled after which, once idle, the allocator's free pages go back to the OS.
const BURST: u64 = 1024;

/// The polled sources (Vault paths) workloads use, for the poller; None until every watch has listed.
pub type PolledTargets = watch::Sender<Option<std::sync::Arc<Vec<crate::model::kind::SourceId>>>>;
/// The parts the loop moves messages between.
pub struct Parts {
    pub state: State,
    pub scheduler: Scheduler,
    pub gate: Gate,
    pub writer: Writer,
    /// `--canary-interval`: times the canary writes the watch brings back.
    pub canary: Option<Canary>,
    /// True once this replica leads: before, the loop only takes in what the watches say (a warm
    /// standby), and decides and writes nothing.
    pub leading: watch::Receiver<bool>,
}

/// Runs until `shutdown` is cancelled or the inputs end; then waits (bounded) for writes in flight.
/// Readiness is published on `readiness` as it changes, and the polled sources in use on `targets`.
pub async fn run(
    parts: Parts,
    mut inputs: mpsc::Receiver<Input>,
    readiness: watch::Sender<Readiness>,
    targets: PolledTargets,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let Parts {
        mut state,
        mut scheduler,
        mut gate,
        mut writer,
        canary,
        leading: mut lead,
    } = parts;
    let mut leading = *lead.borrow_and_update();
    // Whether the sender is still there to say so (it lives as long as the run).
    let mut may_lead = true;
    let mut effects = Vec::new();
    let mut churn = 0u64;
    loop {
        let mut watches_changed = false;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            changed = lead.changed(), if !leading && may_lead => {
                if changed.is_err() {
                    may_lead = false;
                } else if *lead.borrow_and_update() {
                    leading = true;
                    take_over(&state, &mut gate, &mut effects);
                }
            }
            written = writer.next_written() => {
                on_written(written, &mut state, &mut scheduler, &mut gate, &metrics, &mut effects);
            }
            input = inputs.recv() => {
                let Some(input) = input else { break };
                // Drain what is already queued before deciding, so a burst is seen as one.
                let mut next = Some(input);
                while let Some(input) = next {
                    next = inputs.try_recv().ok();
                    if let Input::Canary(token) = &input {
                        let took = canary.as_ref().and_then(|c| c.with(|t| t.seen(token)));
                        if let Some(took) = took {
                            metrics.canary_seen(took);
                        }
                        continue;
                    }
                    churn += 1;
                    if leading
                        && let Input::WorkloadApplied(w) = &input
                        && let Some(f) = gate.observe(w)
                    {
                        state.rollout_failed(&f, &mut effects);
                    }
                    watches_changed |= matches!(input, Input::Synced(..) | Input::WatchFailed(..));
                    state.apply(input, Instant::now(), &mut effects);
                }
            }
            id = scheduler.next_due(), if leading => {
                let _timer = metrics.decision_timer();
                let now = jiff::Timestamp::now();
                decide(&mut state, &mut gate, &id, now, &mut effects);
                while let Some(id) = scheduler.next_ready() {
                    decide(&mut state, &mut gate, &id, now, &mut effects);
                }
            }
            // Its turn: decide it again, so the roll that goes carries the content of now.
            release = gate.next_release(), if leading => match release {
                Release::Decide(id) => scheduler.now(id),
                Release::Failed(f) => state.rollout_failed(&f, &mut effects),
            },
        }
        for effect in effects.drain(..) {
            match effect {
                Effect::Debounce(id) => scheduler.debounce(id),
                Effect::DecideNow(id) => scheduler.now(id),
                Effect::DecideAfter(id, wait) => scheduler.after(id, wait),
                Effect::Forget(id) => {
                    scheduler.forget(&id);
                    gate.forget(&id);
                }
                Effect::Write(w) if w.write.rolls() => {
                    let queued = !gate.is_waiting(&w.id);
                    if gate.admit(&w.id, &w.changed) {
                        scheduler.started(w.id.clone());
                        writer.write(w);
                    } else {
                        state.roll_held(&w, queued);
                    }
                }
                Effect::Write(w) => {
                    scheduler.started(w.id.clone());
                    writer.write(w);
                }
                Effect::Publish(e) => writer.publish(e),
                Effect::Alert(a) => writer.alert(a),
            }
        }
        metrics.waiting_rolls.set(gate.waiting() as i64);
        metrics.rollouts_in_progress.set(gate.in_progress() as i64);
        metrics.halted_rolls.set(gate.halted() as i64);
        if watches_changed {
            publish_readiness(&state, &readiness, &metrics);
            gate.set_ready(*readiness.borrow() == Readiness::Ready);
        }
        // Only with a poller listening (Vault configured): without one this costs nothing.
        if targets.receiver_count() > 0
            && let Some(t) = state.take_polled_targets()
        {
            targets.send_replace(Some(std::sync::Arc::new(t)));
        }
        // Once a burst (the initial sync, a re-list, a fan-out) is over, give back what it left behind:
        // spare capacity in the queues, then the allocator's free pages.
        if churn >= BURST && writer.is_idle() && *readiness.borrow() == Readiness::Ready {
            churn = 0;
            scheduler.shrink();
            gate.shrink();
            writer.shrink();
            state.shrink();
            effects.shrink_to_fit();
            memory::release_free_memory();
        }
    }
    writer.drain(DRAIN_LIMIT).await;
}

/// This replica leads now: everything it has watched as a standby is decided (level-triggered, as a fresh
/// start would), and the gate learns the rollouts in progress and the halts from what it holds.
fn take_over(state: &State, gate: &mut Gate, effects: &mut Vec<Effect>) {
    tracing::info!("leading: deciding every workload from the watched state, without listing");
    gate.set_ready(false);
    for w in state.summaries() {
        if let Some(f) = gate.observe(w) {
            tracing::warn!(workload = %f.id, "a rollout failed before the takeover");
        }
    }
    gate.set_ready(state.readiness() == Readiness::Ready);
    state.decide_all(effects);
}

/// Decides one due workload; a workload the gate released that no longer rolls gives its turn back.
fn decide(
    state: &mut State,
    gate: &mut Gate,
    id: &scheduler::Wid,
    now: jiff::Timestamp,
    effects: &mut Vec<Effect>,
) {
    let effect = state.decide(id, now);
    let rolls = matches!(&effect, Some(Effect::Write(w)) if w.write.rolls());
    gate.decided(id, rolls);
    effects.extend(effect);
}

fn on_written(
    written: Written,
    state: &mut State,
    scheduler: &mut Scheduler,
    gate: &mut Gate,
    metrics: &Metrics,
    effects: &mut Vec<Effect>,
) {
    let Written {
        id,
        rolled_for,
        changed_at,
        result,
    } = written;
    match result {
        Ok(summary) => {
            scheduler.succeeded(&id);
            effects.extend(state.write_succeeded(&id, rolled_for));
            if let Some(s) = summary {
                if let Some(f) = gate.patched(&s) {
                    state.rollout_failed(&f, effects);
                }
                state.written(s, effects);
            }
        }
        Err(e) => {
            gate.write_failed(&id);
            metrics.patch_error(
                id.kind,
                &id.namespace,
                &e.code_label(),
                e.class.metric_label(),
            );
            if e.class == ErrorClass::NotFound {
                tracing::info!(workload = %id, "workload is gone; nothing to roll");
                scheduler.abandoned(&id);
            } else {
                let retry_in = scheduler.failed(&id);
                tracing::warn!(workload = %id, error = %e, class = %e.class, ?retry_in,
                    "patch failed; will retry");
                effects.extend(state.write_failed(
                    &id,
                    e.class,
                    &e.answer(),
                    rolled_for.as_ref(),
                    changed_at,
                ));
            }
        }
    }
}

fn publish_readiness(state: &State, readiness: &watch::Sender<Readiness>, metrics: &Metrics) {
    let now = state.readiness();
    metrics.ready.set(i64::from(now == Readiness::Ready));
    readiness.send_if_modified(|was| {
        if *was == now {
            return false;
        }
        match &now {
            Readiness::Ready => {
                let (sources, workloads) = state.counts();
                tracing::info!(sources, workloads, "ready: every watch has listed");
            }
            Readiness::Failing(watches) => tracing::warn!(
                watches = %watches.join("; "),
                "not ready: watches failing before their first list"
            ),
            Readiness::Syncing => {}
        }
        *was = now;
        true
    });
}
