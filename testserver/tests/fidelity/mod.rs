//! Which API server the fidelity suites (`kube_client.rs`, `kubectl.rs`) run against.
//!
//! By default every test starts its own `kube-testserver`. With `KUBE_TESTSERVER_FIDELITY=real` the same
//! tests run against a real control plane instead (kube-apiserver v1.37.2 with etcd, controller-manager,
//! scheduler and kwok: `tests/cluster/up`), so that a check passing on both servers is a check the test
//! server gets right:
//!
//! * one cluster per test binary, started by the first test that needs it (`tests/cluster/up` into a
//!   temporary directory) and stopped when the binary exits: by an `atexit` hook when it ends normally
//!   (all tests done, passed or failed), and by a guard process that waits for the binary's end when it
//!   is killed. No process of the cluster outlives the run.
//! * `KUBE_TESTSERVER_KUBECONFIG=PATH` (with `=real`) uses an already running cluster instead: nothing is
//!   started or stopped.
//! * every test works in a namespace of its own (`unique_namespace`), created by the test; the cluster is
//!   thrown away at the end, so namespaces are not deleted.
//! * tests that need what only the test server has (fault injection, restarts, compaction, the request
//!   log, the rollout record, its own options) pass without running and print why ([`test_server_only`]).

#![allow(dead_code)] // each suite uses part of this module

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The environment variable that selects the server.
pub const MODE_VAR: &str = "KUBE_TESTSERVER_FIDELITY";
/// The environment variable naming the kubeconfig of an already running cluster.
pub const KUBECONFIG_VAR: &str = "KUBE_TESTSERVER_KUBECONFIG";

/// True when the suites run against a real kube-apiserver.
pub fn real() -> bool {
    match std::env::var(MODE_VAR).as_deref() {
        Ok("real") => true,
        Ok("" | "testserver") | Err(_) => false,
        Ok(other) => panic!("{MODE_VAR}={other:?}: expected \"real\" or \"testserver\""),
    }
}

/// On the real server: prints why the calling test does not run there and returns true (the test then
/// returns, passing). On the test server: false.
pub fn test_server_only(reason: &str) -> bool {
    if real() {
        let test = std::thread::current().name().unwrap_or("?").to_string();
        // Straight to the process's stderr, past libtest's capture: the run shows what it did not check.
        let _ = writeln!(std::io::stderr(), "{test}: test server only ({reason})");
    }
    real()
}

/// A real cluster: its admin kubeconfig, and what it takes to stop it when we started it.
pub struct RealCluster {
    /// Admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// The directory `tests/cluster/up` ran in and the guard process, when this binary started it.
    started: Mutex<Option<(PathBuf, Child)>>,
}

static REAL: OnceLock<RealCluster> = OnceLock::new();

/// The repository root (`tests/cluster` lives there).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testserver/ is inside the repository")
        .to_path_buf()
}

/// The real cluster of this test binary, started on first use.
pub fn real_cluster() -> &'static RealCluster {
    REAL.get_or_init(|| {
        if let Some(kc) = std::env::var_os(KUBECONFIG_VAR) {
            return RealCluster {
                kubeconfig: PathBuf::from(kc),
                started: Mutex::new(None),
            };
        }
        let root = repo_root();
        let dir = std::env::temp_dir().join(format!("fidelity-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the cluster directory");
        // The guard: its own process group (a Ctrl-C to the test does not reach it), reading its stdin
        // until this process ends, however it ends, then stopping the cluster. Started before `up`, so
        // that even a half-started cluster is stopped.
        let guard = Command::new("sh")
            .args(["-c", r#"read -r _; "$0" "$1" >/dev/null 2>&1; rm -rf "$1""#])
            .arg(root.join("tests/cluster/down"))
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting the cluster's guard process");
        let cluster = RealCluster {
            kubeconfig: dir.join("kubeconfig"),
            started: Mutex::new(Some((dir.clone(), guard))),
        };
        at_exit();
        eprintln!(
            "fidelity: starting a real cluster (tests/cluster/up {})",
            dir.display()
        );
        let out = Command::new(root.join("tests/cluster/up"))
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("running tests/cluster/up");
        if !out.status.success() {
            cluster.stop();
            panic!(
                "tests/cluster/up {} failed ({}):\n{}{}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprint!("fidelity: {}", String::from_utf8_lossy(&out.stdout));
        cluster
    })
}

impl RealCluster {
    /// Stops the cluster if this binary started it (`tests/cluster/down`, waited for) and removes its
    /// directory. Never panics: it runs inside `atexit`.
    fn stop(&self) {
        let Some((dir, mut guard)) = self.started.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        let _ = Command::new(repo_root().join("tests/cluster/down"))
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        let _ = guard.kill();
        let _ = guard.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

extern "C" fn stop_real_cluster() {
    if let Some(c) = REAL.get() {
        c.stop();
    }
}

/// Registers [`stop_real_cluster`] to run when the test binary exits. libtest's `main` returns (or calls
/// `std::process::exit`) once every test has run, and both run the C library's exit handlers; Rust has
/// no safe way to hook that, hence the one `unsafe` call.
#[allow(unsafe_code)]
fn at_exit() {
    // SAFETY: `atexit` only records a function pointer; the handler touches nothing that is torn down
    // before exit handlers run (a `OnceLock` static and child processes) and never unwinds.
    let rc = unsafe { libc::atexit(stop_real_cluster) };
    assert_eq!(rc, 0, "atexit failed");
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A namespace name of its own for the calling test on the shared real cluster: the test's name
/// (libtest names each test's thread after it), shortened, plus a suffix unique to this process.
pub fn unique_namespace() -> String {
    let test = std::thread::current()
        .name()
        .unwrap_or("test")
        .rsplit("::")
        .next()
        .unwrap_or("test")
        .replace('_', "-");
    let mut short: String = test.chars().take(40).collect();
    while short.ends_with('-') {
        short.pop();
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{short}-{:x}{:x}-{}",
        std::process::id(),
        nanos & 0xfff,
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}
