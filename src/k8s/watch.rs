//! Watches: each object is reduced to its summary the moment it arrives and the full object is dropped.
//! A (re-)list (after a restart of the watch, a 410, or hashroll's own restart) ends with the names it
//! saw, so the controller forgets what vanished meanwhile and converges on the cluster as it is now.
//! Between lists a watch remembers no names: the controller's own state is the only copy.

use std::collections::BTreeMap;
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
use crate::k8s::csi::{self, ClassWire, STATUSES, StatusWire};
use crate::k8s::wire::{ConfigMapDigests, SecretDigests, WorkloadWire};
use crate::model::kind::{SourceId, SourceKind, WorkloadId};
use crate::model::policy::PolicySettings;
use crate::model::provider_class::ProviderClasses;
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
    /// How each watch reads the initial state (decided once at start-up, see [`initial_list_path`]).
    pub initial_list: ListPath,
}

/// `--initial-list`: how a watch reads the state it starts from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialList {
    /// Stream where the server offers it (probed at start-up), pages otherwise.
    Auto,
    /// Always stream (`sendInitialEvents`); a server without it never finishes the initial list.
    Stream,
    /// Always list in pages.
    Pages,
}

/// The path the watches take, once decided.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ListPath {
    /// A watch with `sendInitialEvents=true`: the initial state arrives one object at a time, ending in a
    /// bookmark annotated `k8s.io/initial-events-end`; no list page is ever held.
    Stream,
    /// Paged LISTs, then a watch from the list's resource version.
    Pages,
}

impl ListPath {
    pub fn as_str(self) -> &'static str {
        match self {
            ListPath::Stream => "stream",
            ListPath::Pages => "pages",
        }
    }
}

/// How long the start-up probe waits for the end-of-initial-events bookmark.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Decides the initial-list path. `auto` asks the server: below v1.27 (before `sendInitialEvents`
/// existed) pages without a probe; otherwise one watch with `sendInitialEvents=true` on `probe`'s resource,
/// selecting no object by name, which a server that streams lists answers with the end bookmark at once.
/// A server with the WatchList feature off rejects the parameters (400); one that ignores them never sends
/// the bookmark: both, and any error or a silence of [`PROBE_TIMEOUT`], mean pages.
pub async fn initial_list_path(
    client: &Client,
    choice: InitialList,
    probe: Option<&WatchScope>,
) -> ListPath {
    match choice {
        InitialList::Stream => return ListPath::Stream,
        InitialList::Pages => return ListPath::Pages,
        InitialList::Auto => {}
    }
    if let Ok(v) = client.apiserver_version().await
        && let (Ok(major), Ok(minor)) = (
            v.major.trim_end_matches('+').parse::<u32>(),
            v.minor.trim_end_matches('+').parse::<u32>(),
        )
        && (major, minor) < (1, 27)
    {
        return ListPath::Pages;
    }
    let Some(scope) = probe else {
        return ListPath::Pages;
    };
    if streams_initial_events(client, scope, PROBE_TIMEOUT).await {
        ListPath::Stream
    } else {
        ListPath::Pages
    }
}

