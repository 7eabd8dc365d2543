//! Watch streams: newline-delimited JSON events read from the store's history ring by index, with
//! initial events, bookmarks, selector transitions, timeouts and 410 Expired.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Response;
use hyper::body::Frame;
use hyper::header::HeaderValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{Body, BoxError, Ctx, Filter};
use crate::resources::ResourceDef;
use crate::server::State;
use crate::status::ApiError;
use crate::store::{EventType, Obj};
use crate::table::Include;

/// Events handed out per store lock.
const BATCH: usize = 2048;
/// Initial events are flushed in chunks of about this many bytes.
const CHUNK: usize = 256 * 1024;

type Tx = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

/// What a watch event carries.
enum View {
    /// The stored object (pre-serialised bytes).
    Full,
    /// A one-row Table (kubectl get -w).
    Table(Include),
    /// PartialObjectMetadata (metadata watchers).
    Metadata,
}

/// Per-watch encoding of events.
struct Encoder {
    def: ResourceDef,
    view: View,
}

impl Encoder {
    fn event(&self, out: &mut Vec<u8>, typ: &str, obj: &Obj) {
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(typ.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        match self.view {
            View::Table(inc) => serde_json::to_writer(
                &mut *out,
                &crate::table::table_one(&self.def, &obj.obj, inc),
            )
            .expect("a table serialises"),
            View::Metadata => {
                serde_json::to_writer(&mut *out, &crate::api::partial_metadata(&obj.obj))
                    .expect("metadata serialises")
            }
            View::Full => out.extend_from_slice(&obj.bytes),
        }
        out.extend_from_slice(b"}\n");
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({ "resourceVersion": rv.to_string() });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let obj = json!({ "kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": meta });
        line("BOOKMARK", &obj)
    }
}

fn line(typ: &str, obj: &Value) -> Bytes {
    let mut out =
        serde_json::to_vec(&json!({ "type": typ, "object": obj })).expect("an event serialises");
    out.push(b'\n');
    Bytes::from(out)
}

fn error_line(e: &ApiError) -> Bytes {
    line("ERROR", &e.to_status())
}

struct Params {
    rv: Option<u64>,
    initial: bool,
    initial_end_marker: bool,
    bookmarks: bool,
    timeout: Option<Duration>,
}

fn params(ctx: &Ctx) -> Result<Params, ApiError> {
    let q = &ctx.query;
    let rv_s = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let send_initial = q.get("sendInitialEvents").map(|v| v == "true");
    let rv = match rv_s {
        "" | "0" => None,
        s => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
        ),
    };
    let timeout = match q.get("timeoutSeconds").filter(|s| !s.is_empty()) {
        Some(t) => Some(Duration::from_secs(t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid timeoutSeconds {t:?}"))
        })?)),
        None => None,
    };
    Ok(Params {
        // With no RV the real server starts with the current state; sendInitialEvents forces it.
        initial: send_initial.unwrap_or(rv.is_none()),
        initial_end_marker: send_initial == Some(true),
        rv,
        bookmarks: matches!(
            q.get("allowWatchBookmarks").map(String::as_str),
            Some("true" | "1")
        ),
        timeout,
    })
}

