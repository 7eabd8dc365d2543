//! Reaction latency, fan-out and API cost, observed through a kube-rs watch on Deployments.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use tokio::sync::mpsc;

use crate::baseline::BASELINE_ANNOTATION;
use crate::cluster::Rng;
use crate::procs::Server;

/// Template annotations that mark a roll (hashroll's and the baseline's).
const MARKERS: [&str; 2] = ["hashroll.dev/hash", BASELINE_ANNOTATION];

/// A watch on every Deployment that reports each change of a roll marker on the pod template.
pub struct TemplateWatch {
    rx: mpsc::UnboundedReceiver<(String, Instant)>,
    task: tokio::task::JoinHandle<()>,
}

fn marker(d: &Deployment) -> String {
    let ann = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref());
    MARKERS
        .iter()
        .map(|k| ann.and_then(|a| a.get(*k)).cloned().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("|")
}

impl TemplateWatch {
    /// Starts the watch and returns once its initial list is in.
    pub async fn start(client: kube::Client) -> anyhow::Result<TemplateWatch> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let api: Api<Deployment> = Api::all(client);
        let task = tokio::spawn(async move {
            let mut seen: HashMap<String, String> = HashMap::new();
            let mut ready = Some(ready_tx);
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(ev) = stream.next().await {
                let now = Instant::now();
                let obj = match ev {
                    Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => d,
                    Ok(watcher::Event::InitDone) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                        continue;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        eprintln!("bench: deployment watch error (retrying): {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
                let m = marker(&obj);
                if let Some(prev) = seen.insert(key.clone(), m.clone())
                    && prev != m
                {
                    let _ = tx.send((key, now));
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(120), ready_rx)
            .await
            .map_err(|_| anyhow::anyhow!("the bench's Deployment watch did not list within 120 s"))?
            .map_err(|_| anyhow::anyhow!("the bench's Deployment watch ended before listing"))?;
        Ok(TemplateWatch { rx, task })
    }

    /// Drops rolls reported so far.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    /// Waits until every key in `want` has rolled or `timeout` passes. Returns the time of the last
    /// wanted roll (if any), the keys still missing, and rolls of Deployments not wanted.
    pub async fn wait_for(
        &mut self,
        mut want: HashSet<String>,
        timeout: Duration,
    ) -> (Option<Instant>, usize, usize) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        let mut stray = 0;
        while !want.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((key, at))) => {
                    if want.remove(&key) {
                        last = Some(at);
                    } else {
                        stray += 1;
                    }
                }
                _ => break,
            }
        }
        (last, want.len(), stray)
    }
}

