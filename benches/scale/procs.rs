//! Child processes (test server, hashroll, baseline), `/proc` sampling and the `serve` subcommand.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Linux reports utime/stime in USER_HZ ticks, which is 100 on every architecture's ABI.
const TICKS_PER_SEC: f64 = 100.0;

/// Memory and CPU of a process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Usage {
    /// Resident set size now, bytes.
    pub rss: u64,
    /// Peak resident set size (VmHWM), bytes.
    pub hwm: u64,
    /// User plus system CPU time, seconds.
    pub cpu_secs: f64,
}

/// Reads the current usage of `pid`.
pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |field: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .with_context(|| format!("/proc/{pid}/status has no {field}"))?;
        let n: u64 = line[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("/proc/{pid}/status: unreadable {field} {line:?}"))?;
        Ok(n * 1024)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces; the fields after its closing parenthesis start at field 3.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("/proc/{pid}/stat is malformed"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat: no field {}", i + 3))
    };
    // utime is field 14 and stime field 15 (1-based), i.e. 11 and 12 after the command name.
    let ticks = tick(11)? + tick(12)?;
    Ok(Usage {
        rss: kib("VmRSS:")?,
        hwm: kib("VmHWM:")?,
        cpu_secs: ticks as f64 / TICKS_PER_SEC,
    })
}

/// A child process whose stderr lines are scanned for a readiness line.
pub struct Subject {
    /// The process.
    pub child: Child,
    /// Its pid.
    pub pid: u32,
    /// When it was spawned.
    pub started: Instant,
    ready: watch::Receiver<Option<Instant>>,
    /// The last stderr lines, for error messages.
    tail: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl Subject {
    /// Spawns `cmd` and watches its stderr for a line on which `is_ready` is true.
    pub fn spawn(
        what: &str,
        mut cmd: Command,
        is_ready: impl Fn(&str) -> bool + Send + 'static,
    ) -> anyhow::Result<Subject> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let pid = child.id().context("the child has a pid")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let (tx, rx) = watch::channel(None);
        let tail = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let tail2 = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.borrow().is_none() && is_ready(&line) {
                    let _ = tx.send(Some(Instant::now()));
                }
                let mut t = tail2.lock().unwrap();
                if t.len() == 40 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        Ok(Subject {
            child,
            pid,
            started,
            ready: rx,
            tail,
        })
    }

    /// Waits for the readiness line; errors if the process exits first or `timeout` passes.
    pub async fn wait_ready(&mut self, what: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(t) = *self.ready.borrow() {
                return Ok(t);
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "{what} exited ({status}) before ready; last log lines:\n{}",
                    self.tail()
                );
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{what} not ready after {timeout:?}; last log lines:\n{}",
                    self.tail()
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), self.ready.changed()).await;
        }
    }

    /// The last lines the process wrote to stderr.
    pub fn tail(&self) -> String {
        let t = self.tail.lock().unwrap();
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self, what: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("{what} exited ({status}); last log lines:\n{}", self.tail());
        }
        Ok(())
    }

    /// Current usage.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        usage(self.pid)
    }

    /// Kills the process and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The API server the bench runs against.
pub struct Server {
    backend: Backend,
    /// Admin kubeconfig (HTTPS) for hashroll and the baseline.
    pub kubeconfig: PathBuf,
    /// Real server: the request counts at the last [`Server::reset_requests`] (its counters only grow).
    counts_at_reset: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>,
}

enum Backend {
    /// The test API server as a child (`<bench> serve`), with its plain-HTTP base URL.
    Test { child: Child, url: String },
    /// A real control plane (`tests/cluster/up`) and a client of the bench's own for its `/metrics`.
    Real {
        cluster: crate::real::RealCluster,
        client: kube::Client,
    },
}

impl Server {
    /// Starts the server of `kind`: the test server writes its kubeconfig to `dir/kubeconfig-<tag>`; a real
    /// cluster runs in `dir/cluster-<tag>`.
    pub async fn start(kind: crate::ServerKind, dir: &Path, tag: &str) -> anyhow::Result<Server> {
        match kind {
            crate::ServerKind::Test => {
                Server::start_test(&dir.join(format!("kubeconfig-{tag}"))).await
            }
            crate::ServerKind::Real => {
                let dir = dir.join(format!("cluster-{tag}"));
                let cluster =
                    tokio::task::spawn_blocking(move || crate::real::RealCluster::start(&dir))
                        .await??;
                let kubeconfig = cluster.kubeconfig();
                let client = kubeconfig_client(&kubeconfig).await?;
                Ok(Server {
                    backend: Backend::Real { cluster, client },
                    kubeconfig,
                    counts_at_reset: Default::default(),
                })
            }
        }
    }

    /// True for a real control plane.
    pub fn is_real(&self) -> bool {
        matches!(self.backend, Backend::Real { .. })
    }

