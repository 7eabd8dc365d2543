//! Command-line flags (each also an `HASHROLL_*` environment variable), validated before any connection.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::k8s::watch::{InitialList, ListPath, WatchSettings};
use crate::model::kind::{SourceKind, WorkloadKind};
use crate::model::names::{is_dns1123_label, is_dns1123_subdomain};
use crate::model::policy::PolicySettings;
use crate::reconcile::decision::Visibility;
use crate::reconcile::gate::GateSettings;
use crate::reconcile::scopes::NamespaceFilter;

/// hashroll rolls Deployments, StatefulSets, DaemonSets, CronJobs and Argo Rollouts when the Secrets and
/// ConfigMaps they use change.
#[derive(Parser, Debug, Clone)]
#[command(name = "hashroll", version, about)]
pub struct Args {
    /// Path to a kubeconfig file; without it, in-cluster config or $KUBECONFIG / ~/.kube/config.
    #[arg(long, global = true, env = "HASHROLL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// kubeconfig context to use (default: the current context).
    #[arg(long, global = true, env = "HASHROLL_CONTEXT")]
    pub context: Option<String>,

    /// hashroll's own namespace (for its key Secret); default: $POD_NAMESPACE, then the kubeconfig's namespace.
    #[arg(long, global = true, env = "HASHROLL_CONTROLLER_NAMESPACE", value_parser = parse_namespace)]
    pub controller_namespace: Option<String>,

    /// Watch only these namespaces (comma-separated); default: the whole cluster.
    #[arg(long, global = true, env = "HASHROLL_NAMESPACES", value_delimiter = ',', value_parser = parse_namespace)]
    pub namespaces: Vec<String>,

    /// Act only in namespaces whose labels match this selector (e.g. `hashroll=enabled`).
    #[arg(long, global = true, env = "HASHROLL_NAMESPACE_SELECTOR", value_parser = parse_label_selector)]
    pub namespace_selector: Option<String>,

    /// Never act in these namespaces (comma-separated).
    #[arg(long, global = true, env = "HASHROLL_IGNORE_NAMESPACES", value_delimiter = ',', value_parser = parse_namespace)]
    pub ignore_namespaces: Vec<String>,

    /// Watch only Secrets and ConfigMaps whose labels match this selector (filtered by the API server).
    #[arg(long, global = true, env = "HASHROLL_RESOURCE_LABEL_SELECTOR", value_parser = parse_label_selector)]
    pub resource_label_selector: Option<String>,

