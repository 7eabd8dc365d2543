//! Secrets and ConfigMaps, reduced at the edge of the watch to what reload decisions need.
//!
//! hashroll never keeps Secret or ConfigMap data: each object becomes a [`SourceSummary`] holding
//! its identity, one SHA-256 digest per key, and the two annotations that change decisions.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::annotations::{IGNORE_ANNOTATION, STAKATER_IGNORE, STAKATER_MATCH};
pub use crate::model::hashing::KeyDigest;
use crate::model::kind::{SourceId, SourceKind};

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

    #[cfg(test)]
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Keys and digests in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &KeyDigest)> {
        Entries { rest: &self.0 }
    }

    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keys whose digest differs between `self` and `new`: changed, added or removed. One walk over both
    /// (each is sorted), so a Secret with thousands of keys costs time in proportion to its keys.
    pub fn changed_keys<'a>(&'a self, new: &'a KeyDigests) -> Vec<&'a str> {
        let (mut old, mut new) = (self.iter().peekable(), new.iter().peekable());
        let mut changed = Vec::new();
        loop {
            match (old.peek(), new.peek()) {
                (None, None) => return changed,
                (Some((k, _)), None) => {
                    changed.push(*k);
                    old.next();
                }
                (None, Some((k, _))) => {
                    changed.push(*k);
                    new.next();
                }
                (Some((ko, dold)), Some((kn, dnew))) => match ko.cmp(kn) {
                    std::cmp::Ordering::Less => {
                        changed.push(*ko);
                        old.next();
                    }
                    std::cmp::Ordering::Greater => {
                        changed.push(*kn);
                        new.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if dold != dnew {
                            changed.push(*ko);
                        }
                        old.next();
                        new.next();
                    }
                },
            }
        }
    }
}

/// Walks the packed entries of [`KeyDigests`].
struct Entries<'a> {
    rest: &'a [u8],
}

