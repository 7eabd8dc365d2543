//! What hashroll deserializes from the API server for Secrets and ConfigMaps: metadata and one digest per
//! key, each value hashed the moment it is parsed. No decoded value outlives its own key's parsing, so the
//! memory a list page or a watch event costs does not grow with the size of the data.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::model::annotations::{CANARY_LABEL, CANARY_TOKEN_ANNOTATION};
use crate::model::hashing::{KeyDigest, Section, key_digest};
use crate::model::kind::{SourceKind, WorkloadKind};
use crate::model::policy::PolicySettings;
use crate::model::rollout::{StatusWire, progress};
use crate::model::source::SourceSummary;
use crate::model::workload::WorkloadSummary;

/// A Secret as hashroll reads it: `data` arrives as digests.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct SecretDigests {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "secret_data", skip_serializing)]
    pub data: BTreeMap<String, KeyDigest>,
}

/// A ConfigMap as hashroll reads it: `data` and `binaryData` arrive as digests (kept apart by section).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ConfigMapDigests {
    #[serde(default)]
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
    #[serde(default)]
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
            let digest = match self.0 {
                Values::Text => {
                    let v: String = map.next_value()?;
                    key_digest(Section::Data, &key, v.as_bytes())
                }
                Values::Base64Data | Values::Base64Binary => {
                    let v: ByteString = map.next_value()?;
                    let section = match self.0 {
                        Values::Base64Binary => Section::BinaryData,
                        _ => Section::Data,
                    };
                    key_digest(section, &key, &v.0)
                }
            };
            out.insert(key, digest);
        }
        Ok(out)
    }
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
}
