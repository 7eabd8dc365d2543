//! Mutating verbs: create, update, patch, delete, deletecollection, plus the status and scale
//! subresources. Every write goes through the same rules: server-owned metadata, generation on spec
//! changes only, no-op detection, Secret normalisation, immutability and finalizers.

use std::sync::Arc;

use base64::Engine as _;
use hyper::Response;
use serde_json::{Map, Value, json};

use crate::api::{Body, Ctx, Filter, json_bytes, json_value};
use crate::patch::{PatchType, Scope};
use crate::resources::ResourceDef;
use crate::server::State;
use crate::status::ApiError;
use crate::store::{Obj, Store, Stored};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Current time as RFC 3339 with second precision, as Kubernetes timestamps are.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Five random characters from the alphabet the real server uses for generateName.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Checks an object name against the rules of its resource; returns the validation detail on failure.
pub fn validate_name(def: &ResourceDef, name: &str) -> Result<(), String> {
    if def.group == "rbac.authorization.k8s.io" {
        // RBAC names are path segments: `system:controller:x` is fine.
        if name == "." || name == ".." || name.contains('/') || name.contains('%') {
            return Err(format!(
                "Invalid value: {name:?}: may not contain '/' or '%' and may not be '.' or '..'"
            ));
        }
        return Ok(());
    }
    if def.plural == "namespaces" {
        if !is_dns_label(name) {
            return Err(format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ));
        }
        return Ok(());
    }
    if !is_dns_subdomain(name) {
        return Err(format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ));
    }
    Ok(())
}

/// Drops empty metadata collections, as Go's `omitempty` does on the real server.
fn drop_empty_meta(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|k, v| {
            let empty = v.is_null()
                || v.as_object().is_some_and(Map::is_empty)
                || v.as_array().is_some_and(Vec::is_empty)
                || v.as_str().is_some_and(str::is_empty);
            !(empty && k != "name")
        });
    }
}

fn meta(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Parses a request body (JSON, or YAML when the content type says so) into an object.
pub fn decode_body(ctx: &Ctx) -> Result<Value, ApiError> {
    let ct = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if ct == "application/vnd.kubernetes.protobuf" {
        return crate::proto::decode(&ctx.body).map_err(ApiError::unsupported_media_type);
    }
    if !matches!(ct, "" | "application/json" | "application/yaml" | "*/*") {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct:?})"
        )));
    }
    let v: Value = if ct == "application/yaml" {
        serde_yaml_ng::from_slice(&ctx.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(&ctx.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// Rejects a body of another kind/apiVersion and fills both in when absent.
fn check_type(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = def.api_version();
    if let Some(k) = obj
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        && k != def.kind
    {
        return Err(ApiError::bad_request(format!(
            "{k} in version {:?} cannot be handled as a {}: the kind in the body does not match the URL",
            def.version, def.kind
        )));
    }
    if let Some(av) = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        && av != want_av
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        )));
    }
    obj["apiVersion"] = json!(want_av);
    obj["kind"] = json!(def.kind);
    Ok(())
}

/// Folds Secret `stringData` into base64 `data`, checks `data` is base64 and defaults `type`.
fn normalise_secret(def: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    if !def.group.is_empty() || def.plural != "secrets" {
        return Ok(());
    }
    let o = obj
        .as_object_mut()
        .expect("objects are checked before normalising");
    if let Some(sd) = o.remove("stringData") {
        let Value::Object(sd) = sd else {
            return Err(ApiError::bad_request(
                "Secret.stringData must be a map of strings",
            ));
        };
        let data = o.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (k, v) in sd {
            let s = v.as_str().ok_or_else(|| {
                ApiError::bad_request(format!("Secret.stringData[{k:?}] must be a string"))
            })?;
            data[k] = json!(B64.encode(s));
        }
    }
    if let Some(data) = o.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let Some(text) = v.as_str() else {
                return Err(ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: data[{k:?}] must be a base64 string"
                )));
            };
            if let Err(e) = B64.decode(text) {
                // Report the offset like Go's decoder does.
                let at = match e {
                    base64::DecodeError::InvalidByte(at, _)
                    | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                    base64::DecodeError::InvalidLength(len) => len,
                    base64::DecodeError::InvalidPadding => text.find('=').unwrap_or(text.len()),
                };
                return Err(ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte {at}"
                )));
            }
        }
    }
    if o.get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        o.insert("type".into(), json!("Opaque"));
    }
    Ok(())
}

