//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) for the kinds
//! kubectl's typed clients send that way (`kubectl create secret|configmap|namespace|serviceaccount|role|
//! clusterrole|rolebinding|clusterrolebinding`),
//! into the same JSON the rest of the server works with. Other kinds are refused with a clear error.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The four-byte prefix of every Kubernetes protobuf message.
const MAGIC: &[u8] = b"k8s\0";

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.b.split_first().ok_or("truncated varint")?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.b.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                if self.b.len() < n {
                    return Err("truncated fixed field".into());
                }
                self.b = &self.b[n..];
                Wire::Fixed
            }
            2 => {
                let n = self.varint()? as usize;
                if self.b.len() < n {
                    return Err("truncated length-delimited field".into());
                }
                let (v, rest) = self.b.split_at(n);
                self.b = rest;
                Wire::Bytes(v)
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn fields(b: &[u8]) -> impl Iterator<Item = Result<(u64, Wire<'_>), String>> {
    let mut r = Reader { b };
    std::iter::from_fn(move || r.next().transpose())
}

fn string(w: &Wire) -> Result<String, String> {
    match w {
        Wire::Bytes(b) => {
            String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in string field".to_string())
        }
        _ => Err("expected a string field".into()),
    }
}

fn bytes<'a>(w: &Wire<'a>) -> Result<&'a [u8], String> {
    match w {
        Wire::Bytes(b) => Ok(b),
        _ => Err("expected a length-delimited field".into()),
    }
}

fn varint(w: &Wire) -> Result<u64, String> {
    match w {
        Wire::Varint(v) => Ok(*v),
        _ => Err("expected a varint field".into()),
    }
}

/// A map entry (key = 1, value = 2); `as_b64` encodes byte values as base64 like JSON does.
fn map_entry(b: &[u8], as_b64: bool) -> Result<(String, Value), String> {
    let (mut k, mut v) = (String::new(), json!(""));
    for f in fields(b) {
        let (n, w) = f?;
        match n {
            1 => k = string(&w)?,
            2 if as_b64 => v = json!(base64::engine::general_purpose::STANDARD.encode(bytes(&w)?)),
            2 => v = json!(string(&w)?),
            _ => {}
        }
    }
    Ok((k, v))
}

fn insert_entry(
    obj: &mut Map<String, Value>,
    field: &str,
    b: &[u8],
    as_b64: bool,
) -> Result<(), String> {
    let (k, v) = map_entry(b, as_b64)?;
    let m = obj.entry(field).or_insert_with(|| json!({}));
    m[k] = v;
    Ok(())
}

fn push(obj: &mut Map<String, Value>, field: &str, v: Value) {
    if let Value::Array(a) = obj.entry(field).or_insert_with(|| json!([])) {
        a.push(v);
    }
}

fn owner_reference(b: &[u8]) -> Result<Value, String> {
    let mut o = Map::new();
    for f in fields(b) {
        let (n, w) = f?;
        match n {
            1 => o.insert("kind".into(), json!(string(&w)?)),
            3 => o.insert("name".into(), json!(string(&w)?)),
            4 => o.insert("uid".into(), json!(string(&w)?)),
            5 => o.insert("apiVersion".into(), json!(string(&w)?)),
            6 => o.insert("controller".into(), json!(varint(&w)? != 0)),
            7 => o.insert("blockOwnerDeletion".into(), json!(varint(&w)? != 0)),
            _ => None,
        };
    }
    Ok(Value::Object(o))
}