/// True if a streaming-list watch on `scope`'s resource ends its (empty) initial state with the
/// `k8s.io/initial-events-end` bookmark within `wait`.
pub async fn streams_initial_events(client: &Client, scope: &WatchScope, wait: Duration) -> bool {
    use kube::api::{ApiResource, DynamicObject, WatchEvent, WatchParams};
    let ar = match scope.resource {
        Watched::Source(SourceKind::Secret) | Watched::ExcludedSecrets(_) => {
            ApiResource::erase::<Secret>(&())
        }
        Watched::Source(SourceKind::ConfigMap) => {
            ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&())
        }
        Watched::Source(SourceKind::SecretProviderClass) => csi::class_resource(),
        Watched::Workload(kind) => api_resource(kind),
        Watched::Namespaces => ApiResource::erase::<Namespace>(&()),
        // Polled by `src/vault`, never watched.
        Watched::Source(SourceKind::Vault) => return false,
    };
    let api: Api<DynamicObject> = match (&scope.resource, scope.namespace.as_deref()) {
        (Watched::Namespaces, _) | (_, None) => Api::all_with(client.clone(), &ar),
        (_, Some(n)) => Api::namespaced_with(client.clone(), n, &ar),
    };
    let wp = WatchParams::streaming_lists()
        .fields("metadata.name=hashroll-streaming-list-probe")
        .timeout(u32::try_from(wait.as_secs()).unwrap_or(5).max(1));
    let probe = async {
        let mut stream = match api.watch_metadata(&wp, "0").await {
            Ok(s) => s.boxed(),
            Err(e) => {
                tracing::debug!(error = %e, "streaming-list probe refused");
                return false;
            }
        };
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(WatchEvent::Bookmark(b))
                    if b.metadata
                        .annotations
                        .contains_key("k8s.io/initial-events-end") =>
                {
                    return true;
                }
                Ok(WatchEvent::Error(e)) => {
                    tracing::debug!(error = %e.message, "streaming-list probe failed");
                    return false;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "streaming-list probe failed");
                    return false;
                }
                Ok(_) => {}
            }
        }
        false
    };
    tokio::time::timeout(wait, probe).await.unwrap_or(false)
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
                let mut cfg = list_config(settings.initial_list, SOURCE_PAGE_SIZE);
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
                        // The canary comes through the very watch that carries the sources (that is
                        // its point), and is never one.
                        let reduce = move |c: &ConfigMapDigests| match c.canary_token() {
                            Some(token) => Some(Input::Canary(token.to_string())),
                            None => c.summary(compat).map(Input::SourceApplied),
                        };
                        run(api, cfg, sink, reduce, deleted, |i| i).await
                    }
                    SourceKind::SecretProviderClass => {
                        let Sink { scope, tx, metrics } = sink;
                        run_provider_classes(client, scope, settings, tx, metrics).await
                    }
                    // Polled by `src/vault`; `app` never starts a watch for it.
                    SourceKind::Vault => {}
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
                    list_config(settings.initial_list, LIST_PAGE_SIZE),
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
                let cfg = list_config(settings.initial_list, LIST_PAGE_SIZE)
                    .fields(&format!("type={type_}"));
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
                let mut cfg = list_config(settings.initial_list, LIST_PAGE_SIZE);
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

