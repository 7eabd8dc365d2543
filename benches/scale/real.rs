//! `--server real`: a real control plane from `tests/cluster` (kube-apiserver v1.37.2, etcd,
//! controller-manager, scheduler, kwok), and the API server's own request counts from its `/metrics`.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

use crate::procs::Usage;

/// A cluster started with `tests/cluster/up DIR`; stopped with `tests/cluster/down DIR` by [`stop`]
/// (or on drop), and by a guard process if the bench is killed.
///
/// [`stop`]: RealCluster::stop
pub struct RealCluster {
    /// The directory `up` ran in.
    pub dir: PathBuf,
    guard: Option<Child>,
}

/// The repository root (`tests/cluster` lives there).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl RealCluster {
    /// Runs `tests/cluster/up dir` (building the binaries first if they are missing) and returns once the
    /// cluster is ready.
    pub fn start(dir: &Path) -> anyhow::Result<RealCluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // The guard reads its stdin until the bench ends, however it ends, then stops the cluster. Its
        // own process group: a Ctrl-C to the bench does not reach it.
        let guard = Command::new("sh")
            .args(["-c", r#"read -r _; exec "$0" "$1" >/dev/null 2>&1"#])
            .arg(repo_root().join("tests/cluster/down"))
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the cluster's guard process")?;
        let cluster = RealCluster {
            dir: dir.to_path_buf(),
            guard: Some(guard),
        };
        eprintln!(
            "bench: starting a real cluster: tests/cluster/up {}",
            dir.display()
        );
        let out = Command::new(repo_root().join("tests/cluster/up"))
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .context("running tests/cluster/up")?;
        anyhow::ensure!(
            out.status.success(),
            "tests/cluster/up {} failed ({}):\n{}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("bench: {}", String::from_utf8_lossy(&out.stdout));
        Ok(cluster)
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// `(name, pid)` of each process of the control plane, from `DIR/pids`.
    pub fn processes(&self) -> Vec<(String, u32)> {
        std::fs::read_to_string(self.dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (name, pid) = l.split_once(' ')?;
                Some((name.to_string(), pid.trim().parse().ok()?))
            })
            .collect()
    }

    /// Usage of each control-plane process still running.
    pub fn usage(&self) -> Vec<(String, Usage)> {
        self.processes()
            .into_iter()
            .filter_map(|(name, pid)| Some((name, crate::procs::usage(pid).ok()?)))
            .collect()
    }

    /// Stops the cluster and waits until it has stopped.
    pub fn stop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let status = Command::new(repo_root().join("tests/cluster/down"))
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "bench: tests/cluster/down {} failed: {status:?}",
                self.dir.display()
            );
        }
        let _ = guard.kill();
        let _ = guard.wait();
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `(verb, resource)` -> requests, from kube-apiserver's `apiserver_request_total` counter, named like
/// the test server's request log: verbs lower case with POST as `create`, PUT as `update` and APPLY
/// (server-side apply) as `patch`; subresources as `deployments/status`. Dry runs and non-resource
/// requests (`/metrics`, `/healthz`, discovery) are left out.
pub fn request_counts(metrics: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let labels = parse_labels(labels);
        let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
        let (verb, resource, sub) = (get("verb"), get("resource"), get("subresource"));
        if resource.is_empty() || !get("dry_run").is_empty() {
            continue;
        }
        let verb = match verb {
            "POST" => "create".to_string(),
            "PUT" => "update".to_string(),
            "APPLY" => "patch".to_string(),
            "WATCHLIST" => "watch".to_string(),
            v => v.to_ascii_lowercase(),
        };
        let resource = if sub.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{sub}")
        };
        let n: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry((verb, resource)).or_insert(0) += n as u64;
    }
    out
}

/// `a="x",b="y"` -> {a: x, b: y} (Prometheus text format label values, `\"` and `\\` unescaped).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(e) = chars.next() {
                        value.push(if e == 'n' { '\n' } else { e });
                    }
                }
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// Fetches `/metrics` through `client` (the admin kubeconfig may read it).
pub async fn metrics(client: &kube::Client) -> anyhow::Result<String> {
    let req = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .context("building the /metrics request")?;
    client
        .request_text(req)
        .await
        .context("reading kube-apiserver's /metrics")
}
