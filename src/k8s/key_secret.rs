//! The installation key for keyed hashes: a Secret in hashroll's own namespace, created on first start.
//! Every replica and every restart reads the same key, so stamps stay comparable.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::error::{Error, ErrorClass};
use crate::model::hashing::InstallationKey;

/// The data key that holds the key bytes.
pub const KEY_FIELD: &str = "key";

/// Reads the key Secret, creating it with 32 random bytes if it does not exist.
pub async fn load_or_create(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<InstallationKey, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let object = format!("Secret {namespace}/{name}");
    let api_err = |e| Error::api("reading", &object, e);
    let secret = match api.get_opt(name).await.map_err(api_err)? {
        Some(s) => s,
        None => {
            let fresh = InstallationKey::generate();
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(namespace.into()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/name".to_string(),
                        "hashroll".to_string(),
                    )])),
                    annotations: Some(BTreeMap::from([(
                        crate::model::annotations::IGNORE_ANNOTATION.to_string(),
                        "true".to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    KEY_FIELD.to_string(),
                    ByteString(fresh.as_bytes().to_vec()),
                )])),
                immutable: Some(true),
                ..Secret::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(s) => {
                    tracing::info!(namespace, name, "created the installation key Secret");
                    s
                }
                // Another replica created it first: use theirs.
                Err(e) if ErrorClass::of(&e) == ErrorClass::Conflict => {
                    api.get(name).await.map_err(api_err)?
                }
                Err(e) => return Err(api_err(e)),
            }
        }
    };
    key_of(&secret, &object)
}

/// Reads the key Secret without ever creating it (`hashroll explain`): None if it does not exist.
pub async fn load(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<InstallationKey>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let object = format!("Secret {namespace}/{name}");
    match api.get_opt(name).await {
        Ok(Some(secret)) => key_of(&secret, &object).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(Error::api("reading", &object, e)),
    }
}

/// The key in the Secret's data.
fn key_of(secret: &Secret, object: &str) -> Result<InstallationKey, Error> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_FIELD))
        .ok_or_else(|| {
            Error::invalid(
                "reading",
                format!("{object} field data.{KEY_FIELD}"),
                "missing",
            )
        })?;
    InstallationKey::from_bytes(&bytes.0).map_err(|e| {
        Error::invalid(
            "reading",
            format!("{object} field data.{KEY_FIELD}"),
            e.to_string(),
        )
    })
}
