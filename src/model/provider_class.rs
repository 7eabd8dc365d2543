//! What a SecretProviderClass's content is, for rolls: the versions of the objects it mounts.
//!
//! The Secrets Store CSI driver records, per pod, which version of each object it mounted
//! (`SecretProviderClassPodStatus`, `status.objects[].id/version`); with rotation on, it rewrites each
//! pod's status as it fetches a new version, pod after pod, node after node. A SecretProviderClass's
//! content is **the version set of its newest status**: the one the API server stored last (the highest
//! `resourceVersion` seen for that class in the namespace). So
//!
//! - a rotation changes the content once, with the first status that reports the new versions; the
//!   statuses of the other pods, rewritten one after another, report the same set: nothing changes;
//! - pods that a roll (or a scale-up) creates mount the newest versions, which are already the content;
//!   statuses that go away with their pods change nothing (the newest set seen stays the content);
//! - after a restart, the content is again the newest status's set, so what rotated meanwhile rolls once.
//!
//! Versions are opaque strings: each is kept only as a digest (per object id, like a Secret's key), and
//! memory holds one entry per class, however many pods and objects report on it. A class with no status
//! yet has no content: nothing to record or roll until a pod has mounted it.

use std::collections::{BTreeMap, HashMap};

use crate::model::hashing::{KeyDigest, Section, key_digest};
use crate::model::kind::SourceKind;
use crate::model::source::{KeyDigests, SourceSummary};

/// One `SecretProviderClassPodStatus`, reduced as it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStatus {
    pub namespace: String,
    /// `status.secretProviderClassName`.
    pub class: String,
    /// `metadata.resourceVersion`, as an integer (None if it is not one: such a status never wins).
    pub resource_version: Option<u64>,
    /// Per object id, the digest of its version.
    pub versions: BTreeMap<String, KeyDigest>,
}

/// The digest of one object's version (its id is the key).
pub fn version_digest(id: &str, version: &str) -> KeyDigest {
    key_digest(Section::Data, id, version.as_bytes())
}

#[derive(Debug, Default)]
struct Entry {
    /// The SecretProviderClass object (its annotations), while it exists.
    class: Option<SourceSummary>,
    /// The newest status: its resource version and version set.
    newest: Option<(u64, KeyDigests)>,
}

impl Entry {
    /// The source as decisions see it: the class, with the newest status's versions as its keys.
    fn summary(&self) -> Option<SourceSummary> {
        let (class, (_, keys)) = (self.class.as_ref()?, self.newest.as_ref()?);
        let mut s = class.clone();
        s.keys = keys.clone();
        Some(s)
    }
}

/// Every SecretProviderClass known, with its newest status.
#[derive(Debug, Default)]
pub struct ProviderClasses {
    entries: HashMap<(String, String), Entry>,
}

impl ProviderClasses {
    /// The class object was seen (`class` carries its id and annotations; its keys are ignored). Returns
    /// the source as it is now, if it has content.
    pub fn class_applied(&mut self, class: SourceSummary) -> Option<SourceSummary> {
        debug_assert_eq!(class.id.kind, SourceKind::SecretProviderClass);
        let key = (class.id.namespace.to_string(), class.id.name.to_string());
        let entry = self.entries.entry(key).or_default();
        entry.class = Some(class);
        entry.summary()
    }

    /// The class object is gone: so is the source (and what its statuses said).
    pub fn class_deleted(&mut self, namespace: &str, name: &str) {
        self.entries
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// A pod's status was seen. Returns the source when its content changed (a newer status with another
    /// version set, of a class that exists).
    pub fn status_applied(&mut self, status: PodStatus) -> Option<SourceSummary> {
        let rv = status.resource_version?;
        let entry = self
            .entries
            .entry((status.namespace, status.class))
            .or_default();
        if entry
            .newest
            .as_ref()
            .is_some_and(|(newest, _)| *newest >= rv)
        {
            return None;
        }
        let keys = KeyDigests::from(status.versions);
        let changed = entry.newest.as_ref().is_none_or(|(_, k)| *k != keys);
        entry.newest = Some((rv, keys));
        if changed { entry.summary() } else { None }
    }

    /// Classes held (each with at most one status's versions, however many pods report on it).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every class with content (to announce once the statuses have been listed).
    pub fn summaries(&self) -> impl Iterator<Item = SourceSummary> + '_ {
        self.entries.values().filter_map(Entry::summary)
    }