    /// Which sources to watch: secrets, configmaps, secretproviderclasses (comma-separated; the last only
    /// where the API server serves the Secrets Store CSI driver's resources).
    #[arg(
        long,
        global = true,
        env = "HASHROLL_WATCH",
        value_delimiter = ',',
        ignore_case = true,
        default_value = "secrets,configmaps,secretproviderclasses"
    )]
    pub watch: Vec<SourceKind>,

    /// Which workload kinds to roll: deployments, statefulsets, daemonsets, cronjobs, rollouts.
    #[arg(
        long,
        global = true,
        env = "HASHROLL_WORKLOAD_KINDS",
        value_delimiter = ',',
        ignore_case = true,
        default_value = "deployments,statefulsets,daemonsets,cronjobs,rollouts"
    )]
    pub workload_kinds: Vec<WorkloadKind>,

    /// Treat every workload as opted in unless it says `hashroll.dev/reload: "false"`.
    #[arg(long, global = true, env = "HASHROLL_AUTO_RELOAD_ALL")]
    pub auto_reload_all: bool,

    /// Honour Stakater Reloader's annotations (`reloader.stakater.com/*`); `--stakater-compat=false` to turn off.
    #[arg(long, global = true, env = "HASHROLL_STAKATER_COMPAT", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub stakater_compat: bool,

    /// Changes reaching one workload within this window produce one roll (e.g. `2s`, `500ms`; `0` disables).
    #[arg(long, global = true, env = "HASHROLL_DEBOUNCE", value_parser = parse_duration, default_value = "2s")]
    pub debounce: Duration,

    /// Secret types never watched (filtered by the API server); empty to watch every type.
    #[arg(
        long,
        global = true,
        env = "HASHROLL_EXCLUDE_SECRET_TYPES",
        value_delimiter = ',',
        default_value = "helm.sh/release.v1"
    )]
    pub exclude_secret_types: Vec<String>,

    /// Log and emit Events for what would roll, patch nothing.
    #[arg(long, global = true, env = "HASHROLL_DRY_RUN")]
    pub dry_run: bool,

    /// Log format.
    #[arg(
        long,
        global = true,
        env = "HASHROLL_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log level or filter (`info`, `debug`, `hashroll=debug,kube=warn`).
    #[arg(long, global = true, env = "HASHROLL_LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`); `off` disables it.
    #[arg(long, env = "HASHROLL_ADMIN_ADDR", default_value = "0.0.0.0:8080", value_parser = parse_admin_addr)]
    pub admin_addr: AdminAddr,

    /// Name of the Secret (in the controller namespace) that holds the installation key for keyed hashes.
    #[arg(long, global = true, env = "HASHROLL_KEY_SECRET", default_value = "hashroll-key", value_parser = parse_name)]
    pub key_secret: String,

    /// How many workload patches may be in flight at once.
    #[arg(long, env = "HASHROLL_PATCH_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub patch_concurrency: u16,

    /// At most this many rolls started per minute, fleet-wide, evenly spaced (a token bucket of one);
    /// the rest wait their turn in the order decided. Off by default.
    #[arg(long, env = "HASHROLL_MAX_ROLLOUTS_PER_MINUTE",
          value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub max_rollouts_per_minute: Option<u32>,

    /// Write the canary ConfigMap (`hashroll-canary` in the controller namespace) this often and time how
    /// long hashroll's own ConfigMap watch takes to bring it back (e.g. `2m`); `0` turns it off.
    #[arg(long, env = "HASHROLL_CANARY_INTERVAL", value_parser = parse_duration, default_value = "0")]
    pub canary_interval: Duration,

    /// A canary write not back through the watch within this long makes `/readyz` fail and gives a
    /// Warning Event, until one comes back.
    #[arg(long, env = "HASHROLL_CANARY_TIMEOUT", value_parser = parse_positive_duration, default_value = "1m")]
    pub canary_timeout: Duration,

    /// Roll in health-gated waves: at most this many rollouts in progress at once, fleet-wide, the next
    /// starting only when one is done as its controller reports it; a failed one halts its change.
    /// Off by default.
    #[arg(long, env = "HASHROLL_MAX_CONCURRENT_ROLLOUTS",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_rollouts: Option<u16>,

    /// Under `--max-concurrent-rollouts`, a rollout not done within this long fails (and halts its change).
    #[arg(long, env = "HASHROLL_ROLLOUT_TIMEOUT", value_parser = parse_positive_duration, default_value = "10m")]
    pub rollout_timeout: Duration,

    /// Label per-workload counters and per-watch metrics with the namespace (one series per namespace).
    #[arg(long, env = "HASHROLL_METRICS_NAMESPACE_LABEL")]
    pub metrics_namespace_label: bool,

    /// How watches read their initial state: `stream` (one watch with `sendInitialEvents`, no list page
    /// held; servers with the WatchList feature on), `pages` (paged LISTs), or `auto` (a probe at
    /// start-up picks `stream` where the server offers it).
    #[arg(
        long,
        env = "HASHROLL_INITIAL_LIST",
        value_enum,
        default_value = "auto"
    )]
    pub initial_list: InitialList,

    #[command(flatten)]
    pub election: LeaderElection,

    /// `--alert-webhook-url`, `--alert-sink`, `--alert-additional-info` (`alerts::settings`).
    #[command(flatten)]
    pub alerts: crate::alerts::settings::AlertFlags,
    #[command(flatten)]
    pub vault: crate::vault::flags::VaultFlags,
    /// With `--leader-elect`: a standby watches and keeps its index like the leader (and as much
    /// memory), deciding and writing nothing, so that on takeover it acts at once, without listing.
    #[arg(long, env = "HASHROLL_WARM_STANDBY")]
    pub warm_standby: bool,

    /// The pod's name, from the downward API: names this replica in Events and in the Lease.
    #[arg(long, env = "POD_NAME", hide = true)]
    pub pod_name: Option<String>,

    /// The pod's namespace, from the downward API: the default controller namespace.
    #[arg(long, env = "POD_NAMESPACE", hide = true)]
    pub pod_namespace: Option<String>,

    /// Without a subcommand, hashroll runs the controller.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What hashroll can do besides running the controller.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Say, read-only, what hashroll tracks for a workload and whether it would roll it now and why; or
    /// which workloads use a Secret or ConfigMap. Takes the controller's flags, so it judges as it does.
    Explain(ExplainArgs),
}

