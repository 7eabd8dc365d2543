//! Vault's HTTP API, as far as hashroll needs it: log in (token or Kubernetes auth), and read one KV path
//! reduced to per-key digests at once. A value lives only as long as hashing it takes; nothing here logs
//! a response body.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::model::hashing::{KeyDigest, Section, key_digest};
use crate::vault::flags::{AuthMethod, VaultFlags};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The key a path's summary holds in version mode: its digest is that of `current_version`.
pub const VERSION_KEY: &str = "version";

/// What one read found.
#[derive(Debug)]
pub enum Read {
    /// The path's keys and their digests (in version mode, [`VERSION_KEY`] alone).
    Present(BTreeMap<String, KeyDigest>),
    /// No secret at this path (or its current version is deleted).
    Missing,
    /// hashroll's token may not read it.
    Forbidden,
}

/// Why Vault could not be asked: not about one path, about Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    Unreachable(String),
    Sealed,
    /// Login failed or no token: the reason, without the token.
    Auth(String),
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Down::Unreachable(e) => write!(f, "unreachable: {e}"),
            Down::Sealed => f.write_str("sealed"),
            Down::Auth(e) => write!(f, "cannot log in: {e}"),
        }
    }
}

/// A token and, for Kubernetes auth, when to log in again.
#[derive(Clone)]
struct Token {
    value: String,
    refresh_at: Option<Instant>,
    /// Renew (rather than log in again) when `refresh_at` comes: the token is renewable and its last
    /// renewal was not cut short by its maximum TTL.
    renew: bool,
    /// The lease it was given or renewed for, in seconds.
    ttl: u64,
}

impl Token {
    /// A token leased for `ttl` seconds (0: no expiry), refreshed once two thirds of it have passed.
    fn leased(value: String, ttl: u64, renew: bool) -> Token {
        Token {
            value,
            refresh_at: (ttl > 0).then(|| Instant::now() + Duration::from_secs(ttl) * 2 / 3),
            renew,
            ttl,
        }
    }
}

pub struct VaultClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    addr: String,
    namespace: Option<String>,
    method: AuthMethod,
    token_file: Option<PathBuf>,
    role: Option<String>,
    auth_mount: String,
    sa_token_file: PathBuf,
    token: Option<Token>,
}

