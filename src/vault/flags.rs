//! The Vault flags, named as Vault users know them (`VAULT_ADDR`, `VAULT_TOKEN` are read too).

use std::path::PathBuf;
use std::time::Duration;

/// How hashroll logs in to Vault.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// A token from `--vault-token-file` (re-read when it changes) or `VAULT_TOKEN`.
    #[default]
    Token,
    /// Kubernetes auth: the pod's service-account token and `--vault-role`, renewed, and logged in again
    /// before it expires.
    Kubernetes,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct VaultFlags {
    /// Vault or OpenBao address (`https://vault.vault:8200`); also read from `VAULT_ADDR`. Without it,
    /// `vault:` references are not tracked.
    #[arg(long, global = true, env = "HASHROLL_VAULT_ADDR")]
    pub vault_addr: Option<String>,

    /// How hashroll logs in to Vault.
    #[arg(
        long,
        global = true,
        env = "HASHROLL_VAULT_AUTH_METHOD",
        value_enum,
        default_value = "token"
    )]
    pub vault_auth_method: AuthMethod,

    /// File holding the Vault token (re-read when it changes); else `VAULT_TOKEN`.
    #[arg(long, global = true, env = "HASHROLL_VAULT_TOKEN_FILE")]
    pub vault_token_file: Option<PathBuf>,

    /// Kubernetes auth: the Vault role to log in as.
    #[arg(
        long,
        global = true,
        env = "HASHROLL_VAULT_ROLE",
        required_if_eq("vault_auth_method", "kubernetes")
    )]
    pub vault_role: Option<String>,

    /// Kubernetes auth: where the auth method is mounted.
    #[arg(
        long,
        global = true,
        env = "HASHROLL_VAULT_AUTH_MOUNT",
        default_value = "kubernetes"
    )]
    pub vault_auth_mount: String,

    /// Kubernetes auth: the service-account token to log in with.
    #[arg(
        long,
        global = true,
        env = "HASHROLL_VAULT_SA_TOKEN_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub vault_sa_token_file: PathBuf,

    /// PEM file of the CA that signed Vault's certificate (else the system roots).
    #[arg(long, global = true, env = "HASHROLL_VAULT_CA_FILE")]
    pub vault_ca_file: Option<PathBuf>,

    /// Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    #[arg(long, global = true, env = "HASHROLL_VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,

    /// How often each Vault path is read (with up to 10% jitter).
    #[arg(long, global = true, env = "HASHROLL_VAULT_POLL_INTERVAL", value_parser = parse_interval,
          default_value = "60s")]
    pub vault_poll_interval: Duration,

    /// Vault reads in flight at once.
    #[arg(long, global = true, env = "HASHROLL_VAULT_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub vault_concurrency: u16,

    /// Track Vault paths key by key: read the values (needs `read` on the data, not only the metadata)
    /// so a new version that changes only keys a workload does not use rolls nothing.
    #[arg(long, global = true, env = "HASHROLL_VAULT_KEY_LEVEL")]
    pub vault_key_level: bool,
}

impl VaultFlags {
    /// The address from the flag or `VAULT_ADDR`; None: Vault is not used.
    pub fn addr(&self) -> Option<String> {
        self.vault_addr
            .clone()
            .or_else(|| std::env::var("VAULT_ADDR").ok())
            .map(|a| a.trim().trim_end_matches('/').to_string())
            .filter(|a| !a.is_empty())
    }
}

/// A poll interval with a unit (`60s`, `500ms`, `5m`), from 100 ms to one hour. (Its own parser, not
/// `cli`'s: `cli` includes these flags.)
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = (s.trim().parse())
        .map_err(|_| format!("{s:?} is not a duration with a unit (e.g. 60s, 500ms, 5m)"))?;
    Duration::try_from(d)
        .ok()
        .filter(|d| (Duration::from_millis(100)..=Duration::from_secs(3600)).contains(d))
        .ok_or_else(|| format!("{s:?} is out of range (100ms to 1h)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_intervals_need_a_unit_and_a_sane_range() {
        assert_eq!(parse_interval("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("200ms"), Ok(Duration::from_millis(200)));
        for bad in ["60", "0s", "10ms", "2h", "soon"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kubernetes_auth_needs_a_role_before_anything_starts() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let args = ["hashroll", "--vault-addr=https://vault:8200"]
                .iter()
                .chain(extra);
            crate::cli::Args::try_parse_from(args)
        };
        let err = parse(&["--vault-auth-method=kubernetes"]).unwrap_err();
        assert!(err.to_string().contains("--vault-role"), "{err}");
        let ok = parse(&["--vault-auth-method=kubernetes", "--vault-role=hashroll"]).unwrap();
        assert_eq!(ok.vault.vault_auth_method, AuthMethod::Kubernetes);
        assert_eq!(ok.vault.vault_poll_interval, Duration::from_secs(60));
        assert!(parse(&[]).is_ok(), "token auth needs no role");
    }
}