/// `hashroll explain KIND/NAME [-n NAMESPACE] [-o text|json]`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExplainArgs {
    /// What to explain: `deployment/web`, `statefulset/db`, `daemonset/x`, `cronjob/x`, `rollout/x`,
    /// `secret/db` or `configmap/app` (plural names and kinds in any case too).
    #[arg(value_parser = parse_target)]
    pub target: Target,

    /// Its namespace; default: the kubeconfig's.
    #[arg(short = 'n', long = "namespace", value_parser = parse_namespace)]
    pub namespace: Option<String>,

    /// `text` for people, `json` for tools.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: Output,
}

/// The object `explain` is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Workload(WorkloadKind, String),
    Source(SourceKind, String),
}

/// How `explain` prints.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// `kind/name`, the kind named as in the kind tables (singular, plural or the kind itself, any case).
fn parse_target(s: &str) -> Result<Target, String> {
    let (kind, name) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not KIND/NAME (e.g. deployment/web, secret/db)"))?;
    let name = parse_name(name)?;
    let kind = kind.to_ascii_lowercase();
    let is = |i: &crate::model::kind::KindInfo| {
        kind == i.singular || kind == i.plural || kind == i.kind.to_ascii_lowercase()
    };
    if let Some(k) = WorkloadKind::ALL.into_iter().find(|k| is(k.info())) {
        return Ok(Target::Workload(k, name));
    }
    if let Some(k) = SourceKind::ALL.into_iter().find(|k| is(k.info())) {
        return Ok(Target::Source(k, name));
    }
    Err(format!(
        "{kind:?} is not a kind hashroll knows: deployment, statefulset, daemonset, cronjob, rollout, \
         secret or configmap"
    ))
}

// The kind tables give the names accepted on the command line: the plural, and the singular as an alias.
impl ValueEnum for SourceKind {
    fn value_variants<'a>() -> &'a [Self] {
        &SourceKind::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let i = self.info();
        Some(clap::builder::PossibleValue::new(i.plural).alias(i.singular))
    }
}

impl ValueEnum for WorkloadKind {
    fn value_variants<'a>() -> &'a [Self] {
        &WorkloadKind::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let i = self.info();
        Some(clap::builder::PossibleValue::new(i.plural).alias(i.singular))
    }
}

/// Leader election flags, checked together as they are parsed (an invalid combination exits 2 like any
/// invalid flag, before any connection).
#[derive(Debug, Clone)]
pub struct LeaderElection(LeaderElectionFlags);

#[derive(clap::Args, Debug, Clone)]
pub struct LeaderElectionFlags {
    /// Lead through a Lease before watching or writing, so several replicas can run with one active.
    #[arg(long, env = "HASHROLL_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the Lease used for leader election.
    #[arg(long, env = "HASHROLL_LEADER_ELECTION_LEASE_NAME", default_value = "hashroll",
          value_parser = parse_name)]
    pub leader_election_lease_name: String,

    /// Namespace of the leader election Lease (default: the controller namespace).
    #[arg(long, env = "HASHROLL_LEADER_ELECTION_NAMESPACE", value_parser = parse_namespace)]
    pub leader_election_namespace: Option<String>,

    /// How long a standby waits, after the Lease last changed, before taking it over.
    #[arg(long, env = "HASHROLL_LEADER_ELECTION_LEASE_DURATION", value_parser = parse_duration,
          default_value = "15s")]
    pub leader_election_lease_duration: Duration,

    /// How long the leader keeps leading without a successful renewal before it stops.
    #[arg(long, env = "HASHROLL_LEADER_ELECTION_RENEW_DEADLINE", value_parser = parse_duration,
          default_value = "10s")]
    pub leader_election_renew_deadline: Duration,

    /// How often candidates try to acquire, and the leader renews, the Lease.
    #[arg(long, env = "HASHROLL_LEADER_ELECTION_RETRY_PERIOD", value_parser = parse_duration,
          default_value = "2s")]
    pub leader_election_retry_period: Duration,
}

