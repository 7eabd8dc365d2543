//! hashroll: rolls Kubernetes workloads when the Secrets and ConfigMaps they use change.
//!
//! Data flows one way: [`k8s::watch`] → reduced summaries ([`model`]) → the index and decision in
//! [`reconcile`] → [`k8s::patch`]. The model is pure; I/O stays in [`k8s`] and [`telemetry`]; [`app`] wires.
//!
//! Only what the binary and the demo use is public: [`cli::Args`], [`app::run`], [`explain::run`] and
//! [`tune_allocator`].

mod alerts;
pub mod app;
pub mod cli;
mod error;
pub mod explain;
mod k8s;
mod model;
mod reconcile;
mod telemetry;
mod vault;

pub use reconcile::memory::tune_allocator;
