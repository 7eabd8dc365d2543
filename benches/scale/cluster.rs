//! The synthetic cluster: a deterministic plan from a seed, and populating a server with it.

use std::collections::BTreeMap;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// Creates in flight at once while populating.
const IN_FLIGHT: usize = 32;
/// Namespace of the fan-out scenario.
pub const FANOUT_NS: &str = "fanout";
/// The Secret every fan-out workload uses.
pub const FANOUT_SECRET: &str = "shared";

/// Sizes of one scale.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Scale {
    /// Name: S, M or L.
    pub name: &'static str,
    /// Ordinary Secrets.
    pub secrets: usize,
    /// Helm release Secrets (type `helm.sh/release.v1`, 50 KiB each).
    pub helm_secrets: usize,
    /// ConfigMaps.
    pub configmaps: usize,
    /// Workloads (Deployments, StatefulSets, DaemonSets, CronJobs).
    pub workloads: usize,
    /// Namespaces the objects are spread over.
    pub namespaces: usize,
    /// Deployments sharing one Secret, in their own namespace.
    pub fanout: usize,
}

impl Scale {
    /// The scale called `name` (S, M or L, any case).
    pub fn named(name: &str) -> Option<Scale> {
        let s = match name.to_ascii_uppercase().as_str() {
            "S" => Scale {
                name: "S",
                secrets: 1_000,
                helm_secrets: 100,
                configmaps: 500,
                workloads: 500,
                namespaces: 10,
                fanout: 200,
            },
            "M" => Scale {
                name: "M",
                secrets: 10_000,
                helm_secrets: 2_000,
                configmaps: 5_000,
                workloads: 5_000,
                namespaces: 100,
                fanout: 1_000,
            },
            "L" => Scale {
                name: "L",
                secrets: 50_000,
                helm_secrets: 5_000,
                configmaps: 20_000,
                workloads: 20_000,
                namespaces: 500,
                fanout: 1_000,
            },
            _ => return None,
        };
        Some(s)
    }
}

/// SplitMix64: tiny, fast and fully determined by its seed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// `len` random alphanumeric characters (ConfigMap data must be UTF-8).
    pub fn text(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        self.bytes(len)
            .into_iter()
            .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
            .collect()
    }
}

/// How a pod spec refers to a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    /// `env[].valueFrom.secretKeyRef` / `configMapKeyRef` on key `key-0`.
    EnvKey,
    /// `envFrom[].secretRef` / `configMapRef`.
    EnvFrom,
    /// A `secret` / `configMap` volume.
    Volume,
    /// A projected volume source.
    Projected,
}

/// A Secret or a ConfigMap, by index within its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceRef {
    /// `secret-<i>`.
    Secret(usize),
    /// `config-<i>`.
    ConfigMap(usize),
    /// The fan-out Secret.
    Shared,
}

impl SourceRef {
    /// The object's name.
    pub fn name(self) -> String {
        match self {
            SourceRef::Secret(i) => format!("secret-{i}"),
            SourceRef::ConfigMap(i) => format!("config-{i}"),
            SourceRef::Shared => FANOUT_SECRET.to_string(),
        }
    }
}

/// Workload kinds the plan creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// batch/v1 CronJob.
    CronJob,
}

/// One planned workload.
#[derive(Clone, Debug)]
pub struct WorkloadPlan {
    /// Kind.
    pub kind: Kind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Sources it uses and how.
    pub refs: Vec<(SourceRef, RefKind)>,
}

/// One namespace's sources: sizes in bytes of each Secret and ConfigMap (before the payload factor).
#[derive(Clone, Debug, Default)]
pub struct NamespacePlan {
    /// Namespace name.
    pub name: String,
    /// Size of each ordinary Secret.
    pub secret_sizes: Vec<usize>,
    /// Number of Helm release Secrets.
    pub helm: usize,
    /// Size of each ConfigMap.
    pub configmap_sizes: Vec<usize>,
}

/// The whole cluster, fully determined by scale and seed.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Namespaces and their sources.
    pub namespaces: Vec<NamespacePlan>,
    /// Workloads (fan-out ones last).
    pub workloads: Vec<WorkloadPlan>,
    /// Payload multiplier applied to every Secret and ConfigMap.
    pub payload_factor: usize,
    /// Seed for content.
    pub seed: u64,
}

/// Size of a Helm release Secret.
const HELM_SIZE: usize = 50 * 1024;