impl std::ops::Deref for LeaderElection {
    type Target = LeaderElectionFlags;
    fn deref(&self) -> &LeaderElectionFlags {
        &self.0
    }
}

impl LeaderElectionFlags {
    /// The leader must give up (renew deadline) before a standby may take over (lease duration), and
    /// must get more than one try at renewing (retry period) in between.
    fn check(&self) -> Result<(), clap::Error> {
        let (duration, deadline, retry) = (
            self.leader_election_lease_duration,
            self.leader_election_renew_deadline,
            self.leader_election_retry_period,
        );
        let problem = if duration < Duration::from_secs(1) {
            format!(
                "--leader-election-lease-duration ({duration:?}) must be at least 1s (a Lease holds whole seconds)"
            )
        } else if duration <= deadline {
            format!(
                "--leader-election-lease-duration ({duration:?}) must be longer than \
                 --leader-election-renew-deadline ({deadline:?})"
            )
        } else if deadline <= retry {
            format!(
                "--leader-election-renew-deadline ({deadline:?}) must be longer than \
                 --leader-election-retry-period ({retry:?})"
            )
        } else if retry.is_zero() {
            "--leader-election-retry-period must be more than 0".to_string()
        } else {
            return Ok(());
        };
        Err(clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            problem,
        ))
    }
}

impl clap::FromArgMatches for LeaderElection {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let flags = LeaderElectionFlags::from_arg_matches(m)?;
        flags.check()?;
        Ok(LeaderElection(flags))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)?;
        self.0.check()
    }
}

impl clap::Args for LeaderElection {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        LeaderElectionFlags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        LeaderElectionFlags::augment_args_for_update(cmd)
    }
}

/// How log lines are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the admin server listens, if anywhere.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AdminAddr {
    Off,
    At(SocketAddr),
}

impl Args {
    /// hashroll's own namespace: the flag, else the pod's, else the kubeconfig's (`fallback`).
    pub fn controller_namespace(&self, fallback: &str) -> String {
        self.controller_namespace
            .clone()
            .or_else(|| self.pod_namespace.clone().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| fallback.to_string())
    }

    /// This replica's name: the pod's, else the host's.
    pub fn instance(&self) -> String {
        self.pod_name
            .clone()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "hashroll".into())
    }

    /// The workload kinds selected, without duplicates.
    pub fn workload_kinds(&self) -> BTreeSet<WorkloadKind> {
        self.workload_kinds.iter().copied().collect()
    }

    /// Why the canary could not come back through the ConfigMap watch (`--watch`, `--namespaces`), if so.
    pub fn canary_unseen(&self, controller_namespace: &str) -> Option<String> {
        if !self.source_kinds().contains(&SourceKind::ConfigMap) {
            return Some("--watch leaves out configmaps".into());
        }
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == controller_namespace)
        {
            return Some(format!(
                "--namespaces leaves out the controller namespace {controller_namespace}"
            ));
        }
        None
    }

    /// The source kinds selected, without duplicates.
    pub fn source_kinds(&self) -> BTreeSet<SourceKind> {
        self.watch.iter().copied().collect()
    }

    /// The Secret types never watched for content, without blanks or duplicates.
    pub fn excluded_secret_types(&self) -> Vec<String> {
        let types: BTreeSet<&str> = self
            .exclude_secret_types
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .collect();
        types.into_iter().map(str::to_string).collect()
    }

    /// The server-side field selector for Secrets, excluding the configured types.
    pub fn secret_field_selector(&self) -> Option<String> {
        let parts: Vec<String> = self
            .excluded_secret_types()
            .iter()
            .map(|t| format!("type!={t}"))
            .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

fn parse_namespace(s: &str) -> Result<String, String> {
    let s = s.trim();
    if is_dns1123_label(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a valid namespace name (lower-case letters, digits and '-', at most 63 characters)"
        ))
    }
}

