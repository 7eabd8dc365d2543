//! End to end: safe rollouts at fleet scale. `--max-rollouts-per-minute` spaces the rolls one change
//! starts across the fleet, and a roll that waits its turn goes with the content of its turn;
//! `--max-concurrent-rollouts` rolls in health-gated waves, ordered by `hashroll.dev/rollout-wave`, and a
//! rollout that fails halts the rest of its change.

mod common;

use std::time::{Duration, Instant};

use common::{Env, FAST_LEASE, Server, e2e, env_from_secret};
use kube_testserver::WorkloadSim;

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

/// Deployments of `names` whose controller has not caught up with their latest spec, or not brought
/// every replica up to it: rollouts in progress, as a user sees them.
async fn in_progress(env: &Env, names: &[String]) -> Vec<String> {
    let mut busy = Vec::new();
    for n in names {
        let d = env.get("deployments", NS, n).await;
        let generation = d.metadata.generation.unwrap_or(0);
        let status = &d.data["status"];
        let observed = status["observedGeneration"].as_i64().unwrap_or(0);
        let updated = status["updatedReplicas"].as_i64().unwrap_or(0);
        let available = status["availableReplicas"].as_i64().unwrap_or(0);
        if observed < generation || updated < 1 || available < 1 {
            busy.push(n.clone());
        }
    }
    busy
}

e2e!(
    waves_of_two_over_ten_workloads_never_have_more_than_two_in_progress,
    test_server_only = "its workload simulator finishes each rollout a set time after the roll"
);
async fn waves_of_two_over_ten_workloads_never_have_more_than_two_in_progress(on: Server) {
    let env = Env::start(on).await;
    env.control()
        .set_workload_controller(WorkloadSim::Delay(Duration::from_millis(700)));
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    let names: Vec<String> = (0..10).map(|i| format!("web-{i}")).collect();
    for n in &names {
        env.deployment(NS, n, env_from_secret("db")).await;
    }
    let hr = env.hashroll(&["--max-concurrent-rollouts=2"]).await;
    for n in &names {
        env.wait_recorded("deployments", NS, n).await;
    }
    // Every Deployment rolled out as created, before the change.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_progress(&env, &names).await.is_empty() {
        assert!(Instant::now() < deadline, "never settled after creation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.secret(NS, "db", &[("password", "p2")]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut most = 0;
    loop {
        let busy = in_progress(&env, &names).await;
        assert!(
            busy.len() <= 2,
            "more than 2 rollouts in progress: {busy:?}"
        );
        most = most.max(busy.len());
        let mut rolled = 0;
        for n in &names {
            rolled += env.rolls("deployments", NS, n).await;
        }
        assert!(rolled <= names.len(), "{rolled} rolls");
        if rolled == names.len() && busy.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{rolled} of 10 rolled (timed out)"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(most, 2, "two at a time");
    hr.wait_metric("hashroll_rollouts_in_progress", &[], 0.0)
        .await;
    hr.wait_metric("hashroll_waiting_rolls", &[], 0.0).await;
}

e2e!(
    a_stuck_canary_wave_halts_the_rest_until_the_source_changes_again,
    test_server_only =
        "its workload simulator leaves a rollout stuck, then lets the next ones finish"
);
async fn a_stuck_canary_wave_halts_the_rest_until_the_source_changes_again(on: Server) {
    let env = Env::start(on).await;
    env.control()
        .set_workload_controller(WorkloadSim::Immediate);
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    let opted = |wave: Option<&'static str>| {
        let mut a = vec![("hashroll.dev/reload", "true")];
        if let Some(w) = wave {
            a.push(("hashroll.dev/rollout-wave", w));
        }
        a
    };
    env.workload(
        "deployments",
        NS,
        "canary",
        &opted(Some("0")),
        env_from_secret("db"),
    )
    .await;
    env.workload(
        "deployments",
        NS,
        "early",
        &opted(Some("1")),
        env_from_secret("db"),
    )
    .await;
    let rest: Vec<String> = (0..3).map(|i| format!("rest-{i}")).collect();
    for n in &rest {
        env.workload("deployments", NS, n, &opted(None), env_from_secret("db"))
            .await;
    }
    let hr = env
        .hashroll(&["--max-concurrent-rollouts=3", "--rollout-timeout=2s"])
        .await;
    for n in ["canary", "early"]
        .iter()
        .map(|s| s.to_string())
        .chain(rest.clone())
    {
        env.wait_recorded("deployments", NS, &n).await;
    }

    // The canary wave rolls first, and its rollout never finishes.
    env.control().set_workload_controller(WorkloadSim::Never);
    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "canary", 1).await;
    let events = env.wait_event(NS, "canary", "RolloutFailed").await;
    assert_eq!(events[0].0, "Warning");
    let note = &events[0].2;
    assert!(note.contains("--rollout-timeout"), "{note}");
    assert!(note.contains("holding back 4 roll(s)"), "{note}");
    for n in ["early", "rest-0"] {
        assert!(
            note.contains(&format!("Deployment {NS}/{n}")),
            "names {n}: {note}"
        );
    }
    let on_source = env.wait_event(NS, "db", "RolloutHalted").await;
    assert_eq!(on_source[0].0, "Warning");
    let said = &on_source[0].2;
    assert!(
        said.contains(&format!("Deployment {NS}/canary")) && said.contains("4 roll(s)"),
        "{said}"
    );
    hr.wait_metric(
        "hashroll_rollout_failures_total",
        &[("reason", "timeout")],
        1.0,
    )
    .await;
    hr.wait_metric("hashroll_halted_rolls", &[], 4.0).await;
    let marked = env.annotations("deployments", NS, "canary").await;
    let mark = &marked["hashroll.dev/rollout-failed"];
    assert!(
        mark.starts_with(&marked["hashroll.dev/hash"]) && mark.contains("secret/db"),
        "the halt is kept on the workload, by stamp and digest: {mark:?}"
    );
    assert!(!mark.contains("p2"));
    // Held: the others do not roll, even with a working controller, nor after a restart.
    env.control()
        .set_workload_controller(WorkloadSim::Immediate);
    drop(hr);
    let hr = env
        .hashroll(&["--max-concurrent-rollouts=3", "--rollout-timeout=2s"])
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in ["early"].iter().map(|s| s.to_string()).chain(rest.clone()) {
        env.assert_rolls("deployments", NS, &n, 0).await;
    }
    hr.wait_metric("hashroll_halted_rolls", &[], 4.0).await;

    // A later change: what is still behind rolls, wave by wave, and the canary with it.
    env.secret(NS, "db", &[("password", "p3")]).await;
    env.wait_rolls("deployments", NS, "canary", 2).await;
    for n in ["early"].iter().map(|s| s.to_string()).chain(rest.clone()) {
        env.wait_rolls("deployments", NS, &n, 1).await;
    }
    let canary_at = env.rolled_at("deployments", NS, "canary").await;
    let early_at = env.rolled_at("deployments", NS, "early").await;
    assert!(canary_at < early_at, "wave 0 before wave 1");
    for n in &rest {
        assert!(
            early_at < env.rolled_at("deployments", NS, n).await,
            "wave 1 before the last"
        );
    }
    hr.wait_metric("hashroll_halted_rolls", &[], 0.0).await;
}

