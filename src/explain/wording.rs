//! How `explain` names where a source comes from, why it is not watched or ignored, and how a workload
//! opted in (or did not): annotation names come from the model's one list of them.

use std::collections::BTreeMap;

use crate::explain::report::Settings;
use crate::model::annotations::*;
use crate::model::kind::SourceKind;
use crate::model::policy::{NamePattern, PolicySettings, RefMode, ReloadPolicy, TrackedSource};
use crate::model::source::SourceSummary;

/// Where a tracked source comes from: the pod spec's uses, and the annotations naming it.
pub fn via_of(
    t: &TrackedSource,
    policy: &ReloadPolicy,
    spec_uses: Vec<String>,
    workload: &BTreeMap<String, String>,
    template: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut via = spec_uses;
    for (kind, pattern) in &policy.named {
        if *kind != t.id.kind || !pattern.matches(&t.id.name) {
            continue;
        }
        let own = own_list_annotation(t.id.kind);
        let listed_in_own = [workload, template].iter().any(|a| {
            a.get(own)
                .is_some_and(|v| v.split(',').any(|e| *e.trim() == *t.id.name))
        });
        via.push(match pattern {
            NamePattern::Exact(_) if listed_in_own => format!("annotation {own}"),
            NamePattern::Exact(_) => {
                format!("annotation {}", stakater_reload_annotation(t.id.kind))
            }
            NamePattern::Regex(re) => format!(
                "pattern {} ({})",
                re.as_str(),
                stakater_reload_annotation(t.id.kind)
            ),
        });
    }
    via.dedup();
    via
}

pub fn own_list_annotation(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Secret => SECRETS,
        SourceKind::ConfigMap => CONFIGMAPS,
        // No list of its own: named only through Reloader's annotation.
        SourceKind::SecretProviderClass => STAKATER_SPC_RELOAD,
        SourceKind::Vault => {
            "(none: Vault paths are tracked through the pod spec's vault: references)"
        }
    }
}

pub fn stakater_reload_annotation(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Secret => STAKATER_SECRET_RELOAD,
        SourceKind::ConfigMap => STAKATER_CONFIGMAP_RELOAD,
        SourceKind::SecretProviderClass => STAKATER_SPC_RELOAD,
        SourceKind::Vault => own_list_annotation(kind),
    }
}

pub fn reload_annotation(kind: SourceKind, settings: PolicySettings) -> &'static str {
    if settings.stakater_compat {
        stakater_reload_annotation(kind)
    } else {
        own_list_annotation(kind)
    }
}

pub fn exclude_annotation(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Secret => {
            "hashroll.dev/exclude-secrets or secrets.exclude.reloader.stakater.com/reload"
        }
        SourceKind::ConfigMap => {
            "hashroll.dev/exclude-configmaps or configmaps.exclude.reloader.stakater.com/reload"
        }
        SourceKind::SecretProviderClass => STAKATER_SPC_EXCLUDE,
        SourceKind::Vault => "(none for Vault paths)",
    }
}

/// Why a source is not watched: which flag hides it.
pub fn not_watched_why(kind: SourceKind, s: Option<&SourceSummary>, settings: &Settings) -> String {
    if !settings.visibility.watched.contains(&kind) {
        format!("not watched: --watch leaves out {}", kind.info().plural)
    } else if s.is_some_and(|s| s.excluded_type.is_some()) {
        "not watched: its type is in --exclude-secret-types".into()
    } else {
        "not watched: no such object matches --resource-label-selector (it may exist without the labels)"
            .into()
    }
}

pub fn ignored_why(t: &TrackedSource, s: Option<&SourceSummary>) -> String {
    match s {
        Some(s) if s.ignore => format!("ignored: {IGNORE_ANNOTATION} or {STAKATER_IGNORE} on it"),
        _ if t.require_stakater_match => format!(
            "ignored: the workload tracks with {STAKATER_SEARCH}, and the object lacks {STAKATER_MATCH}: \"true\""
        ),
        _ => "ignored".into(),
    }
}

/// The annotations that opt in (and the flag), as found on the workload.
const OPT_IN: [&str; 9] = [
    RELOAD,
    SECRETS,
    CONFIGMAPS,
    STAKATER_AUTO,
    STAKATER_SECRET_AUTO,
    STAKATER_CONFIGMAP_AUTO,
    STAKATER_SECRET_RELOAD,
    STAKATER_CONFIGMAP_RELOAD,
    STAKATER_SEARCH,
];

pub fn found_annotations(
    workload: &BTreeMap<String, String>,
    template: &BTreeMap<String, String>,
    settings: &Settings,
) -> Vec<String> {
    OPT_IN
        .iter()
        .filter(|a| settings.policy.stakater_compat || a.starts_with("hashroll.dev/"))
        .filter_map(|a| {
            let (v, on) = match (workload.get(*a), template.get(*a)) {
                (Some(v), _) => (v, ""),
                (None, Some(v)) => (v, " (pod template)"),
                (None, None) => return None,
            };
            Some(format!("{a}: {v:?}{on}"))
        })
        .collect()
}

pub fn opted_in(
    policy: &ReloadPolicy,
    workload: &BTreeMap<String, String>,
    template: &BTreeMap<String, String>,
    settings: &Settings,
) -> String {
    let mut by = found_annotations(workload, template, settings);
    if by.is_empty() && settings.policy.auto_reload_all {
        by.push("--auto-reload-all".into());
    }
    let mut tracks = Vec::new();
    for (kind, mode) in [
        (SourceKind::Secret, policy.refs.secrets),
        (SourceKind::ConfigMap, policy.refs.configmaps),
        (
            SourceKind::SecretProviderClass,
            policy.refs.provider_classes,
        ),
    ] {
        match mode {
            RefMode::All => tracks.push(format!("the {} its pod spec uses", kind.info().plural)),
            RefMode::Matched => tracks.push(format!(
                "the {} its pod spec uses that carry {STAKATER_MATCH}",
                kind.info().plural
            )),
            RefMode::Off => {}
        }
    }
    if !policy.named.is_empty() {
        tracks.push("the sources its annotations name".into());
    }
    format!(
        "opted in by {}: tracks {}",
        by.join(", "),
        tracks.join(" and ")
    )
}

pub fn not_opted_in(
    workload: &BTreeMap<String, String>,
    template: &BTreeMap<String, String>,
    settings: &Settings,
) -> String {
    let found = found_annotations(workload, template, settings);
    if found.is_empty() {
        let all = if settings.policy.auto_reload_all {
            ""
        } else {
            ", and --auto-reload-all is off"
        };
        return format!(
            "not opted in: no {RELOAD}: \"true\" nor another annotation that opts in{all}"
        );
    }
    format!("not opted in ({}) ", found.join(", "))
        .trim_end()
        .to_string()
}
