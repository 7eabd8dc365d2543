//! Opt-in policy: what a workload's annotations say hashroll should track for it.
//!
//! hashroll's own annotations live under `hashroll.dev/`. With Stakater compatibility on, the
//! annotations of Stakater Reloader keep their documented meaning, so a cluster can switch
//! controllers without editing its workloads.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use regex::Regex;

use crate::model::annotations::*;
use crate::model::go_syntax::{go_duration, parse_bool};
use crate::model::kind::{SourceId, SourceKind, WorkloadKind};
use crate::model::names::is_dns1123_subdomain;
use crate::model::references::{KeySelection, Reference};

/// Installation-wide switches that change how annotations are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicySettings {
    /// Treat every workload as `hashroll.dev/reload: "true"` unless it opts out.
    pub auto_reload_all: bool,
    /// Honour Stakater Reloader's annotations.
    pub stakater_compat: bool,
    /// Vault paths are tracked key by key (`--vault-key-level`), else by their version.
    pub vault_key_level: bool,
}

/// A source name, given exactly or as an anchored regular expression.
#[derive(Clone, Debug)]
pub enum NamePattern {
    /// A literal name; the index can look it up directly.
    Exact(String),
    /// A regular expression already anchored as `^(?:…)$`.
    Regex(Regex),
}

impl NamePattern {
    /// Whether `name` is this name or matches this expression as a whole.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Regex(re) => re.is_match(name),
        }
    }

    /// The literal name, or the anchored expression's source.
    pub fn as_str(&self) -> &str {
        match self {
            NamePattern::Exact(n) => n,
            NamePattern::Regex(re) => re.as_str(),
        }
    }
}

// Regex has no equality; two patterns are equal when they are written the same way.
impl PartialEq for NamePattern {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (NamePattern::Exact(a), NamePattern::Exact(b)) => a == b,
            (NamePattern::Regex(a), NamePattern::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for NamePattern {}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a workload tracks the pod spec's references of one source kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefMode {
    /// Not tracked.
    #[default]
    Off,
    /// Every reference of this kind is tracked.
    All,
    /// Tracked only while the source carries `reloader.stakater.com/match: "true"` (Stakater `search`).
    Matched,
}

/// Which of the pod spec's own references a workload tracks, per source kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefTracking {
    pub secrets: RefMode,
    pub configmaps: RefMode,
    /// SecretProviderClasses mounted through csi volumes.
    pub provider_classes: RefMode,
}

impl RefTracking {
    fn mode(&self, kind: SourceKind) -> RefMode {
        match kind {
            SourceKind::Secret => self.secrets,
            SourceKind::ConfigMap => self.configmaps,
            SourceKind::SecretProviderClass => self.provider_classes,
            // A Vault value is a secret: tracked where Secrets are, but there is no Stakater match
            // annotation on a Vault path, so only whole-hearted tracking counts.
            SourceKind::Vault => match self.secrets {
                RefMode::All => RefMode::All,
                _ => RefMode::Off,
            },
        }
    }

    /// Whether pod-spec references of `kind` are tracked at all.
    pub fn tracks(&self, kind: SourceKind) -> bool {
        self.mode(kind) != RefMode::Off
    }

    /// Whether a tracked reference of `kind` needs the source's Stakater match annotation.
    pub fn requires_match(&self, kind: SourceKind) -> bool {
        self.mode(kind) == RefMode::Matched
    }
}

/// What an opted-in workload's annotations ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadPolicy {
    /// Which pod-spec references count.
    pub refs: RefTracking,
    /// Sources tracked whole even if the pod spec doesn't reference them.
    pub named: Vec<(SourceKind, NamePattern)>,
    /// Sources never tracked, whatever else says so.
    pub excluded: Vec<(SourceKind, NamePattern)>,
    /// Roll an Argo Rollout with `spec.restartAt` (`hashroll.dev/rollout-strategy` or Reloader's
    /// `reloader.stakater.com/rollout-strategy: restart`).
    pub rollout_restart: bool,
    /// A Deployment's `deployment.reloader.stakater.com/pause-period`: after a roll, the next one waits
    /// until this long after it.
    pub pause_period: Option<Duration>,
}

/// A malformed annotation; the workload is left alone until it is fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {reason} (value {value:?})")]
pub struct PolicyError {
    pub annotation: String,
    pub value: String,
    pub reason: String,
}

/// One source a workload tracks, known by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedSource {
    pub id: SourceId,
    /// The keys whose changes roll the workload.
    pub keys: KeySelection,
    /// A missing source (or key) is not a reason to hold the workload.
    pub optional: bool,
    /// Only counts while the source carries `reloader.stakater.com/match: "true"`.
    pub require_stakater_match: bool,
}

/// Everything one workload tracks in its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// Sources known by name, sorted by id, one entry each.
    pub exact: Vec<TrackedSource>,
    /// Name expressions: every matching source of that kind in the namespace is tracked whole and
    /// optional, unless excluded (check [`ReloadPolicy::is_excluded`]).
    pub patterns: Vec<(SourceKind, NamePattern)>,
    /// Sources referenced or named that an exclude annotation removed, sorted: not tracked, but their
    /// changes are counted as excluded, and `explain` lists them.
    pub excluded: Vec<SourceId>,
}

