//! A workload reduced to what reload decisions need: identity, tracking rules, what hashroll last recorded
//! on it, and a digest of its pod template.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::model::annotations::{
    ROLLED_AT_ANNOTATION, ROLLOUT_FAILED_ANNOTATION, ROLLOUT_WAVE, SOURCES_ANNOTATION,
    STAMP_ANNOTATION, TEMPLATE_ANNOTATION,
};
use crate::model::hashing::Stamp;
use crate::model::kind::{WorkloadId, WorkloadKind};
use crate::model::policy::{PolicyError, PolicySettings, ReloadPolicy, parse_policy};
use crate::model::references::{Reference, pod_spec_references};
use crate::model::rollout::Progress;
use crate::model::vault_refs::template_vault_references;

/// Whether and how a workload takes part.
#[derive(Debug, Clone, PartialEq)]
pub enum Tracking {
    /// Not opted in (or opted out).
    Off,
    /// A malformed annotation: the workload is skipped and told so with a Warning Event.
    Invalid(PolicyError),
    /// Opted in; `policy` says what to track, `references` is what the pod spec uses.
    On {
        policy: ReloadPolicy,
        references: Vec<Reference>,
    },
}

/// What hashroll last wrote on the workload, read back from its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The recorded stamp, if present and well-formed.
    pub stamp: Option<Stamp>,
    /// Per-source digests (`secret/db` → digest); None if absent or unreadable.
    pub sources: Option<RecordedSources>,
    /// When hashroll last rolled the workload; None if never, or unreadable.
    pub rolled_at: Option<jiff::Timestamp>,
    /// The roll whose rollout failed and halted its change, if any: its stamp, and the digests of the
    /// sources it changed (`secret/db` → digest). Boxed: rare, and every workload carries the field.
    pub rollout_failed: Option<Box<(Stamp, BTreeMap<String, String>)>>,
}

impl Stored {
    /// Reads hashroll's annotations from a workload's metadata annotations.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Stored {
        Stored {
            stamp: annotations
                .get(STAMP_ANNOTATION)
                .and_then(|s| Stamp::parse(s)),
            sources: annotations
                .get(SOURCES_ANNOTATION)
                .and_then(|s| serde_json::from_str::<BTreeMap<String, String>>(s).ok())
                .map(RecordedSources::from),
            rolled_at: annotations
                .get(ROLLED_AT_ANNOTATION)
                .and_then(|s| s.parse().ok()),
            rollout_failed: annotations
                .get(ROLLOUT_FAILED_ANNOTATION)
                .and_then(|s| s.split_once(' '))
                .and_then(|(stamp, changed)| {
                    Some(Box::new((
                        Stamp::parse(stamp)?,
                        serde_json::from_str(changed).ok()?,
                    )))
                }),
        }
    }
}

/// [`Stored`] as decisions read it: the per-source map parsed, once per decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    pub stamp: Option<Stamp>,
    pub sources: Option<BTreeMap<String, String>>,
}

impl Stored {
    /// Parses what is recorded, for one decision.
    pub fn read(&self) -> Recorded {
        Recorded {
            stamp: self.stamp.clone(),
            sources: self.sources.as_ref().map(RecordedSources::to_map),
        }
    }
}

/// The per-source map recorded on a workload, kept as its canonical JSON in one allocation: it is read
/// only when a decision is made, while every tracked workload holds one for as long as hashroll runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSources(Box<str>);

impl RecordedSources {
    /// The annotation value: the map as JSON, keys sorted.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The map (`secret/db` → digest).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        // Written by `From` below from a map of strings: it always parses.
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl From<BTreeMap<String, String>> for RecordedSources {
    fn from(map: BTreeMap<String, String>) -> Self {
        RecordedSources(
            serde_json::to_string(&map)
                .unwrap_or_default()
                .into_boxed_str(),
        )
    }
}

/// An object's uid, in 16 bytes when it is a UUID in the API server's own spelling (lowercase, hyphens),
/// else as written: every tracked workload keeps one, for its Events' object reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uid {
    Uuid([u8; 16]),
    Other(Box<str>),
}

impl Uid {
    pub fn new(uid: &str) -> Uid {
        parse_uuid(uid).map_or_else(|| Uid::Other(uid.into()), Uid::Uuid)
    }
}

impl std::fmt::Display for Uid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Uid::Other(s) => f.write_str(s),
            Uid::Uuid(b) => {
                let h = hex::encode(b);
                write!(
                    f,
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            }
        }
    }
}