e2e!(
    a_leader_killed_in_the_middle_of_the_waves_is_finished_by_the_new_one_rolling_nothing_twice,
    test_server_only = "its workload simulator keeps each rollout in progress for a set time"
);
async fn a_leader_killed_in_the_middle_of_the_waves_is_finished_by_the_new_one_rolling_nothing_twice(
    on: Server,
) {
    let env = Env::start(on).await;
    env.control()
        .set_workload_controller(WorkloadSim::Delay(Duration::from_millis(1500)));
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    let names: Vec<String> = (0..6).map(|i| format!("web-{i}")).collect();
    for n in &names {
        env.deployment(NS, n, env_from_secret("db")).await;
    }
    let mut flags = FAST_LEASE.to_vec();
    flags.push("--max-concurrent-rollouts=2");
    let leader = env.hashroll(&flags).await;
    let standby = env
        .hashroll_until(&env.kubeconfig, &flags, common::Until::Standby)
        .await;
    for n in &names {
        env.wait_recorded("deployments", NS, n).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_progress(&env, &names).await.is_empty() {
        assert!(Instant::now() < deadline, "never settled after creation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    env.secret(NS, "db", &[("password", "p2")]).await;
    // The first wave is rolling out: kill the leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_progress(&env, &names).await.len() < 2 {
        assert!(Instant::now() < deadline, "the first wave never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    leader.kill().await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let busy = in_progress(&env, &names).await;
        assert!(
            busy.len() <= 2,
            "more than 2 rollouts in progress: {busy:?}"
        );
        let mut rolled = 0;
        for n in &names {
            let r = env.rolls("deployments", NS, n).await;
            assert!(r <= 1, "{n} rolled {r} times");
            rolled += r;
        }
        if rolled == names.len() && busy.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{rolled} of 6 rolled (timed out)"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    standby.wait_metric("hashroll_leader", &[], 1.0).await;
    standby
        .wait_metric("hashroll_rollouts_in_progress", &[], 0.0)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in &names {
        env.assert_rolls("deployments", NS, n, 1).await;
    }
}

e2e!(a_deployment_past_its_progress_deadline_halts_the_waves_of_its_change);
async fn a_deployment_past_its_progress_deadline_halts_the_waves_of_its_change(on: Server) {
    use kube::api::{Patch, PatchParams, PostParams};
    use serde_json::json;
    const LABEL: &str = "hashroll-test/canary-node";
    let env = Env::start(on).await;
    if on == Server::Test {
        env.control()
            .set_workload_controller(WorkloadSim::Immediate);
    }
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(env.client.clone());
    let label_node = |value: Option<&str>| {
        let nodes = nodes.clone();
        let patch = json!({"metadata": {"labels": {LABEL: value}}});
        async move {
            if on == Server::Real {
                nodes
                    .patch(
                        "kwok-node-0",
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .expect("label the kwok Node");
            }
        }
    };
    label_node(Some("yes")).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "p1")]).await;
    // The canary: wave 0, its pods only on the labelled Node, a progress deadline of 3 s.
    let canary: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "canary", "namespace": NS, "annotations": {
            "hashroll.dev/reload": "true", "hashroll.dev/rollout-wave": "0"}},
        "spec": {"replicas": 1, "progressDeadlineSeconds": 3,
            "selector": {"matchLabels": {"app": "canary"}},
            "template": {"metadata": {"labels": {"app": "canary"}}, "spec": {
                "nodeSelector": {LABEL: "yes"},
                "containers": [{"name": "app", "image": "app:1",
                    "envFrom": [{"secretRef": {"name": "db"}}]}]}}},
    }))
    .unwrap();
    env.dynamic("deployments", NS)
        .create(&PostParams::default(), &canary)
        .await
        .expect("create the canary");
    env.wait_controller_saw("deployments", NS, "canary").await;
    let rest: Vec<String> = (0..3).map(|i| format!("rest-{i}")).collect();
    for n in &rest {
        env.deployment(NS, n, env_from_secret("db")).await;
    }
    let mut all = rest.clone();
    all.push("canary".into());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !in_progress(&env, &all).await.is_empty() {
        assert!(Instant::now() < deadline, "never available after creation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hr = env
        .hashroll(&["--max-concurrent-rollouts=2", "--rollout-timeout=5m"])
        .await;
    for n in &all {
        env.wait_recorded("deployments", NS, n).await;
    }

    // A bad change: the canary's new pods can never be scheduled.
    label_node(None).await;
    if on == Server::Test {
        env.control().set_workload_controller(WorkloadSim::Off);
    }
    env.secret(NS, "db", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "canary", 1).await;
    if on == Server::Test {
        // What the Deployment controller writes once the deadline has passed.
        let d = env.get("deployments", NS, "canary").await;
        let status = json!({"status": {"observedGeneration": d.metadata.generation,
            "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded"}]}});
        env.dynamic("deployments", NS)
            .patch_status("canary", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("patch the canary's status");
    }
    let events = env.wait_event(NS, "canary", "RolloutFailed").await;
    assert!(events[0].2.contains("progress deadline"), "{events:?}");
    assert!(events[0].2.contains("holding back 3 roll(s)"), "{events:?}");
    env.wait_event(NS, "db", "RolloutHalted").await;
    hr.wait_metric(
        "hashroll_rollout_failures_total",
        &[("reason", "failed")],
        1.0,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in &rest {
        env.assert_rolls("deployments", NS, n, 0).await;
    }
    label_node(Some("yes")).await;
    if on == Server::Test {
        env.control()
            .set_workload_controller(WorkloadSim::Immediate);
    }
    // Fixed by a new value: the rest rolls.
    env.secret(NS, "db", &[("password", "p3")]).await;
    for n in &rest {
        env.wait_rolls("deployments", NS, n, 1).await;
    }
    label_node(None).await;
}
