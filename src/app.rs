//! Wiring only: flags → client → admin server → (leadership) → installation key → watches → the reconcile
//! loop, until shutdown. Decisions live in `reconcile`, API calls in `k8s`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::alerts::{self, AlertQueue};
use crate::cli::{AdminAddr, Args, labels_matching};
use crate::error::Error;
use crate::k8s::canary::CanarySettings;
use crate::k8s::events::EventPublisher;
use crate::k8s::key_secret;
use crate::k8s::leader::{self, ElectionSettings, Elector};
use crate::k8s::watch::{WatchSettings, initial_list_path, run_scope};
use crate::model::hashing::InstallationKey;
use crate::model::kind::{SourceKind, WorkloadKind};
use crate::reconcile::canary::{Canary, Tracker};
use crate::reconcile::gate::Gate;
use crate::reconcile::input::{WatchScope, Watched};
use crate::reconcile::scheduler::Scheduler;
use crate::reconcile::scopes::Readiness;
use crate::reconcile::skipped::Skip;
use crate::reconcile::state::{self, State};
use crate::reconcile::writer::Writer;
use crate::telemetry::admin::{self, Health};
use crate::telemetry::metrics::{Metrics, MetricsSettings};
use crate::vault::client::VaultClient;

/// The client configuration from the kubeconfig flags (the controller's, and `explain`'s).
pub(crate) async fn client_config(args: &Args) -> anyhow::Result<Config> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}: cannot read it", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| format!("--kubeconfig {}: unusable", path.display()))
        }
        None if args.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .context("--context: cannot load the kubeconfig"),
        None => Config::infer()
            .await
            .context("no kubeconfig and not running in a cluster (set --kubeconfig)"),
    }
}

