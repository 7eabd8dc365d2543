//! Test harness: the test API server in-process, the real `hashroll` binary as a child process (as a user
//! runs it), and helpers to create objects, wait, and count rolls from the server's rollout record.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube_testserver::{CustomResource, ServerOptions, TestServer};
use serde_json::{Value, json};

/// One cluster (test API server) plus a scratch directory for kubeconfig and logs.
pub struct Env {
    pub server: TestServer,
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
    barriers: AtomicU32,
}

impl Env {
    /// A server serving Argo Rollouts too, with the namespace `hashroll` for the controller.
    pub async fn start() -> Env {
        Self::start_with(ServerOptions {
            custom_resources: vec![CustomResource::argo_rollouts()],
            ..ServerOptions::default()
        })
        .await
    }

    pub async fn start_with(opts: ServerOptions) -> Env {
        let server = TestServer::start_with(opts)
            .await
            .expect("test API server starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        let env = Env {
            client: server.client(),
            server,
            kubeconfig,
            dir,
            barriers: AtomicU32::new(0),
        };
        env.namespace("hashroll").await;
        env
    }

    /// Starts hashroll with the test defaults (debounce 0, one patch at a time, its admin server on a free
    /// local port the harness chose) plus `extra` flags, which may replace a default (`--debounce=..`,
    /// `--log-level=..`, `--patch-concurrency=..`), and waits until `/readyz` answers 200 `ready`.
    pub async fn hashroll(&self, extra: &[&str]) -> Hashroll {
        self.hashroll_with_kubeconfig(&self.kubeconfig, extra).await
    }