/// Starts a watch and returns the streaming response.
pub(crate) fn serve(
    state: Arc<State>,
    ctx: Ctx,
    gone: bool,
    cut: bool,
) -> Result<Response<Body>, ApiError> {
    let p = params(&ctx)?;
    let filter = Filter::from_query(&ctx.query, &ctx.target.def.plural)?;
    let view = if crate::api::wants_table(&ctx.accept) {
        View::Table(Include::parse(
            ctx.query.get("includeObject").map(String::as_str),
        ))
    } else if crate::api::wants_metadata(&ctx.accept) {
        View::Metadata
    } else {
        View::Full
    };
    let enc = Encoder {
        def: ctx.target.def.clone(),
        view,
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(8);
    let name = ctx.target.name.clone();
    let ns = ctx.target.ns.clone();
    tokio::spawn(async move {
        let w = Watcher {
            state,
            enc,
            filter,
            name,
            ns,
            tx,
            cut,
        };
        w.run(p, gone).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(http_body_util::BodyExt::boxed_unsync(
        http_body_util::StreamBody::new(stream),
    ));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

struct Watcher {
    state: Arc<State>,
    enc: Encoder,
    filter: Filter,
    name: Option<String>,
    ns: Option<String>,
    tx: Tx,
    cut: bool,
}

impl Watcher {
    fn matches(&self, obj: &Value) -> bool {
        self.name
            .as_deref()
            .is_none_or(|n| obj.pointer("/metadata/name").and_then(Value::as_str) == Some(n))
            && self.filter.matches(obj)
    }

    /// Sends a chunk; false when the client is gone (or the chunk was cut).
    async fn send(&mut self, b: Bytes) -> bool {
        if self.tx.send(Ok(Frame::data(b))).await.is_err() {
            return false;
        }
        if self.cut {
            let _ = self
                .tx
                .send(Err("watch connection cut by test fault injection".into()))
                .await;
            return false;
        }
        true
    }

    async fn run(mut self, p: Params, gone: bool) {
        let def = self.enc.def.clone();
        let rid = def.store_id();
        if gone {
            let current = self.state.store.lock().unwrap().rv();
            let e = ApiError::expired(p.rv.unwrap_or(current), current);
            let _ = self.send(error_line(&e)).await;
            return;
        }
        let snapshot = {
            let store = self.state.store.lock().unwrap();
            let notify = store.subscribe();
            if p.initial {
                store
                    .list(&rid, self.ns.as_deref(), None, None, 0, &|o| {
                        self.matches(o)
                    })
                    .map(|page| (notify, page.rv, page.items))
            } else {
                let pos = p.rv.unwrap_or(store.rv());
                if pos < store.floor() {
                    Err(ApiError::expired(pos, store.floor()))
                } else {
                    Ok((notify, pos, Vec::new()))
                }
            }
        };
        let (mut notify, mut pos, initial) = match snapshot {
            Ok(s) => s,
            Err(e) => {
                let _ = self.send(error_line(&e)).await;
                return;
            }
        };
        let mut buf = Vec::new();
        for o in &initial {
            self.enc.event(&mut buf, "ADDED", o);
            if buf.len() >= CHUNK && !self.send(Bytes::from(std::mem::take(&mut buf))).await {
                return;
            }
        }
        drop(initial);
        if !buf.is_empty() && !self.send(Bytes::from(std::mem::take(&mut buf))).await {
            return;
        }
        if p.initial_end_marker && !self.send(self.enc.bookmark(pos, true)).await {
            return;
        }
        let mut close = self.state.ctl.close_watches.subscribe();
        let deadline = p.timeout.map(|t| tokio::time::Instant::now() + t);
        let interval = self
            .state
            .opts
            .bookmark_interval
            .max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return;
            }
            let batch = self.state.store.lock().unwrap().events_since(pos, BATCH);
            let evs = match batch {
                Ok(evs) => evs,
                Err(e) => {
                    let _ = self.send(error_line(&e)).await;
                    return;
                }
            };
            if !evs.is_empty() {
                let mut buf = Vec::new();
                for ev in &evs {
                    pos = ev.rv;
                    if *ev.rid != *rid || self.ns.as_deref().is_some_and(|n| n != ev.ns) {
                        continue;
                    }
                    let now_in = self.matches(&ev.obj.obj);
                    let was_in = ev.prev.as_ref().is_some_and(|p| self.matches(&p.obj));
                    // Selector transitions look like creation/deletion to the watcher, as on a real server.
                    let typ = match ev.typ {
                        EventType::Added if now_in => "ADDED",
                        EventType::Deleted if was_in || now_in => "DELETED",
                        EventType::Modified if now_in && was_in => "MODIFIED",
                        EventType::Modified if now_in => "ADDED",
                        EventType::Modified if was_in => "DELETED",
                        _ => continue,
                    };
                    self.enc.event(&mut buf, typ, &ev.obj);
                }
                if !buf.is_empty() && !self.send(Bytes::from(buf)).await {
                    return;
                }
                continue;
            }
            tokio::select! {
                changed = notify.changed() => if changed.is_err() { return },
                _ = close.changed() => return,
                _ = self.tx.closed() => return,
                _ = sleep_until(deadline) => return,
                _ = ticker.tick(), if p.bookmarks => {
                    if !self.send(self.enc.bookmark(pos, false)).await {
                        return;
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