/// Secrets and ConfigMaps marked `immutable: true` refuse content changes.
fn check_immutable(def: &ResourceDef, old: &Value, new: &Value) -> Result<(), ApiError> {
    if !def.group.is_empty() || !(def.plural == "secrets" || def.plural == "configmaps") {
        return Ok(());
    }
    let name = name_of(old);
    if def.plural == "secrets" && old.get("type") != new.get("type") {
        let t = new.get("type").and_then(Value::as_str).unwrap_or_default();
        return Err(ApiError::invalid(
            "",
            &def.kind,
            name,
            "type",
            &format!("Invalid value: {t:?}: field is immutable"),
        ));
    }
    if old.get("immutable") != Some(&json!(true)) {
        return Ok(());
    }
    for field in ["data", "binaryData", "immutable"] {
        let norm = |v: Option<&Value>| v.filter(|v| !v.is_null() && *v != &json!({})).cloned();
        if norm(old.get(field)) != norm(new.get(field)) {
            return Err(ApiError::invalid(
                "",
                &def.kind,
                name,
                field,
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
    }
    Ok(())
}

/// The status a freshly created object starts with (the real server resets client-sent status).
fn initial_status(def: &ResourceDef) -> Option<Value> {
    if !def.has_status {
        return None;
    }
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => Some(json!({ "phase": "Active" })),
        ("", "Pod") => Some(json!({ "phase": "Pending", "qosClass": "BestEffort" })),
        ("apps" | "batch", _) => Some(json!({})),
        _ => None,
    }
}

fn prepare_create(
    def: &ResourceDef,
    ns: &str,
    mut obj: Value,
    now: &str,
) -> Result<Value, ApiError> {
    check_type(def, &mut obj)?;
    let m = meta(&mut obj);
    if let Some(body_ns) = m
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        && def.namespaced
        && body_ns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if m.get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    for f in [
        "namespace",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ] {
        m.remove(f);
    }
    if def.namespaced {
        m.insert("namespace".into(), json!(ns));
    }
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now));
    if def.has_generation {
        m.insert("generation".into(), json!(1));
    }
    match initial_status(def) {
        Some(s) => obj["status"] = s,
        None if def.has_status => {
            obj.as_object_mut().expect("object").remove("status");
        }
        None => {}
    }
    if matches!(
        def.kind.as_str(),
        "Deployment" | "StatefulSet" | "ReplicaSet"
    ) && def.group == "apps"
        && obj.pointer("/spec/replicas").is_none()
        && obj["spec"].is_object()
    {
        obj["spec"]["replicas"] = json!(1);
    }
    normalise_secret(def, &mut obj)?;
    drop_empty_meta(&mut obj);
    Ok(obj)
}

