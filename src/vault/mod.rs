//! Vault (and OpenBao) as a source: the paths opted-in workloads read through a secret-injecting webhook
//! (Bank-Vaults `vault:` references, `src/model/vault_refs.rs`) are polled, reduced to digests like a
//! Secret, and fed to the reconcile loop as one more source kind. The loop publishes which paths to read;
//! the poller never looks at workloads.

pub mod client;
pub mod flags;
pub mod poller;
