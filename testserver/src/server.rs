//! The server: options, shared state, the accept loop (restartable, with abortable connections) and
//! the `TestServer` handle with client and kubeconfig helpers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::control::{Command, Control, ControlState, WorkloadSim};
use crate::resources::{CustomResource, Registry};
use crate::store::Store;

/// A static bearer token and the identity it authenticates as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticToken {
    /// The bearer token.
    pub token: String,
    /// User name.
    pub user: String,
    /// Groups (besides `system:authenticated`, which is always added).
    pub groups: Vec<String>,
}

/// Start-up options.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Number of watch events retained for watchers resuming from an older resourceVersion.
    pub history_len: usize,
    /// Enforce RBAC from stored Roles/Bindings.
    pub rbac: bool,
    /// Custom resources to serve besides the built-ins.
    pub custom_resources: Vec<CustomResource>,
    /// Workload status simulator.
    pub workload_controller: WorkloadSim,
    /// Interval between BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Extra bearer tokens (besides `admin` and ServiceAccount tokens).
    pub tokens: Vec<StaticToken>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            history_len: 10_000,
            rbac: false,
            custom_resources: Vec::new(),
            workload_controller: WorkloadSim::Off,
            bookmark_interval: Duration::from_secs(1),
            tokens: Vec::new(),
        }
    }
}

/// State shared by every connection.
pub(crate) struct State {
    pub(crate) registry: Registry,
    pub(crate) store: Mutex<Store>,
    pub(crate) ctl: ControlState,
    pub(crate) opts: ServerOptions,
}

/// A running test API server.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with default options on 127.0.0.1 and a free port.
    pub async fn start() -> anyhow::Result<TestServer> {
        TestServer::start_with(ServerOptions::default()).await
    }

    /// Starts a server with `opts`.
    pub async fn start_with(opts: ServerOptions) -> anyhow::Result<TestServer> {
        let listener = TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("binding the test API server to {}", opts.listen))?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            registry: Registry::new(&opts.custom_resources),
            store: Mutex::new(Store::new(opts.history_len)),
            ctl: ControlState::new(opts.rbac, opts.workload_controller, tx),
            opts,
        });
        crate::api::seed(&state);
        let task = tokio::spawn(accept_loop(state.clone(), listener, addr, rx));
        Ok(TestServer {
            addr,
            state,
            task: Some(task),
        })
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kube client authenticated as the cluster admin.
    pub fn client(&self) -> kube::Client {
        self.client_for_token("admin")
    }

    /// A kube client sending `token` as its bearer token.
    pub fn client_for_token(&self, token: &str) -> kube::Client {
        let mut config =
            kube::Config::new(self.url().parse().expect("the server URL is a valid URI"));
        config.default_namespace = "default".into();
        config.auth_info =
            serde_json::from_value(json!({ "token": token })).expect("AuthInfo accepts a token");
        kube::Client::try_from(config)
            .expect("a kube client for a plain-HTTP server can always be built")
    }

    /// The HTTPS URL kubeconfigs use (same port; kubectl sends tokens over TLS only).
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Writes a kubeconfig for the admin user, with context namespace `default`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        self.write_kubeconfig_for_token(path, "admin")
    }

    /// Writes a kubeconfig whose user authenticates with `token`.
    pub fn write_kubeconfig_for_token(&self, path: &Path, token: &str) -> std::io::Result<()> {
        std::fs::write(path, kubeconfig_yaml(&self.https_url(), token))
    }

    /// A handle for fault injection and inspection.
    pub fn control(&self) -> Control {
        Control {
            state: self.state.clone(),
        }
    }

    /// Stops accepting, drops every connection and ends the server task.
    pub async fn shutdown(mut self) {
        let (tx, rx) = oneshot::channel();
        if self.state.ctl.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        self.state.ctl.close_watches.send_modify(|e| *e += 1);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    /// Dropping the server without `shutdown` still closes the port and every connection.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.state.ctl.close_watches.send_modify(|e| *e += 1);
    }
}

