//! Leader election on a `coordination.k8s.io/v1` Lease: one replica leads (watches and writes), the
//! others wait and take over when the leader stops renewing or gives the Lease up.
//!
//! The decision ([`decide`], [`next_spec`], [`released_spec`]) is pure; [`Elector`] does the I/O. A held
//! Lease expires one `leaseDurationSeconds` after *this* process last saw it change (by its own monotonic
//! clock), not at `renewTime + duration`: comparing another node's wall clock with ours would let clock skew
//! hand the Lease to two replicas at once. The leader gives up after `renew deadline` without a successful
//! renewal, which is shorter than the lease duration, so it stops before anyone else may start.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::error::ErrorClass;

/// How this process takes part in the election.
#[derive(Clone, Debug)]
pub struct ElectionSettings {
    pub namespace: String,
    pub name: String,
    /// Unique per process: written as `holderIdentity`.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// The Lease as this process last saw it, with when it last changed by this process's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `holderIdentity`; None when empty (released or never held).
    pub holder: Option<String>,
    /// `leaseDurationSeconds` as written by the holder.
    pub lease_duration: Duration,
    /// When this process first saw the Lease at its current resourceVersion.
    pub changed_at: Instant,
}

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Absent, released or expired: take it.
    Acquire,
    /// Already ours: renew it.
    Renew,
    /// Someone else holds it; it counts as expired after `expires_in` without a change.
    Wait {
        holder: String,
        expires_in: Duration,
    },
}

/// Decides from the Lease as observed (None: it does not exist), this process's identity and now.
pub fn decide(observed: Option<&Observed>, me: &str, now: Instant) -> Decision {
    let Some(seen) = observed else {
        return Decision::Acquire;
    };
    match seen.holder.as_deref() {
        None => Decision::Acquire,
        Some(holder) if holder == me => Decision::Renew,
        Some(holder) => {
            let age = now.saturating_duration_since(seen.changed_at);
            if age >= seen.lease_duration {
                Decision::Acquire
            } else {
                Decision::Wait {
                    holder: holder.to_string(),
                    expires_in: seen.lease_duration - age,
                }
            }
        }
    }
}

/// Remembers the Lease's resourceVersion and when it last changed, so expiry is judged by our clock.
#[derive(Clone, Debug, Default)]
pub struct Observer {
    last: Option<(String, Instant)>,
}

impl Observer {
    /// Records the Lease as read now and returns what [`decide`] needs. `default_duration` stands in for
    /// a missing or invalid `leaseDurationSeconds`.
    pub fn observe(&mut self, lease: &Lease, default_duration: Duration, now: Instant) -> Observed {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let changed_at = match &self.last {
            Some((v, at)) if *v == version => *at,
            _ => now,
        };
        self.last = Some((version, changed_at));
        let spec = lease.spec.as_ref();
        Observed {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            lease_duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .filter(|&s| s > 0)
                .map(|s| Duration::from_secs(s as u64))
                .unwrap_or(default_duration),
            changed_at,
        }
    }
}

/// Whole seconds for `leaseDurationSeconds`, rounded up so the Lease never claims less than we wait.
fn duration_seconds(d: Duration) -> i32 {
    d.as_secs_f64().ceil().clamp(1.0, i32::MAX as f64) as i32
}

/// The spec that makes `me` the holder (acquire or renew), from the spec as read (None: no Lease yet).
pub fn next_spec(
    current: Option<&LeaseSpec>,
    me: &str,
    lease_duration: Duration,
    now: jiff::Timestamp,
) -> LeaseSpec {
    let mine = current.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(duration_seconds(lease_duration)),
        renew_time: Some(MicroTime(now)),
        acquire_time: if mine {
            current.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        lease_transitions: Some(match current {
            Some(_) if !mine => transitions.saturating_add(1),
            _ => transitions,
        }),
        ..current.cloned().unwrap_or_default()
    }
}

/// The spec that gives the Lease up: no holder, so any candidate takes it on its next try. The shortest
/// duration helps candidates that judge expiry by duration alone.
pub fn released_spec(current: &LeaseSpec, now: jiff::Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        acquire_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

/// This process's identity: the replica's name (`instance`, the pod or host name) plus a random suffix,
/// so two processes on one host, or a restarted container in the same pod, never count as the same holder.
pub fn identity(base: &str) -> String {
    let mut suffix = [0u8; 4];
    // Without randomness, fall back to the process id: still distinct between processes on one host.
    if getrandom::fill(&mut suffix).is_err() {
        suffix = std::process::id().to_be_bytes();
    }
    format!("{base}_{}", hex::encode(suffix))
}

/// The outcome of one try at acquiring or renewing.
#[derive(Debug)]
enum Attempt {
    Held,
    Waiting(String),
    /// Someone wrote the Lease between our read and our write (409).
    Conflict,
}

/// An API error that retrying will not fix (permissions, a missing namespace, a rejected object).
fn is_fatal(e: &kube::Error) -> bool {
    matches!(
        ErrorClass::of(e),
        ErrorClass::Forbidden | ErrorClass::NotFound | ErrorClass::Fatal
    )
}

fn is_conflict(e: &kube::Error) -> bool {
    ErrorClass::of(e) == ErrorClass::Conflict
}

/// Runs the election against the API server.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    settings: ElectionSettings,
    observer: Observer,
}

