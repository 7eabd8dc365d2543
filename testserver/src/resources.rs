//! The registry of served resource types: built-in kinds plus custom resources registered at start-up.

use serde_json::{Value, json};

/// A custom resource type to serve in addition to the built-in ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomResource {
    /// API group, e.g. `argoproj.io`.
    pub group: String,
    /// API version, e.g. `v1alpha1`.
    pub version: String,
    /// Kind, e.g. `Rollout`.
    pub kind: String,
    /// Plural resource name used in URLs, e.g. `rollouts`.
    pub plural: String,
    /// Singular name, e.g. `rollout`.
    pub singular: String,
    /// kubectl short names, e.g. `["ro"]`.
    pub short_names: Vec<String>,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

impl CustomResource {
    /// The Argo Rollouts `argoproj.io/v1alpha1` `Rollout` resource (short name `ro`).
    pub fn argo_rollouts() -> Self {
        CustomResource {
            group: "argoproj.io".into(),
            version: "v1alpha1".into(),
            kind: "Rollout".into(),
            plural: "rollouts".into(),
            singular: "rollout".into(),
            short_names: vec!["ro".into()],
            namespaced: true,
        }
    }
}

/// Where a workload keeps its pod template, for the rollout record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplatePath {
    /// `spec.template` (Deployment, StatefulSet, DaemonSet, Rollout).
    SpecTemplate,
    /// `spec.jobTemplate.spec.template` (CronJob).
    JobTemplate,
}

impl TemplatePath {
    /// The pod template inside `obj`, if present.
    pub fn extract<'a>(&self, obj: &'a Value) -> Option<&'a Value> {
        match self {
            TemplatePath::SpecTemplate => obj.pointer("/spec/template"),
            TemplatePath::JobTemplate => obj.pointer("/spec/jobTemplate/spec/template"),
        }
    }
}

/// How the workload simulator fills in status for a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimKind {
    /// Deployment, StatefulSet, ReplicaSet: replicas/updatedReplicas/readyReplicas/availableReplicas.
    Replicas,
    /// DaemonSet: the `*NumberScheduled` family.
    DaemonSet,
}

