//! End to end: a standby's takeover. Measured from the leader SIGKILLed to the first roll, by the new
//! leader, of a change made in the gap: a cold standby (the default) lists everything first; a warm one
//! (`--warm-standby`) has watched all along and decides at once, without listing, rolling nothing
//! spuriously.

mod common;

use std::time::{Duration, Instant};

use common::{Env, FAST_LEASE, Server, Until, e2e, env_from_secret};

const NS: &str = "standby";

/// Kills the leader, changes the Secret, and returns how long until the new leader rolled the workload.
async fn takeover(env: &Env, warm: bool) -> Duration {
    let mut flags = FAST_LEASE.to_vec();
    if warm {
        flags.push("--warm-standby");
    }
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    env.deployment(NS, "web", env_from_secret("db")).await;
    env.deployment(NS, "other", env_from_secret("db")).await;
    let leader = env.hashroll(&flags).await;
    let standby = env
        .hashroll_until(&env.kubeconfig, &flags, Until::Standby)
        .await;
    env.wait_recorded("deployments", NS, "web").await;
    env.wait_recorded("deployments", NS, "other").await;
    if warm {
        // It has listed, and holds what the leader holds.
        standby.wait_metric("hashroll_workloads", &[], 2.0).await;
    }
    let lists = |env: &Env| {
        env.test_server()
            .map(|s| s.control().request_count("list", "secrets"))
    };
    let lists_before = lists(env);
    leader.kill().await;
    let killed = Instant::now();
    env.secret(NS, "db", &[("password", "p2")]).await;
    let deadline = killed + Duration::from_secs(20);
    while !env
        .annotations("deployments", NS, "web")
        .await
        .contains_key("hashroll.dev/rolled-at")
    {
        assert!(Instant::now() < deadline, "the new leader never rolled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = killed.elapsed();
    let kind = if warm { "warm" } else { "cold" };
    eprintln!(
        "takeover ({kind} standby, {:?}): leader SIGKILLed → first roll by the new leader: {took:?}",
        env.on
    );
    env.wait_rolls("deployments", NS, "web", 1).await;
    env.wait_rolls("deployments", NS, "other", 1).await;
    env.barrier(NS).await;
    env.assert_rolls("deployments", NS, "web", 1).await;
    env.assert_rolls("deployments", NS, "other", 1).await;
    if warm && lists_before.is_some() {
        assert_eq!(
            lists(env),
            lists_before,
            "the warm standby took over without listing"
        );
    }
    drop(standby);
    took
}

e2e!(takeover_time_of_a_cold_standby);
async fn takeover_time_of_a_cold_standby(on: Server) {
    let env = Env::start(on).await;
    let took = takeover(&env, false).await;
    // The lease duration (2 s) plus a retry period, a fresh start (lists) and the roll.
    assert!(took < Duration::from_secs(6), "takeover took {took:?}");
}

e2e!(a_warm_standby_takes_over_without_listing_and_rolls_once);
async fn a_warm_standby_takes_over_without_listing_and_rolls_once(on: Server) {
    let env = Env::start(on).await;
    let took = takeover(&env, true).await;
    // Within the lease duration (2 s) plus a retry period (0.5 s) and the roll.
    assert!(took < Duration::from_millis(3500), "takeover took {took:?}");
}
