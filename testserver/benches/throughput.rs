//! Throughput of the test API server: `cargo bench -p kube-testserver --bench throughput`.
//!
//! The server runs in-process on its own thread and tokio runtime (2 workers); the benchmark client runs
//! on a second runtime (2 workers) in the main thread, so both share the machine's cores the way
//! hashroll and the server do in the end-to-end benchmarks. It prints one table:
//!
//! 1. populate: 100 namespaces, 20,000 Secrets of about 1 KiB and 30,000 ConfigMaps, created over HTTP
//!    with 16 requests in flight;
//! 2. the initial list of all 20,000 Secrets (`/api/v1/secrets`) in one request and in pages of 500, read
//!    as raw bytes so client-side decoding is not counted, then the same with kube-rs typed lists;
//! 3. watch throughput on `/api/v1/secrets`: replaying 20,000 pre-written updates from history, and
//!    following 20,000 updates live while other tasks write them as fast as they can; events are counted
//!    by parsing every NDJSON line.
//!
//! Nothing here asserts on timing; it fails only when the server answers wrongly (a missing event, a
//! short list, an error status).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use http_body_util::BodyExt as _;
use hyper::{Method, Request};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube_testserver::{ServerOptions, TestServer};
use serde::Deserialize;
use serde_json::json;

/// Namespaces the objects are spread over.
const NAMESPACES: usize = 100;
/// Secrets created (about 1 KiB each).
const SECRETS: usize = 20_000;
/// ConfigMaps created.
const CONFIGMAPS: usize = 30_000;
/// Updates written for each watch measurement.
const UPDATES: usize = 20_000;
/// Requests in flight while populating and writing updates.
const IN_FLIGHT: usize = 16;
/// Page size of the paginated lists.
const PAGE: usize = 500;
/// Repetitions of each list measurement; the median is reported.
const LIST_RUNS: usize = 3;
/// Per-watch deadline: a server that stops sending fails the benchmark instead of hanging it.
const WATCH_DEADLINE: Duration = Duration::from_secs(300);

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; there are no options to parse.
    let server = ServerThread::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the client runtime")?;
    let result = rt.block_on(run(&server.url));
    server.stop();
    let table = result?;
    table.print();
    Ok(())
}