/// A kubeconfig document for `server` and a bearer `token`; https servers get the bundled CA.
pub fn kubeconfig_yaml(server: &str, token: &str) -> String {
    use base64::Engine as _;
    let mut cluster = json!({ "server": server });
    if server.starts_with("https://") {
        cluster["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(CERT_PEM));
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "testserver", "cluster": cluster }],
        "users": [{ "name": "testserver-user", "user": { "token": token } }],
        "contexts": [{
            "name": "testserver",
            "context": { "cluster": "testserver", "user": "testserver-user", "namespace": "default" }
        }],
        "current-context": "testserver",
        "preferences": {},
    });
    serde_yaml_ng::to_string(&doc).expect("a kubeconfig document always serialises")
}

async fn accept_loop(
    state: Arc<State>,
    mut listener: TcpListener,
    addr: SocketAddr,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    loop {
        let mut conns = JoinSet::new();
        let cmd = loop {
            tokio::select! {
                accepted = listener.accept() => {
                    match accepted {
                        Ok((stream, _)) => {
                            conns.spawn(serve_connection(state.clone(), stream));
                        }
                        // Out of file descriptors and the like: back off instead of spinning.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                cmd = commands.recv() => break cmd,
            }
        };
        drop(listener);
        // Aborting the connection tasks drops their response bodies, which ends the watch producers too.
        conns.abort_all();
        while conns.join_next().await.is_some() {}
        match cmd {
            None => return,
            Some(Command::Shutdown(ack)) => {
                let _ = ack.send(());
                return;
            }
            Some(Command::Restart(down_for, ack)) => {
                tokio::time::sleep(down_for).await;
                listener = loop {
                    match TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        // The port can linger briefly; keep trying rather than lose the server.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                let _ = ack.send(());
            }
        }
    }
}

/// The bundled self-signed certificate (CN kube-testserver, SANs 127.0.0.1, ::1, localhost).
const CERT_DER: &[u8] = include_bytes!("tls/cert.der");
/// Its PKCS#8 private key. Test-only: it protects nothing.
const KEY_DER: &[u8] = include_bytes!("tls/key.der");
/// PEM form of the certificate, for kubeconfig `certificate-authority-data`.
pub const CERT_PEM: &str = include_str!("tls/cert.pem");

fn tls_acceptor() -> &'static tokio_rustls::TlsAcceptor {
    static ACCEPTOR: std::sync::OnceLock<tokio_rustls::TlsAcceptor> = std::sync::OnceLock::new();
    ACCEPTOR.get_or_init(|| {
        use tokio_rustls::rustls;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(CERT_DER)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(KEY_DER.into()),
            )
            .expect("the bundled certificate and key match");
        // HTTP/1.1 only; clients that offer h2 fall back.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    })
}

/// Serves one connection, as TLS when the client opens with a handshake record and as plain HTTP otherwise.
/// kubectl only sends bearer tokens over TLS, kube-rs tests use plain HTTP: one port serves both.
async fn serve_connection(state: Arc<State>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    let is_tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16);
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(crate::api::handle(state, req).await) }
    });
    let builder = hyper::server::conn::http1::Builder::new();
    if is_tls {
        if let Ok(tls) = tls_acceptor().accept(stream).await {
            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
        }
    } else {
        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_points_at_the_server_with_the_token_and_default_namespace() {
        let y: serde_json::Value =
            serde_yaml_ng::from_str(&kubeconfig_yaml("http://127.0.0.1:1", "tok")).unwrap();
        assert_eq!(y["clusters"][0]["cluster"]["server"], "http://127.0.0.1:1");
        assert_eq!(y["users"][0]["user"]["token"], "tok");
        assert_eq!(y["contexts"][0]["context"]["namespace"], "default");
        assert_eq!(y["current-context"], "testserver");
    }
}
