//! Discovery documents: /version, /api, /api/v1, /apis, /apis/<group>, /apis/<group>/<version>.

use serde_json::{Value, json};

use crate::resources::Registry;

/// The `/version` document (reports a v1.33 server).
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The `/api` document (APIVersions).
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// The `/apis` document (APIGroupList).
pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// The `/apis/<group>` document, if the group is served.
pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    let (g, vs) = reg.groups().into_iter().find(|(g, _)| g == name)?;
    let mut doc = group_doc(&g, &vs);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// The APIResourceList of one group/version, if served.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = reg
        .in_group_version(group, version)
        .flat_map(|d| d.discovery_entries())
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources }),
    )
}

/// URL path segment of a group/version in OpenAPI v3 (`api/v1`, `apis/apps/v1`).
fn openapi_gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The `/openapi/v3` index: one entry per served group/version.
pub fn openapi_v3_root(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(String, String)> = vec![];
    for d in reg.all() {
        let gv = (d.group.clone(), d.version.clone());
        if !gvs.contains(&gv) {
            gvs.push(gv);
        }
    }
    for (g, v) in gvs {
        let p = openapi_gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{p}?hash=testserver") }),
        );
    }
    json!({ "paths": paths })
}

/// A minimal OpenAPI v3 document for one group/version: object paths with their PATCH operation, the
/// group-version-kind extension and the `fieldValidation` parameter. That is what kubectl consults to
/// decide that the server validates fields itself; no schemas are served, so clients that need them
/// (`kubectl explain`, client-side validation) fall back to their built-in knowledge or fail.
pub fn openapi_v3_group_version(reg: &Registry, path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let mut paths = serde_json::Map::new();
    for d in reg.in_group_version(&group, &version) {
        let base = format!("/{}", openapi_gv_path(&group, &version));
        let item = if d.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("{base}/{}/{{name}}", d.plural)
        };
        let gvk = json!({ "group": d.group, "version": d.version, "kind": d.kind });
        let params = json!([
            { "name": "dryRun", "in": "query", "schema": { "type": "string" } },
            { "name": "fieldManager", "in": "query", "schema": { "type": "string" } },
            { "name": "fieldValidation", "in": "query", "schema": { "type": "string" } },
            { "name": "force", "in": "query", "schema": { "type": "boolean" } },
        ]);
        // Strategic merge is left out on purpose: kubectl then computes apply patches from its
        // compiled-in types instead of asking for schemas this server does not have.
        let content = json!({
            "application/json-patch+json": { "schema": { "type": "object" } },
            "application/merge-patch+json": { "schema": { "type": "object" } },
            "application/apply-patch+yaml": { "schema": { "type": "object" } },
        });
        paths.insert(
            item,
            json!({
                "patch": {
                    "operationId": format!("patch{}", d.kind),
                    "parameters": params,
                    "requestBody": { "content": content, "required": true },
                    "responses": { "200": { "description": "OK" } },
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                }
            }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.33.0" },
        "paths": paths,
        "components": {},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::CustomResource;

    #[test]
    fn group_list_names_every_group_once_with_preferred_version() {
        let reg = Registry::new(&[CustomResource::argo_rollouts()]);
        let doc = group_list(&reg);
        let names: Vec<&str> = doc["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "apps",
                "batch",
                "coordination.k8s.io",
                "events.k8s.io",
                "rbac.authorization.k8s.io",
                "argoproj.io"
            ]
        );
        assert_eq!(
            doc["groups"][0]["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
    }

    #[test]
    fn openapi_v3_declares_field_validation_on_patch_operations() {
        let reg = Registry::new(&[]);
        let root = openapi_v3_root(&reg);
        assert_eq!(
            root["paths"]["apis/apps/v1"]["serverRelativeURL"],
            "/openapi/v3/apis/apps/v1?hash=testserver"
        );
        let doc = openapi_v3_group_version(&reg, "apis/apps/v1").unwrap();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(openapi_v3_group_version(&reg, "apis/nope/v1").is_none());
    }

    #[test]
    fn core_v1_lists_short_names_kubectl_uses() {
        let reg = Registry::new(&[]);
        let doc = resource_list(&reg, "", "v1").unwrap();
        assert_eq!(doc["groupVersion"], "v1");
        let cm = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "configmaps")
            .unwrap();
        assert_eq!(cm["shortNames"], json!(["cm"]));
        assert_eq!(cm["namespaced"], true);
        assert!(resource_list(&reg, "apps", "v2").is_none());
    }
}
