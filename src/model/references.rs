//! Which Secrets and ConfigMaps a pod spec uses, and which of their keys.
//!
//! Key-level precision matters: a workload that reads one key of a shared Secret should not roll
//! when an unrelated key of that Secret changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, KeyToPath, PodSpec, Volume};

use crate::model::kind::SourceKind;

/// Which keys of a Secret or ConfigMap a workload depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySelection {
    /// Every key, present and future (envFrom, whole-object volumes, named sources).
    All,
    /// Only these keys (env `valueFrom`, volumes with `items`).
    Keys(KeySet),
}

/// A sorted set of key names in one boxed slice: a workload holds one per key-level reference for as long
/// as hashroll runs, and a `BTreeSet` would allocate a node of eleven slots even for one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet(Box<[Box<str>]>);

impl KeySet {
    pub fn contains(&self, key: &str) -> bool {
        self.0.binary_search_by(|k| (**k).cmp(key)).is_ok()
    }

    /// Key names in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|k| &**k)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<S: Into<String>> FromIterator<S> for KeySet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut keys: Vec<Box<str>> = iter
            .into_iter()
            .map(|k| k.into().into_boxed_str())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        KeySet(keys.into_boxed_slice())
    }
}

impl KeySelection {
    /// A selection of exactly one key.
    pub fn key(key: impl Into<String>) -> Self {
        KeySelection::Keys(KeySet(Box::new([key.into().into_boxed_str()])))
    }

    /// Whether `key` is part of this selection.
    pub fn contains(&self, key: &str) -> bool {
        match self {
            KeySelection::All => true,
            KeySelection::Keys(keys) => keys.contains(key),
        }
    }

    /// The union of two selections; `All` absorbs everything.
    pub fn union(self, other: KeySelection) -> KeySelection {
        match (self, other) {
            (KeySelection::Keys(a), KeySelection::Keys(b)) => {
                KeySelection::Keys(a.iter().chain(b.iter()).collect())
            }
            _ => KeySelection::All,
        }
    }
}

/// One Secret or ConfigMap used by a pod spec, with every use of it merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub kind: SourceKind,
    pub name: String,
    pub keys: KeySelection,
    /// True only if every use is marked `optional: true`: then a missing object is not an error.
    pub optional: bool,
}

/// Every Secret/ConfigMap the pod spec uses, one entry per (kind, name), sorted by (kind, name).
///
/// Looks at env and envFrom of containers, init containers and ephemeral containers, and at
/// `secret`, `configMap` and `projected` volumes. `imagePullSecrets` are registry credentials, not
/// configuration, and are ignored. Uses with an empty name are skipped.
pub fn pod_spec_references(spec: &PodSpec) -> Vec<Reference> {
    let mut acc = Accumulator::default();
    walk(spec, &mut acc);
    acc.uses
        .into_iter()
        .map(|((kind, name), (keys, optional))| Reference {
            kind,
            name,
            keys,
            optional,
        })
        .collect()
}

/// Where the pod spec uses each Secret/ConfigMap (`containers[app].env[DB_PASSWORD].valueFrom.secretKeyRef`,
/// `volumes[certs].secret`), by (kind, name), in the order of the spec. For `hashroll explain` only: the
/// controller keeps no path.
pub fn reference_paths(spec: &PodSpec) -> BTreeMap<(SourceKind, String), Vec<String>> {
    let mut paths = Paths::default();
    walk(spec, &mut paths);
    paths.0
}

/// Receives each use the walk finds. `path` says where it is; the controller's sink never calls it, so
/// the controller builds no path.
trait Uses {
    fn add(
        &mut self,
        kind: SourceKind,
        name: &str,
        keys: impl FnOnce() -> KeySelection,
        optional: Option<bool>,
        path: impl FnOnce() -> String,
    );
}

/// Walks every use of a Secret or ConfigMap in the pod spec, in the order of the spec.
fn walk(spec: &PodSpec, uses: &mut impl Uses) {
    // Ephemeral containers cannot be added through a pod template, but a spec taken from a live
    // pod may carry them; counting their uses is harmless.
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    let containers = (spec.containers.iter().map(|c| ("containers", c)))
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| ("initContainers", c)),
        )
        .map(|(list, c)| {
            (
                list,
                c.name.as_str(),
                c.env.as_deref(),
                c.env_from.as_deref(),
            )
        })
        .chain(ephemeral.map(|c| {
            (
                "ephemeralContainers",
                c.name.as_str(),
                c.env.as_deref(),
                c.env_from.as_deref(),
            )
        }));
    for (list, container, env, env_from) in containers {
        let at = || format!("{list}[{container}]");
        env_uses(uses, env, env_from, at);
    }
    for v in spec.volumes.iter().flatten() {
        volume_uses(uses, v);
    }
}

