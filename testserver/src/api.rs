//! HTTP front end: authentication, routing, request log, faults, RBAC, then dispatch to the verb handlers.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::rbac::{Attributes, Decision, RbacSource, UserInfo};
use crate::resources::{Registry, ResourceDef};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::State;
use crate::status::ApiError;

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body type.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON response from pre-serialised bytes.
pub fn json_bytes(code: u16, b: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(b));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("no-cache, private"),
    );
    r
}

/// A JSON response.
pub fn json_value(code: u16, v: &Value) -> Response<Body> {
    json_bytes(
        code,
        serde_json::to_vec(v).expect("a JSON value always serialises"),
    )
}

/// A `Status` error response (with Retry-After when the error carries one).
pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_value(e.code, &e.to_status());
    if let Some(secs) = e.retry_after {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    r
}

/// Decodes a percent-encoded query string (`+` is a space), last value wins.
pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(())
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolves the bearer token to a user, or None (401).
pub(crate) fn authenticate(state: &State, headers: &HeaderMap) -> Option<UserInfo> {
    let h = headers.get("authorization")?.to_str().ok()?;
    let token = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))?
        .trim();
    user_for_token(state, token)
}

fn user_for_token(state: &State, token: &str) -> Option<UserInfo> {
    if token == "admin" {
        return Some(UserInfo {
            name: "system:admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        });
    }
    let sa = token
        .strip_prefix("system:serviceaccount:")
        .or_else(|| token.strip_prefix("serviceaccount:"));
    if let Some((ns, name)) = sa.and_then(|s| s.split_once(':'))
        && !ns.is_empty()
        && !name.is_empty()
        && !name.contains(':')
    {
        return Some(UserInfo::service_account(ns, name));
    }
    if let Some((ns, name, _uid)) = crate::authn::service_account_jwt(token) {
        return Some(UserInfo::service_account(&ns, &name));
    }
    let t = state.opts.tokens.iter().find(|t| t.token == token)?;
    let mut groups = t.groups.clone();
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Some(UserInfo {
        name: t.user.clone(),
        groups,
    })
}

fn is_admin(u: &UserInfo) -> bool {
    u.groups.iter().any(|g| g == crate::rbac::SYSTEM_MASTERS)
}

/// A parsed resource URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub def: ResourceDef,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    pub legacy_watch: bool,
}

impl Target {
    /// Resource as logged and matched: `deployments` or `deployments/status`.
    pub fn log_resource(&self) -> String {
        match &self.sub {
            Some(s) => format!("{}/{}", self.def.plural, s),
            None => self.def.plural.clone(),
        }
    }
}

#[derive(Debug)]
enum Route {
    Version,
    Api,
    Apis,
    Group(String),
    GroupVersion(String, String),
    Resource(Box<Target>),
    NotFound,
}

fn route(reg: &Registry, path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["api"] => Route::Api,
        ["api", v] => Route::GroupVersion(String::new(), v.to_string()),
        ["api", v, rest @ ..] => resource_route(reg, "", v, rest),
        ["apis"] => Route::Apis,
        ["apis", g] => Route::Group(g.to_string()),
        ["apis", g, v] => Route::GroupVersion(g.to_string(), v.to_string()),
        ["apis", g, v, rest @ ..] => resource_route(reg, g, v, rest),
        _ => Route::NotFound,
    }
}

