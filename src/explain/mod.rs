//! `hashroll explain`: what hashroll tracks for one workload and whether it would roll it now, and why (not);
//! or which workloads use one Secret or ConfigMap. Read-only, with the controller's code (policy, references,
//! the decision, wire parsing, the kind table) and its flags, so it judges as the controller does.
//!
//! This module reads, as the controller's watches would: the object, the namespace's Secrets and ConfigMaps
//! (with the same label and field selectors, values hashed as they are parsed), the installation key.
//! [`workload`] and [`users`] turn that into a [`report`]; [`text`] prints it for people, `-o json` for tools.

mod report;
mod text;
mod users;
mod wording;
mod workload;

use crate::k8s::csi;
use crate::model::provider_class::ProviderClasses;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, ObjectList, PartialObjectMeta};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::app::{client_config, rollouts_served};
use crate::cli::{Args, ExplainArgs, Output, Target};
use crate::error::ErrorClass;
use crate::k8s::api_resource;
use crate::k8s::key_secret;
use crate::k8s::watch::LIST_PAGE_SIZE;
use crate::k8s::wire::{ConfigMapDigests, SecretDigests, WorkloadWire};
use crate::model::kind::{SourceId, SourceKind, WorkloadKind};
use crate::model::source::SourceSummary;
use crate::reconcile::scopes::NamespaceFilter;

use report::{Cluster, Settings};

/// Explains `explain.target` as the controller configured by `args` sees it; returns what to print.
pub async fn run(args: &Args, explain: &ExplainArgs) -> anyhow::Result<String> {
    let config = client_config(args).await?;
    let namespace = explain
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let controller_ns = args.controller_namespace(&config.default_namespace);
    let client = crate::k8s::client::build(config).context("building the Kubernetes client")?;
    let settings = Settings {
        policy: args.into(),
        visibility: args.into(),
        workload_kinds: args.workload_kinds(),
        debounce: args.debounce,
        dry_run: args.dry_run,
    };
    let cluster = read_cluster(&client, args, &namespace, &controller_ns).await?;
    let now = jiff::Timestamp::now();
    let json = explain.output == Output::Json;
    match &explain.target {
        Target::Workload(kind, name) => {
            let api: Api<WorkloadWire> =
                Api::namespaced_with(client, &namespace, &api_resource(*kind));
            // A list of one, not a get: the controller's RBAC grants list and watch, not get.
            let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
            let wire = list_all(&api, by_name)
                .await
                .with_context(|| format!("reading {kind} {namespace}/{name}"))?
                .into_iter()
                .next()
                .with_context(|| format!("{kind} {namespace}/{name} not found"))?;
            let mut cluster = cluster;
            if let Some(addr) = args.vault.addr() {
                read_vault_paths(args, addr, *kind, &wire, &mut cluster).await?;
            }
            let report = workload::workload_report(*kind, &wire, &settings, &cluster, now);
            Ok(if json {
                serde_json::to_string_pretty(&report)? + "\n"
            } else {
                text::workload(&report)
            })
        }
        Target::Source(kind, name) => {
            let mut workloads = Vec::new();
            let mut notes = Vec::new();
            for &kind in &settings.workload_kinds {
                // As the controller: Rollouts only where the API server serves them.
                if kind == WorkloadKind::Rollout && !rollouts_served(&client).await {
                    continue;
                }
                let api: Api<WorkloadWire> =
                    Api::namespaced_with(client.clone(), &namespace, &api_resource(kind));
                let plural = kind.info().plural;
                match list_all(&api, ListParams::default()).await {
                    Ok(items) => workloads.extend(items.into_iter().map(|w| (kind, w))),
                    Err(e) if ErrorClass::of(&e) == ErrorClass::Forbidden => notes.push(format!(
                        "cannot list {plural} in {namespace} ({}): their uses are not shown",
                        crate::error::Error::api("listing", plural, e).answer()
                    )),
                    Err(e) => {
                        return Err(e).with_context(|| format!("listing {plural} in {namespace}"));
                    }
                }
            }
            let id = SourceId::new(*kind, &namespace, name.as_str());
            let mut report = users::source_report(&id, &workloads, &settings, &cluster);
            report.notes.extend(notes);
            Ok(if json {
                serde_json::to_string_pretty(&report)? + "\n"
            } else {
                text::source(&report)
            })
        }
    }
}

