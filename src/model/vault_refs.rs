//! Which Vault (or OpenBao) paths a pod template reads through a secret-injecting webhook, in the forms
//! Bank-Vaults documents (https://bank-vaults.dev/docs/mutating-webhook/):
//!
//! - an env `value` of `vault:PATH#KEY` or `vault:PATH#KEY#VERSION`, in containers and init containers;
//! - the pod template annotation `secrets-webhook.security.bank-vaults.io/vault-from-path` (or, when it is
//!   absent, the deprecated `vault.security.banzaicloud.io/vault-env-from-path`): comma-separated `PATH` or
//!   `PATH#VERSION`, every key.
//!
//! A reference pinned to a version reads the same value forever: it is not tracked. Nor is `>>vault:...`:
//! Bank-Vaults writes to that path at each start (a generator, a dynamic secret), so no stored value
//! stands behind it to change.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::model::kind::SourceKind;
use crate::model::references::{KeySelection, Reference};

/// Bank-Vaults' annotation listing paths whose every key becomes an env variable.
pub const FROM_PATH: &str = "secrets-webhook.security.bank-vaults.io/vault-from-path";
/// The same, under Bank-Vaults' former (banzaicloud) name.
pub const FROM_PATH_DEPRECATED: &str = "vault.security.banzaicloud.io/vault-env-from-path";

/// One `vault:` reference in an env value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRef<'a> {
    pub path: &'a str,
    pub key: &'a str,
    /// Pinned to this version: never changes.
    pub version: Option<&'a str>,
    /// `>>vault:`: a write at each start, not a read of something stored.
    pub write: bool,
}

/// Parses an env value of the Bank-Vaults forms; None for anything else (a plain value, an empty path or
/// key).
pub fn parse_env_value(value: &str) -> Option<EnvRef<'_>> {
    let write = value.starts_with(">>");
    let rest = value.strip_prefix(">>").unwrap_or(value);
    let rest = rest.strip_prefix("vault:")?;
    let mut parts = rest.split('#');
    let path = parts.next()?.trim_matches('/');
    let key = parts.next()?;
    let version = parts.next().filter(|v| !v.is_empty());
    if path.is_empty() || key.is_empty() || parts.next().is_some() {
        return None;
    }
    Some(EnvRef {
        path,
        key,
        version,
        write,
    })
}

/// The from-path annotation Bank-Vaults reads: its own, else (only when that is absent) the deprecated one.
fn from_path_annotation(template: &PodTemplateSpec) -> Option<(&'static str, &str)> {
    let annotations = template.metadata.as_ref()?.annotations.as_ref()?;
    [FROM_PATH, FROM_PATH_DEPRECATED]
        .into_iter()
        .find_map(|name| annotations.get(name).map(|v| (name, v.as_str())))
}

/// The paths of a `vault-from-path` annotation value that are not pinned to a version.
fn from_path_entries(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').filter_map(|entry| {
        let mut parts = entry.trim().split('#');
        let path = parts.next()?.trim().trim_matches('/');
        let pinned = parts.next().is_some_and(|v| !v.trim().is_empty());
        (!path.is_empty() && !pinned).then_some(path)
    })
}

/// Every Vault path the template reads and is not pinned, one [`Reference`] per path, sorted by path.
/// `key_level`: track the keys used (else every reference tracks the whole path, whose version is all
/// hashroll reads).
pub fn template_vault_references(template: &PodTemplateSpec, key_level: bool) -> Vec<Reference> {
    let mut uses: BTreeMap<&str, KeySelection> = BTreeMap::new();
    let mut add = |path, keys: KeySelection| {
        let keys = if key_level { keys } else { KeySelection::All };
        let merged = match uses.remove(path) {
            Some(prev) => prev.union(keys),
            None => keys,
        };
        uses.insert(path, merged);
    };
    if let Some((_, value)) = from_path_annotation(template) {
        for path in from_path_entries(value) {
            add(path, KeySelection::All);
        }
    }
    if let Some(spec) = &template.spec {
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for var in containers.flat_map(|c| c.env.iter().flatten()) {
            if let Some(r) = var.value.as_deref().and_then(parse_env_value)
                && r.version.is_none()
                && !r.write
            {
                add(r.path, KeySelection::key(r.key));
            }
        }
    }
    uses.into_iter()
        .map(|(path, keys)| Reference {
            kind: SourceKind::Vault,
            name: path.to_string(),
            keys,
            optional: false,
        })
        .collect()
}