impl Plan {
    /// Plans `scale` from `seed`, with every payload `payload_factor` times larger.
    pub fn new(scale: &Scale, seed: u64, payload_factor: usize) -> Plan {
        let mut rng = Rng::new(seed);
        let mut namespaces: Vec<NamespacePlan> = (0..scale.namespaces)
            .map(|i| NamespacePlan {
                name: format!("ns-{i:03}"),
                ..Default::default()
            })
            .collect();
        let n = scale.namespaces;
        for i in 0..scale.secrets {
            // Mostly 1–8 KiB; one in twenty is 100 KiB.
            let size = if rng.chance(0.05) {
                100 * 1024
            } else {
                rng.range(1024, 8 * 1024)
            };
            namespaces[i % n].secret_sizes.push(size);
        }
        for i in 0..scale.helm_secrets {
            namespaces[i % n].helm += 1;
        }
        for i in 0..scale.configmaps {
            let size = rng.range(512, 8 * 1024);
            namespaces[i % n].configmap_sizes.push(size);
        }
        let secret_share = scale.secrets as f64 / (scale.secrets + scale.configmaps).max(1) as f64;
        let mut workloads = Vec::with_capacity(scale.workloads + scale.fanout);
        for i in 0..scale.workloads {
            let ns = &namespaces[i % n];
            let kind = match rng.range(0, 99) {
                0..=54 => Kind::Deployment,
                55..=69 => Kind::StatefulSet,
                70..=84 => Kind::DaemonSet,
                _ => Kind::CronJob,
            };
            let mut refs: Vec<(SourceRef, RefKind)> = Vec::new();
            for _ in 0..rng.range(1, 4) {
                let use_secret = !ns.secret_sizes.is_empty()
                    && (ns.configmap_sizes.is_empty() || rng.chance(secret_share));
                let src = if use_secret {
                    SourceRef::Secret(rng.range(0, ns.secret_sizes.len() - 1))
                } else if !ns.configmap_sizes.is_empty() {
                    SourceRef::ConfigMap(rng.range(0, ns.configmap_sizes.len() - 1))
                } else {
                    continue;
                };
                // One reference per source keeps volume names unique.
                if refs.iter().any(|(s, _)| *s == src) {
                    continue;
                }
                let how = match rng.range(0, 3) {
                    0 => RefKind::EnvKey,
                    1 => RefKind::EnvFrom,
                    2 => RefKind::Volume,
                    _ => RefKind::Projected,
                };
                refs.push((src, how));
            }
            workloads.push(WorkloadPlan {
                kind,
                namespace: ns.name.clone(),
                name: format!("app-{i}"),
                refs,
            });
        }
        for i in 0..scale.fanout {
            let how = [
                RefKind::EnvKey,
                RefKind::EnvFrom,
                RefKind::Volume,
                RefKind::Projected,
            ][i % 4];
            workloads.push(WorkloadPlan {
                kind: Kind::Deployment,
                namespace: FANOUT_NS.into(),
                name: format!("fan-{i}"),
                refs: vec![(SourceRef::Shared, how)],
            });
        }
        Plan {
            namespaces,
            workloads,
            payload_factor: payload_factor.max(1),
            seed,
        }
    }