impl VaultClient {
    /// Builds the client; fails on an unreadable CA file or a Kubernetes auth without a role.
    pub fn new(flags: &VaultFlags, addr: String) -> anyhow::Result<VaultClient> {
        use anyhow::Context;
        if flags.vault_auth_method == AuthMethod::Kubernetes && flags.vault_role.is_none() {
            anyhow::bail!("--vault-auth-method kubernetes needs --vault-role");
        }
        let mut roots = rustls::RootCertStore::empty();
        match &flags.vault_ca_file {
            Some(path) => {
                use rustls_pki_types::CertificateDer;
                use rustls_pki_types::pem::PemObject;
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .with_context(|| {
                        format!("--vault-ca-file {}: cannot read it", path.display())
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    anyhow::bail!("--vault-ca-file {}: no certificate in it", path.display());
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS for Vault")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(VaultClient {
            http: Client::builder(TokioExecutor::new()).build(https),
            addr,
            namespace: flags.vault_namespace.clone().filter(|n| !n.is_empty()),
            method: flags.vault_auth_method,
            token_file: flags.vault_token_file.clone(),
            role: flags.vault_role.clone(),
            auth_mount: flags.vault_auth_mount.trim_matches('/').to_string(),
            sa_token_file: flags.vault_sa_token_file.clone(),
            token: None,
        })
    }

    /// The token to read with: the token file read again (so a rotated one is picked up), `VAULT_TOKEN`, or
    /// a Kubernetes login kept until two thirds of its lease have passed.
    pub async fn token(&mut self) -> Result<String, Down> {
        match self.method {
            AuthMethod::Token => match &self.token_file {
                Some(path) => read_secret_file(path).await,
                None => std::env::var("VAULT_TOKEN")
                    .ok()
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| t.trim().to_string())
                    .ok_or_else(|| {
                        Down::Auth("no token: set --vault-token-file or VAULT_TOKEN".into())
                    }),
            },
            AuthMethod::Kubernetes => {
                if let Some(t) = &self.token
                    && t.refresh_at.is_none_or(|at| Instant::now() < at)
                {
                    return Ok(t.value.clone());
                }
                let renewed = match self.token.take() {
                    Some(t) if t.renew => self.renew(t).await,
                    _ => None,
                };
                let t = match renewed {
                    Some(t) => t,
                    None => self.kubernetes_login().await?,
                };
                self.token = Some(t.clone());
                Ok(t.value)
            }
        }
    }

    /// The token was refused: log in again next time.
    pub fn forget_token(&mut self) {
        self.token = None;
    }

    /// Vault's own health (`sys/health`, unauthenticated): active or standby is up.
    pub async fn health(&self) -> Result<(), Down> {
        let url = format!(
            "{}/v1/sys/health?standbyok=true&perfstandbyok=true",
            self.addr
        );
        match self.request(Method::GET, &url, None, None).await?.0 {
            s if s.is_success() => Ok(()),
            StatusCode::SERVICE_UNAVAILABLE => Err(Down::Sealed),
            s => Err(Down::Unreachable(format!("sys/health answered {s}"))),
        }
    }

    /// Whether Vault still accepts `token` (`auth/token/lookup-self`, allowed by Vault's default policy);
    /// true when it cannot tell (so a policy without it never looks like a bad token).
    pub async fn token_is_valid(&self, token: &str) -> bool {
        let url = format!("{}/v1/auth/token/lookup-self", self.addr);
        !matches!(
            self.request(Method::GET, &url, Some(token), None).await,
            Ok((StatusCode::FORBIDDEN, _))
        )
    }

    async fn kubernetes_login(&self) -> Result<Token, Down> {
        let jwt = read_secret_file(&self.sa_token_file).await?;
        let body = serde_json::json!({"role": self.role, "jwt": jwt});
        let url = format!("{}/v1/auth/{}/login", self.addr, self.auth_mount);
        let (status, json) = self
            .request(Method::POST, &url, None, Some(body.to_string()))
            .await?;
        if status != StatusCode::OK {
            return Err(match status {
                StatusCode::SERVICE_UNAVAILABLE => Down::Sealed,
                s => Down::Auth(format!(
                    "Kubernetes login at auth/{} as role {:?} answered {s}",
                    self.auth_mount,
                    self.role.as_deref().unwrap_or_default()
                )),
            });
        }
        let auth = &json["auth"];
        let value = auth["client_token"]
            .as_str()
            .ok_or_else(|| Down::Auth("the login answer holds no token".into()))?
            .to_string();
        let ttl = auth["lease_duration"].as_u64().filter(|t| *t > 0);
        let renewable = auth["renewable"].as_bool().unwrap_or(false);
        tracing::info!(
            role = self.role.as_deref().unwrap_or_default(),
            ttl_seconds = ttl.unwrap_or(0),
            "logged in to Vault (Kubernetes auth)"
        );
        Ok(Token::leased(value, ttl.unwrap_or(0), renewable))
    }

    /// Renews the login (`auth/token/renew-self`); None when it cannot (then hashroll logs in again). A
    /// renewal cut short by the token's maximum TTL is the last: the next refresh logs in.
    async fn renew(&self, t: Token) -> Option<Token> {
        let url = format!("{}/v1/auth/token/renew-self", self.addr);
        let (status, json) = (self.request(Method::POST, &url, Some(&t.value), Some("{}".into())))
            .await
            .ok()?;
        let ttl = json["auth"]["lease_duration"]
            .as_u64()
            .filter(|_| status == StatusCode::OK)?;
        if ttl == 0 {
            return None;
        }
        tracing::debug!(ttl_seconds = ttl, "renewed the Vault token");
        Some(Token::leased(t.value, ttl, ttl >= t.ttl))
    }

    /// Reads one path: in version mode (`key_level` false) a KV v2 path's `current_version` from its
    /// metadata; else its data, each key hashed. A KV v1 path (no `/data/` segment) is always read whole.
    pub async fn read(&self, path: &str, token: &str, key_level: bool) -> Result<Read, Down> {
        let v2 = kv2_split(path);
        let url = match v2 {
            Some((mount, rest)) if !key_level => {
                format!("{}/v1/{mount}/metadata/{rest}", self.addr)
            }
            _ => format!("{}/v1/{path}", self.addr),
        };
        let (status, json) = self.request(Method::GET, &url, Some(token), None).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(Read::Missing),
            StatusCode::FORBIDDEN => return Ok(Read::Forbidden),
            StatusCode::SERVICE_UNAVAILABLE => return Err(Down::Sealed),
            s => return Err(Down::Unreachable(format!("GET {path} answered {s}"))),
        }
        let data = &json["data"];
        Ok(match v2 {
            Some(_) if !key_level => match data["current_version"].as_u64() {
                Some(v) if v > 0 => Read::Present(BTreeMap::from([(
                    VERSION_KEY.to_string(),
                    key_digest(Section::Data, VERSION_KEY, v.to_string().as_bytes()),
                )])),
                _ => Read::Missing,
            },
            Some(_) => match data["data"].as_object() {
                Some(values) => Read::Present(digests(values)),
                None => Read::Missing,
            },
            None => match data.as_object() {
                Some(values) => Read::Present(digests(values)),
                None => Read::Missing,
            },
        })
    }

