//! `explain` for one Secret or ConfigMap: the workloads that use, track or exclude it, and which keys.

use crate::explain::report::*;
use crate::k8s::wire::WorkloadWire;
use crate::model::annotations::{IGNORE_ANNOTATION, STAKATER_IGNORE};
use crate::model::kind::{SourceId, WorkloadKind};
use crate::model::references::{pod_spec_references, reference_paths};
use crate::model::workload::Tracking;

/// Explains one source: who uses it and which keys.
pub fn source_report(
    id: &SourceId,
    workloads: &[(WorkloadKind, WorkloadWire)],
    settings: &Settings,
    cluster: &Cluster,
) -> SourceReport {
    let s = cluster.sources.get(id);
    let state = match s {
        _ if !settings.visibility.watched.contains(&id.kind) => {
            format!("not watched: --watch leaves out {}", id.kind.info().plural)
        }
        Some(s) if s.excluded_type.is_some() => {
            "exists; not watched: its type is in --exclude-secret-types".into()
        }
        Some(s) if s.ignore => {
            format!(
                "exists; ignored ({IGNORE_ANNOTATION} or {STAKATER_IGNORE}): never rolls anything"
            )
        }
        Some(_) => "exists".into(),
        None if settings.visibility.sees_absence(id.kind) => "missing".into(),
        None => "not watched: nothing of that name matches --resource-label-selector".into(),
    };
    let mut report = SourceReport {
        kind: id.kind.as_str(),
        namespace: id.namespace.to_string(),
        name: id.name.to_string(),
        state,
        keys: s
            .map(|s| s.keys.iter().map(|(k, _)| k.to_string()).collect())
            .unwrap_or_default(),
        users: Vec::new(),
        notes: cluster.not_acted_on.iter().cloned().collect(),
    };
    for (kind, wire) in workloads {
        let Some(summary) = wire.summary(*kind, settings.policy) else {
            continue;
        };
        let spec = wire.pod_template(*kind).and_then(|t| t.spec);
        let paths = spec.as_ref().map(reference_paths).unwrap_or_default();
        let used = spec
            .as_ref()
            .map(pod_spec_references)
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.kind == id.kind && *r.name == *id.name);
        let used_keys = used
            .as_ref()
            .map_or(Keys::All("all"), |r| Keys::of(&r.keys));
        let used_optional = used.as_ref().is_some_and(|r| r.optional);
        let via = paths
            .get(&(id.kind, id.name.to_string()))
            .cloned()
            .unwrap_or_default();
        let user = |keys: Keys, optional: bool, via: Vec<String>, state| User {
            kind: kind.as_str(),
            name: summary.id.name.to_string(),
            keys,
            optional,
            via,
            state,
        };
        match &summary.tracking {
            Tracking::On { policy, references } => {
                let tracked = policy.tracked(&id.namespace, references);
                if let Some(t) = tracked.exact.iter().find(|t| t.id == *id) {
                    let mut v = via.clone();
                    if v.is_empty() {
                        v.push("an annotation naming it".into());
                    }
                    report
                        .users
                        .push(user(Keys::of(&t.keys), t.optional, v, "tracked"));
                } else if tracked.excluded.contains(id) {
                    report
                        .users
                        .push(user(Keys::All("all"), false, via, "excluded"));
                } else if let Some((_, p)) = tracked
                    .patterns
                    .iter()
                    .find(|(k, p)| *k == id.kind && p.matches(&id.name))
                {
                    let state = if policy.is_excluded(id.kind, &id.name) {
                        "excluded"
                    } else {
                        "tracked"
                    };
                    let v = vec![format!("pattern {}", p.as_str())];
                    report.users.push(user(Keys::All("all"), true, v, state));
                }
            }
            Tracking::Off if used.is_some() => {
                report
                    .users
                    .push(user(used_keys, used_optional, via, "not_opted_in"))
            }
            Tracking::Invalid(_) if used.is_some() => {
                report
                    .users
                    .push(user(used_keys, used_optional, via, "invalid_annotation"))
            }
            _ => {}
        }
    }
    report
}