/// Creates an object with the store already locked (shared by POST, apply-create and seeding).
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_locked(
    state: &Arc<State>,
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    obj: Value,
    field_manager: &str,
    dry_run: bool,
    managed_already: bool,
) -> Result<Obj, ApiError> {
    let now = now();
    let mut obj = prepare_create(def, ns, obj, &now)?;
    let rid: Arc<str> = def.store_id().into();
    if def.namespaced && store.get("/namespaces", "", ns).is_none() {
        return Err(ApiError::not_found("", "namespaces", ns));
    }
    let mut name = name_of(&obj).to_string();
    if name.is_empty() {
        let base = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if base.is_empty() {
            return Err(ApiError::invalid(
                &def.group,
                &def.kind,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        name = format!("{base}{}", random_suffix());
        for _ in 0..8 {
            if store.get(&rid, ns, &name).is_none() {
                break;
            }
            name = format!("{base}{}", random_suffix());
        }
    }
    validate_name(def, &name)
        .map_err(|d| ApiError::invalid(&def.group, &def.kind, &name, "metadata.name", &d))?;
    if store.get(&rid, ns, &name).is_some() {
        return Err(ApiError::already_exists(&def.group, &def.plural, &name));
    }
    meta(&mut obj).insert("name".into(), json!(name));
    if def.plural == "namespaces" {
        let labels = meta(&mut obj).entry("labels").or_insert_with(|| json!({}));
        labels["kubernetes.io/metadata.name"] = json!(name);
    }
    if !managed_already {
        crate::patch::record_update_manager_in(
            write_scope(def, None),
            None,
            &mut obj,
            field_manager,
            &now,
        );
    }
    if dry_run {
        return Ok(Stored::new(obj, 0));
    }
    let stored = store.put(&rid, ns, &name, obj);
    after_write(state, store, def, ns, &name, &stored, true, true);
    Ok(stored)
}

/// Builds the successor of `old` from a client-supplied object, keeping server-owned fields.
fn prepare_update(
    def: &ResourceDef,
    old: &Value,
    mut new: Value,
    sub: Option<&str>,
) -> Result<Value, ApiError> {
    let name = name_of(old).to_string();
    if !new.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    check_type(def, &mut new)?;
    let old_rv = old
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(rv) = new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        && rv != old_rv
    {
        return Err(ApiError::conflict_modified(&def.group, &def.plural, &name));
    }
    if sub == Some("status") {
        // Status writes change status only.
        let mut out = old.clone();
        match new.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                out.as_object_mut().expect("object").remove("status");
            }
        }
        return Ok(out);
    }
    let old_meta = old
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let m = meta(&mut new);
    for f in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ] {
        match old_meta.get(f) {
            Some(v) => m.insert(f.into(), v.clone()),
            None => m.remove(f),
        };
    }
    if !m.contains_key("managedFields")
        && let Some(mf) = old_meta.get("managedFields")
    {
        m.insert("managedFields".into(), mf.clone());
    }
    if def.has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().expect("object").remove("status");
            }
        }
    }
    normalise_secret(def, &mut new)?;
    drop_empty_meta(&mut new);
    check_immutable(def, old, &new)?;
    if old_meta.contains_key("deletionTimestamp") {
        let fins = |v: &Value| -> Vec<String> {
            v.pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let before = fins(old);
        if fins(&new).iter().any(|f| !before.contains(f)) {
            return Err(ApiError::invalid(
                &def.group,
                &def.kind,
                &name,
                "metadata.finalizers",
                "Forbidden: no new finalizers can be added if the object is being deleted",
            ));
        }
    }
    // Deployments also move on annotation changes (kube-apiserver's deployment strategy: annotations
    // are copied to the ReplicaSets); every other kind on spec changes only.
    let annotations = |v: &Value| {
        v.pointer("/metadata/annotations")
            .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
            .cloned()
    };
    let deployment_annotations =
        def.group == "apps" && def.kind == "Deployment" && annotations(old) != annotations(&new);
    if def.has_generation && (old.get("spec") != new.get("spec") || deployment_annotations) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
    Ok(new)
}

/// Equal apart from resourceVersion and managedFields timestamps: such a write is a no-op.
fn same_content(a: &Value, b: &Value) -> bool {
    fn norm(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            if let Some(Value::Array(mfs)) = m.get_mut("managedFields") {
                for mf in mfs {
                    if let Some(o) = mf.as_object_mut() {
                        o.remove("time");
                    }
                }
            }
        }
        v
    }
    norm(a) == norm(b)
}

fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// Which fields a write to `sub` changes and owns, for managedFields.
fn write_scope(def: &ResourceDef, sub: Option<&str>) -> Scope {
    match sub {
        Some("status") => Scope::Status,
        _ if def.has_status => Scope::Main,
        _ => Scope::Whole,
    }
}