fn env_uses(
    uses: &mut impl Uses,
    env: Option<&[EnvVar]>,
    env_from: Option<&[EnvFromSource]>,
    at: impl Fn() -> String,
) {
    for var in env.into_iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        let path = |field: &str| format!("{}.env[{}].valueFrom.{field}", at(), var.name);
        if let Some(r) = &from.secret_key_ref {
            uses.add(
                SourceKind::Secret,
                &r.name,
                || KeySelection::key(&r.key),
                r.optional,
                || path("secretKeyRef"),
            );
        }
        if let Some(r) = &from.config_map_key_ref {
            uses.add(
                SourceKind::ConfigMap,
                &r.name,
                || KeySelection::key(&r.key),
                r.optional,
                || path("configMapKeyRef"),
            );
        }
    }
    for (i, from) in env_from.into_iter().flatten().enumerate() {
        let path = |field: &str| format!("{}.envFrom[{i}].{field}", at());
        if let Some(r) = &from.secret_ref {
            uses.add(
                SourceKind::Secret,
                &r.name,
                || KeySelection::All,
                r.optional,
                || path("secretRef"),
            );
        }
        if let Some(r) = &from.config_map_ref {
            uses.add(
                SourceKind::ConfigMap,
                &r.name,
                || KeySelection::All,
                r.optional,
                || path("configMapRef"),
            );
        }
    }
}

/// The Secrets Store CSI driver's name in a pod's `csi` volume.
pub const SECRETS_STORE_DRIVER: &str = "secrets-store.csi.k8s.io";

fn volume_uses(uses: &mut impl Uses, v: &Volume) {
    let path = |field: &str| format!("volumes[{}].{field}", v.name);
    // A csi volume of the Secrets Store driver mounts what its SecretProviderClass names; the pod cannot
    // start without the class, so the use is required.
    if let Some(csi) = v.csi.as_ref().filter(|c| c.driver == SECRETS_STORE_DRIVER) {
        let class = csi
            .volume_attributes
            .as_ref()
            .and_then(|a| a.get("secretProviderClass"));
        if let Some(name) = class {
            uses.add(
                SourceKind::SecretProviderClass,
                name,
                || KeySelection::All,
                Some(false),
                || path("csi.volumeAttributes.secretProviderClass"),
            );
        }
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.as_deref().unwrap_or_default();
        uses.add(
            SourceKind::Secret,
            name,
            || item_keys(&s.items),
            s.optional,
            || path("secret"),
        );
    }
    if let Some(c) = &v.config_map {
        uses.add(
            SourceKind::ConfigMap,
            &c.name,
            || item_keys(&c.items),
            c.optional,
            || path("configMap"),
        );
    }
    if let Some(p) = &v.projected {
        for (i, src) in p.sources.iter().flatten().enumerate() {
            let path = |field: &str| path(&format!("projected.sources[{i}].{field}"));
            if let Some(s) = &src.secret {
                uses.add(
                    SourceKind::Secret,
                    &s.name,
                    || item_keys(&s.items),
                    s.optional,
                    || path("secret"),
                );
            }
            if let Some(c) = &src.config_map {
                uses.add(
                    SourceKind::ConfigMap,
                    &c.name,
                    || item_keys(&c.items),
                    c.optional,
                    || path("configMap"),
                );
            }
        }
    }
}

/// Merges uses as they are found; the BTreeMap gives the (kind, name) ordering for free.
#[derive(Default)]
struct Accumulator {
    uses: BTreeMap<(SourceKind, String), (KeySelection, bool)>,
}

impl Uses for Accumulator {
    fn add(
        &mut self,
        kind: SourceKind,
        name: &str,
        keys: impl FnOnce() -> KeySelection,
        optional: Option<bool>,
        _path: impl FnOnce() -> String,
    ) {
        if name.is_empty() {
            return;
        }
        let (keys, optional) = (keys(), optional.unwrap_or(false));
        match self.uses.remove(&(kind, name.to_string())) {
            Some((prev_keys, prev_optional)) => {
                self.uses.insert(
                    (kind, name.to_string()),
                    (prev_keys.union(keys), prev_optional && optional),
                );
            }
            None => {
                self.uses.insert((kind, name.to_string()), (keys, optional));
            }
        }
    }
}

/// Collects where each source is used.
#[derive(Default)]
struct Paths(BTreeMap<(SourceKind, String), Vec<String>>);