    pub async fn hashroll_with_kubeconfig(
        &self,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> Hashroll {
        self.hashroll_until(kubeconfig, extra, Until::Ready).await
    }

    /// Starts hashroll like [`Env::hashroll`] but waits for `until` instead of readiness (e.g. a standby).
    pub async fn hashroll_until(
        &self,
        kubeconfig: &std::path::Path,
        extra: &[&str],
        until: Until,
    ) -> Hashroll {
        assert!(
            !extra.iter().any(|a| a.starts_with("--admin-addr")),
            "the harness chooses the admin address"
        );
        // The port is free when chosen, but another process may take it before hashroll binds it (rare):
        // then start again on another port.
        for _ in 0..5 {
            if let Some(h) = self.spawn_hashroll(kubeconfig, extra).await {
                h.wait_until(until).await;
                return h;
            }
        }
        panic!("hashroll never got an admin port of its own");
    }

    /// Spawns hashroll with its admin server on a port chosen here; returns it once that port is its own
    /// listening socket, or None (the process killed) if the port turned out to be taken.
    async fn spawn_hashroll(
        &self,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> Option<Hashroll> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free local port")
            .port();
        let admin = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let n = self.barriers.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.path().join(format!("hashroll-{n}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut args: Vec<String> = vec![
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--controller-namespace".into(),
            "hashroll".into(),
            "--log-format".into(),
            "json".into(),
            format!("--admin-addr={admin}"),
        ];
        if !extra.iter().any(|a| a.starts_with("--log-level")) {
            args.push("--log-level=debug,kube=info,hyper=info,tower=info,rustls=info".into());
        }
        if !extra.iter().any(|a| a.starts_with("--debounce")) {
            args.push("--debounce=0".into());
        }
        // One patch at a time, in the order decided: what makes `barrier` exact.
        if !extra.iter().any(|a| a.starts_with("--patch-concurrency")) {
            args.push("--patch-concurrency=1".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hashroll"))
            .args(&args)
            .env_remove("POD_NAMESPACE")
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("hashroll starts");
        let mut h = Hashroll { child, log, admin };
        let pid = h.child.id().expect("running");
        // hashroll binds its admin port before anything else.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = h.child.try_wait() {
                panic!("hashroll exited at start ({status}); log:\n{}", h.logs());
            }
            match listener_owner(port) {
                Some(inode) if owns_socket(pid, &inode) => return Some(h),
                Some(_) => break,
                None if Instant::now() > deadline => break,
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        h.child.kill().await.expect("SIGKILL hashroll");
        None
    }

    pub async fn namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create namespace {name}: {e}"),
        }
    }

    /// Creates or replaces (by server-side apply) a Secret with string data.
    pub async fn secret(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        self.secret_with(ns, name, data, &[]).await
    }

    pub async fn secret_with(
        &self,
        ns: &str,
        name: &str,
        data: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) {
        self.secret_full(ns, name, data, annotations, &[]).await
    }

    /// Creates or replaces (by server-side apply) a Secret with string data, annotations and labels.
    pub async fn secret_full(
        &self,
        ns: &str,
        name: &str,
        data: &[(&str, &str)],
        annotations: &[(&str, &str)],
        labels: &[(&str, &str)],
    ) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let body = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": apply_metadata(ns, name, annotations, labels),
            "stringData": map(data),
        });
        api.patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap_or_else(|e| panic!("apply secret {ns}/{name}: {e}"));
    }

    pub async fn delete_secret(&self, ns: &str, name: &str) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        api.delete(name, &Default::default())
            .await
            .expect("delete secret");
    }

    pub async fn configmap(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        self.configmap_with(ns, name, data, &[]).await
    }

    pub async fn configmap_with(
        &self,
        ns: &str,
        name: &str,
        data: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) {
        self.configmap_full(ns, name, data, annotations, &[]).await
    }

    /// Creates or replaces (by server-side apply) a ConfigMap with data, annotations and labels.
    pub async fn configmap_full(
        &self,
        ns: &str,
        name: &str,
        data: &[(&str, &str)],
        annotations: &[(&str, &str)],
        labels: &[(&str, &str)],
    ) {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let body = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": apply_metadata(ns, name, annotations, labels),
            "data": map(data),
        });
        api.patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap_or_else(|e| panic!("apply configmap {ns}/{name}: {e}"));
    }

    /// Creates a workload of `kind` ("deployments", "statefulsets", "daemonsets", "cronjobs", "rollouts")
    /// whose pod spec is `pod_spec` and whose metadata carries `annotations`.
    pub async fn workload(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        annotations: &[(&str, &str)],
        pod_spec: Value,
    ) {
        let template = json!({"metadata": {"labels": {"app": name}}, "spec": pod_spec});
        let (api_version, kind_name, spec) = match kind {
            "deployments" => (
                "apps/v1",
                "Deployment",
                json!({"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template}),
            ),
            "statefulsets" => (
                "apps/v1",
                "StatefulSet",
                json!({"replicas": 1, "serviceName": name, "selector": {"matchLabels": {"app": name}}, "template": template}),
            ),
            "daemonsets" => (
                "apps/v1",
                "DaemonSet",
                json!({"selector": {"matchLabels": {"app": name}}, "template": template}),
            ),
            "cronjobs" => (
                "batch/v1",
                "CronJob",
                json!({"schedule": "*/5 * * * *", "suspend": true, "jobTemplate": {"spec": {"template": template}}}),
            ),
            "rollouts" => (
                "argoproj.io/v1alpha1",
                "Rollout",
                json!({"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template, "strategy": {"canary": {}}}),
            ),
            other => panic!("unknown workload kind {other}"),
        };
        let obj = json!({
            "apiVersion": api_version, "kind": kind_name,
            "metadata": {"name": name, "namespace": ns, "annotations": map(annotations)},
            "spec": spec,
        });
        let api = self.dynamic(kind, ns);
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {kind} {ns}/{name}: {e}"));
    }

    /// A Deployment opted in with `hashroll.dev/reload: "true"`.
    pub async fn deployment(&self, ns: &str, name: &str, pod_spec: Value) {
        self.workload(
            "deployments",
            ns,
            name,
            &[("hashroll.dev/reload", "true")],
            pod_spec,
        )
        .await
    }

    pub fn dynamic(&self, kind: &str, ns: &str) -> Api<DynamicObject> {
        let (group, version, k) = match kind {
            "deployments" => ("apps", "v1", "Deployment"),
            "statefulsets" => ("apps", "v1", "StatefulSet"),
            "daemonsets" => ("apps", "v1", "DaemonSet"),
            "cronjobs" => ("batch", "v1", "CronJob"),
            "rollouts" => ("argoproj.io", "v1alpha1", "Rollout"),
            other => panic!("unknown workload kind {other}"),
        };
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: k.into(),
            plural: kind.into(),
        };
        Api::namespaced_with(self.client.clone(), ns, &ar)
    }

    pub async fn get(&self, kind: &str, ns: &str, name: &str) -> DynamicObject {
        self.dynamic(kind, ns)
            .get(name)
            .await
            .expect("get workload")
    }

    /// How many times the workload rolled: distinct pod templates stored, minus the one it was created with.
    pub fn rolls(&self, kind: &str, ns: &str, name: &str) -> usize {
        self.server
            .control()
            .rollouts(kind, ns, name)
            .len()
            .saturating_sub(1)
    }

    /// Waits until the workload has rolled `n` times (fails after 15 s).
    pub async fn wait_rolls(&self, kind: &str, ns: &str, name: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.rolls(kind, ns, name);
            if got == n {
                return;
            }
            assert!(
                got < n,
                "{kind} {ns}/{name} rolled {got} times, expected {n}"
            );
            assert!(
                Instant::now() < deadline,
                "{kind} {ns}/{name} rolled {got} times, expected {n} (timed out)"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until hashroll has recorded a baseline on the workload's metadata.
    pub async fn wait_recorded(&self, kind: &str, ns: &str, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let o = self.get(kind, ns, name).await;
            if o.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("hashroll.dev/hash"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} {ns}/{name} never recorded a baseline"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Proves hashroll has processed everything sent before in `ns` (and in every namespace its
    /// cluster-wide watches cover): changes a sentinel Secret, then a sentinel ConfigMap, both used by a
    /// sentinel Deployment, and waits for each roll. Each source kind has its own watch stream, and each
    /// stream delivers in order, so both steps are needed. The sentinels carry the label `tracked=yes`
    /// so a `--resource-label-selector=tracked=yes` run still sees them.
    ///
    /// No grace period: with the harness's default `--patch-concurrency=1` hashroll sends one patch at a
    /// time, in the order it decided them, and publishes a roll's Event before it sends the next patch.
    /// So once the second sentinel roll is stored, every patch and Event decided before the second step
    /// began is stored too: every decision caused by a source change made before the barrier, and every
    /// decision caused by the response to a patch that landed before the first sentinel roll. (Not the
    /// Events hashroll publishes without a patch: `InvalidAnnotation`, and `WouldReload` in a dry run; wait
    /// for those.) A test that lets several patches run at once must allow for one decided earlier
    /// landing after the sentinel's.
    pub async fn barrier(&self, ns: &str) {
        self.barrier_through(ns, true).await
    }

    /// [`Env::barrier`] for a hashroll that does not watch Secrets (`--watch configmaps`): the sentinel
    /// ConfigMap changes twice instead.
    pub async fn barrier_configmaps(&self, ns: &str) {
        self.barrier_through(ns, false).await
    }

    async fn barrier_through(&self, ns: &str, secrets: bool) {
        let name = "zz-barrier";
        let labels = [("tracked", "yes")];
        let n = self.barriers.fetch_add(1, Ordering::Relaxed).to_string();
        if self
            .dynamic("deployments", ns)
            .get_opt(name)
            .await
            .unwrap()
            .is_none()
        {
            let spec = if secrets {
                self.secret_full(ns, name, &[("n", &n)], &[], &labels).await;
                pod(json!({"envFrom": [
                    {"secretRef": {"name": name}}, {"configMapRef": {"name": name}}]}))
            } else {
                pod(json!({"envFrom": [{"configMapRef": {"name": name}}]}))
            };
            self.configmap_full(ns, name, &[("n", &n)], &[], &labels)
                .await;
            self.deployment(ns, name, spec).await;
            self.wait_recorded("deployments", ns, name).await;
        }
        let before = self.rolls("deployments", ns, name);
        if secrets {
            self.secret_full(ns, name, &[("n", &format!("{n}-s"))], &[], &labels)
                .await;
        } else {
            self.configmap_full(ns, name, &[("n", &format!("{n}-c0"))], &[], &labels)
                .await;
        }
        self.wait_rolls("deployments", ns, name, before + 1).await;
        self.configmap_full(ns, name, &[("n", &format!("{n}-c"))], &[], &labels)
            .await;
        self.wait_rolls("deployments", ns, name, before + 2).await;
    }

    /// Asserts the workload has rolled exactly `n` times now (use after [`Env::barrier`]).
    pub fn assert_rolls(&self, kind: &str, ns: &str, name: &str, n: usize) {
        assert_eq!(
            self.rolls(kind, ns, name),
            n,
            "{kind} {ns}/{name}: number of rolls"
        );
    }

    /// The workload's metadata annotations as stored now.
    pub async fn annotations(&self, kind: &str, ns: &str, name: &str) -> BTreeMap<String, String> {
        self.get(kind, ns, name)
            .await
            .metadata
            .annotations
            .unwrap_or_default()
    }

    /// Asserts hashroll has written nothing on the workload: no record on its metadata, no roll.
    pub async fn assert_untouched(&self, kind: &str, ns: &str, name: &str) {
        let a = self.annotations(kind, ns, name).await;
        assert!(
            !a.contains_key("hashroll.dev/hash") && !a.contains_key("hashroll.dev/sources"),
            "{kind} {ns}/{name} should carry no hashroll record, has {a:?}"
        );
        self.assert_rolls(kind, ns, name, 0);
    }

    /// Asserts the latest roll wrote the template annotation equal to the stamp recorded on the metadata.
    pub async fn assert_rolled_annotations(&self, kind: &str, ns: &str, name: &str) {
        let meta = self.annotations(kind, ns, name).await;
        let stamp = meta
            .get("hashroll.dev/hash")
            .unwrap_or_else(|| panic!("{kind} {ns}/{name}: no hashroll.dev/hash on metadata"));
        assert!(stamp.starts_with("v1."), "stamp {stamp:?} is versioned");
        assert!(
            meta.contains_key("hashroll.dev/sources"),
            "{kind} {ns}/{name}: no hashroll.dev/sources on metadata"
        );
        let template = self.template_annotations(kind, ns, name);
        assert_eq!(
            template.get("hashroll.dev/hash"),
            Some(stamp),
            "{kind} {ns}/{name}: the template annotation carries the recorded stamp"
        );
    }

    /// Waits until an Event with `reason` exists about `name` in `ns`, and returns every such Event.
    pub async fn wait_event(
        &self,
        ns: &str,
        name: &str,
        reason: &str,
    ) -> Vec<(String, String, String)> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found: Vec<_> = self
                .events_for(ns, name)
                .await
                .into_iter()
                .filter(|(_, r, _)| r == reason)
                .collect();
            if !found.is_empty() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {reason} Event about {ns}/{name}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Template annotations of the workload's latest stored pod template.
    pub fn template_annotations(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> BTreeMap<String, String> {
        self.server
            .control()
            .rollouts(kind, ns, name)
            .last()
            .map(|r| r.annotations.clone())
            .unwrap_or_default()
    }

    /// Events (events.k8s.io/v1) about one object, as (type, reason, note).
    pub async fn events_for(&self, ns: &str, name: &str) -> Vec<(String, String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), ns);
        api.list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// What [`Env::hashroll_until`] waits for once hashroll's admin server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// `/readyz` answers 200 `ready`: every watch has listed (and, with `--leader-elect`, it leads).
    Ready,
    /// `/readyz` answers 200 `standby`: waiting for the Lease.
    Standby,
    /// Nothing more: the admin server listens.
    Listening,
}

/// A running hashroll process; SIGKILLed on drop.
pub struct Hashroll {
    child: tokio::process::Child,
    pub log: PathBuf,
    /// Its admin server (`/metrics`, `/healthz`, `/readyz`), on the port the harness chose.
    pub admin: std::net::SocketAddr,
}

impl Hashroll {
    /// GET `path` from the admin server: (status, body); None if it does not answer.
    pub async fn try_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.admin, path).await
    }

    /// GET `path` from the admin server: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .await
            .unwrap_or_else(|| panic!("no answer from the admin server on {}", self.admin))
    }

    /// `/readyz`: (status, body).
    pub async fn readyz(&self) -> (u16, String) {
        self.get("/readyz").await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// The value of metric `name` in `/metrics`: the sum of its samples whose labels include every one
    /// of `labels` (all its samples when `labels` is empty); None when no sample matches.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Waits until [`Hashroll::metric`] is `want` (fails after 15 s).
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.metric(name, labels).await;
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} is {got:?}, expected {want} (timed out)"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the admin server says `until` (fails after 20 s).
    pub async fn wait_until(&self, until: Until) {
        let want = match until {
            Until::Ready => "ready",
            Until::Standby => "standby",
            Until::Listening => return,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.try_get("/readyz").await;
            if got.as_ref().is_some_and(|(s, b)| *s == 200 && b == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never answered 200 {want:?} (last: {got:?})"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything hashroll has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines (JSON) containing every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }

    /// Waits until the log contains `needle` (fails after `timeout`).
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "hashroll never logged {needle:?}; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM, then wait; returns the exit status and how long the exit took.
    pub async fn stop(mut self) -> (std::process::ExitStatus, Duration) {
        let pid = self.child.id().expect("running");
        let started = Instant::now();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("hashroll exits after SIGTERM")
            .expect("wait");
        (status, started.elapsed())
    }
}

impl Hashroll {
    /// SIGKILL, as when a node dies: no clean-up at all.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL hashroll");
    }

    /// Waits for hashroll to exit by itself (fails after `timeout`).
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("hashroll did not exit; log:\n{}", self.logs()))
            .expect("wait")
    }
}

impl Drop for Hashroll {
    /// A failing test shows the end of hashroll's log: the only record of what the controller saw.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "---- hashroll log ({}), last {} lines ----\n{}",
                self.log.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// Object metadata for a server-side apply. Empty maps are left out rather than sent as `{}`: on a real
/// API server both release the fields this manager owned, but the test API server drops every later
/// annotation or label a manager applies once it has applied an empty map (a test-server bug).
fn apply_metadata(
    ns: &str,
    name: &str,
    annotations: &[(&str, &str)],
    labels: &[(&str, &str)],
) -> Value {
    let mut meta = json!({"name": name, "namespace": ns});
    if !annotations.is_empty() {
        meta["annotations"] = map(annotations);
    }
    if !labels.is_empty() {
        meta["labels"] = map(labels);
    }
    meta
}

/// A map of string pairs as a JSON object.
pub fn map(kv: &[(&str, &str)]) -> Value {
    Value::Object(kv.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
}

/// A pod spec with one container.
pub fn pod(container: Value) -> Value {
    let mut c = container;
    c["name"] = json!("app");
    c["image"] = json!("registry.example/app:1");
    json!({"containers": [c]})
}

pub fn env_from_secret(name: &str) -> Value {
    pod(json!({"envFrom": [{"secretRef": {"name": name}}]}))
}

pub fn env_from_configmap(name: &str) -> Value {
    pod(json!({"envFrom": [{"configMapRef": {"name": name}}]}))
}

pub fn secret_key_ref(name: &str, key: &str) -> Value {
    pod(json!({"env": [{"name": "V", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}]}))
}

/// A pod spec using the Secret through `envFrom` with `optional: true`.
pub fn optional_env_from_secret(name: &str) -> Value {
    pod(json!({"envFrom": [{"secretRef": {"name": name, "optional": true}}]}))
}

/// GET `path` from `addr` over HTTP/1.1: (status, body); None if nothing answers.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The sum of the samples of `name` in a Prometheus text exposition whose labels include every one of
/// `labels`; None when no sample matches.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, sample_labels) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let sample: Vec<(&str, &str)> = sample_labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|l| sample.contains(l)) {
            let v: f64 = value.parse().expect("a sample value");
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The inode of the socket listening on 127.0.0.1:`port` (or on every address), if any.
fn listener_owner(port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (addr, p) = f.get(1)?.split_once(':')?;
        let listening = f.get(3) == Some(&"0A");
        let local = addr == "0100007F" || addr == "00000000";
        (listening && local && u16::from_str_radix(p, 16).ok() == Some(port))
            .then(|| f.get(9).map(|s| s.to_string()))
            .flatten()
    })
}

/// Whether process `pid` holds the socket `inode`.
fn owns_socket(pid: u32, inode: &str) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want))
}