/// Reads the Vault paths the workload uses as the controller's poller would (same flags, same digests), so
/// they are judged like its Secrets; a path missing or not readable is left out, as the controller leaves
/// it out. Vault down is an error: without it nothing can be said about those paths.
async fn read_vault_paths(
    args: &Args,
    addr: String,
    kind: WorkloadKind,
    wire: &WorkloadWire,
    cluster: &mut Cluster,
) -> anyhow::Result<()> {
    use crate::model::workload::Tracking;
    use crate::vault::client::{Read, VaultClient};
    let Some(summary) = wire.summary(kind, args.into()) else {
        return Ok(());
    };
    let Tracking::On { references, .. } = &summary.tracking else {
        return Ok(());
    };
    let paths: Vec<&str> = (references.iter())
        .filter(|r| r.kind == SourceKind::Vault)
        .map(|r| r.name.as_str())
        .collect();
    if paths.is_empty() {
        return Ok(());
    }
    let mut client = VaultClient::new(&args.vault, addr)?;
    let token = (client.token().await).map_err(|e| anyhow::anyhow!("Vault: {e}"))?;
    for path in paths {
        let read = client.read(path, &token, args.vault.vault_key_level).await;
        match read.map_err(|e| anyhow::anyhow!("reading Vault path {path}: {e}"))? {
            Read::Present(keys) => {
                let id = Arc::new(SourceId::new(
                    SourceKind::Vault,
                    &summary.id.namespace,
                    path,
                ));
                let s = SourceSummary {
                    id: Arc::clone(&id),
                    keys: keys.into(),
                    ignore: false,
                    stakater_match: false,
                    excluded_type: None,
                };
                cluster.sources.insert(id, s);
            }
            Read::Missing | Read::Forbidden => {}
        }
    }
    Ok(())
}

