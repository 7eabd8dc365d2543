//! What hashroll deserializes from the API server for Secrets and ConfigMaps: metadata and one digest per
//! key, each value hashed the moment it is parsed. No decoded value outlives its own key's parsing, so the
//! memory a list page or a watch event costs does not grow with the size of the data.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, Time};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::model::annotations::{CANARY_LABEL, CANARY_TOKEN_ANNOTATION};
use crate::model::hashing::{KeyDigest, KeyDigester, Section, key_digest};
use crate::model::kind::{SourceKind, WorkloadKind};
use crate::model::policy::PolicySettings;
use crate::model::rollout::{StatusWire, progress};
use crate::model::source::SourceSummary;
use crate::model::workload::WorkloadSummary;

/// A Secret as hashroll reads it: `data` arrives as digests.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct SecretDigests {
    #[serde(default, deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "secret_data", skip_serializing)]
    pub data: BTreeMap<String, KeyDigest>,
}

/// A ConfigMap as hashroll reads it: `data` and `binaryData` arrive as digests (kept apart by section).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ConfigMapDigests {
    #[serde(default, deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "text_data", skip_serializing)]
    pub data: BTreeMap<String, KeyDigest>,
    #[serde(
        default,
        rename = "binaryData",
        deserialize_with = "binary_data",
        skip_serializing
    )]
    pub binary_data: BTreeMap<String, KeyDigest>,
}

