//! The kinds of object hashroll knows, one table row each, and the ids of their objects.
//!
//! Everything that differs between kinds (API group and version, resource name, where a workload keeps its
//! pod template, the names accepted on the command line) is a column here: adding a kind adds a row.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};

/// One row of a kind table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// The Kubernetes kind, as written in Events and logs (`Deployment`).
    pub kind: &'static str,
    /// The API group (`""` for the core group).
    pub group: &'static str,
    pub version: &'static str,
    /// The API resource, also the name on the command line (`deployments`).
    pub plural: &'static str,
    /// The lower-case singular, also accepted on the command line; sources use it as their label in the
    /// recorded per-source map (`secret/db`).
    pub singular: &'static str,
}

impl KindInfo {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The kinds of source whose changes roll workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Secret,
    ConfigMap,
    /// The Secrets Store CSI driver's `SecretProviderClass`: its content is the versions of the objects
    /// it mounts, as the driver reports them per pod (`k8s::csi`).
    SecretProviderClass,
    /// A Vault (or OpenBao) KV path a secret-injecting webhook reads when pods start (Bank-Vaults
    /// `vault:PATH#KEY`). Polled, not watched: `src/vault/`. Its id's name is the path as the workload
    /// writes it; its namespace is the workload's (one path read once, reported to each namespace using it).
    Vault,
}

impl SourceKind {
    /// The kinds watched through the Kubernetes API (`--watch`).
    pub const ALL: [SourceKind; 3] = [
        SourceKind::Secret,
        SourceKind::ConfigMap,
        SourceKind::SecretProviderClass,
    ];

    /// Polled outside Kubernetes (Vault): no watch, no `--watch` name; see `src/vault/`.
    pub const fn is_polled(self) -> bool {
        matches!(self, SourceKind::Vault)
    }

    pub const fn info(self) -> &'static KindInfo {
        &SOURCE_TABLE[self as usize]
    }

    /// The Kubernetes kind, as written in Events and logs.
    pub fn as_str(self) -> &'static str {
        self.info().kind
    }

    /// The lower-case form used in the recorded per-source map (`secret/db`).
    pub fn short(self) -> &'static str {
        self.info().singular
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The source kinds, in the order of [`SourceKind`]'s variants.
const SOURCE_TABLE: [KindInfo; 4] = [
    KindInfo {
        kind: "Secret",
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
    },
    KindInfo {
        kind: "ConfigMap",
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
    },
    KindInfo {
        kind: "SecretProviderClass",
        group: "secrets-store.csi.x-k8s.io",
        version: "v1",
        plural: "secretproviderclasses",
        singular: "secretproviderclass",
    },
    // Not a Kubernetes resource: the group says where it lives; `vault/secret/data/app` in the recorded map.
    KindInfo {
        kind: "Vault",
        group: "vault",
        version: "v1",
        plural: "vault",
        singular: "vault",
    },
];

/// A kind of workload whose pod template hashroll annotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
    /// Argo Rollouts, `argoproj.io/v1alpha1`.
    Rollout,
}

/// A workload kind's row: the common columns plus where its pod template sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub common: KindInfo,
    /// The path from the object to its pod template.
    pub template_path: &'static [&'static str],
}

const TEMPLATE: &[&str] = &["spec", "template"];
/// A CronJob's next Job uses the new config; hashroll never creates a Job itself.
const JOB_TEMPLATE: &[&str] = &["spec", "jobTemplate", "spec", "template"];

const fn workload(
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    template_path: &'static [&'static str],
) -> WorkloadInfo {
    WorkloadInfo {
        common: KindInfo {
            kind,
            group,
            version,
            plural,
            singular,
        },
        template_path,
    }
}