fn resource_route(reg: &Registry, group: &str, version: &str, rest: &[&str]) -> Route {
    let (legacy_watch, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (ns, rest) = if namespaced_path {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 || rest.iter().any(|s| s.is_empty()) {
        return Route::NotFound;
    }
    let Some(def) = reg.find(group, version, rest[0]) else {
        return Route::NotFound;
    };
    if ns.is_some() && !def.namespaced {
        return Route::NotFound;
    }
    let sub = rest.get(2).map(|s| s.to_string());
    let sub_ok = match sub.as_deref() {
        None => true,
        Some("status") => def.has_status,
        Some("scale") => def.has_scale,
        Some("finalize") => def.plural == "namespaces",
        Some(_) => false,
    };
    if !sub_ok || (legacy_watch && sub.is_some()) {
        return Route::NotFound;
    }
    Route::Resource(Box::new(Target {
        def: def.clone(),
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub,
        legacy_watch,
    }))
}

fn not_found_path() -> ApiError {
    ApiError {
        details: Some(json!({})),
        ..ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
}

/// The verb of a resource request.
fn verb_of(
    method: &Method,
    t: &Target,
    q: &HashMap<String, String>,
) -> Result<&'static str, ApiError> {
    let named = t.name.is_some();
    let watch = t.legacy_watch || matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    Ok(match (method.as_str(), named) {
        ("GET", true) if watch && t.sub.is_none() => "watch",
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({m})"
            )));
        }
    })
}

/// Request context handed to the verb handlers.
pub(crate) struct Ctx {
    pub target: Target,
    pub query: HashMap<String, String>,
    pub body: Bytes,
    pub content_type: String,
    pub accept: String,
    pub user_agent: String,
}

impl Ctx {
    /// Namespace of a namespaced request, "" otherwise.
    pub fn ns(&self) -> &str {
        self.target.ns.as_deref().unwrap_or("")
    }

    /// `?dryRun=All`.
    pub fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }

    /// fieldManager query parameter, or the user-agent's program name like the real server.
    pub fn field_manager(&self) -> String {
        if let Some(fm) = self.query.get("fieldManager").filter(|s| !s.is_empty()) {
            return fm.clone();
        }
        let prog = self.user_agent.split('/').next().unwrap_or_default();
        if prog.is_empty() {
            "unknown".into()
        } else {
            prog.to_string()
        }
    }
}

/// Creates the default namespaces.
pub(crate) fn seed(state: &Arc<State>) {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let def = state
            .registry
            .find("", "v1", "namespaces")
            .expect("namespaces are built in")
            .clone();
        let mut store = state.store.lock().unwrap();
        let obj = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
        crate::write::create_locked(
            state,
            &mut store,
            &def,
            "",
            obj,
            "kube-apiserver",
            false,
            false,
        )
        .expect("the built-in namespaces are valid");
    }
}

/// Handles one HTTP request.
pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let latency = state.ctl.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
    };
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        let mut r = Response::new(full("ok"));
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return r;
    }
    let Some(user) = authenticate(&state, &parts.headers) else {
        return error_response(&ApiError::unauthorized());
    };
    if let Some(rest) = path.strip_prefix("/testserver/") {
        if !is_admin(&user) {
            return error_response(&ApiError::forbidden(
                "the /testserver control endpoints require the admin token",
            ));
        }
        return crate::endpoints::handle(&state, &parts.method, rest, &body).await;
    }
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let host = header("host");
    if let Some(rest) = path.strip_prefix("/openapi/v3") {
        state.ctl.count("get", "discovery");
        let rest = rest.trim_matches('/');
        let doc = if rest.is_empty() {
            Some(crate::discovery::openapi_v3_root(&state.registry))
        } else {
            crate::discovery::openapi_v3_group_version(&state.registry, rest)
        };
        return match doc {
            Some(d) => json_value(200, &d),
            None => error_response(&not_found_path()),
        };
    }
    if parts.method == Method::POST && path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        state.ctl.count("create", "tokenreviews");
        return match crate::authn::token_review(&body, |t| user_for_token(&state, t)) {
            Ok(review) => json_value(201, &review),
            Err(e) => error_response(&ApiError::bad_request(e)),
        };
    }
    match route(&state.registry, &path) {
        Route::Resource(t) => {
            let ctx = Ctx {
                target: *t,
                query,
                body,
                content_type: header("content-type"),
                accept: header("accept"),
                user_agent: header("user-agent"),
            };
            match resource_request(&state, &parts.method, ctx, &user).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            }
        }
        Route::NotFound => error_response(&not_found_path()),
        discovery => {
            state.ctl.count("get", "discovery");
            if let Some(fault) = state.ctl.take_fault("get", "discovery", None) {
                return match fault {
                    Some(f) => error_response(&f.to_error()),
                    None => cut_response(json_value(200, &json!({}))).await,
                };
            }
            if parts.method != Method::GET {
                return error_response(&ApiError::method_not_allowed(
                    "discovery documents are read-only",
                ));
            }
            let doc = match discovery {
                Route::Version => Some(crate::discovery::version()),
                Route::Api => Some(crate::discovery::core_versions(&host)),
                Route::Apis => Some(crate::discovery::group_list(&state.registry)),
                Route::Group(g) => crate::discovery::group(&state.registry, &g),
                Route::GroupVersion(g, v) => {
                    crate::discovery::resource_list(&state.registry, &g, &v)
                }
                _ => None,
            };
            match doc {
                // Aggregated-discovery Accept headers get plain JSON; clients fall back on the content type.
                Some(d) => json_value(200, &d),
                None => error_response(&not_found_path()),
            }
        }
    }
}

