//! The real control plane of `tests/cluster` for the end-to-end tests: started once per test binary (the
//! first real-cluster test starts it), stopped when the test process ends, shared by the binary's tests
//! one at a time, each starting on an emptied cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::discovery::{Discovery, Scope, verbs};
use serde_json::{Value, json};

/// A running control plane: its directory (tests/cluster/up DIR) and admin kubeconfig.
pub struct Cluster {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// The watchdog's stdin: it stops the cluster once this end closes, i.e. when the test process ends,
    /// however it ends. Never dropped.
    _watchdog: std::process::ChildStdin,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

impl Cluster {
    /// Notes a hashroll process started against this cluster, for the watchdog to kill should the test
    /// process end without killing it (SIGKILL, a crash).
    pub fn adopt(&self, pid: u32) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("hashroll.pids"))
            .expect("hashroll.pids");
        writeln!(f, "{pid}").expect("write hashroll.pids");
    }
}

/// One real-cluster Env at a time: held from [`acquire`] until the Env is dropped.
static TURN: LazyLock<Arc<tokio::sync::Mutex<()>>> = LazyLock::new(Default::default);

/// The turn of one Env on the shared cluster.
pub struct Turn {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

/// Waits for this Env's turn, starts the cluster if this is the first, and empties it of what earlier
/// Envs left. Panics, naming what is missing, when the cluster cannot start.
pub async fn acquire(rollouts: bool) -> (Turn, &'static Cluster, kube::Client) {
    let guard = TURN.clone().lock_owned().await;
    let cluster = tokio::task::spawn_blocking(|| CLUSTER.get_or_init(start).as_ref())
        .await
        .expect("starting the cluster");
    let cluster = match cluster {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let client = client(&cluster.kubeconfig).await;
    let started = Instant::now();
    empty(&client).await;
    rollouts_crd(&client, rollouts).await;
    let took = started.elapsed();
    if took > Duration::from_secs(5) {
        eprintln!("real cluster: emptying it took {took:?}");
    }
    (Turn { _guard: guard }, cluster, client)
}

/// A client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig valid");
    kube::Client::try_from(config).expect("client")
}

/// Runs `tests/cluster/up` under a watchdog that runs `tests/cluster/down` (and removes the directory)
/// once the test process has ended, and waits until `up` is done.
fn start() -> Result<Cluster, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cluster = root.join("tests/cluster");
    let dir = tempfile::Builder::new()
        .prefix("hashroll-e2e-cluster.")
        .tempdir()
        .map_err(|e| format!("a temporary directory for the cluster: {e}"))?
        .keep();
    // stdin is a pipe whose only writer is this process: `cat` returns when the process has exited.
    // Then it kills the hashroll processes the tests started (a test process killed outright could not),
    // each only while it still runs that binary, and stops the cluster.
    const WATCHDOG: &str = r#"
        up=$1 down=$2 dir=$3 hashroll=$4
        "$up" "$dir" >"$dir/up.log" 2>&1 </dev/null
        echo $? >"$dir/up.rc.tmp" && mv "$dir/up.rc.tmp" "$dir/up.rc"
        cat >/dev/null
        if [ -f "$dir/hashroll.pids" ]; then
          while read -r pid; do
            case $(readlink "/proc/$pid/exe" 2>/dev/null) in "$hashroll"*) kill -KILL "$pid" ;; esac
          done <"$dir/hashroll.pids"
        fi
        "$down" "$dir" >/dev/null 2>&1
        rm -rf "$dir"
    "#;
    let mut watchdog = Command::new("bash")
        .args(["-c", WATCHDOG, "hashroll-e2e-watchdog"])
        .arg(cluster.join("up"))
        .arg(cluster.join("down"))
        .arg(&dir)
        .arg(env!("CARGO_BIN_EXE_hashroll"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C of the test run must not stop it before it stops the cluster.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("bash runs the cluster watchdog: {e}"))?;
    let stdin = watchdog.stdin.take().expect("piped stdin");
    let rc_file = dir.join("up.rc");
    let log = dir.join("up.log");
    eprintln!(
        "real cluster: tests/cluster/up {} (the first build of the control plane takes ~12 min; log: {})",
        dir.display(),
        log.display()
    );
    // The first build of the control plane can take ~12 minutes on two cores.
    let deadline = Instant::now() + Duration::from_secs(40 * 60);
    let rc = loop {
        if let Ok(s) = std::fs::read_to_string(&rc_file) {
            break s.trim().parse::<i32>().unwrap_or(-1);
        }
        if let Ok(Some(status)) = watchdog.try_wait() {
            return Err(format!(
                "the cluster watchdog exited ({status}) before up finished"
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "tests/cluster/up did not finish in 40 min; log: {}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if rc != 0 {
        let mut text = String::new();
        let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let go = Command::new("go")
            .arg("version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "no `go` on PATH".into());
        return Err(format!(
            "the real control plane did not start: tests/cluster/up exited {rc}. The real-cluster tests \
             need Go 1.26 or newer on PATH (here: {go}) and the Go module proxy (for the first build, \
             cached in target/cluster/bin); HASHROLL_E2E_SERVERS=test runs the test-server half only. \
             Last lines of up's output:\n{}",
            tail.join("\n")
        ));
    }
    Ok(Cluster {
        kubeconfig: dir.join("kubeconfig"),
        dir,
        _watchdog: stdin,
    })
}

/// Namespaces the cluster starts with; everything else is the tests'.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Objects the controller-manager makes in every namespace; they stay.
const SYSTEM_OBJECTS: &str = "metadata.name!=kube-root-ca.crt,metadata.name!=default";

/// Empties the cluster of what earlier Envs made, so that hashroll's cluster-wide watches see only this
/// test's objects: every object in every test namespace (the namespaces themselves stay, with their labels
/// and annotations cleared: deleting a namespace takes at least 5 s, the namespace controller's grace
/// period), and the chart's cluster-wide RBAC. Waits until the kinds hashroll watches and the workloads'
/// own objects are gone.
async fn empty(client: &kube::Client) {
    // Labels (a namespace selector acts on them) and annotations back to a fresh namespace's.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut test_namespaces = BTreeSet::new();
    for ns in namespaces
        .list(&Default::default())
        .await
        .expect("list namespaces")
    {
        let name = ns.metadata.name.clone().unwrap_or_default();
        if SYSTEM_NAMESPACES.contains(&name.as_str()) {
            continue;
        }
        let mut labels = serde_json::Map::new();
        for k in ns.metadata.labels.unwrap_or_default().keys() {
            if k != "kubernetes.io/metadata.name" {
                labels.insert(k.clone(), Value::Null);
            }
        }
        let annotations: serde_json::Map<_, _> = ns
            .metadata
            .annotations
            .unwrap_or_default()
            .into_keys()
            .map(|k| (k, Value::Null))
            .collect();
        if !labels.is_empty() || !annotations.is_empty() {
            let patch = json!({"metadata": {"labels": labels, "annotations": annotations}});
            namespaces
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap_or_else(|e| panic!("reset namespace {name}: {e}"));
        }
        test_namespaces.insert(name);
    }

    let discovery = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .expect("discovery");
    let resources: Vec<ApiResource> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .filter(|(_, caps)| {
            caps.scope == Scope::Namespaced
                && caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::DELETE_COLLECTION)
        })
        .map(|(ar, _)| ar)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pass = 0;
    loop {
        let mut left = leftovers(client, &resources, &test_namespaces).await;
        // Events may keep coming from controllers reacting to the deletions (about objects gone, from
        // other reporters than hashroll): once the earlier tests' are deleted, they may stay.
        if pass > 0 {
            left.retain(|(ar, _, _)| ar.plural != "events");
        }
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "real cluster: objects of earlier tests are still there: {:?}",
            left.iter()
                .map(|(ar, ns, names)| format!("{} {ns}: {names:?}", ar.plural))
                .collect::<Vec<_>>()
        );
        futures::stream::iter(left)
            .map(|(ar, ns, _)| async move {
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::background()
                };
                match api
                    .delete_collection(&dp, &ListParams::default().fields(SYSTEM_OBJECTS))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {}
                    Err(e) => panic!("delete {} in {ns}: {e}", ar.plural),
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
        if pass > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pass += 1;
    }

    // The chart's cluster-wide RBAC.
    for (kind, plural) in [
        ("ClusterRoleBinding", "clusterrolebindings"),
        ("ClusterRole", "clusterroles"),
    ] {
        let ar = ApiResource {
            group: "rbac.authorization.k8s.io".into(),
            version: "v1".into(),
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        api.delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app.kubernetes.io/name=hashroll"),
        )
        .await
        .unwrap_or_else(|e| panic!("delete the chart's {plural}: {e}"));
    }
}

/// The objects left in test namespaces: (resource, namespace, names).
async fn leftovers(
    client: &kube::Client,
    resources: &[ApiResource],
    namespaces: &BTreeSet<String>,
) -> Vec<(ApiResource, String, Vec<String>)> {
    let lists: Vec<(ApiResource, Vec<(String, String)>)> =
        futures::stream::iter(resources.iter().cloned())
            .map(|ar| async move {
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                let items = match api
                    .list_metadata(&ListParams::default().fields(SYSTEM_OBJECTS))
                    .await
                {
                    Ok(list) => list
                        .items
                        .into_iter()
                        .map(|o| {
                            (
                                o.metadata.namespace.unwrap_or_default(),
                                o.metadata.name.unwrap_or_default(),
                            )
                        })
                        .collect(),
                    // A resource gone meanwhile (a custom resource whose definition was deleted).
                    Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
                    Err(e) => panic!("list {}: {e}", ar.plural),
                };
                (ar, items)
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let mut left = Vec::new();
    for (ar, items) in lists {
        let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (ns, name) in items {
            if namespaces.contains(&ns) {
                by_ns.entry(ns).or_default().push(name);
            }
        }
        left.extend(by_ns.into_iter().map(|(ns, names)| (ar.clone(), ns, names)));
    }
    left
}

/// The Argo Rollouts CustomResourceDefinition, as far as hashroll and the tests need it: the resource
/// (namespaced, `ro`), any spec, and the status and scale subresources of Argo's own definition.
fn rollouts_definition() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "rollouts.argoproj.io"},
        "spec": {
            "group": "argoproj.io",
            "names": {"kind": "Rollout", "listKind": "RolloutList", "plural": "rollouts",
                      "singular": "rollout", "shortNames": ["ro"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {
                    "status": {},
                    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.HPAReplicas",
                              "labelSelectorPath": ".status.selector"},
                },
            }],
        },
    })
}