/// The server's own thread and runtime, so its scheduling is independent of the benchmark client's.
struct ServerThread {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ServerThread {
    fn start() -> anyhow::Result<ServerThread> {
        let (url_tx, url_rx) = std::sync::mpsc::channel::<anyhow::Result<String>>();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("testserver".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("testserver-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = url_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    // History must hold every update of the replay measurement (the default keeps
                    // 10,000 events); a little more, not all of history, keeps memory realistic.
                    let opts = ServerOptions {
                        history_len: UPDATES + UPDATES / 4,
                        ..ServerOptions::default()
                    };
                    match TestServer::start_with(opts).await {
                        Ok(server) => {
                            let _ = url_tx.send(Ok(server.url()));
                            let _ = stop_rx.await;
                            server.shutdown().await;
                        }
                        Err(e) => {
                            let _ = url_tx.send(Err(e));
                        }
                    }
                });
            })
            .context("spawning the server thread")?;
        let url = url_rx
            .recv()
            .context("the server thread ended before reporting its URL")??;
        Ok(ServerThread { url, stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// One printed row.
struct Row {
    what: String,
    count: usize,
    elapsed: Duration,
    bytes: Option<usize>,
    note: String,
}

/// The result table.
#[derive(Default)]
struct Table {
    rows: Vec<Row>,
    /// Resident memory of the whole process (server and client) at the end.
    rss_mib: Option<f64>,
}

impl Table {
    fn add(
        &mut self,
        what: &str,
        count: usize,
        elapsed: Duration,
        bytes: Option<usize>,
        note: &str,
    ) {
        let row = Row {
            what: what.into(),
            count,
            elapsed,
            bytes,
            note: note.into(),
        };
        // Progress on stderr, so a slow phase is visible while the benchmark runs.
        eprintln!(
            "  {}: {} in {:.3} s",
            row.what,
            row.count,
            row.elapsed.as_secs_f64()
        );
        self.rows.push(row);
    }

    fn print(&self) {
        println!();
        println!(
            "kube-testserver throughput (server in-process on its own 2-worker runtime; {} CPUs)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "{:<44} {:>7} {:>9} {:>11} {:>9}  note",
            "measurement", "items", "time ms", "items/s", "MiB"
        );
        println!("{}", "-".repeat(100));
        for r in &self.rows {
            let secs = r.elapsed.as_secs_f64();
            println!(
                "{:<44} {:>7} {:>9.1} {:>11.0} {:>9}  {}",
                r.what,
                r.count,
                secs * 1000.0,
                r.count as f64 / secs.max(1e-9),
                r.bytes
                    .map(|b| format!("{:.1}", b as f64 / (1024.0 * 1024.0)))
                    .unwrap_or_default(),
                r.note
            );
        }
        if let Some(rss) = self.rss_mib {
            println!("process RSS at the end (server + client): {rss:.0} MiB");
        }
    }
}

async fn run(url: &str) -> anyhow::Result<Table> {
    let client = admin_client(url)?;
    let mut table = Table::default();

    if let Some(rss) = resident_mib() {
        eprintln!("  process RSS before populate: {rss:.0} MiB");
    }
    eprintln!("populating...");
    populate(&client, &mut table).await?;
    if let Some(rss) = resident_mib() {
        eprintln!("  process RSS after populate: {rss:.0} MiB");
    }

    eprintln!("listing...");
    list_raw(&client, &mut table, None).await?;
    list_raw(&client, &mut table, Some(PAGE)).await?;
    list_typed(&client, &mut table, None).await?;
    list_typed(&client, &mut table, Some(PAGE)).await?;

    eprintln!("watching...");
    watch_initial(&client, &mut table).await?;
    watch_replay(&client, &mut table).await?;
    watch_live(&client, &mut table).await?;
    table.rss_mib = resident_mib();
    Ok(table)
}

/// A kube client for the server's plain-HTTP URL with the admin token.
fn admin_client(url: &str) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::new(url.parse().context("parsing the server URL")?);
    config.default_namespace = "default".into();
    config.auth_info = serde_json::from_value(json!({ "token": "admin" }))?;
    Ok(kube::Client::try_from(config)?)
}

fn ns_name(i: usize) -> String {
    format!("bench-{:03}", i % NAMESPACES)
}

/// Deterministic filler bytes, different per object so no two payloads compress alike.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Sends a request with a JSON body (or none) and returns the whole response body; errors on non-2xx.
async fn call(
    client: &kube::Client,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<Bytes> {
    let req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(kube::client::Body::from(body))?;
    let resp = client
        .send(req)
        .await
        .with_context(|| format!("{method} {path}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading the body of {method} {path}"))?
        .to_bytes();
    ensure!(
        status.is_success(),
        "{method} {path} answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(bytes)
}

/// Runs `requests` with `IN_FLIGHT` in flight and returns how long they took.
async fn run_all<F>(requests: impl Iterator<Item = F>) -> anyhow::Result<Duration>
where
    F: std::future::Future<Output = anyhow::Result<Bytes>>,
{
    let start = Instant::now();
    futures::stream::iter(requests)
        .buffer_unordered(IN_FLIGHT)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(start.elapsed())
}

async fn populate(client: &kube::Client, table: &mut Table) -> anyhow::Result<()> {
    let json_ct = "application/json";
    let t = run_all((0..NAMESPACES).map(|i| {
        let body =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name(i)}});
        call(
            client,
            Method::POST,
            "/api/v1/namespaces",
            json_ct,
            body.to_string().into_bytes(),
        )
    }))
    .await?;
    table.add("create namespaces", NAMESPACES, t, None, "");

    // 480 random bytes are 640 base64 characters; with metadata the stored Secret is about 1 KiB.
    let secrets = (0..SECRETS).map(|i| {
        let ns = ns_name(i);
        let body = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("secret-{i:05}"), "namespace": ns,
                         "labels": {"app": format!("app-{}", i % 50), "tier": "bench"}},
            "type": "Opaque",
            "data": {"password": b64(&filler(i as u64, 480)), "user": b64(b"bench")},
        });
        (format!("/api/v1/namespaces/{ns}/secrets"), body.to_string())
    });
    let secrets: Vec<_> = secrets.collect();
    let sent: usize = secrets.iter().map(|(_, b)| b.len()).sum();
    let t = run_all(secrets.into_iter().map(|(path, body)| async move {
        call(client, Method::POST, &path, json_ct, body.into_bytes()).await
    }))
    .await?;
    table.add(
        "create Secrets (~1 KiB)",
        SECRETS,
        t,
        Some(sent),
        &format!("{IN_FLIGHT} in flight"),
    );

    let cms: Vec<_> = (0..CONFIGMAPS)
        .map(|i| {
            let ns = ns_name(i);
            let body = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("config-{i:05}"), "namespace": ns,
                             "labels": {"app": format!("app-{}", i % 50)}},
                "data": {"settings.yaml": format!("replicas: {}\nlevel: info\nowner: team-{}\n", i % 7, i % 13)},
            });
            (format!("/api/v1/namespaces/{ns}/configmaps"), body.to_string())
        })
        .collect();
    let sent: usize = cms.iter().map(|(_, b)| b.len()).sum();
    let t = run_all(cms.into_iter().map(|(path, body)| async move {
        call(client, Method::POST, &path, json_ct, body.into_bytes()).await
    }))
    .await?;
    table.add(
        "create ConfigMaps",
        CONFIGMAPS,
        t,
        Some(sent),
        &format!("{IN_FLIGHT} in flight"),
    );
    Ok(())
}

