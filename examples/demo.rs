//! `cargo run --example demo`: a test API server in-process, a Secret, a ConfigMap and an opted-in
//! Deployment; hashroll runs, the Secret changes, and the demo says in plain words what happened.

use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube_testserver::{ServerOptions, TestServer, WorkloadSim};
use serde_json::json;

const NS: &str = "demo";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("hashroll=info")
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();

    let server = TestServer::start_with(ServerOptions {
        workload_controller: WorkloadSim::Immediate,
        ..ServerOptions::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let client = server.client();
    println!("1. Test API server listening at {}", server.url());

    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [NS, "hashroll"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
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

    let rolls = |server: &TestServer| server.control().rollouts("deployments", NS, "web").len() - 1;
    let recorded = wait_for(|| async {
        let d = deployments.get("web").await.ok()?;
        d.metadata.annotations?.get("hashroll.dev/hash").cloned()
    })
    .await?;
    println!("3. hashroll started, saw the Deployment and recorded its state without rolling it:");
    println!("   metadata hashroll.dev/hash = {recorded}");
    println!("   rolls so far: {}", rolls(&server));

    set_secret("someone-else", "first-password").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    println!("4. Changed key `username` of Secret db, which the Deployment does not use.");
    println!(
        "   rolls so far: {} (key-level precision: nothing to do)",
        rolls(&server)
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
    println!("   the Deployment rolled: rolls so far: {}", rolls(&server));
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
    server.shutdown().await;
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
