//! hashroll: rolls Kubernetes workloads when the Secrets and ConfigMaps they use change.
//!
//! Data flows one way: watch events → reduced summaries ([`source`], [`workload`]) → [`index`] →
//! [`decision`] → [`patching`]. [`controller`] owns the state and the loop; I/O stays at the edges.
// Denied everywhere; `memory` alone allows it, for one call into the C allocator.
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod controller;
pub mod decision;
pub mod events;
pub mod hashing;
pub mod index;
pub mod key;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod patching;
pub mod policy;
pub mod references;
pub mod source;
pub mod watch;
pub mod wire;
pub mod workload;
