//! Test control: fault injection, latency, the request log and the in-process `Control` handle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::server::State;
use crate::status::ApiError;
use crate::store::TemplateRecord;

/// Selects requests for fault injection. `None` fields match anything.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct RequestMatch {
    /// Verb: get list watch create update patch delete deletecollection.
    pub verb: Option<String>,
    /// Resource, with subresource as `deployments/status`.
    pub resource: Option<String>,
    /// Namespace (cluster-wide requests have none and only match `None`).
    pub namespace: Option<String>,
}

impl RequestMatch {
    /// Whether a request with these attributes is selected.
    pub fn matches(&self, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == resource)
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| Some(n) == namespace)
    }
}

/// An injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with a Status of this HTTP code (500 InternalError, 503 ServiceUnavailable, others by code).
    Status(u16),
    /// 429 TooManyRequests with a Retry-After header.
    TooManyRequests {
        /// Value of the Retry-After header.
        retry_after_secs: u64,
    },
}

impl Fault {
    /// The error the client sees.
    pub fn to_error(self) -> ApiError {
        match self {
            Fault::TooManyRequests { retry_after_secs } => {
                ApiError::too_many_requests(retry_after_secs)
            }
            Fault::Status(503) => ApiError {
                retry_after: Some(1),
                ..ApiError::unavailable(
                    "the server is currently unable to handle the request (injected fault)",
                )
            },
            Fault::Status(429) => ApiError::too_many_requests(1),
            Fault::Status(500) => ApiError::internal(
                "an error on the server (injected fault) has prevented the request from succeeding",
            ),
            Fault::Status(code) => {
                ApiError::new(code, reason_for(code), format!("injected fault {code}"))
            }
        }
    }
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// The workload status simulator (a stand-in for the deployment/statefulset/daemonset controllers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkloadSim {
    /// No controller: workload status is never written.
    #[default]
    Off,
    /// Status catches up with every spec change at once.
    Immediate,
    /// Status catches up this long after a spec change.
    Delay(Duration),
    /// Status is written once on create and then never again: every later rollout looks stuck.
    Never,
}

struct Rule {
    remaining: usize,
    m: RequestMatch,
    fault: Option<Fault>,
}

