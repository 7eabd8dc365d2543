//! `explain` for one workload, built purely from what was read: the workload, the Secrets and ConfigMaps of
//! its namespace as the controller would hold them, and the installation key. The rules are the
//! controller's own (its policy, [`decision::source_state`], [`decision::current`] and
//! [`decision::decide`]); this module puts their outcome into words.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use crate::explain::report::*;
use crate::explain::wording::*;
use crate::k8s::wire::WorkloadWire;
use crate::model::annotations::STAKATER_PAUSE_PERIOD;
use crate::model::hashing::InstallationKey;
use crate::model::kind::{SourceId, SourceKind, WorkloadKind};
use crate::model::policy::{ReloadPolicy, Tracked};
use crate::model::references::{Reference, pod_spec_references, reference_paths};
use crate::model::vault_refs::template_vault_paths;
use crate::model::workload::{Recorded, Tracking, WorkloadSummary};
use crate::reconcile::decision::{self, Action, Current, Missing, SourceState};

/// Explains one workload: whether it takes part, each source with its state, and the verdict.
pub fn workload_report(
    kind: WorkloadKind,
    wire: &WorkloadWire,
    settings: &Settings,
    cluster: &Cluster,
    now: Timestamp,
) -> WorkloadReport {
    let read = Read::new(kind, wire);
    let mut report = WorkloadReport {
        kind: kind.as_str(),
        namespace: read.namespace.clone(),
        name: wire.metadata.name.clone().unwrap_or_default(),
        tracking: TrackingReport {
            state: TrackingState::NotOptedIn,
            detail: String::new(),
        },
        sources: Vec::new(),
        verdict: Verdict::new(Outcome::Unknown, String::new()),
        notes: Vec::new(),
    };
    let Some(summary) = wire.summary(kind, settings.policy) else {
        report.verdict.reason = "the object has no name or namespace".into();
        return report;
    };
    match &summary.tracking {
        Tracking::Off => {
            let why = not_opted_in(read.annotations, &read.template_annotations, settings);
            report.sources = read.untracked_uses();
            report.verdict = Verdict::new(Outcome::NotOptedIn, format!("never rolls: {why}"));
            report.tracking.detail = why;
        }
        Tracking::Invalid(e) => {
            report.tracking = TrackingReport {
                state: TrackingState::InvalidAnnotation,
                detail: e.to_string(),
            };
            report.verdict = Verdict::new(
                Outcome::InvalidAnnotation,
                format!(
                    "skipped until the annotation is fixed (a Warning Event InvalidAnnotation says \
                     so): {e}"
                ),
            );
        }
        Tracking::On { policy, references } => {
            let opted = OptedIn {
                read: &read,
                policy,
                references,
                summary: &summary,
                settings,
                cluster,
            };
            opted.explain(&mut report, now);
        }
    }
    gated(report, kind, settings, cluster)
}

/// The workload as `explain` reads it: its annotations and where its pod spec uses each source.
struct Read<'a> {
    kind: WorkloadKind,
    namespace: String,
    annotations: &'a BTreeMap<String, String>,
    template_annotations: BTreeMap<String, String>,
    references: Vec<Reference>,
    paths: BTreeMap<(SourceKind, String), Vec<String>>,
}

static NO_ANNOTATIONS: BTreeMap<String, String> = BTreeMap::new();