/// Makes the API server serve the Secrets Store CSI driver's resources (minimal structural schemas, a
/// status subresource as the test server has), and waits until its discovery does.
pub async fn csi_crds(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let group = "secrets-store.csi.x-k8s.io";
    for (kind, plural) in [
        ("SecretProviderClass", "secretproviderclasses"),
        (
            "SecretProviderClassPodStatus",
            "secretproviderclasspodstatuses",
        ),
    ] {
        let name = format!("{plural}.{group}");
        if crds.get_opt(&name).await.expect("get the CRD").is_some() {
            continue;
        }
        let definition = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": group,
                "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural,
                          "singular": kind.to_lowercase()},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                                                   "x-kubernetes-preserve-unknown-fields": true}},
                    "subresources": {"status": {}},
                }],
            },
        });
        crds.create(
            &PostParams::default(),
            &serde_json::from_value(definition).unwrap(),
        )
        .await
        .expect("create a Secrets Store CSI CRD");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let served = client
            .list_api_group_resources(&format!("{group}/v1"))
            .await
            .is_ok_and(|l| l.resources.iter().filter(|r| !r.name.contains('/')).count() == 2);
        if served {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Secrets Store CSI CRDs never became served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes the API server serve Argo Rollouts (`present`) or not, and waits until its discovery says so
/// (hashroll checks the group version `argoproj.io/v1alpha1` once, at start).
async fn rollouts_crd(client: &kube::Client, present: bool) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "rollouts.argoproj.io";
    let exists = crds.get_opt(name).await.expect("get the CRD").is_some();
    if present && !exists {
        crds.create(
            &PostParams::default(),
            &serde_json::from_value(rollouts_definition()).unwrap(),
        )
        .await
        .expect("create the Rollout CRD");
    } else if !present && exists {
        crds.delete(name, &DeleteParams::default())
            .await
            .expect("delete the Rollout CRD");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let served = client
            .list_api_group_resources("argoproj.io/v1alpha1")
            .await
            .is_ok_and(|l| l.resources.iter().any(|r| r.name == "rollouts"));
        let established = crds
            .get_opt(name)
            .await
            .expect("get the CRD")
            .is_some_and(|c| {
                c.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        let gone = crds.get_opt(name).await.expect("get the CRD").is_none();
        if (present && served && established) || (!present && !served && gone) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Rollout CRD never became {}",
            if present { "served" } else { "gone" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a kubeconfig for ServiceAccount `ns`/`name` (made if missing) with a token from the
/// TokenRequest API, for the cluster of the admin kubeconfig `admin`.
pub async fn kubeconfig_for_service_account(
    client: &kube::Client,
    admin: &Path,
    ns: &str,
    name: &str,
    path: &Path,
) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}})).unwrap();
    match accounts.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create ServiceAccount {ns}/{name}: {e}"),
    }
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .unwrap();
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{name}: {e}"))
        .status
        .expect("a token")
        .token;
    let kc = kube::config::Kubeconfig::read_from(admin).expect("admin kubeconfig");
    let cluster = kc.clusters[0].cluster.clone().expect("a cluster");
    // JSON is YAML: kubectl and kube-rs read it as a kubeconfig.
    let doc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "real", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{"name": format!("{ns}-{name}"), "user": {"token": token}}],
        "contexts": [{"name": "real", "context": {"cluster": "real", "user": format!("{ns}-{name}")}}],
        "current-context": "real",
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).expect("write kubeconfig");
}

