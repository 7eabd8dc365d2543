//! Test harness: the real `hashroll` binary as a child process (as a user runs it) against either the test
//! API server (in-process) or a real control plane (`tests/cluster`, shared by the tests of one binary),
//! and helpers to create objects, wait, and count rolls.
//!
//! Each end-to-end test is an `async fn name(on: Server)` plus `e2e!(name)`, which makes it two tests,
//! `name::test_server` and `name::real_cluster`; `HASHROLL_E2E_SERVERS` (`test`, `real`, `both`: the
//! default) picks which run. `e2e!(name, test_server_only = "why")` is for a test that needs what only the
//! test server has (fault injection, its request log).
//!
//! The real cluster is started by the first real-cluster test of a binary and stopped when the binary
//! exits (`tests/cluster/down`, run by a watchdog that waits for the end of the test process); its tests
//! take turns, each on a cluster emptied of what the previous one made.
#![allow(dead_code)]

pub mod readme;
mod real;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube_testserver::{Control, CustomResource, ServerOptions, TestServer};
use serde_json::{Value, json};

/// Makes `async fn $name(on: Server)` two tests, `$name::test_server` and `$name::real_cluster`; only the
/// first with `test_server_only = "the reason"`; with `real_server_bug = "real-server bug: what"` the
/// second is `#[ignore]`d, for hashroll's own bug that the real server shows (never the harness's).
macro_rules! e2e {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn test_server() {
                crate::common::Server::Test.run(super::$name).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real_cluster() {
                crate::common::Server::Real.run(super::$name).await
            }
        }
    };
    ($name:ident, real_server_bug = $why:literal) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn test_server() {
                crate::common::Server::Test.run(super::$name).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $why]
            async fn real_cluster() {
                crate::common::Server::Real.run(super::$name).await
            }
        }
    };
    ($name:ident, test_server_only = $why:literal) => {
        #[doc = concat!("Test-server only: ", $why)]
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn test_server() {
                crate::common::Server::Test.run(super::$name).await
            }
        }
    };
}
pub(crate) use e2e;

/// Which API server an end-to-end test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The project's test API server, in-process, one per test.
    Test,
    /// The real control plane of `tests/cluster`, one per test binary, one test at a time.
    Real,
}

impl Server {
    /// Runs `test` on this server, unless `HASHROLL_E2E_SERVERS` leaves this server out (it says so).
    pub async fn run<F: Future<Output = ()>>(self, test: impl FnOnce(Server) -> F) {
        let chosen = std::env::var("HASHROLL_E2E_SERVERS").unwrap_or_default();
        let run = match chosen.as_str() {
            "" | "both" => true,
            "test" => self == Server::Test,
            "real" => self == Server::Real,
            other => panic!("HASHROLL_E2E_SERVERS={other:?}: expected test, real or both"),
        };
        if run {
            test(self).await
        } else {
            eprintln!("not run: HASHROLL_E2E_SERVERS={chosen}");
        }
    }
}

/// The Secrets Store CSI driver's two resources, for the test server.
fn csi_resources() -> Vec<CustomResource> {
    let resource = |kind: &str, plural: &str| CustomResource {
        group: "secrets-store.csi.x-k8s.io".into(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        short_names: Vec::new(),
        namespaced: true,
    };
    vec![
        resource("SecretProviderClass", "secretproviderclasses"),
        resource(
            "SecretProviderClassPodStatus",
            "secretproviderclasspodstatuses",
        ),
    ]
}

/// What an [`Env`] starts with.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// The API server serves Argo Rollouts (`argoproj.io/v1alpha1`).
    pub rollouts: bool,
    /// The test server enforces RBAC from the start (the real one always does; the admin credentials
    /// the harness uses are allowed everything on both).
    pub rbac: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            rollouts: true,
            rbac: false,
        }
    }
}

/// One cluster (a test API server of its own, or the shared real control plane, emptied for this test)
/// plus a scratch directory for kubeconfigs and logs.
pub struct Env {
    pub on: Server,
    test_server: Option<TestServer>,
    pub client: kube::Client,
    /// Admin credentials.
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
    barriers: AtomicU32,
    /// On the real cluster: this Env's turn (one at a time); released when the Env is dropped.
    _turn: Option<real::Turn>,
    cluster: Option<&'static real::Cluster>,
}

