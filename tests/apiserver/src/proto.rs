//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) for the kinds
//! kubectl's typed clients send that way (`kubectl create secret|configmap|namespace|serviceaccount`),
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
            ("Secret" | "ConfigMap" | "Namespace" | "ServiceAccount", _) => {}
            _ => {
                return Err(format!(
                    "protobuf bodies are only understood for Secret, ConfigMap, Namespace and ServiceAccount, not {kind}; send JSON"
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
    fn configmap_and_unknown_kinds() {
        let raw = [field(1, &field(1, b"c")), field(2, &entry("k", b"v"))].concat();
        assert_eq!(
            decode(&envelope("ConfigMap", &raw)).unwrap()["data"]["k"],
            "v"
        );
        let err = decode(&envelope(
            "Deployment",
            &[field(1, &field(1, b"d")), field(2, b"")].concat(),
        ))
        .unwrap_err();
        assert!(err.contains("not Deployment"));
        assert!(decode(b"{}").is_err());
    }
}
