//! Content hashing: per-key digests kept in memory, and keyed stamps written into the cluster.
//!
//! Two layers, on purpose:
//! - [`key_digest`] is a plain SHA-256 of one key of a Secret or ConfigMap. It never leaves the process; it
//!   lets hashroll drop the data itself as soon as an object arrives.
//! - Everything written onto workloads ([`Stamp`], [`source_stamp`]) is an HMAC-SHA256 under the
//!   [`InstallationKey`]. Anyone allowed to read Deployments can read those annotations; a plain hash of a
//!   short password could be brute-forced offline, a keyed one cannot without the key.
//!
//! All encodings are unambiguous: every variable-length field is prefixed with its length (u64, big endian),
//! every choice is a tag byte, and every collection is sorted before hashing, so two different inputs never
//! feed the same bytes to the hash and the order in which callers list things does not matter.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::model::kind::{SourceId, SourceKind};

/// SHA-256 of one key's section, name and value (see [`key_digest`]). Kept in memory only.
pub type KeyDigest = [u8; 32];

/// The algorithm version written at the start of every [`Stamp`].
pub const STAMP_VERSION: &str = "v1";

/// The shortest installation key accepted, in bytes (the HMAC-SHA256 security level).
pub const MIN_KEY_LEN: usize = 32;

/// Hex characters of the keyed digest in a [`Stamp`] (128 bits).
const STAMP_HEX_LEN: usize = 32;
/// Hex characters of a per-source digest from [`source_stamp`] (48 bits).
const SOURCE_STAMP_HEX_LEN: usize = 12;
/// Hex characters of an installation key id.
const KEY_ID_HEX_LEN: usize = 8;
/// Longest annotation value [`Stamp::parse`] accepts; anything longer was not written by hashroll.
const MAX_STAMP_LEN: usize = 256;

// Domain separation: each use of the key hashes under its own label, so an output of one can never be
// replayed as an output of another.
const DOMAIN_KEY_ID: &[u8] = b"hashroll/key-id";
const DOMAIN_SOURCE: &[u8] = b"hashroll/source-stamp/v1\0";
const DOMAIN_SOURCES_MAP: &[u8] = b"hashroll/sources-map-stamp/v1\0";

type HmacSha256 = Hmac<Sha256>;

/// Where a key lives in its object: `data` (and a Secret's `stringData`) or a ConfigMap's `binaryData`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Section {
    /// `data` of a ConfigMap or Secret, and a Secret's `stringData`.
    Data,
    /// `binaryData` of a ConfigMap.
    BinaryData,
}

impl Section {
    fn tag(self) -> u8 {
        match self {
            Section::Data => 1,
            Section::BinaryData => 2,
        }
    }
}

/// SHA-256(section tag byte ‖ u64-BE len ‖ key ‖ u64-BE len ‖ value). In-memory only, never written out.
pub fn key_digest(section: Section, key: &str, value: &[u8]) -> KeyDigest {
    let mut d = KeyDigester::new(section, key, value.len());
    d.update(value);
    d.finish()
        .expect("the whole value was fed, as its length said")
}

/// [`key_digest`] fed in pieces, so a value can be hashed while it is decoded and never held whole. The
/// value's length comes first in the digest, so it is given up front.
pub struct KeyDigester {
    h: Sha256,
    len: usize,
    fed: usize,
}

impl KeyDigester {
    pub fn new(section: Section, key: &str, value_len: usize) -> Self {
        let mut h = Sha256::new();
        h.update([section.tag()]);
        h.update(len_be(key.len()));
        h.update(key.as_bytes());
        h.update(len_be(value_len));
        KeyDigester {
            h,
            len: value_len,
            fed: 0,
        }
    }

    pub fn update(&mut self, part: &[u8]) {
        self.fed = self.fed.saturating_add(part.len());
        self.h.update(part);
    }

    /// The digest; None if what was fed is not exactly the length given to [`KeyDigester::new`].
    pub fn finish(self) -> Option<KeyDigest> {
        (self.fed == self.len).then(|| self.h.finalize().into())
    }
}

/// Why an installation key could not be made.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The key material is shorter than [`MIN_KEY_LEN`].
    #[error(
        "installation key is {len} bytes long; at least {MIN_KEY_LEN} are required, otherwise the stamps \
         written onto workloads could be brute-forced"
    )]
    TooShort { len: usize },
    /// The operating system's random number generator failed.
    #[error(
        "could not read random bytes for a new installation key from the operating system: {0}"
    )]
    Random(getrandom::Error),
}