/// The list envelope without its items: enough to follow pagination and count items.
#[derive(Deserialize)]
struct ListEnvelope {
    metadata: ListMeta,
    items: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: String,
    #[serde(rename = "continue", default)]
    cont: Option<String>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Raw-bytes list of all Secrets; `page` = None is one request.
async fn list_raw(
    client: &kube::Client,
    table: &mut Table,
    page: Option<usize>,
) -> anyhow::Result<()> {
    let mut times = Vec::new();
    let mut parse_times = Vec::new();
    let mut bytes = 0;
    let mut requests = 0;
    for _ in 0..LIST_RUNS {
        let start = Instant::now();
        let mut parse = Duration::ZERO;
        let mut items = 0;
        let mut cont: Option<String> = None;
        bytes = 0;
        requests = 0;
        loop {
            let mut path = String::from("/api/v1/secrets");
            if let Some(limit) = page {
                path.push_str(&format!("?limit={limit}"));
                if let Some(c) = &cont {
                    path.push_str(&format!("&continue={}", percent_encode(c)));
                }
            }
            let body = call(client, Method::GET, &path, "application/json", Vec::new()).await?;
            requests += 1;
            bytes += body.len();
            // Skimming the envelope (items skipped, not decoded) is timed separately.
            let p = Instant::now();
            let env: ListEnvelope = serde_json::from_slice(&body)
                .with_context(|| format!("GET {path} did not return a list"))?;
            parse += p.elapsed();
            items += env.items.len();
            cont = env.metadata.cont.filter(|c| !c.is_empty());
            if cont.is_none() {
                break;
            }
        }
        ensure!(
            items == SECRETS,
            "the list returned {items} Secrets, expected {SECRETS}"
        );
        times.push(start.elapsed());
        parse_times.push(parse);
    }
    let what = match page {
        None => "list Secrets raw, 1 request".to_string(),
        Some(l) => format!("list Secrets raw, limit={l} ({requests} requests)"),
    };
    table.add(
        &what,
        SECRETS,
        median(times),
        Some(bytes),
        &format!(
            "median of {LIST_RUNS}; incl. {:.0} ms envelope skim",
            median(parse_times).as_secs_f64() * 1000.0
        ),
    );
    Ok(())
}

/// kube-rs typed list of all Secrets (decoding into `Secret` included).
async fn list_typed(
    client: &kube::Client,
    table: &mut Table,
    page: Option<usize>,
) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::all(client.clone());
    let mut times = Vec::new();
    for _ in 0..LIST_RUNS {
        let start = Instant::now();
        let mut items = 0;
        let mut lp = ListParams::default();
        if let Some(l) = page {
            lp = lp.limit(l as u32);
        }
        loop {
            let list = api.list(&lp).await.context("kube-rs list of Secrets")?;
            items += list.items.len();
            match list.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => break,
            }
        }
        ensure!(
            items == SECRETS,
            "the typed list returned {items} Secrets, expected {SECRETS}"
        );
        times.push(start.elapsed());
    }
    let what = match page {
        None => "list Secrets kube-rs typed, 1 request".to_string(),
        Some(l) => format!("list Secrets kube-rs typed, limit={l}"),
    };
    table.add(
        &what,
        SECRETS,
        median(times),
        None,
        &format!("median of {LIST_RUNS}; decode into Secret included"),
    );
    Ok(())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One watch event line, parsed just far enough to check type and ordering.
