//! Every annotation name hashroll reads or writes, in one place: hashroll's own under `hashroll.dev/`,
//! and Stakater Reloader's, which keep their documented meaning so a cluster can switch without edits.

// ---- written by hashroll ----------------------------------------------------------------------------

/// Annotation on the workload's metadata: the stamp hashroll last recorded (baseline or roll).
pub const STAMP_ANNOTATION: &str = "hashroll.dev/hash";
/// Annotation on the workload's metadata: per-source keyed digests, so an Event can name what changed.
pub const SOURCES_ANNOTATION: &str = "hashroll.dev/sources";
/// Annotation on the pod template: changing it is what rolls the pods.
pub const TEMPLATE_ANNOTATION: &str = "hashroll.dev/hash";
/// Annotation on the workload's metadata: when hashroll last rolled it (RFC 3339), so a pause period
/// outlives a restart or a failover.
pub const ROLLED_AT_ANNOTATION: &str = "hashroll.dev/rolled-at";

/// Label on the canary ConfigMap (`--canary-interval`): a ConfigMap carrying it and the token annotation
/// below is never a source.
pub const CANARY_LABEL: &str = "hashroll.dev/canary";
/// Annotation on the canary ConfigMap: the token of its latest write.
pub const CANARY_TOKEN_ANNOTATION: &str = "hashroll.dev/canary-token";

/// Annotation on a workload's metadata: the stamp of its roll whose rollout failed (progress deadline
/// exceeded, or not done within `--rollout-timeout`) under `--max-concurrent-rollouts`. While the
/// workload still records that stamp, the rolls that carry the same source digests are held back (the
/// halt outlives a restart and a failover); any later roll of the workload ends it.
pub const ROLLOUT_FAILED_ANNOTATION: &str = "hashroll.dev/rollout-failed";

// ---- read on workloads ------------------------------------------------------------------------------

/// `"true"`: track every Secret and ConfigMap the pod spec uses; `"false"`: never roll this workload.
pub const RELOAD: &str = "hashroll.dev/reload";
/// Comma list of Secret names tracked whole, referenced by the pod spec or not.
pub const SECRETS: &str = "hashroll.dev/secrets";
/// Comma list of ConfigMap names tracked whole, referenced by the pod spec or not.
pub const CONFIGMAPS: &str = "hashroll.dev/configmaps";
/// Comma list of Secret names never tracked.
pub const EXCLUDE_SECRETS: &str = "hashroll.dev/exclude-secrets";
/// Comma list of ConfigMap names never tracked.
pub const EXCLUDE_CONFIGMAPS: &str = "hashroll.dev/exclude-configmaps";
/// `"0"`, `"1"`, …: under `--max-concurrent-rollouts`, the wave the workload rolls in (lower first; without
/// it, after every numbered wave).
pub const ROLLOUT_WAVE: &str = "hashroll.dev/rollout-wave";
/// `"annotation"` (default) or `"restart"` (Argo Rollouts: set `spec.restartAt` instead).
pub const ROLLOUT_STRATEGY: &str = "hashroll.dev/rollout-strategy";

/// Stakater: true (as Go's `strconv.ParseBool` reads it) tracks every reference; false opts out of
/// `--auto-reload-all`.
pub const STAKATER_AUTO: &str = "reloader.stakater.com/auto";
/// Stakater: true tracks Secret references (any value withdraws `--auto-reload-all` for Secrets).
pub const STAKATER_SECRET_AUTO: &str = "secret.reloader.stakater.com/auto";
/// Stakater: true tracks ConfigMap references (any value withdraws `--auto-reload-all` for ConfigMaps).
pub const STAKATER_CONFIGMAP_AUTO: &str = "configmap.reloader.stakater.com/auto";
/// Stakater: comma list of anchored regular expressions naming Secrets to track.
pub const STAKATER_SECRET_RELOAD: &str = "secret.reloader.stakater.com/reload";
/// Stakater: comma list of anchored regular expressions naming ConfigMaps to track.
pub const STAKATER_CONFIGMAP_RELOAD: &str = "configmap.reloader.stakater.com/reload";
/// Stakater: comma list of Secret names (exact) never tracked; read on the workload's metadata only.
pub const STAKATER_SECRET_EXCLUDE: &str = "secrets.exclude.reloader.stakater.com/reload";
/// Stakater: comma list of ConfigMap names (exact) never tracked; read on the workload's metadata only.
pub const STAKATER_CONFIGMAP_EXCLUDE: &str = "configmaps.exclude.reloader.stakater.com/reload";
/// Stakater: true tracks SecretProviderClass references (csi volumes of the Secrets Store CSI driver).
pub const STAKATER_SPC_AUTO: &str = "secretproviderclass.reloader.stakater.com/auto";
/// Stakater: comma list of anchored regular expressions naming SecretProviderClasses to track.
pub const STAKATER_SPC_RELOAD: &str = "secretproviderclass.reloader.stakater.com/reload";
/// Stakater: comma list of SecretProviderClass names (exact) never tracked; on the metadata only.
pub const STAKATER_SPC_EXCLUDE: &str = "secretproviderclasses.exclude.reloader.stakater.com/reload";
/// Stakater: exactly `"true"` tracks references, but only to sources annotated with [`STAKATER_MATCH`].
pub const STAKATER_SEARCH: &str = "reloader.stakater.com/search";
/// Stakater: on a Secret or ConfigMap, exactly `"true"` makes it eligible for [`STAKATER_SEARCH`]
/// workloads.
pub const STAKATER_MATCH: &str = "reloader.stakater.com/match";
/// Stakater: on an Argo Rollout's metadata, `"restart"` rolls it with `spec.restartAt`.
pub const STAKATER_ROLLOUT_STRATEGY: &str = "reloader.stakater.com/rollout-strategy";
/// Stakater: on a Deployment's metadata, a Go duration: at most one roll per period.
pub const STAKATER_PAUSE_PERIOD: &str = "deployment.reloader.stakater.com/pause-period";

// ---- read on Secrets and ConfigMaps ------------------------------------------------------------------

/// hashroll's annotation that excludes a source from ever rolling anything.
pub const IGNORE_ANNOTATION: &str = "hashroll.dev/ignore";
/// Stakater: on a Secret or ConfigMap, exactly `"true"`: its changes never roll anything.
pub const STAKATER_IGNORE: &str = "reloader.stakater.com/ignore";
