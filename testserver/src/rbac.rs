//! RBAC authorization for the test API server, following kube-apiserver's RBAC authorizer.
//!
//! Objects are `rbac.authorization.k8s.io/v1` JSON as stored. Decisions and deny messages
//! match the real server's, because clients (kubectl, kube-rs, hashroll) surface them verbatim.
//! Non-resource URLs are not handled here: the caller allows discovery itself.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::selectors::{LabelSelector, go_quote};

/// The group whose members bypass authorization, like kube-apiserver's privileged group.
pub const SYSTEM_MASTERS: &str = "system:masters";

/// Username prefix of service account identities.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// An authenticated identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// The username, e.g. `alice` or `system:serviceaccount:hr:hashroll`.
    pub name: String,
    /// Groups the user belongs to; used verbatim (the authenticator adds implicit groups).
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with the given name and groups.
    pub fn new(name: impl Into<String>, groups: Vec<String>) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups,
        }
    }

    /// The identity a service account token authenticates as, with the groups the real server adds.
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            name: service_account_username(namespace, name),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
        }
    }
}

/// The username of a service account: `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// What a request wants to do, as the authorizer sees it.
///
/// For list/watch with a `metadata.name` field selector the real server authorizes as a named
/// request; callers that want that behaviour put the name in `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// The API verb: get, list, watch, create, update, patch, delete, deletecollection, ...
    pub verb: &'a str,
    /// The API group; `""` for the core group.
    pub api_group: &'a str,
    /// The resource's plural name, e.g. `secrets`.
    pub resource: &'a str,
    /// The subresource, e.g. `status`.
    pub subresource: Option<&'a str>,
    /// The namespace; `None` for cluster-scoped requests and all-namespace lists.
    pub namespace: Option<&'a str>,
    /// The object name, when the request names one.
    pub name: Option<&'a str>,
}

impl Attributes<'_> {
    /// `resource/subresource`, or just `resource`, as RBAC rules spell it.
    pub fn combined_resource(&self) -> String {
        match self.subresource.filter(|s| !s.is_empty()) {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.to_string(),
        }
    }

    fn namespace(&self) -> &str {
        self.namespace.unwrap_or_default()
    }
}

/// Read access to the stored RBAC objects.
pub trait RbacSource {
    /// All ClusterRoles.
    fn cluster_roles(&self) -> Vec<Value>;
    /// All ClusterRoleBindings.
    fn cluster_role_bindings(&self) -> Vec<Value>;
    /// The Roles in `namespace`.
    fn roles(&self, namespace: &str) -> Vec<Value>;
    /// The RoleBindings in `namespace`.
    fn role_bindings(&self, namespace: &str) -> Vec<Value>;
}