    /// Forgets the classes `keep` says were not listed (a re-list of the class objects).
    pub fn retain_classes(&mut self, keep: impl Fn(&str, &str) -> bool) {
        for ((ns, name), e) in &mut self.entries {
            if e.class.is_some() && !keep(ns, name) {
                e.class = None;
            }
        }
        self.entries
            .retain(|_, e| e.class.is_some() || e.newest.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const NS: &str = "shop";

    fn class(name: &str, annotations: &[(&str, &str)]) -> SourceSummary {
        let meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        };
        SourceSummary::new(
            SourceKind::SecretProviderClass,
            &meta,
            BTreeMap::new(),
            true,
        )
        .unwrap()
    }

    fn status(class: &str, rv: u64, versions: &[(&str, &str)]) -> PodStatus {
        PodStatus {
            namespace: NS.into(),
            class: class.into(),
            resource_version: Some(rv),
            versions: versions
                .iter()
                .map(|(id, v)| (id.to_string(), version_digest(id, v)))
                .collect(),
        }
    }

    #[test]
    fn a_rotation_seen_through_three_pods_changes_the_content_once() {
        let mut p = ProviderClasses::default();
        // Nothing before a pod has mounted it.
        assert!(p.class_applied(class("vault", &[])).is_none());
        let v1 = [("db-password", "1"), ("api-key", "7")];
        let first = p.status_applied(status("vault", 10, &v1)).expect("content");
        assert!(p.status_applied(status("vault", 11, &v1)).is_none());
        assert!(p.status_applied(status("vault", 12, &v1)).is_none());
        // The driver rotates db-password, pod after pod: one change.
        let v2 = [("db-password", "2"), ("api-key", "7")];
        let rotated = p.status_applied(status("vault", 20, &v2)).expect("changed");
        assert_ne!(rotated.keys, first.keys);
        assert_eq!(
            first.keys.changed_keys(&rotated.keys),
            ["db-password"],
            "the changed object is named"
        );
        assert!(p.status_applied(status("vault", 21, &v2)).is_none());
        assert!(p.status_applied(status("vault", 22, &v2)).is_none());
        // The roll's new pods mount the new versions; the old statuses' late events are older.
        assert!(p.status_applied(status("vault", 30, &v2)).is_none());
        assert!(p.status_applied(status("vault", 11, &v1)).is_none());
        assert_eq!(p.summaries().collect::<Vec<_>>(), [rotated]);
        // Memory per class, not per pod: a thousand pods' statuses leave one entry of one version set.
        for rv in 100..1100 {
            p.status_applied(status("vault", rv, &v2));
        }
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn the_newest_status_wins_in_any_order_so_a_restart_sees_what_rotated() {
        let v1 = [("k", "1")];
        let v2 = [("k", "2")];
        let mut listed_in_order = ProviderClasses::default();
        let mut listed_backwards = ProviderClasses::default();
        for p in [&mut listed_in_order, &mut listed_backwards] {
            p.class_applied(class("vault", &[]));
        }
        let statuses = [
            status("vault", 5, &v1),
            status("vault", 9, &v2),
            status("vault", 7, &v1),
        ];
        for s in statuses.iter().cloned() {
            listed_in_order.status_applied(s);
        }
        for s in statuses.iter().rev().cloned() {
            listed_backwards.status_applied(s);
        }
        let (a, b): (Vec<_>, Vec<_>) = (
            listed_in_order.summaries().collect(),
            listed_backwards.summaries().collect(),
        );
        assert_eq!(a, b);
        assert_eq!(
            a[0].keys,
            KeyDigests::from(status("vault", 0, &v2).versions)
        );
    }

    #[test]
    fn statuses_before_their_class_and_classes_apart() {
        let mut p = ProviderClasses::default();
        assert!(
            p.status_applied(status("vault", 3, &[("k", "1")]))
                .is_none()
        );
        let s = p.class_applied(class("vault", &[("reloader.stakater.com/ignore", "true")]));
        assert!(s.as_ref().is_some_and(|s| s.ignore), "{s:?}");
        // Another class's statuses are its own.
        assert!(
            p.status_applied(status("other", 4, &[("k", "9")]))
                .is_none()
        );
        assert_eq!(p.summaries().count(), 1);
        // Gone with its object; a re-list that lacks it forgets it too.
        p.class_deleted(NS, "vault");
        assert_eq!(p.summaries().count(), 0);
        p.class_applied(class("other", &[]));
        assert_eq!(p.summaries().count(), 1);
        p.retain_classes(|_, name| name != "other");
        assert_eq!(p.summaries().count(), 0);
    }

    #[test]
    fn a_status_without_a_numeric_resource_version_never_wins() {
        let mut p = ProviderClasses::default();
        p.class_applied(class("vault", &[]));
        let mut s = status("vault", 0, &[("k", "1")]);
        s.resource_version = None;
        assert!(p.status_applied(s).is_none());
        assert_eq!(p.summaries().count(), 0);
    }
}
