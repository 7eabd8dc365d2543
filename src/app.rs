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

use crate::cli::{AdminAddr, Args};
use crate::error::Error;
use crate::k8s::events::EventPublisher;
use crate::k8s::key_secret;
use crate::k8s::leader::{self, ElectionSettings, Elector};
use crate::k8s::watch::{WatchSettings, initial_list_path, run_scope};
use crate::model::hashing::InstallationKey;
use crate::model::kind::{SourceKind, WorkloadKind};
use crate::reconcile::input::{WatchScope, Watched};
use crate::reconcile::scheduler::Scheduler;
use crate::reconcile::scopes::Readiness;
use crate::reconcile::skipped::Skip;
use crate::reconcile::state::{self, State};
use crate::reconcile::writer::Writer;
use crate::telemetry::admin::{self, Health};
use crate::telemetry::metrics::{Metrics, MetricsSettings};

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
    let vault = match args.vault.addr() {
        Some(addr) => Some((
            crate::vault::client::VaultClient::new(&args.vault, addr.clone())?,
            addr,
        )),
        None => None,
    };
    let config = client_config(&args).await?;
    let controller_ns = args.controller_namespace(&config.default_namespace);
    let client = Client::try_from(config).context("building the Kubernetes client")?;

    let metrics = Metrics::with(MetricsSettings {
        namespace_label: args.metrics_namespace_label,
        debounce: args.debounce,
    });
    let (readiness_tx, readiness) = watch::channel(Readiness::Syncing);
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
        };
        start_admin(addr, health, stop.clone()).await;
    }

    let mut shutdown = std::pin::pin!(shutdown);
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

    let key = tokio::select! {
        key = load_key(&client, &controller_ns, &args.key_secret) => key?,
        reason = lost.as_mut() => return Err(lost_leadership(&leadership, &metrics, reason)),
    };
    tracing::info!(namespace = %controller_ns, key_id = key.id(), "installation key loaded");

    let mut kinds = args.workload_kinds();
    if kinds.contains(&WorkloadKind::Rollout) && !rollouts_served(&client).await {
        tracing::info!(
            "argoproj.io/v1alpha1 Rollouts are not served by this cluster; not watching them"
        );
        kinds.remove(&WorkloadKind::Rollout);
    }
    let scopes = watch_scopes(&args, &kinds);
    let reasons: Vec<&str> = Skip::ALL.iter().map(|s| s.label()).collect();
    metrics.preset(kinds.iter().copied(), &reasons);

    // Lost while loading the key or probing for Rollouts: never start writing.
    if let Some(reason) = leadership.as_ref().and_then(Leadership::lost_now) {
        return Err(lost_leadership(&leadership, &metrics, reason));
    }

    let (tx, rx) = mpsc::channel(1024);
    let (targets_tx, targets) = watch::channel(None);
    let poller = match vault {
        Some((client, addr)) => {
            metrics.enable_vault();
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
    let mut watch_settings = WatchSettings::from(&args);
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
            namespaces: (&args).into(),
            visibility: (&args).into(),
            scopes,
        },
        key,
        metrics.clone(),
    );
    let writer = Writer::new(
        client.clone(),
        EventPublisher::new(client, args.instance()),
        metrics.clone(),
        (&args).into(),
        usize::from(args.patch_concurrency),
    );
    let mut reconcile = tokio::spawn(crate::reconcile::run(
        state,
        Scheduler::new(args.debounce),
        writer,
        rx,
        readiness_tx,
        targets_tx,
        metrics.clone(),
        stop.clone(),
    ));

    tokio::select! {
        _ = shutdown.as_mut() => {}
        _ = &mut reconcile => {}
        reason = lost.as_mut() => {
            // Another replica may be writing already: stop at once, without finishing patches in flight.
            reconcile.abort();
            return Err(lost_leadership(&leadership, &metrics, reason));
        }
    }
    tracing::info!("stopping watches");
    watches.abort_all();
    if let Some(p) = &poller {
        p.abort();
    }
    stop.cancel();
    let _ = reconcile.await;
    drop(lost);
    if let Some(l) = leadership {
        l.release().await;
    }
    tracing::info!("stopped");
    Ok(())
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
