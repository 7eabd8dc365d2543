//! End to end: two hashroll processes with `--leader-elect` against one API server. Only the leader
//! watches and writes; the standby takes over when the leader is killed (after the Lease expires) or
//! stops (at once: it releases the Lease); a leader that loses the Lease exits non-zero.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Env, Hashroll, env_from_secret};

const NS: &str = "lead";

/// Short timings so a takeover after a crash takes about two seconds.
const FAST: [&str; 4] = [
    "--leader-elect",
    "--leader-election-lease-duration=2s",
    "--leader-election-renew-deadline=1.5s",
    "--leader-election-retry-period=0.5s",
];

/// A long lease: a takeover well under 10 s can only come from the leader releasing it.
const SLOW: [&str; 4] = [
    "--leader-elect",
    "--leader-election-lease-duration=10s",
    "--leader-election-renew-deadline=5s",
    "--leader-election-retry-period=0.5s",
];

async fn standby(env: &Env, flags: &[&str]) -> Hashroll {
    env.hashroll_until(&env.kubeconfig, flags, "waiting to become leader")
        .await
}

/// The `identity` field of the first log line containing `needle`.
fn identity_in(hr: &Hashroll, needle: &str) -> String {
    hr.log_lines_with(&[needle])
        .iter()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["identity"].as_str().map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no {needle:?} line with an identity:\n{}", hr.logs()))
}

async fn lease(env: &Env) -> Lease {
    Api::<Lease>::namespaced(env.client.clone(), "hashroll")
        .get("hashroll")
        .await
        .expect("the Lease hashroll/hashroll exists")
}

async fn setup(env: &Env) {
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.deployment(NS, "web", env_from_secret("db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_rolls_and_a_standby_takes_over_after_the_leader_is_killed() {
    let env = Env::start().await;
    setup(&env).await;
    let a = env.hashroll(&FAST).await;
    let a_id = identity_in(&a, "became leader");
    let b = standby(&env, &FAST).await;
    let waiting = b.log_lines_with(&["waiting to become leader"]);
    assert!(waiting[0].contains(&a_id), "names the holder: {waiting:?}");
    env.wait_recorded("deployments", NS, "web").await;

    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    // Longer than the lease duration: the leader's renewals keep the standby out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.assert_rolls("deployments", NS, "web", 1);
    assert!(
        b.log_lines_with(&["hashroll started"]).is_empty()
            && b.log_lines_with(&["became leader"]).is_empty(),
        "the standby neither leads nor watches:\n{}",
        b.logs()
    );
    assert_eq!(
        b.log_lines_with(&["waiting to become leader"]).len(),
        1,
        "logged once"
    );

    a.kill().await;
    let killed = Instant::now();
    env.secret(NS, "db", &[("password", "p3")]).await;
    b.wait_for_log("became leader", Duration::from_secs(10))
        .await;
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "took over after {took:?}: before the killed leader's Lease could expire"
    );
    assert!(
        took < Duration::from_secs(5),
        "took over after {took:?}: expected about one lease duration (2s)"
    );
    env.wait_rolls("deployments", NS, "web", 2).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 2);
    env.assert_rolled_annotations("deployments", NS, "web")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_and_the_standby_takes_over_at_once() {
    let env = Env::start().await;
    setup(&env).await;
    let admin = "--admin-addr=127.0.0.1:0";
    let a = env.hashroll(&[SLOW.as_slice(), &[admin]].concat()).await;
    let b = env
        .hashroll_until(
            &env.kubeconfig,
            &[SLOW.as_slice(), &[admin]].concat(),
            "waiting to become leader",
        )
        .await;
    let b_id = identity_in(&b, "waiting to become leader");
    env.wait_recorded("deployments", NS, "web").await;

    // The standby is healthy and ready (it can take over), and says it is not leading.
    let (a_addr, b_addr) = (admin_addr(&a), admin_addr(&b));
    assert_eq!(get(&b_addr, "/readyz").await, (200, "standby".to_string()));
    assert_eq!(get(&b_addr, "/healthz").await.0, 200);
    assert_eq!(get(&a_addr, "/readyz").await, (200, "ready".to_string()));
    assert_eq!(leader_metric(&a_addr).await, 1);
    assert_eq!(leader_metric(&b_addr).await, 0);

    let (status, _) = a.stop().await;
    assert!(status.success(), "a leader exits 0 on SIGTERM: {status}");
    let stopped = Instant::now();
    b.wait_for_log("became leader", Duration::from_secs(15))
        .await;
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "took over {took:?} after SIGTERM; the lease duration is 10s, so it was not released"
    );
    let spec = lease(&env).await.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(b_id.as_str()));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(leader_metric(&b_addr).await, 1);

    b.wait_for_log("ready: every watch has listed", Duration::from_secs(10))
        .await;
    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_the_lease_stops_and_exits_non_zero() {
    let env = Env::start().await;
    setup(&env).await;
    let mut a = env.hashroll(&FAST).await;
    env.wait_recorded("deployments", NS, "web").await;

    // Another holder writes the Lease (as a replica that judged it expired would).
    let api = Api::<Lease>::namespaced(env.client.clone(), "hashroll");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut l = lease(&env).await;
        let spec = l.spec.as_mut().unwrap();
        spec.holder_identity = Some("intruder".into());
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match api.replace("hashroll", &PostParams::default(), &l).await {
            Ok(_) => break,
            // The leader renewed between our read and write.
            Err(kube::Error::Api(s)) if s.code == 409 && Instant::now() < deadline => continue,
            Err(e) => panic!("steal the Lease: {e}"),
        }
    }
    let status = a.wait_exit(Duration::from_secs(5)).await;
    assert!(!status.success(), "exits non-zero: {status}");
    assert_eq!(
        a.log_lines_with(&["lost leadership; stopping at once", "intruder"])
            .len(),
        1,
        "{}",
        a.logs()
    );
    assert_eq!(
        lease(&env).await.spec.unwrap().holder_identity.as_deref(),
        Some("intruder"),
        "a leader that lost the Lease does not release it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_timings_exit_2_naming_the_flags() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hashroll"))
        .args([
            "--leader-elect",
            "--leader-election-lease-duration=2s",
            "--leader-election-renew-deadline=3s",
        ])
        .output()
        .await
        .expect("hashroll runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--leader-election-lease-duration")
            && stderr.contains("--leader-election-renew-deadline"),
        "{stderr}"
    );
}

fn admin_addr(hr: &Hashroll) -> String {
    hr.log_lines_with(&["admin server listening"])
        .iter()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["addr"].as_str().map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no admin address in the log:\n{}", hr.logs()))
}

/// GET `path` from the admin server: (status, body).
async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the admin server");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    conn.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

async fn leader_metric(addr: &str) -> i64 {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("hashroll_leader ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no hashroll_leader in /metrics:\n{body}"))
}
