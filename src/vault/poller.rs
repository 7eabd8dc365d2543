//! The poll loop: every interval (with jitter) read each distinct Vault path the loop says is in use once,
//! a bounded number at a time, and report it to every namespace that uses it. Paths that appear between
//! rounds are read at once. Vault down (unreachable, sealed, no login) stops nothing but Vault's own
//! reports: what hashroll holds stays as it was, so nothing rolls, and it retries with backoff; one log
//! line per change of state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::model::kind::SourceId;
use crate::model::source::SourceSummary;
use crate::reconcile::input::{Input, Listed};
use crate::telemetry::metrics::Metrics;
use crate::vault::client::{Down, Read, VaultClient};

/// The sources to poll, as the reconcile loop publishes them (None until the workloads have listed).
pub type Targets = watch::Receiver<Option<Arc<Vec<SourceId>>>>;

#[derive(Debug, Clone, Copy)]
pub struct PollSettings {
    pub interval: Duration,
    pub concurrency: usize,
    pub key_level: bool,
}

/// The first retry after Vault went down; doubling up to the poll interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What one path answered last, to log each change once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathState {
    Present,
    Missing,
    Forbidden,
}

/// Runs until `tx` closes. Reads nothing until `leading` says this replica leads: a warm standby holds
/// the watches' state, but a second replica reading every path would double the load on Vault (and its
/// audit log). At takeover it reads every path at once, as a fresh start would, and `hashroll_vault_up`
/// appears only then: a standby has no view of Vault to report.
pub async fn run(
    mut client: VaultClient,
    mut targets: Targets,
    mut leading: watch::Receiver<bool>,
    tx: mpsc::Sender<Input>,
    metrics: Metrics,
    settings: PollSettings,
) {
    if leading.wait_for(|l| *l).await.is_err() {
        return;
    }
    metrics.enable_vault();
    let mut poller = Poller {
        down: None,
        first: true,
        paths: HashMap::new(),
        known: HashSet::new(),
        metrics,
        settings,
    };
    let mut next_full = Instant::now();
    let mut retry = FIRST_RETRY;
    loop {
        let ids = targets.borrow_and_update().clone();
        let Some(ids) = ids else {
            // Not published yet (the watches are still listing): nothing to read until it is.
            if targets.changed().await.is_err() {
                return;
            }
            continue;
        };
        let now = Instant::now();
        let full = now >= next_full;
        let wanted: Vec<&SourceId> = if full {
            ids.iter().collect()
        } else {
            // Between rounds, only paths not read yet: a workload that starts using one waits for
            // nothing.
            let new: HashSet<&str> = (ids.iter())
                .filter(|id| !poller.known.contains(*id))
                .map(|id| &*id.name)
                .collect();
            ids.iter().filter(|id| new.contains(&*id.name)).collect()
        };
        if full || !wanted.is_empty() {
            match poller.round(&mut client, &wanted, &tx).await {
                Ok(()) if full => {
                    retry = FIRST_RETRY;
                    next_full = now + jittered(settings.interval);
                }
                Ok(()) => {}
                Err(()) => {
                    next_full = Instant::now() + retry.min(settings.interval);
                    retry = (retry * 2).min(settings.interval);
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_full) => {}
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

struct Poller {
    /// Why Vault is down, while it is.
    down: Option<Down>,
    /// No round has succeeded yet.
    first: bool,
    paths: HashMap<String, PathState>,
    /// Sources covered by a successful read.
    known: HashSet<SourceId>,
    metrics: Metrics,
    settings: PollSettings,
}

impl Poller {
    /// Reads the paths of `ids` (each once) and reports them; Err when Vault answered none of them.
    async fn round(
        &mut self,
        client: &mut VaultClient,
        ids: &[&SourceId],
        tx: &mpsc::Sender<Input>,
    ) -> Result<(), ()> {
        let mut by_path: BTreeMap<&str, Vec<&SourceId>> = BTreeMap::new();
        for id in ids {
            by_path.entry(&*id.name).or_default().push(id);
        }
        if by_path.is_empty() {
            // Nothing to read: ask Vault how it is, so `hashroll_vault_up` says something true.
            return match client.health().await {
                Ok(()) => {
                    self.up();
                    Ok(())
                }
                Err(down) => {
                    self.went_down(down);
                    Err(())
                }
            };
        }
        let token = match client.token().await {
            Ok(t) => t,
            Err(down) => {
                self.went_down(down);
                return Err(());
            }
        };
        let key_level = self.settings.key_level;
        let reads: Vec<(&str, Result<Read, Down>)> = {
            let client = &*client;
            let reads: Vec<_> = (by_path.keys())
                .map(|path| read_one(client, path, &token, key_level))
                .collect();
            futures::stream::iter(reads)
                .buffer_unordered(self.settings.concurrency)
                .collect()
                .await
        };
        let forbidden = reads
            .iter()
            .filter(|(_, r)| matches!(r, Ok(Read::Forbidden)))
            .count();
        if forbidden == reads.len() && !client.token_is_valid(&token).await {
            // Every path refused, and the token itself too: revoked or expired, not a policy matter.
            client.forget_token();
            self.went_down(Down::Auth(
                "Vault refuses the token (revoked or expired); every path keeps its last state"
                    .into(),
            ));
            return Err(());
        }
        drop(token);
        let mut covered = Vec::new();
        let mut present = Listed::default();
        let mut first_down = None;
        for (path, read) in reads {
            let users = &by_path[path];
            let state = match read {
                Err(down) => {
                    self.metrics.vault_read("down");
                    first_down.get_or_insert(down);
                    continue;
                }
                Ok(Read::Present(keys)) => {
                    self.metrics.vault_read("ok");
                    let keys: crate::model::source::KeyDigests = keys.into();
                    for id in users {
                        present.insert(id.namespace.to_string(), id.name.to_string());
                        let summary = SourceSummary {
                            id: Arc::new(SourceId::clone(id)),
                            keys: keys.clone(),
                            ignore: false,
                            stakater_match: false,
                            excluded_type: None,
                        };
                        if tx.send(Input::SourceApplied(summary)).await.is_err() {
                            return Ok(());
                        }
                    }
                    PathState::Present
                }
                Ok(Read::Missing) => {
                    self.metrics.vault_read("missing");
                    PathState::Missing
                }
                Ok(Read::Forbidden) => {
                    self.metrics.vault_read("forbidden");
                    PathState::Forbidden
                }
            };
            self.path_state(path, state);
            covered.extend(users.iter().map(|id| (*id).clone()));
        }
        if covered.is_empty() {
            self.went_down(first_down.unwrap_or(Down::Unreachable("no answer".into())));
            return Err(());
        }
        self.known.extend(covered.iter().cloned());
        if let Some(down) = first_down {
            tracing::warn!(error = %down, "some Vault paths could not be read this round; they keep their last state");
        }
        self.up();
        let _ = tx.send(Input::Polled { covered, present }).await;
        Ok(())
    }

    fn path_state(&mut self, path: &str, state: PathState) {
        let was = self.paths.insert(path.to_string(), state);
        if was == Some(state) {
            return;
        }
        match state {
            PathState::Present if was.is_some() => {
                tracing::info!(vault_path = path, "Vault path readable again")
            }
            PathState::Present => {}
            PathState::Missing => tracing::warn!(
                vault_path = path,
                "Vault path not found; the workloads that use it hold until it exists"
            ),
            PathState::Forbidden => tracing::warn!(
                vault_path = path,
                "Vault path not readable with hashroll's token (permission denied); the workloads that use it hold"
            ),
        }
    }

    fn went_down(&mut self, down: Down) {
        self.metrics.vault_up(false);
        // One line per kind of outage, not per message: a retry's error text may differ.
        let same = |d: &Down| std::mem::discriminant(d) == std::mem::discriminant(&down);
        if !self.down.as_ref().is_some_and(same) {
            tracing::warn!(error = %down,
                "Vault is down: nothing rolls for Vault paths until it answers again; retrying with backoff");
            self.down = Some(down);
        }
    }

    fn up(&mut self) {
        self.metrics.vault_up(true);
        if self.down.take().is_some() {
            tracing::info!("Vault answers again; caught up");
        }
        if std::mem::take(&mut self.first) {
            tracing::info!(paths = self.paths.len(), "Vault polled once");
        }
    }
}

/// One read, named by its path (an `async fn`, so the borrows it holds need no closure to name them).
async fn read_one<'a>(
    client: &VaultClient,
    path: &'a str,
    token: &str,
    key_level: bool,
) -> (&'a str, Result<Read, Down>) {
    (path, client.read(path, token, key_level).await)
}

/// `interval` give or take 10%, so replicas and restarts do not poll in step.
fn jittered(interval: Duration) -> Duration {
    let spread = interval / 5;
    let r = getrandom::u64().unwrap_or(0) % 1_000_000;
    interval - interval / 10 + spread.mul_f64(r as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let i = Duration::from_secs(60);
        for _ in 0..100 {
            let j = jittered(i);
            assert!(
                j >= Duration::from_secs(54) && j <= Duration::from_secs(66),
                "{j:?}"
            );
        }
    }
}