/// The workload kinds, in the order of [`WorkloadKind`]'s variants.
const WORKLOAD_TABLE: [WorkloadInfo; 5] = [
    workload(
        "Deployment",
        "apps",
        "v1",
        "deployments",
        "deployment",
        TEMPLATE,
    ),
    workload(
        "StatefulSet",
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        TEMPLATE,
    ),
    workload(
        "DaemonSet",
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        TEMPLATE,
    ),
    workload(
        "CronJob",
        "batch",
        "v1",
        "cronjobs",
        "cronjob",
        JOB_TEMPLATE,
    ),
    workload(
        "Rollout",
        "argoproj.io",
        "v1alpha1",
        "rollouts",
        "rollout",
        TEMPLATE,
    ),
];

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 5] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::CronJob,
        WorkloadKind::Rollout,
    ];

    pub const fn workload_info(self) -> &'static WorkloadInfo {
        &WORKLOAD_TABLE[self as usize]
    }

    pub const fn info(self) -> &'static KindInfo {
        &self.workload_info().common
    }

    pub fn as_str(self) -> &'static str {
        self.info().kind
    }

    /// The path from the object to its pod template (`spec.template`, or a CronJob's
    /// `spec.jobTemplate.spec.template`).
    pub fn template_path(self) -> &'static [&'static str] {
        self.workload_info().template_path
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A namespace's name, allocated once per distinct namespace and shared by every id in it: thousands of
/// objects live in a few hundred namespaces (at the M scale of `benches/scale`, 23,000 ids in 100).
/// Compares, orders and hashes as its text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Arc<str>);

/// Every namespace name in use; [`Namespace::forget_unused`] drops those no id holds any more.
static NAMESPACES: Mutex<BTreeSet<Arc<str>>> = Mutex::new(BTreeSet::new());

impl Namespace {
    pub fn new(name: &str) -> Self {
        let mut known = NAMESPACES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = known.get(name) {
            return Namespace(Arc::clone(n));
        }
        let n: Arc<str> = Arc::from(name);
        known.insert(Arc::clone(&n));
        Namespace(n)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Drops the names of namespaces nothing refers to (deleted, or no longer watched).
    pub fn forget_unused() {
        let mut known = NAMESPACES.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|n| Arc::strong_count(n) > 1);
    }
}

impl std::ops::Deref for Namespace {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Namespace {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Namespace {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for Namespace {
    fn from(s: &str) -> Self {
        Namespace::new(s)
    }
}

impl From<String> for Namespace {
    fn from(s: String) -> Self {
        Namespace::new(&s)
    }
}

impl From<&String> for Namespace {
    fn from(s: &String) -> Self {
        Namespace::new(s)
    }
}

impl From<&Namespace> for Namespace {
    fn from(n: &Namespace) -> Self {
        n.clone()
    }
}

impl From<Namespace> for String {
    fn from(n: Namespace) -> Self {
        n.0.to_string()
    }
}

impl PartialEq<str> for Namespace {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Namespace {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Namespace {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

/// A Secret or ConfigMap by kind, namespace and name; it may not exist (yet).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    pub kind: SourceKind,
    pub namespace: Namespace,
    /// Boxed: 8 bytes fewer than a `String`, which takes an id's allocation down a size class.
    pub name: Box<str>,
}

impl SourceId {
    pub fn new(
        kind: SourceKind,
        namespace: impl Into<Namespace>,
        name: impl Into<Box<str>>,
    ) -> Self {
        SourceId {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The label this source has in the recorded per-source map (`secret/db`).
    pub fn label(&self) -> String {
        source_label(self.kind, &self.name)
    }
}

/// The label a source has in the recorded per-source map (`secret/db`).
pub fn source_label(kind: SourceKind, name: &str) -> String {
    format!("{}/{}", kind.short(), name)
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A workload by kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadId {
    pub kind: WorkloadKind,
    pub namespace: Namespace,
    /// Boxed, as [`SourceId::name`].
    pub name: Box<str>,
}

impl WorkloadId {
    pub fn new(
        kind: WorkloadKind,
        namespace: impl Into<Namespace>,
        name: impl Into<Box<str>>,
    ) -> Self {
        WorkloadId {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_allocation_per_namespace_name_while_something_holds_it() {
        let name = "kind-rs-test-namespace";
        let a = Namespace::new(name);
        let owned = String::from(name);
        let b = SourceId::new(SourceKind::Secret, &owned, "db").namespace;
        let c = WorkloadId::new(WorkloadKind::Deployment, owned, "web").namespace;
        assert!(Arc::ptr_eq(&a.0, &b.0) && Arc::ptr_eq(&b.0, &c.0));
        assert_eq!(a, name);
        assert_eq!(a.to_string(), name);
        assert_eq!(format!("{a:?}"), format!("{name:?}"));
        Namespace::forget_unused();
        assert!(NAMESPACES.lock().unwrap().contains(name), "still held");
        drop((a, b, c));
        Namespace::forget_unused();
        assert!(!NAMESPACES.lock().unwrap().contains(name), "forgotten");
    }

    #[test]
    fn every_row_is_consistent() {
        for k in WorkloadKind::ALL {
            let i = k.info();
            assert_eq!(i.kind, format!("{k:?}"), "the table is in variant order");
            assert_eq!(i.plural, format!("{}s", i.singular), "{k}");
            assert_eq!(i.singular, i.kind.to_ascii_lowercase(), "{k}");
            assert_eq!(k.template_path().last(), Some(&"template"));
        }
        for k in SourceKind::ALL {
            assert_eq!(
                k.info().kind,
                format!("{k:?}"),
                "the table is in variant order"
            );
            assert_eq!(k.info().singular, k.info().kind.to_ascii_lowercase());
        }
        assert_eq!(SourceKind::Secret.info().api_version(), "v1");
        assert_eq!(
            SourceKind::SecretProviderClass.info().api_version(),
            "secrets-store.csi.x-k8s.io/v1"
        );
        assert_eq!(SourceKind::Vault.info().kind, "Vault");
        assert!(SourceKind::Vault.is_polled() && !SourceKind::ALL.iter().any(|k| k.is_polled()));
        assert_eq!(WorkloadKind::CronJob.info().api_version(), "batch/v1");
        assert_eq!(
            SourceId::new(SourceKind::ConfigMap, "ns", "app").label(),
            "configmap/app"
        );
    }
}