/// Runs hashroll until `shutdown` resolves: connect, load the key, watch, reconcile; then stop cleanly.
/// With `--leader-elect` it first waits for the Lease, and fails (so the process exits non-zero) the moment
/// it loses it.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Before any connection: an unreadable CA file fails at once.
    let mut vault = match args.vault.addr() {
        Some(addr) => Some((
            crate::vault::client::VaultClient::new(&args.vault, addr.clone())?,
            addr,
        )),
        None => None,
    };
    let config = client_config(&args).await?;
    let controller_ns = args.controller_namespace(&config.default_namespace);
    let client = crate::k8s::client::build(config).context("building the Kubernetes client")?;

    let metrics = Metrics::with(MetricsSettings {
        namespace_label: args.metrics_namespace_label,
        debounce: args.debounce,
    });
    let (readiness_tx, readiness) = watch::channel(Readiness::Syncing);
    let canary = canary_settings(&args, &controller_ns).map(|s| {
        let tracker = Tracker::new(leader::identity(&args.instance()), s.timeout);
        (s, Canary::new(tracker))
    });
    let standby = Arc::new(AtomicBool::new(false));
    // Cancelled once, at shutdown: the admin server and the loop stop on it.
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();

    // Before the election: a standby answers /healthz, /readyz and /metrics too.
    if let AdminAddr::At(addr) = args.admin_addr {
        let health = Health {
            metrics: metrics.clone(),
            readiness,
            standby: standby.clone(),
            canary: canary.as_ref().map(|(_, c)| c.clone()),
        };
        start_admin(addr, health, stop.clone()).await;
    }

    let mut shutdown = std::pin::pin!(shutdown);
    // The loop writes nothing before this says it leads (at once without `--leader-elect`).
    let (leading_tx, leading) = watch::channel(!args.election.leader_elect);
    let events = EventPublisher::new(client.clone(), args.instance());
    let mut readiness_tx = Some(readiness_tx);
    let mut start = |key: InstallationKey| {
        let readiness = readiness_tx.take().expect("one pipeline per run");
        let (client, metrics, args) = (client.clone(), metrics.clone(), &args);
        let (events, leading, stop) = (events.clone(), leading.clone(), stop.clone());
        let tracker = canary.as_ref().map(|(_, c)| c.clone());
        let vault = vault.take();
        async move {
            let edges = Edges {
                client,
                metrics,
                events,
                stop,
            };
            Pipeline::start(args, edges, key, readiness, leading, tracker, vault).await
        }
    };

    // `--warm-standby`: watch and index before leading, so that a takeover decides at once.
    let mut pipeline = None;
    if args.election.leader_elect && args.warm_standby {
        metrics.leader.set(0);
        standby.store(true, Ordering::Relaxed);
        let key = tokio::select! {
            key = load_key(&client, &controller_ns, &args.key_secret) => key?,
            _ = shutdown.as_mut() => return Ok(()),
        };
        tracing::info!(namespace = %controller_ns, key_id = key.id(), "installation key loaded");
        pipeline = Some(start(key).await);
        tracing::info!("warm standby: watching, deciding nothing until leading");
    }

    let leadership = if args.election.leader_elect {
        let settings = ElectionSettings {
            namespace: args
                .election
                .leader_election_namespace
                .clone()
                .unwrap_or_else(|| controller_ns.clone()),
            name: args.election.leader_election_lease_name.clone(),
            identity: leader::identity(&args.instance()),
            lease_duration: args.election.leader_election_lease_duration,
            renew_deadline: args.election.leader_election_renew_deadline,
            retry_period: args.election.leader_election_retry_period,
        };
        let mut elector = Elector::new(client.clone(), settings);
        metrics.leader.set(0);
        standby.store(true, Ordering::Relaxed);
        tokio::select! {
            acquired = elector.acquire() => acquired?,
            _ = shutdown.as_mut() => {
                tracing::info!(lease = %elector.lease(), "stopped while waiting to become leader");
                if let Some(p) = pipeline {
                    p.stop(&stop).await;
                }
                return Ok(());
            }
        }
        standby.store(false, Ordering::Relaxed);
        Some(Leadership::start(elector))
    } else {
        None
    };
    metrics.leader.set(1);
    let mut lost = Box::pin(async {
        match &leadership {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    });

    let mut pipeline = match pipeline {
        Some(p) => p,
        None => {
            let key = tokio::select! {
                key = load_key(&client, &controller_ns, &args.key_secret) => key?,
                reason = lost.as_mut() => return Err(lost_leadership(&leadership, &metrics, reason)),
            };
            tracing::info!(namespace = %controller_ns, key_id = key.id(), "installation key loaded");
            start(key).await
        }
    };

    // Lost while loading the key or probing for Rollouts: never start writing.
    if let Some(reason) = leadership.as_ref().and_then(Leadership::lost_now) {
        pipeline.reconcile.abort();
        return Err(lost_leadership(&leadership, &metrics, reason));
    }
    let _ = leading_tx.send(true);
    // Written by the leader only: it starts here, and stops with the watches.
    if let Some((settings, canary)) = &canary {
        pipeline.watches.spawn(crate::k8s::canary::run(
            client.clone(),
            settings.clone(),
            canary.clone(),
            metrics.clone(),
            events.clone(),
        ));
    }

    tokio::select! {
        _ = shutdown.as_mut() => {}
        _ = &mut pipeline.reconcile => {}
        reason = lost.as_mut() => {
            // Another replica may be writing already: stop at once, without finishing patches in flight.
            pipeline.reconcile.abort();
            return Err(lost_leadership(&leadership, &metrics, reason));
        }
    }
    pipeline.stop(&stop).await;
    drop(lost);
    if let Some(l) = leadership {
        l.release().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long alerts still queued at shutdown may take to go out.
const ALERT_DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// The alert queue, from the flags or (under `--stakater-compat`) Reloader's `ALERT_*` variables; a queue
/// that does nothing when alerts are off.
fn start_alerts(
    args: &Args,
    metrics: &Metrics,
) -> (AlertQueue, Option<tokio::task::JoinHandle<()>>) {
    let (settings, warning) = alerts::settings::resolve(&args.alerts, args.stakater_compat, |k| {
        std::env::var(k).ok()
    });
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    match settings {
        Some(s) => alerts::sender::start(s, metrics.clone()),
        None => (AlertQueue::off(metrics.clone()), None),
    }
}

/// What the pipeline talks to and through.
struct Edges {
    client: Client,
    metrics: Metrics,
    events: EventPublisher,
    stop: CancellationToken,
}

/// The watches, the Vault poller, the reconcile loop and the alert sender.
struct Pipeline {
    watches: JoinSet<()>,
    poller: Option<tokio::task::JoinHandle<()>>,
    reconcile: tokio::task::JoinHandle<()>,
    alert_sender: Option<tokio::task::JoinHandle<()>>,
}

impl Pipeline {
    /// Starts the watches, the Vault poller and the reconcile loop, which decides and writes only once
    /// `leading` says so.
    async fn start(
        args: &Args,
        edges: Edges,
        key: InstallationKey,
        readiness: watch::Sender<Readiness>,
        leading: watch::Receiver<bool>,
        canary: Option<Canary>,
        vault: Option<(VaultClient, String)>,
    ) -> Pipeline {
        let Edges {
            client,
            metrics,
            events,
            stop,
        } = edges;
        let mut args = args.clone();
        let mut kinds = args.workload_kinds();
        if kinds.contains(&WorkloadKind::Rollout) && !rollouts_served(&client).await {
            tracing::info!(
                "argoproj.io/v1alpha1 Rollouts are not served by this cluster; not watching them"
            );
            kinds.remove(&WorkloadKind::Rollout);
        }
        if args
            .source_kinds()
            .contains(&SourceKind::SecretProviderClass)
            && !crate::k8s::csi::served(&client).await
        {
            tracing::info!(
                "secrets-store.csi.x-k8s.io/v1 SecretProviderClasses are not served by this cluster; not watching them"
            );
            args.watch.retain(|k| *k != SourceKind::SecretProviderClass);
        }
        let args = &args;
        let scopes = watch_scopes(args, &kinds);
        let reasons: Vec<&str> = Skip::ALL.iter().map(|s| s.label()).collect();
        metrics.preset(kinds.iter().copied(), &reasons);

        let (tx, rx) = mpsc::channel(1024);
        let (targets_tx, targets) = watch::channel(None);
        let poller = match vault {
            Some((client, addr)) => {
                let settings = crate::vault::poller::PollSettings {
                    interval: args.vault.vault_poll_interval,
                    concurrency: usize::from(args.vault.vault_concurrency),
                    key_level: args.vault.vault_key_level,
                };
                tracing::info!(addr = %addr, auth = ?args.vault.vault_auth_method,
                    key_level = settings.key_level, interval = ?settings.interval, "polling Vault paths");
                Some(tokio::spawn(crate::vault::poller::run(
                    client,
                    targets,
                    leading.clone(),
                    tx.clone(),
                    metrics.clone(),
                    settings,
                )))
            }
            None => {
                drop(targets);
                None
            }
        };
        let mut watch_settings = WatchSettings::from(args);
        watch_settings.initial_list =
            initial_list_path(&client, args.initial_list, scopes.first()).await;
        tracing::info!(
            initial_list = watch_settings.initial_list.as_str(),
            asked = ?args.initial_list,
            "initial list path chosen"
        );
        let mut watches = JoinSet::new();
        for scope in &scopes {
            watches.spawn(run_scope(
                client.clone(),
                scope.clone(),
                watch_settings.clone(),
                tx.clone(),
                metrics.clone(),
            ));
        }
        drop(tx);
        tracing::info!(
            watches = watches.len(),
            dry_run = args.dry_run,
            debounce = ?args.debounce,
            "hashroll started"
        );

        let state = State::new(
            state::Settings {
                dry_run: args.dry_run,
                namespaces: args.into(),
                visibility: args.into(),
                scopes,
            },
            key,
            metrics.clone(),
        );
        let (alerts, alert_sender) = start_alerts(args, &metrics);
        let writer = Writer::new(
            client,
            events,
            metrics.clone(),
            args.into(),
            usize::from(args.patch_concurrency),
            alerts,
        );
        let parts = crate::reconcile::Parts {
            state,
            scheduler: Scheduler::new(args.debounce),
            gate: Gate::new(args.into()),
            writer,
            canary,
            leading,
        };
        let reconcile = tokio::spawn(crate::reconcile::run(
            parts, rx, readiness, targets_tx, metrics, stop,
        ));
        Pipeline {
            watches,
            poller,
            reconcile,
            alert_sender,
        }
    }

    /// Stops the watches and the poller, then the loop (which finishes the patches in flight, bounded),
    /// then lets queued alerts go out (bounded).
    async fn stop(mut self, stop: &CancellationToken) {
        tracing::info!("stopping watches");
        self.watches.abort_all();
        if let Some(p) = &self.poller {
            p.abort();
        }
        stop.cancel();
        let _ = self.reconcile.await;
        if let Some(sender) = self.alert_sender {
            // The loop's queue handle is gone: what is queued goes out, a bounded while.
            if tokio::time::timeout(ALERT_DRAIN_LIMIT, sender)
                .await
                .is_err()
            {
                tracing::warn!("alerts still queued after {ALERT_DRAIN_LIMIT:?}; exiting anyway");
            }
        }
    }
}

/// Where the canary is written and what it carries, with `--canary-interval`; None when off, or when it
/// could not come back through the ConfigMap watch (said at start).
fn canary_settings(args: &Args, controller_ns: &str) -> Option<CanarySettings> {
    if args.canary_interval.is_zero() {
        return None;
    }
    if let Some(why) = args.canary_unseen(controller_ns) {
        tracing::warn!(flag = "--canary-interval", reason = %why,
            "canary off: hashroll would not see its own canary ConfigMap");
        return None;
    }
    Some(CanarySettings {
        namespace: controller_ns.to_string(),
        interval: args.canary_interval,
        timeout: args.canary_timeout,
        labels: args
            .resource_label_selector
            .as_deref()
            .map(labels_matching)
            .unwrap_or_default(),
    })
}

/// One watch per source kind and workload kind, per namespace (or cluster-wide), plus the namespace watch
/// when a namespace selector is set.
fn watch_scopes(args: &Args, kinds: &BTreeSet<WorkloadKind>) -> Vec<WatchScope> {
    let namespaces: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().cloned().map(Some).collect()
    };
    let sources = args.source_kinds();
    // Secrets of excluded types are watched by name only, so one a workload uses is not taken as missing.
    let excluded = if sources.contains(&SourceKind::Secret) {
        args.excluded_secret_types().len()
    } else {
        0
    };
    let excluded = (0..excluded).filter_map(|i| u8::try_from(i).ok());
    let resources: Vec<Watched> = sources
        .into_iter()
        .map(Watched::Source)
        .chain(excluded.map(Watched::ExcludedSecrets))
        .chain(kinds.iter().copied().map(Watched::Workload))
        .collect();
    let mut scopes: Vec<WatchScope> = namespaces
        .iter()
        .flat_map(|ns| {
            resources.iter().map(|r| WatchScope {
                resource: *r,
                namespace: ns.clone(),
            })
        })
        .collect();
    if args.namespace_selector.is_some() {
        scopes.push(WatchScope {
            resource: Watched::Namespaces,
            namespace: None,
        });
    }
    scopes
}

/// Starts the admin server; a port that cannot be had is logged loudly and hashroll keeps working
/// without it (reloads matter more than metrics).
async fn start_admin(addr: std::net::SocketAddr, health: Health, stop: CancellationToken) {
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(admin::serve(addr, health, bound_tx, stop.cancelled_owned()));
    match bound_rx.await {
        Ok(a) => tracing::info!(addr = %a, "admin server listening (/metrics, /healthz, /readyz)"),
        Err(_) => {
            let err = server.await.ok().and_then(Result::err);
            tracing::error!(
                flag = "--admin-addr",
                %addr,
                error = err.map(|e| e.to_string()).unwrap_or_default(),
                "cannot listen; running without /metrics, /healthz and /readyz"
            );
        }
    }
}

/// The leader's renewal loop, running beside the controller; reports loss through a watch channel.
struct Leadership {
    elector: Elector,
    renewals: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<Option<String>>,
}

impl Leadership {
    fn start(elector: Elector) -> Leadership {
        let (tx, lost) = watch::channel(None);
        let mut renewer = elector.clone();
        let renewals = tokio::spawn(async move {
            let reason = renewer.hold().await;
            let _ = tx.send(Some(reason));
        });
        Leadership {
            elector,
            renewals,
            lost,
        }
    }

    /// Resolves with the reason once leadership is lost.
    async fn lost(&self) -> String {
        let mut rx = self.lost.clone();
        // The guard must not live across the await below (the future must stay Send).
        let reason = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone());
        match reason {
            Some(reason) => reason,
            // The renewal task is gone without a verdict (only when stopping): never resolves.
            None => std::future::pending().await,
        }
    }

    fn lost_now(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Stops renewing and gives the Lease up, so a standby takes over without waiting for it to expire.
    async fn release(self) {
        self.renewals.abort();
        let _ = self.renewals.await;
        let lease = self.elector.lease();
        match tokio::time::timeout(Duration::from_secs(5), self.elector.release()).await {
            Ok(Ok(true)) => tracing::info!(lease = %lease, "released the Lease"),
            Ok(Ok(false)) => {
                tracing::info!(lease = %lease, "the Lease was no longer ours; nothing to release")
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %lease, error = %e, "cannot release the Lease; a standby takes over when it expires")
            }
            Err(_) => {
                tracing::warn!(lease = %lease, "releasing the Lease timed out; a standby takes over when it expires")
            }
        }
    }
}

