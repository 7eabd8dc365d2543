//! hashroll: rolls Kubernetes workloads when the Secrets and ConfigMaps they use change.
//!
//! Data flows one way: [`k8s::watch`] → reduced summaries ([`model`]) → the index and decision in
//! [`reconcile`] → [`k8s::patch`]. The model is pure; I/O stays in [`k8s`] and [`telemetry`]; [`app`] wires.
// Denied everywhere; `reconcile::memory` alone allows it, for one call into the C allocator.
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod error;
pub mod k8s;
pub mod model;
pub mod reconcile;
pub mod telemetry;