/// Stores `new` as the successor of `old` (store locked). Returns the object as it now stands.
/// `update_scope`: record the writer as an Update manager of what it changed in that scope;
/// `None` when server-side apply has already recorded it.
#[allow(clippy::too_many_arguments)]
fn store_update(
    state: &Arc<State>,
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    old: &Obj,
    mut new: Value,
    field_manager: &str,
    dry_run: bool,
    update_scope: Option<Scope>,
) -> Result<Obj, ApiError> {
    let name = name_of(&old.obj).to_string();
    if let Some(scope) = update_scope {
        crate::patch::record_update_manager_in(
            scope,
            Some(&old.obj),
            &mut new,
            field_manager,
            &now(),
        );
    }
    if same_content(&old.obj, &new) {
        return Ok(old.clone());
    }
    if dry_run {
        return Ok(Stored::new(new, old.rv));
    }
    let rid: Arc<str> = def.store_id().into();
    if new.pointer("/metadata/deletionTimestamp").is_some() && !has_finalizers(&new) {
        // As kube-apiserver does (`Store.Update` -> `deleteWithoutFinalizers`): the write that empties
        // the finalizers is not stored; the object is deleted as last stored, so the DELETED event
        // carries the finalizers it had, and the writer gets back the object it sent.
        store
            .remove(&rid, ns, &name, None)
            .expect("the object exists while the store is locked");
        return Ok(Stored::new(new, old.rv));
    }
    let spec_changed =
        old.obj.pointer("/metadata/generation") != new.pointer("/metadata/generation");
    let stored = store.put(&rid, ns, &name, new);
    after_write(state, store, def, ns, &name, &stored, spec_changed, false);
    Ok(stored)
}

/// Rollout record and workload simulation after a stored write.
#[allow(clippy::too_many_arguments)]
fn after_write(
    state: &Arc<State>,
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    stored: &Obj,
    spec_changed: bool,
    created: bool,
) {
    if let Some(tp) = def.template
        && let Some(t) = tp.extract(&stored.obj)
    {
        let generation = stored
            .obj
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        store.record_template(&def.store_id(), ns, name, stored.rv, generation, t);
    }
    if def.sim.is_some() && spec_changed {
        crate::workload::on_spec_change(state, store, def, ns, name, created);
    }
}

fn check_url_name(obj: &Value, url_name: &str) -> Result<(), ApiError> {
    let n = name_of(obj);
    if !n.is_empty() && n != url_name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({url_name})"
        )));
    }
    Ok(())
}

/// The autoscaling/v1 Scale view of a workload.
pub fn scale_view(obj: &Value) -> Value {
    let mut m = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj.pointer(&format!("/metadata/{f}")) {
            m[f] = v.clone();
        }
    }
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|ls| {
            ls.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": m,
        "spec": { "replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) },
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// Applies a Scale object to a workload, returning the new workload object.
fn apply_scale(def: &ResourceDef, old: &Value, scale: &Value) -> Result<Value, ApiError> {
    let name = name_of(old);
    if let Some(k) = scale
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && *k != "Scale")
    {
        return Err(ApiError::bad_request(format!(
            "{k} cannot be handled as a Scale"
        )));
    }
    let old_rv = old
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        && rv != old_rv
    {
        return Err(ApiError::conflict_modified(&def.group, &def.plural, name));
    }
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            "spec.replicas",
            &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    Ok(new)
}

/// POST on a collection.
pub(crate) fn create(state: &Arc<State>, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let obj = decode_body(ctx)?;
    let mut store = state.store.lock().unwrap();
    let stored = create_locked(
        state,
        &mut store,
        &ctx.target.def,
        ctx.ns(),
        obj,
        &ctx.field_manager(),
        ctx.dry_run(),
        false,
    )?;
    drop(store);
    Ok(json_bytes(201, stored.bytes.clone()))
}

fn lookup(store: &Store, ctx: &Ctx) -> Result<Obj, ApiError> {
    let def = &ctx.target.def;
    let name = ctx.target.name.as_deref().unwrap_or_default();
    store
        .get(&def.store_id(), ctx.ns(), name)
        .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))
}