/// Mutable test-control state shared by the server and `Control` handles.
pub(crate) struct ControlState {
    faults: Mutex<Vec<Rule>>,
    gone: Mutex<Vec<RequestMatch>>,
    latency: Mutex<Duration>,
    pub(crate) rbac: AtomicBool,
    sim: Mutex<WorkloadSim>,
    requests: Mutex<BTreeMap<(String, String), u64>>,
    pub(crate) close_watches: tokio::sync::watch::Sender<u64>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

/// Commands for the accept loop.
pub(crate) enum Command {
    Restart(Duration, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

impl ControlState {
    pub(crate) fn new(
        rbac: bool,
        sim: WorkloadSim,
        commands: mpsc::UnboundedSender<Command>,
    ) -> ControlState {
        ControlState {
            faults: Mutex::new(Vec::new()),
            gone: Mutex::new(Vec::new()),
            latency: Mutex::new(Duration::ZERO),
            rbac: AtomicBool::new(rbac),
            sim: Mutex::new(sim),
            requests: Mutex::new(BTreeMap::new()),
            close_watches: tokio::sync::watch::channel(0).0,
            commands,
        }
    }

    pub(crate) fn latency(&self) -> Duration {
        *self.latency.lock().unwrap()
    }

    pub(crate) fn sim(&self) -> WorkloadSim {
        *self.sim.lock().unwrap()
    }

    pub(crate) fn rbac_on(&self) -> bool {
        self.rbac.load(Ordering::Relaxed)
    }

    pub(crate) fn count(&self, verb: &str, resource: &str) {
        *self
            .requests
            .lock()
            .unwrap()
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
    }

    /// Consumes one matching rule: `Some(Some(fault))` to fail, `Some(None)` to cut, `None` to proceed.
    pub(crate) fn take_fault(
        &self,
        verb: &str,
        resource: &str,
        ns: Option<&str>,
    ) -> Option<Option<Fault>> {
        let mut rules = self.faults.lock().unwrap();
        let i = rules
            .iter()
            .position(|r| r.remaining > 0 && r.m.matches(verb, resource, ns))?;
        rules[i].remaining -= 1;
        let f = rules[i].fault;
        if rules[i].remaining == 0 {
            rules.remove(i);
        }
        Some(f)
    }

    pub(crate) fn take_gone(&self, resource: &str, ns: Option<&str>) -> bool {
        let mut g = self.gone.lock().unwrap();
        match g.iter().position(|m| m.matches("watch", resource, ns)) {
            Some(i) => {
                g.remove(i);
                true
            }
            None => false,
        }
    }

    fn add_rule(&self, n: usize, m: RequestMatch, fault: Option<Fault>) {
        if n > 0 {
            self.faults.lock().unwrap().push(Rule {
                remaining: n,
                m,
                fault,
            });
        }
    }
}

/// A cheap, cloneable handle for steering a running server from tests.
#[derive(Clone)]
pub struct Control {
    pub(crate) state: Arc<State>,
}

impl Control {
    /// Fails the next `n` matching requests with `fault`.
    pub fn fail_next(&self, n: usize, m: RequestMatch, fault: Fault) {
        self.state.ctl.add_rule(n, m, Some(fault));
    }

    /// Drops every fault rule not used up yet: requests are served again.
    pub fn clear_faults(&self) {
        self.state.ctl.faults.lock().unwrap().clear();
    }

    /// Cuts the connection part-way through the response of the next `n` matching requests.
    pub fn cut_next(&self, n: usize, m: RequestMatch) {
        self.state.ctl.add_rule(n, m, None);
    }

    /// The next matching watch gets a 410 Expired ERROR event and is closed.
    pub fn gone_next_watch(&self, m: RequestMatch) {
        self.state.ctl.gone.lock().unwrap().push(m);
    }

    /// Ends every open watch stream cleanly.
    pub fn close_watches(&self) {
        self.state.ctl.close_watches.send_modify(|e| *e += 1);
    }

    /// Drops all retained watch history now.
    pub fn compact(&self) {
        self.state.store.lock().unwrap().compact();
    }

    /// Delays every request by `d` before it is handled.
    pub fn set_latency(&self, d: Duration) {
        *self.state.ctl.latency.lock().unwrap() = d;
    }

    /// Drops every connection, refuses new ones for `down_for`, then serves again on the same port with the
    /// same data. Returns once the server accepts connections again.
    pub async fn restart(&self, down_for: Duration) {
        let (tx, rx) = oneshot::channel();
        if self
            .state
            .ctl
            .commands
            .send(Command::Restart(down_for, tx))
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Turns RBAC enforcement on or off.
    pub fn set_rbac(&self, on: bool) {
        self.state.ctl.rbac.store(on, Ordering::Relaxed);
    }

    /// Changes the workload status simulator.
    pub fn set_workload_controller(&self, sim: WorkloadSim) {
        *self.state.ctl.sim.lock().unwrap() = sim;
    }

    /// How many requests with this verb and resource (e.g. `deployments/status`) were served.
    pub fn request_count(&self, verb: &str, resource: &str) -> u64 {
        self.state
            .ctl
            .requests
            .lock()
            .unwrap()
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// All request counts by (verb, resource).
    pub fn request_counts(&self) -> BTreeMap<(String, String), u64> {
        self.state.ctl.requests.lock().unwrap().clone()
    }

    /// Clears the request log.
    pub fn reset_request_log(&self) {
        self.state.ctl.requests.lock().unwrap().clear();
    }

    /// Every distinct pod template stored for a workload, oldest first. `resource` is the plural
    /// (`deployments`, `statefulsets`, `daemonsets`, `cronjobs`, `rollouts`).
    pub fn rollouts(&self, resource: &str, namespace: &str, name: &str) -> Vec<TemplateRecord> {
        let Some(def) = self
            .state
            .registry
            .all()
            .iter()
            .find(|d| d.plural == resource && d.template.is_some())
        else {
            return Vec::new();
        };
        self.state
            .store
            .lock()
            .unwrap()
            .rollouts(&def.store_id(), namespace, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl() -> ControlState {
        ControlState::new(false, WorkloadSim::Off, mpsc::unbounded_channel().0)
    }

    #[test]
    fn faults_fire_exactly_n_times_for_matching_requests_only() {
        let c = ctl();
        let m = RequestMatch {
            verb: Some("list".into()),
            resource: Some("secrets".into()),
            namespace: None,
        };
        c.add_rule(2, m, Some(Fault::Status(503)));
        assert_eq!(c.take_fault("list", "configmaps", None), None);
        assert_eq!(
            c.take_fault("list", "secrets", Some("a")),
            Some(Some(Fault::Status(503)))
        );
        assert_eq!(
            c.take_fault("list", "secrets", None),
            Some(Some(Fault::Status(503)))
        );
        assert_eq!(c.take_fault("list", "secrets", None), None);
    }

    #[test]
    fn namespace_match_requires_that_namespace() {
        let m = RequestMatch {
            namespace: Some("a".into()),
            ..Default::default()
        };
        assert!(m.matches("get", "secrets", Some("a")));
        assert!(!m.matches("get", "secrets", Some("b")));
        assert!(!m.matches("list", "secrets", None));
    }

    #[test]
    fn fault_errors_have_real_reasons() {
        let e = Fault::TooManyRequests {
            retry_after_secs: 2,
        }
        .to_error();
        assert_eq!(
            (e.code, e.reason, e.retry_after),
            (429, "TooManyRequests", Some(2))
        );
        assert_eq!(Fault::Status(503).to_error().reason, "ServiceUnavailable");
        assert_eq!(Fault::Status(500).to_error().reason, "InternalError");
    }

    #[test]
    fn gone_is_consumed_once() {
        let c = ctl();
        c.gone.lock().unwrap().push(RequestMatch {
            resource: Some("secrets".into()),
            ..Default::default()
        });
        assert!(!c.take_gone("configmaps", None));
        assert!(c.take_gone("secrets", Some("x")));
        assert!(!c.take_gone("secrets", Some("x")));
    }
}
