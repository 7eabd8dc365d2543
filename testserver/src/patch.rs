//! Patch engines of the test API server: JSON merge patch (RFC 7386), JSON patch (RFC 6902),
//! strategic merge patch, and server-side apply with `metadata.managedFields` bookkeeping.
//!
//! Everything here is pure. The HTTP layer hands in the stored object and the request body and
//! gets back the object to store, or a [`PatchError`] that maps onto a Kubernetes `Status`.
//! `resourceVersion`, `generation` and `uid` are left to the caller.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// The four PATCH flavours the Kubernetes API accepts, told apart by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// Maps a `Content-Type` value to a patch type, ignoring parameters such as `charset`.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media = ct.split(';').next().unwrap_or_default().trim();
        [
            PatchType::Merge,
            PatchType::Json,
            PatchType::Strategic,
            PatchType::Apply,
        ]
        .into_iter()
        .find(|pt| pt.content_type().eq_ignore_ascii_case(media))
    }

    /// The media type a client sends for this patch type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Json => "application/json-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a patch was refused; each variant corresponds to one HTTP status / `Status.reason`.
#[derive(Debug)]
pub enum PatchError {
    /// The request body is malformed (HTTP 400, reason `BadRequest`).
    BadRequest(String),
    /// The patch is well formed but cannot be applied to this object (HTTP 422, reason `Invalid`).
    Invalid(String),
    /// Server-side apply would take fields owned by another manager (HTTP 409, reason `Conflict`).
    Conflict {
        /// Full message, e.g. `Apply failed with 1 conflict: conflict with "x": .spec.replicas`.
        message: String,
    },
    /// The `Content-Type` is not a patch type this resource accepts (HTTP 415).
    UnsupportedMediaType(String),
}

impl PatchError {
    /// The 415 error a real server returns for an unknown PATCH content type. Custom resources
    /// do not accept strategic merge patches, so `strategic_allowed` is false for them.
    pub fn unsupported_media_type(content_type: &str, strategic_allowed: bool) -> PatchError {
        let mut accepted = vec![
            PatchType::Json.content_type(),
            PatchType::Merge.content_type(),
            PatchType::Apply.content_type(),
        ];
        if strategic_allowed {
            accepted.push(PatchType::Strategic.content_type());
        }
        PatchError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: {}",
            accepted.join(", ")
        ))
    }

    /// HTTP status code for this error.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::BadRequest(_) => 400,
            PatchError::Invalid(_) => 422,
            PatchError::Conflict { .. } => 409,
            PatchError::UnsupportedMediaType(_) => 415,
        }
    }

    /// `Status.reason` for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            PatchError::BadRequest(_) => "BadRequest",
            PatchError::Invalid(_) => "Invalid",
            PatchError::Conflict { .. } => "Conflict",
            PatchError::UnsupportedMediaType(_) => "UnsupportedMediaType",
        }
    }
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::BadRequest(m)
            | PatchError::Invalid(m)
            | PatchError::UnsupportedMediaType(m)
            | PatchError::Conflict { message: m } => f.write_str(m),
        }
    }
}

impl std::error::Error for PatchError {}

/// Non-apply patches. `current` is the stored object. Returns the new object (metadata.managedFields untouched).
pub fn apply_patch(pt: PatchType, current: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let patched = match pt {
        PatchType::Merge => {
            let patch = parse_json_body(patch, "merge patch")?;
            if !patch.is_object() {
                return Err(PatchError::BadRequest(
                    "merge patch body must be a JSON object".to_string(),
                ));
            }
            let mut doc = current.clone();
            merge_patch(&mut doc, &patch);
            doc
        }
        PatchType::Json => json_patch(current, patch)?,
        PatchType::Strategic => {
            let patch = parse_json_body(patch, "strategic merge patch")?;
            let Value::Object(patch) = patch else {
                return Err(PatchError::BadRequest(
                    "strategic merge patch body must be a JSON object".to_string(),
                ));
            };
            let empty = Map::new();
            let original = current.as_object().unwrap_or(&empty);
            match strategic_merge_map(original, &patch)? {
                Some(map) => Value::Object(map),
                None => {
                    return Err(PatchError::BadRequest(
                        "a strategic merge patch cannot delete the whole object".to_string(),
                    ));
                }
            }
        }
        PatchType::Apply => {
            // Apply needs a field manager and ownership rules, so it has its own entry point.
            return Err(PatchError::BadRequest(
                "apply patches must go through server_side_apply".to_string(),
            ));
        }
    };
    if !patched.is_object() {
        return Err(PatchError::Invalid(
            "the patched object is not a JSON object".to_string(),
        ));
    }
    Ok(patched)
}

fn parse_json_body(body: &[u8], what: &str) -> Result<Value, PatchError> {
    serde_json::from_slice(body)
        .map_err(|e| PatchError::BadRequest(format!("invalid JSON in {what} body: {e}")))
}

// ---------------------------------------------------------------------------------------------
// JSON merge patch (RFC 7386)
// ---------------------------------------------------------------------------------------------

/// Applies an RFC 7386 merge patch in place: objects merge recursively, `null` deletes,
/// everything else (arrays included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!("target was just made an object")
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON patch (RFC 6902)
// ---------------------------------------------------------------------------------------------

/// Applies an RFC 6902 JSON patch. A body that is not an array of objects is a bad request;
/// operations that do not apply to this document are `Invalid` (HTTP 422), as in the real server.
fn json_patch(current: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let ops = parse_json_body(body, "JSON patch")?;
    let Value::Array(ops) = ops else {
        return Err(PatchError::BadRequest(
            "JSON patch body must be a JSON array of operations".to_string(),
        ));
    };
    let mut doc = current.clone();
    for (index, op) in ops.iter().enumerate() {
        let Value::Object(op) = op else {
            return Err(PatchError::BadRequest(format!(
                "JSON patch operation {index} is not a JSON object"
            )));
        };
        json_patch_op(&mut doc, op)?;
    }
    Ok(doc)
}

fn json_patch_op(doc: &mut Value, op: &Map<String, Value>) -> Result<(), PatchError> {
    let invalid = |m: String| PatchError::Invalid(m);
    let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
    let known = ["add", "remove", "replace", "move", "copy", "test"];
    if !known.contains(&kind) {
        return Err(invalid(format!("Unexpected kind: {kind}")));
    }
    let Some(path) = op.get("path").and_then(Value::as_str) else {
        return Err(invalid(format!(
            "{kind} operation does not apply: operation is missing the \"path\" field"
        )));
    };
    let ptr = parse_pointer(path, kind)?;
    let value = || {
        op.get("value").cloned().ok_or_else(|| {
            invalid(format!(
                "{kind} operation does not apply: operation is missing the \"value\" field"
            ))
        })
    };
    let from = || -> Result<(String, Vec<String>), PatchError> {
        let Some(from) = op.get("from").and_then(Value::as_str) else {
            return Err(invalid(format!(
                "{kind} operation does not apply: operation is missing the \"from\" field"
            )));
        };
        Ok((from.to_string(), parse_pointer(from, kind)?))
    };
    match kind {
        "add" => pointer_add(doc, &ptr, value()?).map_err(|()| {
            invalid(format!(
                "add operation does not apply: doc is missing path: {path:?}: missing value"
            ))
        }),
        "remove" => pointer_remove(doc, &ptr).map(drop).map_err(|()| {
            invalid(format!(
                "remove operation does not apply: doc is missing path: {path:?}: missing value"
            ))
        }),
        "replace" => {
            let value = value()?;
            match pointer_get_mut(doc, &ptr) {
                Some(target) => {
                    *target = value;
                    Ok(())
                }
                None => Err(invalid(format!(
                    "replace operation does not apply: doc is missing key: {path}: missing value"
                ))),
            }
        }
        "move" => {
            let (from_str, from) = from()?;
            if ptr.len() > from.len() && ptr.starts_with(&from) {
                return Err(invalid(format!(
                    "move operation does not apply: cannot move {from_str:?} into its own child {path:?}"
                )));
            }
            let moved = pointer_remove(doc, &from).map_err(|()| {
                invalid(format!(
                    "move operation does not apply: doc is missing from path: {from_str}: missing value"
                ))
            })?;
            pointer_add(doc, &ptr, moved).map_err(|()| {
                invalid(format!(
                    "move operation does not apply: doc is missing destination path: {path}: missing value"
                ))
            })
        }
        "copy" => {
            let (from_str, from) = from()?;
            let copied = pointer_get(doc, &from).cloned().ok_or_else(|| {
                invalid(format!(
                    "copy operation does not apply: doc is missing from path: {from_str}: missing value"
                ))
            })?;
            pointer_add(doc, &ptr, copied).map_err(|()| {
                invalid(format!(
                    "copy operation does not apply: doc is missing destination path: {path}: missing value"
                ))
            })
        }
        _ => {
            let expected = value()?;
            match pointer_get(doc, &ptr) {
                Some(actual) if json_equal(actual, &expected) => Ok(()),
                Some(_) => Err(invalid(format!("testing value {path} failed: test failed"))),
                None => Err(invalid(format!(
                    "testing value {path} failed: doc is missing path: missing value"
                ))),
            }
        }
    }
}

