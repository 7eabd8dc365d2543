//! What hashroll's Events and log lines say about a decision: names of workloads, sources and keys, never
//! a value or a digest.

use std::collections::{BTreeSet, HashMap};

use crate::alerts::{ChangedSource, Changes};
use crate::k8s::events::{EventType, WorkloadEvent};
use crate::model::kind::{SourceId, WorkloadId, WorkloadKind};
use crate::model::policy::Tracked;

/// What changed, as a roll's Event and alert name it ("Secret db (keys: password), ConfigMap app"). `exists`
/// says whether a source is there now; `changed_keys` holds the keys each source's latest change touched.
pub fn describe(
    changed: &[SourceId],
    tracked: &Tracked,
    exists: impl Fn(&SourceId) -> bool,
    changed_keys: &HashMap<SourceId, BTreeSet<String>>,
) -> Changes {
    let source = |id: &SourceId| {
        let deleted = !exists(id);
        // Tracked through a name pattern, the whole object counts: no keys to name.
        let keys = match tracked.exact.iter().find(|t| t.id == *id) {
            Some(t) if !deleted => changed_keys
                .get(id)
                .into_iter()
                .flatten()
                .filter(|k| t.keys.contains(k))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        ChangedSource {
            kind: id.kind,
            name: id.name.to_string(),
            keys,
            deleted,
        }
    };
    Changes(changed.iter().map(source).collect())
}

/// The Event of a roll (`Reloaded`), or of a roll a dry run would make (`WouldReload`).
pub fn roll_event(kind: WorkloadKind, what: &Changes, dry_run: bool) -> WorkloadEvent {
    WorkloadEvent {
        type_: EventType::Normal,
        reason: if dry_run { "WouldReload" } else { "Reloaded" },
        action: "Reload",
        note: format!(
            "{} {kind} because {what} changed",
            if dry_run { "Would roll" } else { "Rolled" },
        ),
    }
}

/// The Warning for a roll that failed for good (`what` as [`describe`] says it, `answer` the API's
/// status and reason): hashroll keeps retrying, but someone has to act.
pub fn reload_failed_event(kind: WorkloadKind, what: &Changes, answer: &str) -> WorkloadEvent {
    WorkloadEvent {
        type_: EventType::Warning,
        reason: "ReloadFailed",
        action: "Reload",
        note: format!(
            "Could not roll {kind} after {what} changed: the API server answered {answer}; \
             hashroll keeps retrying"
        ),
    }
}

/// The Warning for a workload whose Vault path is not there, or not readable by hashroll: its pods could
/// not start either, so hashroll holds it until the path is back.
pub fn vault_unavailable_event(kind: WorkloadKind, path: &str) -> WorkloadEvent {
    WorkloadEvent {
        type_: EventType::Warning,
        reason: "VaultPathUnavailable",
        action: "Reload",
        note: format!(
            "Vault path {path}, used by this {kind}, is not found or hashroll may not read it (see its log); \
             not rolling until it can be read"
        ),
    }
}

/// The Warning on a workload whose rollout failed under `--max-concurrent-rollouts`, naming what its
/// failure holds back.
pub fn rollout_failed_event(
    kind: WorkloadKind,
    why: &str,
    changed: &str,
    held: &[String],
) -> WorkloadEvent {
    const NAMED: usize = 10;
    let mut names = held[..held.len().min(NAMED)].join(", ");
    if held.len() > NAMED {
        names.push_str(&format!(" and {} more", held.len() - NAMED));
    }
    let held = match held.len() {
        0 => "no other roll waits for it yet".to_string(),
        n => format!("holding back {n} roll(s) that carry the same change: {names}"),
    };
    WorkloadEvent {
        type_: EventType::Warning,
        reason: "RolloutFailed",
        action: "Reload",
        note: format!(
            "The rollout of this {kind} after {changed} changed {why}: the rest of that change's waves \
             is halted, {held}; a later change of the source rolls what is still behind"
        ),
    }
}

/// The Warning on a source whose change a failed rollout halted, naming the workload and what is held.
pub fn change_halted_event(failed: &WorkloadId, why: &str, held: &[String]) -> WorkloadEvent {
    let n = held.len();
    let shown: Vec<&str> = held.iter().take(10).map(String::as_str).collect();
    let more = if n > 10 {
        format!(" and {} more", n - 10)
    } else {
        String::new()
    };
    WorkloadEvent {
        type_: EventType::Warning,
        reason: "RolloutHalted",
        action: "Reload",
        note: format!(
            "The rollout of {failed} after this change {why}: {n} roll(s) of this change are held back \
             ({}{more}) until the next change of this source",
            shown.join(", ")
        ),
    }
}

/// The Warning for a workload hashroll skips because of a malformed annotation.
pub fn invalid_annotation_event(kind: WorkloadKind, message: &str) -> WorkloadEvent {
    WorkloadEvent {
        type_: EventType::Warning,
        reason: "InvalidAnnotation",
        action: "Validate",
        note: format!("hashroll skips this {kind}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kind::SourceKind;
    use crate::model::policy::TrackedSource;
    use crate::model::references::KeySelection;

    #[test]
    fn names_sources_and_the_changed_keys_the_workload_uses() {
        let db = SourceId::new(SourceKind::Secret, "ns", "db");
        let app = SourceId::new(SourceKind::ConfigMap, "ns", "app");
        let gone = SourceId::new(SourceKind::Secret, "ns", "old");
        let by_pattern = SourceId::new(SourceKind::Secret, "ns", "db-2");
        let tracked = Tracked {
            exact: [&db, &app, &gone]
                .into_iter()
                .map(|id| TrackedSource {
                    id: id.clone(),
                    keys: if *id == db {
                        KeySelection::Keys(["password", "user"].into_iter().collect())
                    } else {
                        KeySelection::All
                    },
                    optional: false,
                    require_stakater_match: false,
                })
                .collect(),
            patterns: Vec::new(),
            excluded: Vec::new(),
        };
        let changed_keys = HashMap::from([
            (
                db.clone(),
                BTreeSet::from(["password".into(), "unused".into()]),
            ),
            (by_pattern.clone(), BTreeSet::from(["k".into()])),
        ]);
        let text = describe(
            &[app.clone(), db.clone(), gone.clone(), by_pattern.clone()],
            &tracked,
            |id| *id != gone,
            &changed_keys,
        );
        assert_eq!(
            text.to_string(),
            "ConfigMap app, Secret db (keys: password), Secret old (deleted), Secret db-2"
        );
        assert_eq!(
            roll_event(WorkloadKind::Deployment, &text, false).note,
            format!("Rolled Deployment because {text} changed")
        );
        assert_eq!(
            roll_event(WorkloadKind::CronJob, &text, true).reason,
            "WouldReload"
        );
        let failed = reload_failed_event(WorkloadKind::Deployment, &text, "403 Forbidden");
        assert_eq!(
            (failed.type_, failed.reason),
            (EventType::Warning, "ReloadFailed")
        );
        assert_eq!(
            failed.note,
            format!(
                "Could not roll Deployment after {text} changed: the API server answered 403 \
                 Forbidden; hashroll keeps retrying"
            )
        );
    }
}
