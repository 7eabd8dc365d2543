//! `<bench> baseline`: the informer design hashroll is compared with. It caches every Secret, ConfigMap
//! and workload in full in kube-runtime reflectors and, like Stakater Reloader, on every Secret/ConfigMap
//! event hashes the data and patches each workload (found by scanning the cached workloads) whose template
//! annotation differs. It lists nothing per change (Reloader does), so it is a favourable baseline.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, PodTemplateSpec, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Resource, ResourceExt as _};
use sha2::Digest as _;

/// Template annotation the baseline writes.
pub const BASELINE_ANNOTATION: &str = "baseline.bench/hash";
/// The line the baseline prints on stderr once every reflector has listed.
pub const READY_LINE: &str = "baseline ready: every reflector has listed";

/// A cached workload kind: how to reach its pod template.
trait Workload: Resource<DynamicType = ()> + Clone + Send + Sync + std::fmt::Debug + 'static {
    fn template(&self) -> Option<&PodTemplateSpec>;
}

impl Workload for Deployment {
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}
impl Workload for StatefulSet {
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}
impl Workload for DaemonSet {
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}
impl Workload for CronJob {
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .map(|s| &s.template)
    }
}

/// Names of Secrets (`secret/x`) and ConfigMaps (`configmap/x`) a pod spec uses.
fn used(spec: &PodSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value_from {
                if let Some(r) = &v.secret_key_ref {
                    out.insert(format!("secret/{}", r.name));
                }
                if let Some(r) = &v.config_map_key_ref {
                    out.insert(format!("configmap/{}", r.name));
                }
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.secret_ref {
                out.insert(format!("secret/{}", r.name));
            }
            if let Some(r) = &e.config_map_ref {
                out.insert(format!("configmap/{}", r.name));
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.as_ref()) {
            out.insert(format!("secret/{s}"));
        }
        if let Some(c) = &v.config_map {
            out.insert(format!("configmap/{}", c.name));
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &src.secret {
                out.insert(format!("secret/{}", s.name));
            }
            if let Some(c) = &src.config_map {
                out.insert(format!("configmap/{}", c.name));
            }
        }
    }
    out
}

/// Starts a reflector for `K` on every namespace; returns its store.
fn reflect<K>(client: &kube::Client) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), Default::default()),
    )
    .default_backoff()
    .touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    reader
}

/// A source changed: patch every cached workload of kind `K` in `ns` that uses `source` and whose
/// annotation differs from `hash`.
async fn roll<K>(client: &kube::Client, store: &Store<K>, ns: &str, source: &str, hash: &str)
where
    K: Workload
        + Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + serde::de::DeserializeOwned,
{
    let targets: Vec<String> = store
        .state()
        .iter()
        .filter(|w| w.namespace().as_deref() == Some(ns))
        .filter_map(|w| {
            let t = w.template()?;
            let spec = t.spec.as_ref()?;
            let current = t
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(BASELINE_ANNOTATION));
            (used(spec).contains(source) && current.map(String::as_str) != Some(hash))
                .then(|| w.name_any())
        })
        .collect();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    for name in targets {
        let body = if K::kind(&()) == "CronJob" {
            serde_json::json!({ "spec": { "jobTemplate": { "spec": { "template": { "metadata": {
                "annotations": { BASELINE_ANNOTATION: hash } } } } } } })
        } else {
            serde_json::json!({ "spec": { "template": { "metadata": {
                "annotations": { BASELINE_ANNOTATION: hash } } } } })
        };
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            eprintln!("baseline: patching {} {ns}/{name}: {e}", K::kind(&()));
        }
    }
}

/// Runs the baseline against `kubeconfig` until killed.
pub async fn run(kubeconfig: &std::path::Path) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let client = kube::Client::try_from(config)?;
    let deployments = reflect::<Deployment>(&client);
    let statefulsets = reflect::<StatefulSet>(&client);
    let daemonsets = reflect::<DaemonSet>(&client);
    let cronjobs = reflect::<CronJob>(&client);

    // Sources are reflected too, and their events drive the rolls once everything has listed.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, String)>();
    let (secrets, swriter) = reflector::store::<Secret>();
    let stx = tx.clone();
    let sclient = client.clone();
    tokio::spawn(async move {
        let s = reflector::reflector(
            swriter,
            watcher(Api::<Secret>::all(sclient), Default::default()),
        )
        .default_backoff()
        .applied_objects();
        let mut s = std::pin::pin!(s);
        while let Some(item) = s.next().await {
            let obj = match item {
                Ok(obj) => obj,
                Err(e) => {
                    eprintln!("baseline: Secret watch error (retrying): {e}");
                    continue;
                }
            };
            let mut h = sha2::Sha256::new();
            for (k, v) in obj.data.iter().flatten() {
                h.update(k.as_bytes());
                h.update(&v.0);
            }
            let _ = stx.send((
                obj.namespace().unwrap_or_default(),
                format!("secret/{}", obj.name_any()),
                hex::encode(h.finalize()),
            ));
        }
    });
    let (configmaps, cwriter) = reflector::store::<ConfigMap>();
    let ctx = tx;
    let cclient = client.clone();
    tokio::spawn(async move {
        let s = reflector::reflector(
            cwriter,
            watcher(Api::<ConfigMap>::all(cclient), Default::default()),
        )
        .default_backoff()
        .applied_objects();
        let mut s = std::pin::pin!(s);
        while let Some(item) = s.next().await {
            let obj = match item {
                Ok(obj) => obj,
                Err(e) => {
                    eprintln!("baseline: ConfigMap watch error (retrying): {e}");
                    continue;
                }
            };
            let mut h = sha2::Sha256::new();
            for (k, v) in obj.data.iter().flatten() {
                h.update(k.as_bytes());
                h.update(v.as_bytes());
            }
            let _ = ctx.send((
                obj.namespace().unwrap_or_default(),
                format!("configmap/{}", obj.name_any()),
                hex::encode(h.finalize()),
            ));
        }
    });

    for r in [
        secrets.wait_until_ready().await,
        configmaps.wait_until_ready().await,
        deployments.wait_until_ready().await,
        statefulsets.wait_until_ready().await,
        daemonsets.wait_until_ready().await,
        cronjobs.wait_until_ready().await,
    ] {
        r.map_err(|e| anyhow::anyhow!("a reflector stopped before listing: {e}"))?;
    }
    eprintln!("{READY_LINE}");
    // Events from the initial list describe no change: drop them (the initial state is not rolled).
    tokio::time::sleep(Duration::from_millis(50)).await;
    while rx.try_recv().is_ok() {}
    while let Some((ns, source, hash)) = rx.recv().await {
        roll(&client, &deployments, &ns, &source, &hash).await;
        roll(&client, &statefulsets, &ns, &source, &hash).await;
        roll(&client, &daemonsets, &ns, &source, &hash).await;
        roll(&client, &cronjobs, &ns, &source, &hash).await;
    }
    Ok(())
}