/// The installation key (≥32 bytes). Debug prints only the key id. Never logged.
#[derive(Clone)]
pub struct InstallationKey {
    bytes: Box<[u8]>,
    id: String,
}

impl InstallationKey {
    /// A fresh key of 32 random bytes; panics only if the OS random generator is unusable.
    pub fn generate() -> Self {
        match Self::try_generate() {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    /// A fresh key of 32 random bytes, or why the OS random generator failed.
    pub fn try_generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; MIN_KEY_LEN];
        getrandom::fill(&mut bytes).map_err(KeyError::Random)?;
        Self::from_bytes(&bytes)
    }

    /// Wraps existing key material; it must be at least [`MIN_KEY_LEN`] bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyError> {
        if b.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { len: b.len() });
        }
        let bytes: Box<[u8]> = b.into();
        let mut mac = new_mac(&bytes);
        mac.update(DOMAIN_KEY_ID);
        let id = hex::encode(&mac.finalize().into_bytes()[..KEY_ID_HEX_LEN / 2]);
        Ok(InstallationKey { bytes, id })
    }

    /// The raw key material, for storing it in its Secret.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// 8 hex chars identifying the key (an HMAC of a fixed label, so it reveals nothing about the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self) -> HmacSha256 {
        new_mac(&self.bytes)
    }
}

impl fmt::Debug for InstallationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC is defined for keys of any length, so this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// One source as a workload uses it: absent, or the chosen keys with their digests (None = key missing).
#[derive(Clone, PartialEq, Eq)]
pub enum UsedSource<'a> {
    /// The source does not exist (an optional reference).
    Absent { id: &'a SourceId },
    /// The source exists; `keys` are the keys the workload uses, in any order.
    Present {
        id: &'a SourceId,
        keys: Vec<(&'a str, Option<&'a KeyDigest>)>,
    },
}

impl<'a> UsedSource<'a> {
    /// The source this entry is about.
    pub fn id(&self) -> &'a SourceId {
        match self {
            UsedSource::Absent { id } | UsedSource::Present { id, .. } => id,
        }
    }

    /// Appends the unambiguous encoding of this entry to `out`; keys are sorted and de-duplicated first.
    fn encode(&self, out: &mut Vec<u8>) {
        let id = self.id();
        out.push(kind_tag(id.kind));
        put_bytes(out, id.namespace.as_bytes());
        put_bytes(out, id.name.as_bytes());
        match self {
            UsedSource::Absent { .. } => out.push(0),
            UsedSource::Present { keys, .. } => {
                out.push(1);
                let mut keys: Vec<(&str, Option<&KeyDigest>)> = keys.clone();
                keys.sort_unstable();
                keys.dedup();
                out.extend_from_slice(&len_be(keys.len()));
                for (name, digest) in keys {
                    put_bytes(out, name.as_bytes());
                    match digest {
                        None => out.push(0),
                        Some(d) => {
                            out.push(1);
                            out.extend_from_slice(d);
                        }
                    }
                }
            }
        }
    }
}

// Hand-written so that digests, which are unkeyed hashes of secret values, never reach a log line.
impl fmt::Debug for UsedSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsedSource::Absent { id } => f.debug_struct("Absent").field("id", id).finish(),
            UsedSource::Present { id, keys } => {
                let keys: Vec<(&str, bool)> = keys.iter().map(|(k, d)| (*k, d.is_some())).collect();
                f.debug_struct("Present")
                    .field("id", id)
                    .field("keys_present", &keys)
                    .finish()
            }
        }
    }
}

/// The value written into annotations: "v1.<key id>.<32 hex chars>" (HMAC-SHA256 truncated to 128 bits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp(Box<str>);

