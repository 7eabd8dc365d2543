//! End to end: safe rollouts at fleet scale. `--max-rollouts-per-minute` spaces the rolls one change
//! starts across the fleet, and a roll that waits its turn goes with the content of its turn.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Server, e2e, env_from_secret};

const NS: &str = "waves";

e2e!(the_rate_limit_spaces_rolls_and_a_waiting_roll_carries_the_latest_content);
async fn the_rate_limit_spaces_rolls_and_a_waiting_roll_carries_the_latest_content(on: Server) {
    const N: usize = 5;
    // 20 a minute: one roll every 3 s.
    let spacing = Duration::from_secs(3);
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    let names: Vec<String> = (0..N).map(|i| format!("web-{i}")).collect();
    for n in &names {
        env.deployment(NS, n, env_from_secret("db")).await;
    }
    let hr = env.hashroll(&["--max-rollouts-per-minute=20"]).await;
    for n in &names {
        env.wait_recorded("deployments", NS, n).await;
    }

    env.secret(NS, "db", &[("password", "p2")]).await;
    // The first roll goes at once; the others wait for their turn.
    let first = wait_first_rolled(&env, &names).await;
    hr.wait_metric("hashroll_waiting_rolls", &[], (N - 1) as f64)
        .await;
    // Changed again while they wait: each goes once, with this content.
    env.secret(NS, "db", &[("password", "p3")]).await;

    let started = Instant::now();
    for n in &names {
        let want = if *n == first { 2 } else { 1 };
        wait_rolls_for(&env, n, want, spacing * (N as u32 + 2)).await;
    }
    assert!(
        started.elapsed() >= spacing * (N as u32 - 2),
        "{N} rolls after the first took {:?}: not held to one every {spacing:?}",
        started.elapsed()
    );
    let mut times: Vec<jiff::Timestamp> = Vec::new();
    let mut recorded = Vec::new();
    for n in &names {
        times.push(env.rolled_at("deployments", NS, n).await);
        recorded.push(env.annotations("deployments", NS, n).await["hashroll.dev/sources"].clone());
    }
    times.sort();
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unsigned_abs();
        // The limit spaces the starts by 3 s; a patch is built a few milliseconds after its start.
        assert!(
            gap >= spacing - Duration::from_millis(300),
            "rolls {gap:?} apart: {times:?}"
        );
    }
    assert!(
        recorded.iter().all(|r| *r == recorded[0]),
        "every workload rolled to the latest content: {recorded:?}"
    );
    for n in &names {
        let want = if *n == first { 2 } else { 1 };
        env.assert_rolls("deployments", NS, n, want).await;
    }
    hr.wait_metric("hashroll_waiting_rolls", &[], 0.0).await;
}

/// The one workload of `names` that rolled first (waits up to 15 s for one to roll).
async fn wait_first_rolled(env: &Env, names: &[String]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for n in names {
            if env
                .annotations("deployments", NS, n)
                .await
                .contains_key("hashroll.dev/rolled-at")
            {
                return n.clone();
            }
        }
        assert!(Instant::now() < deadline, "nothing rolled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until Deployment `name` has rolled `n` times, for at most `limit`.
async fn wait_rolls_for(env: &Env, name: &str, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let got = env.rolls("deployments", NS, name).await;
        assert!(got <= n, "{name} rolled {got} times, expected {n}");
        if got == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} rolled {got} times, expected {n} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