    /// One request: the status and the JSON answer (Null when it is not JSON).
    async fn request(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Result<(StatusCode, Value), Down> {
        let mut req = Request::builder().method(method).uri(url);
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        let req = req
            .header("X-Vault-Request", "true")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Down::Unreachable(format!("bad request to {url}: {e}")))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg = format!("{msg}: {s}");
                    source = s.source();
                }
                Down::Unreachable(msg)
            })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| Down::Unreachable(e.to_string()))?
                .to_bytes();
            Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| Down::Unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
    }
}

/// A token from a file, trimmed; the error names the file, never its content.
async fn read_secret_file(path: &Path) -> Result<String, Down> {
    let t = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| Down::Auth(format!("cannot read {}: {e}", path.display())))?;
    let t = t.trim();
    if t.is_empty() {
        return Err(Down::Auth(format!("{} is empty", path.display())));
    }
    Ok(t.to_string())
}

/// A KV v2 API path (`MOUNT/data/REST`) split at its `data` segment; None for a KV v1 path.
pub fn kv2_split(path: &str) -> Option<(&str, &str)> {
    let (mount, rest) = path.split_once("/data/")?;
    (!mount.is_empty() && !rest.is_empty()).then_some((mount, rest))
}

/// Each key's digest; a value that is not a string is hashed as its JSON.
fn digests(values: &serde_json::Map<String, Value>) -> BTreeMap<String, KeyDigest> {
    values
        .iter()
        .map(|(k, v)| {
            let d = match v {
                Value::String(s) => key_digest(Section::Data, k, s.as_bytes()),
                other => key_digest(Section::Data, k, other.to_string().as_bytes()),
            };
            (k.clone(), d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv2_paths_split_at_their_data_segment() {
        assert_eq!(kv2_split("secret/data/app"), Some(("secret", "app")));
        assert_eq!(kv2_split("team/kv/data/a/b"), Some(("team/kv", "a/b")));
        assert_eq!(kv2_split("kv1/app"), None);
        assert_eq!(kv2_split("secret/data/"), None);
    }

    #[test]
    fn non_string_values_hash_as_their_json() {
        let values = serde_json::json!({"n": 1, "s": "1", "o": {"a": true}});
        let d = digests(values.as_object().unwrap());
        assert_eq!(d["n"], key_digest(Section::Data, "n", b"1"));
        assert_eq!(d["s"], key_digest(Section::Data, "s", b"1"));
        assert_eq!(d["o"], key_digest(Section::Data, "o", br#"{"a":true}"#));
    }
}