fn parse_name(s: &str) -> Result<String, String> {
    if is_dns1123_subdomain(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid object name"))
    }
}

/// Parses `0`, `250ms`, `2s`, `1m`, `1.5s` (jiff's friendly format), from 0 to one hour.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|_| format!("{s:?} is not a duration with a unit (e.g. 2s, 500ms, 1m)"))?;
    Duration::try_from(d)
        .ok()
        .filter(|d| *d <= Duration::from_secs(3600))
        .ok_or_else(|| format!("{s:?} is out of range (0 to 1h)"))
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).and_then(|d| {
        if d.is_zero() {
            Err(format!("{s:?} must be more than 0"))
        } else {
            Ok(d)
        }
    })
}

/// Labels an object must carry to match the selector, as far as its requirements ask for a label to be
/// there (`k=v`, `k==v`, `k in (v,…)`, `k`); the others (`!=`, `notin`, `!k`) are met by leaving labels
/// out. For the canary, which the ConfigMap watch must see under `--resource-label-selector`.
pub fn labels_matching(selector: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for req in split_requirements(selector) {
        let req = req.trim();
        if req.contains(" notin ") || req.contains("!=") || req.starts_with('!') {
            continue;
        }
        if let Some((k, rest)) = req.split_once(" in ") {
            let first = rest.trim().trim_start_matches('(').split([',', ')']).next();
            labels.insert(k.trim().into(), first.unwrap_or("").trim().into());
        } else if let Some((k, v)) = req.split_once("==").or(req.split_once('=')) {
            labels.insert(k.trim().into(), v.trim().into());
        } else {
            labels.insert(req.into(), "true".into());
        }
    }
    labels
}

/// Checks the syntax of a label selector before it reaches the API server, so a typo fails at start-up.
fn parse_label_selector(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("the selector is empty".into());
    }
    for req in split_requirements(s) {
        let req = req.trim();
        let valid = if let Some((key, rest)) = req.split_once(" notin ").or(req.split_once(" in "))
        {
            valid_label_key(key.trim())
                && rest.trim().starts_with('(')
                && rest.trim().ends_with(')')
                && rest.trim()[1..rest.trim().len() - 1]
                    .split(',')
                    .all(|v| valid_label_value(v.trim()))
        } else if let Some((k, v)) = req
            .split_once("!=")
            .or(req.split_once("=="))
            .or(req.split_once('='))
        {
            valid_label_key(k.trim()) && valid_label_value(v.trim())
        } else if let Some(k) = req.strip_prefix('!') {
            valid_label_key(k.trim())
        } else {
            valid_label_key(req)
        };
        if !valid {
            return Err(format!(
                "invalid requirement {req:?} in label selector {s:?}"
            ));
        }
    }
    Ok(s.to_string())
}

/// Splits on commas that are not inside `( … )`.
fn split_requirements(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && valid_label_value(name)
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("{s:?} is not a log level or filter: {e}"))
}

fn parse_admin_addr(s: &str) -> Result<AdminAddr, String> {
    if s.eq_ignore_ascii_case("off") || s.is_empty() {
        return Ok(AdminAddr::Off);
    }
    s.parse()
        .map(AdminAddr::At)
        .map_err(|_| format!("{s:?} is not an address like 0.0.0.0:8080 (or `off`)"))
}

impl From<&Args> for PolicySettings {
    fn from(a: &Args) -> Self {
        PolicySettings {
            auto_reload_all: a.auto_reload_all,
            stakater_compat: a.stakater_compat,
            vault_key_level: a.vault.vault_key_level,
        }
    }
}