/// One served resource type.
#[derive(Clone, Debug)]
pub struct ResourceDef {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural name (URL segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// Whether the resource is namespaced.
    pub namespaced: bool,
    /// Discovery categories (e.g. `all`).
    pub categories: Vec<String>,
    /// Has a `/status` subresource (main-resource writes then ignore status).
    pub has_status: bool,
    /// Has an autoscaling/v1 `/scale` subresource.
    pub has_scale: bool,
    /// `metadata.generation` is maintained (bumped on spec changes).
    pub has_generation: bool,
    /// Pod template location, for workloads whose rollouts are recorded.
    pub template: Option<TemplatePath>,
    /// Status shape when the workload simulator acts on this kind.
    pub sim: Option<SimKind>,
    /// Registered at start-up as a custom resource.
    pub custom: bool,
}

impl ResourceDef {
    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` as used in error messages (`deployments.apps`, plain `secrets` for core).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The store key prefix for this resource: unique across groups.
    pub fn store_id(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// Discovery entries (`APIResource`) for the resource and its subresources.
    pub fn discovery_entries(&self) -> Vec<Value> {
        let mut verbs = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        if self.plural == "namespaces" {
            verbs.retain(|v| *v != "deletecollection");
        }
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        if self.has_status {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if self.has_scale {
            out.push(json!({
                "name": format!("{}/scale", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

/// All resource types the server knows about.
#[derive(Clone, Debug)]
pub struct Registry {
    defs: Vec<ResourceDef>,
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
    all: bool,
    status: bool,
    scale: bool,
    generation: bool,
    template: Option<TemplatePath>,
    sim: Option<SimKind>,
}

const fn plain(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> Builtin {
    Builtin {
        group,
        version,
        kind,
        plural,
        short: &[],
        namespaced: true,
        all: false,
        status: false,
        scale: false,
        generation: false,
        template: None,
        sim: None,
    }
}

impl Registry {
    /// The built-in resources plus `custom`.
    pub fn new(custom: &[CustomResource]) -> Registry {
        let st = Some(TemplatePath::SpecTemplate);
        let builtins = [
            Builtin {
                short: &["ns"],
                namespaced: false,
                status: true,
                ..plain("", "v1", "Namespace", "namespaces")
            },
            plain("", "v1", "Secret", "secrets"),
            Builtin {
                short: &["cm"],
                ..plain("", "v1", "ConfigMap", "configmaps")
            },
            Builtin {
                short: &["po"],
                all: true,
                status: true,
                ..plain("", "v1", "Pod", "pods")
            },
            Builtin {
                short: &["sa"],
                ..plain("", "v1", "ServiceAccount", "serviceaccounts")
            },
            Builtin {
                short: &["ev"],
                ..plain("", "v1", "Event", "events")
            },
            Builtin {
                short: &["deploy"],
                all: true,
                status: true,
                scale: true,
                generation: true,
                template: st,
                sim: Some(SimKind::Replicas),
                ..plain("apps", "v1", "Deployment", "deployments")
            },
            Builtin {
                short: &["sts"],
                all: true,
                status: true,
                scale: true,
                generation: true,
                template: st,
                sim: Some(SimKind::Replicas),
                ..plain("apps", "v1", "StatefulSet", "statefulsets")
            },
            Builtin {
                short: &["ds"],
                all: true,
                status: true,
                generation: true,
                template: st,
                sim: Some(SimKind::DaemonSet),
                ..plain("apps", "v1", "DaemonSet", "daemonsets")
            },
            Builtin {
                short: &["rs"],
                all: true,
                status: true,
                scale: true,
                generation: true,
                sim: Some(SimKind::Replicas),
                ..plain("apps", "v1", "ReplicaSet", "replicasets")
            },
            Builtin {
                short: &["cj"],
                all: true,
                status: true,
                generation: true,
                template: Some(TemplatePath::JobTemplate),
                ..plain("batch", "v1", "CronJob", "cronjobs")
            },
            Builtin {
                all: true,
                status: true,
                generation: true,
                ..plain("batch", "v1", "Job", "jobs")
            },
            plain("coordination.k8s.io", "v1", "Lease", "leases"),
            Builtin {
                short: &["ev"],
                ..plain("events.k8s.io", "v1", "Event", "events")
            },
            plain("rbac.authorization.k8s.io", "v1", "Role", "roles"),
            Builtin {
                namespaced: false,
                ..plain(
                    "rbac.authorization.k8s.io",
                    "v1",
                    "ClusterRole",
                    "clusterroles",
                )
            },
            plain(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
            ),
            Builtin {
                namespaced: false,
                ..plain(
                    "rbac.authorization.k8s.io",
                    "v1",
                    "ClusterRoleBinding",
                    "clusterrolebindings",
                )
            },
        ];
        let mut defs: Vec<ResourceDef> = builtins
            .iter()
            .map(|b| ResourceDef {
                group: b.group.into(),
                version: b.version.into(),
                kind: b.kind.into(),
                plural: b.plural.into(),
                singular: b.kind.to_lowercase(),
                short_names: b.short.iter().map(|s| s.to_string()).collect(),
                namespaced: b.namespaced,
                categories: if b.all { vec!["all".into()] } else { vec![] },
                has_status: b.status,
                has_scale: b.scale,
                has_generation: b.generation,
                template: b.template,
                sim: b.sim,
                custom: false,
            })
            .collect();
        for c in custom {
            // Argo Rollouts keep their pod template where Deployments do; record it the same way.
            let template = (c.group == "argoproj.io" && c.kind == "Rollout")
                .then_some(TemplatePath::SpecTemplate);
            defs.push(ResourceDef {
                group: c.group.clone(),
                version: c.version.clone(),
                kind: c.kind.clone(),
                plural: c.plural.clone(),
                singular: c.singular.clone(),
                short_names: c.short_names.clone(),
                namespaced: c.namespaced,
                categories: vec![],
                has_status: true,
                has_scale: false,
                has_generation: true,
                template,
                sim: None,
                custom: true,
            });
        }
        Registry { defs }
    }

    /// Finds a resource by group, version and plural name.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
    }

    /// Finds a resource by group and kind (any version).
    pub fn find_kind(&self, group: &str, kind: &str) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.kind == kind)
    }

    /// All resources.
    pub fn all(&self) -> &[ResourceDef] {
        &self.defs
    }

    /// Distinct non-core groups in registration order, each with its versions.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for d in self.defs.iter().filter(|d| !d.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == d.group) {
                Some((_, vs)) => {
                    if !vs.contains(&d.version) {
                        vs.push(d.version.clone());
                    }
                }
                None => out.push((d.group.clone(), vec![d.version.clone()])),
            }
        }
        out
    }

    /// Resources served under one group/version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceDef> {
        self.defs
            .iter()
            .filter(move |d| d.group == group && d.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_advertise_scale_and_status_subresources() {
        let reg = Registry::new(&[]);
        let d = reg.find("apps", "v1", "deployments").unwrap();
        let names: Vec<String> = d
            .discovery_entries()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            ["deployments", "deployments/status", "deployments/scale"]
        );
        assert_eq!(d.discovery_entries()[0]["shortNames"], json!(["deploy"]));
        assert_eq!(d.discovery_entries()[2]["group"], "autoscaling");
    }

    #[test]
    fn custom_rollout_is_registered_with_its_group() {
        let reg = Registry::new(&[CustomResource::argo_rollouts()]);
        let r = reg.find("argoproj.io", "v1alpha1", "rollouts").unwrap();
        assert_eq!(r.template, Some(TemplatePath::SpecTemplate));
        assert!(
            reg.groups()
                .iter()
                .any(|(g, v)| g == "argoproj.io" && v == &["v1alpha1"])
        );
        assert_eq!(r.qualified(), "rollouts.argoproj.io");
    }

    #[test]
    fn core_names_are_unqualified() {
        let reg = Registry::new(&[]);
        assert_eq!(
            reg.find("", "v1", "secrets").unwrap().qualified(),
            "secrets"
        );
        assert!(!reg.find("", "v1", "namespaces").unwrap().namespaced);
    }
}