/// The 16 bytes of `8-4-4-4-12` lowercase hex; None for anything that would not print back the same.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let digits: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
    if digits.len() != 32
        || !digits
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(&digits, &mut out).ok()?;
    Some(out)
}

/// A workload reduced to what reload decisions need: identity, tracking rules, stored state.
#[derive(Debug, Clone)]
pub struct WorkloadSummary {
    pub id: std::sync::Arc<WorkloadId>,
    /// For the Event's object reference.
    pub uid: Option<Uid>,
    /// The object's resourceVersion, when numeric (it is on every API server built on etcd): a watch
    /// event older than a patch response already applied must not roll the state back.
    pub resource_version: Option<u64>,
    pub tracking: Tracking,
    pub stored: Stored,
    /// Digest of the pod template without hashroll's annotation: when it changes the workload rolls by
    /// itself, so config changes seen at the same time need no roll of their own.
    pub template_digest: [u8; 16],
    /// Its rollout as its controller reports it (set at the edge, from the status; Done when unknown).
    pub progress: Progress,
    /// `hashroll.dev/rollout-wave`; None: the last wave.
    pub wave: Option<u32>,
}

impl WorkloadSummary {
    /// The workload's roll halted its change, and nothing was written on it since (it still records that
    /// roll's stamp): the digests of the sources that roll changed.
    pub fn halted(&self) -> Option<&BTreeMap<String, String>> {
        let (stamp, changed) = self.stored.rollout_failed.as_deref()?;
        (self.stored.stamp.as_ref() == Some(stamp)).then_some(changed)
    }
}

/// Reads `hashroll.dev/rollout-wave`: a small non-negative integer.
fn rollout_wave(annotations: &BTreeMap<String, String>) -> Result<Option<u32>, PolicyError> {
    let Some(v) = annotations.get(ROLLOUT_WAVE) else {
        return Ok(None);
    };
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|w| *w <= 1000)
        .map(Some)
        .ok_or_else(|| PolicyError {
            annotation: ROLLOUT_WAVE.into(),
            value: v.clone(),
            reason: "expected a wave number from 0 to 1000 (lower waves roll first)".into(),
        })
}

impl WorkloadSummary {
    /// Reduces a workload's metadata and pod template. None for objects without name or namespace.
    pub fn reduce(
        kind: WorkloadKind,
        meta: &ObjectMeta,
        template: Option<&PodTemplateSpec>,
        settings: PolicySettings,
    ) -> Option<WorkloadSummary> {
        let id = std::sync::Arc::new(WorkloadId::new(
            kind,
            meta.namespace.clone()?,
            meta.name.clone()?,
        ));
        let empty = BTreeMap::new();
        let annotations = meta.annotations.as_ref().unwrap_or(&empty);
        let template_annotations = template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .unwrap_or(&empty);
        let wave = rollout_wave(annotations);
        let tracking = match parse_policy(annotations, template_annotations, kind, settings) {
            Err(e) => Tracking::Invalid(e),
            Ok(Some(_)) if wave.is_err() => Tracking::Invalid(wave.clone().unwrap_err()),
            Ok(None) => Tracking::Off,
            Ok(Some(policy)) => Tracking::On {
                policy,
                references: template
                    .map(|t| {
                        let mut refs = t.spec.as_ref().map(pod_spec_references).unwrap_or_default();
                        // Vault sorts after the Kubernetes kinds: the list stays sorted.
                        refs.extend(template_vault_references(t, settings.vault_key_level));
                        refs
                    })
                    .unwrap_or_default(),
            },
        };
        Some(WorkloadSummary {
            id,
            uid: meta.uid.as_deref().map(Uid::new),
            resource_version: meta
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok()),
            stored: Stored::from_annotations(annotations),
            template_digest: template_digest(template),
            tracking,
            progress: Progress::Done,
            wave: wave.ok().flatten(),
        })
    }

    /// True when `self` is known to be an older version of the same object than `other`.
    pub fn is_older_than(&self, other: &WorkloadSummary) -> bool {
        self.uid == other.uid
            && matches!((self.resource_version, other.resource_version), (Some(a), Some(b)) if a < b)
    }

    /// True when `other` differs in anything that can change a decision (not status, not replicas).
    pub fn differs_in_substance(&self, other: &WorkloadSummary) -> bool {
        self.stored != other.stored
            || self.template_digest != other.template_digest
            || self.tracking != other.tracking
    }
}