/// None = the workload is not opted in. `workload` and `template` are the annotations of the
/// workload's metadata and of its pod template's metadata.
///
/// hashroll's own annotations are read from both; on the same key, the workload's metadata wins.
/// Reloader's are read where Reloader reads them: per source kind, its opt-in keys (`auto`, the kind's
/// `auto` and `reload` list, `search`) from the metadata when it carries any of them, else all from the
/// template; excludes, `rollout-strategy` and `pause-period` from the metadata only.
///
/// `hashroll.dev/reload: "false"` opts out of everything before any other annotation is read. Every
/// other annotation is checked even when the workload turns out not to be opted in, so a typo in an
/// annotation meant to opt in is reported instead of silently ignored.
pub fn parse_policy(
    workload: &BTreeMap<String, String>,
    template: &BTreeMap<String, String>,
    workload_kind: WorkloadKind,
    settings: PolicySettings,
) -> Result<Option<ReloadPolicy>, PolicyError> {
    let get = |key: &str| {
        workload
            .get(key)
            .or_else(|| template.get(key))
            .map(String::as_str)
    };

    let reload = boolean(RELOAD, get(RELOAD))?;
    if reload == Some(false) {
        return Ok(None);
    }

    let mut named = Vec::new();
    let mut excluded = Vec::new();
    for (annotation, kind, exclude) in [
        (SECRETS, SourceKind::Secret, false),
        (CONFIGMAPS, SourceKind::ConfigMap, false),
        (EXCLUDE_SECRETS, SourceKind::Secret, true),
        (EXCLUDE_CONFIGMAPS, SourceKind::ConfigMap, true),
    ] {
        let out = if exclude { &mut excluded } else { &mut named };
        if let Some(value) = get(annotation) {
            for name in exact_names(annotation, value)? {
                push_unique(out, kind, NamePattern::Exact(name));
            }
        }
    }

    let mut rollout_restart = match get(ROLLOUT_STRATEGY) {
        None => None,
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "restart" => Some(true),
            "annotation" => Some(false),
            _ => {
                return Err(err(
                    ROLLOUT_STRATEGY,
                    v,
                    "expected \"restart\" or \"annotation\"",
                ));
            }
        },
    };

    // Without Reloader's annotations, every kind follows hashroll's own opt-in.
    let own = reload == Some(true) || (settings.auto_reload_all && reload.is_none());
    let mut modes =
        [own; SourceKind::ALL.len()].map(|on| if on { RefMode::All } else { RefMode::Off });
    let mut pause_period = None;
    if settings.stakater_compat {
        for (i, kind) in SourceKind::ALL.into_iter().enumerate() {
            let s = stakater_kind(workload, template, kind)?;
            for pattern in name_patterns(s.keys.reload, s.reload)? {
                push_unique(&mut named, kind, pattern);
            }
            for name in entries(s.exclude) {
                push_unique(&mut excluded, kind, NamePattern::Exact(name.to_string()));
            }
            // Reloader: its own `auto` or the kind's `auto` switches the kind on; the installation-wide
            // default applies only while both are unset or empty, so any value of either (`"false"`, or
            // one Reloader cannot read) withdraws it. `search` counts only where `auto` does not.
            let on = reload == Some(true)
                || s.auto == Some(true)
                || s.typed_auto == Some(true)
                || (settings.auto_reload_all && reload.is_none() && s.unset_autos);
            modes[i] = match (on, s.search) {
                (true, _) => RefMode::All,
                (false, true) => RefMode::Matched,
                (false, false) => RefMode::Off,
            };
        }
        if rollout_restart.is_none() && workload_kind == WorkloadKind::Rollout {
            // Reloader reads it on the Rollout's metadata; any value but `restart` rolls the template.
            rollout_restart = Some(
                workload.get(STAKATER_ROLLOUT_STRATEGY).map(String::as_str) == Some("restart"),
            );
        }
        if workload_kind == WorkloadKind::Deployment {
            pause_period = workload
                .get(STAKATER_PAUSE_PERIOD)
                .map(|v| pause_period_value(v))
                .transpose()?;
        }
    }
    let refs = RefTracking {
        secrets: modes[0],
        configmaps: modes[1],
        provider_classes: modes[2],
    };

    if !SourceKind::ALL.into_iter().any(|k| refs.tracks(k)) && named.is_empty() {
        return Ok(None);
    }
    Ok(Some(ReloadPolicy {
        refs,
        named,
        excluded,
        rollout_restart: rollout_restart.unwrap_or(false),
        pause_period,
    }))
}

/// The names of Reloader's annotations that concern one source kind.
struct StakaterKeys {
    reload: &'static str,
    typed_auto: &'static str,
    exclude: &'static str,
}

impl StakaterKeys {
    fn of(kind: SourceKind) -> StakaterKeys {
        match kind {
            SourceKind::Secret => StakaterKeys {
                reload: STAKATER_SECRET_RELOAD,
                typed_auto: STAKATER_SECRET_AUTO,
                exclude: STAKATER_SECRET_EXCLUDE,
            },
            SourceKind::ConfigMap => StakaterKeys {
                reload: STAKATER_CONFIGMAP_RELOAD,
                typed_auto: STAKATER_CONFIGMAP_AUTO,
                exclude: STAKATER_CONFIGMAP_EXCLUDE,
            },
            SourceKind::SecretProviderClass => StakaterKeys {
                reload: STAKATER_SPC_RELOAD,
                typed_auto: STAKATER_SPC_AUTO,
                exclude: STAKATER_SPC_EXCLUDE,
            },
            SourceKind::Vault => unreachable!("Reloader has no annotations for Vault paths"),
        }
    }
}

/// Reloader's annotations for one source kind, read where Reloader reads them.
struct StakaterKind<'a> {
    keys: StakaterKeys,
    auto: Option<bool>,
    typed_auto: Option<bool>,
    /// Neither `auto` nor the kind's `auto` has a value (absent or empty).
    unset_autos: bool,
    search: bool,
    reload: &'a str,
    exclude: &'a str,
}

fn stakater_kind<'a>(
    workload: &'a BTreeMap<String, String>,
    template: &'a BTreeMap<String, String>,
    kind: SourceKind,
) -> Result<StakaterKind<'a>, PolicyError> {
    let keys = StakaterKeys::of(kind);
    let opt_in = [keys.reload, STAKATER_AUTO, keys.typed_auto, STAKATER_SEARCH];
    let from = if opt_in.iter().any(|k| workload.contains_key(*k)) {
        workload
    } else {
        template
    };
    let get = |key: &str| from.get(key).map(String::as_str);
    let (auto, typed_auto) = (get(STAKATER_AUTO), get(keys.typed_auto));
    Ok(StakaterKind {
        auto: go_bool(STAKATER_AUTO, auto)?,
        typed_auto: go_bool(keys.typed_auto, typed_auto)?,
        unset_autos: auto.unwrap_or_default().is_empty()
            && typed_auto.unwrap_or_default().is_empty(),
        search: search(get(STAKATER_SEARCH))?,
        reload: get(keys.reload).unwrap_or_default(),
        exclude: workload
            .get(keys.exclude)
            .map(String::as_str)
            .unwrap_or_default(),
        keys,
    })
}

