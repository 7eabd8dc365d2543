//! Field sets, the model behind `metadata.managedFields`: which manager owns which fields, and
//! the `Update` entries that non-apply writes record.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::strategic::{SET_LISTS, pick_merge_key};

/// A field path as `fieldsV1` segments: `f:name`, `k:{"name":"app"}`, `v:"x"` or `i:0`.
pub(super) type FieldPath = Vec<String>;
/// The set of paths one manager owns.
pub(super) type FieldSet = BTreeSet<FieldPath>;

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
    pub(super) fn subresource(self) -> Option<&'static str> {
        (self == Scope::Status).then_some("status")
    }
}

/// Metadata fields the server manages itself; nobody owns them.
pub(super) const UNOWNED_METADATA: &[&str] = &[
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
pub(super) fn is_tracked(path: &[String], scope: Scope) -> bool {
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
pub(super) enum ListKind {
    Keyed(&'static str),
    Set,
    Atomic,
}

pub(super) fn list_kind(field: &str, items: &[Value]) -> ListKind {
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
pub(super) fn changed_fields(
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

/// JSON equality where numbers compare by value (`1` equals `1.0`), as Go's decoder sees them.
pub(super) fn json_equal(a: &Value, b: &Value) -> bool {
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

/// One parsed path segment.
pub(super) enum Segment {
    Field(String),
    Key(Map<String, Value>),
    Value(Value),
    Index(usize),
}

pub(super) fn parse_segment(seg: &str) -> Option<Segment> {
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

pub(super) fn value_at<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
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

pub(super) fn remove_at(doc: &mut Value, path: &[String]) -> bool {
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
pub(super) fn display_path(path: &[String]) -> String {
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
pub(super) struct ManagerEntry {
    pub(super) manager: String,
    pub(super) operation: String,
    pub(super) api_version: String,
    pub(super) time: Option<String>,
    pub(super) subresource: Option<String>,
    pub(super) fields: FieldSet,
}

impl ManagerEntry {
    /// How conflict messages name this manager: Update managers include their apiVersion.
    pub(super) fn describe(&self) -> String {
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
pub(super) fn read_entries(obj: &Value) -> Vec<ManagerEntry> {
    let Some(Value::Array(list)) = obj.pointer("/metadata/managedFields") else {
        return Vec::new();
    };
    list.iter()
        .map(ManagerEntry::from_value)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default()
}

/// Writes entries back, dropping empty ones; no entries means no `managedFields` at all.
pub(super) fn write_entries(obj: &mut Value, mut entries: Vec<ManagerEntry>) {
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
pub(super) fn forget_missing(entries: &mut [ManagerEntry], obj: &Value) {
    for e in entries {
        e.fields.retain(|p| value_at(obj, p).is_some());
    }
}

pub(super) fn collect_object(obj: &Value, scope: Scope) -> FieldSet {
    let mut set = FieldSet::new();
    collect_fields(obj, &[], "", &mut set);
    set.retain(|p| is_tracked(p, scope));
    set
}

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
    use super::super::fixtures::*;
    use super::*;
    use serde_json::json;

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
}
