//! hashroll: rolls Kubernetes workloads when the Secrets and ConfigMaps they use change.

pub mod hashing;
pub mod index;
pub mod policy;
pub mod references;
pub mod source;
pub mod workload;
