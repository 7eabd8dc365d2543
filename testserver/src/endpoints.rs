//! Out-of-process control endpoints under `/testserver/` (admin token only), for kubectl tests and
//! benchmarks that run the server as a separate binary.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Response};
use serde_json::{Value, json};

use crate::api::{Body, error_response, json_value};
use crate::control::{Control, Fault, RequestMatch, WorkloadSim};
use crate::server::State;
use crate::status::ApiError;

/// Parses a `--workload-controller` style value: `off`, `immediate`, `never`, `delay=2s` (or `500ms`).
pub fn parse_workload_sim(s: &str) -> Result<WorkloadSim, String> {
    match s {
        "off" => Ok(WorkloadSim::Off),
        "immediate" => Ok(WorkloadSim::Immediate),
        "never" => Ok(WorkloadSim::Never),
        _ => {
            let d = s
                .strip_prefix("delay=")
                .ok_or_else(|| format!("unknown workload controller mode {s:?}"))?;
            // Seconds may be fractional (`delay=1.5s`); plain numbers are seconds too.
            let dur = if let Some(ms) = d.strip_suffix("ms") {
                ms.parse::<u64>().ok().map(Duration::from_millis)
            } else {
                let secs = d.strip_suffix('s').unwrap_or(d);
                secs.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(Duration::from_secs_f64)
            };
            dur.map(WorkloadSim::Delay)
                .ok_or_else(|| format!("invalid delay in workload controller mode {s:?}"))
        }
    }
}

fn request_match(v: &Value) -> RequestMatch {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    RequestMatch {
        verb: s("verb"),
        resource: s("resource"),
        namespace: s("namespace"),
    }
}

fn count(v: &Value) -> usize {
    v.get("n").and_then(Value::as_u64).unwrap_or(1) as usize
}

/// Applies a faults document to the server.
fn apply_faults(ctl: &Control, doc: &Value) -> Result<(), ApiError> {
    let obj = doc
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the faults document must be a JSON object"))?;
    for (k, v) in obj {
        match k.as_str() {
            "fail" => {
                let status = v.get("status").and_then(Value::as_u64).unwrap_or(500) as u16;
                let fault = if status == 429 {
                    Fault::TooManyRequests {
                        retry_after_secs: v.get("retry_after").and_then(Value::as_u64).unwrap_or(1),
                    }
                } else {
                    Fault::Status(status)
                };
                ctl.fail_next(count(v), request_match(v), fault);
            }
            "cut" => ctl.cut_next(count(v), request_match(v)),
            "gone_next_watch" => ctl.gone_next_watch(request_match(v)),
            "close_watches" => {
                if v.as_bool() == Some(true) {
                    ctl.close_watches()
                }
            }
            "compact" => {
                if v.as_bool() == Some(true) {
                    ctl.compact()
                }
            }
            "latency_ms" => ctl.set_latency(Duration::from_millis(v.as_u64().unwrap_or(0))),
            "rbac" => ctl.set_rbac(
                v.as_bool()
                    .ok_or_else(|| ApiError::bad_request("faults.rbac must be a boolean"))?,
            ),
            "workload_controller" => {
                let s = v.as_str().ok_or_else(|| {
                    ApiError::bad_request("faults.workload_controller must be a string")
                })?;
                ctl.set_workload_controller(parse_workload_sim(s).map_err(ApiError::bad_request)?);
            }
            "restart_ms" => {
                let d = Duration::from_millis(v.as_u64().unwrap_or(0));
                let ctl = ctl.clone();
                // Answer first: the restart drops this very connection.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ctl.restart(d).await;
                });
            }
            other => return Err(ApiError::bad_request(format!("unknown fault {other:?}"))),
        }
    }
    Ok(())
}

/// Serves `/testserver/<rest>`.
pub(crate) async fn handle(
    state: &Arc<State>,
    method: &Method,
    rest: &str,
    body: &Bytes,
) -> Response<Body> {
    let ctl = Control {
        state: state.clone(),
    };
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["requests"]) => {
            let list: Vec<Value> = ctl
                .request_counts()
                .into_iter()
                .map(|((verb, resource), count)| json!({ "verb": verb, "resource": resource, "count": count }))
                .collect();
            json_value(200, &json!(list))
        }
        ("POST", ["requests", "reset"]) => {
            ctl.reset_request_log();
            json_value(200, &json!({}))
        }
        ("GET", ["rollouts", resource, ns, name]) => {
            json_value(200, &json!(ctl.rollouts(resource, ns, name)))
        }
        ("POST", ["faults"]) => {
            let doc: Value = match serde_json::from_slice(body) {
                Ok(d) => d,
                Err(e) => {
                    return error_response(&ApiError::bad_request(format!(
                        "invalid faults JSON: {e}"
                    )));
                }
            };
            match apply_faults(&ctl, &doc) {
                Ok(()) => json_value(200, &json!({})),
                Err(e) => error_response(&e),
            }
        }
        _ => error_response(&ApiError::new(
            404,
            "NotFound",
            format!("no test control endpoint {method} /testserver/{rest}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_modes_parse() {
        assert_eq!(parse_workload_sim("off"), Ok(WorkloadSim::Off));
        assert_eq!(
            parse_workload_sim("delay=2s"),
            Ok(WorkloadSim::Delay(Duration::from_secs(2)))
        );
        assert_eq!(
            parse_workload_sim("delay=250ms"),
            Ok(WorkloadSim::Delay(Duration::from_millis(250)))
        );
        assert!(parse_workload_sim("sometimes").is_err());
        assert!(parse_workload_sim("delay=xs").is_err());
        assert!(parse_workload_sim("delay=-1s").is_err());
        assert_eq!(
            parse_workload_sim("delay=1.5s"),
            Ok(WorkloadSim::Delay(Duration::from_millis(1500)))
        );
    }
}
