//! Test fixtures shared by the pure rules' unit tests: a policy from annotations, a Secret from values.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::hashing::{Section, key_digest};
use crate::model::kind::{SourceId, SourceKind, WorkloadKind};
use crate::model::policy::{PolicySettings, ReloadPolicy, parse_policy};
use crate::model::source::SourceSummary;

/// The policy a Deployment with these metadata annotations gets (Stakater compatibility on).
pub fn policy(annotations: &[(&str, &str)]) -> ReloadPolicy {
    let a = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = PolicySettings {
        auto_reload_all: false,
        stakater_compat: true,
        vault_key_level: false,
    };
    parse_policy(&a, &BTreeMap::new(), WorkloadKind::Deployment, settings)
        .expect("valid annotations")
        .expect("opted in")
}

/// A Secret in `ns` holding these keys and values, as hashroll keeps it.
pub fn secret(ns: &str, name: &str, kv: &[(&str, &str)]) -> SourceSummary {
    SourceSummary {
        id: Arc::new(SourceId::new(SourceKind::Secret, ns, name)),
        keys: kv
            .iter()
            .map(|(k, v)| (k.to_string(), key_digest(Section::Data, k, v.as_bytes())))
            .collect(),
        ignore: false,
        stakater_match: false,
        excluded_type: None,
    }
}