impl From<&Args> for GateSettings {
    fn from(a: &Args) -> Self {
        GateSettings {
            per_minute: a.max_rollouts_per_minute.and_then(NonZeroU32::new),
            max_concurrent: a
                .max_concurrent_rollouts
                .and_then(|n| NonZeroUsize::new(usize::from(n))),
            rollout_timeout: a.rollout_timeout,
        }
    }
}

impl From<&Args> for NamespaceFilter {
    fn from(a: &Args) -> Self {
        NamespaceFilter {
            only: (!a.namespaces.is_empty()).then(|| a.namespaces.iter().cloned().collect()),
            ignore: a.ignore_namespaces.iter().cloned().collect(),
            by_selector: a.namespace_selector.is_some(),
        }
    }
}

impl From<&Args> for Visibility {
    fn from(a: &Args) -> Self {
        let mut watched = a.source_kinds();
        let mut filtered = BTreeSet::new();
        if a.resource_label_selector.is_some() {
            filtered.extend(watched.iter().copied());
        }
        // Secrets of excluded types are still seen, by name (see `Watched::ExcludedSecrets`).
        filtered.retain(|k| watched.contains(k));
        // Polled, and every path a workload uses is read: one hashroll does not hold is missing.
        if a.vault.addr().is_some() {
            watched.insert(SourceKind::Vault);
        }
        Visibility { watched, filtered }
    }
}

impl From<&Args> for WatchSettings {
    fn from(a: &Args) -> Self {
        WatchSettings {
            resource_labels: a.resource_label_selector.clone(),
            secret_fields: a.secret_field_selector(),
            excluded_secret_types: a.excluded_secret_types(),
            namespace_selector: a.namespace_selector.clone(),
            policy: a.into(),
            // Decided at start-up from `--initial-list` (see `watch::initial_list_path`).
            initial_list: ListPath::Pages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("hashroll").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_production_defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.debounce, Duration::from_secs(2));
        assert!(a.stakater_compat);
        assert!(!a.dry_run);
        assert_eq!(GateSettings::from(&a).per_minute, None, "no rate limit");
        assert_eq!(a.source_kinds().len(), 3);
        assert_eq!(a.workload_kinds().len(), 5);
        assert_eq!(
            a.secret_field_selector().as_deref(),
            Some("type!=helm.sh/release.v1")
        );
    }