impl Elector {
    pub fn new(client: Client, settings: ElectionSettings) -> Elector {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observer: Observer::default(),
        }
    }

    /// `namespace/name`, for log lines and errors.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.settings.namespace, self.settings.name)
    }

    /// Tries every retry period until this process holds the Lease; returns when it does. Logs the
    /// holder once while waiting. Fails only on errors retrying cannot fix.
    pub async fn acquire(&mut self) -> anyhow::Result<()> {
        let mut announced: Option<String> = None;
        loop {
            match self.try_once().await {
                Ok(Attempt::Held) => {
                    tracing::info!(lease = %self.lease(), identity = %self.settings.identity, "became leader");
                    return Ok(());
                }
                Ok(Attempt::Waiting(holder)) => {
                    if announced.is_none() {
                        tracing::info!(lease = %self.lease(), holder = %holder, identity = %self.settings.identity,
                            "waiting to become leader");
                    } else if announced.as_deref() != Some(holder.as_str()) {
                        tracing::debug!(lease = %self.lease(), holder = %holder, "the Lease has a new holder");
                    }
                    announced = Some(holder);
                }
                Ok(Attempt::Conflict) => {
                    tracing::debug!(lease = %self.lease(), "another replica wrote the Lease first")
                }
                Err(e) if is_fatal(&e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "Lease {}: cannot take part in leader election (needs get, create and update on \
                         leases in namespace {})",
                        self.lease(),
                        self.settings.namespace
                    )));
                }
                Err(e) => {
                    tracing::warn!(lease = %self.lease(), error = %e, "cannot read or write the Lease; retrying")
                }
            }
            tokio::time::sleep(self.settings.retry_period).await;
        }
    }

    /// Renews every retry period while leading; returns (why) only when leadership is lost: another
    /// holder took the Lease, or no renewal succeeded within the renew deadline.
    pub async fn hold(&mut self) -> String {
        let expired = format!(
            "not renewed within --leader-election-renew-deadline ({:?})",
            self.settings.renew_deadline
        );
        let mut renewed_at = Instant::now();
        loop {
            tokio::time::sleep(self.settings.retry_period).await;
            let started = Instant::now();
            let deadline = renewed_at + self.settings.renew_deadline;
            if started >= deadline {
                return expired;
            }
            match tokio::time::timeout_at(deadline, self.try_once()).await {
                Ok(Ok(Attempt::Held)) => renewed_at = started,
                Ok(Ok(Attempt::Waiting(holder))) => {
                    return format!("the Lease is now held by {holder}");
                }
                Ok(Ok(Attempt::Conflict)) => {
                    tracing::warn!(lease = %self.lease(), "the Lease changed while renewing; retrying")
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.lease(), error = %e, "cannot renew the Lease; retrying")
                }
                Err(_) => return expired,
            }
        }
    }

    /// Gives the Lease up if this process still holds it, so a standby takes over at once.
    /// Returns whether it was released.
    pub async fn release(&self) -> Result<bool, kube::Error> {
        // A renewal cut short may land between our read and write: read again on a conflict.
        for _ in 0..3 {
            let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
                return Ok(false);
            };
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
                return Ok(false);
            }
            lease.spec = Some(released_spec(&spec, jiff::Timestamp::now()));
            match self
                .api
                .replace(&self.settings.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// One read, one decision, at most one write.
    async fn try_once(&mut self) -> Result<Attempt, kube::Error> {
        let now = Instant::now();
        let me = self.settings.identity.clone();
        let current = self.api.get_opt(&self.settings.name).await?;
        let lease = match current {
            None => Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(next_spec(
                    None,
                    &me,
                    self.settings.lease_duration,
                    jiff::Timestamp::now(),
                )),
            },
            Some(mut lease) => {
                let seen = self
                    .observer
                    .observe(&lease, self.settings.lease_duration, now);
                if let Decision::Wait { holder, .. } = decide(Some(&seen), &me, now) {
                    return Ok(Attempt::Waiting(holder));
                }
                lease.spec = Some(next_spec(
                    lease.spec.as_ref(),
                    &me,
                    self.settings.lease_duration,
                    jiff::Timestamp::now(),
                ));
                // `replace` sends the resourceVersion we read: a concurrent writer makes it fail with 409.
                return match self
                    .api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(Attempt::Held),
                    Err(e) if is_conflict(&e) => Ok(Attempt::Conflict),
                    Err(e) => Err(e),
                };
            }
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            Err(e) if is_conflict(&e) => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn seen(holder: Option<&str>, age: Duration, now: Instant) -> Observed {
        Observed {
            holder: holder.map(str::to_string),
            lease_duration: 15 * SECOND,
            changed_at: now - age,
        }
    }

    #[test]
    fn absent_lease_is_acquired() {
        assert_eq!(decide(None, "me", Instant::now()), Decision::Acquire);
    }

    #[test]
    fn lease_held_by_another_and_fresh_is_waited_on() {
        let now = Instant::now();
        assert_eq!(
            decide(Some(&seen(Some("other"), 5 * SECOND, now)), "me", now),
            Decision::Wait {
                holder: "other".into(),
                expires_in: 10 * SECOND
            }
        );
    }

    #[test]
    fn lease_held_by_another_expires_one_duration_after_its_last_change() {
        let now = Instant::now();
        let just_before = seen(Some("other"), 15 * SECOND - Duration::from_millis(1), now);
        assert!(matches!(
            decide(Some(&just_before), "me", now),
            Decision::Wait { .. }
        ));
        assert_eq!(
            decide(Some(&seen(Some("other"), 15 * SECOND, now)), "me", now),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&seen(Some("other"), 60 * SECOND, now)), "me", now),
            Decision::Acquire
        );
    }

    #[test]
    fn my_own_lease_is_renewed_even_when_old() {
        let now = Instant::now();
        assert_eq!(
            decide(Some(&seen(Some("me"), SECOND, now)), "me", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&seen(Some("me"), 60 * SECOND, now)), "me", now),
            Decision::Renew
        );
    }

    #[test]
    fn released_lease_is_acquired_at_once() {
        let now = Instant::now();
        assert_eq!(
            decide(Some(&seen(None, Duration::ZERO, now)), "me", now),
            Decision::Acquire
        );
    }

    fn lease(version: &str, holder: Option<&str>, seconds: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: seconds,
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn expiry_counts_from_the_last_change_this_process_saw() {
        let mut observer = Observer::default();
        let t0 = Instant::now();
        let first = observer.observe(&lease("1", Some("other"), Some(2)), 15 * SECOND, t0);
        assert_eq!(first.changed_at, t0);
        assert_eq!(first.lease_duration, 2 * SECOND);
        // Unchanged: the clock keeps running from the first sight.
        let again = observer.observe(
            &lease("1", Some("other"), Some(2)),
            15 * SECOND,
            t0 + SECOND,
        );
        assert_eq!(again.changed_at, t0);
        assert_eq!(
            decide(Some(&again), "me", t0 + 2 * SECOND),
            Decision::Acquire
        );
        // A renewal (new resourceVersion) restarts it.
        let renewed = observer.observe(
            &lease("2", Some("other"), Some(2)),
            15 * SECOND,
            t0 + 2 * SECOND,
        );
        assert_eq!(renewed.changed_at, t0 + 2 * SECOND);
        assert!(matches!(
            decide(Some(&renewed), "me", t0 + 3 * SECOND),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn empty_holder_and_missing_duration_are_read_sensibly() {
        let mut observer = Observer::default();
        let now = Instant::now();
        let o = observer.observe(&lease("1", Some(""), None), 15 * SECOND, now);
        assert_eq!(o.holder, None);
        assert_eq!(o.lease_duration, 15 * SECOND);
        assert_eq!(decide(Some(&o), "me", now), Decision::Acquire);
    }

    #[test]
    fn acquiring_records_the_transition_and_renewing_keeps_it() {
        let t1 = jiff::Timestamp::from_second(1_000).unwrap();
        let t2 = jiff::Timestamp::from_second(1_010).unwrap();
        let created = next_spec(None, "me", Duration::from_millis(1500), t1);
        assert_eq!(created.holder_identity.as_deref(), Some("me"));
        assert_eq!(created.lease_duration_seconds, Some(2), "rounded up");
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.acquire_time, Some(MicroTime(t1)));

        let renewed = next_spec(Some(&created), "me", 15 * SECOND, t2);
        assert_eq!(renewed.acquire_time, Some(MicroTime(t1)));
        assert_eq!(renewed.renew_time, Some(MicroTime(t2)));
        assert_eq!(renewed.lease_transitions, Some(0));

        let taken = next_spec(Some(&renewed), "other", 15 * SECOND, t2);
        assert_eq!(taken.holder_identity.as_deref(), Some("other"));
        assert_eq!(taken.acquire_time, Some(MicroTime(t2)));
        assert_eq!(taken.lease_transitions, Some(1));

        let released = released_spec(&taken, t2);
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_transitions, Some(1));
        let again = next_spec(Some(&released), "me", 15 * SECOND, t2);
        assert_eq!(again.lease_transitions, Some(2));
    }

    #[test]
    fn identities_differ_between_processes_on_one_host() {
        let (a, b) = (identity("pod"), identity("pod"));
        assert_ne!(a, b);
        assert!(a.contains('_'), "{a}");
    }
}