impl<'a> Read<'a> {
    fn new(kind: WorkloadKind, wire: &'a WorkloadWire) -> Read<'a> {
        let template = wire.pod_template(kind);
        let spec = template.as_ref().and_then(|t| t.spec.as_ref());
        Read {
            kind,
            namespace: wire.metadata.namespace.clone().unwrap_or_default(),
            annotations: wire
                .metadata
                .annotations
                .as_ref()
                .unwrap_or(&NO_ANNOTATIONS),
            template_annotations: template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default(),
            references: spec.map(pod_spec_references).unwrap_or_default(),
            paths: {
                let mut paths = spec.map(reference_paths).unwrap_or_default();
                // Vault paths too (what Bank-Vaults' webhook reads), under their own kind.
                let vault = template
                    .as_ref()
                    .map(template_vault_paths)
                    .unwrap_or_default();
                paths.extend(
                    vault
                        .into_iter()
                        .map(|(p, at)| ((SourceKind::Vault, p), at)),
                );
                paths
            },
        }
    }

    /// Where the pod spec uses the source.
    fn uses(&self, kind: SourceKind, name: &str) -> Vec<String> {
        self.paths
            .get(&(kind, name.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// What the pod spec uses, which a workload not opted in does not track.
    fn untracked_uses(&self) -> Vec<SourceLine> {
        self.references
            .iter()
            .map(|r| SourceLine {
                kind: r.kind.as_str(),
                name: r.name.clone(),
                keys: Keys::of(&r.keys),
                optional: r.optional,
                via: self.uses(r.kind, &r.name),
                state: SourceStatus::NotRecorded,
                detail: Some("not tracked: the workload is not opted in".into()),
            })
            .collect()
    }
}

/// What is recorded on the workload, to compare with the sources now (when the key could be read).
struct Comparison {
    key: InstallationKey,
    key_known: bool,
    recorded: Recorded,
    /// Recorded under this installation key: comparable.
    current: bool,
    sources: BTreeMap<String, String>,
}

impl Comparison {
    fn status(&self, label: &str, digest: &str) -> SourceStatus {
        if !self.key_known {
            return SourceStatus::Unknown;
        }
        match self.sources.get(label) {
            Some(old) if self.current && old == digest => SourceStatus::Same,
            Some(_) if self.current => SourceStatus::Changed,
            _ => SourceStatus::NotRecorded,
        }
    }
}

/// An opted-in workload, with everything its explanation needs.
struct OptedIn<'a> {
    read: &'a Read<'a>,
    policy: &'a ReloadPolicy,
    references: &'a [Reference],
    summary: &'a WorkloadSummary,
    settings: &'a Settings,
    cluster: &'a Cluster,
}

impl OptedIn<'_> {
    fn explain(&self, report: &mut WorkloadReport, now: Timestamp) {
        let read = self.read;
        report.tracking = TrackingReport {
            state: TrackingState::OptedIn,
            detail: opted_in(
                self.policy,
                read.annotations,
                &read.template_annotations,
                self.settings,
            ),
        };
        let tracked = self.policy.tracked(&read.namespace, self.references);
        let recorded = self.summary.stored.read();
        let (key, key_known) = match &self.cluster.key {
            Ok(k) => (k.clone(), true),
            Err(why) => {
                report.notes.push(format!(
                    "cannot read the installation key ({why}): what is recorded cannot be compared \
                     with the sources; what is tracked, missing, ignored, excluded or not watched \
                     still holds"
                ));
                (InstallationKey::generate(), false)
            }
        };
        let comparison = Comparison {
            current: key_known && recorded.stamp.as_ref().is_some_and(|s| s.is_current(&key)),
            sources: recorded.sources.clone().unwrap_or_default(),
            key,
            key_known,
            recorded,
        };
        report.sources = self.named_lines(&tracked, &comparison);
        let current = decision::current(
            self.policy,
            &tracked,
            &read.namespace,
            &self.cluster.sources,
            &self.settings.visibility,
            &comparison.recorded,
            &comparison.key,
        );
        report
            .sources
            .extend(self.pattern_lines(&tracked, &current, &comparison));
        report.verdict = self.verdict(&tracked, current, &comparison, now);
    }

    /// The sources tracked by name, each with its state now; then those an exclude annotation removed.
    fn named_lines(&self, tracked: &Tracked, c: &Comparison) -> Vec<SourceLine> {
        let (read, settings) = (self.read, self.settings);
        let mut lines = Vec::new();
        for t in &tracked.exact {
            let label = t.id.label();
            let s = self.cluster.sources.get(&t.id);
            let previous = c.sources.get(&label).map(String::as_str);
            let state = decision::source_state(t, s, &settings.visibility, previous, &c.key);
            let held = "the workload is held until it exists";
            let (state, detail) = match state {
                SourceState::Unwatched => (
                    SourceStatus::NotWatched,
                    Some(not_watched_why(t.id.kind, s, settings)),
                ),
                SourceState::Missing(Missing { key: None, .. }) => (
                    SourceStatus::Missing,
                    Some(format!("required and missing: {held}")),
                ),
                SourceState::Missing(Missing { key: Some(k), .. }) => (
                    SourceStatus::Missing,
                    Some(format!("required key {k} is missing: {held}")),
                ),
                SourceState::Frozen(_) => (SourceStatus::Ignored, Some(ignored_why(t, s))),
                SourceState::Tracked { digest, present } => match c.status(&label, &digest) {
                    SourceStatus::Same if !present => (
                        SourceStatus::Absent,
                        Some("optional and absent: tracked as absent".into()),
                    ),
                    status => (status, None),
                },
            };
            let uses = read.uses(t.id.kind, &t.id.name);
            lines.push(SourceLine {
                kind: t.id.kind.as_str(),
                name: t.id.name.to_string(),
                keys: Keys::of(&t.keys),
                optional: t.optional,
                via: via_of(
                    t,
                    self.policy,
                    uses,
                    read.annotations,
                    &read.template_annotations,
                ),
                state,
                detail,
            });
        }
        lines.extend(tracked.excluded.iter().map(|id| SourceLine {
            kind: id.kind.as_str(),
            name: id.name.to_string(),
            keys: Keys::All("all"),
            optional: false,
            via: read.uses(id.kind, &id.name),
            state: SourceStatus::Excluded,
            detail: Some(format!("excluded by {}", exclude_annotation(id.kind))),
        }));
        lines
    }

    /// The sources tracked through a name pattern: those [`decision::current`] found beyond the ones
    /// named exactly.
    fn pattern_lines(
        &self,
        tracked: &Tracked,
        current: &Current,
        c: &Comparison,
    ) -> Vec<SourceLine> {
        let Current::Ready { sources, ids, .. } = current else {
            return Vec::new();
        };
        let by_pattern = ids
            .iter()
            .filter(|id| !tracked.exact.iter().any(|t| t.id == **id));
        by_pattern
            .map(|id| {
                let label = id.label();
                let pattern = tracked
                    .patterns
                    .iter()
                    .find(|(k, p)| *k == id.kind && p.matches(&id.name))
                    .map(|(_, p)| p.as_str())
                    .unwrap_or_default();
                let ignored = self.cluster.sources.get(id).is_some_and(|s| s.ignore);
                let digest = sources.get(&label).map(String::as_str).unwrap_or_default();
                SourceLine {
                    kind: id.kind.as_str(),
                    name: id.name.to_string(),
                    keys: Keys::All("all"),
                    optional: true,
                    via: vec![format!(
                        "pattern {pattern} ({})",
                        reload_annotation(id.kind, self.settings.policy)
                    )],
                    state: if ignored {
                        SourceStatus::Ignored
                    } else {
                        c.status(&label, digest)
                    },
                    detail: ignored.then(|| "ignored by an annotation on it".to_string()),
                }
            })
            .collect()
    }

    /// The verdict, from the controller's own decision.
    fn verdict(
        &self,
        tracked: &Tracked,
        current: Current,
        c: &Comparison,
        now: Timestamp,
    ) -> Verdict {
        let held = "rolling now would start pods that cannot run; nothing is recorded or rolled \
                    until it is there";
        match decision::decide(&c.recorded, current, false, &c.key) {
            Action::Hold(Missing { source, key }) => Verdict::new(
                Outcome::Held,
                match key {
                    Some(k) => format!(
                        "held: the required key {k} of {} {} is missing; {held}",
                        source.kind, source.name
                    ),
                    None => format!(
                        "held: the required {} {} is missing; {held}",
                        source.kind, source.name
                    ),
                },
            ),
            _ if !c.key_known => Verdict::new(
                Outcome::Unknown,
                "cannot tell whether it would roll: the installation key could not be read".into(),
            ),
            Action::Nothing => Verdict::new(
                Outcome::NothingToDo,
                "nothing to do: what it uses is as recorded".into(),
            ),
            Action::Baseline { .. } => {
                let why = match (&c.recorded.stamp, &c.recorded.sources) {
                    (None, _) | (_, None) => "nothing is recorded on it yet (first sight)",
                    (Some(_), Some(_)) if !c.current => {
                        "what is recorded was written under another installation key"
                    }
                    _ => {
                        "the set of sources it tracks changed (a source newly tracked, or no \
                         longer, is recorded, not rolled)"
                    }
                };
                Verdict::new(
                    Outcome::WouldRecord,
                    format!("would record its state without rolling: {why}"),
                )
            }
            Action::Roll { changed, .. } => self.roll_verdict(tracked, &changed, now),
        }
    }

    /// A roll is due: now, or after the pause period or the debounce window.
    fn roll_verdict(&self, tracked: &Tracked, changed: &[SourceId], now: Timestamp) -> Verdict {
        let changed_sources: Vec<ChangedSource> = changed
            .iter()
            .map(|id| ChangedSource {
                kind: id.kind.as_str(),
                name: id.name.to_string(),
                keys: tracked
                    .exact
                    .iter()
                    .find(|t| t.id == *id)
                    .map_or(Keys::All("all"), |t| Keys::of(&t.keys)),
            })
            .collect();
        let what = describe_changed(&changed_sources);
        let how = if self.read.kind == WorkloadKind::Rollout && self.policy.rollout_restart {
            "setting spec.restartAt"
        } else {
            "changing its pod template's hashroll.dev/hash"
        };
        let settings = self.settings;
        let rolled_at = self.summary.stored.rolled_at;
        let mut v = if let Some(wait) =
            decision::pause_remaining(self.policy.pause_period, rolled_at, now)
        {
            let at = now + wait;
            let mut v = Verdict::new(
                Outcome::Paused,
                format!(
                    "paused: {what} changed, but it rolled less than one pause period \
                     ({STAKATER_PAUSE_PERIOD}) ago; it rolls once at {at}"
                ),
            );
            v.at = Some(at.to_string());
            v
        } else if let Some(at) = debounced_until(changed, settings.debounce, self.cluster, now) {
            let mut v = Verdict::new(
                Outcome::Debounced,
                format!(
                    "debounced: {what} changed less than --debounce ({:?}) ago; it rolls once the \
                     changes stop (by {at}), {how}",
                    settings.debounce
                ),
            );
            v.at = Some(at.to_string());
            v
        } else if settings.dry_run {
            Verdict::new(
                Outcome::WouldRoll,
                format!("would roll now ({what} changed), but --dry-run only announces it"),
            )
        } else {
            Verdict::new(
                Outcome::WouldRoll,
                format!("would roll now, {how}: {what} changed since it was recorded"),
            )
        };
        v.changed = changed_sources;
        v
    }
}

/// The controller's gates before any decision: the workload kind, and the namespace.
fn gated(
    mut report: WorkloadReport,
    kind: WorkloadKind,
    settings: &Settings,
    cluster: &Cluster,
) -> WorkloadReport {
    let why = if !settings.workload_kinds.contains(&kind) {
        Some(format!(
            "hashroll does not watch {} (--workload-kinds)",
            kind.info().plural
        ))
    } else {
        cluster.not_acted_on.clone()
    };
    if let Some(why) = why {
        report.verdict = Verdict::new(Outcome::NotActedOn, format!("never rolls: {why}"));
    }
    report
}

/// "Secret db (keys it uses: password), ConfigMap app".
fn describe_changed(changed: &[ChangedSource]) -> String {
    changed
        .iter()
        .map(|c| match &c.keys {
            Keys::Some(keys) => {
                format!("{} {} (keys it uses: {})", c.kind, c.name, keys.join(", "))
            }
            Keys::All(_) => format!("{} {}", c.kind, c.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// When the debounce window after the latest write to a changed source ends, if it has not yet: the
/// controller rolls once the changes stop.
fn debounced_until(
    changed: &[SourceId],
    debounce: Duration,
    cluster: &Cluster,
    now: Timestamp,
) -> Option<Timestamp> {
    let latest = changed
        .iter()
        .filter_map(|id| cluster.written_at.get(id))
        .max()?;
    let until = latest.checked_add(debounce).ok()?;
    (until > now).then_some(until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};
    use std::sync::Arc;

    use serde_json::json;

    use crate::model::hashing::{Section, key_digest};
    use crate::model::kind::SourceKind;
    use crate::model::policy::PolicySettings;
    use crate::model::source::SourceSummary;
    use crate::model::workload::RecordedSources;
    use crate::reconcile::decision::Visibility;

    const NS: &str = "shop";

    fn key() -> InstallationKey {
        InstallationKey::from_bytes(&[3u8; 32]).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            policy: PolicySettings {
                auto_reload_all: false,
                stakater_compat: true,
                vault_key_level: false,
            },
            visibility: Visibility {
                watched: SourceKind::ALL.into_iter().collect(),
                filtered: BTreeSet::new(),
            },
            workload_kinds: WorkloadKind::ALL.into_iter().collect(),
            debounce: Duration::ZERO,
            dry_run: false,
        }
    }

    fn cluster(secrets: &[(&str, &str)]) -> Cluster {
        let sources = secrets
            .iter()
            .map(|(name, password)| {
                let s = SourceSummary {
                    id: Arc::new(SourceId::new(SourceKind::Secret, NS, *name)),
                    keys: [(
                        "password".to_string(),
                        key_digest(Section::Data, "password", password.as_bytes()),
                    )]
                    .into_iter()
                    .collect(),
                    ignore: false,
                    stakater_match: false,
                    excluded_type: None,
                };
                (s.id.clone(), s)
            })
            .collect();
        Cluster {
            sources,
            written_at: HashMap::new(),
            key: Ok(key()),
            not_acted_on: None,
        }
    }

    /// A workload of `kind` using Secret `db`'s password, with `annotations`.
    fn wire(kind: WorkloadKind, annotations: serde_json::Value) -> WorkloadWire {
        let template = json!({"spec": {"containers": [{"name": "app", "env": [
            {"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}]}});
        let mut obj =
            json!({"metadata": {"name": "web", "namespace": NS, "annotations": annotations}});
        let mut node = &mut obj;
        for step in kind.template_path() {
            node = &mut node[*step];
        }
        *node = template;
        serde_json::from_value(obj).unwrap()
    }

    /// `w` with the state the controller would record for it against `c`, rolled at `rolled_at`.
    fn recorded(
        kind: WorkloadKind,
        w: &WorkloadWire,
        c: &Cluster,
        rolled_at: &str,
    ) -> WorkloadWire {
        let s = settings();
        let summary = w.summary(kind, s.policy).unwrap();
        let Tracking::On { policy, references } = &summary.tracking else {
            panic!("opted in")
        };
        let tracked = policy.tracked(NS, references);
        let current = decision::current(
            policy,
            &tracked,
            NS,
            &c.sources,
            &s.visibility,
            &Recorded::default(),
            &key(),
        );
        let Action::Baseline { stamp, sources } =
            decision::decide(&Recorded::default(), current, false, &key())
        else {
            panic!("first sight records")
        };
        let mut w = w.clone();
        let a = w.metadata.annotations.get_or_insert_default();
        a.insert("hashroll.dev/hash".into(), stamp.as_str().into());
        a.insert(
            "hashroll.dev/sources".into(),
            RecordedSources::from(sources).as_json().into(),
        );
        a.insert("hashroll.dev/rolled-at".into(), rolled_at.into());
        w
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_roll_within_a_pause_period_waits_for_its_end() {
        let paused = json!({
            "reloader.stakater.com/auto": "true",
            "deployment.reloader.stakater.com/pause-period": "5m",
        });
        let before = cluster(&[("db", "a")]);
        let w = recorded(
            WorkloadKind::Deployment,
            &wire(WorkloadKind::Deployment, paused),
            &before,
            "2026-01-01T10:00:00Z",
        );
        let after = cluster(&[("db", "b")]);
        let now = at("2026-01-01T10:01:00Z");
        let r = workload_report(WorkloadKind::Deployment, &w, &settings(), &after, now);
        assert_eq!(r.verdict.outcome, Outcome::Paused, "{r:#?}");
        assert_eq!(r.verdict.at.as_deref(), Some("2026-01-01T10:05:00Z"));
        assert!(
            r.verdict
                .reason
                .contains("Secret db (keys it uses: password)")
        );
        // Once the period is over, it rolls.
        let later = at("2026-01-01T10:06:00Z");
        let r = workload_report(WorkloadKind::Deployment, &w, &settings(), &after, later);
        assert_eq!(r.verdict.outcome, Outcome::WouldRoll, "{r:#?}");
        assert!(r.verdict.reason.contains("pod template"), "{r:#?}");
    }

    #[test]
    fn a_rollout_with_the_restart_strategy_would_roll_with_restart_at() {
        let restart = json!({
            "hashroll.dev/reload": "true",
            "hashroll.dev/rollout-strategy": "restart",
        });
        let w = recorded(
            WorkloadKind::Rollout,
            &wire(WorkloadKind::Rollout, restart),
            &cluster(&[("db", "a")]),
            "2026-01-01T10:00:00Z",
        );
        let r = workload_report(
            WorkloadKind::Rollout,
            &w,
            &settings(),
            &cluster(&[("db", "b")]),
            at("2026-01-02T00:00:00Z"),
        );
        assert_eq!(r.verdict.outcome, Outcome::WouldRoll);
        assert!(r.verdict.reason.contains("spec.restartAt"), "{r:#?}");
    }

    #[test]
    fn the_kind_and_the_namespace_gate_every_verdict() {
        let w = wire(
            WorkloadKind::Deployment,
            json!({"hashroll.dev/reload": "true"}),
        );
        let mut s = settings();
        s.workload_kinds.remove(&WorkloadKind::Deployment);
        let now = at("2026-01-01T00:00:00Z");
        let c = cluster(&[("db", "a")]);
        let r = workload_report(WorkloadKind::Deployment, &w, &s, &c, now);
        assert_eq!(r.verdict.outcome, Outcome::NotActedOn);
        assert!(r.verdict.reason.contains("--workload-kinds"), "{r:#?}");
        let mut c = cluster(&[("db", "a")]);
        c.not_acted_on = Some("--ignore-namespaces names shop".into());
        let r = workload_report(WorkloadKind::Deployment, &w, &settings(), &c, now);
        assert_eq!(r.verdict.outcome, Outcome::NotActedOn);
        // What it tracks is still said.
        assert_eq!(r.sources[0].name, "db");
        assert_eq!(r.sources[0].state, SourceStatus::NotRecorded);
    }

    #[test]
    fn sources_matched_by_a_pattern_say_which() {
        let w = wire(
            WorkloadKind::Deployment,
            json!({"secret.reloader.stakater.com/reload": "db-.*"}),
        );
        let c = cluster(&[("db-main", "a"), ("other", "a")]);
        let r = workload_report(
            WorkloadKind::Deployment,
            &w,
            &settings(),
            &c,
            at("2026-01-01T00:00:00Z"),
        );
        let names: Vec<&str> = r.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db-main"], "{r:#?}");
        assert_eq!(
            r.sources[0].via,
            ["pattern ^(?:db-.*)$ (secret.reloader.stakater.com/reload)"]
        );
        assert_eq!(r.verdict.outcome, Outcome::WouldRecord);
    }
}
