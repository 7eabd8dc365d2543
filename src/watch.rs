//! Watches: each object is reduced to its summary the moment it arrives and the full object is dropped.
//! A (re-)list (after a restart of the watch, a 410, or hashroll's own restart) ends with the names it
//! saw, so the controller forgets what vanished meanwhile and converges on the cluster as it is now.
//! Between lists a watch remembers no names: the controller's own state is the only copy.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::patching::api_resource;
use crate::policy::PolicySettings;
use crate::source::{SourceId, SourceKind, SourceSummary};
use crate::wire::{ConfigMapDigests, SecretDigests, WorkloadWire};
use crate::workload::{WorkloadId, WorkloadKind, WorkloadSummary};

/// What a watch covers: one resource, cluster-wide (`namespace` None) or in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchScope {
    pub resource: Watched,
    pub namespace: Option<String>,
}

/// The resources hashroll watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watched {
    Source(SourceKind),
    Workload(WorkloadKind),
    Namespaces,
}

impl Watched {
    /// The plural resource name, for logs and metrics.
    pub fn resource_name(self) -> &'static str {
        match self {
            Watched::Source(SourceKind::Secret) => "secrets",
            Watched::Source(SourceKind::ConfigMap) => "configmaps",
            Watched::Workload(k) => match k {
                WorkloadKind::Deployment => "deployments",
                WorkloadKind::StatefulSet => "statefulsets",
                WorkloadKind::DaemonSet => "daemonsets",
                WorkloadKind::CronJob => "cronjobs",
                WorkloadKind::Rollout => "rollouts",
            },
            Watched::Namespaces => "namespaces",
        }
    }
}

/// What the watches tell the controller.
#[derive(Debug)]
pub enum Input {
    SourceApplied(SourceSummary),
    SourceDeleted(SourceId),
    WorkloadApplied(Box<WorkloadSummary>),
    WorkloadDeleted(WorkloadId),
    /// A namespace matching `--namespace-selector` exists (true) or no longer does (false).
    Namespace(String, bool),
    /// The scope's list is complete (first time or after a re-list), with the (namespace, name) of every
    /// object it held: what the controller knows in this scope and the list lacks was deleted meanwhile.
    Synced(WatchScope, Listed),
    /// The scope's watch failed; it retries with backoff.
    WatchFailed(WatchScope),
}

/// The names of every object one list returned, by namespace (empty for cluster-scoped objects), so the
/// controller can look its own ids up without building a key per lookup.
#[derive(Debug, Default)]
pub struct Listed(HashMap<String, HashSet<String>>);

impl Listed {
    pub fn insert(&mut self, namespace: String, name: String) {
        self.0.entry(namespace).or_default().insert(name);
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.0
            .get(namespace)
            .is_some_and(|names| names.contains(name))
    }
}

/// Settings shared by every watch.
#[derive(Clone)]
pub struct WatchSettings {
    pub resource_labels: Option<String>,
    pub secret_fields: Option<String>,
    pub namespace_selector: Option<String>,
    pub policy: PolicySettings,
}