async fn resource_request(
    state: &Arc<State>,
    method: &Method,
    ctx: Ctx,
    user: &UserInfo,
) -> Result<Response<Body>, ApiError> {
    let verb = verb_of(method, &ctx.target, &ctx.query)?;
    let resource = ctx.target.log_resource();
    state.ctl.count(verb, &resource);
    let mut cut = false;
    if let Some(fault) = state
        .ctl
        .take_fault(verb, &resource, ctx.target.ns.as_deref())
    {
        match fault {
            Some(f) => return Err(f.to_error()),
            None => cut = true,
        }
    }
    if state.ctl.rbac_on() && !is_admin(user) {
        let attrs = Attributes {
            verb,
            api_group: &ctx.target.def.group,
            resource: &ctx.target.def.plural,
            subresource: ctx.target.sub.as_deref(),
            namespace: ctx.target.ns.as_deref(),
            name: ctx.target.name.as_deref(),
        };
        if let Decision::Deny { message } = crate::rbac::authorize(user, &attrs, &StoreRbac(state))
        {
            return Err(ApiError {
                details: Some(rbac_details(&ctx.target)),
                ..ApiError::forbidden(message)
            });
        }
    }
    if verb == "watch" {
        let gone = state.ctl.take_gone(&resource, ctx.target.ns.as_deref());
        return crate::watch::serve(state.clone(), ctx, gone, cut);
    }
    let resp = match verb {
        "get" => get(state, &ctx)?,
        "list" => list(state, &ctx)?,
        "create" => crate::write::create(state, &ctx)?,
        "update" => crate::write::update(state, &ctx)?,
        "patch" => crate::write::patch(state, &ctx)?,
        "delete" => crate::write::delete(state, &ctx)?,
        _ => crate::write::delete_collection(state, &ctx)?,
    };
    Ok(if cut { cut_response(resp).await } else { resp })
}

fn rbac_details(t: &Target) -> Value {
    let mut d = json!({ "kind": t.def.plural });
    if !t.def.group.is_empty() {
        d["group"] = json!(t.def.group);
    }
    if let Some(n) = &t.name {
        d["name"] = json!(n);
    }
    d
}

/// Turns a complete response into one that sends half its body and then breaks the connection.
pub(crate) async fn cut_response(resp: Response<Body>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    // Without a content-length hyper streams chunked, so the error below aborts mid-body.
    parts.headers.remove("content-length");
    let frames: Vec<Result<hyper::body::Frame<Bytes>, BoxError>> = vec![
        Ok(hyper::body::Frame::data(half)),
        Err("connection cut by test fault injection".into()),
    ];
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    Response::from_parts(parts, BodyExt::boxed_unsync(body))
}