impl ReloadPolicy {
    /// What one workload tracks in its namespace, given its policy and pod-spec references.
    ///
    /// A source that is both referenced and named is tracked whole, with the reference's
    /// `optional` (a required use stays required) and without any Stakater match requirement,
    /// since naming it is explicit. Excluded sources are dropped from both.
    pub fn tracked(&self, namespace: &str, refs: &[Reference]) -> Tracked {
        let mut exact: BTreeMap<SourceId, TrackedSource> = BTreeMap::new();
        let mut excluded: BTreeSet<SourceId> = BTreeSet::new();
        let mut exclude = |kind: SourceKind, name: &str| {
            let hit = self.is_excluded(kind, name);
            if hit {
                excluded.insert(SourceId::new(kind, namespace, name));
            }
            hit
        };

        for r in refs {
            if !self.refs.tracks(r.kind) || exclude(r.kind, &r.name) {
                continue;
            }
            let named = self.is_named(r.kind, &r.name);
            let source = TrackedSource {
                id: SourceId::new(r.kind, namespace, r.name.clone()),
                keys: if named {
                    KeySelection::All
                } else {
                    r.keys.clone()
                },
                optional: r.optional,
                require_stakater_match: !named && self.refs.requires_match(r.kind),
            };
            upsert(&mut exact, source);
        }

        let mut patterns: Vec<(SourceKind, NamePattern)> = Vec::new();
        for (kind, pattern) in &self.named {
            match pattern {
                NamePattern::Exact(name) => {
                    if exclude(*kind, name) {
                        continue;
                    }
                    let reference = refs.iter().find(|r| r.kind == *kind && r.name == *name);
                    upsert(
                        &mut exact,
                        TrackedSource {
                            id: SourceId::new(*kind, namespace, name.clone()),
                            keys: KeySelection::All,
                            optional: reference.is_none_or(|r| r.optional),
                            require_stakater_match: false,
                        },
                    );
                }
                NamePattern::Regex(_) => {
                    // A referenced name the expression matches is tracked whole by name, keeping
                    // the reference's `optional`, even if reference tracking is off for its kind.
                    for r in refs.iter().filter(|r| r.kind == *kind) {
                        if pattern.matches(&r.name) && !exclude(r.kind, &r.name) {
                            upsert(
                                &mut exact,
                                TrackedSource {
                                    id: SourceId::new(r.kind, namespace, r.name.clone()),
                                    keys: KeySelection::All,
                                    optional: r.optional,
                                    require_stakater_match: false,
                                },
                            );
                        }
                    }
                    if !patterns.iter().any(|(k, p)| k == kind && p == pattern) {
                        patterns.push((*kind, pattern.clone()));
                    }
                }
            }
        }

        Tracked {
            exact: exact.into_values().collect(),
            patterns,
            excluded: excluded.into_iter().collect(),
        }
    }

    /// Whether an exclude annotation names this source.
    pub fn is_excluded(&self, kind: SourceKind, name: &str) -> bool {
        self.excluded
            .iter()
            .any(|(k, p)| *k == kind && p.matches(name))
    }

    /// Whether a named-source annotation names this source.
    pub fn is_named(&self, kind: SourceKind, name: &str) -> bool {
        self.named
            .iter()
            .any(|(k, p)| *k == kind && p.matches(name))
    }
}

/// Merges a tracked source into the map: keys union, `optional` only if both are, match required
/// only if both require it.
fn upsert(exact: &mut BTreeMap<SourceId, TrackedSource>, source: TrackedSource) {
    match exact.get_mut(&source.id) {
        Some(prev) => {
            prev.keys = std::mem::replace(&mut prev.keys, KeySelection::All).union(source.keys);
            prev.optional &= source.optional;
            prev.require_stakater_match &= source.require_stakater_match;
        }
        None => {
            exact.insert(source.id.clone(), source);
        }
    }
}

fn push_unique(out: &mut Vec<(SourceKind, NamePattern)>, kind: SourceKind, p: NamePattern) {
    if !out.iter().any(|(k, q)| *k == kind && *q == p) {
        out.push((kind, p));
    }
}

fn err(annotation: &str, value: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        annotation: annotation.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Reads one of hashroll's boolean annotations: `true`/`false`, any case, surrounding blanks ignored.
fn boolean(annotation: &str, value: Option<&str>) -> Result<Option<bool>, PolicyError> {
    let Some(value) = value else { return Ok(None) };
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        _ => Err(err(annotation, value, "expected \"true\" or \"false\"")),
    }
}

/// Reads one of Reloader's boolean annotations as Reloader does (Go's `strconv.ParseBool`): `1`, `t`,
/// `T`, `TRUE`, `true`, `True` and `0`, `f`, `F`, `FALSE`, `false`, `False`. Empty is unset. Reloader
/// takes anything else for `false`; hashroll reports it.
fn go_bool(annotation: &str, value: Option<&str>) -> Result<Option<bool>, PolicyError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => parse_bool(v).map(Some).ok_or_else(|| {
            err(
                annotation,
                v,
                "expected a boolean: true, false, True, False, TRUE, FALSE, t, f, T, F, 1 or 0",
            )
        }),
    }
}

/// Reloader's `search`: only `"true"` switches it on. Other booleans (and empty) leave it off, as in
/// Reloader; anything that is no boolean at all is reported.
fn search(value: Option<&str>) -> Result<bool, PolicyError> {
    match value {
        Some("true") => Ok(true),
        other => go_bool(STAKATER_SEARCH, other).map(|_| false),
    }
}

/// Reloader's `pause-period`: a Go duration (`30s`, `5m`, `1h30m`, `1.5h`), greater than zero.
fn pause_period_value(value: &str) -> Result<Duration, PolicyError> {
    go_duration(value).filter(|d| !d.is_zero()).ok_or_else(|| {
        err(
            STAKATER_PAUSE_PERIOD,
            value,
            "expected a duration greater than zero, such as 30s, 5m, 1h30m or 1.5h",
        )
    })
}