    /// Starts `<this binary> serve`, writing its kubeconfig to `kubeconfig`.
    async fn start_test(kubeconfig: &Path) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--kubeconfig-out")
            .arg(kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the test API server process")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the test API server did not start within 30 s")??
            .context("the test API server exited before listening")?;
        let url = line
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line from the test API server: {line:?}"))?
            .to_string();
        Ok(Server {
            backend: Backend::Test { child, url },
            kubeconfig: kubeconfig.to_path_buf(),
            counts_at_reset: Default::default(),
        })
    }

    /// A kube client for the admin user: over plain HTTP to the test server, with the admin kubeconfig
    /// to a real one.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let url = match &self.backend {
            Backend::Test { url, .. } => url,
            Backend::Real { .. } => return kubeconfig_client(&self.kubeconfig).await,
        };
        let mut config = kube::Config::new(url.parse()?);
        config.default_namespace = "default".into();
        config.auth_info = serde_json::from_value(serde_json::json!({ "token": "admin" }))?;
        // Populating sends large objects concurrently; the default 295 s read timeout is fine.
        Ok(kube::Client::try_from(config)?)
    }

    /// The test server process's usage (`None` for a real control plane: see [`Server::control_plane`]).
    pub fn usage(&self) -> Option<Usage> {
        match &self.backend {
            Backend::Test { child, .. } => child.id().and_then(|p| usage(p).ok()),
            Backend::Real { .. } => None,
        }
    }

    /// Usage of each process of the server: the test server's one, or each of the control plane's.
    pub fn control_plane(&self) -> Vec<(String, Usage)> {
        match &self.backend {
            Backend::Test { .. } => self
                .usage()
                .map(|u| vec![("kube-testserver".to_string(), u)])
                .unwrap_or_default(),
            Backend::Real { cluster, .. } => cluster.usage(),
        }
    }

    /// `(verb, resource) -> count` since the last [`Server::reset_requests`]: the test server's request
    /// log (`GET /testserver/requests`), or the growth of a real kube-apiserver's
    /// `apiserver_request_total` (its `/metrics`).
    pub async fn requests(
        &self,
    ) -> anyhow::Result<std::collections::BTreeMap<(String, String), u64>> {
        let url = match &self.backend {
            Backend::Test { url, .. } => url,
            Backend::Real { client, .. } => {
                let now = crate::real::request_counts(&crate::real::metrics(client).await?);
                let base = self.counts_at_reset.lock().unwrap().clone();
                return Ok(now
                    .into_iter()
                    .filter_map(|(k, n)| {
                        let n = n.saturating_sub(base.get(&k).copied().unwrap_or(0));
                        (n > 0).then_some((k, n))
                    })
                    .collect());
            }
        };
        let body = http(url, "GET", "/testserver/requests").await?;
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&body).context("parsing /testserver/requests")?;
        Ok(list
            .into_iter()
            .map(|v| {
                (
                    (
                        v["verb"].as_str().unwrap_or_default().to_string(),
                        v["resource"].as_str().unwrap_or_default().to_string(),
                    ),
                    v["count"].as_u64().unwrap_or(0),
                )
            })
            .collect())
    }

    /// Starts a new counting window: `POST /testserver/requests/reset`, or (real server) remembers the
    /// counters as they are now.
    pub async fn reset_requests(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Test { url, .. } => {
                http(url, "POST", "/testserver/requests/reset").await?;
            }
            Backend::Real { client, .. } => {
                let now = crate::real::request_counts(&crate::real::metrics(client).await?);
                *self.counts_at_reset.lock().unwrap() = now;
            }
        }
        Ok(())
    }

    /// Stops the server: closing its stdin ends the test server (the kill is a fallback);
    /// `tests/cluster/down` stops a real one.
    pub async fn stop(self) {
        match self.backend {
            Backend::Test { mut child, .. } => {
                drop(child.stdin.take());
                if tokio::time::timeout(Duration::from_secs(5), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
            Backend::Real { mut cluster, .. } => {
                let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
            }
        }
    }
}

/// An admin client from a kubeconfig file.
pub async fn kubeconfig_client(path: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

/// A minimal HTTP/1.0 request with the admin token (the bench needs no HTTP client crate for this).
pub async fn http(base: &str, method: &str, path: &str) -> anyhow::Result<String> {
    let (status, body) = http_status(base, method, path, Some("admin")).await?;
    anyhow::ensure!(status == 200, "{method} {path}: HTTP {status}: {body}");
    Ok(body)
}

/// Sends a bodiless request and returns the status code and body.
pub async fn http_status(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let host = base
        .strip_prefix("http://")
        .with_context(|| format!("{base} is not an http:// URL"))?;
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).await?;
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {path}: malformed response {head:?}"))?;
    Ok((status, body.to_string()))
}

/// `<bench> serve`: runs the test API server until stdin closes (the bench exited) or SIGTERM.
pub async fn serve(kubeconfig_out: &Path) -> anyhow::Result<()> {
    let server = kube_testserver::TestServer::start_with(kube_testserver::ServerOptions {
        // Room for hashroll's re-watches after a burst of writes without a relist.
        history_len: 50_000,
        ..Default::default()
    })
    .await?;
    server
        .write_kubeconfig(kubeconfig_out)
        .with_context(|| format!("writing kubeconfig {}", kubeconfig_out.display()))?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", server.url())?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Stdin reaches end of file when the bench exits, even if it dies without cleaning up.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
    });
    tokio::select! {
        _ = stdin_closed => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}

/// A free TCP port on 127.0.0.1 (for hashroll's admin server).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