#[derive(Deserialize)]
struct EventLine<'a> {
    #[serde(rename = "type", borrow)]
    typ: Cow<'a, str>,
    #[serde(borrow)]
    object: EventObject<'a>,
}

#[derive(Deserialize)]
struct EventObject<'a> {
    #[serde(borrow)]
    metadata: EventMeta<'a>,
}

#[derive(Deserialize)]
struct EventMeta<'a> {
    #[serde(rename = "resourceVersion", borrow)]
    resource_version: Cow<'a, str>,
}

/// What a watch consumer saw.
struct WatchStats {
    events: usize,
    bytes: usize,
    /// When the last expected event arrived.
    done: Instant,
}

/// Opens a Secrets watch; the returned body streams NDJSON.
async fn open_watch(client: &kube::Client, query: &str) -> anyhow::Result<kube::client::Body> {
    let path = format!("/api/v1/secrets?watch=true&{query}");
    let req = Request::builder()
        .method(Method::GET)
        .uri(&path)
        .header("accept", "application/json")
        .body(kube::client::Body::empty())?;
    let resp = client
        .send(req)
        .await
        .with_context(|| format!("GET {path}"))?;
    ensure!(
        resp.status().is_success(),
        "GET {path} answered {}",
        resp.status()
    );
    Ok(resp.into_body())
}

