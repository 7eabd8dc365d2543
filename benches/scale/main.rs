//! Scale benchmark: hashroll's memory, CPU, start-up, reaction latency, fan-out and API cost against a
//! cluster of chosen size, next to an informer-style baseline measured in the same run.
//!
//! `cargo bench --bench scale -- --scale M` (see benches/README.md). The test API server, hashroll
//! (release binary) and the baseline each run as their own process, so `/proc` measures each alone.

mod baseline;
mod cluster;
mod measure;
mod procs;
mod real;
mod takeover;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use tokio::process::Command;

use cluster::{Plan, Scale};
use measure::{ApiCost, Fanout, Latency, TemplateWatch};
use procs::{Server, Subject, Usage};

/// hashroll scale benchmark.
#[derive(Parser, Debug)]
struct Cli {
    /// Internal roles (the bench re-executes itself as the test API server and as the baseline).
    #[command(subcommand)]
    role: Option<Role>,
    /// Cluster size: S, M or L.
    #[arg(long, default_value = "S")]
    scale: String,
    /// Seed for the generated cluster (same seed, same cluster).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of idle time after the initial sync before steady RSS is read.
    #[arg(long, default_value_t = 30.0)]
    idle: f64,
    /// Single updates for the reaction-latency test (fewer if the cluster has fewer suitable Secrets).
    #[arg(long, default_value_t = 200)]
    updates: usize,
    /// The API server: `testserver` (the project's, as a child process) or `real` (a control plane from
    /// tests/cluster/up, started in a temporary directory and stopped at the end).
    #[arg(long, value_enum, default_value_t = ServerKind::Test)]
    server: ServerKind,
    /// Payload multiplier of the payload-independence run; 0 or 1 skips that run. Default 4 on the test
    /// server, 1 (skipped) on the real one.
    #[arg(long)]
    payload_factor: Option<usize>,
    /// Skip the baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Also time a takeover by a cold and by a warm standby, and measure what a standby costs.
    #[arg(long)]
    takeover: bool,
    /// Extra environment for the hashroll process only, `NAME=VALUE`, repeatable: for profiling, e.g.
    /// `LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so` (benches/README.md, "Profiling").
    #[arg(long = "hashroll-env", value_name = "NAME=VALUE", value_parser = parse_env)]
    hashroll_env: Vec<(String, String)>,
    /// Where to write the JSON results (default: bench-results/<scale>.json in the workspace).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true, global = true)]
    bench: bool,
}

/// Which API server the bench runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
pub enum ServerKind {
    /// kube-testserver, as a child process.
    #[value(name = "testserver")]
    Test,
    /// A real control plane: tests/cluster/up (kube-apiserver, etcd, controller-manager, scheduler, kwok).
    Real,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Test => "testserver",
            ServerKind::Real => "real",
        }
    }
}

impl Cli {
    fn payload_factor(&self) -> usize {
        self.payload_factor.unwrap_or(match self.server {
            ServerKind::Test => 4,
            ServerKind::Real => 1,
        })
    }
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Run the test API server until stdin closes.
    Serve {
        /// Write the admin kubeconfig here.
        #[arg(long)]
        kubeconfig_out: PathBuf,
    },
    /// Run the informer-style baseline controller.
    Baseline {
        /// Kubeconfig of the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
    },
}

/// Which program is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Hashroll,
    Baseline,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Hashroll => "hashroll",
            Who::Baseline => "baseline",
        }
    }
}

/// Everything measured about one subject in one cluster.
#[derive(Debug, Default, Serialize)]
struct SubjectResult {
    /// Process start to the readiness log line, seconds.
    ready_secs: f64,
    /// Process start to `/readyz` answering 200 (hashroll only), seconds.
    readyz_secs: Option<f64>,
    /// Process start until every workload carries its recorded state (hashroll only), seconds.
    recorded_secs: Option<f64>,
    /// CPU seconds at readiness.
    cpu_ready_secs: f64,
    /// CPU seconds once the initial sync (including recording) was done.
    cpu_sync_secs: f64,
    /// Usage after sync plus the idle time.
    steady: Usage,
    /// Usage at the end of the run.
    end: Usage,
    /// Reaction latency.
    latency: Option<Latency>,
    /// API cost of the single updates.
    api: Option<ApiCost>,
    /// Fan-out.
    fanout: Option<Fanout>,
}