    /// Secrets used by exactly one workload, that workload being a Deployment outside the fan-out
    /// namespace: updating one must roll exactly that Deployment. Deterministic order.
    pub fn single_use_secrets(&self) -> Vec<(String, String, String)> {
        let mut users: BTreeMap<(&str, usize), Vec<&WorkloadPlan>> = BTreeMap::new();
        for w in self.workloads.iter().filter(|w| w.namespace != FANOUT_NS) {
            for (src, _) in &w.refs {
                if let SourceRef::Secret(i) = src {
                    users.entry((w.namespace.as_str(), *i)).or_default().push(w);
                }
            }
        }
        users
            .into_iter()
            .filter_map(|((ns, i), ws)| match ws.as_slice() {
                [w] if w.kind == Kind::Deployment => {
                    Some((ns.to_string(), format!("secret-{i}"), w.name.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Raw bytes of Secret and ConfigMap data the plan creates (Helm releases included).
    pub fn data_bytes(&self) -> u64 {
        let per_ns: usize = self
            .namespaces
            .iter()
            .map(|n| {
                n.secret_sizes.iter().sum::<usize>()
                    + n.helm * HELM_SIZE
                    + n.configmap_sizes.iter().sum::<usize>()
            })
            .sum();
        ((per_ns + FANOUT_SECRET_SIZE) * self.payload_factor) as u64
    }
}

/// Size of the fan-out Secret.
const FANOUT_SECRET_SIZE: usize = 4096;

/// Splits `size` bytes over 1–4 keys `key-0..`.
fn key_sizes(rng: &mut Rng, size: usize) -> Vec<usize> {
    let keys = rng.range(1, 4).min(size.max(1));
    (0..keys)
        .map(|k| size / keys + usize::from(k < size % keys))
        .collect()
}

fn secret(rng: &mut Rng, ns: &str, name: String, size: usize, type_: &str) -> Secret {
    let data = key_sizes(rng, size)
        .into_iter()
        .enumerate()
        .map(|(k, len)| (format!("key-{k}"), ByteString(rng.bytes(len))))
        .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(data),
        type_: Some(type_.into()),
        ..Default::default()
    }
}

fn configmap(rng: &mut Rng, ns: &str, name: String, size: usize) -> ConfigMap {
    let data = key_sizes(rng, size)
        .into_iter()
        .enumerate()
        .map(|(k, len)| (format!("key-{k}"), rng.text(len)))
        .collect();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// The pod template of a planned workload.
fn pod_template(w: &WorkloadPlan) -> Value {
    let mut env = Vec::new();
    let mut env_from = Vec::new();
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, (src, how)) in w.refs.iter().enumerate() {
        let name = src.name();
        let secret = !matches!(src, SourceRef::ConfigMap(_));
        let vol = format!("v{i}");
        match how {
            RefKind::EnvKey => {
                let key_ref = json!({ "name": name, "key": "key-0" });
                let from = if secret {
                    json!({ "secretKeyRef": key_ref })
                } else {
                    json!({ "configMapKeyRef": key_ref })
                };
                env.push(json!({ "name": format!("VALUE_{i}"), "valueFrom": from }));
            }
            RefKind::EnvFrom => env_from.push(if secret {
                json!({ "secretRef": { "name": name } })
            } else {
                json!({ "configMapRef": { "name": name } })
            }),
            RefKind::Volume => {
                volumes.push(if secret {
                    json!({ "name": vol, "secret": { "secretName": name } })
                } else {
                    json!({ "name": vol, "configMap": { "name": name } })
                });
                mounts.push(json!({ "name": vol, "mountPath": format!("/etc/{vol}") }));
            }
            RefKind::Projected => {
                let source = if secret {
                    json!({ "secret": { "name": name } })
                } else {
                    json!({ "configMap": { "name": name } })
                };
                volumes.push(json!({ "name": vol, "projected": { "sources": [source] } }));
                mounts.push(json!({ "name": vol, "mountPath": format!("/etc/{vol}") }));
            }
        }
    }
    json!({
        "metadata": { "labels": { "app": w.name } },
        "spec": {
            "containers": [{
                "name": "app", "image": "registry.example/app:1.0",
                "env": env, "envFrom": env_from, "volumeMounts": mounts,
            }],
            "volumes": volumes,
            "restartPolicy": if w.kind == Kind::CronJob { "OnFailure" } else { "Always" },
        }
    })
}

/// The full workload object of a plan entry, opted in to hashroll.
///
/// No workload ever has a Pod, so that a real control plane's controllers, scheduler and kwok (2 cores,
/// thousands of workloads) have only the workloads themselves to handle: Deployments and StatefulSets
/// have 0 replicas, DaemonSets select no Node, CronJobs are suspended. The test server gets the same
/// objects, so both servers hold the same cluster.
pub fn workload_object(w: &WorkloadPlan) -> Value {
    let meta = json!({
        "name": w.name, "namespace": w.namespace,
        "annotations": { "hashroll.dev/reload": "true" },
    });
    let mut template = pod_template(w);
    let selector = json!({ "matchLabels": { "app": w.name } });
    match w.kind {
        Kind::Deployment => {
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": { "replicas": 0, "selector": selector, "template": template } })
        }
        Kind::StatefulSet => {
            json!({ "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
            "spec": { "replicas": 0, "serviceName": w.name, "selector": selector, "template": template } })
        }
        Kind::DaemonSet => {
            template["spec"]["nodeSelector"] = json!({ "bench.hashroll.dev/no-node": "true" });
            json!({ "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta,
            "spec": { "selector": selector, "template": template } })
        }
        Kind::CronJob => json!({ "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
            "spec": { "schedule": "*/30 * * * *", "suspend": true,
                "jobTemplate": { "spec": { "template": template } } } }),
    }
}

/// Something to create.
enum Item {
    Secret(Secret),
    ConfigMap(ConfigMap),
    Workload(Kind, Value),
}

/// Creates every namespace, source and workload of `plan`, `IN_FLIGHT` at a time.
pub async fn populate(client: &kube::Client, plan: &Plan) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let mut names: Vec<String> = plan.namespaces.iter().map(|n| n.name.clone()).collect();
    names.push(FANOUT_NS.into());
    names.push("hashroll".into());
    futures::stream::iter(names)
        .map(|name| {
            let ns_api = ns_api.clone();
            let pp = pp.clone();
            async move {
                let ns: Namespace =
                    serde_json::from_value(json!({ "metadata": { "name": name } }))?;
                ns_api
                    .create(&pp, &ns)
                    .await
                    .map_err(|e| anyhow::anyhow!("creating namespace {name}: {e}"))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;

    // Content is generated lazily, item by item, so the bench never holds the whole data set.
    let factor = plan.payload_factor;
    let mut rng = Rng::new(plan.seed ^ 0xC0FF_EE00);
    let sources = plan.namespaces.iter().flat_map(move |ns| {
        let secrets = ns
            .secret_sizes
            .iter()
            .enumerate()
            .map(|(i, s)| (i, *s, false));
        let helm = (0..ns.helm).map(|i| (i, HELM_SIZE, true));
        let cms = ns.configmap_sizes.iter().copied().enumerate();
        secrets
            .chain(helm)
            .map(|(i, size, helm)| (ns.name.as_str(), Some((i, size, helm)), None))
            .chain(cms.map(|(i, size)| (ns.name.as_str(), None, Some((i, size)))))
            .collect::<Vec<_>>()
    });
    let fanout = std::iter::once((FANOUT_NS, Some((0, FANOUT_SECRET_SIZE, false)), None));
    let items = sources
        .chain(fanout)
        .map(move |(ns, s, c)| match (s, c) {
            (Some((i, size, false)), _) => {
                let name = if ns == FANOUT_NS {
                    FANOUT_SECRET.to_string()
                } else {
                    format!("secret-{i}")
                };
                Item::Secret(secret(&mut rng, ns, name, size * factor, "Opaque"))
            }
            (Some((i, size, true)), _) => Item::Secret(secret(
                &mut rng,
                ns,
                format!("sh.helm.release.v1.release-{i}.v1"),
                size * factor,
                "helm.sh/release.v1",
            )),
            (None, Some((i, size))) => Item::ConfigMap(configmap(
                &mut rng,
                ns,
                format!("config-{i}"),
                size * factor,
            )),
            (None, None) => unreachable!("every source item is a Secret or a ConfigMap"),
        })
        .chain(
            plan.workloads
                .iter()
                .map(|w| Item::Workload(w.kind, workload_object(w))),
        );
    futures::stream::iter(items)
        .map(|item| create(client.clone(), item))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn create(client: kube::Client, item: Item) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let (what, result) = match item {
        Item::Secret(s) => {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            let what = format!("Secret {ns}/{}", s.metadata.name.as_deref().unwrap_or(""));
            let api: Api<Secret> = Api::namespaced(client, &ns);
            (what, api.create(&pp, &s).await.map(drop))
        }
        Item::ConfigMap(c) => {
            let ns = c.metadata.namespace.clone().unwrap_or_default();
            let what = format!(
                "ConfigMap {ns}/{}",
                c.metadata.name.as_deref().unwrap_or("")
            );
            let api: Api<ConfigMap> = Api::namespaced(client, &ns);
            (what, api.create(&pp, &c).await.map(drop))
        }
        Item::Workload(kind, v) => {
            let ns = v["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let what = format!("{kind:?} {ns}/{}", v["metadata"]["name"]);
            let r = match kind {
                Kind::Deployment => create_typed::<Deployment>(client, &ns, v).await,
                Kind::StatefulSet => create_typed::<StatefulSet>(client, &ns, v).await,
                Kind::DaemonSet => create_typed::<DaemonSet>(client, &ns, v).await,
                Kind::CronJob => create_typed::<CronJob>(client, &ns, v).await,
            };
            (what, r)
        }
    };
    result.map_err(|e| anyhow::anyhow!("creating {what}: {e}"))
}

async fn create_typed<K>(client: kube::Client, ns: &str, v: Value) -> kube::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(v).map_err(kube::Error::SerdeError)?;
    Api::<K>::namespaced(client, ns)
        .create(&PostParams::default(), &obj)
        .await
        .map(drop)
}