/// ObjectMeta: the client-settable fields (server-owned ones are reset on write anyway).
fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    for f in fields(b) {
        let (n, w) = f?;
        match n {
            // Go's encoder writes empty strings; JSON would omit them.
            1 | 2 | 3 | 5 | 6 => {
                let s = string(&w)?;
                if !s.is_empty() {
                    let name = [
                        "name",
                        "generateName",
                        "namespace",
                        "",
                        "uid",
                        "resourceVersion",
                    ][n as usize - 1];
                    m.insert(name.into(), json!(s));
                }
            }
            11 => insert_entry(&mut m, "labels", bytes(&w)?, false)?,
            12 => insert_entry(&mut m, "annotations", bytes(&w)?, false)?,
            13 => push(&mut m, "ownerReferences", owner_reference(bytes(&w)?)?),
            14 => push(&mut m, "finalizers", json!(string(&w)?)),
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn strings_message(b: &[u8], names: &[(u64, &str)]) -> Result<Value, String> {
    let mut o = Map::new();
    for f in fields(b) {
        let (n, w) = f?;
        if let Some((_, name)) = names.iter().find(|(k, _)| *k == n) {
            let s = string(&w)?;
            if !s.is_empty() {
                o.insert((*name).into(), json!(s));
            }
        }
    }
    Ok(Value::Object(o))
}

/// rbac/v1 PolicyRule: five repeated string fields.
fn policy_rule(b: &[u8]) -> Result<Value, String> {
    const NAMES: [&str; 5] = [
        "verbs",
        "apiGroups",
        "resources",
        "resourceNames",
        "nonResourceURLs",
    ];
    let mut o = Map::new();
    for f in fields(b) {
        let (n, w) = f?;
        if (1..=5).contains(&n) {
            push(&mut o, NAMES[n as usize - 1], json!(string(&w)?));
        }
    }
    Ok(Value::Object(o))
}

/// True for a field Go wrote only because it always encodes non-pointer fields: empty string or
/// message, zero number. Dropping those loses nothing.
fn is_zero(w: &Wire) -> bool {
    match w {
        Wire::Varint(v) => *v == 0,
        // An embedded message whose fields are all zero (e.g. `strategy: {type: ""}`) is zero too.
        Wire::Bytes(b) => b.is_empty() || fields(b).all(|f| f.is_ok_and(|(_, w)| is_zero(&w))),
        Wire::Fixed => false,
    }
}

/// Refuses a non-empty field this decoder does not understand, so nothing is silently lost.
fn unknown(ctx: &str, n: u64, w: &Wire) -> Result<(), String> {
    if is_zero(w) {
        Ok(())
    } else {
        Err(format!(
            "protobuf field {n} of {ctx} is not supported by this test server; send JSON"
        ))
    }
}

fn env_var(b: &[u8]) -> Result<Value, String> {
    let mut o = Map::new();
    for f in fields(b) {
        let (n, w) = f?;
        match n {
            1 => _ = o.insert("name".into(), json!(string(&w)?)),
            2 => _ = o.insert("value".into(), json!(string(&w)?)),
            _ => unknown("EnvVar", n, &w)?,
        }
    }
    Ok(Value::Object(o))
}

fn container(b: &[u8]) -> Result<Value, String> {
    let mut o = Map::new();
    for f in fields(b) {
        let (n, w) = f?;
        match n {
            1 => _ = o.insert("name".into(), json!(string(&w)?)),
            2 => _ = o.insert("image".into(), json!(string(&w)?)),
            3 => push(&mut o, "command", json!(string(&w)?)),
            4 => push(&mut o, "args", json!(string(&w)?)),
            7 => push(&mut o, "env", env_var(bytes(&w)?)?),
            // terminationMessagePath, imagePullPolicy, terminationMessagePolicy: defaults, kept as sent.
            13 => _ = o.insert("terminationMessagePath".into(), json!(string(&w)?)),
            14 => _ = o.insert("imagePullPolicy".into(), json!(string(&w)?)),
            20 => _ = o.insert("terminationMessagePolicy".into(), json!(string(&w)?)),
            _ => unknown("Container", n, &w)?,
        }
    }
    o.retain(|_, v| v != "");
    Ok(Value::Object(o))
}

fn pod_template(b: &[u8]) -> Result<Value, String> {
    let mut o = Map::new();
    for f in fields(b) {
        let (n, w) = f?;
        match n {
            1 => _ = o.insert("metadata".into(), object_meta(bytes(&w)?)?),
            2 => {
                let mut spec = Map::new();
                for f in fields(bytes(&w)?) {
                    let (n, w) = f?;
                    match n {
                        2 => push(&mut spec, "containers", container(bytes(&w)?)?),
                        _ => unknown("PodSpec", n, &w)?,
                    }
                }
                o.insert("spec".into(), Value::Object(spec));
            }
            _ => unknown("PodTemplateSpec", n, &w)?,
        }
    }
    Ok(Value::Object(o))
}

/// DeploymentSpec as `kubectl create deployment` fills it: replicas, matchLabels selector, template.
fn deployment_spec(b: &[u8]) -> Result<Value, String> {
    let mut o = Map::new();
    for f in fields(b) {
        let (n, w) = f?;
        match n {
            1 => _ = o.insert("replicas".into(), json!(varint(&w)? as i64)),
            2 => {
                let mut sel = Map::new();
                for f in fields(bytes(&w)?) {
                    let (n, w) = f?;
                    match n {
                        1 => insert_entry(&mut sel, "matchLabels", bytes(&w)?, false)?,
                        _ => unknown("LabelSelector", n, &w)?,
                    }
                }
                o.insert("selector".into(), Value::Object(sel));
            }
            3 => _ = o.insert("template".into(), pod_template(bytes(&w)?)?),
            _ => unknown("DeploymentSpec", n, &w)?,
        }
    }
    Ok(Value::Object(o))
}

fn decode_kind(kind: &str, raw: &[u8]) -> Result<Value, String> {
    let mut o = Map::new();
    for f in fields(raw) {
        let (n, w) = f?;
        if n == 1 {
            o.insert("metadata".into(), object_meta(bytes(&w)?)?);
            continue;
        }
        match (kind, n) {
            ("Secret", 2) => insert_entry(&mut o, "data", bytes(&w)?, true)?,
            ("Secret", 3) => {
                let t = string(&w)?;
                if !t.is_empty() {
                    o.insert("type".into(), json!(t));
                }
            }
            ("Secret", 4) => insert_entry(&mut o, "stringData", bytes(&w)?, false)?,
            ("Secret", 5) | ("ConfigMap", 4) => {
                _ = o.insert("immutable".into(), json!(varint(&w)? != 0))
            }
            ("ConfigMap", 2) => insert_entry(&mut o, "data", bytes(&w)?, false)?,
            ("ConfigMap", 3) => insert_entry(&mut o, "binaryData", bytes(&w)?, true)?,
            ("Namespace", 2) => {
                let mut spec = Map::new();
                for f in fields(bytes(&w)?) {
                    let (n, w) = f?;
                    if n == 1 {
                        push(&mut spec, "finalizers", json!(string(&w)?));
                    }
                }
                o.insert("spec".into(), Value::Object(spec));
            }
            ("Namespace", 3) => {
                _ = o.insert(
                    "status".into(),
                    strings_message(bytes(&w)?, &[(1, "phase")])?,
                )
            }
            ("ServiceAccount", 2) => push(
                &mut o,
                "secrets",
                strings_message(
                    bytes(&w)?,
                    &[
                        (1, "kind"),
                        (2, "namespace"),
                        (3, "name"),
                        (4, "uid"),
                        (5, "apiVersion"),
                    ],
                )?,
            ),
            ("ServiceAccount", 3) => push(
                &mut o,
                "imagePullSecrets",
                strings_message(bytes(&w)?, &[(1, "name")])?,
            ),
            ("ServiceAccount", 4) => {
                _ = o.insert(
                    "automountServiceAccountToken".into(),
                    json!(varint(&w)? != 0),
                )
            }
            ("Role" | "ClusterRole", 2) => push(&mut o, "rules", policy_rule(bytes(&w)?)?),
            ("RoleBinding" | "ClusterRoleBinding", 2) => push(
                &mut o,
                "subjects",
                strings_message(
                    bytes(&w)?,
                    &[(1, "kind"), (2, "apiGroup"), (3, "name"), (4, "namespace")],
                )?,
            ),
            ("RoleBinding" | "ClusterRoleBinding", 3) => {
                o.insert(
                    "roleRef".into(),
                    strings_message(bytes(&w)?, &[(1, "apiGroup"), (2, "kind"), (3, "name")])?,
                );
            }
            (
                "Secret" | "ConfigMap" | "Namespace" | "ServiceAccount" | "Role" | "ClusterRole"
                | "RoleBinding" | "ClusterRoleBinding",
                _,
            ) => {}
            ("Deployment", 2) => _ = o.insert("spec".into(), deployment_spec(bytes(&w)?)?),
            ("Deployment", _) => unknown("Deployment", n, &w)?,
            _ => {
                return Err(format!(
                    "protobuf bodies are only understood for Secret, ConfigMap, Namespace, ServiceAccount, Deployment and RBAC kinds, not {kind}; send JSON"
                ));
            }
        }
    }
    Ok(Value::Object(o))
}

/// Decodes a protobuf-encoded object into JSON with apiVersion and kind set.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the protobuf body lacks the k8s\\0 prefix")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for f in fields(rest) {
        let (n, w) = f?;
        match n {
            1 => {
                for f in fields(bytes(&w)?) {
                    let (n, w) = f?;
                    match n {
                        1 => api_version = string(&w)?,
                        2 => kind = string(&w)?,
                        _ => {}
                    }
                }
            }
            2 => raw = bytes(&w)?,
            _ => {}
        }
    }
    let mut obj = decode_kind(&kind, raw)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

/// Decodes a protobuf DeleteOptions into its JSON form.
pub fn decode_delete_options(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the protobuf body lacks the k8s\\0 prefix")?;
    let mut raw = &[][..];
    for f in fields(rest) {
        let (n, w) = f?;
        if n == 2 {
            raw = bytes(&w)?;
        }
    }
    let mut o = Map::new();
    for f in fields(raw) {
        let (n, w) = f?;
        match n {
            1 => _ = o.insert("gracePeriodSeconds".into(), json!(varint(&w)? as i64)),
            2 => {
                _ = o.insert(
                    "preconditions".into(),
                    strings_message(bytes(&w)?, &[(1, "uid"), (2, "resourceVersion")])?,
                )
            }
            4 => _ = o.insert("propagationPolicy".into(), json!(string(&w)?)),
            5 => push(&mut o, "dryRun", json!(string(&w)?)),
            _ => {}
        }
    }
    Ok(Value::Object(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        [field(1, k.as_bytes()), field(2, v)].concat()
    }

    fn envelope(kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [field(1, b"v1"), field(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), field(1, &tm), field(2, raw)].concat()
    }

    #[test]
    fn secret_from_kubectl_create_decodes_to_json() {
        let meta = [
            field(1, b"x"),
            field(2, b""),
            field(3, b"default"),
            field(11, &entry("app", b"web")),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(2, &entry("a", b"b")),
            field(3, b"Opaque"),
        ]
        .concat();
        let obj = decode(&envelope("Secret", &raw)).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"a": "Yg=="},
                   "metadata": {"name": "x", "namespace": "default", "labels": {"app": "web"}}})
        );
    }

    #[test]
    fn role_binding_keeps_subjects_and_role_ref() {
        let subject = [
            field(1, b"ServiceAccount"),
            field(2, b""),
            field(3, b"hashroll"),
            field(4, b"hr"),
        ]
        .concat();
        let role_ref = [
            field(1, b"rbac.authorization.k8s.io"),
            field(2, b"Role"),
            field(3, b"r"),
        ]
        .concat();
        let raw = [
            field(1, &field(1, b"b")),
            field(2, &subject),
            field(3, &role_ref),
        ]
        .concat();
        let tm = [
            field(1, b"rbac.authorization.k8s.io/v1"),
            field(2, b"RoleBinding"),
        ]
        .concat();
        let obj = decode(&[MAGIC.to_vec(), field(1, &tm), field(2, &raw)].concat()).unwrap();
        assert_eq!(
            obj["subjects"],
            json!([{"kind": "ServiceAccount", "name": "hashroll", "namespace": "hr"}])
        );
        assert_eq!(obj["roleRef"]["kind"], "Role");
        let rule = [
            field(1, b"list"),
            field(1, b"watch"),
            field(2, b""),
            field(3, b"secrets"),
        ]
        .concat();
        let role = decode_kind("Role", &field(2, &rule)).unwrap();
        assert_eq!(
            role["rules"],
            json!([{"verbs": ["list", "watch"], "apiGroups": [""], "resources": ["secrets"]}])
        );
    }

    #[test]
    fn deployment_from_kubectl_create_and_unknown_fields_are_refused() {
        let c = [field(1, b"nginx"), field(2, b"nginx"), field(8, b"")].concat();
        let tmpl = [
            field(1, &field(11, &entry("app", b"dd"))),
            field(2, &field(2, &c)),
        ]
        .concat();
        let spec = [
            vec![8, 1],
            field(2, &field(1, &entry("app", b"dd"))),
            field(3, &tmpl),
            field(4, b""),
        ]
        .concat();
        let raw = [field(1, &field(1, b"dd")), field(2, &spec)].concat();
        let tm = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let obj = decode(&[MAGIC.to_vec(), field(1, &tm), field(2, &raw)].concat()).unwrap();
        assert_eq!(obj["spec"]["replicas"], 1);
        assert_eq!(obj["spec"]["selector"]["matchLabels"]["app"], "dd");
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"],
            json!([{"name": "nginx", "image": "nginx"}])
        );
        let strategy = [field(1, &field(1, b"dd")), field(2, &field(4, b"x"))].concat();
        assert!(
            decode_kind("Deployment", &strategy)
                .unwrap_err()
                .contains("field 4 of DeploymentSpec")
        );
    }

    #[test]
    fn configmap_and_unknown_kinds() {
        let raw = [field(1, &field(1, b"c")), field(2, &entry("k", b"v"))].concat();
        assert_eq!(
            decode(&envelope("ConfigMap", &raw)).unwrap()["data"]["k"],
            "v"
        );
        let err = decode(&envelope(
            "Job",
            &[field(1, &field(1, b"d")), field(2, b"")].concat(),
        ))
        .unwrap_err();
        assert!(err.contains("not Job"));
        assert!(decode(b"{}").is_err());
    }
}
