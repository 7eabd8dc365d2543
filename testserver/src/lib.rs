//! kube-testserver: an in-process Kubernetes API server for hashroll's tests, benchmarks and demo.
//!
//! Start one with [`TestServer::start`], talk to it with [`TestServer::client`] or a kubeconfig from
//! [`TestServer::write_kubeconfig`], and steer it (faults, restarts, request counts) through [`Control`].

pub mod patch;
pub mod rbac;
pub mod selectors;

mod api;
mod authn;
pub mod control;
pub mod discovery;
mod endpoints;
pub mod events;
pub mod proto;
pub mod resources;
pub mod server;
pub mod status;
pub mod store;
pub mod table;
mod watch;
pub mod workload;
mod write;

pub use control::{Control, Fault, RequestMatch, WorkloadSim};
pub use resources::CustomResource;
pub use server::{ServerOptions, StaticToken, TestServer, kubeconfig_yaml};
pub use status::ApiError;
pub use store::TemplateRecord;

/// Parses a workload simulator mode: `off`, `immediate`, `never`, `delay=2s` or `delay=500ms`.
pub fn control_parse_workload_sim(s: &str) -> Result<WorkloadSim, String> {
    endpoints::parse_workload_sim(s)
}