/// Starts one watch; it runs until the receiver is dropped.
pub fn spawn(
    client: Client,
    scope: WatchScope,
    settings: WatchSettings,
    tx: mpsc::Sender<Input>,
    metrics: Metrics,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ns = scope.namespace.clone();
        match scope.resource {
            Watched::Source(SourceKind::Secret) => {
                let mut cfg = list_config();
                if let Some(l) = &settings.resource_labels {
                    cfg = cfg.labels(l);
                }
                if let Some(f) = &settings.secret_fields {
                    cfg = cfg.fields(f);
                }
                let api: Api<SecretDigests> = api_for(&client, ns.as_deref());
                let compat = settings.policy.stakater_compat;
                let reduce = move |s: &SecretDigests| {
                    let sum = SourceSummary::from_secret_digests(s)?;
                    Some(if compat {
                        sum
                    } else {
                        sum.without_stakater(&s.metadata)
                    })
                };
                run(
                    api,
                    cfg,
                    Sink { scope, tx, metrics },
                    reduce,
                    move |ns, name| {
                        Input::SourceDeleted(SourceId::new(SourceKind::Secret, ns, name))
                    },
                    Input::SourceApplied,
                )
                .await
            }
            Watched::Source(SourceKind::ConfigMap) => {
                let mut cfg = list_config();
                if let Some(l) = &settings.resource_labels {
                    cfg = cfg.labels(l);
                }
                let api: Api<ConfigMapDigests> = api_for(&client, ns.as_deref());
                let compat = settings.policy.stakater_compat;
                let reduce = move |c: &ConfigMapDigests| {
                    let sum = SourceSummary::from_config_map_digests(c)?;
                    Some(if compat {
                        sum
                    } else {
                        sum.without_stakater(&c.metadata)
                    })
                };
                run(
                    api,
                    cfg,
                    Sink { scope, tx, metrics },
                    reduce,
                    move |ns, name| {
                        Input::SourceDeleted(SourceId::new(SourceKind::ConfigMap, ns, name))
                    },
                    Input::SourceApplied,
                )
                .await
            }
            Watched::Workload(kind) => {
                let ar = api_resource(kind);
                let api: Api<WorkloadWire> = match ns.as_deref() {
                    Some(n) => Api::namespaced_with(client.clone(), n, &ar),
                    None => Api::all_with(client.clone(), &ar),
                };
                let policy = settings.policy;
                let reduce = move |o: &WorkloadWire| reduce_workload(kind, o, policy);
                run(
                    api,
                    list_config(),
                    Sink { scope, tx, metrics },
                    reduce,
                    move |ns, name| Input::WorkloadDeleted(WorkloadId::new(kind, ns, name)),
                    |w| Input::WorkloadApplied(Box::new(w)),
                )
                .await
            }
            Watched::Namespaces => {
                let mut cfg = list_config();
                if let Some(l) = &settings.namespace_selector {
                    cfg = cfg.labels(l);
                }
                let api: Api<Namespace> = Api::all(client.clone());
                let name_of = |n: &Namespace| n.metadata.name.clone();
                run(
                    api,
                    cfg,
                    Sink { scope, tx, metrics },
                    name_of,
                    |_, name| Input::Namespace(name.to_string(), false),
                    |n| Input::Namespace(n, true),
                )
                .await
            }
        }
    })
}

fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(n) => Api::namespaced(client.clone(), n),
        None => Api::all(client.clone()),
    }
}

/// Reduces any workload kind: metadata plus the pod template where the kind keeps it.
pub fn reduce_workload(
    kind: WorkloadKind,
    o: &WorkloadWire,
    policy: PolicySettings,
) -> Option<WorkloadSummary> {
    WorkloadSummary::reduce(kind, &o.metadata, o.pod_template().as_ref(), policy)
}

/// Objects per list page. Small pages bound what one page costs in memory (its JSON and the objects
/// parsed from it, which the allocator keeps afterwards), so memory follows the number of objects held,
/// not their size; the extra requests happen only at (re-)list time.
pub const LIST_PAGE_SIZE: u32 = 100;

fn list_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE_SIZE)
}

/// Where one watch's results go.
struct Sink {
    scope: WatchScope,
    tx: mpsc::Sender<Input>,
    metrics: Metrics,
}

/// Drives one watch stream: reduce, forward, and turn a re-list into deletions of what vanished.
async fn run<K, T>(
    api: Api<K>,
    config: watcher::Config,
    sink: Sink,
    reduce: impl Fn(&K) -> Option<T>,
    deleted: impl Fn(&str, &str) -> Input,
    applied: impl Fn(T) -> Input,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let Sink { scope, tx, metrics } = sink;
    let resource = scope.resource.resource_name();
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    // (namespace, name) of every object of the list in progress.
    let mut listing: Option<Listed> = None;
    let mut failures = 0u32;
    while let Some(ev) = stream.next().await {
        // At most one message per event.
        let msg: Option<Input> = match ev {
            Ok(Event::Init) => {
                listing = Some(Listed::default());
                continue;
            }
            Ok(Event::InitApply(obj)) => {
                let (ns, name) = ident(&obj);
                listing.get_or_insert_default().insert(ns, name);
                reduce(&obj).map(&applied)
            }
            Ok(Event::InitDone) => {
                failures = 0;
                Some(Input::Synced(
                    scope.clone(),
                    listing.take().unwrap_or_default(),
                ))
            }
            Ok(Event::Apply(obj)) => reduce(&obj).map(&applied),
            Ok(Event::Delete(obj)) => {
                let (ns, name) = ident(&obj);
                Some(deleted(&ns, &name))
            }
            Err(e) => {
                metrics.watch_errors.with_label_values(&[resource]).inc();
                failures += 1;
                // One line per failure streak step, not one per retry storm.
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(
                        resource,
                        namespace = scope.namespace.as_deref().unwrap_or("(all)"),
                        error = %e,
                        failures,
                        "watch failed; retrying with backoff"
                    );
                }
                Some(Input::WatchFailed(scope.clone()))
            }
        };
        if let Some(m) = msg
            && tx.send(m).await.is_err()
        {
            return;
        }
    }
    // The stream only ends if the backoff gives up, which the default never does; avoid a hot loop anyway.
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn ident<K: Resource>(obj: &K) -> (String, String) {
    let m = obj.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}