/// Watches the classes and their statuses in `scope`, and reports each class as a source to `tx`: once
/// the statuses have been listed (before that a class's content is unknown, and taking it for empty would
/// roll), and then whenever its newest status reports other versions. The class watch's list ends only
/// after that, so readiness waits for both.
pub async fn run_provider_classes(
    client: Client,
    scope: WatchScope,
    settings: WatchSettings,
    tx: mpsc::Sender<Input>,
    metrics: Metrics,
) {
    let ns = scope.namespace.clone();
    let compat = settings.policy.stakater_compat;
    // The class watch goes through the common path, into a channel of its own.
    let (class_tx, mut class_rx) = mpsc::channel(64);
    let mut cfg = list_config(settings.initial_list, LIST_PAGE_SIZE);
    if let Some(l) = &settings.resource_labels {
        cfg = cfg.labels(l);
    }
    let classes = watcher::watcher(
        csi::api::<ClassWire>(&client, ns.as_deref(), &csi::class_resource()),
        cfg,
    );
    let sink = Sink {
        scope: scope.clone(),
        tx: class_tx,
        metrics: metrics.clone(),
    };
    let reduce = move |c: &ClassWire| {
        SourceSummary::new(
            SourceKind::SecretProviderClass,
            &c.metadata,
            BTreeMap::new(),
            compat,
        )
    };
    let deleted = |ns: &str, name: &str| {
        Input::SourceDeleted(SourceId::new(SourceKind::SecretProviderClass, ns, name))
    };
    let class_watch = forward(classes, sink, reduce, deleted, Input::SourceApplied);
    let mut class_watch = std::pin::pin!(class_watch);

    let statuses = watcher::watcher(
        csi::api::<StatusWire>(&client, ns.as_deref(), &csi::status_resource()),
        list_config(settings.initial_list, LIST_PAGE_SIZE),
    );
    let mut statuses = statuses.default_backoff().boxed();
    let clock = metrics.watch_started(STATUSES, ns.as_deref());

    let mut known = ProviderClasses::default();
    let mut statuses_listed = false;
    let mut pending_sync = None;
    loop {
        let out: Vec<Input> = tokio::select! {
            _ = &mut class_watch => return,
            msg = class_rx.recv() => {
                let Some(msg) = msg else { return };
                match msg {
                    Input::SourceApplied(class) => {
                        let now = known.class_applied(class);
                        now.filter(|_| statuses_listed).map(Input::SourceApplied).into_iter().collect()
                    }
                    Input::SourceDeleted(id) => {
                        known.class_deleted(&id.namespace, &id.name);
                        vec![Input::SourceDeleted(id)]
                    }
                    Input::Synced(scope, listed) => {
                        known.retain_classes(|ns, name| listed.contains(ns, name));
                        if statuses_listed {
                            vec![Input::Synced(scope, listed)]
                        } else {
                            pending_sync = Some((scope, listed));
                            Vec::new()
                        }
                    }
                    other => vec![other],
                }
            }
            ev = statuses.next() => {
                let Some(ev) = ev else { return };
                if matches!(&ev, Ok(e) if !matches!(e, Event::Init)) {
                    clock.touch();
                }
                match ev {
                    Ok(Event::InitApply(s) | Event::Apply(s)) => s
                        .reduce()
                        .and_then(|s| known.status_applied(s))
                        .filter(|_| statuses_listed)
                        .map(Input::SourceApplied)
                        .into_iter()
                        .collect(),
                    Ok(Event::InitDone) if !statuses_listed => {
                        statuses_listed = true;
                        let mut out: Vec<Input> = known.summaries().map(Input::SourceApplied).collect();
                        out.extend(pending_sync.take().map(|(s, l)| Input::Synced(s, l)));
                        out
                    }
                    // A status that goes away changes nothing: the newest set seen stays the content.
                    Ok(_) => Vec::new(),
                    Err(e) => {
                        metrics.watch_restarted(STATUSES, ns.as_deref(), restart_cause(&e));
                        tracing::warn!(resource = STATUSES, error = %e, "watch failed; retrying with backoff");
                        vec![Input::WatchFailed(scope.clone(), format!("{STATUSES}: {e}"))]
                    }
                }
            }
        };
        for msg in out {
            if tx.send(msg).await.is_err() {
                return;
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

/// Objects per list page where lists are paged (metadata-only watches, workloads, namespaces). Small pages
/// bound what one page costs in memory (its JSON and the objects parsed from it, which the allocator keeps
/// afterwards); the extra requests happen only at (re-)list time.
pub const LIST_PAGE_SIZE: u32 = 100;

/// Objects per list page of Secrets and ConfigMaps where lists are paged. The API cannot bound a page in
/// bytes; an object can be up to ~1.5 MiB (etcd's limit), so a page of these is at most ~37 MiB, and with
/// typical data (a few KiB, some 100 KiB) well under 1 MiB.
pub const SOURCE_PAGE_SIZE: u32 = 25;

fn list_config(path: ListPath, page_size: u32) -> watcher::Config {
    let cfg = watcher::Config::default().page_size(page_size);
    match path {
        ListPath::Stream => cfg.streaming_lists(),
        ListPath::Pages => cfg,
    }
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

    use std::convert::Infallible;

    use axum::body::{Body, Bytes};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;

    /// How the fake server answers a watch with `sendInitialEvents=true`.
    #[derive(Clone, Copy)]
    enum Answer {
        /// A server that streams lists: the end bookmark.
        Bookmark,
        /// The WatchList feature off: 400.
        Refused,
        /// An old server that ignores the parameters: an open watch with no bookmark.
        Ignored,
    }

    /// A fake API server reporting v1.`minor` and answering watches on Secrets as `answer` says.
    async fn server(minor: &'static str, answer: Answer) -> (Client, tokio::task::JoinHandle<()>) {
        let version = move || async move {
            axum::Json(serde_json::json!({
                "major": "1", "minor": minor, "gitVersion": format!("v1.{minor}.0"), "gitCommit": "",
                "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "gc",
                "platform": "linux/amd64"
            }))
        };
        let watch = move || async move {
            match answer {
                Answer::Bookmark => {
                    let line = serde_json::json!({"type": "BOOKMARK", "object": {
                        "kind": "Secret", "apiVersion": "v1", "metadata": {"resourceVersion": "7",
                        "annotations": {"k8s.io/initial-events-end": "true"}}}});
                    let chunk = Bytes::from(format!("{line}\n"));
                    let body = futures::stream::iter([Ok::<_, Infallible>(chunk)])
                        .chain(futures::stream::pending());
                    Body::from_stream(body).into_response()
                }
                Answer::Refused => {
                    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1",
                        "status": "Failure", "reason": "Invalid", "code": 400,
                        "message": "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"});
                    (StatusCode::BAD_REQUEST, axum::Json(status)).into_response()
                }
                Answer::Ignored => {
                    Body::from_stream(futures::stream::pending::<Result<Bytes, Infallible>>())
                        .into_response()
                }
            }
        };
        let app = axum::Router::new()
            .route("/version", get(version))
            .route("/api/v1/secrets", get(watch));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let url = format!("http://{addr}").parse().unwrap();
        let client = Client::try_from(kube::Config::new(url)).unwrap();
        (client, task)
    }

    fn secrets() -> WatchScope {
        WatchScope {
            resource: Watched::Source(SourceKind::Secret),
            namespace: None,
        }
    }

    async fn path(minor: &'static str, answer: Answer, choice: InitialList) -> ListPath {
        let (client, task) = server(minor, answer).await;
        let path = initial_list_path(&client, choice, Some(&secrets())).await;
        task.abort();
        path
    }

    #[tokio::test]
    async fn auto_streams_where_the_server_ends_the_initial_events_with_the_bookmark() {
        assert_eq!(
            path("37", Answer::Bookmark, InitialList::Auto).await,
            ListPath::Stream
        );
    }

    #[tokio::test]
    async fn auto_pages_where_the_server_refuses_streaming_lists() {
        assert_eq!(
            path("33", Answer::Refused, InitialList::Auto).await,
            ListPath::Pages
        );
    }

    #[tokio::test]
    async fn auto_pages_below_1_27_without_asking() {
        // Even a server that would answer with the bookmark: below 1.27 nothing is probed.
        assert_eq!(
            path("26", Answer::Bookmark, InitialList::Auto).await,
            ListPath::Pages
        );
    }

    #[tokio::test]
    async fn the_probe_gives_up_on_a_server_that_ignores_the_parameters() {
        let (client, task) = server("30", Answer::Ignored).await;
        let started = std::time::Instant::now();
        let streams = streams_initial_events(&client, &secrets(), Duration::from_secs(1)).await;
        task.abort();
        assert!(!streams);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn explicit_choices_are_taken_as_given() {
        assert_eq!(
            path("26", Answer::Refused, InitialList::Stream).await,
            ListPath::Stream
        );
        assert_eq!(
            path("37", Answer::Bookmark, InitialList::Pages).await,
            ListPath::Pages
        );
    }
}