macro_rules! core_v1_resource {
    ($ty:ty, $kind:literal, $plural:literal) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = "v1";
            const GROUP: &'static str = "";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::ListableResource for $ty {
            const LIST_KIND: &'static str = concat!($kind, "List");
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

core_v1_resource!(SecretDigests, "Secret", "secrets");
core_v1_resource!(ConfigMapDigests, "ConfigMap", "configmaps");

/// Any workload kind as hashroll reads it: metadata and the pod template (from `spec.template`, or a
/// CronJob's `spec.jobTemplate.spec.template`); status and everything else in the spec are skipped while
/// parsing. The template stays JSON here and is parsed per object, so one odd workload cannot fail a list.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WorkloadWire {
    #[serde(default, deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<WorkloadSpecWire>,
    /// Only what tells whether its rollout is done (see [`crate::model::rollout`]).
    #[serde(default)]
    status: Option<StatusWire>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct WorkloadSpecWire {
    #[serde(default)]
    replicas: Option<i64>,
    #[serde(default)]
    template: Option<serde_json::Value>,
    #[serde(default, rename = "jobTemplate")]
    job_template: Option<JobTemplateWire>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct JobTemplateWire {
    #[serde(default)]
    spec: Option<JobSpecWire>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct JobSpecWire {
    #[serde(default)]
    template: Option<serde_json::Value>,
}

impl WorkloadWire {
    /// The pod template where the kind table says `kind` keeps it; None if absent or not a valid pod
    /// template. Only the template paths the table uses are parsed at all (the fields above).
    pub fn pod_template(&self, kind: WorkloadKind) -> Option<PodTemplateSpec> {
        let spec = self.spec.as_ref()?;
        let t = match kind.template_path() {
            ["spec", "template"] => spec.template.as_ref(),
            ["spec", "jobTemplate", "spec", "template"] => {
                spec.job_template.as_ref()?.spec.as_ref()?.template.as_ref()
            }
            _ => None,
        }?;
        // A `&Value` is itself a deserializer: no copy of the template's JSON tree.
        serde::Deserialize::deserialize(t).ok()
    }

    /// Reduces the workload to its summary; None for objects without name or namespace.
    pub fn summary(&self, kind: WorkloadKind, policy: PolicySettings) -> Option<WorkloadSummary> {
        let mut s = WorkloadSummary::reduce(
            kind,
            &self.metadata,
            self.pod_template(kind).as_ref(),
            policy,
        )?;
        s.progress = progress(
            kind,
            self.metadata.generation,
            self.spec.as_ref().and_then(|s| s.replicas),
            self.status.as_ref(),
        );
        Some(s)
    }
}

impl SecretDigests {
    /// The Secret as hashroll keeps it; None without name or namespace.
    pub fn summary(&self, stakater_compat: bool) -> Option<SourceSummary> {
        SourceSummary::new(
            SourceKind::Secret,
            &self.metadata,
            self.data.clone(),
            stakater_compat,
        )
    }
}

impl ConfigMapDigests {
    /// The token of the canary write this ConfigMap carries, if it is hashroll's canary.
    pub fn canary_token(&self) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(CANARY_LABEL)?;
        self.metadata
            .annotations
            .as_ref()?
            .get(CANARY_TOKEN_ANNOTATION)
            .map(String::as_str)
    }

    /// The ConfigMap as hashroll keeps it (`data` and `binaryData` together, their digests apart by
    /// section); None without name or namespace.
    pub fn summary(&self, stakater_compat: bool) -> Option<SourceSummary> {
        let mut keys = self.data.clone();
        keys.extend(self.binary_data.iter().map(|(k, d)| (k.clone(), *d)));
        SourceSummary::new(SourceKind::ConfigMap, &self.metadata, keys, stakater_compat)
    }
}

impl kube::Resource for WorkloadWire {
    type DynamicType = kube::api::ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn kind(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn group(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn api_version(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The metadata fields hashroll and kube-runtime's watcher read. Everything else is skipped while parsing
/// without being allocated: `managedFields` (dozens of small blocks per object) but for the newest write
/// time in it (`hashroll explain` tells a change still within the debounce by it), and kubectl's
/// last-applied annotation (a whole copy of the object, a Secret's data included).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    generation: Option<i64>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "lean_annotations")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    creation_timestamp: Option<Time>,
    #[serde(default, deserialize_with = "newest_write")]
    managed_fields: Option<Time>,
}

/// Written by `kubectl apply`; never read by hashroll.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn lean_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = LeanMeta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        generation: m.generation,
        labels: m.labels,
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        // The newest write only, as the one entry.
        managed_fields: m.managed_fields.map(|time| {
            vec![ManagedFieldsEntry {
                time: Some(time),
                ..ManagedFieldsEntry::default()
            }]
        }),
        ..ObjectMeta::default()
    })
}

/// The newest `time` of the `managedFields` entries, each entry's other fields skipped unread.
fn newest_write<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Time>, D::Error> {
    Ok(Option::<NewestWrite>::deserialize(d)?.and_then(|n| n.0))
}

struct NewestWrite(Option<Time>);

impl<'de> Deserialize<'de> for NewestWrite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            time: Option<Time>,
        }
        struct Newest;
        impl<'de> Visitor<'de> for Newest {
            type Value = NewestWrite;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of managed fields entries")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NewestWrite, A::Error> {
                let mut newest: Option<Time> = None;
                while let Some(e) = seq.next_element::<Entry>()? {
                    if e.time.as_ref().map(|t| t.0) > newest.as_ref().map(|t| t.0) {
                        newest = e.time;
                    }
                }
                Ok(NewestWrite(newest))
            }
        }
        d.deserialize_seq(Newest)
    }
}

fn lean_annotations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    Ok(Option::<LeanAnnotations>::deserialize(d)?.map(|a| a.0))
}

/// Annotations without kubectl's last-applied copy, which is skipped unread.
struct LeanAnnotations(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for LeanAnnotations {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Lean;
        impl<'de> Visitor<'de> for Lean {
            type Value = LeanAnnotations;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of annotations")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LeanAnnotations, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == LAST_APPLIED {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    } else {
                        out.insert(key, map.next_value()?);
                    }
                }
                Ok(LeanAnnotations(out))
            }
        }
        d.deserialize_map(Lean)
    }
}

/// How the values of one map are encoded and which section their digests belong to.
#[derive(Clone, Copy)]
enum Values {
    /// Secret `data`: base64.
    Base64Data,
    /// ConfigMap `data`: plain strings.
    Text,
    /// ConfigMap `binaryData`: base64.
    Base64Binary,
}