/// RBAC objects read from the store.
struct StoreRbac<'a>(&'a State);

impl StoreRbac<'_> {
    fn collect(&self, plural: &str, ns: Option<&str>) -> Vec<Value> {
        let rid = format!("rbac.authorization.k8s.io/{plural}");
        self.0
            .store
            .lock()
            .unwrap()
            .scan(&rid, ns)
            .map(|o| o.obj.clone())
            .collect()
    }
}

impl RbacSource for StoreRbac<'_> {
    fn cluster_roles(&self) -> Vec<Value> {
        self.collect("clusterroles", Some(""))
    }
    fn cluster_role_bindings(&self) -> Vec<Value> {
        self.collect("clusterrolebindings", Some(""))
    }
    fn roles(&self, namespace: &str) -> Vec<Value> {
        self.collect("roles", Some(namespace))
    }
    fn role_bindings(&self, namespace: &str) -> Vec<Value> {
        self.collect("rolebindings", Some(namespace))
    }
}

/// Label and field selectors of a request, combined into one predicate.
pub(crate) struct Filter {
    label: Option<LabelSelector>,
    field: Option<FieldSelector>,
}

impl Filter {
    /// Parses `labelSelector` and `fieldSelector` (400 on syntax errors).
    pub fn from_query(q: &HashMap<String, String>, resource: &str) -> Result<Filter, ApiError> {
        let label =
            match q.get("labelSelector").filter(|s| !s.trim().is_empty()) {
                Some(s) => Some(LabelSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?),
                None => None,
            };
        let field = match q.get("fieldSelector").filter(|s| !s.trim().is_empty()) {
            Some(s) => Some(FieldSelector::parse(s, resource).map_err(ApiError::bad_request)?),
            None => None,
        };
        Ok(Filter { label, field })
    }

    /// Whether the object passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        self.label.as_ref().is_none_or(|l| l.matches_value(obj))
            && self.field.as_ref().is_none_or(|f| f.matches(obj))
    }
}

fn get(state: &State, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let t = &ctx.target;
    let name = t.name.as_deref().unwrap_or_default();
    let obj = state
        .store
        .lock()
        .unwrap()
        .get(&t.def.store_id(), ctx.ns(), name);
    let obj = obj.ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, name))?;
    if t.sub.as_deref() == Some("scale") {
        return Ok(json_value(200, &crate::write::scale_view(&obj.obj)));
    }
    if wants_table(&ctx.accept) {
        return Ok(json_value(
            200,
            &crate::table::table(
                &t.def,
                std::slice::from_ref(&obj),
                obj.rv,
                None,
                include(ctx),
            ),
        ));
    }
    if wants_metadata(&ctx.accept) {
        return Ok(json_value(200, &partial_metadata(&obj.obj)));
    }
    Ok(json_bytes(200, obj.bytes.clone()))
}

fn include(ctx: &Ctx) -> crate::table::Include {
    crate::table::Include::parse(ctx.query.get("includeObject").map(String::as_str))
}

/// Whether the client asked for metadata only (kube-rs metadata watchers, `kubectl get -o name`).
pub(crate) fn wants_metadata(accept: &str) -> bool {
    accept.contains("as=PartialObjectMetadata")
}

/// The PartialObjectMetadata view of an object.
pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Whether the client asked for server-side printing (kubectl get).
pub(crate) fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