impl Env {
    /// A server serving Argo Rollouts too, with the namespace `hashroll` for the controller.
    pub async fn start(on: Server) -> Env {
        Self::start_with(on, Setup::default()).await
    }

    pub async fn start_with(on: Server, setup: Setup) -> Env {
        Self::start_full(on, setup, false).await
    }

    /// A server that also serves the Secrets Store CSI driver's SecretProviderClasses and
    /// SecretProviderClassPodStatuses (`secrets-store.csi.x-k8s.io/v1`, both with a status subresource).
    pub async fn start_csi(on: Server) -> Env {
        Self::start_full(on, Setup::default(), true).await
    }

    async fn start_full(on: Server, setup: Setup, csi: bool) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = match on {
            Server::Test => {
                let mut custom = Vec::new();
                if setup.rollouts {
                    custom.push(CustomResource::argo_rollouts());
                }
                if csi {
                    custom.extend(csi_resources());
                }
                let server = TestServer::start_with(ServerOptions {
                    custom_resources: custom,
                    rbac: setup.rbac,
                    ..ServerOptions::default()
                })
                .await
                .expect("test API server starts");
                let kubeconfig = dir.path().join("kubeconfig");
                server
                    .write_kubeconfig(&kubeconfig)
                    .expect("kubeconfig written");
                Env {
                    on,
                    client: server.client(),
                    test_server: Some(server),
                    kubeconfig,
                    dir,
                    barriers: AtomicU32::new(0),
                    _turn: None,
                    cluster: None,
                }
            }
            Server::Real => {
                let (turn, cluster, client) = real::acquire(setup.rollouts).await;
                if csi {
                    real::csi_crds(&client).await;
                }
                Env {
                    on,
                    client,
                    test_server: None,
                    kubeconfig: cluster.kubeconfig.clone(),
                    dir,
                    barriers: AtomicU32::new(0),
                    _turn: Some(turn),
                    cluster: Some(cluster),
                }
            }
        };
        env.namespace("hashroll").await;
        env
    }

    /// The test API server, when this Env runs on it.
    pub fn test_server(&self) -> Option<&TestServer> {
        self.test_server.as_ref()
    }

    /// The test server's control handle (faults, request log, rollout record): test-server only.
    pub fn control(&self) -> Control {
        self.test_server
            .as_ref()
            .expect("the test server's controls (faults, request log): a test-server-only test")
            .control()
    }

    /// From now on, requests are authorized by RBAC (the real server always does this).
    pub fn enforce_rbac(&self) {
        if let Some(s) = &self.test_server {
            s.control().set_rbac(true);
        }
    }

    /// A kubeconfig for ServiceAccount `ns`/`name` (authorized by the Roles bound to it once RBAC is
    /// enforced): the test server's token for that identity, or a real token from the TokenRequest API
    /// (the ServiceAccount is created when missing).
    pub async fn kubeconfig_for_service_account(&self, ns: &str, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{ns}-{name}.kubeconfig"));
        match &self.test_server {
            Some(s) => s
                .write_kubeconfig_for_token(&path, &format!("system:serviceaccount:{ns}:{name}"))
                .expect("kubeconfig written"),
            None => {
                real::kubeconfig_for_service_account(
                    &self.client,
                    &self.kubeconfig,
                    ns,
                    name,
                    &path,
                )
                .await
            }
        }
        path
    }

    /// Waits until the credentials of `kubeconfig` may `verb` `resource` (of API group `group`) in `ns`
    /// (cluster-wide: None), as the API server's authorizer answers a SelfSubjectAccessReview: a real
    /// server's RBAC authorizer learns new Roles and bindings from a watch, a moment after they are
    /// stored. The test server applies them at once: nothing to wait for.
    pub async fn wait_allowed(
        &self,
        kubeconfig: &std::path::Path,
        verb: &str,
        group: &str,
        resource: &str,
        ns: Option<&str>,
    ) {
        if self.test_server.is_some() {
            return;
        }
        let client = real::client(kubeconfig).await;
        let api: Api<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview> =
            Api::all(client);
        let review: k8s_openapi::api::authorization::v1::SelfSubjectAccessReview =
            serde_json::from_value(json!({"spec": {"resourceAttributes": {
                "verb": verb, "group": group, "resource": resource, "namespace": ns}}}))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .expect("SelfSubjectAccessReview");
            if answer.status.is_some_and(|s| s.allowed) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never allowed to {verb} {resource} in {ns:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
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

    /// Starts hashroll like [`Env::hashroll`], with these environment variables set as well.
    pub async fn hashroll_with_vars(&self, extra: &[&str], vars: &[(&str, &str)]) -> Hashroll {
        self.hashroll_full(&self.kubeconfig, extra, vars, Until::Ready)
            .await
    }

    /// Starts hashroll like [`Env::hashroll`] but waits for `until` instead of readiness (e.g. a standby).
    pub async fn hashroll_until(
        &self,
        kubeconfig: &std::path::Path,
        extra: &[&str],
        until: Until,
    ) -> Hashroll {
        self.hashroll_full(kubeconfig, extra, &[], until).await
    }

    async fn hashroll_full(
        &self,
        kubeconfig: &std::path::Path,
        extra: &[&str],
        vars: &[(&str, &str)],
        until: Until,
    ) -> Hashroll {
        assert!(
            !extra.iter().any(|a| a.starts_with("--admin-addr")),
            "the harness chooses the admin address"
        );
        // The port is free when chosen, but another process may take it before hashroll binds it (rare):
        // then start again on another port.
        for _ in 0..5 {
            if let Some(h) = self.spawn_hashroll(kubeconfig, extra, vars).await {
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
        vars: &[(&str, &str)],
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
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("hashroll starts");
        let mut h = Hashroll { child, log, admin };
        let pid = h.child.id().expect("running");
        if let Some(cluster) = self.cluster {
            cluster.adopt(pid);
        }
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
        let mut pod_spec = pod_spec;
        if kind == "cronjobs" && pod_spec.get("restartPolicy").is_none() {
            // A Job's pods may not restart `Always` (the default): the real API server refuses it.
            pod_spec["restartPolicy"] = json!("OnFailure");
        }
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
        self.wait_controller_saw(kind, ns, name).await;
    }

    /// On the real server: waits until the workload's own controller has seen its current spec (its
    /// `status.observedGeneration`), so that a Deployment has the ReplicaSet of the template it was
    /// created with, and a StatefulSet or DaemonSet its ControllerRevision, as a user's running workload
    /// has, before hashroll changes anything. Otherwise a busy controller-manager may first see the
    /// template hashroll rolled to, and show no roll at all. Nothing to wait for on the test server, for
    /// CronJobs and Rollouts.
    pub async fn wait_controller_saw(&self, kind: &str, ns: &str, name: &str) {
        if self.test_server.is_some()
            || !["deployments", "statefulsets", "daemonsets"].contains(&kind)
        {
            return;
        }
        let deadline = Instant::now() + real::CONTROLLERS;
        loop {
            let obj = self.get(kind, ns, name).await;
            let generation = obj.metadata.generation.expect("metadata.generation");
            let observed = obj.data["status"]["observedGeneration"].as_i64();
            if observed >= Some(generation) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} {ns}/{name}: its controller never saw generation {generation} ({observed:?})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

    /// How many objects of `resource` (a workload kind, `secrets` or `configmaps`) are in `ns` now.
    pub async fn count(&self, resource: &str, ns: &str) -> usize {
        let list = match resource {
            "secrets" => Api::<Secret>::namespaced(self.client.clone(), ns)
                .list_metadata(&Default::default())
                .await
                .map(|l| l.items.len()),
            "configmaps" => Api::<ConfigMap>::namespaced(self.client.clone(), ns)
                .list_metadata(&Default::default())
                .await
                .map(|l| l.items.len()),
            workload => self
                .dynamic(workload, ns)
                .list_metadata(&Default::default())
                .await
                .map(|l| l.items.len()),
        };
        list.unwrap_or_else(|e| panic!("list {resource} in {ns}: {e}"))
    }

    pub async fn get(&self, kind: &str, ns: &str, name: &str) -> DynamicObject {
        self.dynamic(kind, ns)
            .get(name)
            .await
            .expect("get workload")
    }

    /// How many times the workload rolled: how many times its pod template changed since it was created
    /// (for an Argo Rollout: its template or `spec.restartAt`, either of which rolls the pods). On the
    /// test server from its rollout record (distinct templates stored); on the real server as a user sees
    /// it (see `real::rolls`): a Deployment's ReplicaSets, once its controller has seen its latest
    /// generation; the `metadata.generation` of the other kinds. A Rollout is counted by its generation on
    /// both servers (no Argo controller, and the record has only templates).
    pub async fn rolls(&self, kind: &str, ns: &str, name: &str) -> usize {
        let deadline = Instant::now() + real::CONTROLLERS;
        loop {
            match self.try_rolls(kind, ns, name).await {
                Ok(n) => return n,
                Err(why) => assert!(
                    Instant::now() < deadline,
                    "{kind} {ns}/{name}: {why} (timed out)"
                ),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// [`Env::rolls`], or why it cannot be told yet (a Deployment whose controller has not seen its
    /// latest generation).
    async fn try_rolls(&self, kind: &str, ns: &str, name: &str) -> Result<usize, String> {
        match &self.test_server {
            Some(s) if kind != "rollouts" => {
                Ok(s.control().rollouts(kind, ns, name).len().saturating_sub(1))
            }
            _ => real::rolls(&self.client, &self.dynamic(kind, ns), kind, name).await,
        }
    }

    /// Waits until the workload has rolled `n` times (fails after 15 s), and on the real server until its
    /// own controller shows those `n` rolls too (see [`Env::assert_controller_rolls`]).
    pub async fn wait_rolls(&self, kind: &str, ns: &str, name: &str, n: usize) {
        self.wait_stored_rolls(kind, ns, name, n).await;
        self.assert_controller_rolls(kind, ns, name, n).await;
    }

    /// Waits until [`Env::rolls`] is `n` (fails after 15 s, or at once if it is more).
    async fn wait_stored_rolls(&self, kind: &str, ns: &str, name: &str, n: usize) {
        // hashroll's patch within 15 s; on the real server its controller may take longer to show it.
        let patched = Instant::now() + Duration::from_secs(15);
        let shown = Instant::now() + real::CONTROLLERS;
        loop {
            let got = self.try_rolls(kind, ns, name).await;
            match got {
                Ok(got) if got == n => return,
                Ok(got) => {
                    assert!(
                        got < n,
                        "{kind} {ns}/{name} rolled {got} times, expected {n}"
                    );
                    if Instant::now() > patched {
                        panic!(
                            "{kind} {ns}/{name} rolled {got} times, expected {n} (timed out){}",
                            self.describe(kind, ns, name).await
                        );
                    }
                }
                Err(why) => assert!(
                    Instant::now() < shown,
                    "{kind} {ns}/{name}: {why}, expected {n} rolls (timed out)"
                ),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// On the real server, what the harness counts rolls from, for a failure message.
    async fn describe(&self, kind: &str, ns: &str, name: &str) -> String {
        if self.test_server.is_some() {
            return String::new();
        }
        let obj = self.get(kind, ns, name).await;
        format!(
            "\ngeneration {:?}, status {}, template annotations {:?}\n{}",
            obj.metadata.generation,
            obj.data["status"],
            self.template_annotations(kind, ns, name).await,
            real::describe_owned(&self.client, &obj, ns).await
        )
    }

    /// On the real server: waits until a StatefulSet's or DaemonSet's own controller shows `n` rolls, as
    /// `kubectl rollout history` does (its ControllerRevisions: the latest revision is `n + 1`; they follow
    /// the patch by the controller-manager's delay), and fails if it shows more, or not in time.
    /// Nothing more to wait for on the test server (no controllers), for Deployments ([`Env::rolls`]
    /// counts their ReplicaSets already), CronJobs (the job template is all there is) and Rollouts (no
    /// Argo controller runs).
    pub async fn assert_controller_rolls(&self, kind: &str, ns: &str, name: &str, n: usize) {
        if self.test_server.is_some() {
            return;
        }
        let deadline = Instant::now() + real::CONTROLLERS;
        loop {
            let obj = self.get(kind, ns, name).await;
            let Some(got) = real::controller_rolls(&self.client, &obj, kind, ns).await else {
                return;
            };
            if got == n {
                return;
            }
            assert!(
                got < n,
                "{kind} {ns}/{name}: its controller shows {got} rolls, expected {n}"
            );
            assert!(
                Instant::now() < deadline,
                "{kind} {ns}/{name}: its controller shows {got} rolls, expected {n} (timed out)"
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
                // A real deployment controller that has not synced the Deployment yet would meet a roll
                // made right after this as its first template, and show no roll for it: wait until it
                // has seen the recorded generation (so its first ReplicaSet is there).
                if self.test_server.is_none() && kind == "deployments" {
                    self.rolls(kind, ns, name).await;
                }
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
        let before = self.rolls("deployments", ns, name).await;
        if secrets {
            self.secret_full(ns, name, &[("n", &format!("{n}-s"))], &[], &labels)
                .await;
        } else {
            self.configmap_full(ns, name, &[("n", &format!("{n}-c0"))], &[], &labels)
                .await;
        }
        self.wait_stored_rolls("deployments", ns, name, before + 1)
            .await;
        self.configmap_full(ns, name, &[("n", &format!("{n}-c"))], &[], &labels)
            .await;
        self.wait_stored_rolls("deployments", ns, name, before + 2)
            .await;
    }

    /// Asserts the workload has rolled exactly `n` times now (use after [`Env::barrier`]), and on the real
    /// server that its controller shows them (waiting for it).
    pub async fn assert_rolls(&self, kind: &str, ns: &str, name: &str, n: usize) {
        assert_eq!(
            self.rolls(kind, ns, name).await,
            n,
            "{kind} {ns}/{name}: number of rolls"
        );
        self.assert_controller_rolls(kind, ns, name, n).await;
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
        self.assert_rolls(kind, ns, name, 0).await;
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
        let template = self.template_annotations(kind, ns, name).await;
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

    /// Annotations of the workload's pod template as stored now.
    pub async fn template_annotations(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> BTreeMap<String, String> {
        let pointer = if kind == "cronjobs" {
            "/spec/jobTemplate/spec/template/metadata/annotations"
        } else {
            "/spec/template/metadata/annotations"
        };
        self.get(kind, ns, name)
            .await
            .data
            .pointer(pointer)
            .map(|a| serde_json::from_value(a.clone()).expect("string annotations"))
            .unwrap_or_default()
    }

    /// Every stored pod template of the workload a user can read back: on the test server its rollout
    /// record; on the real server the workload itself and the ReplicaSets or ControllerRevisions its
    /// controller keeps, whole.
    pub async fn stored_templates(&self, kind: &str, ns: &str, name: &str) -> Vec<Value> {
        match &self.test_server {
            Some(s) => s
                .control()
                .rollouts(kind, ns, name)
                .into_iter()
                .map(|r| r.template)
                .collect(),
            None => {
                let obj = self.get(kind, ns, name).await;
                let uid = obj.metadata.uid.clone().expect("a uid");
                let mut out = vec![serde_json::to_value(&obj).unwrap()];
                out.extend(real::controller_history(&self.client, &uid, ns).await);
                out
            }
        }
    }

    /// Events (events.k8s.io/v1) hashroll wrote (reporting controller `hashroll.dev/hashroll`) about one
    /// object, as (type, reason, note). On a real cluster the workloads' controllers write Events too.
    pub async fn events_for(&self, ns: &str, name: &str) -> Vec<(String, String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), ns);
        api.list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter(|e| e.reporting_controller.as_deref() == Some("hashroll.dev/hashroll"))
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

/// A client with the credentials of `kubeconfig`.
pub async fn client_from(kubeconfig: &std::path::Path) -> kube::Client {
    real::client(kubeconfig).await
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

/// Short leader-election timings: a standby takes over about two seconds after the leader dies.
pub const FAST_LEASE: [&str; 4] = [
    "--leader-elect",
    "--leader-election-lease-duration=2s",
    "--leader-election-renew-deadline=1.5s",
    "--leader-election-retry-period=0.5s",
];

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
    pub async fn assert_restarted_at(
        &self,
        ns: &str,
        name: &str,
        created: &Value,
    ) -> DynamicObject {
        let restarted = self.get("rollouts", ns, name).await;
        let restart_at = restarted.data["spec"]["restartAt"]
            .as_str()
            .unwrap_or_else(|| panic!("spec.restartAt set: {}", restarted.data["spec"]));
        assert!(
            restart_at.parse::<jiff::Timestamp>().is_ok(),
            "restartAt is a timestamp: {restart_at:?}"
        );
        // Rolled once, by spec.restartAt alone: the template is exactly as created.
        self.assert_rolls("rollouts", ns, name, 1).await;
        assert_eq!(
            &restarted.data["spec"]["template"], created,
            "the template is left alone"
        );
        assert!(
            !self
                .template_annotations("rollouts", ns, name)
                .await
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