#[cfg(test)]
thread_local! {
    /// Entries read on this thread: tests count the work a change costs without timing it.
    pub static ENTRIES_READ: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a str, &'a KeyDigest);

    fn next(&mut self) -> Option<Self::Item> {
        #[cfg(test)]
        ENTRIES_READ.with(|n| n.set(n.get() + 1));
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
    /// `hashroll.dev/ignore: "true"` (any case) or `reloader.stakater.com/ignore` exactly `"true"`:
    /// changes never roll.
    pub ignore: bool,
    /// `reloader.stakater.com/match` exactly `"true"`: eligible for workloads using
    /// `reloader.stakater.com/search`.
    pub stakater_match: bool,
    /// `Some(i)`: a Secret of the i-th type in `--exclude-secret-types`, known by name only. It exists, but
    /// its content is not watched, so it is not tracked (and never mistaken for missing).
    pub excluded_type: Option<u8>,
}

impl SourceSummary {
    /// Builds a summary from an object's metadata and its key digests; None without name or namespace.
    /// Without Stakater compatibility, Reloader's `ignore` and `match` annotations count for nothing.
    pub fn new(
        kind: SourceKind,
        meta: &ObjectMeta,
        keys: BTreeMap<String, KeyDigest>,
        stakater_compat: bool,
    ) -> Option<SourceSummary> {
        let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
        let namespace = meta.namespace.as_deref().filter(|n| !n.is_empty())?;
        let value = |name: &str| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(name))
                .map(String::as_str)
        };
        // Reloader reads its own exactly as `"true"`; hashroll's in any case.
        let stakater_true = |name: &str| stakater_compat && value(name) == Some("true");
        let ignore = value(IGNORE_ANNOTATION)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || stakater_true(STAKATER_IGNORE);
        Some(SourceSummary {
            id: std::sync::Arc::new(SourceId::new(kind, namespace, name)),
            keys: keys.into(),
            ignore,
            stakater_match: stakater_true(STAKATER_MATCH),
            excluded_type: None,
        })
    }

    /// A Secret of an excluded type, seen through its metadata only.
    pub fn excluded(meta: &ObjectMeta, type_index: u8) -> Option<SourceSummary> {
        let mut s = Self::new(SourceKind::Secret, meta, BTreeMap::new(), false)?;
        s.ignore = false;
        s.excluded_type = Some(type_index);
        Some(s)
    }

    /// Reduces a whole Secret (the watch reads digests as it parses; this checks that path in tests).
    ///
    /// `stringData` is folded into `data` (it wins for the same key, as the API server does when it
    /// merges on write), so a Secret hashes the same however its values were submitted.
    #[cfg(test)]
    pub fn from_secret(s: &k8s_openapi::api::core::v1::Secret) -> Option<SourceSummary> {
        use crate::model::hashing::{Section, key_digest};
        let mut keys = BTreeMap::new();
        for (k, v) in s.data.iter().flatten() {
            keys.insert(k.clone(), key_digest(Section::Data, k, &v.0));
        }
        for (k, v) in s.string_data.iter().flatten() {
            keys.insert(k.clone(), key_digest(Section::Data, k, v.as_bytes()));
        }
        Self::new(SourceKind::Secret, &s.metadata, keys, true)
    }

    /// Reduces a whole ConfigMap (for tests, like [`SourceSummary::from_secret`]).
    ///
    /// `data` and `binaryData` hash under different sections; the API server forbids one key in both, and
    /// should it happen anyway `binaryData` wins so the result stays deterministic.
    #[cfg(test)]
    pub fn from_config_map(c: &k8s_openapi::api::core::v1::ConfigMap) -> Option<SourceSummary> {
        use crate::model::hashing::{Section, key_digest};
        let mut keys = BTreeMap::new();
        for (k, v) in c.data.iter().flatten() {
            keys.insert(k.clone(), key_digest(Section::Data, k, v.as_bytes()));
        }
        for (k, v) in c.binary_data.iter().flatten() {
            keys.insert(k.clone(), key_digest(Section::BinaryData, k, &v.0));
        }
        Self::new(SourceKind::ConfigMap, &c.metadata, keys, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::hashing::{Section, key_digest};
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
        assert!(secret(&[("hashroll.dev/ignore", " TRUE ")]).ignore);
        assert!(secret(&[("reloader.stakater.com/ignore", "true")]).ignore);
        // Reloader's own count only as exactly "true", as Reloader reads them.
        assert!(!secret(&[("reloader.stakater.com/ignore", "True")]).ignore);
        assert!(!secret(&[("hashroll.dev/ignore", "false")]).ignore);
        assert!(!secret(&[("hashroll.dev/ignore", "yes")]).ignore);
        assert!(!secret(&[("example.com/ignore", "true")]).ignore);
        let m = secret(&[("reloader.stakater.com/match", "true")]);
        assert!(m.stakater_match && !m.ignore);
        for v in ["True", "1", " true"] {
            assert!(
                !secret(&[("reloader.stakater.com/match", v)]).stakater_match,
                "{v:?}"
            );
        }

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
            SourceSummary::new(SourceKind::Secret, &meta(ann), BTreeMap::new(), false).unwrap()
        };
        let s = reduce(&[
            ("reloader.stakater.com/ignore", "true"),
            ("reloader.stakater.com/match", "true"),
        ]);
        assert!(!s.ignore && !s.stakater_match);
        assert!(reduce(&[("hashroll.dev/ignore", "true")]).ignore);
    }

    #[test]
    fn changed_keys_are_the_changed_added_and_removed_ones_in_order() {
        let d = |b: u8| [b; 32];
        let old: KeyDigests = [("a", 1), ("b", 2), ("c", 3), ("e", 5)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), d(v)))
            .collect();
        let new: KeyDigests = [("b", 2), ("c", 9), ("d", 4), ("e", 5), ("f", 6)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), d(v)))
            .collect();
        assert_eq!(old.changed_keys(&new), ["a", "c", "d", "f"]);
        assert_eq!(new.changed_keys(&old), ["a", "c", "d", "f"]);
        assert!(old.changed_keys(&old).is_empty());
        assert_eq!(
            KeyDigests::default().changed_keys(&old),
            ["a", "b", "c", "e"]
        );
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