fn secret_data<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, KeyDigest>, D::Error> {
    d.deserialize_option(DigestMap(Values::Base64Data))
}

fn text_data<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, KeyDigest>, D::Error> {
    d.deserialize_option(DigestMap(Values::Text))
}

fn binary_data<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, KeyDigest>, D::Error> {
    d.deserialize_option(DigestMap(Values::Base64Binary))
}

struct DigestMap(Values);

impl<'de> Visitor<'de> for DigestMap {
    type Value = BTreeMap<String, KeyDigest>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of keys to values, or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let (section, base64) = match self.0 {
                Values::Text => (Section::Data, false),
                Values::Base64Data => (Section::Data, true),
                Values::Base64Binary => (Section::BinaryData, true),
            };
            let digest = map.next_value_seed(ValueDigest {
                section,
                key: &key,
                base64,
            })?;
            out.insert(key, digest);
        }
        Ok(out)
    }
}

/// One value, hashed as it is read: the JSON string is borrowed from the event's line (or from the
/// parser's scratch buffer when it has escapes), and base64 is decoded a few KiB at a time, so no copy of
/// a value is ever allocated.
struct ValueDigest<'k> {
    section: Section,
    key: &'k str,
    base64: bool,
}

impl<'de> DeserializeSeed<'de> for ValueDigest<'_> {
    type Value = KeyDigest;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyDigest, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ValueDigest<'_> {
    type Value = KeyDigest;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.base64 {
            f.write_str("a base64 string")
        } else {
            f.write_str("a string")
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyDigest, E> {
        if !self.base64 {
            return Ok(key_digest(self.section, self.key, v.as_bytes()));
        }
        // The key is named, the value never is.
        base64_digest(self.section, self.key, v)
            .ok_or_else(|| E::custom(format_args!("key {:?}: invalid base64", self.key)))
    }
}

/// Base64 characters decoded per step: a multiple of 4, so every step but the last is whole quads.
const BASE64_STEP: usize = 4096;

