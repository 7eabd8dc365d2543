//! The reconcile loop: a thin `select!` over three parts with one job each. The [`state`] machine turns
//! inputs into effects (record, roll, hold, forget, publish); the [`scheduler`] says when each workload is
//! due (debounce, backoff, redo after a write in flight); the [`writer`] carries writes out, a bounded
//! number at a time. The loop only moves messages between them.

pub mod decision;
#[cfg(test)]
mod fixtures;
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

/// Runs until `shutdown` is cancelled or the inputs end; then waits (bounded) for writes in flight.
/// Readiness is published on `readiness` as it changes.
pub async fn run(
    mut state: State,
    mut scheduler: Scheduler,
    mut writer: Writer,
    mut inputs: mpsc::Receiver<Input>,
    readiness: watch::Sender<Readiness>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut effects = Vec::new();
    let mut churn = 0u64;
    loop {
        let mut watches_changed = false;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            written = writer.next_written() => {
                on_written(written, &mut state, &mut scheduler, &metrics, &mut effects);
            }
            input = inputs.recv() => {
                let Some(input) = input else { break };
                // Drain what is already queued before deciding, so a burst is seen as one.
                let mut next = Some(input);
                while let Some(input) = next {
                    churn += 1;
                    watches_changed |= matches!(input, Input::Synced(..) | Input::WatchFailed(..));
                    state.apply(input, Instant::now(), &mut effects);
                    next = inputs.try_recv().ok();
                }
            }
            id = scheduler.next_due() => {
                let _timer = metrics.decision_timer();
                let now = jiff::Timestamp::now();
                effects.extend(state.decide(&id, now));
                while let Some(id) = scheduler.next_ready() {
                    effects.extend(state.decide(&id, now));
                }
            }
        }
        for effect in effects.drain(..) {
            match effect {
                Effect::Debounce(id) => scheduler.debounce(id),
                Effect::DecideNow(id) => scheduler.now(id),
                Effect::DecideAfter(id, wait) => scheduler.after(id, wait),
                Effect::Forget(id) => scheduler.forget(&id),
                Effect::Write(w) => {
                    scheduler.started(w.id.clone());
                    writer.write(w);
                }
                Effect::Publish(e) => writer.publish(e),
            }
        }
        if watches_changed {
            publish_readiness(&state, &readiness, &metrics);
        }
        // Once a burst (the initial sync, a re-list, a fan-out) is over, give back what it left behind:
        // spare capacity in the queues, then the allocator's free pages.
        if churn >= BURST && writer.is_idle() && *readiness.borrow() == Readiness::Ready {
            churn = 0;
            scheduler.shrink();
            writer.shrink();
            state.shrink();
            effects.shrink_to_fit();
            memory::release_free_memory();
        }
    }
    writer.drain(DRAIN_LIMIT).await;
}

fn on_written(
    written: Written,
    state: &mut State,
    scheduler: &mut Scheduler,
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
            state.write_succeeded(&id);
            if let Some(s) = summary {
                state.written(s, effects);
            }
        }
        Err(e) => {
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
                    rolled_for.as_deref(),
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