impl Drop for TemplateWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Latency percentiles of the single-update test, milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Latency {
    /// Updates sent.
    pub updates: usize,
    /// Updates whose workload did not roll within the timeout.
    pub missed: usize,
    /// Rolls of Deployments that should not have rolled.
    pub stray_rolls: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Requests the subject made in a window, per change.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ApiCost {
    /// Changes made in the window.
    pub changes: usize,
    /// Workloads that rolled in the window.
    pub rolled: usize,
    /// PATCH requests per rolled workload.
    pub patches_per_roll: f64,
    /// PATCH requests per change.
    pub patches_per_change: f64,
    /// LIST requests per change.
    pub lists_per_change: f64,
    /// GET requests per change.
    pub gets_per_change: f64,
    /// CREATE requests (Events) per change.
    pub creates_per_change: f64,
    /// The subject's requests by `verb resource`, the bench's own subtracted.
    pub log: BTreeMap<String, u64>,
    /// Real server only: requests in the window to resources the subjects never use (the
    /// controller-manager's, kwok's and the API server's own), left out of the figures above.
    pub other: BTreeMap<String, u64>,
}

/// What hashroll and the baseline read and write. On a real server, kube-apiserver's counters include
/// every client (controller-manager, scheduler, kwok, the API server itself); only these resources are
/// the subject's. (Controllers do touch some of them, but not with the verbs counted per change: the
/// deployment controller writes `deployments/status` with PUT, i.e. `update`.)
pub const SUBJECT_RESOURCES: [&str; 7] = [
    "secrets",
    "configmaps",
    "deployments",
    "statefulsets",
    "daemonsets",
    "cronjobs",
    "events",
];

impl ApiCost {
    /// From the request log, minus the bench's own `bench` requests; on a real server (`real`) only the
    /// [`SUBJECT_RESOURCES`].
    fn from_log(
        log: BTreeMap<(String, String), u64>,
        bench: &BTreeMap<(String, String), u64>,
        changes: usize,
        rolled: usize,
        real: bool,
    ) -> ApiCost {
        let mut mine = BTreeMap::new();
        let mut other = BTreeMap::new();
        for ((verb, res), n) in log {
            let base = res.split('/').next().unwrap_or_default();
            if real && !SUBJECT_RESOURCES.contains(&base) {
                other.insert(format!("{verb} {res}"), n);
                continue;
            }
            let n = n.saturating_sub(
                bench
                    .get(&(verb.clone(), res.clone()))
                    .copied()
                    .unwrap_or(0),
            );
            if n > 0 {
                mine.insert(format!("{verb} {res}"), n);
            }
        }
        let sum = |verb: &str| -> f64 {
            mine.iter()
                .filter(|(k, _)| k.split(' ').next() == Some(verb))
                .map(|(_, n)| *n as f64)
                // An empty f64 sum is -0.0; adding 0.0 keeps "0.00" from printing as "-0.00".
                .sum::<f64>()
                + 0.0
        };
        let per = |x: f64| x / changes.max(1) as f64;
        ApiCost {
            changes,
            rolled,
            patches_per_roll: sum("patch") / rolled.max(1) as f64,
            patches_per_change: per(sum("patch")),
            lists_per_change: per(sum("list")),
            gets_per_change: per(sum("get")),
            creates_per_change: per(sum("create")),
            log: mine,
            other,
        }
    }
}

/// Changes key `key-0` of Secret `ns/name`; returns once the server acknowledged it.
pub async fn touch_secret(
    client: &kube::Client,
    rng: &mut Rng,
    ns: &str,
    name: &str,
) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let body = serde_json::json!({ "data": { "key-0": ByteString(rng.bytes(1024)) } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|e| anyhow::anyhow!("updating Secret {ns}/{name}: {e}"))?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// One update at a time to Secrets each used by exactly one Deployment; from acknowledgement to the roll
/// seen on the watch. Also returns the API cost of the window.
pub async fn reaction(
    server: &Server,
    client: &kube::Client,
    watch: &mut TemplateWatch,
    targets: &[(String, String, String)],
    seed: u64,
) -> anyhow::Result<(Latency, ApiCost)> {
    let mut rng = Rng::new(seed ^ 0x5EED);
    watch.drain();
    server.reset_requests().await?;
    let mut samples = Vec::with_capacity(targets.len());
    let (mut missed, mut stray, mut missed_in_a_row) = (0, 0, 0);
    for (ns, secret, deployment) in targets {
        touch_secret(client, &mut rng, ns, secret).await?;
        let acked = Instant::now();
        let want = HashSet::from([format!("{ns}/{deployment}")]);
        let (at, missing, s) = watch.wait_for(want, Duration::from_secs(10)).await;
        stray += s;
        match at {
            Some(at) if missing == 0 => {
                missed_in_a_row = 0;
                samples.push(at.saturating_duration_since(acked).as_secs_f64() * 1000.0);
            }
            _ => {
                missed += 1;
                missed_in_a_row += 1;
                anyhow::ensure!(
                    missed_in_a_row < 3,
                    "three updates in a row rolled nothing within 10 s (last: Secret {ns}/{secret}, \
                     Deployment {deployment})"
                );
            }
        }
    }
    // Let Events and any late requests land before reading the log.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stray += watch.drain();
    let bench = BTreeMap::from([(("patch".into(), "secrets".into()), targets.len() as u64)]);
    let cost = ApiCost::from_log(
        server.requests().await?,
        &bench,
        targets.len(),
        samples.len(),
        server.is_real(),
    );
    samples.sort_by(f64::total_cmp);
    let latency = Latency {
        updates: targets.len(),
        missed,
        stray_rolls: stray,
        p50_ms: percentile(&samples, 50.0),
        p99_ms: percentile(&samples, 99.0),
        max_ms: samples.last().copied().unwrap_or(f64::NAN),
    };
    Ok((latency, cost))
}

/// Result of the fan-out test.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Fanout {
    /// Deployments using the Secret.
    pub workloads: usize,
    /// How many rolled within the timeout.
    pub rolled: usize,
    /// Seconds from acknowledgement to the last roll.
    pub secs: f64,
    /// The API cost of the change.
    pub api: ApiCost,
}

/// Updates the one Secret every fan-out Deployment uses and times until all have rolled.
pub async fn fanout(
    server: &Server,
    client: &kube::Client,
    watch: &mut TemplateWatch,
    workloads: usize,
    seed: u64,
) -> anyhow::Result<Fanout> {
    let mut rng = Rng::new(seed ^ 0xFA17);
    watch.drain();
    server.reset_requests().await?;
    let want: HashSet<String> = (0..workloads)
        .map(|i| format!("{}/fan-{i}", crate::cluster::FANOUT_NS))
        .collect();
    touch_secret(
        client,
        &mut rng,
        crate::cluster::FANOUT_NS,
        crate::cluster::FANOUT_SECRET,
    )
    .await?;
    let acked = Instant::now();
    let (at, missing, _) = watch.wait_for(want, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rolled = workloads - missing;
    let bench = BTreeMap::from([(("patch".into(), "secrets".into()), 1)]);
    Ok(Fanout {
        workloads,
        rolled,
        secs: at.map_or(f64::NAN, |t| {
            t.saturating_duration_since(acked).as_secs_f64()
        }),
        api: ApiCost::from_log(
            server.requests().await?,
            &bench,
            1,
            rolled,
            server.is_real(),
        ),
    })
}