/// Reads the watch body until `want` events of type `typ` arrived, parsing each NDJSON line. With
/// `ordered`, resourceVersions must only grow (true of history; initial events come in key order).
async fn consume(
    mut body: kube::client::Body,
    want: usize,
    typ: &str,
    ordered: bool,
) -> anyhow::Result<WatchStats> {
    let mut pending: Vec<u8> = Vec::new();
    let mut events = 0;
    let mut bytes = 0;
    let mut last_rv = 0u64;
    let deadline = tokio::time::Instant::now() + WATCH_DEADLINE;
    while events < want {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .with_context(|| format!("watch stalled after {events} of {want} events"))?;
        let Some(frame) = frame else {
            bail!("watch ended after {events} of {want} events");
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        bytes += data.len();
        pending.extend_from_slice(&data);
        let mut consumed = 0;
        while let Some(nl) = pending[consumed..].iter().position(|&b| b == b'\n') {
            let line = &pending[consumed..consumed + nl];
            consumed += nl + 1;
            let ev: EventLine = serde_json::from_slice(line).with_context(|| {
                format!(
                    "bad watch line: {}",
                    String::from_utf8_lossy(&line[..line.len().min(300)])
                )
            })?;
            if ev.typ == "BOOKMARK" {
                continue;
            }
            ensure!(
                ev.typ == typ,
                "expected {typ} events, got {} (event {events})",
                ev.typ
            );
            let rv: u64 = ev.object.metadata.resource_version.parse()?;
            ensure!(
                !ordered || rv > last_rv,
                "resourceVersion went from {last_rv} to {rv} at event {events}"
            );
            last_rv = rv;
            events += 1;
        }
        pending.drain(..consumed);
    }
    Ok(WatchStats {
        events,
        bytes,
        done: Instant::now(),
    })
}

/// The current resourceVersion of the Secrets collection.
async fn secrets_rv(client: &kube::Client) -> anyhow::Result<String> {
    let body = call(
        client,
        Method::GET,
        "/api/v1/secrets?limit=1",
        "application/json",
        Vec::new(),
    )
    .await?;
    let env: ListEnvelope = serde_json::from_slice(&body)?;
    Ok(env.metadata.resource_version)
}

/// Writes `UPDATES` merge patches, each changing one Secret's data so each yields exactly one event.
async fn write_updates(client: &kube::Client, round: &str) -> anyhow::Result<Duration> {
    run_all((0..UPDATES).map(|i| {
        let s = i % SECRETS;
        let path = format!("/api/v1/namespaces/{}/secrets/secret-{s:05}", ns_name(s));
        let body = json!({"data": {"round": b64(format!("{round}-{i}").as_bytes())}}).to_string();
        async move {
            call(
                client,
                Method::PATCH,
                &path,
                "application/merge-patch+json",
                body.into_bytes(),
            )
            .await
        }
    }))
    .await
}

/// A watch without resourceVersion: every Secret as a synthetic ADDED event.
async fn watch_initial(client: &kube::Client, table: &mut Table) -> anyhow::Result<()> {
    let start = Instant::now();
    let body = open_watch(client, "").await?;
    let stats = consume(body, SECRETS, "ADDED", false).await?;
    table.add(
        "watch initial events (no RV)",
        stats.events,
        stats.done - start,
        Some(stats.bytes),
        "synthetic ADDED per Secret",
    );
    Ok(())
}

/// Pre-writes the updates, then watches from the RV before them.
async fn watch_replay(client: &kube::Client, table: &mut Table) -> anyhow::Result<()> {
    let rv = secrets_rv(client).await?;
    let t = write_updates(client, "replay").await?;
    table.add(
        "write updates (merge patch)",
        UPDATES,
        t,
        None,
        &format!("{IN_FLIGHT} in flight, no watcher"),
    );
    let start = Instant::now();
    let body = open_watch(client, &format!("resourceVersion={rv}")).await?;
    let stats = consume(body, UPDATES, "MODIFIED", true).await?;
    table.add(
        "watch replay from history",
        stats.events,
        stats.done - start,
        Some(stats.bytes),
        "updates written before the watch",
    );
    Ok(())
}

/// Watches from the current RV while other tasks write the updates.
async fn watch_live(client: &kube::Client, table: &mut Table) -> anyhow::Result<()> {
    let rv = secrets_rv(client).await?;
    let body = open_watch(client, &format!("resourceVersion={rv}")).await?;
    let watcher = tokio::spawn(consume(body, UPDATES, "MODIFIED", true));
    let start = Instant::now();
    let writers = {
        let client = client.clone();
        tokio::spawn(async move { write_updates(&client, "live").await })
    };
    let written = writers.await.context("the writer task panicked")??;
    let stats = watcher.await.context("the watch task panicked")??;
    let total = stats.done - start;
    table.add(
        "watch live while writing",
        stats.events,
        total,
        Some(stats.bytes),
        &format!(
            "writers took {:.0} ms ({:.0}/s); last event {:.0} ms after the last write",
            written.as_secs_f64() * 1000.0,
            UPDATES as f64 / written.as_secs_f64(),
            total.saturating_sub(written).as_secs_f64() * 1000.0
        ),
    );
    Ok(())
}

/// Resident memory of this process (server and client together), from /proc.
fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}