/// Encodes a continue token for a page read at `rv` ending at `key`.
pub(crate) fn encode_continue(rv: u64, key: &str) -> String {
    let json = serde_json::to_vec(&ContinueToken {
        rv,
        start: key.to_string(),
    })
    .expect("token serialises");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(s: &str) -> Option<ContinueToken> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

fn list(state: &State, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let t = &ctx.target;
    let q = &ctx.query;
    let filter = Filter::from_query(q, &t.def.plural)?;
    let limit = match q.get("limit").filter(|s| !s.is_empty()) {
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
            .max(0) as usize,
        None => 0,
    };
    let rid = t.def.store_id();
    let prefix = crate::store::prefix(&rid, t.ns.as_deref());
    let store = state.store.lock().unwrap();
    let (at, start) = match q.get("continue").filter(|s| !s.is_empty()) {
        Some(c) => {
            let tok = decode_continue(c)
                .filter(|t| t.start.starts_with(&prefix))
                .ok_or_else(|| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
            if tok.rv < store.floor() {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            (Some(tok.rv), Some(tok.start))
        }
        None => (requested_list_rv(q, store.rv())?, None),
    };
    let page = store.list(&rid, t.ns.as_deref(), at, start.as_deref(), limit, &|o| {
        filter.matches(o)
    })?;
    drop(store);
    let cont = page
        .continue_after
        .as_deref()
        .map(|k| encode_continue(page.rv, k));
    if wants_table(&ctx.accept) {
        return Ok(json_value(
            200,
            &crate::table::table(&t.def, &page.items, page.rv, cont.as_deref(), include(ctx)),
        ));
    }
    let mut meta = json!({ "resourceVersion": page.rv.to_string() });
    if let Some(c) = &cont {
        meta["continue"] = json!(c);
    }
    if wants_metadata(&ctx.accept) {
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|o| partial_metadata(&o.obj))
            .collect();
        return Ok(json_value(
            200,
            &json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items,
            }),
        ));
    }
    let mut out =
        Vec::with_capacity(page.items.iter().map(|o| o.bytes.len() + 1).sum::<usize>() + 256);
    out.extend_from_slice(b"{\"apiVersion\":");
    serde_json::to_writer(&mut out, &t.def.api_version()).expect("string serialises");
    out.extend_from_slice(b",\"items\":[");
    for (i, o) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&o.bytes);
    }
    out.extend_from_slice(b"],\"kind\":");
    serde_json::to_writer(&mut out, &format!("{}List", t.def.kind)).expect("string serialises");
    out.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut out, &meta).expect("metadata serialises");
    out.push(b'}');
    Ok(json_bytes(200, out))
}

