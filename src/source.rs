//! Secrets and ConfigMaps, reduced at the edge of the watch to what reload decisions need.
//!
//! hashroll never keeps Secret or ConfigMap data: each object becomes a [`SourceSummary`] holding
//! its identity, one SHA-256 digest per key, and the two annotations that change decisions.

use std::collections::BTreeMap;
use std::fmt;

/// The two kinds of object whose changes roll workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Secret,
    ConfigMap,
}

impl SourceKind {
    /// The Kubernetes kind, as written in Events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Secret => "Secret",
            SourceKind::ConfigMap => "ConfigMap",
        }
    }

    /// The lower-case form used in annotation maps (`secret/db`).
    pub fn short(self) -> &'static str {
        match self {
            SourceKind::Secret => "secret",
            SourceKind::ConfigMap => "configmap",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Secret or ConfigMap by kind, namespace and name; it may not exist (yet).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    pub kind: SourceKind,
    pub namespace: String,
    pub name: String,
}

impl SourceId {
    pub fn new(kind: SourceKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        SourceId {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// SHA-256 of one key's section, name and value (see `hashing::key_digest`). Kept in memory only.
pub type KeyDigest = [u8; 32];

/// One digest per key, in key order, packed back to back in one allocation (each entry is the key's length
/// as 4 bytes little-endian, the key, then its digest): a source costs one allocation for all its keys,
/// however many it has. Sources have few keys, so lookups scan.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyDigests(Box<[u8]>);

const LEN_BYTES: usize = 4;
const DIGEST_BYTES: usize = 32;

impl KeyDigests {
    pub fn get(&self, key: &str) -> Option<&KeyDigest> {
        self.iter()
            .take_while(|(k, _)| *k <= key)
            .find(|(k, _)| *k == key)
            .map(|(_, d)| d)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Keys and digests in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &KeyDigest)> {
        Entries { rest: &self.0 }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Walks the packed entries of [`KeyDigests`].
struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a str, &'a KeyDigest);

    fn next(&mut self) -> Option<Self::Item> {
        let (len, rest) = self.rest.split_at_checked(LEN_BYTES)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let (key, rest) = rest.split_at_checked(len)?;
        let (digest, rest) = rest.split_at_checked(DIGEST_BYTES)?;
        self.rest = rest;
        // Written from `&str` keys by `From` below.
        Some((std::str::from_utf8(key).ok()?, digest.try_into().ok()?))
    }
}

impl fmt::Debug for KeyDigests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, d)| (k, hex::encode(d))))
            .finish()
    }
}

impl From<BTreeMap<String, KeyDigest>> for KeyDigests {
    fn from(m: BTreeMap<String, KeyDigest>) -> Self {
        let size = m.keys().map(|k| LEN_BYTES + k.len() + DIGEST_BYTES).sum();
        let mut packed = Vec::with_capacity(size);
        for (k, d) in &m {
            // Kubernetes keys are at most 253 bytes, far below the 4 GiB a length can say.
            let len = u32::try_from(k.len()).expect("key shorter than 4 GiB");
            packed.extend_from_slice(&len.to_le_bytes());
            packed.extend_from_slice(k.as_bytes());
            packed.extend_from_slice(d);
        }
        KeyDigests(packed.into_boxed_slice())
    }
}

/// Panics if the key is absent, like a map's index.
impl std::ops::Index<&str> for KeyDigests {
    type Output = KeyDigest;

    fn index(&self, key: &str) -> &KeyDigest {
        self.get(key).expect("key present")
    }
}

/// Later entries win for a repeated key, as in a map.
impl FromIterator<(String, KeyDigest)> for KeyDigests {
    fn from_iter<I: IntoIterator<Item = (String, KeyDigest)>>(iter: I) -> Self {
        iter.into_iter().collect::<BTreeMap<_, _>>().into()
    }
}