/// How many times a workload rolled, as the real API server and controllers show it. A Deployment: the
/// latest revision among its ReplicaSets (what `kubectl rollout history` lists) minus the first, once
/// the deployment controller has seen its latest generation (a Deployment's generation also counts
/// changes of its annotations, which hashroll writes when it only records). The other kinds: their
/// `metadata.generation` minus the first (a spec change; hashroll changes nothing else in a spec, nor do
/// the tests).
pub async fn rolls(
    client: &kube::Client,
    api: &Api<DynamicObject>,
    kind: &str,
    name: &str,
) -> Result<usize, String> {
    let obj = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get {kind} {name}: {e}"));
    let generation = obj.metadata.generation.expect("metadata.generation");
    if kind != "deployments" {
        return Ok(usize::try_from(generation - 1).expect("generation >= 1"));
    }
    let observed = obj.data["status"]["observedGeneration"]
        .as_i64()
        .unwrap_or(0);
    if observed < generation {
        return Err(format!(
            "its controller has not seen generation {generation} yet (observed: {observed})"
        ));
    }
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    Ok(revisions(client, &obj, &ns, Owned::ReplicaSets).await)
}

/// How long the harness waits for the real cluster's controllers (a Deployment's ReplicaSets, a
/// StatefulSet's ControllerRevisions): the controller-manager talks to the API server at 20 requests
/// a second (its default `--kube-api-qps`), so fifty Deployments rolling at once take it ~20 s.
pub const CONTROLLERS: Duration = Duration::from_secs(60);