/// PUT on an object or its status/scale subresource.
pub(crate) fn update(state: &Arc<State>, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let body = decode_body(ctx)?;
    let def = &ctx.target.def;
    let url_name = ctx.target.name.as_deref().unwrap_or_default();
    check_url_name(&body, url_name)?;
    let mut store = state.store.lock().unwrap();
    let old = lookup(&store, ctx)?;
    let sub = ctx.target.sub.as_deref();
    let new = if sub == Some("scale") {
        apply_scale(def, &old.obj, &body)?
    } else {
        body
    };
    let new = prepare_update(def, &old.obj, new, sub.filter(|s| *s == "status"))?;
    let stored = store_update(
        state,
        &mut store,
        def,
        ctx.ns(),
        &old,
        new,
        &ctx.field_manager(),
        ctx.dry_run(),
        Some(write_scope(def, sub)),
    )?;
    drop(store);
    Ok(respond_written(ctx, &stored, 200))
}

fn respond_written(ctx: &Ctx, stored: &Obj, code: u16) -> Response<Body> {
    if ctx.target.sub.as_deref() == Some("scale") {
        json_value(code, &scale_view(&stored.obj))
    } else {
        json_bytes(code, stored.bytes.clone())
    }
}

/// PATCH on an object or its status/scale subresource (all four patch types).
pub(crate) fn patch(state: &Arc<State>, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let def = &ctx.target.def;
    let ct = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    let pt = PatchType::from_content_type(ct).ok_or_else(|| {
        ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
        ))
    })?;
    let fm = ctx.field_manager();
    let apply = matches!(pt, PatchType::Apply);
    if apply && ctx.query.get("fieldManager").is_none_or(|s| s.is_empty()) {
        return Err(ApiError::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let force = ctx.query.get("force").is_some_and(|v| v == "true");
    let url_name = ctx.target.name.as_deref().unwrap_or_default();
    let sub = ctx.target.sub.as_deref();
    let mut store = state.store.lock().unwrap();
    let old = match lookup(&store, ctx) {
        Ok(o) => o,
        Err(e) if apply && sub.is_none() => {
            let _ = e;
            let obj = crate::patch::server_side_apply_in(
                write_scope(def, None),
                None,
                &ctx.body,
                &fm,
                force,
                &now(),
            )
            .map_err(ApiError::from)?;
            check_url_name(&obj, url_name)?;
            let mut obj = obj;
            meta(&mut obj).insert("name".into(), json!(url_name));
            let stored = create_locked(
                state,
                &mut store,
                def,
                ctx.ns(),
                obj,
                &fm,
                ctx.dry_run(),
                true,
            )?;
            drop(store);
            return Ok(json_bytes(201, stored.bytes.clone()));
        }
        Err(e) => return Err(e),
    };
    let new = if sub == Some("scale") {
        let view = scale_view(&old.obj);
        let patched = if apply {
            crate::patch::server_side_apply(Some(&view), &ctx.body, &fm, force, &now())
        } else {
            crate::patch::apply_patch(pt, &view, &ctx.body)
        }
        .map_err(ApiError::from)?;
        apply_scale(def, &old.obj, &patched)?
    } else if apply {
        let scope = write_scope(def, sub);
        crate::patch::server_side_apply_in(scope, Some(&old.obj), &ctx.body, &fm, force, &now())
            .map_err(ApiError::from)?
    } else {
        crate::patch::apply_patch(pt, &old.obj, &ctx.body).map_err(ApiError::from)?
    };
    check_url_name(&new, url_name)?;
    // A status write keeps only the new status; an apply's managedFields must survive that.
    let applied_fields =
        (apply && sub == Some("status")).then(|| new.pointer("/metadata/managedFields").cloned());
    let mut new = prepare_update(def, &old.obj, new, sub.filter(|s| *s == "status"))?;
    if let Some(fields) = applied_fields {
        match fields {
            Some(f) => meta(&mut new).insert("managedFields".into(), f),
            None => meta(&mut new).remove("managedFields"),
        };
    }
    // Apply to the scale view is recorded as an Update of the object, as before.
    let update_scope = (!apply || sub == Some("scale")).then(|| write_scope(def, sub));
    let stored = store_update(
        state,
        &mut store,
        def,
        ctx.ns(),
        &old,
        new,
        &fm,
        ctx.dry_run(),
        update_scope,
    )?;
    drop(store);
    Ok(respond_written(ctx, &stored, 200))
}

struct DeleteOptions {
    uid: Option<String>,
    rv: Option<String>,
    dry_run: bool,
}

fn delete_options(ctx: &Ctx) -> Result<DeleteOptions, ApiError> {
    let body: Value = if ctx.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else if ctx.body.starts_with(b"k8s\0") {
        crate::proto::decode_delete_options(&ctx.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    } else {
        serde_json::from_slice(&ctx.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let s = |p: &str| body.pointer(p).and_then(Value::as_str).map(String::from);
    let body_dry = body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        uid: s("/preconditions/uid"),
        rv: s("/preconditions/resourceVersion"),
        dry_run: ctx.dry_run() || body_dry,
    })
}

/// Deletes one object with the store locked, honouring finalizers and cascading namespaces.
/// Returns the object as last seen and whether it is gone now (false: held by finalizers).
fn delete_locked(
    state: &State,
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    old: &Obj,
) -> (Obj, bool) {
    let name = name_of(&old.obj).to_string();
    let rid: Arc<str> = def.store_id().into();
    if has_finalizers(&old.obj) {
        if old.obj.pointer("/metadata/deletionTimestamp").is_some() {
            return (old.clone(), false);
        }
        let mut new = old.obj.clone();
        new["metadata"]["deletionTimestamp"] = json!(now());
        new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        return (store.put(&rid, ns, &name, new), false);
    }
    if def.plural == "namespaces" {
        // Contents go first, as the namespace controller would do; finalizers inside are not waited for.
        for d in state.registry.all().iter().filter(|d| d.namespaced) {
            let drid: Arc<str> = d.store_id().into();
            let names: Vec<String> = store
                .scan(&drid, Some(&name))
                .map(|o| name_of(&o.obj).to_string())
                .collect();
            for n in names {
                store.remove(&drid, &name, &n, None);
            }
        }
        let mut last = old.obj.clone();
        last["metadata"]["deletionTimestamp"] = json!(now());
        last["status"] = json!({ "phase": "Terminating" });
        let removed = store
            .remove(&rid, ns, &name, Some(last))
            .expect("the namespace exists while the store is locked");
        return (removed, true);
    }
    (
        store
            .remove(&rid, ns, &name, None)
            .expect("the object exists while the store is locked"),
        true,
    )
}

/// DELETE on an object.
pub(crate) fn delete(state: &Arc<State>, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    if ctx.target.sub.is_some() {
        return Err(ApiError::method_not_allowed(
            "subresources cannot be deleted",
        ));
    }
    let opts = delete_options(ctx)?;
    let def = &ctx.target.def;
    let mut store = state.store.lock().unwrap();
    let old = lookup(&store, ctx)?;
    let name = name_of(&old.obj).to_string();
    if def.plural == "namespaces"
        && matches!(name.as_str(), "default" | "kube-system" | "kube-public")
    {
        // The real server's namespace lifecycle admission protects these.
        return Err(ApiError {
            details: Some(json!({ "name": name, "kind": "namespaces" })),
            ..ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ))
        });
    }
    let uid = old
        .obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(want) = opts.uid.as_deref().filter(|u| *u != uid) {
        return Err(ApiError::conflict(
            &def.group,
            &def.plural,
            &name,
            &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
        ));
    }
    let rv = old.rv.to_string();
    if let Some(want) = opts.rv.as_deref().filter(|r| *r != rv) {
        return Err(ApiError::conflict(
            &def.group,
            &def.plural,
            &name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in meta: {rv}"
            ),
        ));
    }
    if opts.dry_run {
        return Ok(json_bytes(200, old.bytes.clone()));
    }
    let (out, gone) = delete_locked(state, &mut store, def, ctx.ns(), &old);
    drop(store);
    // Like the real registry: most built-in kinds answer an immediate delete with a Success Status;
    // pods, namespaces and custom resources return the object.
    if gone && !(def.custom || def.plural == "pods" || def.plural == "namespaces") {
        let mut details = json!({ "name": name, "kind": def.plural, "uid": uid });
        if !def.group.is_empty() {
            details["group"] = json!(def.group);
        }
        return Ok(json_value(
            200,
            &json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }),
        ));
    }
    Ok(json_bytes(200, out.bytes.clone()))
}