/// What hashroll keeps of one Secret or ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSummary {
    /// Shared with the controller's map key: one allocation per source.
    pub id: std::sync::Arc<SourceId>,
    /// One digest per key, `data` and `binaryData` (and a Secret's `stringData`) folded together.
    pub keys: KeyDigests,
    /// `hashroll.dev/ignore: "true"` or `reloader.stakater.com/ignore: "true"`: changes never roll.
    pub ignore: bool,
    /// `reloader.stakater.com/match: "true"`: eligible for workloads using `reloader.stakater.com/search`.
    pub stakater_match: bool,
}

/// hashroll's annotation that excludes a source from ever rolling anything.
pub const IGNORE_ANNOTATION: &str = "hashroll.dev/ignore";
/// Annotations that exclude a source from ever rolling anything (Reloader's too, in compat mode).
const IGNORE_ANNOTATIONS: [&str; 2] = [IGNORE_ANNOTATION, "reloader.stakater.com/ignore"];

impl SourceSummary {
    /// Reduces a Secret to its digests and decision annotations; None without name/namespace.
    ///
    /// `stringData` is folded into `data` (it wins for the same key, as the API server does when it
    /// merges on write), so a Secret hashes the same however its values were submitted.
    pub fn from_secret(s: &k8s_openapi::api::core::v1::Secret) -> Option<SourceSummary> {
        use crate::hashing::{Section, key_digest};
        let id = source_id(SourceKind::Secret, &s.metadata)?;
        let mut keys = BTreeMap::new();
        for (k, v) in s.data.iter().flatten() {
            keys.insert(k.clone(), key_digest(Section::Data, k, &v.0));
        }
        for (k, v) in s.string_data.iter().flatten() {
            keys.insert(k.clone(), key_digest(Section::Data, k, v.as_bytes()));
        }
        Some(Self::with_annotations(id, keys, &s.metadata))
    }

    /// Reduces a ConfigMap to its digests and decision annotations; None without name/namespace.
    ///
    /// `data` and `binaryData` hash under different sections; the API server forbids one key in both, and
    /// should it happen anyway `binaryData` wins so the result stays deterministic.
    pub fn from_config_map(c: &k8s_openapi::api::core::v1::ConfigMap) -> Option<SourceSummary> {
        use crate::hashing::{Section, key_digest};
        let id = source_id(SourceKind::ConfigMap, &c.metadata)?;
        let mut keys = BTreeMap::new();
        for (k, v) in c.data.iter().flatten() {
            keys.insert(k.clone(), key_digest(Section::Data, k, v.as_bytes()));
        }
        for (k, v) in c.binary_data.iter().flatten() {
            keys.insert(k.clone(), key_digest(Section::BinaryData, k, &v.0));
        }
        Some(Self::with_annotations(id, keys, &c.metadata))
    }

    /// Reduces a Secret read as digests (see `crate::wire`); None without name/namespace.
    pub fn from_secret_digests(s: &crate::wire::SecretDigests) -> Option<SourceSummary> {
        let id = source_id(SourceKind::Secret, &s.metadata)?;
        Some(Self::with_annotations(id, s.data.clone(), &s.metadata))
    }

    /// Reduces a ConfigMap read as digests (see `crate::wire`); None without name/namespace.
    pub fn from_config_map_digests(c: &crate::wire::ConfigMapDigests) -> Option<SourceSummary> {
        let id = source_id(SourceKind::ConfigMap, &c.metadata)?;
        let mut keys = c.data.clone();
        keys.extend(c.binary_data.iter().map(|(k, d)| (k.clone(), *d)));
        Some(Self::with_annotations(id, keys, &c.metadata))
    }

    /// The summary as `--stakater-compat=false` reads it: Reloader's `ignore` and `match` annotations on
    /// the source count for nothing, only `hashroll.dev/ignore` does.
    pub fn without_stakater(
        mut self,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> SourceSummary {
        self.ignore = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(IGNORE_ANNOTATION))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        self.stakater_match = false;
        self
    }