/// What a StatefulSet's or DaemonSet's controller shows of its rolls: the latest revision among its
/// ControllerRevisions minus the first. None for the other kinds (a Deployment's rolls are counted from
/// its ReplicaSets already; CronJobs have no such record, and no Argo controller runs here).
pub async fn controller_rolls(
    client: &kube::Client,
    obj: &DynamicObject,
    kind: &str,
    ns: &str,
) -> Option<usize> {
    match kind {
        "statefulsets" | "daemonsets" => {
            Some(revisions(client, obj, ns, Owned::ControllerRevisions).await)
        }
        _ => None,
    }
}

enum Owned {
    ReplicaSets,
    ControllerRevisions,
}

/// The latest revision among the objects `obj` owns, minus the first (0 when there are none yet).
async fn revisions(client: &kube::Client, obj: &DynamicObject, ns: &str, owned: Owned) -> usize {
    let uid = obj.metadata.uid.clone().expect("a uid");
    let (ar, revision): (ApiResource, fn(&DynamicObject) -> Option<i64>) = match owned {
        Owned::ReplicaSets => (
            ApiResource::erase::<k8s_openapi::api::apps::v1::ReplicaSet>(&()),
            |o| {
                o.metadata
                    .annotations
                    .as_ref()?
                    .get("deployment.kubernetes.io/revision")?
                    .parse()
                    .ok()
            },
        ),
        Owned::ControllerRevisions => (
            ApiResource::erase::<k8s_openapi::api::apps::v1::ControllerRevision>(&()),
            |o| o.data.get("revision")?.as_i64(),
        ),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let list = api
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("list {}: {e}", ar.plural));
    let latest = list
        .items
        .iter()
        .filter(|o| {
            o.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid)
        })
        .filter_map(revision)
        .max()
        .unwrap_or(0);
    usize::try_from(latest).unwrap_or(0).saturating_sub(1)
}

/// The ReplicaSets and ControllerRevisions `obj` owns: name, revision, template annotations.
pub async fn describe_owned(client: &kube::Client, obj: &DynamicObject, ns: &str) -> String {
    let uid = obj.metadata.uid.clone().expect("a uid");
    controller_history(client, &uid, ns)
        .await
        .iter()
        .map(|o| {
            format!(
                "{} {} revision {} / {}: {}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"],
                o["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
                o["revision"],
                o.pointer("/spec/template/metadata/annotations")
                    .or_else(|| o.pointer("/data/spec/template/metadata/annotations"))
                    .unwrap_or(&Value::Null)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every pod template the workload's controller keeps (ReplicaSets, ControllerRevisions), as a user
/// finds them with `kubectl get rs` / `kubectl get controllerrevisions`, whole.
pub async fn controller_history(client: &kube::Client, uid: &str, ns: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for ar in [
        ApiResource::erase::<k8s_openapi::api::apps::v1::ReplicaSet>(&()),
        ApiResource::erase::<k8s_openapi::api::apps::v1::ControllerRevision>(&()),
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        for o in api.list(&Default::default()).await.expect("list").items {
            if o.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid)
            {
                out.push(serde_json::to_value(&o).unwrap());
            }
        }
    }
    out
}
