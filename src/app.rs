//! Wiring: flags → client → installation key → watches → the reconcile loop, until shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::{mpsc, watch as signal};

use crate::admin::{self, Health};
use crate::config::{AdminAddr, Args};
use crate::controller::{Controller, NamespaceFilter, Settings};
use crate::events::EventPublisher;
use crate::key;
use crate::leader::{self, ElectionSettings, Elector};
use crate::metrics::Metrics;
use crate::policy::PolicySettings;
use crate::watch::{self, WatchScope, WatchSettings, Watched};
use crate::workload::WorkloadKind;

async fn client_config(args: &Args) -> anyhow::Result<Config> {
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
    let config = client_config(&args).await?;
    let controller_ns = args
        .controller_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).context("building the Kubernetes client")?;

    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let standby = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = signal::channel(false);

    // Before the election: a standby answers /healthz, /readyz and /metrics too.
    if let AdminAddr::At(addr) = args.admin_addr {
        let health = Health {
            metrics: metrics.clone(),
            ready: ready.clone(),
            standby: standby.clone(),
        };
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        let server = tokio::spawn(admin::serve(addr, health, bound_tx, shutdown));
        match bound_rx.await {
            Ok(a) => {
                tracing::info!(addr = %a, "admin server listening (/metrics, /healthz, /readyz)")
            }
            // Reloads matter more than metrics: say so loudly, and keep working without them.
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

    let mut shutdown = std::pin::pin!(shutdown);
    let leadership = if args.election.leader_elect {
        let settings = ElectionSettings {
            namespace: args
                .election
                .leader_election_namespace
                .clone()
                .unwrap_or_else(|| controller_ns.clone()),
            name: args.election.leader_election_lease_name.clone(),
            identity: leader::identity(),
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
                let _ = stop_tx.send(true);
                return Ok(());
            }
        }
        standby.store(false, Ordering::Relaxed);
        metrics.leader.set(1);
        Some(Leadership::start(elector))
    } else {
        metrics.leader.set(1);
        None
    };
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

    let policy = PolicySettings {
        auto_reload_all: args.auto_reload_all,
        stakater_compat: args.stakater_compat,
    };
    let namespaces: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().cloned().map(Some).collect()
    };
    let mut scopes = Vec::new();
    for ns in &namespaces {
        for kind in args.source_kinds() {
            scopes.push(WatchScope {
                resource: Watched::Source(kind),
                namespace: ns.clone(),
            });
        }
        for kind in &kinds {
            scopes.push(WatchScope {
                resource: Watched::Workload(*kind),
                namespace: ns.clone(),
            });
        }
    }
    if args.namespace_selector.is_some() {
        scopes.push(WatchScope {
            resource: Watched::Namespaces,
            namespace: None,
        });
    }

    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "hashroll".into());
    let events = EventPublisher::new(client.clone(), instance);
    let settings = Settings {
        debounce: args.debounce,
        dry_run: args.dry_run,
        namespaces: NamespaceFilter {
            only: (!args.namespaces.is_empty()).then(|| args.namespaces.iter().cloned().collect()),
            ignore: args
                .ignore_namespaces
                .iter()
                .cloned()
                .collect::<HashSet<_>>(),
            by_selector: args.namespace_selector.is_some(),
        },
        policy,
        patch_concurrency: args.patch_concurrency as usize,
        scopes: scopes.clone(),
    };
    let watch_settings = WatchSettings {
        resource_labels: args.resource_label_selector.clone(),
        secret_fields: args.secret_field_selector(),
        namespace_selector: args.namespace_selector.clone(),
        policy,
    };

    // Lost while loading the key or probing for Rollouts: never start writing.
    if let Some(reason) = leadership.as_ref().and_then(Leadership::lost_now) {
        return Err(lost_leadership(&leadership, &metrics, reason));
    }

    let (tx, rx) = mpsc::channel(1024);
    let watches: Vec<_> = scopes
        .into_iter()
        .map(|scope| {
            watch::spawn(
                client.clone(),
                scope,
                watch_settings.clone(),
                tx.clone(),
                metrics.clone(),
            )
        })
        .collect();
    drop(tx);
    tracing::info!(
        watches = watches.len(),
        dry_run = args.dry_run,
        debounce = ?args.debounce,
        "hashroll started"
    );

    let controller = Controller::new(settings, key, client, events, metrics.clone(), ready);
    let loop_task = tokio::spawn(controller.run(rx, stop_rx));

    tokio::select! {
        _ = shutdown.as_mut() => {}
        reason = lost.as_mut() => {
            // Another replica may be writing already: stop at once, without finishing patches in flight.
            loop_task.abort();
            for w in &watches {
                w.abort();
            }
            let _ = stop_tx.send(true);
            return Err(lost_leadership(&leadership, &metrics, reason));
        }
    }
    tracing::info!("stopping watches");
    for w in &watches {
        w.abort();
    }
    let _ = stop_tx.send(true);
    let _ = loop_task.await;
    drop(lost);
    if let Some(l) = leadership {
        l.release().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The leader's renewal loop, running beside the controller; reports loss through a watch channel.
struct Leadership {
    elector: Elector,
    renewals: tokio::task::JoinHandle<()>,
    lost: signal::Receiver<Option<String>>,
}

impl Leadership {
    fn start(elector: Elector) -> Leadership {
        let (tx, lost) = signal::channel(None);
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
async fn rollouts_served(client: &Client) -> bool {
    let gvk = kube::api::GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout");
    kube::discovery::oneshot::pinned_kind(client, &gvk)
        .await
        .is_ok()
}

/// Loads the installation key, riding out an API server that is briefly unreachable or overloaded (one
/// minute at most); a real error (forbidden, malformed) fails at once.
async fn load_key(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<crate::hashing::InstallationKey> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        match key::load_or_create(client, namespace, name).await {
            Ok(k) => return Ok(k),
            Err(e) if e.is_transient() && tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot load the installation key yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(8));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("loading the installation key")),
        }
    }
}
