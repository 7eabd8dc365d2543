//! `cargo run --example demo`: a test API server in-process, a Secret, a ConfigMap and an opted-in
//! Deployment; hashroll runs, the Secret changes, and the demo says in plain words what happened.
//!
//! `cargo run --example demo -- --real` does the same on the project's real control plane (started with
//! `tests/cluster/up` in a temporary folder and stopped at the end; needs Go), and
//! `cargo run --example demo -- --kubeconfig PATH` on a cluster of your own (namespace `demo`).

use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube_testserver::{ServerOptions, TestServer, WorkloadSim};
use serde_json::json;

const NS: &str = "demo";

/// Where the demo runs.
#[derive(Parser)]
struct Cli {
    /// On the project's real control plane (tests/cluster/up; needs Go, the first build takes minutes).
    #[arg(long)]
    real: bool,
    /// On an existing cluster, through this kubeconfig.
    #[arg(long, conflicts_with = "real")]
    kubeconfig: Option<std::path::PathBuf>,
}

/// The API server the demo talks to, and what to stop at the end.
enum Server {
    Test(TestServer),
    /// A control plane started by the demo in this folder.
    Real(tempfile::TempDir),
    Existing,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter("hashroll=info")
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();

    let dir = tempfile::tempdir()?;
    let (server, kubeconfig) = if cli.real {
        let cluster = tempfile::tempdir()?;
        println!(
            "0. Starting the real control plane (tests/cluster/up; the first build takes minutes) ..."
        );
        let up =
            std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/up"))
                .arg(cluster.path())
                .status()?;
        anyhow::ensure!(up.success(), "tests/cluster/up failed ({up})");
        let kubeconfig = cluster.path().join("kubeconfig");
        (Server::Real(cluster), kubeconfig)
    } else if let Some(path) = cli.kubeconfig {
        (Server::Existing, path)
    } else {
        let server = TestServer::start_with(ServerOptions {
            workload_controller: WorkloadSim::Immediate,
            ..ServerOptions::default()
        })
        .await?;
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig)?;
        (Server::Test(server), kubeconfig)
    };
    let result = demo(&server, &kubeconfig).await;
    match server {
        Server::Test(server) => server.shutdown().await,
        Server::Real(cluster) => {
            let _ = std::process::Command::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/cluster/down"
            ))
            .arg(cluster.path())
            .status();
        }
        Server::Existing => {}
    }
    result
}

async fn demo(server: &Server, kubeconfig: &std::path::Path) -> anyhow::Result<()> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &Default::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    match server {
        Server::Test(s) => println!("1. Test API server listening at {}", s.url()),
        _ => println!(
            "1. Kubernetes API server {} (kubeconfig {})",
            client.apiserver_version().await?.git_version,
            kubeconfig.display()
        ),
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [NS, "hashroll"] {
        let created = namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await;
        match created {
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            other => {
                other?;
            }
        }
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let apply = PatchParams::apply("demo").force();
    let set_secret = |username: &'static str, password: &'static str| {
        let secrets = secrets.clone();
        let apply = apply.clone();
        async move {
            let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                "stringData": {"username": username, "password": password}});
            secrets.patch("db", &apply, &Patch::Apply(&body)).await
        }
    };
    set_secret("app", "first-password").await?;
    configmaps
        .patch(
            "web-config",
            &apply,
            &Patch::Apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "web-config"}, "data": {"LOG_LEVEL": "info"}})),
        )
        .await?;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {"hashroll.dev/reload": "true"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
                "envFrom": [{"configMapRef": {"name": "web-config"}}]}]}}}
    });
    deployments
        .patch("web", &apply, &Patch::Apply(&deployment))
        .await?;
    println!(
        "2. Created Secret demo/db (username, password), ConfigMap demo/web-config and Deployment demo/web"
    );
    println!(
        "   annotated hashroll.dev/reload: \"true\"; it uses key `password` of db and all of web-config."
    );

    let args = hashroll::cli::Args::parse_from([
        "hashroll",
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--controller-namespace",
        "hashroll",
        "--debounce",
        "500ms",
        "--admin-addr",
        "off",
    ]);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let hashroll = tokio::spawn(hashroll::app::run(args, async move {
        let _ = stop_rx.await;
    }));

    // Rolls as a user sees them: new ReplicaSets of the Deployment (`kubectl rollout history`); the test
    // server's workload simulator records each pod template instead.
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let rolls = || async {
        match server {
            Server::Test(s) => s.control().rollouts("deployments", NS, "web").len() - 1,
            _ => {
                let Ok(web) = deployments.get("web").await else {
                    return 0;
                };
                let owned = replica_sets
                    .list(&Default::default())
                    .await
                    .map(|l| {
                        l.items
                            .iter()
                            .filter(|rs| {
                                rs.metadata
                                    .owner_references
                                    .iter()
                                    .flatten()
                                    .any(|o| Some(&o.uid) == web.metadata.uid.as_ref())
                            })
                            .count()
                    })
                    .unwrap_or(0);
                owned.saturating_sub(1)
            }
        }
    };
    let recorded = wait_for(|| async {
        let d = deployments.get("web").await.ok()?;
        d.metadata.annotations?.get("hashroll.dev/hash").cloned()
    })
    .await?;
    println!("3. hashroll started, saw the Deployment and recorded its state without rolling it:");
    println!("   metadata hashroll.dev/hash = {recorded}");
    println!("   rolls so far: {}", rolls().await);

    set_secret("someone-else", "first-password").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    println!("4. Changed key `username` of Secret db, which the Deployment does not use.");
    println!(
        "   rolls so far: {} (key-level precision: nothing to do)",
        rolls().await
    );

    set_secret("someone-else", "second-password").await?;
    println!("5. Changed key `password` of Secret db.");
    let template_hash = wait_for(|| async {
        let d = deployments.get("web").await.ok()?;
        d.spec?
            .template
            .metadata?
            .annotations?
            .get("hashroll.dev/hash")
            .cloned()
    })
    .await?;
    println!("   hashroll patched the pod template: hashroll.dev/hash = {template_hash}");
    let rolled = wait_for(|| async { Some(rolls().await).filter(|n| *n >= 1) }).await?;
    println!("   the Deployment rolled: rolls so far: {rolled}");
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let note = wait_for(|| async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Reloaded"))
            .map(|e| {
                format!(
                    "{} {}: {}",
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default()
                )
            })
    })
    .await?;
    println!("   Event on the Deployment: {note}");
    println!(
        "   (the value itself appears nowhere: only a keyed HMAC, which cannot be brute-forced without the key)"
    );

    let _ = stop_tx.send(());
    hashroll.await??;
    println!("6. hashroll stopped cleanly. Done.");
    Ok(())
}

/// Polls `f` until it yields a value (10 s at most).
async fn wait_for<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
