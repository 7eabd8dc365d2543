//! The Secrets Store CSI driver's objects: `SecretProviderClass`es (their annotations) and the per-pod
//! `SecretProviderClassPodStatus`es (which versions each pod mounted), watched together and folded into
//! one source per class (see `model::provider_class` for why its content is the newest status's version
//! set; `watch::run_provider_classes` runs both watches). Watched only where the API server serves both
//! (checked at start-up).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ApiResource};
use serde::Deserialize;

use crate::model::kind::SourceKind;
use crate::model::provider_class::{PodStatus, version_digest};

const GROUP: &str = "secrets-store.csi.x-k8s.io";
/// The per-pod status resource's name.
pub const STATUSES: &str = "secretproviderclasspodstatuses";

/// A SecretProviderClass as hashroll reads it: metadata only (its `spec` names provider parameters).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClassWire {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

/// A SecretProviderClassPodStatus as hashroll reads it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StatusWire {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    status: Option<StatusBody>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct StatusBody {
    #[serde(default, rename = "secretProviderClassName")]
    class: String,
    #[serde(default)]
    objects: Vec<MountedObject>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct MountedObject {
    #[serde(default)]
    id: String,
    #[serde(default)]
    version: String,
}

/// Both wire types are read through an `ApiResource` found at start-up (the CRDs' group and version).
macro_rules! dynamic_resource {
    ($t:ty) => {
        impl kube::Resource for $t {
            type DynamicType = ApiResource;
            type Scope = kube::core::DynamicResourceScope;
            fn kind(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
                dt.kind.as_str().into()
            }
            fn group(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
                dt.group.as_str().into()
            }
            fn version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
                dt.version.as_str().into()
            }
            fn api_version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
                dt.api_version.as_str().into()
            }
            fn plural(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
                dt.plural.as_str().into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

dynamic_resource!(ClassWire);
dynamic_resource!(StatusWire);

impl StatusWire {
    /// The status reduced: its class, resource version and one digest per mounted object's version.
    pub fn reduce(&self) -> Option<PodStatus> {
        let status = self.status.as_ref().filter(|s| !s.class.is_empty())?;
        let namespace = self.metadata.namespace.clone().filter(|n| !n.is_empty())?;
        let versions: BTreeMap<String, _> = status
            .objects
            .iter()
            .filter(|o| !o.id.is_empty())
            .map(|o| (o.id.clone(), version_digest(&o.id, &o.version)))
            .collect();
        Some(PodStatus {
            namespace,
            class: status.class.clone(),
            resource_version: self
                .metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok()),
            versions,
        })
    }
}

/// The class resource, from its row in the kind table.
pub fn class_resource() -> ApiResource {
    let i = SourceKind::SecretProviderClass.info();
    ApiResource {
        group: i.group.into(),
        version: i.version.into(),
        api_version: i.api_version(),
        kind: i.kind.into(),
        plural: i.plural.into(),
    }
}

/// The per-pod status resource.
pub fn status_resource() -> ApiResource {
    let class = class_resource();
    ApiResource {
        kind: "SecretProviderClassPodStatus".into(),
        plural: STATUSES.into(),
        ..class
    }
}

/// Both resources are served (checked once, at start-up, like Argo Rollouts).
pub async fn served(client: &Client) -> bool {
    for kind in ["SecretProviderClass", "SecretProviderClassPodStatus"] {
        let gvk = kube::api::GroupVersionKind::gvk(GROUP, "v1", kind);
        if kube::discovery::oneshot::pinned_kind(client, &gvk)
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

pub fn api<K>(client: &Client, namespace: Option<&str>, ar: &ApiResource) -> Api<K>
where
    K: kube::Resource<DynamicType = ApiResource, Scope = kube::core::DynamicResourceScope>,
{
    match namespace {
        Some(n) => Api::namespaced_with(client.clone(), n, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_read_as_its_class_resource_version_and_version_digests() {
        let wire: StatusWire = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1-shop-vault", "namespace": "shop", "resourceVersion": "42"},
            "status": {"secretProviderClassName": "vault", "podName": "web-1", "mounted": true,
                       "objects": [{"id": "secret/db", "version": "3"}, {"id": "", "version": "x"}]}
        }))
        .unwrap();
        let s = wire.reduce().unwrap();
        assert_eq!(
            (s.namespace.as_str(), s.class.as_str(), s.resource_version),
            ("shop", "vault", Some(42))
        );
        assert_eq!(s.versions.keys().collect::<Vec<_>>(), ["secret/db"]);
        assert_eq!(s.versions["secret/db"], version_digest("secret/db", "3"));
        // Without a class it is no status of any class.
        let bare: StatusWire = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "namespace": "shop", "resourceVersion": "1"}
        }))
        .unwrap();
        assert!(bare.reduce().is_none());
    }
}