/// Where the template reads each Vault path (`containers[app].env[DB_PASSWORD].value`, the annotation's
/// name), pinned uses included and marked so, by path. For `hashroll explain` only.
pub fn template_vault_paths(template: &PodTemplateSpec) -> BTreeMap<String, Vec<String>> {
    let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some((name, value)) = from_path_annotation(template) {
        for path in from_path_entries(value) {
            paths
                .entry(path.to_string())
                .or_default()
                .push(format!("metadata.annotations[{name}]"));
        }
    }
    if let Some(spec) = &template.spec {
        let containers = (spec.containers.iter().map(|c| ("containers", c))).chain(
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| ("initContainers", c)),
        );
        for (list, c) in containers {
            for var in c.env.iter().flatten() {
                if let Some(r) = var.value.as_deref().and_then(parse_env_value) {
                    let pinned = match (r.write, r.version) {
                        (true, _) => " (a write at each start: not tracked)".to_string(),
                        (false, Some(v)) => format!(" (pinned to version {v}: not tracked)"),
                        (false, None) => String::new(),
                    };
                    paths.entry(r.path.to_string()).or_default().push(format!(
                        "{list}[{}].env[{}].value{pinned}",
                        c.name, var.name
                    ));
                }
            }
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(v: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    fn r(path: &str, keys: KeySelection) -> Reference {
        Reference {
            kind: SourceKind::Vault,
            name: path.into(),
            keys,
            optional: false,
        }
    }

    #[test]
    fn env_values_of_the_bank_vaults_forms_parse() {
        let parsed = |v| parse_env_value(v).map(|r| (r.path, r.key, r.version));
        assert!(parse_env_value(">>vault:gen/password#value").unwrap().write);
        assert!(!parse_env_value("vault:secret/data/app#k").unwrap().write);
        assert_eq!(
            parsed("vault:secret/data/app#password"),
            Some(("secret/data/app", "password", None))
        );
        assert_eq!(
            parsed("vault:secret/data/app#password#2"),
            Some(("secret/data/app", "password", Some("2")))
        );
        assert_eq!(
            parsed(">>vault:database/creds/app#username"),
            Some(("database/creds/app", "username", None))
        );
        assert_eq!(
            parsed("vault:secret/data/app#k#"),
            Some(("secret/data/app", "k", None))
        );
        for not_a_reference in [
            "plain",
            "vault:",
            "vault:secret/data/app",
            "vault:#key",
            "vault:secret/data/app#",
            "vault:a#b#1#extra",
            "novault:secret#k",
            " vault:secret#k",
        ] {
            assert_eq!(parse_env_value(not_a_reference), None, "{not_a_reference}");
        }
    }

    #[test]
    fn references_merge_per_path_and_pinned_ones_and_writes_are_left_out() {
        let t = template(json!({
            "metadata": {"annotations": {
                FROM_PATH: "secret/data/shared, secret/data/frozen#3, kv1/legacy",
                // Bank-Vaults reads it only without the current annotation.
                FROM_PATH_DEPRECATED: "secret/data/ignored",
            }},
            "spec": {
                "containers": [{"name": "app", "env": [
                    {"name": "A", "value": "vault:secret/data/app#password"},
                    {"name": "B", "value": "vault:secret/data/app#user"},
                    {"name": "C", "value": "vault:secret/data/pinned#k#1"},
                    {"name": "D", "value": "literal"},
                    {"name": "E", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ]}],
                "initContainers": [{"name": "init", "env": [
                    {"name": "F", "value": "vault:secret/data/shared#token"},
                    {"name": "G", "value": ">>vault:gen/password#value"},
                ]}],
            },
        }));
        assert_eq!(
            template_vault_references(&t, true),
            vec![
                r("kv1/legacy", KeySelection::All),
                r(
                    "secret/data/app",
                    KeySelection::Keys(["password", "user"].into_iter().collect())
                ),
                r("secret/data/shared", KeySelection::All),
            ]
        );
        // Without key-level precision every path is tracked whole.
        assert!(
            template_vault_references(&t, false)
                .iter()
                .all(|r| r.keys == KeySelection::All)
        );
    }

    #[test]
    fn paths_say_where_the_template_reads_each_vault_path() {
        let t = template(json!({
            "metadata": {"annotations": {FROM_PATH: "secret/data/shared"}},
            "spec": {"containers": [{"name": "app", "env": [
                {"name": "A", "value": "vault:secret/data/app#password"},
                {"name": "B", "value": "vault:secret/data/app#password#2"},
            ]}]},
        }));
        let paths = template_vault_paths(&t);
        assert_eq!(
            paths["secret/data/app"],
            [
                "containers[app].env[A].value",
                "containers[app].env[B].value (pinned to version 2: not tracked)"
            ]
        );
        assert_eq!(
            paths["secret/data/shared"],
            [format!("metadata.annotations[{FROM_PATH}]")]
        );
    }

    #[test]
    fn the_deprecated_annotation_counts_only_without_the_current_one() {
        let t =
            template(json!({"metadata": {"annotations": {FROM_PATH_DEPRECATED: "kv1/legacy"}}}));
        assert_eq!(
            template_vault_references(&t, true),
            vec![r("kv1/legacy", KeySelection::All)]
        );
    }

    #[test]
    fn a_template_without_references_has_none() {
        let t = template(json!({"spec": {"containers": [{"name": "app", "env": [
            {"name": "A", "value": "vault"}]}]}}));
        assert!(template_vault_references(&t, true).is_empty());
        assert!(template_vault_references(&PodTemplateSpec::default(), true).is_empty());
    }
}