/// DELETE on a collection: deletes every object matching the selectors and returns them as a list.
pub(crate) fn delete_collection(state: &Arc<State>, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let opts = delete_options(ctx)?;
    let def = &ctx.target.def;
    let filter = Filter::from_query(&ctx.query, &def.plural)?;
    let mut store = state.store.lock().unwrap();
    let victims: Vec<Obj> = store
        .scan(&def.store_id(), ctx.target.ns.as_deref())
        .filter(|o| filter.matches(&o.obj))
        .cloned()
        .collect();
    let mut items = Vec::with_capacity(victims.len());
    for v in &victims {
        if opts.dry_run {
            items.push(v.obj.clone());
        } else {
            let ns = v
                .obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            items.push(delete_locked(state, &mut store, def, &ns, v).0.obj.clone());
        }
    }
    let rv = store.rv();
    drop(store);
    Ok(json_value(
        200,
        &json!({
            "kind": format!("{}List", def.kind),
            "apiVersion": def.api_version(),
            "metadata": { "resourceVersion": rv.to_string() },
            "items": items,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    fn def(group: &str, plural: &str) -> ResourceDef {
        Registry::new(&[])
            .find(group, "v1", plural)
            .unwrap()
            .clone()
    }

    #[test]
    fn names_follow_the_resource_rules() {
        assert!(validate_name(&def("", "secrets"), "a.b-c").is_ok());
        assert!(
            validate_name(&def("", "secrets"), "Bad_Name")
                .unwrap_err()
                .contains("RFC 1123 subdomain")
        );
        assert!(
            validate_name(&def("", "namespaces"), "a.b")
                .unwrap_err()
                .contains("RFC 1123 label")
        );
        assert!(
            validate_name(
                &def("rbac.authorization.k8s.io", "clusterroles"),
                "system:controller:x"
            )
            .is_ok()
        );
        assert!(validate_name(&def("rbac.authorization.k8s.io", "roles"), "a/b").is_err());
    }

    #[test]
    fn secret_string_data_is_folded_into_base64_data() {
        let d = def("", "secrets");
        let obj =
            json!({"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"b": "hello"}});
        let out = prepare_create(&d, "ns", obj, "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(out["data"], json!({"a": "eA==", "b": "aGVsbG8="}));
        assert!(out.get("stringData").is_none());
        assert_eq!(out["type"], "Opaque");
        assert_eq!(out["kind"], "Secret");
        assert_eq!(out["metadata"]["namespace"], "ns");
        assert!(out["metadata"].get("generation").is_none());
        let bad = json!({"metadata": {"name": "s"}, "data": {"a": "ab c"}});
        let e = prepare_create(&d, "ns", bad, "t").unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 2"
        );
    }

    #[test]
    fn generation_moves_only_with_spec_and_status_is_preserved() {
        let d = def("apps", "deployments");
        let old = prepare_create(
            &d,
            "ns",
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 2}}),
            "t",
        )
        .unwrap();
        let mut labels_only = old.clone();
        labels_only["metadata"]["labels"] = json!({"a": "b"});
        labels_only["status"] = json!({"replicas": 9});
        let out = prepare_update(&d, &old, labels_only, None).unwrap();
        assert_eq!(out["metadata"]["generation"], 1);
        assert_eq!(out["status"], json!({}));
        let mut spec = old.clone();
        spec["spec"]["replicas"] = json!(3);
        assert_eq!(
            prepare_update(&d, &old, spec, None).unwrap()["metadata"]["generation"],
            2
        );
        let status = prepare_update(
            &d,
            &old,
            json!({"status": {"replicas": 2}, "spec": {"x": 1}}),
            Some("status"),
        )
        .unwrap();
        assert_eq!(status["status"]["replicas"], 2);
        assert_eq!(status["spec"], old["spec"]);
    }

    #[test]
    fn stale_resource_version_conflicts_with_the_real_message() {
        let d = def("apps", "deployments");
        let mut old = prepare_create(
            &d,
            "ns",
            json!({"metadata": {"name": "x"}, "spec": {}}),
            "t",
        )
        .unwrap();
        old["metadata"]["resourceVersion"] = json!("5");
        let mut stale = old.clone();
        stale["metadata"]["resourceVersion"] = json!("4");
        let e = prepare_update(&d, &old, stale, None).unwrap_err();
        assert_eq!(e.code, 409);
        assert!(e.message.starts_with(
            "Operation cannot be fulfilled on deployments.apps \"x\": the object has been modified"
        ));
    }

    #[test]
    fn immutable_config_refuses_data_changes_but_allows_labels() {
        let d = def("", "configmaps");
        let old = prepare_create(
            &d,
            "ns",
            json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": true}),
            "t",
        )
        .unwrap();
        let mut changed = old.clone();
        changed["data"]["a"] = json!("2");
        let e = prepare_update(&d, &old, changed, None).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "ConfigMap \"c\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
        );
        let mut labelled = old.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        assert!(prepare_update(&d, &old, labelled, None).is_ok());
    }

    #[test]
    fn empty_metadata_maps_are_dropped_like_omitempty() {
        let d = def("", "configmaps");
        let old = prepare_create(
            &d,
            "ns",
            json!({"metadata": {"name": "c", "annotations": {}}}),
            "t",
        )
        .unwrap();
        assert!(old["metadata"].get("annotations").is_none());
        let mut new = old.clone();
        new["metadata"]["finalizers"] = json!([]);
        new["metadata"]["labels"] = json!({});
        assert!(same_content(
            &old,
            &prepare_update(&d, &old, new, None).unwrap()
        ));
    }

    #[test]
    fn no_new_finalizers_while_deleting() {
        let d = def("", "configmaps");
        let mut old = prepare_create(
            &d,
            "ns",
            json!({"metadata": {"name": "c", "finalizers": ["a"]}}),
            "t",
        )
        .unwrap();
        old["metadata"]["deletionTimestamp"] = json!("t");
        let mut more = old.clone();
        more["metadata"]["finalizers"] = json!(["a", "b"]);
        assert_eq!(prepare_update(&d, &old, more, None).unwrap_err().code, 422);
    }

    #[test]
    fn no_op_detection_ignores_rv_and_managed_field_times() {
        let a = json!({"metadata": {"resourceVersion": "1", "managedFields": [{"manager": "m", "time": "t1"}]}});
        let b = json!({"metadata": {"resourceVersion": "2", "managedFields": [{"manager": "m", "time": "t2"}]}});
        assert!(same_content(&a, &b));
        let c = json!({"metadata": {"resourceVersion": "1", "managedFields": [{"manager": "n", "time": "t1"}]}});
        assert!(!same_content(&a, &c));
    }

    #[test]
    fn scale_view_and_apply_round_trip() {
        let d = def("apps", "deployments");
        let old = json!({"metadata": {"name": "d", "resourceVersion": "3"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}}}});
        let v = scale_view(&old);
        assert_eq!(v["spec"]["replicas"], 2);
        assert_eq!(v["status"]["selector"], "app=x");
        let new = apply_scale(&d, &old, &json!({"spec": {"replicas": 5}})).unwrap();
        assert_eq!(new["spec"]["replicas"], 5);
        assert_eq!(
            apply_scale(&d, &old, &json!({"spec": {"replicas": -1}}))
                .unwrap_err()
                .code,
            422
        );
    }
}