/// Logs the loss and builds the error that makes the process exit non-zero (to be restarted as a standby).
fn lost_leadership(
    leadership: &Option<Leadership>,
    metrics: &Metrics,
    reason: String,
) -> anyhow::Error {
    metrics.leader.set(0);
    let lease = leadership
        .as_ref()
        .map(|l| l.elector.lease())
        .unwrap_or_default();
    tracing::error!(lease = %lease, reason = %reason, "lost leadership; stopping at once");
    anyhow::anyhow!(
        "lost leadership of Lease {lease} ({reason}); exiting so that this replica restarts as a standby"
    )
}

/// Rollouts are watched only when the API server serves them (checked once, at start-up).
pub(crate) async fn rollouts_served(client: &Client) -> bool {
    let gvk = kube::api::GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout");
    kube::discovery::oneshot::pinned_kind(client, &gvk)
        .await
        .is_ok()
}

/// Loads the installation key, riding out an API server that is briefly unreachable or overloaded (one
/// minute at most); a real error (forbidden, malformed) fails at once.
async fn load_key(client: &Client, namespace: &str, name: &str) -> anyhow::Result<InstallationKey> {
    let backoff = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(8))
        .with_total_delay(Some(Duration::from_secs(60)))
        .without_max_times();
    (|| key_secret::load_or_create(client, namespace, name))
        .retry(backoff)
        .when(Error::is_transient)
        .notify(|e, retry_in| {
            tracing::warn!(error = %e, ?retry_in, "cannot load the installation key yet; retrying")
        })
        .await
        .context("loading the installation key")
}