fn template_digest(template: Option<&PodTemplateSpec>) -> [u8; 16] {
    let mut template = template.cloned().unwrap_or_default();
    if let Some(meta) = template.metadata.as_mut() {
        if let Some(a) = meta.annotations.as_mut() {
            a.remove(TEMPLATE_ANNOTATION);
        }
        // hashroll's first roll adds `metadata.annotations` (and maybe `metadata`) to a template that had
        // none: emptied again, they must hash like absent ones, or the roll looks like a user's edit.
        if meta.annotations.as_ref().is_some_and(|a| a.is_empty()) {
            meta.annotations = None;
        }
    }
    if template.metadata.as_ref() == Some(&ObjectMeta::default()) {
        template.metadata = None;
    }
    digest16(&serde_json::to_vec(&template).unwrap_or_default())
}

fn digest16(bytes: &[u8]) -> [u8; 16] {
    let full = Sha256::digest(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(annotations: Option<&[(&str, &str)]>) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}, "annotations": annotations.map(|a| {
                a.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
            })},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        }))
        .unwrap()
    }

    #[test]
    fn hashrolls_own_template_annotation_does_not_change_the_template_digest() {
        let untouched = template_digest(Some(&template(None)));
        let rolled = template(Some(&[(TEMPLATE_ANNOTATION, "v1.abc.def")]));
        assert_eq!(template_digest(Some(&rolled)), untouched);
        let bare = PodTemplateSpec::default();
        let mut rolled_bare = bare.clone();
        rolled_bare.metadata = Some(ObjectMeta {
            annotations: Some(BTreeMap::from([(TEMPLATE_ANNOTATION.into(), "x".into())])),
            ..ObjectMeta::default()
        });
        assert_eq!(
            template_digest(Some(&rolled_bare)),
            template_digest(Some(&bare))
        );
        let edited = template(Some(&[("team", "a")]));
        assert_ne!(template_digest(Some(&edited)), untouched);
    }

    fn summary(uid: &str, rv: &str) -> WorkloadSummary {
        let meta = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("app".into()),
            uid: Some(uid.into()),
            resource_version: Some(rv.into()),
            ..ObjectMeta::default()
        };
        WorkloadSummary::reduce(
            WorkloadKind::Deployment,
            &meta,
            None,
            PolicySettings::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_rollout_wave_is_a_small_number_and_anything_else_is_named_as_malformed() {
        let with = |wave: &str| {
            let meta = ObjectMeta {
                name: Some("web".into()),
                namespace: Some("app".into()),
                annotations: Some(BTreeMap::from([
                    ("hashroll.dev/reload".to_string(), "true".to_string()),
                    (ROLLOUT_WAVE.to_string(), wave.to_string()),
                ])),
                ..ObjectMeta::default()
            };
            WorkloadSummary::reduce(
                WorkloadKind::Deployment,
                &meta,
                None,
                PolicySettings::default(),
            )
            .unwrap()
        };
        assert_eq!(with("0").wave, Some(0));
        assert_eq!(with(" 2 ").wave, Some(2));
        for bad in ["-1", "first", "1001"] {
            match with(bad).tracking {
                Tracking::Invalid(e) => assert_eq!(e.annotation, ROLLOUT_WAVE, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(summary("u", "1").wave, None, "the last wave by default");
    }

    #[test]
    fn uids_print_back_as_written() {
        for uid in [
            "0f8e2c1a-5b3d-4e6f-8a9b-0c1d2e3f4a5b",
            "0F8E2C1A-5B3D-4E6F-8A9B-0C1D2E3F4A5B",
            "uid-web",
            "0f8e2c1a-5b3d-4e6f-8a9b-0c1d2e3f4a5",
            "0f8e2c1a05b3d-4e6f-8a9b-0c1d2e3f4a5b",
            "0f8e2c1a-5b3d-4e6f-8a9b-0c1d2e3f4a5g",
            "",
        ] {
            assert_eq!(Uid::new(uid).to_string(), uid);
        }
        assert!(matches!(
            Uid::new("0f8e2c1a-5b3d-4e6f-8a9b-0c1d2e3f4a5b"),
            Uid::Uuid(_)
        ));
        assert!(matches!(Uid::new("uid-web"), Uid::Other(_)));
    }

    #[test]
    fn an_older_version_of_the_same_object_is_recognised() {
        assert!(summary("u1", "10").is_older_than(&summary("u1", "12")));
        assert!(!summary("u1", "12").is_older_than(&summary("u1", "10")));
        assert!(!summary("u1", "12").is_older_than(&summary("u1", "12")));
        // A re-created object (new uid) is never "older", whatever its version.
        assert!(!summary("u2", "5").is_older_than(&summary("u1", "12")));
        // Opaque versions are not compared.
        assert!(!summary("u1", "abc").is_older_than(&summary("u1", "12")));
    }
}