impl Env {
    /// Creates a Deployment like [`Env::workload`], with `template_annotations` on its pod template's
    /// metadata as well (created so, not patched: the pod template it starts with is its first).
    pub async fn deployment_with_template_annotations(
        &self,
        ns: &str,
        name: &str,
        annotations: &[(&str, &str)],
        template_annotations: &[(&str, &str)],
        pod_spec: Value,
    ) {
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "annotations": map(annotations)},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": map(template_annotations)},
                    "spec": pod_spec,
                },
            },
        });
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        self.dynamic("deployments", ns)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create deployment {ns}/{name}: {e}"));
    }

    /// Asserts the Argo Rollout was rolled by `spec.restartAt` (a timestamp) and its template left alone;
    /// returns the Rollout as stored.
    pub async fn assert_restarted_at(&self, ns: &str, name: &str) -> DynamicObject {
        let restarted = self.get("rollouts", ns, name).await;
        let restart_at = restarted.data["spec"]["restartAt"]
            .as_str()
            .unwrap_or_else(|| panic!("spec.restartAt set: {}", restarted.data["spec"]));
        assert!(
            restart_at.parse::<jiff::Timestamp>().is_ok(),
            "restartAt is a timestamp: {restart_at:?}"
        );
        self.assert_rolls("rollouts", ns, name, 0);
        assert!(
            !self
                .template_annotations("rollouts", ns, name)
                .contains_key("hashroll.dev/hash"),
            "the template is left alone"
        );
        restarted
    }

    /// When hashroll last rolled the workload, from its `hashroll.dev/rolled-at` annotation.
    pub async fn rolled_at(&self, kind: &str, ns: &str, name: &str) -> jiff::Timestamp {
        let a = self.annotations(kind, ns, name).await;
        let at = a
            .get("hashroll.dev/rolled-at")
            .unwrap_or_else(|| panic!("{kind} {ns}/{name}: no hashroll.dev/rolled-at in {a:?}"));
        at.parse()
            .unwrap_or_else(|e| panic!("{kind} {ns}/{name}: rolled-at {at:?}: {e}"))
    }
}

impl Env {
    /// Runs `hashroll explain` with `args` against this server, as a user would (the controller namespace
    /// `hashroll`, the harness's debounce of 0 and the admin kubeconfig unless `args` sets them): (exit
    /// code, stdout, stderr).
    pub async fn explain(&self, args: &[&str]) -> (i32, String, String) {
        let mut all: Vec<String> = vec![
            "explain".into(),
            "--controller-namespace".into(),
            "hashroll".into(),
        ];
        if !args.contains(&"--kubeconfig") {
            all.extend(["--kubeconfig".into(), self.kubeconfig.display().to_string()]);
        }
        if !args.iter().any(|a| a.starts_with("--debounce")) {
            all.push("--debounce=0".into());
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hashroll"))
            .args(&all)
            .env_remove("POD_NAMESPACE")
            .output()
            .await
            .expect("hashroll explain runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`Env::explain`] with `-o json`, parsed; fails unless it exits 0.
    pub async fn explain_json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let (code, out, err) = self.explain(&args).await;
        assert_eq!(code, 0, "hashroll explain {args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("explain -o json: {e}:\n{out}"))
    }
}