/// [`key_digest`] of the value `encoded` holds in standard, padded base64 (what the API server writes, and
/// what k8s-openapi's `ByteString` accepts), decoded in steps. None where that decoding would fail.
fn base64_digest(section: Section, key: &str, encoded: &str) -> Option<KeyDigest> {
    use base64::Engine as _;
    let bytes = encoded.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let padding = bytes.iter().rev().take(2).filter(|b| **b == b'=').count();
    let mut d = KeyDigester::new(section, key, bytes.len() / 4 * 3 - padding);
    let mut buf = [0u8; BASE64_STEP / 4 * 3];
    let mut steps = bytes.chunks(BASE64_STEP).peekable();
    while let Some(step) = steps.next() {
        // Padding only ends the whole value; decoding a step alone would accept it at any step's end.
        if steps.peek().is_some() && step.contains(&b'=') {
            return None;
        }
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(step, &mut buf)
            .ok()?;
        d.update(&buf[..n]);
    }
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use serde_json::{Value, json};

    #[test]
    fn secret_digests_equal_those_of_the_full_object() {
        let obj = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db", "namespace": "prod",
                "annotations": {"hashroll.dev/ignore": "true"}},
            "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="}
        });
        let full: Secret = serde_json::from_value(obj.clone()).unwrap();
        let wire: SecretDigests = serde_json::from_value(obj).unwrap();
        assert_eq!(SourceSummary::from_secret(&full), wire.summary(true));
    }

    #[test]
    fn config_map_digests_equal_those_of_the_full_object() {
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app", "namespace": "prod"},
            "data": {"LOG_LEVEL": "info"},
            "binaryData": {"blob": "AAEC"}
        });
        let full: ConfigMap = serde_json::from_value(obj.clone()).unwrap();
        let wire: ConfigMapDigests = serde_json::from_value(obj).unwrap();
        assert_eq!(SourceSummary::from_config_map(&full), wire.summary(true));
    }

    #[test]
    fn the_canary_is_told_by_its_label_and_token() {
        let cm = |labels: Value, annotations: Value| -> ConfigMapDigests {
            serde_json::from_value(
                json!({"metadata": {"name": "hashroll-canary", "namespace": "hr",
                "labels": labels, "annotations": annotations}, "data": {"k": "v"}}),
            )
            .unwrap()
        };
        let token = json!({"hashroll.dev/canary-token": "r.1"});
        let label = json!({"hashroll.dev/canary": "true"});
        assert_eq!(cm(label.clone(), token.clone()).canary_token(), Some("r.1"));
        assert_eq!(cm(json!({}), token).canary_token(), None);
        assert_eq!(cm(label, json!({})).canary_token(), None);
    }

    #[test]
    fn absent_or_null_data_is_empty() {
        let wire: SecretDigests =
            serde_json::from_value(json!({"metadata": {"name": "x"}, "data": null})).unwrap();
        assert!(wire.data.is_empty());
        let wire: ConfigMapDigests =
            serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert!(wire.data.is_empty() && wire.binary_data.is_empty());
    }

    #[test]
    fn bad_base64_is_an_error_not_a_silent_digest() {
        let r: Result<SecretDigests, _> =
            serde_json::from_value(json!({"metadata": {}, "data": {"k": "!!!"}}));
        assert!(r.is_err());
    }

    #[test]
    fn every_template_path_in_the_kind_table_is_parsed() {
        for kind in WorkloadKind::ALL {
            let mut obj = json!({"metadata": {"name": "w"}});
            let mut node = &mut obj;
            for step in kind.template_path() {
                node = &mut node[*step];
            }
            *node = json!({"metadata": {"labels": {"app": "w"}}});
            let w: WorkloadWire = serde_json::from_value(obj).unwrap();
            assert!(w.pod_template(kind).is_some(), "{kind}");
        }
    }

    #[test]
    fn workload_template_is_found_where_each_kind_keeps_it() {
        let template = json!({"metadata": {"annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]}});
        let deploy: WorkloadWire = serde_json::from_value(json!({
            "metadata": {"name": "web"}, "spec": {"replicas": 2, "template": template},
            "status": {"replicas": 2}}))
        .unwrap();
        let cron: WorkloadWire = serde_json::from_value(json!({
            "metadata": {"name": "job"}, "spec": {"schedule": "* * * * *",
                "jobTemplate": {"spec": {"template": template}}}}))
        .unwrap();
        for (kind, w) in [
            (WorkloadKind::Deployment, deploy),
            (WorkloadKind::CronJob, cron),
        ] {
            let t = w.pod_template(kind).unwrap();
            assert_eq!(t.metadata.unwrap().annotations.unwrap()["a"], "b");
        }
        let odd: WorkloadWire = serde_json::from_value(json!({
            "metadata": {"name": "odd"}, "spec": {"template": {"spec": {"containers": "nope"}}}}))
        .unwrap();
        assert!(
            odd.pod_template(WorkloadKind::Deployment).is_none(),
            "a bad template is this object's problem only"
        );
    }

    /// A small deterministic generator: the same bytes on every run.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect()
    }

    #[test]
    fn base64_values_hashed_in_steps_equal_the_digest_of_the_decoded_value() {
        use base64::Engine as _;
        // Lengths around the step size, where a step ends mid-value and the padding falls in the last.
        let lens = [
            0, 1, 2, 3, 4, 100, 3071, 3072, 3073, 6143, 6144, 6145, 100_000,
        ];
        for (i, len) in lens.into_iter().enumerate() {
            let value = bytes(i as u64, len);
            let encoded = base64::engine::general_purpose::STANDARD.encode(&value);
            assert_eq!(
                base64_digest(Section::Data, "k", &encoded),
                Some(key_digest(Section::Data, "k", &value)),
                "{len} bytes"
            );
            // Through the parser, as a watch event delivers it.
            let line = format!(r#"{{"metadata":{{"name":"s"}},"data":{{"k":"{encoded}"}}}}"#);
            let wire: SecretDigests = serde_json::from_str(&line).unwrap();
            assert_eq!(wire.data["k"], key_digest(Section::Data, "k", &value));
        }
    }

    #[test]
    fn base64_is_refused_exactly_where_a_whole_decode_refuses_it() {
        use base64::Engine as _;
        let standard = base64::engine::general_purpose::STANDARD;
        let good = standard.encode(bytes(7, 9000));
        let mut cases: Vec<String> = vec![
            "QQ".into(),       // no padding
            "QQ=".into(),      // short padding
            "Q===".into(),     // too much padding
            "QR==".into(),     // non-canonical trailing bits
            "QQ==QUJD".into(), // padding before the end
            "QU JD".into(),    // whitespace
            "QUJD\\n".into(),  // an escape the parser turns into a newline
        ];
        // Padding at the end of a step that is not the last: a step alone would accept it.
        let mut early = good.clone();
        early.replace_range(BASE64_STEP - 2..BASE64_STEP, "==");
        cases.push(early);
        // A character outside the alphabet in a later step.
        let mut bad = good.clone();
        bad.replace_range(BASE64_STEP + 10..BASE64_STEP + 11, "*");
        cases.push(bad);
        for case in &cases {
            let line = format!(r#"{{"metadata":{{"name":"s"}},"data":{{"pw":"{case}"}}}}"#);
            let decoded = serde_json::from_str::<String>(&format!("\"{case}\"")).unwrap();
            assert!(standard.decode(&decoded).is_err(), "{case:?} is bad base64");
            let err = serde_json::from_str::<SecretDigests>(&line).unwrap_err();
            assert!(
                err.to_string().contains(r#"key "pw": invalid base64"#),
                "{err}"
            );
        }
        assert!(base64_digest(Section::Data, "k", &good).is_some());
    }

    #[test]
    fn metadata_keeps_what_is_read_and_drops_the_managed_fields_and_the_last_applied_copy() {
        let obj = json!({
            "metadata": {"name": "db", "namespace": "prod", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "labels": {"app": "db"},
                "annotations": {"hashroll.dev/ignore": "false",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"pw\":\"aHVudGVyMg==\"}}"},
                "managedFields": [
                    {"manager": "kubectl", "operation": "Apply", "time": "2026-11-30T10:00:00Z",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:pw": {}}}},
                    {"manager": "old", "operation": "Update", "time": "2026-11-30T09:00:00Z"},
                    {"manager": "untimed", "operation": "Update"}],
                "creationTimestamp": "2026-11-30T00:00:00Z"},
            "data": {"pw": "aHVudGVyMg=="}
        });
        let m = serde_json::from_value::<SecretDigests>(obj.clone())
            .unwrap()
            .metadata;
        assert_eq!(m.name.as_deref(), Some("db"));
        assert_eq!(m.namespace.as_deref(), Some("prod"));
        assert_eq!(m.uid.as_deref(), Some("u-1"));
        assert_eq!(m.resource_version.as_deref(), Some("42"));
        assert_eq!(m.generation, Some(3));
        assert_eq!(m.labels.unwrap()["app"], "db");
        let annotations = m.annotations.unwrap();
        assert_eq!(annotations.len(), 1, "{annotations:?}");
        assert_eq!(annotations["hashroll.dev/ignore"], "false");
        // Of managedFields, the newest write time only.
        let writes = m.managed_fields.unwrap();
        assert_eq!(writes.len(), 1);
        assert_eq!(
            writes[0].time.as_ref().unwrap().0.to_string(),
            "2026-11-30T10:00:00Z"
        );
        assert!(writes[0].manager.is_none() && writes[0].fields_v1.is_none());
        assert_eq!(
            m.creation_timestamp.unwrap().0.to_string(),
            "2026-11-30T00:00:00Z"
        );
        // The same for workloads, and a null map is no map.
        let w: WorkloadWire = serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": null, "managedFields": []}}))
        .unwrap();
        assert_eq!(w.metadata.name.as_deref(), Some("web"));
        assert!(w.metadata.annotations.is_none());
    }
}