/// Splits an RFC 6901 pointer into unescaped reference tokens; `""` is the whole document.
fn parse_pointer(path: &str, kind: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PatchError::Invalid(format!(
            "{kind} operation does not apply: invalid JSON pointer {path:?}: it must start with '/'"
        )));
    };
    // "~1" must be decoded before "~0" so that "~01" means "~1", not "/".
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// Parses an array index token; `-` (one past the end) is accepted only when `allow_end`.
fn array_index(token: &str, len: usize, allow_end: bool) -> Option<usize> {
    if token == "-" {
        return allow_end.then_some(len);
    }
    let canonical = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if !canonical {
        return None;
    }
    let index: usize = token.parse().ok()?;
    let limit = if allow_end { len + 1 } else { len };
    (index < limit).then_some(index)
}

fn pointer_get<'a>(doc: &'a Value, ptr: &[String]) -> Option<&'a Value> {
    ptr.iter().try_fold(doc, |node, token| match node {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(array_index(token, items.len(), false)?),
        _ => None,
    })
}

fn pointer_get_mut<'a>(doc: &'a mut Value, ptr: &[String]) -> Option<&'a mut Value> {
    ptr.iter().try_fold(doc, |node, token| match node {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => {
            let index = array_index(token, items.len(), false)?;
            items.get_mut(index)
        }
        _ => None,
    })
}

fn pointer_add(doc: &mut Value, ptr: &[String], value: Value) -> Result<(), ()> {
    let Some((last, parent)) = ptr.split_last() else {
        *doc = value;
        return Ok(());
    };
    match pointer_get_mut(doc, parent).ok_or(())? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = array_index(last, items.len(), true).ok_or(())?;
            items.insert(index, value);
            Ok(())
        }
        _ => Err(()),
    }
}