/// The non-empty, trimmed entries of a comma list.
fn entries(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// A comma list of object names, each checked to be a possible Secret/ConfigMap name.
fn exact_names(annotation: &str, value: &str) -> Result<Vec<String>, PolicyError> {
    entries(value)
        .map(|name| {
            if is_dns1123_subdomain(name) {
                Ok(name.to_string())
            } else {
                Err(err(
                    annotation,
                    value,
                    format!(
                        "{name:?} is not a valid object name (lower-case letters, digits, '-' and \
                         '.', starting and ending with a letter or digit, at most 253 characters)"
                    ),
                ))
            }
        })
        .collect()
}

/// A comma list of Stakater name expressions. Plain names stay exact so they can be indexed.
fn name_patterns(annotation: &str, value: &str) -> Result<Vec<NamePattern>, PolicyError> {
    entries(value)
        .map(|entry| {
            if entry
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Ok(NamePattern::Exact(entry.to_string()));
            }
            Regex::new(&format!("^(?:{entry})$"))
                .map(NamePattern::Regex)
                .map_err(|e| {
                    // The regex crate's message spans several lines; the last one says what is wrong.
                    let msg = e.to_string();
                    let what = msg
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("invalid")
                        .trim()
                        .trim_start_matches("error: ")
                        .to_string();
                    err(
                        annotation,
                        value,
                        format!("{entry:?} is not a valid regular expression: {what}"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use SourceKind::{ConfigMap, Secret};

    const NS: &str = "ns";
    const PLAIN: PolicySettings = PolicySettings {
        auto_reload_all: false,
        stakater_compat: false,
        vault_key_level: false,
    };
    const COMPAT: PolicySettings = PolicySettings {
        auto_reload_all: false,
        stakater_compat: true,
        vault_key_level: false,
    };
    const DEPLOY: WorkloadKind = WorkloadKind::Deployment;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(
        pairs: &[(&str, &str)],
        s: PolicySettings,
    ) -> Result<Option<ReloadPolicy>, PolicyError> {
        parse_policy(&map(pairs), &BTreeMap::new(), WorkloadKind::Deployment, s)
    }

    fn on(pairs: &[(&str, &str)], s: PolicySettings) -> ReloadPolicy {
        parse(pairs, s)
            .expect("annotations should be valid")
            .expect("workload should be opted in")
    }

    /// (Secret references tracked, ConfigMap references tracked, either needs the match annotation).
    fn refs_of(p: &ReloadPolicy) -> (bool, bool, bool) {
        (
            p.refs.tracks(Secret),
            p.refs.tracks(ConfigMap),
            p.refs.requires_match(Secret) || p.refs.requires_match(ConfigMap),
        )
    }

    fn reference(kind: SourceKind, name: &str, keys: &[&str], optional: bool) -> Reference {
        Reference {
            kind,
            name: name.into(),
            keys: if keys.is_empty() {
                KeySelection::All
            } else {
                KeySelection::Keys(keys.iter().map(|k| k.to_string()).collect())
            },
            optional,
        }
    }

    fn ts(
        kind: SourceKind,
        name: &str,
        keys: KeySelection,
        optional: bool,
        m: bool,
    ) -> TrackedSource {
        TrackedSource {
            id: SourceId::new(kind, NS, name),
            keys,
            optional,
            require_stakater_match: m,
        }
    }

    fn exact(p: &NamePattern) -> Option<&str> {
        match p {
            NamePattern::Exact(n) => Some(n),
            NamePattern::Regex(_) => None,
        }
    }

    #[test]
    fn no_annotations_means_not_opted_in() {
        assert_eq!(parse(&[], PLAIN), Ok(None));
        assert_eq!(parse(&[], COMPAT), Ok(None));
        assert_eq!(parse(&[("unrelated", "x")], COMPAT), Ok(None));
    }

    #[test]
    fn reload_true_tracks_all_references_case_insensitively() {
        for v in ["true", "TRUE", " True "] {
            let p = on(&[(RELOAD, v)], PLAIN);
            assert_eq!(refs_of(&p), (true, true, false));
            assert!(p.named.is_empty() && p.excluded.is_empty() && !p.rollout_restart);
        }
    }

    #[test]
    fn reload_false_opts_out_even_with_lists_and_auto_reload_all() {
        let all = PolicySettings {
            auto_reload_all: true,
            stakater_compat: true,
            vault_key_level: false,
        };
        let annotations = [
            (RELOAD, "False"),
            (SECRETS, "a"),
            (STAKATER_AUTO, "true"),
            (STAKATER_SECRET_RELOAD, "b"),
            // Not even checked: an opted-out workload is never reported.
            (ROLLOUT_STRATEGY, "bogus"),
        ];
        assert_eq!(parse(&annotations, all), Ok(None));
    }

    #[test]
    fn invalid_reload_value_names_the_annotation() {
        let e = parse(&[(RELOAD, "yes please")], PLAIN).unwrap_err();
        assert_eq!(e.annotation, RELOAD);
        assert_eq!(e.value, "yes please");
        let msg = e.to_string();
        assert!(
            msg.contains("hashroll.dev/reload") && msg.contains("yes please"),
            "{msg}"
        );
        assert!(parse(&[(RELOAD, "")], PLAIN).is_err());
    }

    #[test]
    fn workload_metadata_wins_over_template_metadata() {
        let workload = map(&[(RELOAD, "false")]);
        let template = map(&[(RELOAD, "true"), (SECRETS, "extra")]);
        assert_eq!(parse_policy(&workload, &template, DEPLOY, PLAIN), Ok(None));

        let workload = map(&[(RELOAD, "true")]);
        let template = map(&[(RELOAD, "false")]);
        let p = parse_policy(&workload, &template, DEPLOY, PLAIN)
            .unwrap()
            .unwrap();
        assert_eq!(refs_of(&p), (true, true, false));

        // Keys only on the template still count.
        let p = parse_policy(&BTreeMap::new(), &map(&[(CONFIGMAPS, "c")]), DEPLOY, PLAIN)
            .unwrap()
            .unwrap();
        assert_eq!(p.named, vec![(ConfigMap, NamePattern::Exact("c".into()))]);
    }

    #[test]
    fn named_lists_opt_in_for_those_names_only() {
        let p = on(&[(SECRETS, " a, ,b ,a"), (CONFIGMAPS, "x.y,")], PLAIN);
        assert_eq!(refs_of(&p), (false, false, false));
        assert_eq!(
            p.named,
            vec![
                (Secret, NamePattern::Exact("a".into())),
                (Secret, NamePattern::Exact("b".into())),
                (ConfigMap, NamePattern::Exact("x.y".into())),
            ]
        );
        // An empty list opts nothing in.
        assert_eq!(parse(&[(SECRETS, " , ")], PLAIN), Ok(None));
    }

    #[test]
    fn invalid_names_are_reported_with_annotation_and_name() {
        for (annotation, bad) in [
            (SECRETS, "Upper"),
            (CONFIGMAPS, "-lead"),
            (EXCLUDE_SECRETS, "trail."),
            (EXCLUDE_CONFIGMAPS, "under_score"),
        ] {
            let value = format!("good,{bad}");
            let e = parse(&[(annotation, value.as_str()), (RELOAD, "true")], PLAIN).unwrap_err();
            assert_eq!(e.annotation, annotation);
            assert!(e.reason.contains(bad), "{e}");
        }
        let long = "a".repeat(254);
        assert!(parse(&[(SECRETS, long.as_str())], PLAIN).is_err());
        let max = "a".repeat(253);
        assert!(parse(&[(SECRETS, max.as_str())], PLAIN).unwrap().is_some());
    }

    #[test]
    fn dns1123_subdomain_rule() {
        use crate::model::names::is_dns1123_subdomain;
        for ok in ["a", "a-b.c", "0", "db.prod-1"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in [
            "", "A", "a_b", "-a", "a-", ".a", "a.", "a b", "ä", "a..b", "a.-b", "a-.b",
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn rollout_strategy_values() {
        assert!(on(&[(RELOAD, "true"), (ROLLOUT_STRATEGY, "restart")], PLAIN).rollout_restart);
        assert!(on(&[(RELOAD, "true"), (ROLLOUT_STRATEGY, " Restart ")], PLAIN).rollout_restart);
        assert!(!on(&[(RELOAD, "true"), (ROLLOUT_STRATEGY, "annotation")], PLAIN).rollout_restart);
        let e = parse(&[(RELOAD, "true"), (ROLLOUT_STRATEGY, "recreate")], PLAIN).unwrap_err();
        assert_eq!(e.annotation, ROLLOUT_STRATEGY);
        // Checked even when nothing opts the workload in: a typo is not silently ignored.
        assert!(parse(&[(ROLLOUT_STRATEGY, "recreate")], PLAIN).is_err());
        // A strategy alone does not opt in.
        assert_eq!(parse(&[(ROLLOUT_STRATEGY, "restart")], PLAIN), Ok(None));
    }

    #[test]
    fn auto_reload_all_opts_everyone_in_unless_they_opt_out() {
        let all = PolicySettings {
            auto_reload_all: true,
            stakater_compat: false,
            vault_key_level: false,
        };
        assert_eq!(refs_of(&on(&[], all)), (true, true, false));
        assert_eq!(parse(&[(RELOAD, "false")], all), Ok(None));
        // Without compat, Stakater's opt-out is just an unknown annotation.
        assert_eq!(
            refs_of(&on(&[(STAKATER_AUTO, "false")], all)),
            (true, true, false)
        );

        let all_compat = PolicySettings {
            auto_reload_all: true,
            stakater_compat: true,
            vault_key_level: false,
        };
        assert_eq!(parse(&[(STAKATER_AUTO, "false")], all_compat), Ok(None));
        // Stakater's opt-out withdraws the default only; explicit names still apply.
        let p = on(&[(STAKATER_AUTO, "false"), (SECRETS, "s")], all_compat);
        assert_eq!(refs_of(&p), (false, false, false));
        assert_eq!(p.named.len(), 1);
        // hashroll's own explicit annotation beats Stakater's.
        let p = on(&[(STAKATER_AUTO, "false"), (RELOAD, "true")], all_compat);
        assert_eq!(refs_of(&p), (true, true, false));
    }

    #[test]
    fn stakater_annotations_are_ignored_without_compat() {
        let annotations = [
            (STAKATER_AUTO, "true"),
            (STAKATER_SECRET_RELOAD, "a"),
            (STAKATER_SEARCH, "not-a-bool"),
            (STAKATER_CONFIGMAP_EXCLUDE, "(bad"),
        ];
        assert_eq!(parse(&annotations, PLAIN), Ok(None));
    }

    #[test]
    fn stakater_auto_annotations_select_kinds() {
        assert_eq!(
            refs_of(&on(&[(STAKATER_AUTO, "true")], COMPAT)),
            (true, true, false)
        );
        assert_eq!(
            refs_of(&on(&[(STAKATER_SECRET_AUTO, "true")], COMPAT)),
            (true, false, false)
        );
        assert_eq!(
            refs_of(&on(&[(STAKATER_CONFIGMAP_AUTO, "true")], COMPAT)),
            (false, true, false)
        );
        assert_eq!(
            refs_of(&on(
                &[
                    (STAKATER_SECRET_AUTO, "true"),
                    (STAKATER_CONFIGMAP_AUTO, "true")
                ],
                COMPAT
            )),
            (true, true, false)
        );
        assert_eq!(parse(&[(STAKATER_SECRET_AUTO, "false")], COMPAT), Ok(None));
    }

    #[test]
    fn invalid_stakater_booleans_name_the_annotation() {
        for a in [
            STAKATER_AUTO,
            STAKATER_SECRET_AUTO,
            STAKATER_CONFIGMAP_AUTO,
            STAKATER_SEARCH,
        ] {
            let e = parse(&[(a, "maybe")], COMPAT).unwrap_err();
            assert_eq!(e.annotation, a);
            assert!(e.to_string().contains(a));
        }
    }

    #[test]
    fn search_requires_match_unless_auto_also_applies() {
        let p = on(&[(STAKATER_SEARCH, "true")], COMPAT);
        assert_eq!(refs_of(&p), (true, true, true));
        assert!(p.refs.requires_match(Secret) && p.refs.requires_match(ConfigMap));

        let p = on(
            &[(STAKATER_SEARCH, "true"), (STAKATER_AUTO, "true")],
            COMPAT,
        );
        assert_eq!(refs_of(&p), (true, true, false));
        let p = on(&[(STAKATER_SEARCH, "true"), (RELOAD, "true")], COMPAT);
        assert_eq!(refs_of(&p), (true, true, false));

        // A kind-specific auto wins for its kind only.
        let p = on(
            &[(STAKATER_SEARCH, "true"), (STAKATER_SECRET_AUTO, "true")],
            COMPAT,
        );
        assert!(!p.refs.requires_match(Secret));
        assert!(p.refs.requires_match(ConfigMap));
        let refs = [
            reference(Secret, "s", &[], false),
            reference(ConfigMap, "c", &[], false),
        ];
        assert_eq!(
            p.tracked(NS, &refs).exact,
            vec![
                ts(Secret, "s", KeySelection::All, false, false),
                ts(ConfigMap, "c", KeySelection::All, false, true),
            ]
        );
        assert_eq!(parse(&[(STAKATER_SEARCH, "false")], COMPAT), Ok(None));
    }

    #[test]
    fn stakater_reload_lists_are_anchored_patterns() {
        let p = on(
            &[
                (STAKATER_SECRET_RELOAD, "db, app-.*"),
                (STAKATER_CONFIGMAP_RELOAD, "cfg.v1"),
            ],
            COMPAT,
        );
        assert_eq!(refs_of(&p), (false, false, false));
        assert_eq!(p.named.len(), 3);
        let (k, db) = &p.named[0];
        assert_eq!((*k, exact(db)), (Secret, Some("db")));
        assert!(db.matches("db") && !db.matches("db2") && !db.matches("xdb"));
        let (_, app) = &p.named[1];
        assert!(exact(app).is_none());
        assert!(app.matches("app-1") && !app.matches("myapp-1") && !app.matches("app"));
        let (k, cfg) = &p.named[2];
        assert_eq!(*k, ConfigMap);
        assert!(exact(cfg).is_none(), "'.' makes it an expression");
        assert!(cfg.matches("cfg.v1") && cfg.matches("cfgxv1") && !cfg.matches("cfg.v12"));

        // Alternation cannot escape the anchors.
        let p = on(&[(STAKATER_SECRET_RELOAD, "a|b")], COMPAT);
        let (_, ab) = &p.named[0];
        assert!(ab.matches("a") && ab.matches("b") && !ab.matches("ab") && !ab.matches("xa"));
    }

    #[test]
    fn invalid_regex_names_annotation_and_entry() {
        for a in [STAKATER_SECRET_RELOAD, STAKATER_CONFIGMAP_RELOAD] {
            let e = parse(&[(a, "ok,db-(x"), (RELOAD, "true")], COMPAT).unwrap_err();
            assert_eq!(e.annotation, a);
            assert!(e.reason.contains("db-(x"), "{e}");
            assert!(!e.reason.contains('\n'), "{e}");
        }
        // Reloader's excludes are names, not expressions: nothing to be malformed.
        for a in [STAKATER_SECRET_EXCLUDE, STAKATER_CONFIGMAP_EXCLUDE] {
            assert!(parse(&[(a, "ok,db-(x"), (RELOAD, "true")], COMPAT).is_ok());
        }
    }

    #[test]
    fn excludes_remove_references_and_named_sources() {
        let p = on(
            &[
                (RELOAD, "true"),
                (SECRETS, "named,gone"),
                (EXCLUDE_SECRETS, "gone,db"),
                (EXCLUDE_CONFIGMAPS, "c1"),
                (STAKATER_CONFIGMAP_EXCLUDE, "tmp-1, cfg.v1"),
            ],
            COMPAT,
        );
        let refs = [
            reference(Secret, "db", &["k"], false),
            reference(Secret, "keep", &[], false),
            reference(ConfigMap, "c1", &[], false),
            reference(ConfigMap, "tmp-1", &[], false),
            reference(ConfigMap, "db", &[], true),
        ];
        let t = p.tracked(NS, &refs);
        assert_eq!(
            t.exact,
            vec![
                ts(Secret, "keep", KeySelection::All, false, false),
                ts(Secret, "named", KeySelection::All, true, false),
                ts(ConfigMap, "db", KeySelection::All, true, false),
            ]
        );
        assert!(t.patterns.is_empty());
        // Reloader's excludes are exact names: `cfg.v1` is not an expression matching `cfgxv1`.
        assert!(p.is_excluded(ConfigMap, "cfg.v1"));
        assert!(!p.is_excluded(ConfigMap, "cfgxv1"));
        assert!(!p.is_excluded(ConfigMap, "tmp-9"));
        assert!(!p.is_excluded(Secret, "c1"), "excludes are per kind");
    }

    #[test]
    fn secret_provider_classes_opt_in_and_out_like_reloader_reads_them() {
        use SourceKind::SecretProviderClass as Spc;
        let refs = [
            reference(Secret, "s", &[], false),
            reference(Spc, "vault", &[], false),
            reference(Spc, "tmp", &[], false),
        ];
        let tracked = |p: &ReloadPolicy| -> Vec<(SourceKind, String)> {
            let t = p.tracked(NS, &refs);
            t.exact
                .iter()
                .map(|t| (t.id.kind, t.id.name.to_string()))
                .collect()
        };
        let both = vec![(Spc, "tmp".into()), (Spc, "vault".into())];
        // Reloader's class-kind `auto` tracks only classes; `auto`, and hashroll's own reload, everything.
        let p = on(&[(STAKATER_SPC_AUTO, "true")], COMPAT);
        assert_eq!(tracked(&p), both);
        for opt_in in [(STAKATER_AUTO, "true"), (RELOAD, "true")] {
            let p = on(&[opt_in], COMPAT);
            assert_eq!(tracked(&p).len(), 3, "{opt_in:?}");
        }
        // Its reload list names classes; its exclude list (exact names, metadata only) removes them.
        let p = on(&[(STAKATER_SPC_RELOAD, "vault")], COMPAT);
        assert_eq!(tracked(&p), vec![(Spc, "vault".into())]);
        let p = on(
            &[(STAKATER_AUTO, "true"), (STAKATER_SPC_EXCLUDE, "tmp")],
            COMPAT,
        );
        assert_eq!(
            tracked(&p),
            vec![(Secret, "s".into()), (Spc, "vault".into())]
        );
        assert!(p.is_excluded(Spc, "tmp") && !p.is_excluded(Secret, "tmp"));
        // Without the compat, Reloader's annotations mean nothing.
        assert_eq!(parse(&[(STAKATER_SPC_AUTO, "true")], PLAIN), Ok(None));
    }

    #[test]
    fn tracked_filters_references_by_kind_and_keeps_keys() {
        let p = on(&[(STAKATER_CONFIGMAP_AUTO, "true")], COMPAT);
        let refs = [
            reference(Secret, "s", &[], false),
            reference(ConfigMap, "c", &["a", "b"], true),
        ];
        let t = p.tracked(NS, &refs);
        let keys = KeySelection::Keys(["a", "b"].into_iter().collect());
        assert_eq!(t.exact, vec![ts(ConfigMap, "c", keys, true, false)]);
    }

    #[test]
    fn referenced_and_named_merge_to_all_keys_with_reference_optional() {
        let p = on(&[(RELOAD, "true"), (SECRETS, "db,opt,extra")], PLAIN);
        let refs = [
            reference(Secret, "db", &["password"], false),
            reference(Secret, "opt", &["k"], true),
        ];
        let t = p.tracked(NS, &refs);
        assert_eq!(
            t.exact,
            vec![
                ts(Secret, "db", KeySelection::All, false, false),
                ts(Secret, "extra", KeySelection::All, true, false),
                ts(Secret, "opt", KeySelection::All, true, false),
            ]
        );

        // Named only (reference tracking off): a required reference still makes it required.
        let p = on(&[(SECRETS, "db")], PLAIN);
        let t = p.tracked(NS, &refs);
        assert_eq!(
            t.exact,
            vec![ts(Secret, "db", KeySelection::All, false, false)]
        );
    }

    #[test]
    fn named_sources_need_no_match_even_under_search() {
        let p = on(
            &[
                (STAKATER_SEARCH, "true"),
                (STAKATER_SECRET_RELOAD, "db,app-.*"),
            ],
            COMPAT,
        );
        let refs = [
            reference(Secret, "db", &["k"], false),
            reference(Secret, "app-1", &["k"], false),
            reference(Secret, "other", &["k"], false),
        ];
        let t = p.tracked(NS, &refs);
        let other = KeySelection::key("k");
        assert_eq!(
            t.exact,
            vec![
                ts(Secret, "app-1", KeySelection::All, false, false),
                ts(Secret, "db", KeySelection::All, false, false),
                ts(Secret, "other", other, false, true),
            ]
        );
        assert_eq!(t.patterns.len(), 1);
        assert_eq!(t.patterns[0].0, Secret);
        assert_eq!(t.patterns[0].1.as_str(), "^(?:app-.*)$");
    }

    #[test]
    fn patterns_are_deduplicated_and_output_has_no_duplicates() {
        let p = on(
            &[
                (RELOAD, "true"),
                (SECRETS, "a"),
                (STAKATER_SECRET_RELOAD, "a,x.*,x.*"),
            ],
            COMPAT,
        );
        let refs = [reference(Secret, "a", &["k"], true)];
        let t = p.tracked(NS, &refs);
        assert_eq!(
            t.exact,
            vec![ts(Secret, "a", KeySelection::All, true, false)]
        );
        assert_eq!(t.patterns.len(), 1);
    }

    #[test]
    fn reloader_booleans_read_like_go_parse_bool() {
        for v in ["1", "t", "T", "TRUE", "true", "True"] {
            for a in [STAKATER_AUTO, STAKATER_SECRET_AUTO, STAKATER_CONFIGMAP_AUTO] {
                assert!(parse(&[(a, v)], COMPAT).unwrap().is_some(), "{a}: {v:?}");
            }
        }
        for v in ["0", "f", "F", "FALSE", "false", "False"] {
            for a in [STAKATER_AUTO, STAKATER_SECRET_AUTO, STAKATER_CONFIGMAP_AUTO] {
                assert_eq!(parse(&[(a, v)], COMPAT), Ok(None), "{a}: {v:?}");
            }
        }
        // Empty is unset, as in Reloader; what Go cannot read is reported.
        assert_eq!(parse(&[(STAKATER_AUTO, "")], COMPAT), Ok(None));
        for v in ["yes", " true", "TrUe", "2"] {
            let e = parse(&[(STAKATER_AUTO, v)], COMPAT).unwrap_err();
            assert_eq!(
                (e.annotation.as_str(), e.value.as_str()),
                (STAKATER_AUTO, v)
            );
        }
        // hashroll's own stays strict.
        assert!(parse(&[(RELOAD, "1")], COMPAT).is_err());
    }

    #[test]
    fn search_counts_only_when_exactly_true() {
        assert_eq!(
            refs_of(&on(&[(STAKATER_SEARCH, "true")], COMPAT)),
            (true, true, true)
        );
        for v in ["True", "TRUE", "1", "t", "false", ""] {
            assert_eq!(parse(&[(STAKATER_SEARCH, v)], COMPAT), Ok(None), "{v:?}");
        }
        assert!(parse(&[(STAKATER_SEARCH, "on")], COMPAT).is_err());
    }

    #[test]
    fn reloader_excludes_are_exact_names_read_from_the_metadata_only() {
        let refs = [
            reference(ConfigMap, "cfg.v1", &[], false),
            reference(ConfigMap, "cfgxv1", &[], false),
        ];
        let p = on(
            &[
                (STAKATER_AUTO, "true"),
                (STAKATER_CONFIGMAP_EXCLUDE, " cfg.v1 ,"),
            ],
            COMPAT,
        );
        let names: Vec<_> = p
            .tracked(NS, &refs)
            .exact
            .into_iter()
            .map(|t| t.id.name.to_string())
            .collect();
        assert_eq!(names, ["cfgxv1"]);

        // On the pod template, Reloader never reads an exclude.
        let workload = map(&[(STAKATER_AUTO, "true")]);
        let template = map(&[(STAKATER_CONFIGMAP_EXCLUDE, "cfg.v1")]);
        let p = parse_policy(&workload, &template, DEPLOY, COMPAT)
            .unwrap()
            .unwrap();
        assert!(p.excluded.is_empty());
    }

    #[test]
    fn reloader_opt_in_keys_come_from_the_metadata_else_all_from_the_template_per_kind() {
        let both = |w: &[(&str, &str)], t: &[(&str, &str)]| {
            parse_policy(&map(w), &map(t), DEPLOY, COMPAT).unwrap()
        };
        // The metadata carries an opt-in key: the template's are not read, not even `auto`.
        let p = both(&[(STAKATER_SEARCH, "true")], &[(STAKATER_AUTO, "true")]).unwrap();
        assert_eq!(refs_of(&p), (true, true, true));
        assert_eq!(
            both(&[(STAKATER_AUTO, "false")], &[(STAKATER_AUTO, "true")]),
            None
        );
        // None on the metadata (an exclude is not an opt-in key): the template's count.
        let p = both(
            &[(STAKATER_SECRET_EXCLUDE, "x")],
            &[(STAKATER_AUTO, "true"), (STAKATER_SECRET_RELOAD, "db")],
        )
        .unwrap();
        assert_eq!(refs_of(&p), (true, true, false));
        assert_eq!(p.named, vec![(Secret, NamePattern::Exact("db".into()))]);
        assert_eq!(p.excluded, vec![(Secret, NamePattern::Exact("x".into()))]);
        // Per kind: a ConfigMap list on the metadata leaves Secrets to the template.
        let p = both(
            &[(STAKATER_CONFIGMAP_RELOAD, "c")],
            &[(STAKATER_AUTO, "true"), (STAKATER_CONFIGMAP_AUTO, "true")],
        )
        .unwrap();
        assert_eq!(refs_of(&p), (true, false, false));
        assert_eq!(p.named, vec![(ConfigMap, NamePattern::Exact("c".into()))]);
        // A malformed value is only reported where it is read.
        assert!(both(&[(STAKATER_AUTO, "true")], &[(STAKATER_AUTO, "yes")]).is_some());
    }

    #[test]
    fn auto_reload_all_is_withdrawn_per_kind_by_any_value_of_its_auto_annotations() {
        let all = PolicySettings {
            auto_reload_all: true,
            stakater_compat: true,
            vault_key_level: false,
        };
        assert_eq!(
            refs_of(&on(&[(STAKATER_SECRET_AUTO, "false")], all)),
            (false, true, false)
        );
        assert_eq!(
            refs_of(&on(&[(STAKATER_CONFIGMAP_AUTO, "0")], all)),
            (true, false, false)
        );
        // Empty is unset: the default still applies.
        assert_eq!(
            refs_of(&on(&[(STAKATER_AUTO, "")], all)),
            (true, true, false)
        );
        assert_eq!(parse(&[(STAKATER_AUTO, "F")], all), Ok(None));
    }

    #[test]
    fn reloader_rollout_strategy_restart_is_read_on_the_metadata() {
        let restart = |w: &[(&str, &str)], t: &[(&str, &str)], s| {
            parse_policy(&map(w), &map(t), WorkloadKind::Rollout, s)
                .unwrap()
                .unwrap()
                .rollout_restart
        };
        let auto = (STAKATER_AUTO, "true");
        assert!(restart(
            &[auto, (STAKATER_ROLLOUT_STRATEGY, "restart")],
            &[],
            COMPAT
        ));
        // Reloader rolls the template for any other value, and never reads the template's.
        for v in ["rollout", "Restart", " restart", "bogus"] {
            assert!(
                !restart(&[auto, (STAKATER_ROLLOUT_STRATEGY, v)], &[], COMPAT),
                "{v:?}"
            );
        }
        assert!(!restart(
            &[auto],
            &[(STAKATER_ROLLOUT_STRATEGY, "restart")],
            COMPAT
        ));
        // hashroll's own annotation, when present, decides.
        let own = (ROLLOUT_STRATEGY, "annotation");
        assert!(!restart(
            &[auto, own, (STAKATER_ROLLOUT_STRATEGY, "restart")],
            &[],
            COMPAT
        ));
        let plain = [(RELOAD, "true"), (STAKATER_ROLLOUT_STRATEGY, "restart")];
        assert!(!restart(&plain, &[], PLAIN));
    }

    #[test]
    fn pause_period_is_a_positive_go_duration_on_a_deployments_metadata() {
        let auto = (STAKATER_AUTO, "true");
        let period = |kind, w: &[(&str, &str)], t: &[(&str, &str)]| {
            parse_policy(&map(w), &map(t), kind, COMPAT).map(|p| p.unwrap().pause_period)
        };
        let five = [auto, (STAKATER_PAUSE_PERIOD, "5m")];
        assert_eq!(
            period(DEPLOY, &five, &[]),
            Ok(Some(Duration::from_secs(300)))
        );
        assert_eq!(
            period(DEPLOY, &[auto], &five),
            Ok(None),
            "not read on the template"
        );
        let bad = [auto, (STAKATER_PAUSE_PERIOD, "5 minutes")];
        assert_eq!(
            period(WorkloadKind::StatefulSet, &bad, &[]),
            Ok(None),
            "Deployments only"
        );
        for v in ["5 minutes", "0", "-1m", "", "5"] {
            let e = period(DEPLOY, &[auto, (STAKATER_PAUSE_PERIOD, v)], &[]).unwrap_err();
            assert_eq!(e.annotation, STAKATER_PAUSE_PERIOD, "{v:?}");
        }
        let plain = [(RELOAD, "true"), (STAKATER_PAUSE_PERIOD, "5m")];
        let p = parse_policy(&map(&plain), &BTreeMap::new(), DEPLOY, PLAIN);
        assert_eq!(p.unwrap().unwrap().pause_period, None);
    }
}