/// One cluster run (base payloads or the larger-payload run).
#[derive(Debug, Default, Serialize)]
struct ClusterRun {
    payload_factor: usize,
    data_bytes: u64,
    populate_secs: f64,
    server_rss_after_populate: u64,
    /// Each server process (the test server, or etcd, kube-apiserver, ... of a real control plane) once
    /// populated, and at the end of the run (after both subjects).
    server_after_populate: Vec<(String, Usage)>,
    server_end: Vec<(String, Usage)>,
    hashroll: SubjectResult,
    baseline: Option<SubjectResult>,
    takeover: Option<takeover::Takeover>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match &cli.role {
        Some(Role::Serve { kubeconfig_out }) => rt.block_on(procs::serve(kubeconfig_out)),
        Some(Role::Baseline { kubeconfig }) => rt.block_on(baseline::run(kubeconfig)),
        None => rt.block_on(bench(&cli)),
    }
}

/// Starts hashroll or the baseline against `server` and waits until it is ready.
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

async fn spawn(who: Who, server: &Server, cli: &Cli) -> anyhow::Result<(Subject, Option<u16>)> {
    match who {
        Who::Hashroll => {
            let port = procs::free_port()?;
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_hashroll"));
            cmd.arg("--kubeconfig")
                .arg(&server.kubeconfig)
                .args(["--controller-namespace", "hashroll", "--debounce", "0"])
                .args(["--log-format", "json", "--log-level", "info"])
                .arg("--admin-addr")
                .arg(format!("127.0.0.1:{port}"))
                .envs(cli.hashroll_env.iter().map(|(k, v)| (k, v)));
            let s = Subject::spawn("hashroll", cmd, |line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .is_ok_and(|v| v["message"].as_str() == Some("ready: every watch has listed"))
            })?;
            Ok((s, Some(port)))
        }
        Who::Baseline => {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.arg("baseline")
                .arg("--kubeconfig")
                .arg(&server.kubeconfig);
            let s = Subject::spawn("baseline", cmd, |line| line == baseline::READY_LINE)?;
            Ok((s, None))
        }
    }
}

