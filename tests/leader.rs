//! End to end: two hashroll processes with `--leader-elect` against one API server. Only the leader
//! watches and writes; the standby takes over when the leader is killed (after the Lease expires) or
//! stops (at once: it releases the Lease); a leader that loses the Lease exits non-zero.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};

use common::{Env, FAST_LEASE, Hashroll, Server, Until, e2e, env_from_secret};

const NS: &str = "lead";

/// A long lease: a takeover well under 10 s can only come from the leader releasing it.
const SLOW: [&str; 4] = [
    "--leader-elect",
    "--leader-election-lease-duration=10s",
    "--leader-election-renew-deadline=5s",
    "--leader-election-retry-period=0.5s",
];

/// Starts a replica that finds the Lease held: it answers `/readyz` 200 `standby`.
async fn standby(env: &Env, flags: &[&str]) -> Hashroll {
    env.hashroll_until(&env.kubeconfig, flags, Until::Standby)
        .await
}

async fn lease(env: &Env) -> Lease {
    Api::<Lease>::namespaced(env.client.clone(), "hashroll")
        .get("hashroll")
        .await
        .expect("the Lease hashroll/hashroll exists")
}

/// The Lease's `holderIdentity` now.
async fn holder(env: &Env) -> Option<String> {
    lease(env).await.spec.and_then(|s| s.holder_identity)
}

/// The `hashroll_leader` gauge of one replica.
async fn leader_gauge(hr: &Hashroll) -> f64 {
    hr.metric("hashroll_leader", &[])
        .await
        .expect("hashroll_leader in /metrics")
}

/// Waits until the replica's `hashroll_leader` gauge says it leads (fails after `timeout`).
async fn wait_leading(hr: &Hashroll, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while leader_gauge(hr).await != 1.0 {
        assert!(Instant::now() < deadline, "never became leader");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The test server's count of list requests on everything hashroll watches (None on the real server:
/// the request log is the test server's).
fn lists(env: &Env) -> Option<u64> {
    let server = env.test_server()?;
    const WATCHED: [&str; 8] = [
        "secrets",
        "configmaps",
        "deployments",
        "statefulsets",
        "daemonsets",
        "cronjobs",
        "rollouts",
        "namespaces",
    ];
    Some(
        WATCHED
            .iter()
            .map(|r| server.control().request_count("list", r))
            .sum(),
    )
}

async fn setup(env: &Env) {
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.deployment(NS, "web", env_from_secret("db")).await;
}

e2e!(only_the_leader_rolls_and_a_standby_takes_over_after_the_leader_is_killed);
async fn only_the_leader_rolls_and_a_standby_takes_over_after_the_leader_is_killed(on: Server) {
    let env = Env::start(on).await;
    setup(&env).await;
    // Ready (200 `ready`, not `standby`) means it leads and every watch has listed.
    let a = env.hashroll(&FAST_LEASE).await;
    assert_eq!(leader_gauge(&a).await, 1.0);
    let a_id = holder(&env).await.expect("the leader holds the Lease");
    let lists_before_b = lists(&env);
    let b = standby(&env, &FAST_LEASE).await;
    assert_eq!(leader_gauge(&b).await, 0.0);
    // README: a standby logs `waiting to become leader` once, naming the holder; only the log says so.
    // It answers `standby` as soon as it starts waiting, before its first look at the Lease: wait for it.
    b.wait_for_log("waiting to become leader", Duration::from_secs(15))
        .await;
    let waiting = b.log_lines_with(&["waiting to become leader"]);
    assert!(waiting[0].contains(&a_id), "names the holder: {waiting:?}");
    env.wait_recorded("deployments", NS, "web").await;

    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    // Longer than the lease duration: the leader's renewals keep the standby out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
    // The standby neither leads nor watches: it holds no Lease, lists nothing, knows no object.
    assert_eq!(holder(&env).await.as_deref(), Some(a_id.as_str()));
    assert_eq!(b.readyz().await, (200, "standby".to_string()));
    assert_eq!(leader_gauge(&b).await, 0.0);
    assert_eq!(
        lists(&env),
        lists_before_b,
        "the standby lists nothing (test server)"
    );
    assert_eq!(b.metric("hashroll_sources", &[]).await, Some(0.0));
    assert_eq!(b.metric("hashroll_workloads", &[]).await, Some(0.0));
    assert_eq!(
        b.log_lines_with(&["waiting to become leader"]).len(),
        1,
        "logged once"
    );

    a.kill().await;
    let killed = Instant::now();
    env.secret(NS, "db", &[("password", "p3")]).await;
    wait_leading(&b, Duration::from_secs(10)).await;
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "took over after {took:?}: before the killed leader's Lease could expire"
    );
    assert!(
        took < Duration::from_secs(5),
        "took over after {took:?}: expected about one lease duration (2s)"
    );
    let b_id = holder(&env).await.expect("the new leader holds the Lease");
    assert_ne!(b_id, a_id, "the standby holds the Lease now");
    env.wait_rolls("deployments", NS, "web", 2).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 2).await;
    env.assert_rolled_annotations("deployments", NS, "web")
        .await;
}

e2e!(sigterm_releases_the_lease_and_the_standby_takes_over_at_once);
async fn sigterm_releases_the_lease_and_the_standby_takes_over_at_once(on: Server) {
    let env = Env::start(on).await;
    setup(&env).await;
    let a = env.hashroll(&SLOW).await;
    let a_id = holder(&env).await.expect("the leader holds the Lease");
    let b = standby(&env, &SLOW).await;
    env.wait_recorded("deployments", NS, "web").await;

    // The standby is healthy and ready (it can take over), and says it is not leading.
    assert_eq!(b.readyz().await, (200, "standby".to_string()));
    assert_eq!(b.get("/healthz").await.0, 200);
    assert_eq!(a.readyz().await, (200, "ready".to_string()));
    assert_eq!(leader_gauge(&a).await, 1.0);
    assert_eq!(leader_gauge(&b).await, 0.0);

    let (status, _) = a.stop().await;
    assert!(status.success(), "a leader exits 0 on SIGTERM: {status}");
    let stopped = Instant::now();
    wait_leading(&b, Duration::from_secs(15)).await;
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "took over {took:?} after SIGTERM; the lease duration is 10s, so it was not released"
    );
    let spec = lease(&env).await.spec.unwrap();
    let b_id = spec
        .holder_identity
        .expect("the new leader holds the Lease");
    assert_ne!(b_id, a_id, "the standby holds the Lease now");
    assert_eq!(spec.lease_transitions, Some(1));

    b.wait_until(Until::Ready).await;
    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
}

e2e!(a_leader_that_loses_the_lease_stops_and_exits_non_zero);
async fn a_leader_that_loses_the_lease_stops_and_exits_non_zero(on: Server) {
    let env = Env::start(on).await;
    setup(&env).await;
    let mut a = env.hashroll(&FAST_LEASE).await;
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
    // README: it logs `lost leadership`; beyond the exit status, only the log says why it stopped.
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