/// The outcome of an authorization check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed.
    Allow,
    /// The request is forbidden; `message` is the Status message the server returns with 403.
    Deny {
        /// The full message, e.g. `secrets is forbidden: User "bob" cannot list ...`.
        message: String,
    },
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Decides whether `user` may perform `attrs`, with the semantics of Kubernetes RBAC.
///
/// ClusterRoleBindings grant everywhere; RoleBindings grant only inside their namespace.
/// ClusterRoles with an `aggregationRule` also get the rules of the ClusterRoles their
/// selectors pick, which is what the real aggregation controller would have written into
/// them; stored rules are kept too, so pre-aggregated fixtures work unchanged.
pub fn authorize(user: &UserInfo, attrs: &Attributes, rbac: &dyn RbacSource) -> Decision {
    if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return Decision::Allow;
    }
    let mut resolver = Resolver {
        rbac,
        cluster_roles: None,
    };
    // Like upstream, lookup failures only matter (as a reason suffix) when nothing allowed.
    let mut errors: Vec<String> = Vec::new();

    for binding in rbac.cluster_role_bindings() {
        if !applies_to(user, &binding, "") {
            continue;
        }
        match resolver.role_ref_rules(&binding, "") {
            Ok(rules) if rules.iter().any(|r| rule_allows(r, attrs)) => return Decision::Allow,
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }

    let ns = attrs.namespace();
    if !ns.is_empty() {
        for binding in rbac.role_bindings(ns) {
            if !applies_to(user, &binding, ns) {
                continue;
            }
            match resolver.role_ref_rules(&binding, ns) {
                Ok(rules) if rules.iter().any(|r| rule_allows(r, attrs)) => {
                    return Decision::Allow;
                }
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
    }

    let reason = if errors.is_empty() {
        String::new()
    } else {
        format!("RBAC: {}", crate::selectors::aggregate(&errors))
    };
    Decision::Deny {
        message: forbidden_message(user, attrs, &reason),
    }
}

/// Builds the real server's 403 message for a denied request, with an optional reason suffix.
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes, reason: &str) -> String {
    let resource = attrs.combined_resource();
    let ns = attrs.namespace();
    let scope = if ns.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {}", go_quote(ns))
    };
    let body = format!(
        "User {} cannot {} resource {} in API group {} {scope}",
        go_quote(&user.name),
        attrs.verb,
        go_quote(&resource),
        go_quote(attrs.api_group),
    );
    // Upstream HTML-escapes this part so the message cannot inject markup.
    let body = body
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let err = if reason.is_empty() {
        body
    } else {
        format!("{body}: {reason}")
    };
    let group_resource = qualified_resource(attrs);
    match attrs.name.filter(|n| !n.is_empty()) {
        _ if group_resource.is_empty() => format!("forbidden: {err}"),
        Some(name) => format!("{group_resource} {} is forbidden: {err}", go_quote(name)),
        None => format!("{group_resource} is forbidden: {err}"),
    }
}

/// The full `Status` object the real server sends with a 403 for `attrs`.
pub fn forbidden_status(attrs: &Attributes, message: &str) -> Value {
    let mut details = serde_json::Map::new();
    if let Some(name) = attrs.name.filter(|n| !n.is_empty()) {
        details.insert("name".into(), json!(name));
    }
    if !attrs.api_group.is_empty() {
        details.insert("group".into(), json!(attrs.api_group));
    }
    if !attrs.resource.is_empty() {
        details.insert("kind".into(), json!(attrs.resource));
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403
    })
}

/// `resource.group`, or `resource` for the core group.
fn qualified_resource(attrs: &Attributes) -> String {
    if attrs.api_group.is_empty() {
        attrs.resource.to_string()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    }
}

fn str_field<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn str_list<'v>(v: &'v Value, key: &str) -> impl Iterator<Item = &'v str> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn object_name(v: &Value) -> &str {
    v.get("metadata")
        .map(|m| str_field(m, "name"))
        .unwrap_or_default()
}

/// Whether any subject of `binding` is `user`; `namespace` is the binding's ("" for cluster).
fn applies_to(user: &UserInfo, binding: &Value, namespace: &str) -> bool {
    let subjects = binding.get("subjects").and_then(Value::as_array);
    subjects.into_iter().flatten().any(|s| {
        let name = str_field(s, "name");
        match str_field(s, "kind") {
            "User" => user.name == name,
            "Group" => user.groups.iter().any(|g| g == name),
            "ServiceAccount" => {
                // RoleBindings may leave the namespace out to mean their own namespace.
                let sa_ns = match str_field(s, "namespace") {
                    "" => namespace,
                    explicit => explicit,
                };
                !sa_ns.is_empty() && user.name == service_account_username(sa_ns, name)
            }
            _ => false,
        }
    })
}

/// Whether one PolicyRule grants the request.
pub fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    let combined = attrs.combined_resource();
    let sub = attrs.subresource.unwrap_or_default();
    let verb_ok = str_list(rule, "verbs").any(|v| v == "*" || v == attrs.verb);
    let group_ok = str_list(rule, "apiGroups").any(|g| g == "*" || g == attrs.api_group);
    // `*` covers subresources too; `*/status` covers one subresource of every resource.
    // Upstream has no `resource/*` form, so neither do we.
    let resource_ok = str_list(rule, "resources").any(|r| {
        r == "*"
            || r == combined
            || (!sub.is_empty() && r.strip_prefix("*/").is_some_and(|s| s == sub))
    });
    let mut names = str_list(rule, "resourceNames").peekable();
    // Requests without a name (list, create) compare as "", so resourceNames never match them.
    let name_ok = names.peek().is_none() || names.any(|n| n == attrs.name.unwrap_or_default());
    verb_ok && group_ok && resource_ok && name_ok
}