    #[test]
    fn invalid_values_name_the_flag() {
        for (args, flag) in [
            (vec!["--debounce", "soon"], "--debounce"),
            (vec!["--namespaces", "Team_A"], "--namespaces"),
            (vec!["--watch", "pods"], "--watch"),
            (vec!["--workload-kinds", "jobs"], "--workload-kinds"),
            (
                vec!["--resource-label-selector", "a in b"],
                "--resource-label-selector",
            ),
            (vec!["--log-format", "xml"], "--log-format"),
            (vec!["--admin-addr", "nowhere"], "--admin-addr"),
            (vec!["--patch-concurrency", "0"], "--patch-concurrency"),
            (
                vec!["--max-rollouts-per-minute", "0"],
                "--max-rollouts-per-minute",
            ),
        ] {
            let err = parse(&args).unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("2h").is_err(), "more than an hour");
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("2 fortnights").is_err());
    }

    #[test]
    fn label_selectors() {
        for ok in [
            "app=web",
            "app in (a,b),tier!=db",
            "!legacy",
            "example.com/team==x",
        ] {
            assert!(parse_label_selector(ok).is_ok(), "{ok}");
        }
        for bad in ["app=we b", "a in b", "=x", ""] {
            assert!(parse_label_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_canary_carries_the_labels_a_selector_asks_for() {
        let labels = labels_matching(
            "tracked=yes, tier==web,team in (a, b),!legacy,env!=dev,x notin (y),has",
        );
        let want: BTreeMap<String, String> = [
            ("tracked", "yes"),
            ("tier", "web"),
            ("team", "a"),
            ("has", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(labels, want);
        let a = parse(&[]).unwrap();
        assert_eq!(a.canary_interval, Duration::ZERO, "off by default");
        assert!(
            parse(&["--canary-timeout", "0"])
                .unwrap_err()
                .to_string()
                .contains("--canary-timeout")
        );
    }

    #[test]
    fn secret_types_can_be_cleared_or_extended() {
        let a = parse(&["--exclude-secret-types", ""]).unwrap();
        assert_eq!(a.secret_field_selector(), None);
        let a = parse(&[
            "--exclude-secret-types",
            "helm.sh/release.v1,kubernetes.io/tls",
        ])
        .unwrap();
        assert_eq!(
            a.secret_field_selector().as_deref(),
            Some("type!=helm.sh/release.v1,type!=kubernetes.io/tls")
        );
    }

    #[test]
    fn leader_election_is_off_by_default_with_client_go_timings() {
        let e = parse(&[]).unwrap().election;
        assert!(!e.leader_elect);
        assert_eq!(e.leader_election_lease_name, "hashroll");
        assert_eq!(e.leader_election_namespace, None);
        assert_eq!(e.leader_election_lease_duration, Duration::from_secs(15));
        assert_eq!(e.leader_election_renew_deadline, Duration::from_secs(10));
        assert_eq!(e.leader_election_retry_period, Duration::from_secs(2));
    }

    #[test]
    fn leader_election_timings_must_be_ordered() {
        let e = parse(&[
            "--leader-elect",
            "--leader-election-lease-duration=2s",
            "--leader-election-renew-deadline=1.5s",
            "--leader-election-retry-period=500ms",
        ])
        .unwrap()
        .election;
        assert!(e.leader_elect);
        assert_eq!(
            e.leader_election_renew_deadline,
            Duration::from_millis(1500)
        );
        for (args, names) in [
            (
                vec!["--leader-election-renew-deadline=15s"],
                [
                    "--leader-election-lease-duration",
                    "--leader-election-renew-deadline",
                ],
            ),
            (
                vec!["--leader-election-retry-period=10s"],
                [
                    "--leader-election-renew-deadline",
                    "--leader-election-retry-period",
                ],
            ),
            (
                vec!["--leader-election-retry-period=0"],
                [
                    "--leader-election-retry-period",
                    "--leader-election-retry-period",
                ],
            ),
            (
                vec![
                    "--leader-election-lease-duration=500ms",
                    "--leader-election-renew-deadline=200ms",
                    "--leader-election-retry-period=100ms",
                ],
                ["--leader-election-lease-duration", "at least 1s"],
            ),
        ] {
            let err = parse(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let text = err.to_string();
            for n in names {
                assert!(text.contains(n), "{args:?}: {text}");
            }
        }
    }

    #[test]
    fn without_a_subcommand_the_controller_runs_and_explain_takes_its_flags() {
        let a = parse(&["--kubeconfig", "/k", "--watch", "configmaps"]).unwrap();
        assert!(a.command.is_none());
        assert!(!a.metrics_namespace_label);
        let a = parse(&[
            "explain",
            "Deployment/web",
            "-n",
            "shop",
            "--watch",
            "configmaps",
            "--auto-reload-all",
            "-o",
            "json",
        ])
        .unwrap();
        let Some(Command::Explain(e)) = &a.command else {
            panic!("explain: {a:?}")
        };
        assert_eq!(
            e.target,
            Target::Workload(WorkloadKind::Deployment, "web".into())
        );
        assert_eq!(
            (e.namespace.as_deref(), e.output),
            (Some("shop"), Output::Json)
        );
        assert_eq!(
            a.source_kinds().len(),
            1,
            "the controller's flag, after the subcommand"
        );
        assert!(a.auto_reload_all);
        let e = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert!(e(&["explain", "web"]).contains("KIND/NAME"));
        assert!(e(&["explain", "pods/web"]).contains("not a kind"));
        assert!(matches!(
            parse(&["explain", "configmaps/app"]).unwrap().command,
            Some(Command::Explain(ExplainArgs {
                target: Target::Source(SourceKind::ConfigMap, _),
                ..
            }))
        ));
    }

    #[test]
    fn stakater_compat_switches_off() {
        assert!(!parse(&["--stakater-compat=false"]).unwrap().stakater_compat);
    }
}
