//! `kube-testserver`: runs the test API server as a process for kubectl tests, benchmarks and demos.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use kube_testserver::{CustomResource, ServerOptions, StaticToken, TestServer};

/// A Kubernetes API server for tests: in memory, plain HTTP, bearer tokens.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Write an admin kubeconfig for the server here.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Enforce RBAC for non-admin tokens.
    #[arg(long)]
    rbac: bool,
    /// Watch events retained for resuming watchers.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Custom resources to serve: `argo-rollouts`.
    #[arg(long = "crd")]
    crds: Vec<String>,
    /// Workload status simulator: off, immediate, never, delay=2s.
    #[arg(long, default_value = "off")]
    workload_controller: String,
    /// Static tokens, one per line: `token,user,uid,"group1,group2"` (the kube-apiserver token file format).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Milliseconds between watch bookmarks.
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
}

/// Parses a kube-apiserver style static token file.
fn parse_token_file(text: &str) -> anyhow::Result<Vec<StaticToken>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(4, ',');
        let token = fields.next().unwrap_or_default().trim();
        let user = fields.next().map(str::trim).unwrap_or_default();
        if token.is_empty() || user.is_empty() {
            anyhow::bail!(
                "token file line {}: expected `token,user[,uid[,\"groups\"]]`",
                i + 1
            );
        }
        let _uid = fields.next();
        let groups = fields
            .next()
            .map(|g| {
                g.trim()
                    .trim_matches('"')
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        out.push(StaticToken {
            token: token.into(),
            user: user.into(),
            groups,
        });
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut custom = Vec::new();
    for c in &args.crds {
        match c.as_str() {
            "argo-rollouts" => custom.push(CustomResource::argo_rollouts()),
            other => anyhow::bail!("unknown --crd {other:?} (known: argo-rollouts)"),
        }
    }
    let tokens = match &args.token_file {
        Some(p) => parse_token_file(
            &std::fs::read_to_string(p)
                .with_context(|| format!("reading token file {}", p.display()))?,
        )?,
        None => Vec::new(),
    };
    let opts = ServerOptions {
        listen: args.listen,
        history_len: args.history,
        rbac: args.rbac,
        custom_resources: custom,
        workload_controller: kube_testserver::control_parse_workload_sim(&args.workload_controller)
            .map_err(|e| anyhow::anyhow!("--workload-controller: {e}"))?,
        bookmark_interval: std::time::Duration::from_millis(args.bookmark_interval_ms),
        tokens,
    };
    let server = TestServer::start_with(opts).await?;
    if let Some(p) = &args.kubeconfig_out {
        server
            .write_kubeconfig(p)
            .with_context(|| format!("writing kubeconfig {}", p.display()))?;
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", server.url())?;
    stdout.flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_parse_like_kube_apiserver() {
        let t = parse_token_file("# c\nabc,alice,1,\"dev,ops\"\nxyz,bob\n").unwrap();
        assert_eq!(
            t[0],
            StaticToken {
                token: "abc".into(),
                user: "alice".into(),
                groups: vec!["dev".into(), "ops".into()]
            }
        );
        assert!(t[1].groups.is_empty());
        assert!(parse_token_file("onlytoken\n").is_err());
    }
}
