//! The model: what hashroll knows about objects, reduced and pure. No I/O, no command line; everything
//! else depends on it, it depends on nothing else in the crate.

pub mod annotations;
pub mod go_syntax;
pub mod hashing;
pub mod kind;
pub mod names;
pub mod policy;
pub mod provider_class;
pub mod references;
pub mod rollout;
pub mod source;
pub mod vault_refs;
pub mod workload;