/// Resolves role references, caching the ClusterRole list for one authorization.
struct Resolver<'a> {
    rbac: &'a dyn RbacSource,
    cluster_roles: Option<Vec<Value>>,
}

impl Resolver<'_> {
    fn cluster_roles(&mut self) -> &[Value] {
        let rbac = self.rbac;
        self.cluster_roles
            .get_or_insert_with(|| rbac.cluster_roles())
    }

    /// The rules granted by a binding's roleRef, or upstream's not-found message.
    fn role_ref_rules(&mut self, binding: &Value, namespace: &str) -> Result<Vec<Value>, String> {
        let role_ref = binding.get("roleRef").cloned().unwrap_or(Value::Null);
        let name = str_field(&role_ref, "name");
        match str_field(&role_ref, "kind") {
            "Role" => {
                let role = self
                    .rbac
                    .roles(namespace)
                    .into_iter()
                    .find(|r| object_name(r) == name)
                    .ok_or_else(|| {
                        format!(
                            "role.rbac.authorization.k8s.io {} not found",
                            go_quote(name)
                        )
                    })?;
                Ok(rules_of(&role).to_vec())
            }
            "ClusterRole" => {
                let roles = self.cluster_roles();
                let role = roles
                    .iter()
                    .find(|r| object_name(r) == name)
                    .ok_or_else(|| {
                        format!(
                            "clusterrole.rbac.authorization.k8s.io {} not found",
                            go_quote(name)
                        )
                    })?;
                let mut visited = HashSet::new();
                Ok(effective_cluster_role_rules(role, roles, &mut visited))
            }
            other => Err(format!(
                "unsupported role reference kind: {}",
                go_quote(other)
            )),
        }
    }
}