    fn with_annotations(
        id: SourceId,
        keys: BTreeMap<String, KeyDigest>,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> SourceSummary {
        let is_true = |name: &str| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(name))
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        };
        SourceSummary {
            id: std::sync::Arc::new(id),
            keys: keys.into(),
            ignore: IGNORE_ANNOTATIONS.iter().any(|a| is_true(a)),
            stakater_match: is_true(crate::policy::STAKATER_MATCH),
        }
    }
}

fn source_id(
    kind: SourceKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<SourceId> {
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    let namespace = meta.namespace.as_deref().filter(|n| !n.is_empty())?;
    Some(SourceId::new(kind, namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::{Section, key_digest};
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("db".into()),
            namespace: Some("prod".into()),
            annotations: (!annotations.is_empty()).then(|| {
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ..ObjectMeta::default()
        }
    }

    fn bytes(v: &str) -> ByteString {
        ByteString(v.as_bytes().to_vec())
    }

    #[test]
    fn secret_keeps_digests_only() {
        let s = Secret {
            metadata: meta(&[]),
            data: Some(BTreeMap::from([
                ("user".to_string(), bytes("admin")),
                ("pass".to_string(), bytes("hunter2")),
            ])),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        let sum = SourceSummary::from_secret(&s).unwrap();
        assert_eq!(*sum.id, SourceId::new(SourceKind::Secret, "prod", "db"));
        assert_eq!(
            sum.keys,
            BTreeMap::from([
                (
                    "pass".to_string(),
                    key_digest(Section::Data, "pass", b"hunter2")
                ),
                (
                    "user".to_string(),
                    key_digest(Section::Data, "user", b"admin")
                ),
            ])
            .into()
        );
        assert!(!sum.ignore && !sum.stakater_match);
    }

    #[test]
    fn secret_string_data_folds_into_data_and_wins() {
        let s = Secret {
            metadata: meta(&[]),
            data: Some(BTreeMap::from([
                ("pass".to_string(), bytes("old")),
                ("user".to_string(), bytes("admin")),
            ])),
            string_data: Some(BTreeMap::from([
                ("pass".to_string(), "new".to_string()),
                ("token".to_string(), "t".to_string()),
            ])),
            ..Secret::default()
        };
        let sum = SourceSummary::from_secret(&s).unwrap();
        assert_eq!(sum.keys.len(), 3);
        assert_eq!(sum.keys["pass"], key_digest(Section::Data, "pass", b"new"));
        assert_eq!(sum.keys["token"], key_digest(Section::Data, "token", b"t"));

        // The same content submitted through `data` only hashes identically.
        let as_data = Secret {
            metadata: meta(&[]),
            data: Some(BTreeMap::from([
                ("pass".to_string(), bytes("new")),
                ("user".to_string(), bytes("admin")),
                ("token".to_string(), bytes("t")),
            ])),
            ..Secret::default()
        };
        assert_eq!(SourceSummary::from_secret(&as_data).unwrap().keys, sum.keys);
    }

    #[test]
    fn config_map_separates_data_and_binary_data() {
        let c = ConfigMap {
            metadata: meta(&[]),
            data: Some(BTreeMap::from([("conf".to_string(), "x=1".to_string())])),
            binary_data: Some(BTreeMap::from([("blob".to_string(), bytes("x=1"))])),
            ..ConfigMap::default()
        };
        let sum = SourceSummary::from_config_map(&c).unwrap();
        assert_eq!(*sum.id, SourceId::new(SourceKind::ConfigMap, "prod", "db"));
        assert_eq!(sum.keys["conf"], key_digest(Section::Data, "conf", b"x=1"));
        assert_eq!(
            sum.keys["blob"],
            key_digest(Section::BinaryData, "blob", b"x=1")
        );

        // Moving a value from data to binaryData is a change.
        let moved = ConfigMap {
            metadata: meta(&[]),
            binary_data: Some(BTreeMap::from([("conf".to_string(), bytes("x=1"))])),
            ..ConfigMap::default()
        };
        let moved = SourceSummary::from_config_map(&moved).unwrap();
        assert_ne!(moved.keys["conf"], sum.keys["conf"]);
    }

    #[test]
    fn empty_objects_have_no_keys() {
        let sum = SourceSummary::from_config_map(&ConfigMap {
            metadata: meta(&[]),
            ..ConfigMap::default()
        })
        .unwrap();
        assert!(sum.keys.is_empty());
    }

    #[test]
    fn objects_without_name_or_namespace_are_skipped() {
        let mut m = meta(&[]);
        m.namespace = None;
        assert!(
            SourceSummary::from_secret(&Secret {
                metadata: m.clone(),
                ..Secret::default()
            })
            .is_none()
        );
        m.namespace = Some("prod".into());
        m.name = Some(String::new());
        assert!(
            SourceSummary::from_config_map(&ConfigMap {
                metadata: m,
                ..ConfigMap::default()
            })
            .is_none()
        );
    }

    #[test]
    fn annotations_set_ignore_and_match() {
        let secret = |ann: &[(&str, &str)]| {
            SourceSummary::from_secret(&Secret {
                metadata: meta(ann),
                ..Secret::default()
            })
            .unwrap()
        };
        assert!(secret(&[("hashroll.dev/ignore", "true")]).ignore);
        assert!(secret(&[("reloader.stakater.com/ignore", " TRUE ")]).ignore);
        assert!(!secret(&[("hashroll.dev/ignore", "false")]).ignore);
        assert!(!secret(&[("hashroll.dev/ignore", "yes")]).ignore);
        assert!(!secret(&[("example.com/ignore", "true")]).ignore);
        let m = secret(&[("reloader.stakater.com/match", "True")]);
        assert!(m.stakater_match && !m.ignore);
        assert!(!secret(&[("reloader.stakater.com/match", "1")]).stakater_match);

        let cm = SourceSummary::from_config_map(&ConfigMap {
            metadata: meta(&[
                ("hashroll.dev/ignore", "true"),
                ("reloader.stakater.com/match", "true"),
            ]),
            ..ConfigMap::default()
        })
        .unwrap();
        assert!(cm.ignore && cm.stakater_match);
    }

    #[test]
    fn without_stakater_only_hashrolls_ignore_counts() {
        let reduce = |ann: &[(&str, &str)]| {
            let m = meta(ann);
            SourceSummary::from_secret(&Secret {
                metadata: m.clone(),
                ..Secret::default()
            })
            .unwrap()
            .without_stakater(&m)
        };
        let s = reduce(&[
            ("reloader.stakater.com/ignore", "true"),
            ("reloader.stakater.com/match", "true"),
        ]);
        assert!(!s.ignore && !s.stakater_match);
        assert!(reduce(&[("hashroll.dev/ignore", "true")]).ignore);
    }

    #[test]
    fn key_digests_look_up_like_a_sorted_map() {
        let d = |b: u8| [b; 32];
        let k: KeyDigests = vec![
            ("b".to_string(), d(1)),
            ("a".to_string(), d(2)),
            ("b".to_string(), d(3)),
        ]
        .into_iter()
        .collect();
        assert_eq!(k.len(), 2);
        assert_eq!(k.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(k.get("b"), Some(&d(3)), "the later entry wins");
        assert_eq!(k["a"], d(2));
        assert!(k.get("c").is_none() && !k.contains_key("c"));
        assert!(KeyDigests::default().is_empty());

        // Keys of every length, prefixes of each other, and non-ASCII names survive the packed layout.
        let long = "k".repeat(253);
        let names = ["", "a", "ab", "a.b", "ключ", long.as_str()];
        let k: KeyDigests = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), d(i as u8)))
            .collect();
        assert_eq!(k.len(), names.len());
        for (i, n) in names.iter().enumerate() {
            assert_eq!(k.get(n), Some(&d(i as u8)), "key {n:?}");
        }
        assert!(k.get("abc").is_none() && k.get("kk").is_none());
        let mut sorted = names.to_vec();
        sorted.sort();
        assert_eq!(k.keys().collect::<Vec<_>>(), sorted);
    }
}
