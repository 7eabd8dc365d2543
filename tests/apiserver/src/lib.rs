//! kube-testserver: an in-process Kubernetes API server for hashroll's tests, benchmarks and demo.

pub mod patch;
pub mod rbac;
pub mod selectors;