fn pointer_remove(doc: &mut Value, ptr: &[String]) -> Result<Value, ()> {
    let (last, parent) = ptr.split_last().ok_or(())?;
    match pointer_get_mut(doc, parent).ok_or(())? {
        Value::Object(map) => map.remove(last).ok_or(()),
        Value::Array(items) => {
            let index = array_index(last, items.len(), false).ok_or(())?;
            Ok(items.remove(index))
        }
        _ => Err(()),
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`), as Go's decoder sees them.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------------------------

/// Lists merged item by item, by field name, with their candidate merge keys (first match wins:
/// container `ports` use `containerPort`, Service `ports` use `port`).
const MERGE_KEYS: &[(&str, &[&str])] = &[
    ("containers", &["name"]),
    ("initContainers", &["name"]),
    ("ephemeralContainers", &["name"]),
    ("env", &["name"]),
    ("volumes", &["name"]),
    ("imagePullSecrets", &["name"]),
    ("volumeMounts", &["mountPath"]),
    ("volumeDevices", &["devicePath"]),
    ("ports", &["containerPort", "port"]),
    ("ownerReferences", &["uid"]),
    ("conditions", &["type"]),
    ("hostAliases", &["ip"]),
    ("topologySpreadConstraints", &["topologyKey"]),
    ("resourceClaims", &["name"]),
];

/// Primitive lists merged as sets.
const SET_LISTS: &[&str] = &["finalizers"];

const DIRECTIVE_PATCH: &str = "$patch";
const DIRECTIVE_RETAIN_KEYS: &str = "$retainKeys";
const PREFIX_SET_ORDER: &str = "$setElementOrder/";
const PREFIX_DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

fn merge_key_candidates(field: &str) -> Option<&'static [&'static str]> {
    MERGE_KEYS
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, keys)| *keys)
}

/// The first candidate key that every item carries; an empty list takes the first candidate.
fn pick_merge_key<'v>(
    field: &str,
    items: impl Iterator<Item = &'v Value> + Clone,
) -> Option<&'static str> {
    merge_key_candidates(field)?
        .iter()
        .find(|key| items.clone().all(|item| item.get(**key).is_some()))
        .copied()
}

/// Whether a list item is nothing but a `{"$patch": ...}` directive.
fn is_directive_item(item: &Value) -> bool {
    item.as_object()
        .is_some_and(|m| !m.is_empty() && m.keys().all(|k| k == DIRECTIVE_PATCH))
}

/// Merges a strategic patch map into `original`. `None` means `$patch: delete` removed the map.
fn strategic_merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    let empty = Map::new();
    let base = match patch.get(DIRECTIVE_PATCH) {
        None => original,
        Some(Value::String(d)) if d == "merge" => original,
        // `replace` keeps only what the patch says; merging it into nothing also drops directives.
        Some(Value::String(d)) if d == "replace" => &empty,
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(other) => {
            return Err(PatchError::BadRequest(format!(
                "unknown strategic merge patch directive {DIRECTIVE_PATCH}: {other}"
            )));
        }
    };
    let mut result = base.clone();

    let mut set_orders: Vec<(&str, &Value)> = Vec::new();
    let mut retain_keys: Option<Vec<&str>> = None;
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(PREFIX_DELETE_PRIMITIVE) {
            let Value::Array(doomed) = value else {
                return Err(PatchError::BadRequest(format!(
                    "{key} must be a list of values to delete"
                )));
            };
            if let Some(Value::Array(items)) = result.get_mut(field) {
                items.retain(|item| !doomed.contains(item));
            }
        } else if let Some(field) = key.strip_prefix(PREFIX_SET_ORDER) {
            if !value.is_array() {
                return Err(PatchError::BadRequest(format!(
                    "{key} must be a list giving the element order"
                )));
            }
            set_orders.push((field, value));
        } else if key == DIRECTIVE_RETAIN_KEYS {
            let keys = value
                .as_array()
                .and_then(|keys| keys.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
                .ok_or_else(|| {
                    PatchError::BadRequest(format!("{key} must be a list of field names"))
                })?;
            retain_keys = Some(keys);
        } else if key.starts_with('$') && key != DIRECTIVE_PATCH {
            return Err(PatchError::BadRequest(format!(
                "unknown strategic merge patch directive {key:?}"
            )));
        }
    }

    for (key, value) in patch.iter().filter(|(k, _)| !k.starts_with('$')) {
        if value.is_null() {
            result.remove(key);
            continue;
        }
        match strategic_merge_value(result.get(key), value, key)? {
            Some(merged) => {
                result.insert(key.clone(), merged);
            }
            None => {
                result.remove(key);
            }
        }
    }

    for (field, order) in set_orders {
        if let (Some(Value::Array(items)), Value::Array(order)) = (result.get_mut(field), order) {
            apply_element_order(items, order, field);
        }
    }

    if let Some(keys) = retain_keys {
        if let Some(stray) = patch
            .iter()
            .find(|(k, v)| !k.starts_with('$') && !v.is_null() && !keys.contains(&k.as_str()))
        {
            return Err(PatchError::Invalid(format!(
                "the patch content does not match the {DIRECTIVE_RETAIN_KEYS} list: {:?} is not listed",
                stray.0
            )));
        }
        result.retain(|k, _| keys.contains(&k.as_str()));
    }
    Ok(Some(result))
}

/// Merges one patch value under field `field`. `None` means the field is to be removed.
fn strategic_merge_value(
    original: Option<&Value>,
    patch: &Value,
    field: &str,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(patch) => {
            let empty = Map::new();
            let original = original.and_then(Value::as_object).unwrap_or(&empty);
            Ok(strategic_merge_map(original, patch)?.map(Value::Object))
        }
        Value::Array(patch) => {
            let original = original.and_then(Value::as_array).map(Vec::as_slice);
            Ok(strategic_merge_list(original, patch, field)?.map(Value::Array))
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

/// Cleans a patch value that has nothing to merge with: drops nulls and directives.
fn strategic_fresh(patch: &Value, field: &str) -> Result<Option<Value>, PatchError> {
    strategic_merge_value(None, patch, field)
}

fn strategic_merge_list(
    original: Option<&[Value]>,
    patch: &[Value],
    field: &str,
) -> Result<Option<Vec<Value>>, PatchError> {
    let mut original = original;
    let mut items: Vec<&Value> = Vec::new();
    for item in patch {
        if !is_directive_item(item) {
            items.push(item);
            continue;
        }
        match item.get(DIRECTIVE_PATCH).and_then(Value::as_str) {
            Some("replace") => original = None,
            Some("delete") => return Ok(None),
            Some("merge") => {}
            _ => {
                return Err(PatchError::BadRequest(format!(
                    "unknown strategic merge patch directive in list {field:?}: {item}"
                )));
            }
        }
    }

    if SET_LISTS.contains(&field) && items.iter().all(|i| !i.is_object() && !i.is_array()) {
        let mut result = original.map(<[Value]>::to_vec).unwrap_or_default();
        for item in items {
            if !result.contains(item) {
                result.push(item.clone());
            }
        }
        return Ok(Some(result));
    }

    let all_objects = items.iter().all(|i| i.is_object());
    if let (Some(candidates), true) = (merge_key_candidates(field), all_objects) {
        let key = pick_merge_key(field, items.iter().copied()).ok_or_else(|| {
            let missing = items
                .iter()
                .find(|i| candidates.iter().all(|k| i.get(*k).is_none()))
                .map(|i| i.to_string())
                .unwrap_or_default();
            PatchError::BadRequest(format!(
                "list {field:?}: item {missing} does not contain the declared merge key {:?}",
                candidates[0]
            ))
        })?;
        let mut result = original.map(<[Value]>::to_vec).unwrap_or_default();
        for item in items {
            let id = &item[key];
            let position = result.iter().position(|o| o.get(key) == Some(id));
            match (item.get(DIRECTIVE_PATCH).and_then(Value::as_str), position) {
                (Some("delete"), _) => result.retain(|o| o.get(key) != Some(id)),
                (Some("replace"), _) => {
                    let mut fresh = item.clone();
                    if let Value::Object(m) = &mut fresh {
                        m.remove(DIRECTIVE_PATCH);
                    }
                    if let Some(fresh) = strategic_fresh(&fresh, field)? {
                        match position {
                            Some(p) => result[p] = fresh,
                            None => result.push(fresh),
                        }
                    }
                }
                (_, None) => {
                    if let Some(fresh) = strategic_fresh(item, field)? {
                        result.push(fresh);
                    }
                }
                (_, Some(p)) => {
                    let empty = Map::new();
                    let existing = result[p].as_object().unwrap_or(&empty);
                    let patch_map = item.as_object().unwrap_or(&empty);
                    match strategic_merge_map(existing, patch_map)? {
                        Some(merged) => result[p] = Value::Object(merged),
                        None => {
                            result.remove(p);
                        }
                    }
                }
            }
        }
        return Ok(Some(result));
    }

    // Every other list is atomic: the patch's list replaces the stored one.
    let mut result = Vec::with_capacity(items.len());
    for item in items {
        if let Some(item) = strategic_fresh(item, field)? {
            result.push(item);
        }
    }
    Ok(Some(result))
}

/// Honours `$setElementOrder/<field>`: items named in `order` take the slots that such items
/// already occupy, in the given order; items the order does not name keep their positions.
fn apply_element_order(items: &mut [Value], order: &[Value], field: &str) {
    let candidates = merge_key_candidates(field).unwrap_or_default();
    let identity = |v: &Value| -> Value {
        match v {
            Value::Object(m) => candidates
                .iter()
                .find_map(|k| {
                    m.get(*k)
                        .map(|id| Value::Array(vec![Value::from(*k), id.clone()]))
                })
                .unwrap_or_else(|| v.clone()),
            other => other.clone(),
        }
    };
    let ids: Vec<Value> = items.iter().map(identity).collect();
    let mut taken = vec![false; items.len()];
    let mut sources = Vec::new();
    for wanted in order.iter().map(identity) {
        if let Some(i) = (0..items.len()).find(|&i| !taken[i] && ids[i] == wanted) {
            taken[i] = true;
            sources.push(i);
        }
    }
    let mut slots = sources.clone();
    slots.sort_unstable();
    let snapshot: Vec<Value> = sources.iter().map(|&i| items[i].clone()).collect();
    for (slot, value) in slots.into_iter().zip(snapshot) {
        items[slot] = value;
    }
}

// ---------------------------------------------------------------------------------------------
// Field sets (the model behind managedFields)
// ---------------------------------------------------------------------------------------------

/// A field path as `fieldsV1` segments: `f:name`, `k:{"name":"app"}`, `v:"x"` or `i:0`.
type FieldPath = Vec<String>;
/// The set of paths one manager owns.
type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a write covers: the main resource or its `/status` subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Main resource of a kind with a status subresource: `status` is neither changed nor owned.
    #[default]
    Main,
    /// The `/status` subresource: only `status` changes and is owned; entries say `subresource: status`.
    Status,
    /// A kind without a status subresource: every field, `status` included, is owned.
    Whole,
}

impl Scope {
    fn subresource(self) -> Option<&'static str> {
        (self == Scope::Status).then_some("status")
    }
}

/// Metadata fields the server manages itself; nobody owns them.
const UNOWNED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// Whether a path can be owned by a manager writing in `scope`.
fn is_tracked(path: &[String], scope: Scope) -> bool {
    let Some(first) = path.first() else {
        return false;
    };
    match first.as_str() {
        "f:apiVersion" | "f:kind" => false,
        "f:metadata" => {
            scope != Scope::Status
                && path.get(1).is_some_and(|second| {
                    !UNOWNED_METADATA
                        .iter()
                        .any(|m| second.strip_prefix("f:") == Some(m))
                })
        }
        "f:status" => scope != Scope::Main,
        _ => scope != Scope::Status,
    }
}

fn child(path: &[String], segment: String) -> FieldPath {
    let mut p = path.to_vec();
    p.push(segment);
    p
}

fn field_segment(name: &str) -> String {
    format!("f:{name}")
}

fn key_segment(key: &str, id: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.to_string(), id.clone());
    format!("k:{}", Value::Object(m))
}

fn value_segment(v: &Value) -> String {
    format!("v:{v}")
}

/// How a list is tracked: item by item under a key, as a set of values, or as one atomic value.
enum ListKind {
    Keyed(&'static str),
    Set,
    Atomic,
}

fn list_kind(field: &str, items: &[Value]) -> ListKind {
    if SET_LISTS.contains(&field) && items.iter().all(|i| !i.is_object() && !i.is_array()) {
        return ListKind::Set;
    }
    match pick_merge_key(field, items.iter()) {
        Some(key) => ListKind::Keyed(key),
        None => ListKind::Atomic,
    }
}

/// Adds every path `value` sets (at `path`, under field name `field`) to `out`.
fn collect_fields(value: &Value, path: &[String], field: &str, out: &mut FieldSet) {
    match value {
        Value::Object(map) => {
            let mut any = false;
            for (k, v) in map.iter().filter(|(_, v)| !v.is_null()) {
                any = true;
                collect_fields(v, &child(path, field_segment(k)), k, out);
            }
            if !any && !path.is_empty() {
                out.insert(path.to_vec());
            }
        }
        Value::Array(items) => match list_kind(field, items) {
            ListKind::Keyed(key) => {
                if items.is_empty() {
                    out.insert(path.to_vec());
                }
                for item in items {
                    let item_path = child(path, key_segment(key, &item[key]));
                    collect_item(item, &item_path, out);
                }
            }
            ListKind::Set => {
                if items.is_empty() {
                    out.insert(path.to_vec());
                }
                for item in items {
                    out.insert(child(path, value_segment(item)));
                }
            }
            ListKind::Atomic => {
                out.insert(path.to_vec());
            }
        },
        _ => {
            if !path.is_empty() {
                out.insert(path.to_vec());
            }
        }
    }
}

/// A keyed list item: the item itself (`.`) plus every field it sets.
fn collect_item(item: &Value, item_path: &[String], out: &mut FieldSet) {
    out.insert(item_path.to_vec());
    if let Value::Object(map) = item {
        for (k, v) in map.iter().filter(|(_, v)| !v.is_null()) {
            collect_fields(v, &child(item_path, field_segment(k)), k, out);
        }
    }
}

/// Adds to `out` every path whose value differs between `a` and `b`, including added and
/// removed fields and list items.
fn changed_fields(
    a: Option<&Value>,
    b: Option<&Value>,
    path: &[String],
    field: &str,
    out: &mut FieldSet,
) {
    match (a, b) {
        (None, None) => {}
        (Some(x), None) | (None, Some(x)) => {
            if !x.is_null() {
                collect_fields(x, path, field, out);
            }
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (xv, yv) = (
                    x.get(k).filter(|v| !v.is_null()),
                    y.get(k).filter(|v| !v.is_null()),
                );
                changed_fields(xv, yv, &child(path, field_segment(k)), k, out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            match (list_kind(field, x), list_kind(field, y)) {
                (ListKind::Keyed(kx), ListKind::Keyed(ky)) if kx == ky => {
                    let by_key = |items: &[Value]| -> BTreeMap<String, Value> {
                        items
                            .iter()
                            .map(|i| (key_segment(kx, &i[kx]), i.clone()))
                            .collect()
                    };
                    let (xm, ym) = (by_key(x), by_key(y));
                    let segments: BTreeSet<&String> = xm.keys().chain(ym.keys()).collect();
                    for seg in segments {
                        let item_path = child(path, seg.clone());
                        match (xm.get(seg), ym.get(seg)) {
                            (Some(xi), Some(yi)) => {
                                let empty = Map::new();
                                let (xo, yo) = (
                                    xi.as_object().unwrap_or(&empty),
                                    yi.as_object().unwrap_or(&empty),
                                );
                                let keys: BTreeSet<&String> = xo.keys().chain(yo.keys()).collect();
                                for k in keys {
                                    changed_fields(
                                        xo.get(k).filter(|v| !v.is_null()),
                                        yo.get(k).filter(|v| !v.is_null()),
                                        &child(&item_path, field_segment(k)),
                                        k,
                                        out,
                                    );
                                }
                            }
                            (Some(item), None) | (None, Some(item)) => {
                                collect_item(item, &item_path, out)
                            }
                            (None, None) => {}
                        }
                    }
                }
                (ListKind::Set, ListKind::Set) => {
                    for v in x
                        .iter()
                        .filter(|v| !y.contains(v))
                        .chain(y.iter().filter(|v| !x.contains(v)))
                    {
                        out.insert(child(path, value_segment(v)));
                    }
                }
                _ => {
                    if x != y {
                        out.insert(path.to_vec());
                    }
                }
            }
        }
        (Some(x), Some(y)) => {
            if !json_equal(x, y) {
                out.insert(path.to_vec());
                // A map turning into a scalar (or back) changes everything below it too.
                for side in [x, y] {
                    if side.is_object() || side.is_array() {
                        collect_fields(side, path, field, out);
                    }
                }
            }
        }
    }
}

/// One parsed path segment.
enum Segment {
    Field(String),
    Key(Map<String, Value>),
    Value(Value),
    Index(usize),
}

fn parse_segment(seg: &str) -> Option<Segment> {
    let (kind, rest) = seg.split_at_checked(2)?;
    match kind {
        "f:" => Some(Segment::Field(rest.to_string())),
        "k:" => match serde_json::from_str(rest).ok()? {
            Value::Object(m) => Some(Segment::Key(m)),
            _ => None,
        },
        "v:" => serde_json::from_str(rest).ok().map(Segment::Value),
        "i:" => rest.parse().ok().map(Segment::Index),
        _ => None,
    }
}

fn find_item(items: &[Value], seg: &Segment) -> Option<usize> {
    match seg {
        Segment::Key(keys) => items
            .iter()
            .position(|item| keys.iter().all(|(k, v)| item.get(k) == Some(v))),
        Segment::Value(v) => items.iter().position(|item| item == v),
        Segment::Index(i) => (*i < items.len()).then_some(*i),
        Segment::Field(_) => None,
    }
}

fn value_at<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |node, seg| {
        let seg = parse_segment(seg)?;
        match (node, &seg) {
            (Value::Object(m), Segment::Field(name)) => m.get(name).filter(|v| !v.is_null()),
            (Value::Array(items), _) => items.get(find_item(items, &seg)?),
            _ => None,
        }
    })
}

fn value_at_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |node, seg| {
        let seg = parse_segment(seg)?;
        match (node, &seg) {
            (Value::Object(m), Segment::Field(name)) => m.get_mut(name),
            (Value::Array(items), _) => {
                let i = find_item(items, &seg)?;
                items.get_mut(i)
            }
            _ => None,
        }
    })
}

fn remove_at(doc: &mut Value, path: &[String]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let Some(seg) = parse_segment(last) else {
        return false;
    };
    match (value_at_mut(doc, parent), &seg) {
        (Some(Value::Object(m)), Segment::Field(name)) => m.remove(name).is_some(),
        (Some(Value::Array(items)), _) => match find_item(items, &seg) {
            Some(i) => {
                items.remove(i);
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// Renders a path the way the real server does in conflict messages, e.g.
/// `.spec.template.spec.containers[name="app"].image`.
fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        match parse_segment(seg) {
            Some(Segment::Field(name)) => {
                out.push('.');
                out.push_str(&name);
            }
            Some(Segment::Key(keys)) => {
                let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Some(Segment::Value(v)) => out.push_str(&format!("[={v}]")),
            Some(Segment::Index(i)) => out.push_str(&format!("[{i}]")),
            None => out.push_str(seg),
        }
    }
    out
}

/// Encodes a field set in the nested `FieldsV1` form.
fn encode_fields(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn to_value(node: &Node) -> Value {
        let mut m: Map<String, Value> = node
            .children
            .iter()
            .map(|(k, n)| (k.clone(), to_value(n)))
            .collect();
        if node.member && !m.is_empty() {
            m.insert(".".to_string(), Value::Object(Map::new()));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for path in set {
        let node = path.iter().fold(&mut root, |n, seg| {
            n.children.entry(seg.clone()).or_default()
        });
        node.member = true;
    }
    to_value(&root)
}

/// Decodes a `FieldsV1` tree; an empty object is a member leaf and `"."` marks a member node.
fn decode_fields(v: &Value, prefix: &[String], out: &mut FieldSet) -> Result<(), String> {
    let Value::Object(m) = v else {
        return Err(format!("expected an object at {}", display_path(prefix)));
    };
    if m.is_empty() && !prefix.is_empty() {
        out.insert(prefix.to_vec());
    }
    for (k, child_value) in m {
        if k == "." {
            out.insert(prefix.to_vec());
        } else if parse_segment(k).is_some() {
            decode_fields(child_value, &child(prefix, k.clone()), out)?;
        } else {
            return Err(format!("invalid path segment {k:?}"));
        }
    }
    Ok(())
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone)]
struct ManagerEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    fields: FieldSet,
}

impl ManagerEntry {
    /// How conflict messages name this manager: Update managers include their apiVersion.
    fn describe(&self) -> String {
        let mut s = Value::from(self.manager.as_str()).to_string();
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {}", Value::from(sub.as_str())));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::from(self.manager.as_str()));
        m.insert("operation".into(), Value::from(self.operation.as_str()));
        m.insert("apiVersion".into(), Value::from(self.api_version.as_str()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::from(t.as_str()));
        }
        m.insert("fieldsType".into(), Value::from("FieldsV1"));
        m.insert("fieldsV1".into(), encode_fields(&self.fields));
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), Value::from(s.as_str()));
        }
        Value::Object(m)
    }

    fn from_value(v: &Value) -> Result<ManagerEntry, String> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        match text("fieldsType").as_deref() {
            Some("FieldsV1") | None => {}
            Some(other) => return Err(format!("unsupported fieldsType {other:?}")),
        }
        let mut fields = FieldSet::new();
        if let Some(f) = v.get("fieldsV1") {
            decode_fields(f, &[], &mut fields)?;
        }
        Ok(ManagerEntry {
            manager: text("manager").unwrap_or_default(),
            operation: text("operation").ok_or("operation is missing")?,
            api_version: text("apiVersion").unwrap_or_default(),
            time: text("time"),
            subresource: text("subresource").filter(|s| !s.is_empty()),
            fields,
        })
    }
}

/// Reads `metadata.managedFields`. Undecodable entries reset the whole list, as the real server
/// does rather than failing every later write.
fn read_entries(obj: &Value) -> Vec<ManagerEntry> {
    let Some(Value::Array(list)) = obj.pointer("/metadata/managedFields") else {
        return Vec::new();
    };
    list.iter()
        .map(ManagerEntry::from_value)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default()
}

/// Writes entries back, dropping empty ones; no entries means no `managedFields` at all.
fn write_entries(obj: &mut Value, mut entries: Vec<ManagerEntry>) {
    entries.retain(|e| !e.fields.is_empty());
    let Some(Value::Object(meta)) = obj.get_mut("metadata") else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        let list = entries.iter().map(ManagerEntry::to_value).collect();
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Drops paths that no longer exist in `obj` from every entry.
fn forget_missing(entries: &mut [ManagerEntry], obj: &Value) {
    for e in entries {
        e.fields.retain(|p| value_at(obj, p).is_some());
    }
}

fn collect_object(obj: &Value, scope: Scope) -> FieldSet {
    let mut set = FieldSet::new();
    collect_fields(obj, &[], "", &mut set);
    set.retain(|p| is_tracked(p, scope));
    set
}

// ---------------------------------------------------------------------------------------------
// Server-side apply
// ---------------------------------------------------------------------------------------------

/// Server-side apply. `current` None = create. Returns the new object with metadata.managedFields updated.
pub fn server_side_apply(
    current: Option<&Value>,
    applied: &[u8],
    field_manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, PatchError> {
    server_side_apply_in(Scope::Main, current, applied, field_manager, force, now)
}

/// Server-side apply for a given [`Scope`] (main resource, `/status`, or a kind without status).
pub fn server_side_apply_in(
    scope: Scope,
    current: Option<&Value>,
    applied: &[u8],
    field_manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, PatchError> {
    if field_manager.is_empty() {
        return Err(PatchError::BadRequest(
            "fieldManager is required for apply requests".to_string(),
        ));
    }
    let mut config = parse_apply_body(applied)?;
    let api_version = config["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(cur) = current {
        let (ours, theirs) = (&config["metadata"]["name"], &cur["metadata"]["name"]);
        if ours != theirs {
            return Err(PatchError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                ours.as_str().unwrap_or_default(),
                theirs.as_str().unwrap_or_default()
            )));
        }
    }
    strip_nulls(&mut config);
    if let Some(Value::Object(meta)) = config.get_mut("metadata") {
        // Server-managed metadata is never taken from the request (resourceVersion is a
        // precondition the caller checks before calling us).
        for field in UNOWNED_METADATA
            .iter()
            .filter(|f| !matches!(**f, "name" | "namespace"))
        {
            meta.remove(*field);
        }
    }
    let applied_set = collect_object(&config, scope);
    let Value::Object(config_map) = &mut config else {
        unreachable!("parse_apply_body only returns objects")
    };
    match scope {
        Scope::Main => {
            config_map.remove("status");
        }
        Scope::Status => config_map.retain(|k, _| k == "status"),
        Scope::Whole => {}
    }

    let Some(current) = current else {
        if scope == Scope::Status {
            return Err(PatchError::BadRequest(
                "cannot create an object through its status subresource".to_string(),
            ));
        }
        let mut created = config;
        let entry = ManagerEntry {
            manager: field_manager.to_string(),
            operation: "Apply".to_string(),
            api_version,
            time: Some(now.to_string()),
            subresource: None,
            fields: applied_set,
        };
        write_entries(&mut created, vec![entry]);
        return Ok(created);
    };

    let mut entries = read_entries(current);
    let is_own = |e: &ManagerEntry| {
        e.manager == field_manager
            && e.operation == "Apply"
            && e.subresource.as_deref() == scope.subresource()
    };
    let mut merged = apply_merge(current, &config, "");
    let mut changed = FieldSet::new();
    changed_fields(Some(current), Some(&merged), &[], "", &mut changed);
    changed.retain(|p| is_tracked(p, scope));

    let conflicts: Vec<(String, Vec<FieldPath>)> = entries
        .iter()
        .filter(|e| !is_own(e))
        .map(|e| {
            (
                e.describe(),
                e.fields.intersection(&changed).cloned().collect::<Vec<_>>(),
            )
        })
        .filter(|(_, paths)| !paths.is_empty())
        .collect();
    if !conflicts.is_empty() {
        if !force {
            return Err(PatchError::Conflict {
                message: conflict_message(conflicts),
            });
        }
        for e in entries.iter_mut().filter(|e| !is_own(e)) {
            e.fields.retain(|p| !changed.contains(p));
        }
    }

    // Fields this manager applied before but no longer applies go away unless someone else
    // still owns them (or something below them).
    let previous = entries
        .iter()
        .find(|e| is_own(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    // Sorted order visits a list item before its fields, so whole items go while their keys
    // still identify them.
    let dropped: Vec<&FieldPath> = previous.difference(&applied_set).collect();
    let others: Vec<&FieldSet> = entries
        .iter()
        .filter(|e| !is_own(e))
        .map(|e| &e.fields)
        .collect();
    let owned_at_or_below =
        |p: &[String]| others.iter().any(|s| s.iter().any(|q| q.starts_with(p)));
    let owned_exactly =
        |p: &[String]| applied_set.contains(p) || others.iter().any(|s| s.contains(p));
    // A field that was applied empty before (`annotations: {}`) and now has children is still applied.
    let applied_below = |p: &[String]| applied_set.iter().any(|q| q.starts_with(p));
    for path in dropped {
        if owned_at_or_below(path) || applied_below(path) || is_key_of_parent_item(path) {
            continue;
        }
        if remove_at(&mut merged, path) {
            prune_empty_parents(&mut merged, path, &owned_exactly);
        }
    }

    match entries.iter_mut().find(|e| is_own(e)) {
        Some(own) => {
            own.fields = applied_set;
            own.time = Some(now.to_string());
            own.api_version = api_version;
        }
        None => entries.push(ManagerEntry {
            manager: field_manager.to_string(),
            operation: "Apply".to_string(),
            api_version,
            time: Some(now.to_string()),
            subresource: scope.subresource().map(str::to_string),
            fields: applied_set,
        }),
    }
    forget_missing(&mut entries, &merged);
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// Whether `path` is a key field of the list item it sits in: an item that stays keeps its key.
fn is_key_of_parent_item(path: &[String]) -> bool {
    let [.., item, last] = path else {
        return false;
    };
    match (parse_segment(item), parse_segment(last)) {
        (Some(Segment::Key(keys)), Some(Segment::Field(name))) => keys.contains_key(&name),
        _ => false,
    }
}

/// Parses an apply body (JSON, else YAML) and checks the fields the real server requires.
fn parse_apply_body(body: &[u8]) -> Result<Value, PatchError> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => serde_yaml_ng::from_slice(body)
            .map_err(|e| PatchError::BadRequest(format!("error decoding YAML: {e}")))?,
    };
    if !value.is_object() {
        return Err(PatchError::BadRequest(
            "apply patch body must be an object".to_string(),
        ));
    }
    for field in ["apiVersion", "kind"] {
        if value
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(PatchError::BadRequest(format!(
                "Object '{}' is missing in the apply patch body",
                if field == "kind" { "Kind" } else { field }
            )));
        }
    }
    if value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(PatchError::Invalid(
            "metadata.name: Required value: name is required in an apply patch body".to_string(),
        ));
    }
    Ok(value)
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Merges an applied configuration into the live object: maps recurse, keyed lists merge item by
/// item, set lists take the union, and everything else is replaced by the applied value.
fn apply_merge(live: &Value, config: &Value, field: &str) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                let merged = match l.get(k) {
                    Some(lv) => apply_merge(lv, cv, k),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match (list_kind(field, l), list_kind(field, c)) {
            (ListKind::Keyed(kl), ListKind::Keyed(kc)) if kl == kc => {
                let mut out: Vec<Value> = l
                    .iter()
                    .map(
                        |item| match c.iter().find(|ci| ci.get(kc) == item.get(kc)) {
                            Some(ci) => apply_merge(item, ci, field),
                            None => item.clone(),
                        },
                    )
                    .collect();
                for ci in c {
                    if !l.iter().any(|item| item.get(kc) == ci.get(kc)) {
                        out.push(ci.clone());
                    }
                }
                Value::Array(out)
            }
            (ListKind::Set, ListKind::Set) => {
                let mut out = l.clone();
                out.extend(c.iter().filter(|v| !l.contains(v)).cloned());
                Value::Array(out)
            }
            _ => config.clone(),
        },
        _ => config.clone(),
    }
}

/// After a removal, drops map fields left empty that nobody owns (Go omits empty maps anyway).
fn prune_empty_parents(doc: &mut Value, removed: &[String], owned: &dyn Fn(&[String]) -> bool) {
    for len in (1..removed.len()).rev() {
        let parent = &removed[..len];
        let is_field = parent.last().is_some_and(|s| s.starts_with("f:"));
        if !is_field || parent == ["f:metadata"] || owned(parent) {
            return;
        }
        let empty = match value_at(doc, parent) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if !empty || !remove_at(doc, parent) {
            return;
        }
    }
}

/// Builds the real server's conflict message from (manager description, paths) pairs.
fn conflict_message(mut conflicts: Vec<(String, Vec<FieldPath>)>) -> String {
    let total: usize = conflicts.iter().map(|(_, p)| p.len()).sum();
    let plural = if total == 1 { "" } else { "s" };
    let body = if total == 1 {
        let (manager, paths) = &conflicts[0];
        format!("conflict with {manager}: {}", display_path(&paths[0]))
    } else {
        conflicts.sort();
        let mut lines = Vec::new();
        for (manager, paths) in &conflicts {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(paths.iter().map(|p| format!("- {}", display_path(p))));
        }
        lines.join("\n")
    };
    format!("Apply failed with {total} conflict{plural}: {body}")
}

// ---------------------------------------------------------------------------------------------
// Update managers
// ---------------------------------------------------------------------------------------------

/// Record an Update-operation manager entry for non-apply writes (create/update/patch), for managedFields.
pub fn record_update_manager(old: Option<&Value>, new: &mut Value, field_manager: &str, now: &str) {
    record_update_manager_in(Scope::Main, old, new, field_manager, now);
}

/// [`record_update_manager`] for a given [`Scope`]. The manager gains every field whose value the
/// write changed or added; other managers lose those fields. A request whose managedFields is
/// `[{}]` clears managedFields altogether; an absent or empty list keeps the stored ones.
pub fn record_update_manager_in(
    scope: Scope,
    old: Option<&Value>,
    new: &mut Value,
    field_manager: &str,
    now: &str,
) {
    let requested = new.pointer("/metadata/managedFields").cloned();
    if let Some(Value::Array(list)) = &requested
        && list.len() == 1
        && list[0].as_object().is_some_and(Map::is_empty)
    {
        if let Some(Value::Object(meta)) = new.get_mut("metadata") {
            meta.remove("managedFields");
        }
        return;
    }
    let mut entries = match &requested {
        Some(Value::Array(list)) if !list.is_empty() => read_entries(new),
        _ => old.map(read_entries).unwrap_or_default(),
    };
    let api_version = new["apiVersion"].as_str().unwrap_or_default().to_string();
    let changed = match old {
        None => collect_object(new, scope),
        Some(old) => {
            let mut set = FieldSet::new();
            changed_fields(Some(old), Some(new), &[], "", &mut set);
            set.retain(|p| is_tracked(p, scope));
            set
        }
    };
    let subresource = scope.subresource();
    let is_own = |e: &ManagerEntry| {
        e.manager == field_manager
            && e.operation == "Update"
            && e.api_version == api_version
            && e.subresource.as_deref() == subresource
    };
    for e in entries.iter_mut().filter(|e| !is_own(e)) {
        e.fields.retain(|p| !changed.contains(p));
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| is_own(e)) {
            Some(own) => {
                own.fields.extend(changed);
                own.time = Some(now.to_string());
            }
            None => entries.push(ManagerEntry {
                manager: field_manager.to_string(),
                operation: "Update".to_string(),
                api_version,
                time: Some(now.to_string()),
                subresource: subresource.map(str::to_string),
                fields: changed,
            }),
        }
    }
    forget_missing(&mut entries, new);
    write_entries(new, entries);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-01-02T03:04:05Z";
    const LATER: &str = "2026-01-02T04:00:00Z";

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "revisionHistoryLimit": 10,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "app:1",
                                "args": ["--a"],
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                "volumeMounts": [
                                    {"name": "cfg", "mountPath": "/etc/cfg"},
                                    {"name": "data", "mountPath": "/data"}
                                ]
                            },
                            {"name": "sidecar", "image": "proxy:1"}
                        ],
                        "volumes": [
                            {"name": "cfg", "configMap": {"name": "cfg"}},
                            {"name": "data", "emptyDir": {}}
                        ],
                        "tolerations": [{"key": "a", "operator": "Exists"}]
                    }
                }
            }
        })
    }

    fn patched(pt: PatchType, current: &Value, patch: Value) -> Value {
        apply_patch(pt, current, patch.to_string().as_bytes()).expect("patch applies")
    }

    fn strategic(current: &Value, patch: Value) -> Value {
        patched(PatchType::Strategic, current, patch)
    }

    fn pod_spec(obj: &Value) -> &Value {
        &obj["spec"]["template"]["spec"]
    }

    fn ssa(
        current: Option<&Value>,
        config: &Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, PatchError> {
        server_side_apply(current, config.to_string().as_bytes(), manager, force, NOW)
    }

    fn managers(obj: &Value) -> Vec<(String, String)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        (
                            e["manager"].as_str().unwrap().to_string(),
                            e["operation"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn fields_of<'a>(obj: &'a Value, manager: &str) -> &'a Value {
        obj["metadata"]["managedFields"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["manager"] == manager))
            .map(|e| &e["fieldsV1"])
            .unwrap_or(&Value::Null)
    }

    #[test]
    fn content_type_ignores_parameters_and_case() {
        let cases = [
            (
                "application/merge-patch+json; charset=utf-8",
                Some(PatchType::Merge),
            ),
            ("Application/JSON-Patch+JSON", Some(PatchType::Json)),
            (
                "application/strategic-merge-patch+json",
                Some(PatchType::Strategic),
            ),
            (
                " application/apply-patch+yaml ;charset=UTF-8",
                Some(PatchType::Apply),
            ),
            ("application/json", None),
        ];
        for (ct, want) in cases {
            assert_eq!(PatchType::from_content_type(ct), want, "{ct}");
        }
        let err = PatchError::unsupported_media_type("application/json", false);
        assert_eq!(err.status_code(), 415);
        assert!(!err.to_string().contains("strategic"), "{err}");
    }

    #[test]
    fn merge_patch_null_deletes_and_lists_replace() {
        let out = patched(
            PatchType::Merge,
            &deployment(),
            json!({"metadata": {"labels": {"app": null, "tier": "fe"}},
                   "spec": {"template": {"spec": {"containers": [{"name": "only"}]}}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"tier": "fe"}));
        assert_eq!(pod_spec(&out)["containers"], json!([{"name": "only"}]));
        assert_eq!(out["spec"]["replicas"], 2);
        let err = apply_patch(PatchType::Merge, &deployment(), b"{not json").unwrap_err();
        assert!(matches!(err, PatchError::BadRequest(_)), "{err:?}");
    }

    #[test]
    fn json_patch_add_replace_remove() {
        let out = patched(
            PatchType::Json,
            &deployment(),
            json!([
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/example.com~1restarted", "value": "now"},
                {"op": "replace", "path": "/spec/replicas", "value": 5},
                {"op": "remove", "path": "/spec/template/spec/containers/1"},
                {"op": "add", "path": "/spec/template/spec/tolerations/-", "value": {"key": "b"}},
                {"op": "test", "path": "/spec/replicas", "value": 5.0},
                {"op": "copy", "from": "/metadata/labels", "path": "/spec/template/metadata/annotations"},
                {"op": "move", "from": "/spec/revisionHistoryLimit", "path": "/spec/minReadySeconds"}
            ]),
        );
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"example.com/restarted": "now"})
        );
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(pod_spec(&out)["containers"].as_array().unwrap().len(), 1);
        assert_eq!(pod_spec(&out)["tolerations"][1], json!({"key": "b"}));
        assert_eq!(
            out["spec"]["template"]["metadata"]["annotations"],
            json!({"app": "web"})
        );
        assert_eq!(out["spec"]["minReadySeconds"], 10);
        assert!(out["spec"].get("revisionHistoryLimit").is_none());
    }

    #[test]
    fn json_patch_failures_are_invalid_with_the_failing_path() {
        let cases = [
            (
                json!([{"op": "replace", "path": "/spec/replicas", "value": 9},
                       {"op": "test", "path": "/spec/replicas", "value": 3}]),
                "testing value /spec/replicas failed: test failed",
            ),
            (
                json!([{"op": "replace", "path": "/spec/paused", "value": true}]),
                "replace operation does not apply: doc is missing key: /spec/paused: missing value",
            ),
            (
                json!([{"op": "remove", "path": "/metadata/annotations"}]),
                "remove operation does not apply: doc is missing path: \"/metadata/annotations\": missing value",
            ),
            (
                json!([{"op": "add", "path": "/spec/template/spec/containers/7", "value": {}}]),
                "add operation does not apply: doc is missing path: \"/spec/template/spec/containers/7\": missing value",
            ),
            (
                json!([{"op": "frobnicate", "path": "/x"}]),
                "Unexpected kind: frobnicate",
            ),
        ];
        for (patch, message) in cases {
            let err = apply_patch(PatchType::Json, &deployment(), patch.to_string().as_bytes())
                .unwrap_err();
            assert!(matches!(err, PatchError::Invalid(_)), "{err:?}");
            assert_eq!(err.to_string(), message);
            assert_eq!(err.status_code(), 422);
        }
        for body in [&b"{\"op\":\"add\"}"[..], b"[1]", b"[{"] {
            let err = apply_patch(PatchType::Json, &deployment(), body).unwrap_err();
            assert!(matches!(err, PatchError::BadRequest(_)), "{err:?}");
        }
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let out = strategic(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}}),
        );
        let containers = &pod_spec(&out)["containers"];
        assert_eq!(containers[0]["image"], "app:2");
        assert_eq!(containers[0]["args"], json!(["--a"]));
        assert_eq!(containers[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(
            containers[1],
            json!({"name": "sidecar", "image": "proxy:1"})
        );
    }

    #[test]
    fn strategic_merges_env_volumes_and_mounts_by_key() {
        let out = strategic(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "containers": [{
                    "name": "app",
                    "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true},
                                     {"name": "extra", "mountPath": "/extra"}]
                }],
                "volumes": [{"name": "extra", "secret": {"secretName": "s"}},
                            {"name": "cfg", "configMap": {"optional": true}}]
            }}}}),
        );
        let app = &pod_spec(&out)["containers"][0];
        assert_eq!(
            app["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(
            app["volumeMounts"],
            json!([{"name": "cfg", "mountPath": "/etc/cfg"},
                   {"name": "data", "mountPath": "/data", "readOnly": true},
                   {"name": "extra", "mountPath": "/extra"}])
        );
        assert_eq!(
            pod_spec(&out)["volumes"],
            json!([{"name": "cfg", "configMap": {"name": "cfg", "optional": true}},
                   {"name": "data", "emptyDir": {}},
                   {"name": "extra", "secret": {"secretName": "s"}}])
        );
    }

    #[test]
    fn strategic_patch_delete_removes_list_items() {
        let out = strategic(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "$patch": "delete"},
                {"name": "app", "env": [{"name": "A", "$patch": "delete"}]}
            ]}}}}),
        );
        let containers = pod_spec(&out)["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["env"], json!([{"name": "B", "value": "2"}]));
    }

    #[test]
    fn strategic_rollout_restart_adds_template_annotation() {
        let out = strategic(
            &deployment(),
            json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-01-02T03:04:05Z"}}}}}),
        );
        let meta = &out["spec"]["template"]["metadata"];
        assert_eq!(
            meta["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(meta["labels"], json!({"app": "web"}));
        assert_eq!(pod_spec(&out), pod_spec(&deployment()));
    }

    #[test]
    fn strategic_replaces_lists_without_merge_keys() {
        let out = strategic(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "tolerations": [{"key": "b", "operator": "Exists"}],
                "containers": [{"name": "app", "args": ["--b", "--c"]}]
            }}}}),
        );
        assert_eq!(
            pod_spec(&out)["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
        assert_eq!(
            pod_spec(&out)["containers"][0]["args"],
            json!(["--b", "--c"])
        );
    }

    #[test]
    fn strategic_directives_order_replace_retain_and_primitive_delete() {
        let mut current = deployment();
        current["metadata"]["finalizers"] = json!(["a", "b"]);
        let out = strategic(
            &current,
            json!({
                "metadata": {"finalizers": ["c", "a"]},
                "spec": {
                    "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                    "template": {
                        "metadata": {"labels": {"$patch": "replace", "tier": "fe"}},
                        "spec": {
                            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                            "containers": [{"name": "app", "image": "app:3"}]
                        }
                    }
                }
            }),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            out["spec"]["template"]["metadata"]["labels"],
            json!({"tier": "fe"})
        );
        let names: Vec<&Value> = pod_spec(&out)["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, [&json!("sidecar"), &json!("app")]);
        assert_eq!(pod_spec(&out)["containers"][1]["image"], "app:3");

        let out = strategic(
            &out,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "c"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn strategic_rejects_items_without_merge_key_and_unknown_directives() {
        for patch in [
            json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
            json!({"spec": {"$patch": "explode"}}),
            json!({"spec": {"$frob": 1}}),
        ] {
            let err = apply_patch(
                PatchType::Strategic,
                &deployment(),
                patch.to_string().as_bytes(),
            )
            .unwrap_err();
            assert!(matches!(err, PatchError::BadRequest(_)), "{err:?}");
        }
    }

    fn applied_deployment(replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}
            }
        })
    }

    #[test]
    fn ssa_create_from_yaml_records_apply_entry() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  resourceVersion: \"7\"\n  labels:\n    app: web\ndata:\n  a: \"1\"\n";
        let out = server_side_apply(None, yaml.as_bytes(), "kubectl", false, NOW).unwrap();
        assert_eq!(out["data"], json!({"a": "1"}));
        assert!(out["metadata"].get("resourceVersion").is_none());
        assert_eq!(
            out["metadata"]["managedFields"],
            json!([{
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": "v1",
                "time": NOW,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}
            }])
        );
    }

    #[test]
    fn ssa_keyed_lists_use_key_segments_and_reapply_is_stable() {
        let created = ssa(None, &applied_deployment(2), "kubectl", false).unwrap();
        assert_eq!(
            fields_of(&created, "kubectl"),
            &json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:template": {"f:spec": {"f:containers": {
                        "k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}
                    }}}
                }
            })
        );
        let again = ssa(Some(&created), &applied_deployment(2), "kubectl", false).unwrap();
        assert_eq!(again, created);
    }

    #[test]
    fn ssa_conflicts_name_the_owner_and_paths() {
        let mut live = deployment();
        record_update_manager(None, &mut live, "kubectl-client-side-apply", NOW);
        let err = ssa(Some(&live), &applied_deployment(5), "kubectl", false).unwrap_err();
        assert!(matches!(err, PatchError::Conflict { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );

        let mut config = applied_deployment(5);
        config["spec"]["revisionHistoryLimit"] = json!(3);
        config["spec"]["template"]["spec"]["containers"][0]["image"] = json!("app:2");
        let err = ssa(Some(&live), &config, "kubectl", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 3 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n\
             - .spec.replicas\n\
             - .spec.revisionHistoryLimit\n\
             - .spec.template.spec.containers[name=\"app\"].image"
        );

        // Apply managers are named without an apiVersion.
        let helm = ssa(None, &applied_deployment(2), "helm", false).unwrap();
        let err = ssa(Some(&helm), &applied_deployment(4), "argocd", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"helm\": .spec.replicas"
        );
    }

    #[test]
    fn ssa_force_takes_ownership() {
        let mut live = deployment();
        record_update_manager(None, &mut live, "kubectl-client-side-apply", NOW);
        let out = ssa(Some(&live), &applied_deployment(5), "kubectl", true).unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(
            fields_of(&out, "kubectl")["f:spec"]["f:replicas"],
            json!({})
        );
        let old_owner = fields_of(&out, "kubectl-client-side-apply");
        assert!(
            old_owner["f:spec"].get("f:replicas").is_none(),
            "{old_owner}"
        );
        // Fields applied with the same value stay shared; the rest stay with the old owner.
        assert_eq!(old_owner["f:metadata"]["f:labels"]["f:app"], json!({}));
        assert_eq!(old_owner["f:spec"]["f:revisionHistoryLimit"], json!({}));
        // Having taken ownership, the next non-forced apply by the new owner goes through.
        assert!(ssa(Some(&out), &applied_deployment(6), "kubectl", false).is_ok());
    }

    #[test]
    fn ssa_dropping_a_field_removes_it() {
        let mut config = applied_deployment(2);
        config["metadata"]["annotations"] = json!({"note": "x"});
        config["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar", "image": "proxy:1", "args": ["-v"]}));
        let live = ssa(None, &config, "kubectl", false).unwrap();
        assert_eq!(live["metadata"]["annotations"], json!({"note": "x"}));

        let out = ssa(Some(&live), &applied_deployment(2), "kubectl", false).unwrap();
        assert!(
            out["metadata"].get("annotations").is_none(),
            "{}",
            out["metadata"]
        );
        assert_eq!(
            pod_spec(&out)["containers"],
            json!([{"name": "app", "image": "app:1"}])
        );
        assert_eq!(
            managers(&out),
            [("kubectl".to_string(), "Apply".to_string())]
        );
    }

    #[test]
    fn ssa_shared_field_survives_when_one_owner_drops_it() {
        let live = ssa(None, &applied_deployment(2), "team-a", false).unwrap();
        let live = ssa(Some(&live), &applied_deployment(2), "team-b", false).unwrap();
        assert_eq!(managers(&live).len(), 2);

        let config =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        let out = ssa(Some(&live), &config, "team-b", false).unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(pod_spec(&out)["containers"][0]["image"], "app:1");
        // team-b owns nothing any more, so its entry is gone.
        assert_eq!(
            managers(&out),
            [("team-a".to_string(), "Apply".to_string())]
        );
    }

    #[test]
    fn ssa_keeps_fields_of_other_writers_and_ignores_status() {
        let mut live = ssa(None, &applied_deployment(2), "kubectl", false).unwrap();
        let before = live.clone();
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "injected", "image": "mesh:1"}));
        live["status"] = json!({"readyReplicas": 2});
        record_update_manager(Some(&before), &mut live, "injector", NOW);

        let mut config = applied_deployment(2);
        config["status"] = json!({"readyReplicas": 99});
        let out = ssa(Some(&live), &config, "kubectl", false).unwrap();
        assert_eq!(pod_spec(&out)["containers"][1]["name"], "injected");
        assert_eq!(out["status"], json!({"readyReplicas": 2}));
        assert!(fields_of(&out, "kubectl").get("f:status").is_none());
    }

    #[test]
    fn ssa_rejects_bodies_without_identity() {
        let no_name = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
        assert!(matches!(
            ssa(None, &no_name, "m", false),
            Err(PatchError::Invalid(_))
        ));
        let no_kind = json!({"apiVersion": "v1", "metadata": {"name": "x"}});
        assert!(matches!(
            ssa(None, &no_kind, "m", false),
            Err(PatchError::BadRequest(_))
        ));
        let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert!(matches!(
            ssa(None, &ok, "", false),
            Err(PatchError::BadRequest(_))
        ));
        let live = ssa(None, &ok, "m", false).unwrap();
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y"}});
        assert!(matches!(
            ssa(Some(&live), &other, "m", false),
            Err(PatchError::BadRequest(_))
        ));
        assert!(matches!(
            server_side_apply(None, b"a: [", "m", false, NOW),
            Err(PatchError::BadRequest(_))
        ));
    }

    #[test]
    fn managed_fields_round_trip() {
        let fields = json!({
            "f:metadata": {"f:finalizers": {".": {}, "v:\"example.com/x\"": {}}, "f:labels": {"f:app": {}}},
            "f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"app\"}": {".": {}, "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:value": {}}}, "f:image": {}}
            }}}}
        });
        let mut set = FieldSet::new();
        decode_fields(&fields, &[], &mut set).unwrap();
        assert!(set.contains(&vec![
            "f:spec".to_string(),
            "f:template".to_string(),
            "f:spec".to_string(),
            "f:containers".to_string(),
            "k:{\"name\":\"app\"}".to_string(),
        ]));
        assert_eq!(encode_fields(&set), fields);

        let entry = json!({"manager": "m", "operation": "Update", "apiVersion": "apps/v1", "time": NOW,
                           "fieldsType": "FieldsV1", "fieldsV1": fields, "subresource": "status"});
        let mut obj = json!({"metadata": {"managedFields": [entry.clone()]}});
        let entries = read_entries(&obj);
        write_entries(&mut obj, entries);
        assert_eq!(obj["metadata"]["managedFields"], json!([entry]));
        assert_eq!(
            display_path(&[
                "f:metadata".into(),
                "f:finalizers".into(),
                "v:\"example.com/x\"".into()
            ]),
            ".metadata.finalizers[=\"example.com/x\"]"
        );
    }

    #[test]
    fn record_update_on_create_owns_every_set_field() {
        let mut obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default", "uid": "u", "resourceVersion": "1"},
            "data": {"a": "1"}
        });
        record_update_manager(None, &mut obj, "kube-rs", NOW);
        assert_eq!(
            obj["metadata"]["managedFields"],
            json!([{"manager": "kube-rs", "operation": "Update", "apiVersion": "v1", "time": NOW,
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}])
        );
    }

    #[test]
    fn record_update_moves_ownership_to_the_writer() {
        let live = ssa(None, &applied_deployment(2), "kubectl", false).unwrap();
        let mut new = strategic(
            &live,
            json!({"spec": {"replicas": 3, "template": {"metadata": {"annotations": {"hashroll/hash": "abc"}}}}}),
        );
        record_update_manager(Some(&live), &mut new, "hashroll", LATER);
        assert_eq!(
            managers(&new),
            [
                ("kubectl".to_string(), "Apply".to_string()),
                ("hashroll".to_string(), "Update".to_string())
            ]
        );
        assert_eq!(
            fields_of(&new, "hashroll"),
            &json!({"f:spec": {"f:replicas": {}, "f:template": {"f:metadata": {"f:annotations": {"f:hashroll/hash": {}}}}}})
        );
        assert!(
            fields_of(&new, "kubectl")["f:spec"]
                .get("f:replicas")
                .is_none()
        );
        assert_eq!(new["metadata"]["managedFields"][1]["time"], LATER);

        // kubectl now conflicts with hashroll over the replicas it took.
        let err = ssa(Some(&new), &applied_deployment(2), "kubectl", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"hashroll\" using apps/v1: .spec.replicas"
        );

        // A second write by the same manager extends its entry; a request with `[{}]` clears all.
        let mut newer = new.clone();
        newer["data"] = json!({"x": "y"});
        record_update_manager(Some(&new), &mut newer, "hashroll", LATER);
        assert_eq!(managers(&newer).len(), 2);
        assert_eq!(fields_of(&newer, "hashroll")["f:data"], json!({"f:x": {}}));
        let mut cleared = newer.clone();
        cleared["metadata"]["managedFields"] = json!([{}]);
        record_update_manager(Some(&newer), &mut cleared, "hashroll", LATER);
        assert!(cleared["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn ssa_empty_map_then_children_keeps_the_children() {
        let first = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"t","annotations":{},"labels":{}},"stringData":{"a":"1"}}"#;
        let created = server_side_apply(None, first, "kubectl", false, "t0").unwrap();
        let second = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"t","annotations":{"x":"y"},"labels":{"l":"v"}},"stringData":{"a":"1"}}"#;
        let out = server_side_apply(Some(&created), second, "kubectl", false, "t1").unwrap();
        assert_eq!(out["metadata"]["annotations"]["x"], "y");
        assert_eq!(out["metadata"]["labels"]["l"], "v");
    }
}
