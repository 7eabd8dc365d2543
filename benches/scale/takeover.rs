//! `--takeover`: how long a standby takes to act after the leader dies, and what a standby costs. A
//! leader and a standby run with `--leader-elect` (a 2 s lease); the leader is SIGKILLed, a Secret used by
//! one Deployment changes at once, and the time to that Deployment's roll (seen on the bench's watch) is
//! the takeover. Done with a cold standby (the default: it lists everything once leading), then with a
//! warm one (`--warm-standby`: it has watched all along), whose memory once synced is the standby's cost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::process::Command;

use crate::cluster::{Plan, Rng};
use crate::measure::{TemplateWatch, touch_secret};
use crate::procs::{Server, Subject, Usage};

const LEASE: [&str; 4] = [
    "--leader-elect",
    "--leader-election-lease-duration=2s",
    "--leader-election-renew-deadline=1.5s",
    "--leader-election-retry-period=0.5s",
];

/// The takeover figures.
#[derive(Debug, Default, Serialize)]
pub struct Takeover {
    /// Leader SIGKILLed → the first roll by the new leader of a change made in the gap.
    pub cold_secs: f64,
    pub warm_secs: f64,
    /// Each standby's usage while it waits (the warm one once it has listed everything).
    pub cold_standby: Usage,
    pub warm_standby: Usage,
}

fn spawn(server: &Server, warm: bool, ready_message: &'static str) -> anyhow::Result<Subject> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hashroll"));
    cmd.arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .args(["--controller-namespace", "hashroll", "--debounce", "0"])
        .args([
            "--log-format",
            "json",
            "--log-level",
            "info",
            "--admin-addr",
            "off",
        ])
        .args(LEASE);
    if warm {
        cmd.arg("--warm-standby");
    }
    Subject::spawn("hashroll", cmd, move |line| {
        serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|v| v["message"].as_str() == Some(ready_message))
    })
}

/// Kills `leader`, changes the Secret of `target` at once, and times the roll.
async fn kill_and_time(
    leader: Subject,
    client: &kube::Client,
    watch: &mut TemplateWatch,
    target: &(String, String, String),
    rng: &mut Rng,
) -> anyhow::Result<f64> {
    let (ns, secret, deployment) = target;
    watch.drain();
    leader.stop().await;
    let killed = Instant::now();
    touch_secret(client, rng, ns, secret).await?;
    let want = HashSet::from([format!("{ns}/{deployment}")]);
    let (at, missing, _) = watch.wait_for(want, Duration::from_secs(120)).await;
    anyhow::ensure!(
        missing == 0,
        "the new leader never rolled {ns}/{deployment}"
    );
    let at = at.expect("rolled");
    Ok(at.saturating_duration_since(killed).as_secs_f64())
}

pub async fn run(
    server: &Server,
    client: &kube::Client,
    watch: &mut TemplateWatch,
    plan: &Plan,
    idle: Duration,
) -> anyhow::Result<Takeover> {
    let targets = plan.single_use_secrets();
    anyhow::ensure!(targets.len() >= 2, "two single-use Secrets needed");
    let mut rng = Rng::new(plan.seed ^ 0x7A4E);
    let mut r = Takeover::default();

    let mut leader = spawn(server, false, "ready: every watch has listed")?;
    leader
        .wait_ready("leader", Duration::from_secs(600))
        .await?;
    let mut cold = spawn(server, false, "waiting to become leader")?;
    cold.wait_ready("cold standby", Duration::from_secs(60))
        .await?;
    tokio::time::sleep(idle).await;
    r.cold_standby = cold.usage()?;
    r.cold_secs = kill_and_time(leader, client, watch, &targets[0], &mut rng).await?;
    eprintln!("bench: takeover by a cold standby: {:.2} s", r.cold_secs);

    // The cold standby leads now; a warm one waits behind it.
    let mut warm = spawn(server, true, "ready: every watch has listed")?;
    warm.wait_ready("warm standby", Duration::from_secs(600))
        .await?;
    tokio::time::sleep(idle).await;
    r.warm_standby = warm.usage()?;
    r.warm_secs = kill_and_time(cold, client, watch, &targets[1], &mut rng).await?;
    eprintln!("bench: takeover by a warm standby: {:.2} s", r.warm_secs);
    warm.stop().await;
    Ok(r)
}