impl Stamp {
    /// The annotation value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses an annotation value written by any version of hashroll; None if it is not a stamp at all.
    ///
    /// Version v1 must be exactly `v1.<8 lowercase hex>.<32 lowercase hex>`. Other versions only need
    /// `v<number>.` followed by a non-empty body of lowercase letters, digits, `.` and `-`, so stamps of a
    /// later release are still recognised (and, not being current, re-baselined rather than rolled).
    pub fn parse(s: &str) -> Option<Stamp> {
        let (version, body) = s.split_once('.')?;
        let number = version.strip_prefix('v')?;
        let number_ok = !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit())
            && !number.starts_with('0');
        if !number_ok || body.is_empty() || s.len() > MAX_STAMP_LEN {
            return None;
        }
        let ok = if version == STAMP_VERSION {
            let (id, digest) = body.split_once('.')?;
            is_lower_hex(id, KEY_ID_HEX_LEN) && is_lower_hex(digest, STAMP_HEX_LEN)
        } else {
            body.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        };
        ok.then(|| Stamp(s.into()))
    }

    /// The algorithm version, e.g. `v1`.
    pub fn version(&self) -> &str {
        self.0.split_once('.').map_or(&self.0, |(v, _)| v)
    }

    /// True when written with this algorithm version and the same installation key.
    pub fn is_current(&self, key: &InstallationKey) -> bool {
        self.version() == STAMP_VERSION && self.key_id() == Some(key.id())
    }

    /// The id of the key a v1 stamp was written with (None for other versions).
    pub fn key_id(&self) -> Option<&str> {
        if self.version() != STAMP_VERSION {
            return None;
        }
        self.0.split('.').nth(1)
    }

    fn from_mac(key: &InstallationKey, mac: HmacSha256) -> Stamp {
        let out = mac.finalize().into_bytes();
        Stamp(
            format!(
                "{STAMP_VERSION}.{}.{}",
                key.id(),
                hex::encode(&out[..STAMP_HEX_LEN / 2])
            )
            .into(),
        )
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Short keyed digest of one used source, for the per-source map kept on the workload: 12 hex chars.
pub fn source_stamp(key: &InstallationKey, used: &UsedSource) -> String {
    let mut buf = Vec::new();
    used.encode(&mut buf);
    let mut mac = key.mac();
    mac.update(DOMAIN_SOURCE);
    mac.update(&buf);
    hex::encode(&mac.finalize().into_bytes()[..SOURCE_STAMP_HEX_LEN / 2])
}

/// The workload's [`Stamp`] computed from its per-source map (label such as `secret/db` → [`source_stamp`]).
///
/// This is what the controller records: it changes exactly when the map does, and carries the version and
/// key id that tell a stale recording from a real change.
pub fn stamp_of_sources(key: &InstallationKey, sources: &BTreeMap<String, String>) -> Stamp {
    let mut mac = key.mac();
    mac.update(DOMAIN_SOURCES_MAP);
    mac.update(&len_be(sources.len()));
    // BTreeMap iterates in key order, so the encoding is canonical.
    for (label, digest) in sources {
        mac.update(&len_be(label.len()));
        mac.update(label.as_bytes());
        mac.update(&len_be(digest.len()));
        mac.update(digest.as_bytes());
    }
    Stamp::from_mac(key, mac)
}

fn kind_tag(kind: SourceKind) -> u8 {
    match kind {
        SourceKind::Secret => 1,
        SourceKind::ConfigMap => 2,
        SourceKind::SecretProviderClass => 3,
        SourceKind::Vault => 4,
    }
}

fn len_be(len: usize) -> [u8; 8] {
    (len as u64).to_be_bytes()
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&len_be(b.len()));
    out.extend_from_slice(b);
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> InstallationKey {
        InstallationKey::from_bytes(&[byte; 32]).unwrap()
    }

    fn secret(name: &str) -> SourceId {
        SourceId::new(SourceKind::Secret, "ns", name)
    }

    #[test]
    fn key_digest_separates_sections() {
        assert_ne!(
            key_digest(Section::Data, "k", b"v"),
            key_digest(Section::BinaryData, "k", b"v")
        );
    }

    #[test]
    fn key_digest_separates_key_from_value() {
        assert_ne!(
            key_digest(Section::Data, "ab", b"c"),
            key_digest(Section::Data, "a", b"bc")
        );
        assert_ne!(
            key_digest(Section::Data, "", b"abc"),
            key_digest(Section::Data, "abc", b"")
        );
        assert_eq!(
            key_digest(Section::Data, "ab", b"c"),
            key_digest(Section::Data, "ab", b"c")
        );
    }

    #[test]
    fn short_keys_are_rejected_with_reason() {
        let err = InstallationKey::from_bytes(&[1u8; 31]).unwrap_err();
        assert_eq!(err, KeyError::TooShort { len: 31 });
        let msg = err.to_string();
        assert!(
            msg.contains("31 bytes") && msg.contains("at least 32"),
            "{msg}"
        );
        assert!(InstallationKey::from_bytes(&[1u8; 64]).is_ok());
    }

    #[test]
    fn generated_keys_differ_and_round_trip() {
        let a = InstallationKey::generate();
        let b = InstallationKey::generate();
        assert_eq!(a.as_bytes().len(), 32);
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.id(), b.id());
        let again = InstallationKey::from_bytes(a.as_bytes()).unwrap();
        assert_eq!(again.id(), a.id());
    }

    #[test]
    fn key_id_is_short_hex_and_debug_hides_the_key() {
        let k = key(0xab);
        assert!(is_lower_hex(k.id(), 8), "{}", k.id());
        let dbg = format!("{k:?}");
        assert_eq!(dbg, format!("InstallationKey {{ id: {:?}, .. }}", k.id()));
    }

    #[test]
    fn different_keys_give_different_ids_and_stamps() {
        let (a, b) = (key(1), key(2));
        assert_ne!(a.id(), b.id());
        let id = secret("db");
        let d = key_digest(Section::Data, "password", b"hunter2");
        let used = [UsedSource::Present {
            id: &id,
            keys: vec![("password", Some(&d))],
        }];
        assert_ne!(source_stamp(&a, &used[0]), source_stamp(&b, &used[0]));
        let map = BTreeMap::from([("secret/db".to_string(), "0123456789ab".to_string())]);
        assert_ne!(stamp_of_sources(&a, &map), stamp_of_sources(&b, &map));
    }

    #[test]
    fn stamp_does_not_depend_on_order() {
        let k = key(3);
        let (db, tls) = (
            secret("db"),
            SourceId::new(SourceKind::ConfigMap, "ns", "tls"),
        );
        let (d1, d2) = (
            key_digest(Section::Data, "user", b"u"),
            key_digest(Section::Data, "pass", b"p"),
        );
        let a = UsedSource::Present {
            id: &db,
            keys: vec![("user", Some(&d1)), ("pass", Some(&d2))],
        };
        let a_reordered = UsedSource::Present {
            id: &db,
            keys: vec![("pass", Some(&d2)), ("user", Some(&d1))],
        };
        let b = UsedSource::Absent { id: &tls };
        // Sources in any order: the map of per-source stamps is keyed by label.
        let one = BTreeMap::from([
            ("secret/db".to_string(), source_stamp(&k, &a)),
            ("secret/tls".to_string(), source_stamp(&k, &b)),
        ]);
        let two = BTreeMap::from([
            ("secret/tls".to_string(), source_stamp(&k, &b)),
            ("secret/db".to_string(), source_stamp(&k, &a_reordered)),
        ]);
        assert_eq!(stamp_of_sources(&k, &one), stamp_of_sources(&k, &two));
        assert_eq!(source_stamp(&k, &a), source_stamp(&k, &a_reordered));
        // A different value in one key must show.
        let d3 = key_digest(Section::Data, "pass", b"q");
        let changed = UsedSource::Present {
            id: &db,
            keys: vec![("user", Some(&d1)), ("pass", Some(&d3))],
        };
        assert_ne!(source_stamp(&k, &a), source_stamp(&k, &changed));
    }

    #[test]
    fn absent_differs_from_present_without_keys() {
        let k = key(4);
        let id = secret("db");
        let absent = UsedSource::Absent { id: &id };
        let empty = UsedSource::Present {
            id: &id,
            keys: vec![],
        };
        assert_ne!(source_stamp(&k, &absent), source_stamp(&k, &empty));
    }

    #[test]
    fn missing_key_differs_from_empty_value() {
        let k = key(5);
        let id = secret("db");
        let empty = key_digest(Section::Data, "token", b"");
        let missing = UsedSource::Present {
            id: &id,
            keys: vec![("token", None)],
        };
        let present = UsedSource::Present {
            id: &id,
            keys: vec![("token", Some(&empty))],
        };
        assert_ne!(source_stamp(&k, &missing), source_stamp(&k, &present));
    }

    #[test]
    fn source_identity_is_part_of_the_stamp() {
        let k = key(6);
        let (s, c) = (secret("x"), SourceId::new(SourceKind::ConfigMap, "ns", "x"));
        let other_ns = SourceId::new(SourceKind::Secret, "other", "x");
        let stamps: Vec<String> = [&s, &c, &other_ns]
            .iter()
            .map(|id| source_stamp(&k, &UsedSource::Absent { id }))
            .collect();
        assert_ne!(stamps[0], stamps[1]);
        assert_ne!(stamps[0], stamps[2]);
        assert_eq!(stamps[0].len(), 12);
        assert!(is_lower_hex(&stamps[0], 12));
    }

    #[test]
    fn empty_stamp_is_well_formed() {
        let k = key(7);
        let st = stamp_of_sources(&k, &BTreeMap::new());
        assert_eq!(Stamp::parse(st.as_str()), Some(st.clone()));
        assert!(st.is_current(&k));
    }

    #[test]
    fn stamp_format_parse_and_is_current() {
        let (k, other) = (key(8), key(9));
        let st = stamp_of_sources(&k, &BTreeMap::new());
        let s = st.as_str();
        assert!(s.starts_with(&format!("v1.{}.", k.id())), "{s}");
        assert_eq!(s.len(), 2 + 1 + 8 + 1 + 32);
        assert_eq!(st.version(), "v1");
        assert_eq!(st.key_id(), Some(k.id()));
        assert!(st.is_current(&k));
        assert!(!st.is_current(&other));
        assert_eq!(st.to_string(), s);

        // Same key id but another algorithm version: recognised, not current.
        let future = Stamp::parse(&format!("v2.{}.{}", k.id(), "0".repeat(64))).unwrap();
        assert_eq!(future.version(), "v2");
        assert_eq!(future.key_id(), None);
        assert!(!future.is_current(&k));

        for bad in [
            "",
            "v1",
            "v1.",
            "x1.abcdef01.00000000000000000000000000000000",
            "v01.abcdef01.00000000000000000000000000000000",
            "v1.abcdef0.00000000000000000000000000000000",
            "v1.abcdef01.0000000000000000000000000000000",
            "v1.ABCDEF01.00000000000000000000000000000000",
            "v1.abcdef01.0000000000000000000000000000000g",
            "v1.abcdef01.00000000000000000000000000000000.x",
            "v2.",
            "v2.has space",
            "sha256:0123",
        ] {
            assert_eq!(Stamp::parse(bad), None, "{bad:?} should not parse");
        }
        assert!(Stamp::parse(&format!("v2.{}", "a".repeat(300))).is_none());
    }

    #[test]
    fn stamp_of_sources_tracks_the_map() {
        let k = key(10);
        let a = BTreeMap::from([
            ("secret/db".to_string(), "aaaaaaaaaaaa".to_string()),
            ("configmap/app".to_string(), "bbbbbbbbbbbb".to_string()),
        ]);
        let mut b = a.clone();
        assert_eq!(stamp_of_sources(&k, &a), stamp_of_sources(&k, &b));
        b.insert("secret/db".into(), "cccccccccccc".into());
        assert_ne!(stamp_of_sources(&k, &a), stamp_of_sources(&k, &b));
        // Label/value boundaries are unambiguous.
        let c = BTreeMap::from([("secret/dba".to_string(), "aaaaaaaaaaa".to_string())]);
        let d = BTreeMap::from([("secret/db".to_string(), "aaaaaaaaaaaa".to_string())]);
        assert_ne!(stamp_of_sources(&k, &c), stamp_of_sources(&k, &d));
        assert!(stamp_of_sources(&k, &a).is_current(&k));
    }

    #[test]
    fn used_source_debug_shows_no_digests() {
        let id = secret("db");
        let d = [0xee; 32];
        let u = UsedSource::Present {
            id: &id,
            keys: vec![("password", Some(&d))],
        };
        let dbg = format!("{u:?}");
        assert!(dbg.contains("password") && dbg.contains("true"), "{dbg}");
        assert!(!dbg.contains("238, 238"), "{dbg}");
    }

    /// A plain (unkeyed) hash of a secret value, in any common form, must not be readable from stamps.
    #[test]
    fn plain_hashes_never_appear_in_stamps() {
        let k = key(11);
        let id = secret("db");
        for value in ["hunter2", "", "a", "password", "0000"] {
            let bytes = value.as_bytes();
            let digest = key_digest(Section::Data, "password", bytes);
            let used = UsedSource::Present {
                id: &id,
                keys: vec![("password", Some(&digest))],
            };
            let source = source_stamp(&k, &used);
            let map = BTreeMap::from([("secret/db".to_string(), source.clone())]);
            let mapped = stamp_of_sources(&k, &map);
            let plain: Vec<String> = vec![
                hex::encode(Sha256::digest(bytes)),
                hex::encode(<sha1::Sha1 as sha2::Digest>::digest(bytes)),
                hex::encode(digest),
                hex::encode(Sha256::digest(digest)),
            ];
            let stamp_digests = [mapped.as_str().rsplit('.').next().unwrap(), source.as_str()];
            for p in &plain {
                for s in stamp_digests {
                    // Any 12 hex chars shared would mean a truncated plain hash leaked.
                    assert!(!p.contains(s), "{s} is part of plain hash {p}");
                    for w in p.as_bytes().windows(12) {
                        let w = std::str::from_utf8(w).unwrap();
                        assert!(!s.contains(w), "plain hash fragment {w} in stamp {s}");
                    }
                }
            }
        }
    }
}