fn rules_of(role: &Value) -> &[Value] {
    role.get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A ClusterRole's stored rules plus those aggregated from the ClusterRoles its selectors pick.
fn effective_cluster_role_rules<'r>(
    role: &'r Value,
    all: &'r [Value],
    visited: &mut HashSet<&'r str>,
) -> Vec<Value> {
    let name = object_name(role);
    visited.insert(name);
    let mut rules = rules_of(role).to_vec();
    let selectors: Vec<LabelSelector> = role
        .get("aggregationRule")
        .and_then(|a| a.get("clusterRoleSelectors"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        // A null selector selects nothing; an invalid one is skipped, as the controller would.
        .filter(|s| s.is_object())
        .filter_map(|s| LabelSelector::from_meta(s).ok())
        .collect();
    if selectors.is_empty() {
        return rules;
    }
    for other in all {
        let other_name = object_name(other);
        if visited.contains(other_name) || !selectors.iter().any(|s| s.matches_value(other)) {
            continue;
        }
        for rule in effective_cluster_role_rules(other, all, visited) {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Store {
        cluster_roles: Vec<Value>,
        cluster_role_bindings: Vec<Value>,
        roles: Vec<Value>,
        role_bindings: Vec<Value>,
    }

    fn in_ns(items: &[Value], ns: &str) -> Vec<Value> {
        items
            .iter()
            .filter(|o| o["metadata"]["namespace"] == ns)
            .cloned()
            .collect()
    }

    impl RbacSource for Store {
        fn cluster_roles(&self) -> Vec<Value> {
            self.cluster_roles.clone()
        }
        fn cluster_role_bindings(&self) -> Vec<Value> {
            self.cluster_role_bindings.clone()
        }
        fn roles(&self, namespace: &str) -> Vec<Value> {
            in_ns(&self.roles, namespace)
        }
        fn role_bindings(&self, namespace: &str) -> Vec<Value> {
            in_ns(&self.role_bindings, namespace)
        }
    }

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
        json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
    }

    fn role(ns: &str, name: &str, rules: Vec<Value>) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": ns}, "rules": rules})
    }

    fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name}, "rules": rules})
    }

    fn binding(ns: Option<&str>, name: &str, kind: &str, role: &str, subjects: Value) -> Value {
        let mut meta = json!({"name": name});
        if let Some(ns) = ns {
            meta["namespace"] = json!(ns);
        }
        let binding_kind = if ns.is_some() {
            "RoleBinding"
        } else {
            "ClusterRoleBinding"
        };
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": binding_kind,
               "metadata": meta, "subjects": subjects,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}})
    }

    fn sa_subject(name: &str, ns: Option<&str>) -> Value {
        let mut s = json!({"kind": "ServiceAccount", "name": name});
        if let Some(ns) = ns {
            s["namespace"] = json!(ns);
        }
        s
    }

    fn attrs<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        ns: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            api_group: group,
            resource,
            subresource: None,
            namespace: ns,
            name,
        }
    }

    fn hashroll() -> UserInfo {
        UserInfo::service_account("hr", "hashroll")
    }

    fn deny_message(d: Decision) -> String {
        match d {
            Decision::Deny { message } => message,
            Decision::Allow => panic!("expected a denial"),
        }
    }

    #[test]
    fn masters_are_always_allowed() {
        let store = Store::default();
        let admin = UserInfo::new("kubernetes-admin", vec![SYSTEM_MASTERS.to_string()]);
        let a = attrs("delete", "", "secrets", Some("x"), Some("y"));
        assert_eq!(authorize(&admin, &a, &store), Decision::Allow);
        assert!(!authorize(&hashroll(), &a, &store).is_allowed());
    }

    #[test]
    fn role_binding_grants_only_in_its_namespace() {
        let store = Store {
            roles: vec![role(
                "team-a",
                "reader",
                vec![rule(&[""], &["secrets"], &["get", "list", "watch"])],
            )],
            role_bindings: vec![binding(
                Some("team-a"),
                "hashroll-reader",
                "Role",
                "reader",
                json!([sa_subject("hashroll", Some("hr"))]),
            )],
            ..Store::default()
        };
        let user = hashroll();
        assert!(
            authorize(
                &user,
                &attrs("list", "", "secrets", Some("team-a"), None),
                &store
            )
            .is_allowed()
        );
        assert!(
            !authorize(
                &user,
                &attrs("delete", "", "secrets", Some("team-a"), Some("db")),
                &store
            )
            .is_allowed()
        );
        assert_eq!(
            deny_message(authorize(
                &user,
                &attrs("list", "", "secrets", Some("team-b"), None),
                &store
            )),
            "secrets is forbidden: User \"system:serviceaccount:hr:hashroll\" cannot list resource \"secrets\" \
             in API group \"\" in the namespace \"team-b\""
        );
        assert_eq!(
            deny_message(authorize(
                &user,
                &attrs("list", "", "secrets", None, None),
                &store
            )),
            "secrets is forbidden: User \"system:serviceaccount:hr:hashroll\" cannot list resource \"secrets\" \
             in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn cluster_role_binding_grants_everywhere() {
        let store = Store {
            cluster_roles: vec![cluster_role(
                "secret-reader",
                vec![rule(&[""], &["secrets"], &["list"])],
            )],
            cluster_role_bindings: vec![binding(
                None,
                "hashroll",
                "ClusterRole",
                "secret-reader",
                json!([sa_subject("hashroll", Some("hr"))]),
            )],
            ..Store::default()
        };
        let user = hashroll();
        for ns in [Some("team-a"), Some("team-b"), None] {
            assert!(authorize(&user, &attrs("list", "", "secrets", ns, None), &store).is_allowed());
        }
        assert!(
            !authorize(&user, &attrs("list", "", "configmaps", None, None), &store).is_allowed()
        );
    }

    #[test]
    fn role_binding_to_cluster_role_is_namespaced() {
        let store = Store {
            cluster_roles: vec![cluster_role(
                "secret-reader",
                vec![rule(&[""], &["secrets"], &["list"])],
            )],
            role_bindings: vec![binding(
                Some("team-a"),
                "rb",
                "ClusterRole",
                "secret-reader",
                json!([sa_subject("hashroll", Some("hr"))]),
            )],
            ..Store::default()
        };
        let user = hashroll();
        assert!(
            authorize(
                &user,
                &attrs("list", "", "secrets", Some("team-a"), None),
                &store
            )
            .is_allowed()
        );
        assert!(
            !authorize(
                &user,
                &attrs("list", "", "secrets", Some("team-b"), None),
                &store
            )
            .is_allowed()
        );
        assert!(!authorize(&user, &attrs("list", "", "secrets", None, None), &store).is_allowed());
    }

    #[test]
    fn service_account_subject_namespace_defaults_to_binding_namespace() {
        let reader = cluster_role("reader", vec![rule(&[""], &["configmaps"], &["get"])]);
        let store = Store {
            cluster_roles: vec![reader.clone()],
            role_bindings: vec![binding(
                Some("hr"),
                "rb",
                "ClusterRole",
                "reader",
                json!([sa_subject("hashroll", None)]),
            )],
            ..Store::default()
        };
        let get = |ns| attrs("get", "", "configmaps", Some(ns), Some("cfg"));
        assert!(authorize(&hashroll(), &get("hr"), &store).is_allowed());
        // Same SA name in another namespace is a different identity.
        let other = UserInfo::service_account("team-a", "hashroll");
        assert!(!authorize(&other, &get("hr"), &store).is_allowed());

        // Cluster bindings have no namespace to default to, so such a subject matches nobody.
        let cluster = Store {
            cluster_roles: vec![reader],
            cluster_role_bindings: vec![binding(
                None,
                "crb",
                "ClusterRole",
                "reader",
                json!([sa_subject("hashroll", None)]),
            )],
            ..Store::default()
        };
        assert!(!authorize(&hashroll(), &get("hr"), &cluster).is_allowed());
    }

    #[test]
    fn service_account_subject_from_another_namespace() {
        let store = Store {
            roles: vec![role(
                "team-a",
                "patcher",
                vec![rule(&["apps"], &["deployments"], &["patch"])],
            )],
            role_bindings: vec![binding(
                Some("team-a"),
                "rb",
                "Role",
                "patcher",
                json!([sa_subject("hashroll", Some("hr"))]),
            )],
            ..Store::default()
        };
        let a = attrs("patch", "apps", "deployments", Some("team-a"), Some("web"));
        assert!(authorize(&hashroll(), &a, &store).is_allowed());
        assert!(
            !authorize(&UserInfo::service_account("team-a", "hashroll"), &a, &store).is_allowed()
        );
    }

    #[test]
    fn user_and_group_subjects() {
        let store = Store {
            cluster_roles: vec![cluster_role(
                "view",
                vec![rule(&["apps"], &["deployments"], &["get"])],
            )],
            cluster_role_bindings: vec![binding(
                None,
                "crb",
                "ClusterRole",
                "view",
                json!([{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"}]),
            )],
            ..Store::default()
        };
        let a = attrs("get", "apps", "deployments", Some("x"), Some("web"));
        assert!(authorize(&UserInfo::new("alice", vec![]), &a, &store).is_allowed());
        assert!(authorize(&UserInfo::new("bob", vec!["devs".into()]), &a, &store).is_allowed());
        assert!(!authorize(&UserInfo::new("bob", vec!["ops".into()]), &a, &store).is_allowed());
        // A group named like the user does not match a User subject and vice versa.
        assert!(!authorize(&UserInfo::new("devs", vec!["alice".into()]), &a, &store).is_allowed());
        // Every group of system:serviceaccounts is granted when bound as a Group.
        let sa_store = Store {
            cluster_role_bindings: vec![binding(
                None,
                "crb",
                "ClusterRole",
                "view",
                json!([{"kind": "Group", "name": "system:serviceaccounts:hr"}]),
            )],
            cluster_roles: store.cluster_roles.clone(),
            ..Store::default()
        };
        assert!(authorize(&hashroll(), &a, &sa_store).is_allowed());
    }

    #[test]
    fn resource_names_restrict_named_requests_only() {
        let mut named = rule(&[""], &["secrets"], &["get", "list", "watch", "update"]);
        named["resourceNames"] = json!(["db"]);
        let store = Store {
            roles: vec![role("team-a", "db-only", vec![named])],
            role_bindings: vec![binding(
                Some("team-a"),
                "rb",
                "Role",
                "db-only",
                json!([sa_subject("hashroll", None)]),
            )],
            ..Store::default()
        };
        let user = UserInfo::service_account("team-a", "hashroll");
        assert!(
            authorize(
                &user,
                &attrs("get", "", "secrets", Some("team-a"), Some("db")),
                &store
            )
            .is_allowed()
        );
        assert!(
            authorize(
                &user,
                &attrs("update", "", "secrets", Some("team-a"), Some("db")),
                &store
            )
            .is_allowed()
        );
        assert_eq!(
            deny_message(authorize(
                &user,
                &attrs("get", "", "secrets", Some("team-a"), Some("api")),
                &store
            )),
            "secrets \"api\" is forbidden: User \"system:serviceaccount:team-a:hashroll\" cannot get resource \
             \"secrets\" in API group \"\" in the namespace \"team-a\""
        );
        assert!(
            !authorize(
                &user,
                &attrs("list", "", "secrets", Some("team-a"), None),
                &store
            )
            .is_allowed()
        );
        // A list narrowed to one name (metadata.name field selector) carries the name.
        assert!(
            authorize(
                &user,
                &attrs("watch", "", "secrets", Some("team-a"), Some("db")),
                &store
            )
            .is_allowed()
        );
    }

    #[test]
    fn wildcards() {
        let store = Store {
            cluster_roles: vec![
                cluster_role("all-verbs", vec![rule(&[""], &["secrets"], &["*"])]),
                cluster_role("all-groups", vec![rule(&["*"], &["deployments"], &["get"])]),
                cluster_role("all-resources", vec![rule(&["apps"], &["*"], &["list"])]),
            ],
            cluster_role_bindings: vec![
                binding(
                    None,
                    "a",
                    "ClusterRole",
                    "all-verbs",
                    json!([{"kind": "User", "name": "u"}]),
                ),
                binding(
                    None,
                    "b",
                    "ClusterRole",
                    "all-groups",
                    json!([{"kind": "User", "name": "u"}]),
                ),
                binding(
                    None,
                    "c",
                    "ClusterRole",
                    "all-resources",
                    json!([{"kind": "User", "name": "u"}]),
                ),
            ],
            ..Store::default()
        };
        let u = UserInfo::new("u", vec![]);
        let ok = |a: Attributes| authorize(&u, &a, &store).is_allowed();
        assert!(ok(attrs(
            "deletecollection",
            "",
            "secrets",
            Some("n"),
            None
        )));
        assert!(!ok(attrs("get", "", "configmaps", Some("n"), Some("c"))));
        assert!(ok(attrs(
            "get",
            "argoproj.io",
            "deployments",
            Some("n"),
            Some("d")
        )));
        assert!(!ok(attrs(
            "list",
            "argoproj.io",
            "deployments",
            Some("n"),
            None
        )));
        assert!(ok(attrs("list", "apps", "statefulsets", None, None)));
        let mut status = attrs("list", "apps", "deployments", Some("n"), None);
        status.subresource = Some("status");
        assert!(ok(status), "resources: ['*'] covers subresources");
        assert!(!ok(attrs("list", "batch", "cronjobs", None, None)));
    }

    #[test]
    fn subresources() {
        let store = Store {
            cluster_roles: vec![
                cluster_role(
                    "deploy",
                    vec![rule(&["apps"], &["deployments"], &["patch"])],
                ),
                cluster_role(
                    "deploy-status",
                    vec![rule(&["apps"], &["deployments/status"], &["patch"])],
                ),
                cluster_role(
                    "any-scale",
                    vec![rule(&["apps"], &["*/scale"], &["update"])],
                ),
                cluster_role(
                    "deploy-star",
                    vec![rule(&["apps"], &["deployments/*"], &["get"])],
                ),
            ],
            cluster_role_bindings: vec![
                binding(
                    None,
                    "a",
                    "ClusterRole",
                    "deploy",
                    json!([{"kind": "User", "name": "plain"}]),
                ),
                binding(
                    None,
                    "b",
                    "ClusterRole",
                    "deploy-status",
                    json!([{"kind": "User", "name": "status"}]),
                ),
                binding(
                    None,
                    "c",
                    "ClusterRole",
                    "any-scale",
                    json!([{"kind": "User", "name": "scaler"}]),
                ),
                binding(
                    None,
                    "d",
                    "ClusterRole",
                    "deploy-star",
                    json!([{"kind": "User", "name": "star"}]),
                ),
            ],
            ..Store::default()
        };
        let sub = |verb, sub| Attributes {
            subresource: sub,
            ..attrs(verb, "apps", "deployments", Some("x"), Some("web"))
        };
        let ok = |user: &str, a: Attributes| {
            authorize(&UserInfo::new(user, vec![]), &a, &store).is_allowed()
        };
        assert!(ok("plain", sub("patch", None)));
        assert!(!ok("plain", sub("patch", Some("status"))));
        assert!(ok("status", sub("patch", Some("status"))));
        assert!(!ok("status", sub("patch", None)));
        assert!(ok("scaler", sub("update", Some("scale"))));
        assert!(ok(
            "scaler",
            Attributes {
                resource: "statefulsets",
                ..sub("update", Some("scale"))
            }
        ));
        assert!(!ok("scaler", sub("update", Some("status"))));
        // kube-apiserver has no `resource/*` wildcard: it only matches a literal "*" subresource.
        assert!(!ok("star", sub("get", Some("status"))));
        assert_eq!(
            deny_message(authorize(
                &UserInfo::new("plain", vec![]),
                &sub("patch", Some("status")),
                &store
            )),
            "deployments.apps \"web\" is forbidden: User \"plain\" cannot patch resource \"deployments/status\" \
             in API group \"apps\" in the namespace \"x\""
        );
    }

    #[test]
    fn api_group_must_match() {
        let store = Store {
            roles: vec![role(
                "x",
                "r",
                vec![rule(&[""], &["deployments"], &["get"])],
            )],
            role_bindings: vec![binding(
                Some("x"),
                "rb",
                "Role",
                "r",
                json!([{"kind": "User", "name": "u"}]),
            )],
            ..Store::default()
        };
        let u = UserInfo::new("u", vec![]);
        assert!(
            !authorize(
                &u,
                &attrs("get", "apps", "deployments", Some("x"), Some("w")),
                &store
            )
            .is_allowed()
        );
        assert!(
            authorize(
                &u,
                &attrs("get", "", "deployments", Some("x"), Some("w")),
                &store
            )
            .is_allowed()
        );
    }

    #[test]
    fn missing_roles_are_reported_in_the_reason() {
        let store = Store {
            roles: vec![role(
                "elsewhere",
                "reader",
                vec![rule(&[""], &["secrets"], &["get"])],
            )],
            role_bindings: vec![binding(
                Some("x"),
                "rb",
                "Role",
                "reader",
                json!([{"kind": "User", "name": "u"}]),
            )],
            cluster_role_bindings: vec![binding(
                None,
                "crb",
                "ClusterRole",
                "gone",
                json!([{"kind": "User", "name": "u"}]),
            )],
            ..Store::default()
        };
        let u = UserInfo::new("u", vec![]);
        // A RoleBinding can only use a Role from its own namespace.
        assert_eq!(
            deny_message(authorize(
                &u,
                &attrs("get", "", "secrets", Some("x"), Some("s")),
                &store
            )),
            "secrets \"s\" is forbidden: User \"u\" cannot get resource \"secrets\" in API group \"\" in the \
             namespace \"x\": RBAC: [clusterrole.rbac.authorization.k8s.io \"gone\" not found, \
             role.rbac.authorization.k8s.io \"reader\" not found]"
        );
        // Bindings that do not apply to the user are never resolved.
        let other = UserInfo::new("v", vec![]);
        assert_eq!(
            deny_message(authorize(
                &other,
                &attrs("get", "", "secrets", None, Some("s")),
                &store
            )),
            "secrets \"s\" is forbidden: User \"v\" cannot get resource \"secrets\" in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn a_broken_binding_does_not_hide_a_working_one() {
        let store = Store {
            cluster_roles: vec![cluster_role(
                "ok",
                vec![rule(&[""], &["secrets"], &["get"])],
            )],
            cluster_role_bindings: vec![
                binding(
                    None,
                    "broken",
                    "ClusterRole",
                    "gone",
                    json!([{"kind": "User", "name": "u"}]),
                ),
                binding(
                    None,
                    "works",
                    "ClusterRole",
                    "ok",
                    json!([{"kind": "User", "name": "u"}]),
                ),
            ],
            ..Store::default()
        };
        let a = attrs("get", "", "secrets", Some("x"), Some("s"));
        assert!(authorize(&UserInfo::new("u", vec![]), &a, &store).is_allowed());
    }

    #[test]
    fn aggregated_cluster_roles() {
        let mut edit = cluster_role("edit", vec![]);
        edit["aggregationRule"] = json!({"clusterRoleSelectors": [
            {"matchLabels": {"rbac.example.com/aggregate-to-edit": "true"}}
        ]});
        let mut part = cluster_role("edit-secrets", vec![rule(&[""], &["secrets"], &["update"])]);
        part["metadata"]["labels"] = json!({"rbac.example.com/aggregate-to-edit": "true"});
        let unrelated = cluster_role("nodes", vec![rule(&[""], &["nodes"], &["get"])]);
        let store = Store {
            cluster_roles: vec![edit, part, unrelated],
            role_bindings: vec![binding(
                Some("x"),
                "rb",
                "ClusterRole",
                "edit",
                json!([{"kind": "User", "name": "u"}]),
            )],
            ..Store::default()
        };
        let u = UserInfo::new("u", vec![]);
        assert!(
            authorize(
                &u,
                &attrs("update", "", "secrets", Some("x"), Some("s")),
                &store
            )
            .is_allowed()
        );
        assert!(
            !authorize(&u, &attrs("get", "", "nodes", Some("x"), Some("n")), &store).is_allowed()
        );
    }

    #[test]
    fn aggregation_cycles_terminate() {
        let mut a = cluster_role("a", vec![rule(&[""], &["pods"], &["get"])]);
        a["metadata"]["labels"] = json!({"agg": "yes"});
        a["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"agg": "yes"}}]});
        let mut b = a.clone();
        b["metadata"]["name"] = json!("b");
        b["rules"] = json!([rule(&[""], &["secrets"], &["get"])]);
        let store = Store {
            cluster_roles: vec![a, b],
            cluster_role_bindings: vec![binding(
                None,
                "crb",
                "ClusterRole",
                "a",
                json!([{"kind": "User", "name": "u"}]),
            )],
            ..Store::default()
        };
        let u = UserInfo::new("u", vec![]);
        assert!(authorize(&u, &attrs("get", "", "secrets", None, Some("s")), &store).is_allowed());
    }

    #[test]
    fn message_escapes_markup_and_quotes_like_go() {
        let store = Store::default();
        let u = UserInfo::new("<script>&\"x\"", vec![]);
        assert_eq!(
            deny_message(authorize(
                &u,
                &attrs("get", "", "secrets", Some("n"), Some("a\"b")),
                &store
            )),
            "secrets \"a\\\"b\" is forbidden: User \"&lt;script&gt;&amp;\\\"x\\\"\" cannot get resource \"secrets\" \
             in API group \"\" in the namespace \"n\""
        );
    }

    #[test]
    fn forbidden_status_shape() {
        let a = attrs("patch", "apps", "deployments", Some("x"), Some("web"));
        let s = forbidden_status(&a, "m");
        assert_eq!(s["code"], 403);
        assert_eq!(s["reason"], "Forbidden");
        assert_eq!(
            s["details"],
            json!({"name": "web", "group": "apps", "kind": "deployments"})
        );
        let core = forbidden_status(&attrs("list", "", "secrets", None, None), "m");
        assert_eq!(core["details"], json!({"kind": "secrets"}));
    }
}