/// Reads what the controller would hold for `namespace`, the installation key, and whether hashroll acts
/// in the namespace at all.
async fn read_cluster(
    client: &Client,
    args: &Args,
    namespace: &str,
    controller_ns: &str,
) -> anyhow::Result<Cluster> {
    let compat = args.stakater_compat;
    let mut sources = BTreeMap::new();
    let mut written_at = HashMap::new();
    let mut keep = |meta: &ObjectMeta, summary: Option<SourceSummary>| {
        if let Some(s) = summary {
            if let Some(t) = last_write(meta) {
                written_at.insert(SourceId::clone(&s.id), t);
            }
            sources.insert(Arc::clone(&s.id), s);
        }
    };
    // The watches' own selectors: what they would not deliver is not held.
    let mut params = ListParams::default();
    if let Some(l) = &args.resource_label_selector {
        params = params.labels(l);
    }
    for kind in args.source_kinds() {
        let what = || format!("listing {} in {namespace}", kind.info().plural);
        match kind {
            SourceKind::Secret => {
                let mut params = params.clone();
                if let Some(f) = args.secret_field_selector() {
                    params = params.fields(&f);
                }
                let api: Api<SecretDigests> = Api::namespaced(client.clone(), namespace);
                for s in list_all(&api, params).await.with_context(what)? {
                    keep(&s.metadata, s.summary(compat));
                }
            }
            SourceKind::ConfigMap => {
                let api: Api<ConfigMapDigests> = Api::namespaced(client.clone(), namespace);
                for c in list_all(&api, params.clone()).await.with_context(what)? {
                    keep(&c.metadata, c.summary(compat));
                }
            }
            SourceKind::SecretProviderClass => {
                // As the controller: only where served, each class with its newest status's versions.
                if !csi::served(client).await {
                    continue;
                }
                let statuses: Api<csi::StatusWire> =
                    Api::namespaced_with(client.clone(), namespace, &csi::status_resource());
                let mut known = ProviderClasses::default();
                for s in list_all(&statuses, ListParams::default())
                    .await
                    .with_context(what)?
                {
                    if let Some(s) = s.reduce() {
                        known.status_applied(s);
                    }
                }
                let classes: Api<csi::ClassWire> =
                    Api::namespaced_with(client.clone(), namespace, &csi::class_resource());
                for c in list_all(&classes, params.clone())
                    .await
                    .with_context(what)?
                {
                    let class = SourceSummary::new(kind, &c.metadata, BTreeMap::new(), compat);
                    keep(&c.metadata, class.and_then(|c| known.class_applied(c)));
                }
            }
            // `explain` does not read Vault: its paths show as not watched.
            SourceKind::Vault => {}
        }
    }
    if args.source_kinds().contains(&SourceKind::Secret) {
        // Secrets of excluded types: known by name only, as the controller knows them.
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for (i, t) in args.excluded_secret_types().iter().enumerate() {
            let Ok(i) = u8::try_from(i) else { break };
            let params = ListParams::default().fields(&format!("type={t}"));
            let list = list_metadata_all(&api, params)
                .await
                .with_context(|| format!("listing Secrets of type {t} in {namespace}"))?;
            for m in list {
                keep(&m.metadata, SourceSummary::excluded(&m.metadata, i));
            }
        }
    }

    let key = match key_secret::load(client, controller_ns, &args.key_secret).await {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(format!(
            "there is no Secret {controller_ns}/{}: hashroll never ran with this \
             --controller-namespace and --key-secret",
            args.key_secret
        )),
        Err(e) => Err(e.to_string()),
    };
    let not_acted_on = not_acted_on(client, args, namespace).await?;
    Ok(Cluster {
        sources,
        written_at,
        key,
        not_acted_on,
    })
}

/// Why hashroll does not act in `namespace` (`--namespaces`, `--ignore-namespaces`,
/// `--namespace-selector`), if it does not.
async fn not_acted_on(
    client: &Client,
    args: &Args,
    namespace: &str,
) -> anyhow::Result<Option<String>> {
    let filter = NamespaceFilter::from(args);
    if filter
        .only
        .as_ref()
        .is_some_and(|only| !only.contains(namespace))
    {
        return Ok(Some(format!(
            "hashroll acts only in the namespaces of --namespaces, not in {namespace}"
        )));
    }
    if filter.ignore.contains(namespace) {
        return Ok(Some(format!("--ignore-namespaces names {namespace}")));
    }
    if let Some(selector) = &args.namespace_selector {
        // As the controller's Namespace watch sees it: listed with the selector.
        let api: Api<Namespace> = Api::all(client.clone());
        let selected = list_all(&api, ListParams::default().labels(selector))
            .await
            .context("listing Namespaces for --namespace-selector")?;
        if !selected
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(namespace))
        {
            return Ok(Some(format!(
                "namespace {namespace} does not match --namespace-selector {selector}"
            )));
        }
    }
    Ok(None)
}

/// When an object was last written: its newest `managedFields` time, else its creation.
fn last_write(meta: &ObjectMeta) -> Option<jiff::Timestamp> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.time.as_ref())
        .map(|t| t.0)
        .max()
        .or(meta.creation_timestamp.as_ref().map(|t| t.0))
}

/// Every object of a list, page by page (the watches' page size).
async fn list_all<K>(api: &Api<K>, params: ListParams) -> kube::Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut params = params.limit(LIST_PAGE_SIZE);
    loop {
        let page: ObjectList<K> = api.list(&params).await?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// [`list_all`] for metadata only.
async fn list_metadata_all(
    api: &Api<Secret>,
    params: ListParams,
) -> kube::Result<Vec<PartialObjectMeta<Secret>>> {
    let mut out = Vec::new();
    let mut params = params.limit(LIST_PAGE_SIZE);
    loop {
        let page = api.list_metadata(&params).await?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}