/// Polls `/readyz` until it answers 200; returns when.
async fn poll_readyz(port: u16) -> Instant {
    let base = format!("http://127.0.0.1:{port}");
    loop {
        if let Ok((200, _)) = procs::http_status(&base, "GET", "/readyz", None).await {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until hashroll has patched every workload once (recording its state on first sight).
async fn wait_recorded(server: &Server, workloads: usize) -> anyhow::Result<Instant> {
    const KINDS: [&str; 4] = ["deployments", "statefulsets", "daemonsets", "cronjobs"];
    // A real kube-apiserver's /metrics is ~4 MB of text: read it less often.
    let poll = if server.is_real() {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(50)
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let log = server.requests().await?;
        let patched: u64 = log
            .iter()
            .filter(|((verb, res), _)| verb == "patch" && KINDS.contains(&res.as_str()))
            .map(|(_, n)| *n)
            .sum();
        if patched as usize >= workloads {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "hashroll recorded only {patched} of {workloads} workloads within 600 s"
        );
        tokio::time::sleep(poll).await;
    }
}

/// Runs one subject through the scenario; `full` adds latency, API cost and fan-out.
async fn run_subject(
    who: Who,
    server: &Server,
    client: &kube::Client,
    watch: &mut TemplateWatch,
    plan: &Plan,
    cli: &Cli,
    full: bool,
) -> anyhow::Result<SubjectResult> {
    let name = who.name();
    server.reset_requests().await?;
    let (mut subject, admin_port) = spawn(who, server, cli).await?;
    eprintln!("bench: {name} started (pid {})", subject.pid);
    let readyz = admin_port.map(|p| tokio::spawn(poll_readyz(p)));
    let ready = subject.wait_ready(name, Duration::from_secs(600)).await?;
    let cpu_ready = subject.usage()?.cpu_secs;
    eprintln!("bench: {name} ready");
    let readyz_at = match readyz {
        Some(h) => Some(
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .context("hashroll logged ready but /readyz did not answer 200 within 30 s")??,
        ),
        None => None,
    };
    let recorded = match who {
        Who::Hashroll => Some(wait_recorded(server, plan.workloads.len()).await?),
        Who::Baseline => None,
    };
    let cpu_sync = subject.usage()?.cpu_secs;
    if recorded.is_some() {
        eprintln!("bench: {name} recorded every workload");
    }
    eprintln!("bench: {name} ready; idling {} s", cli.idle);
    tokio::time::sleep(Duration::from_secs_f64(cli.idle)).await;
    subject.check_alive(name)?;
    let steady = subject.usage()?;
    let since = |t: Instant| t.saturating_duration_since(subject.started).as_secs_f64();
    let mut r = SubjectResult {
        ready_secs: since(ready),
        readyz_secs: readyz_at.map(since),
        recorded_secs: recorded.map(since),
        cpu_ready_secs: cpu_ready,
        cpu_sync_secs: cpu_sync,
        steady,
        ..Default::default()
    };
    if full {
        // Each subject writes different content: a write identical to the last one is no change at all.
        let content_seed = plan.seed ^ ((who as u64 + 1) << 40);
        let mut targets = plan.single_use_secrets();
        targets.truncate(cli.updates);
        // A fresh watch per subject: its own list and watch requests happen before the log is reset.
        *watch = TemplateWatch::start(client.clone()).await?;
        eprintln!("bench: {name}: {} single updates", targets.len());
        let (lat, api) = measure::reaction(server, client, watch, &targets, content_seed)
            .await
            .with_context(|| format!("{name}'s last log lines:\n{}", subject.tail()))?;
        r.latency = Some(lat);
        r.api = Some(api);
        let fan = plan.workloads.len() - count_non_fanout(plan);
        eprintln!("bench: {name}: fan-out to {fan}");
        r.fanout = Some(
            measure::fanout(server, client, watch, fan, content_seed)
                .await
                .with_context(|| format!("{name}'s last log lines:\n{}", subject.tail()))?,
        );
    }
    subject.check_alive(name)?;
    r.end = subject.usage()?;
    subject.stop().await;
    Ok(r)
}

fn count_non_fanout(plan: &Plan) -> usize {
    plan.workloads
        .iter()
        .filter(|w| w.namespace != cluster::FANOUT_NS)
        .count()
}

/// Starts a server, populates it with `plan`, and runs hashroll then the baseline.
async fn run_cluster(
    plan: &Plan,
    cli: &Cli,
    dir: &std::path::Path,
    full: bool,
) -> anyhow::Result<ClusterRun> {
    let server = Server::start(cli.server, dir, &plan.payload_factor.to_string()).await?;
    let client = server.client().await?;
    let t = Instant::now();
    eprintln!(
        "bench: populating {} MiB of data, {} workloads",
        plan.data_bytes() >> 20,
        plan.workloads.len()
    );
    cluster::populate(&client, plan).await?;
    let populate_secs = t.elapsed().as_secs_f64();
    eprintln!("bench: populated in {populate_secs:.1} s");
    let mut watch = TemplateWatch::start(client.clone()).await?;
    eprintln!("bench: Deployment watch listed");
    let mut run = ClusterRun {
        payload_factor: plan.payload_factor,
        data_bytes: plan.data_bytes(),
        populate_secs,
        server_rss_after_populate: server.usage().map_or(0, |u| u.rss),
        server_after_populate: server.control_plane(),
        ..Default::default()
    };
    run.hashroll =
        run_subject(Who::Hashroll, &server, &client, &mut watch, plan, cli, full).await?;
    if full && cli.takeover {
        let idle = Duration::from_secs_f64(cli.idle.min(10.0));
        run.takeover = Some(takeover::run(&server, &client, &mut watch, plan, idle).await?);
    }
    if !cli.no_baseline {
        run.baseline =
            // The same scenario: memory, CPU, start-up, reaction, API cost and fan-out.
            Some(run_subject(Who::Baseline, &server, &client, &mut watch, plan, cli, full).await?);
    }
    drop(watch);
    run.server_end = server.control_plane();
    server.stop().await;
    Ok(run)
}

async fn bench(cli: &Cli) -> anyhow::Result<()> {
    let scale = Scale::named(&cli.scale)
        .with_context(|| format!("--scale {:?}: expected S, M or L", cli.scale))?;
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let plan = Plan::new(&scale, cli.seed, 1);
    let base = run_cluster(&plan, cli, dir.path(), true).await?;
    let bigger = if cli.payload_factor() > 1 {
        let plan = Plan::new(&scale, cli.seed, cli.payload_factor());
        Some(run_cluster(&plan, cli, dir.path(), false).await?)
    } else {
        None
    };
    let report = Report {
        scale,
        server: cli.server,
        load_average: load_average(),
        seed: cli.seed,
        idle_secs: cli.idle,
        wall_secs: started.elapsed().as_secs_f64(),
        base,
        bigger,
    };
    print!("{}", report.table());
    let path = cli.json.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("bench-results")
            .join(match cli.server {
                ServerKind::Test => format!("{}.json", scale.name),
                ServerKind::Real => format!("{}-real.json", scale.name),
            })
    });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("JSON: {}", path.display());
    Ok(())
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages, at the end of the run.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The whole result.
#[derive(Debug, Serialize)]
struct Report {
    scale: Scale,
    server: ServerKind,
    /// 1/5/15-minute load average at the end of the run (the machine is shared).
    load_average: String,
    seed: u64,
    idle_secs: f64,
    wall_secs: f64,
    base: ClusterRun,
    bigger: Option<ClusterRun>,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn secs(s: f64) -> String {
    format!("{s:.2} s")
}

fn ms(v: f64) -> String {
    format!("{v:.1} ms")
}

impl Report {
    /// The human-readable table.
    fn table(&self) -> String {
        let h = &self.base.hashroll;
        let b = self.base.baseline.as_ref();
        let s = &self.scale;
        let mut rows: Vec<[String; 4]> = Vec::new();
        let mut row = |what: &str, hv: String, bv: Option<String>, target: &str| {
            rows.push([
                what.into(),
                hv,
                bv.unwrap_or_else(|| "-".into()),
                target.into(),
            ]);
        };
        let ratio = |hv: u64, bv: Option<u64>| {
            bv.map(|bv| format!("hashroll = {:.2}x baseline", hv as f64 / bv.max(1) as f64))
        };
        row(
            "start-up: ready log line",
            secs(h.ready_secs),
            b.map(|b| secs(b.ready_secs)),
            "M <= 3 s",
        );
        row(
            "start-up: /readyz 200",
            h.readyz_secs.map_or("-".into(), secs),
            None,
            "",
        );
        row(
            "first-sight recording done",
            h.recorded_secs.map_or("-".into(), secs),
            None,
            "",
        );
        row(
            "CPU at ready",
            secs(h.cpu_ready_secs),
            b.map(|b| secs(b.cpu_ready_secs)),
            "",
        );
        row(
            "CPU initial sync (incl. recording)",
            secs(h.cpu_sync_secs),
            b.map(|b| secs(b.cpu_sync_secs)),
            "",
        );
        row(
            &format!("steady RSS (after {} s idle)", self.idle_secs),
            mib(h.steady.rss),
            b.map(|b| mib(b.steady.rss)),
            "M <= 24 MiB, L <= 64 MiB",
        );
        row(
            "  ratio",
            ratio(h.steady.rss, b.map(|b| b.steady.rss)).unwrap_or_default(),
            None,
            "",
        );
        row(
            "peak RSS (VmHWM, whole run)",
            mib(h.end.hwm),
            b.map(|b| mib(b.end.hwm)),
            "M <= 40 MiB",
        );
        row(
            "  ratio",
            ratio(h.end.hwm, b.map(|b| b.end.hwm)).unwrap_or_default(),
            None,
            "",
        );
        if let Some(l) = &h.latency {
            let bl = b.and_then(|b| b.latency.as_ref());
            row(
                &format!("reaction ({} updates) p50", l.updates),
                ms(l.p50_ms),
                bl.map(|l| ms(l.p50_ms)),
                "",
            );
            row(
                "reaction p99",
                ms(l.p99_ms),
                bl.map(|l| ms(l.p99_ms)),
                "M <= 25 ms",
            );
            row("reaction max", ms(l.max_ms), bl.map(|l| ms(l.max_ms)), "");
            row(
                "  missed / stray rolls",
                format!("{} / {}", l.missed, l.stray_rolls),
                bl.map(|l| format!("{} / {}", l.missed, l.stray_rolls)),
                "0 / 0",
            );
        }
        if let Some(a) = &h.api {
            let ba = b.and_then(|b| b.api.as_ref());
            row(
                "PATCH per rolled workload",
                format!("{:.2}", a.patches_per_roll),
                ba.map(|a| format!("{:.2}", a.patches_per_roll)),
                "1",
            );
            row(
                "LIST per change",
                format!("{:.2}", a.lists_per_change),
                ba.map(|a| format!("{:.2}", a.lists_per_change)),
                "0",
            );
            row(
                "GET per change",
                format!("{:.2}", a.gets_per_change),
                ba.map(|a| format!("{:.2}", a.gets_per_change)),
                "0",
            );
            row(
                "CREATE (Events) per change",
                format!("{:.2}", a.creates_per_change),
                ba.map(|a| format!("{:.2}", a.creates_per_change)),
                "",
            );
        }
        if let Some(f) = &h.fanout {
            let bf = b.and_then(|b| b.fanout.as_ref());
            let show =
                |f: &Fanout| format!("{} ({}/{} rolled)", secs(f.secs), f.rolled, f.workloads);
            row(
                &format!("fan-out to {}", f.workloads),
                show(f),
                bf.map(show),
                "M <= 3 s",
            );
            row(
                "  PATCH per rolled workload",
                format!("{:.2}", f.api.patches_per_roll),
                bf.map(|f| format!("{:.2}", f.api.patches_per_roll)),
                "1",
            );
        }
        if let Some(big) = &self.bigger {
            let hb = &big.hashroll;
            let bb = big.baseline.as_ref();
            let change =
                |a: u64, b: u64| format!("{:+.1}%", (b as f64 / a.max(1) as f64 - 1.0) * 100.0);
            row(
                &format!("steady RSS, payloads x{}", big.payload_factor),
                mib(hb.steady.rss),
                bb.map(|x| mib(x.steady.rss)),
                "",
            );
            row(
                &format!(
                    "  change vs x1 (data {} -> {})",
                    mib(self.base.data_bytes),
                    mib(big.data_bytes)
                ),
                change(h.steady.rss, hb.steady.rss),
                b.zip(bb).map(|(x, y)| change(x.steady.rss, y.steady.rss)),
                "<= 10%",
            );
            row(
                &format!("peak RSS, payloads x{}", big.payload_factor),
                mib(hb.end.hwm),
                bb.map(|x| mib(x.end.hwm)),
                "",
            );
            row(
                "  change vs x1",
                change(h.end.hwm, hb.end.hwm),
                b.zip(bb).map(|(x, y)| change(x.end.hwm, y.end.hwm)),
                "<= 10%",
            );
        }
        if let Some(t) = &self.base.takeover {
            row(
                "takeover (SIGKILL -> roll), cold standby",
                secs(t.cold_secs),
                None,
                "2 s lease",
            );
            row(
                "takeover (SIGKILL -> roll), warm standby",
                secs(t.warm_secs),
                None,
                "2 s lease",
            );
            row(
                "standby RSS: cold / warm (synced)",
                format!("{} / {}", mib(t.cold_standby.rss), mib(t.warm_standby.rss)),
                None,
                "",
            );
        }
        let mut out = format!(
            "\nhashroll scale benchmark, scale {} on {}: {} Secrets + {} Helm release Secrets, {} ConfigMaps, \
             {} workloads + {} fan-out Deployments, {} namespaces; {} of data; seed {}; populate {:.1} s\n\n",
            s.name,
            match self.server {
                ServerKind::Test => "the test server",
                ServerKind::Real => "a real control plane (tests/cluster, kube-apiserver v1.37.2)",
            },
            s.secrets,
            s.helm_secrets,
            s.configmaps,
            s.workloads,
            s.fanout,
            s.namespaces,
            mib(self.base.data_bytes),
            self.seed,
            self.base.populate_secs,
        );
        let widths: Vec<usize> = (0..4)
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0).max(8))
            .collect();
        let header = ["measure", "hashroll", "baseline", "target"];
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join(" | ")
                .trim_end()
                .to_string()
                + "\n"
        };
        out += &line(&header.map(String::from));
        out += &line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
        for r in &rows {
            out += &line(r);
        }
        out += &self.server_table();
        out += &format!(
            "\nwall time {:.0} s; load average at the end {}\n",
            self.wall_secs, self.load_average
        );
        out
    }

    /// Memory and CPU of the API server's processes, after populating and at the end.
    fn server_table(&self) -> String {
        let run = &self.base;
        if run.server_end.is_empty() && run.server_after_populate.is_empty() {
            return String::new();
        }
        let mut out = format!(
            "\n{} ({}):\n",
            match self.server {
                ServerKind::Test => "API server process",
                ServerKind::Real => "control plane processes",
            },
            self.server.name()
        );
        out += &format!(
            "{:<24} | {:>18} | {:>14} | {:>16} | {:>9}\n",
            "process", "RSS after populate", "RSS at the end", "peak RSS (VmHWM)", "CPU"
        );
        let mut total = (0, 0, 0, 0.0);
        for (name, end) in &run.server_end {
            let pop = run
                .server_after_populate
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, u)| u.rss);
            total = (
                total.0 + pop,
                total.1 + end.rss,
                total.2 + end.hwm,
                total.3 + end.cpu_secs,
            );
            out += &format!(
                "{:<24} | {:>18} | {:>14} | {:>16} | {:>9}\n",
                name,
                mib(pop),
                mib(end.rss),
                mib(end.hwm),
                secs(end.cpu_secs)
            );
        }
        if run.server_end.len() > 1 {
            out += &format!(
                "{:<24} | {:>18} | {:>14} | {:>16} | {:>9}\n",
                "total",
                mib(total.0),
                mib(total.1),
                mib(total.2),
                secs(total.3)
            );
        }
        out
    }
}