impl Uses for Paths {
    fn add(
        &mut self,
        kind: SourceKind,
        name: &str,
        _keys: impl FnOnce() -> KeySelection,
        _optional: Option<bool>,
        path: impl FnOnce() -> String,
    ) {
        if !name.is_empty() {
            self.0
                .entry((kind, name.to_string()))
                .or_default()
                .push(path());
        }
    }
}

/// The keys a volume projects: the listed items, or every key when none are listed (the kubelet
/// treats an empty `items` list the same as an absent one).
fn item_keys(items: &Option<Vec<KeyToPath>>) -> KeySelection {
    match items.as_deref() {
        Some(items) if !items.is_empty() => {
            KeySelection::Keys(items.iter().map(|i| i.key.clone()).collect())
        }
        _ => KeySelection::All,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).expect("test pod spec must deserialize")
    }

    fn keys(ks: &[&str]) -> KeySelection {
        KeySelection::Keys(ks.iter().map(|k| k.to_string()).collect())
    }

    fn r(kind: SourceKind, name: &str, keys: KeySelection, optional: bool) -> Reference {
        Reference {
            kind,
            name: name.to_string(),
            keys,
            optional,
        }
    }

    use SourceKind::{ConfigMap, Secret};

    #[test]
    fn env_key_refs_select_one_key_in_containers_and_init_containers() {
        let s = spec(json!({
            "containers": [{"name": "app", "env": [
                {"name": "A", "value": "literal"},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ]}],
            "initContainers": [{"name": "init", "env": [
                {"name": "D", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode", "optional": true}}},
            ]}],
        }));
        assert_eq!(
            pod_spec_references(&s),
            vec![
                r(Secret, "db", keys(&["password"]), false),
                r(ConfigMap, "settings", keys(&["mode"]), true),
            ]
        );
    }

    #[test]
    fn env_from_selects_all_keys_in_containers_and_init_containers() {
        let s = spec(json!({
            "containers": [{"name": "app", "envFrom": [{"secretRef": {"name": "creds"}, "prefix": "X_"}]}],
            "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": "env", "optional": false}}]}],
        }));
        assert_eq!(
            pod_spec_references(&s),
            vec![
                r(Secret, "creds", KeySelection::All, false),
                r(ConfigMap, "env", KeySelection::All, false),
            ]
        );
    }

    #[test]
    fn ephemeral_containers_are_counted() {
        let s = spec(json!({
            "containers": [{"name": "app"}],
            "ephemeralContainers": [{"name": "debug", "envFrom": [{"secretRef": {"name": "dbg"}}]}],
        }));
        assert_eq!(
            pod_spec_references(&s),
            vec![r(Secret, "dbg", KeySelection::All, false)]
        );
    }

    #[test]
    fn volumes_select_all_keys_or_listed_items() {
        let s = spec(json!({
            "containers": [{"name": "app"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "tls"}},
                {"name": "b", "secret": {"secretName": "keys", "items": [
                    {"key": "k1", "path": "one"}, {"key": "k2", "path": "two"}]}},
                {"name": "c", "configMap": {"name": "files", "optional": true}},
                {"name": "d", "configMap": {"name": "some", "items": [{"key": "x", "path": "x"}]}},
                {"name": "e", "configMap": {"name": "emptyitems", "items": []}},
                {"name": "f", "emptyDir": {}},
            ],
        }));
        assert_eq!(
            pod_spec_references(&s),
            vec![
                r(Secret, "keys", keys(&["k1", "k2"]), false),
                r(Secret, "tls", KeySelection::All, false),
                r(ConfigMap, "emptyitems", KeySelection::All, false),
                r(ConfigMap, "files", KeySelection::All, true),
                r(ConfigMap, "some", keys(&["x"]), false),
            ]
        );
    }

    #[test]
    fn secrets_store_csi_volumes_use_their_secret_provider_class() {
        let s = spec(json!({
            "containers": [{"name": "app"}],
            "volumes": [
                {"name": "vault", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true,
                    "volumeAttributes": {"secretProviderClass": "db-creds"}}},
                {"name": "other", "csi": {"driver": "example.csi.k8s.io",
                    "volumeAttributes": {"secretProviderClass": "not-this"}}},
                {"name": "nameless", "csi": {"driver": "secrets-store.csi.k8s.io"}},
            ],
        }));
        assert_eq!(
            pod_spec_references(&s),
            vec![r(
                SourceKind::SecretProviderClass,
                "db-creds",
                KeySelection::All,
                false
            )]
        );
        assert_eq!(
            reference_paths(&s)[&(SourceKind::SecretProviderClass, "db-creds".into())],
            ["volumes[vault].csi.volumeAttributes.secretProviderClass"]
        );
    }

    #[test]
    fn projected_volume_sources_follow_the_same_rules() {
        let s = spec(json!({
            "containers": [{"name": "app"}],
            "volumes": [{"name": "p", "projected": {"sources": [
                {"secret": {"name": "s1", "optional": true}},
                {"secret": {"name": "s2", "items": [{"key": "ca.crt", "path": "ca"}]}},
                {"configMap": {"name": "c1", "items": [{"key": "a", "path": "a"}]}},
                {"configMap": {"name": "c2"}},
                {"serviceAccountToken": {"path": "token"}},
                {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            ]}}],
        }));
        assert_eq!(
            pod_spec_references(&s),
            vec![
                r(Secret, "s1", KeySelection::All, true),
                r(Secret, "s2", keys(&["ca.crt"]), false),
                r(ConfigMap, "c1", keys(&["a"]), false),
                r(ConfigMap, "c2", KeySelection::All, false),
            ]
        );
    }

    #[test]
    fn uses_of_one_object_merge_keys_and_optional() {
        let s = spec(json!({
            "containers": [
                {"name": "a", "env": [
                    {"name": "U", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user", "optional": true}}},
                    {"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pass", "optional": true}}},
                    {"name": "M", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "m", "optional": true}}},
                ]},
                {"name": "b", "env": [
                    {"name": "O", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "n"}}},
                ]},
            ],
            "volumes": [
                {"name": "v", "secret": {"secretName": "db", "optional": true, "items": [{"key": "ca", "path": "ca"}]}},
                {"name": "w", "configMap": {"name": "cfg", "optional": true}},
            ],
        }));
        assert_eq!(
            pod_spec_references(&s),
            vec![
                // All uses optional → optional; keys unioned.
                r(Secret, "db", keys(&["ca", "pass", "user"]), true),
                // One non-optional use (optional unset) makes it required; the whole-object volume
                // makes it All.
                r(ConfigMap, "cfg", KeySelection::All, false),
            ]
        );
    }

    #[test]
    fn same_name_different_kind_stay_separate() {
        let s = spec(json!({
            "containers": [{"name": "a", "envFrom": [
                {"secretRef": {"name": "app"}}, {"configMapRef": {"name": "app"}}]}],
        }));
        let refs = pod_spec_references(&s);
        assert_eq!(
            refs,
            vec![
                r(Secret, "app", KeySelection::All, false),
                r(ConfigMap, "app", KeySelection::All, false),
            ]
        );
    }

    #[test]
    fn image_pull_secrets_and_empty_names_are_ignored() {
        let s = spec(json!({
            "containers": [{"name": "a",
                "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": ""}}]}],
            "imagePullSecrets": [{"name": "registry"}],
            "volumes": [{"name": "v", "secret": {}}],
        }));
        assert_eq!(pod_spec_references(&s), vec![]);
    }

    #[test]
    fn paths_say_where_the_pod_spec_uses_each_source() {
        let s = spec(json!({
            "containers": [{"name": "app",
                "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
                "envFrom": [{"configMapRef": {"name": "env"}}, {"secretRef": {"name": "db"}}]}],
            "initContainers": [{"name": "init", "env": [
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "env", "key": "mode"}}}]}],
            "volumes": [
                {"name": "certs", "secret": {"secretName": "tls"}},
                {"name": "all", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}},
                    {"configMap": {"name": "env"}}]}},
            ],
        }));
        let paths = reference_paths(&s);
        let at = |kind, name: &str| paths[&(kind, name.to_string())].clone();
        assert_eq!(
            at(Secret, "db"),
            [
                "containers[app].env[DB_PASSWORD].valueFrom.secretKeyRef",
                "containers[app].envFrom[1].secretRef",
            ]
        );
        assert_eq!(
            at(ConfigMap, "env"),
            [
                "containers[app].envFrom[0].configMapRef",
                "initContainers[init].env[MODE].valueFrom.configMapKeyRef",
                "volumes[all].projected.sources[1].configMap",
            ]
        );
        assert_eq!(at(Secret, "tls"), ["volumes[certs].secret"]);
        // The same sources, found by the same walk.
        let refs: Vec<(SourceKind, String)> = pod_spec_references(&s)
            .into_iter()
            .map(|r| (r.kind, r.name))
            .collect();
        assert_eq!(refs, paths.keys().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn key_selection_union_and_contains() {
        assert_eq!(keys(&["a"]).union(keys(&["b"])), keys(&["a", "b"]));
        assert_eq!(keys(&["a"]).union(KeySelection::All), KeySelection::All);
        assert_eq!(KeySelection::All.union(keys(&["a"])), KeySelection::All);
        assert!(keys(&["a"]).contains("a"));
        assert!(!keys(&["a"]).contains("b"));
        assert!(KeySelection::All.contains("anything"));
    }
}
