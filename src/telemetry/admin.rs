//! The admin server: `/metrics`, `/healthz` (the process is alive), `/readyz` (every watch has synced, or
//! this replica is a standby waiting for the Lease).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use tokio::sync::watch;

use crate::reconcile::canary::Canary;
use crate::reconcile::scopes::Readiness;
use crate::telemetry::metrics::Metrics;

/// Shared between the reconcile loop (which publishes readiness) and the admin server.
#[derive(Clone)]
pub struct Health {
    pub metrics: Metrics,
    pub readiness: watch::Receiver<Readiness>,
    /// Waiting for leadership. A standby answers ready: it is healthy and able to take over, and a
    /// Deployment whose new pods never became ready could not roll out while the old leader holds on.
    pub standby: Arc<AtomicBool>,
    /// `--canary-interval`: a canary write that has not come back in time makes the replica not ready.
    pub canary: Option<Canary>,
}

/// Serves until `shutdown` resolves. Returns the bound address through `bound` (for port 0).
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    bound: tokio::sync::oneshot::Sender<SocketAddr>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let _ = bound.send(listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(h): State<Health>) -> String {
    h.metrics.render()
}

async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    if h.standby.load(Ordering::Relaxed) {
        return (StatusCode::OK, "standby".into());
    }
    match &*h.readiness.borrow() {
        Readiness::Ready if h.canary.as_ref().is_some_and(|c| c.with(|t| t.is_late())) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the canary ConfigMap has not come back through the watch within --canary-timeout"
                .into(),
        ),
        Readiness::Ready => (StatusCode::OK, "ready".into()),
        Readiness::Syncing => (StatusCode::SERVICE_UNAVAILABLE, "syncing".into()),
        Readiness::Failing(watches) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: watches failing before their first list: {}",
                watches.join("; ")
            ),
        ),
    }
}
