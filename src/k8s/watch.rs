//! Watches: each object is reduced to its summary the moment it arrives and the full object is dropped.
//! A (re-)list (after a restart of the watch, a 410, or hashroll's own restart) ends with the names it
//! saw, so the controller forgets what vanished meanwhile and converges on the cluster as it is now.
//! Between lists a watch remembers no names: the controller's own state is the only copy.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::k8s::api_resource;
use crate::k8s::wire::{ConfigMapDigests, SecretDigests, WorkloadWire};
use crate::model::kind::{SourceId, SourceKind, WorkloadId};
use crate::model::policy::PolicySettings;
use crate::model::source::SourceSummary;
use crate::reconcile::input::{Input, Listed, WatchScope, Watched};
use crate::telemetry::metrics::Metrics;

/// Settings shared by every watch.
#[derive(Clone)]
pub struct WatchSettings {
    pub resource_labels: Option<String>,
    pub secret_fields: Option<String>,
    /// `--exclude-secret-types`: watched by metadata only, one watch per type.
    pub excluded_secret_types: Vec<String>,
    pub namespace_selector: Option<String>,
    pub policy: PolicySettings,
}

/// Runs one watch until the receiver is dropped.
pub async fn run_scope(
    client: Client,
    scope: WatchScope,
    settings: WatchSettings,
    tx: mpsc::Sender<Input>,
    metrics: Metrics,
) {
    {
        let ns = scope.namespace.clone();
        let sink = Sink { scope, tx, metrics };
        let compat = settings.policy.stakater_compat;
        match sink.scope.resource {
            Watched::Source(kind) => {
                let mut cfg = list_config();
                if let Some(l) = &settings.resource_labels {
                    cfg = cfg.labels(l);
                }
                let deleted =
                    move |ns: &str, name: &str| Input::SourceDeleted(SourceId::new(kind, ns, name));
                match kind {
                    SourceKind::Secret => {
                        if let Some(f) = &settings.secret_fields {
                            cfg = cfg.fields(f);
                        }
                        let api: Api<SecretDigests> = api_for(&client, ns.as_deref());
                        let reduce = move |s: &SecretDigests| s.summary(compat);
                        run(api, cfg, sink, reduce, deleted, Input::SourceApplied).await
                    }
                    SourceKind::ConfigMap => {
                        let api: Api<ConfigMapDigests> = api_for(&client, ns.as_deref());
                        let reduce = move |c: &ConfigMapDigests| c.summary(compat);
                        run(api, cfg, sink, reduce, deleted, Input::SourceApplied).await
                    }
                }
            }
            Watched::Workload(kind) => {
                let ar = api_resource(kind);
                let api: Api<WorkloadWire> = match ns.as_deref() {
                    Some(n) => Api::namespaced_with(client.clone(), n, &ar),
                    None => Api::all_with(client.clone(), &ar),
                };
                let policy = settings.policy;
                let reduce = move |o: &WorkloadWire| o.summary(kind, policy);
                run(
                    api,
                    list_config(),
                    sink,
                    reduce,
                    move |ns, name| Input::WorkloadDeleted(WorkloadId::new(kind, ns, name)),
                    |w| Input::WorkloadApplied(Box::new(w)),
                )
                .await
            }
            Watched::ExcludedSecrets(i) => {
                let Some(type_) = settings.excluded_secret_types.get(usize::from(i)) else {
                    return;
                };
                let cfg = list_config().fields(&format!("type={type_}"));
                // Metadata only: a Helm release Secret's data never crosses the wire.
                let api: Api<PartialObjectMeta<Secret>> = api_for(&client, ns.as_deref());
                let stream = watcher::watcher(api, cfg);
                let reduce =
                    move |m: &PartialObjectMeta<Secret>| SourceSummary::excluded(&m.metadata, i);
                let deleted = move |ns: &str, name: &str| {
                    Input::SourceDeleted(SourceId::new(SourceKind::Secret, ns, name))
                };
                forward(stream, sink, reduce, deleted, Input::SourceApplied).await
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
                    sink,
                    name_of,
                    |_, name| Input::Namespace(name.to_string(), false),
                    |n| Input::Namespace(n, true),
                )
                .await
            }
        }
    }
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

/// Watches whole objects (parsed by [`crate::k8s::wire`]) and forwards them.
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
    let stream = watcher::watcher(api, config);
    forward(stream, sink, reduce, deleted, applied).await
}

/// Drives one watch stream: reduce, forward, and turn a re-list into deletions of what vanished.
async fn forward<K, T>(
    stream: impl futures::Stream<Item = watcher::Result<Event<K>>> + Send,
    sink: Sink,
    reduce: impl Fn(&K) -> Option<T>,
    deleted: impl Fn(&str, &str) -> Input,
    applied: impl Fn(T) -> Input,
) where
    K: Resource + Clone + Debug + Send + 'static,
{
    let Sink { scope, tx, metrics } = sink;
    let resource = scope.resource.resource_name();
    let namespace = scope.namespace.as_deref();
    let clock = metrics.watch_started(resource, namespace);
    let mut stream = stream.default_backoff().boxed();
    // (namespace, name) of every object of the list in progress.
    let mut listing: Option<Listed> = None;
    let mut failures = 0u32;
    while let Some(ev) = stream.next().await {
        if matches!(&ev, Ok(e) if !matches!(e, Event::Init)) {
            clock.touch();
        }
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
                metrics.watch_restarted(resource, namespace, restart_cause(&e));
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
                Some(Input::WatchFailed(scope.clone(), e.to_string()))
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

/// Why a watch restarts, as the `cause` label says it: `expired` (410: it re-lists from scratch),
/// `forbidden` (401/403), else the step that failed: `list_failed`, `watch_failed` (starting the watch),
/// `watch_error` (an error event from the API server), `stream_failed` (the stream broke),
/// `no_resource_version`.
pub fn restart_cause(e: &watcher::Error) -> &'static str {
    let forbidden =
        |e: &kube::Error| matches!(e, kube::Error::Api(s) if matches!(s.code, 401 | 403));
    match e {
        watcher::Error::WatchError(s) if s.code == 410 => "expired",
        watcher::Error::WatchError(s) if matches!(s.code, 401 | 403) => "forbidden",
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e)
            if forbidden(e) =>
        {
            "forbidden"
        }
        watcher::Error::InitialListFailed(_) => "list_failed",
        watcher::Error::WatchStartFailed(_) => "watch_failed",
        watcher::Error::WatchError(_) => "watch_error",
        watcher::Error::WatchFailed(_) => "stream_failed",
        watcher::Error::NoResourceVersion => "no_resource_version",
    }
}

fn ident<K: Resource>(obj: &K) -> (String, String) {
    let m = obj.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("x", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn restarts_are_told_apart_by_what_an_operator_does_about_them() {
        let gone = kube::core::Status::failure("too old", "Expired")
            .with_code(410)
            .boxed();
        assert_eq!(restart_cause(&watcher::Error::WatchError(gone)), "expired");
        assert_eq!(
            restart_cause(&watcher::Error::InitialListFailed(status(403))),
            "forbidden"
        );
        assert_eq!(
            restart_cause(&watcher::Error::InitialListFailed(status(500))),
            "list_failed"
        );
        assert_eq!(
            restart_cause(&watcher::Error::WatchStartFailed(status(503))),
            "watch_failed"
        );
        assert_eq!(
            restart_cause(&watcher::Error::WatchFailed(status(500))),
            "stream_failed"
        );
        assert_eq!(
            restart_cause(&watcher::Error::NoResourceVersion),
            "no_resource_version"
        );
    }
}