/// Which snapshot a list reads: None = latest; Some(rv) = exactly that RV.
fn requested_list_rv(q: &HashMap<String, String>, current: u64) -> Result<Option<u64>, ApiError> {
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let exact = q.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
    if rv.is_empty() || (rv == "0" && !exact) {
        return Ok(None);
    }
    let n: u64 = rv
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
    if n > current {
        return Err(ApiError::new(
            504,
            "Timeout",
            format!("Too large resource version: {n}, current: {current}"),
        ));
    }
    Ok(if exact { Some(n) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Option<Target> {
        match route(&Registry::new(&[]), path) {
            Route::Resource(t) => Some(*t),
            _ => None,
        }
    }

    #[test]
    fn routes_split_namespace_name_and_subresource() {
        let t = target("/apis/apps/v1/namespaces/team-a/deployments/web/scale").unwrap();
        assert_eq!(
            (t.def.plural.as_str(), t.ns.as_deref(), t.name.as_deref()),
            ("deployments", Some("team-a"), Some("web"))
        );
        assert_eq!(t.log_resource(), "deployments/scale");
        let t = target("/api/v1/secrets").unwrap();
        assert_eq!((t.ns, t.name), (None, None));
        // `/namespaces/<name>/status` is the namespace's status, not a collection called "status".
        let t = target("/api/v1/namespaces/foo/status").unwrap();
        assert_eq!(
            (t.def.plural.as_str(), t.name.as_deref(), t.sub.as_deref()),
            ("namespaces", Some("foo"), Some("status"))
        );
        let t = target("/api/v1/watch/namespaces/default/configmaps").unwrap();
        assert!(t.legacy_watch);
    }

    #[test]
    fn unknown_paths_and_subresources_are_not_found() {
        assert!(target("/apis/apps/v1/namespaces/a/daemonsets/x/scale").is_none());
        assert!(target("/api/v1/namespaces/a/namespaces").is_none());
        assert!(target("/apis/apps/v1/namespaces/a/widgets").is_none());
        assert!(target("/api/v1/namespaces/a/secrets/x/status/extra").is_none());
        assert!(matches!(
            route(&Registry::new(&[]), "/version"),
            Route::Version
        ));
        assert!(matches!(route(&Registry::new(&[]), "/apis/apps"), Route::Group(g) if g == "apps"));
    }

    #[test]
    fn verbs_follow_method_name_and_watch_flag() {
        let t = target("/api/v1/namespaces/a/secrets").unwrap();
        let q = parse_query("watch=true");
        assert_eq!(verb_of(&Method::GET, &t, &q).unwrap(), "watch");
        assert_eq!(verb_of(&Method::GET, &t, &HashMap::new()).unwrap(), "list");
        assert_eq!(
            verb_of(&Method::DELETE, &t, &HashMap::new()).unwrap(),
            "deletecollection"
        );
        assert_eq!(
            verb_of(&Method::PUT, &t, &HashMap::new()).unwrap_err().code,
            405
        );
        let named = target("/api/v1/namespaces/a/secrets/x").unwrap();
        assert_eq!(
            verb_of(&Method::PATCH, &named, &HashMap::new()).unwrap(),
            "patch"
        );
    }

    #[test]
    fn tokens_map_to_users_and_groups() {
        let reg_state = |tokens| State {
            registry: Registry::new(&[]),
            store: std::sync::Mutex::new(crate::store::Store::new(1)),
            ctl: crate::control::ControlState::new(
                false,
                crate::control::WorkloadSim::Off,
                tokio::sync::mpsc::unbounded_channel().0,
            ),
            opts: crate::server::ServerOptions {
                tokens,
                ..Default::default()
            },
        };
        let st = reg_state(vec![crate::server::StaticToken {
            token: "t".into(),
            user: "alice".into(),
            groups: vec!["dev".into()],
        }]);
        let sa = user_for_token(&st, "serviceaccount:hr:hashroll").unwrap();
        assert_eq!(sa.name, "system:serviceaccount:hr:hashroll");
        assert!(sa.groups.contains(&"system:serviceaccounts:hr".to_string()));
        assert!(is_admin(&user_for_token(&st, "admin").unwrap()));
        assert_eq!(
            user_for_token(&st, "t").unwrap().groups,
            ["dev", "system:authenticated"]
        );
        assert!(user_for_token(&st, "system:serviceaccount:hr").is_none());
        assert!(user_for_token(&st, "nope").is_none());
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = parse_query("labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&watch=1&x");
        assert_eq!(q["labelSelector"], "app=web,tier in (a,b)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "");
        assert_eq!(parse_query("a=%zz%4")["a"], "%zz%4");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = decode_continue(&encode_continue(42, "/secrets\0ns\0a")).unwrap();
        assert_eq!((t.rv, t.start.as_str()), (42, "/secrets\0ns\0a"));
        assert!(decode_continue("not-a-token").is_none());
    }

    #[test]
    fn exact_list_rv_must_not_be_in_the_future() {
        let q = |rv: &str, m: &str| {
            parse_query(&format!("resourceVersion={rv}&resourceVersionMatch={m}"))
        };
        assert_eq!(requested_list_rv(&q("5", "Exact"), 9).unwrap(), Some(5));
        assert_eq!(requested_list_rv(&q("5", "NotOlderThan"), 9).unwrap(), None);
        assert_eq!(requested_list_rv(&q("0", ""), 9).unwrap(), None);
        assert_eq!(
            requested_list_rv(&q("10", "Exact"), 9).unwrap_err().code,
            504
        );
    }
}
