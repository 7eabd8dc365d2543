//! The object store: pre-serialised objects in an ordered map, one global resourceVersion counter and a
//! bounded ring of watch events that watchers read by index.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::status::ApiError;

/// One stored object: the JSON value plus its cached serialisation.
#[derive(Debug)]
pub struct Stored {
    /// The object, with apiVersion, kind and metadata.resourceVersion set.
    pub obj: Value,
    /// `obj` serialised once, reused for every list and watch response.
    pub bytes: Bytes,
    /// The resourceVersion this object was written at.
    pub rv: u64,
}

impl Stored {
    pub(crate) fn new(obj: Value, rv: u64) -> Arc<Stored> {
        let bytes = Bytes::from(serde_json::to_vec(&obj).expect("a JSON value always serialises"));
        Arc::new(Stored { obj, bytes, rv })
    }
}

/// Shared handle to a stored object.
pub type Obj = Arc<Stored>;

/// Watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One entry of the watch history. Every resourceVersion bump produces exactly one event, so the history
/// is contiguous in RV and a watcher finds its place by subtraction.
#[derive(Debug)]
pub struct Event {
    /// What happened.
    pub typ: EventType,
    /// Store id of the resource (`group/plural`).
    pub rid: Arc<str>,
    /// Namespace ("" for cluster-scoped objects).
    pub ns: String,
    /// Store key of the object.
    pub key: String,
    /// The resourceVersion of this event.
    pub rv: u64,
    /// The object after the event (for DELETED: the final state, carrying the deletion RV).
    pub obj: Obj,
    /// The object before the event (None for ADDED).
    pub prev: Option<Obj>,
}

/// One distinct pod template a workload was stored with.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRecord {
    /// The object's resourceVersion when this template was stored.
    pub resource_version: String,
    /// The object's metadata.generation at that time.
    pub generation: i64,
    /// The template's metadata.annotations.
    pub annotations: BTreeMap<String, String>,
    /// The whole pod template.
    pub template: Value,
}

/// Builds the store key for an object.
pub fn key(rid: &str, ns: &str, name: &str) -> String {
    format!("{rid}\0{ns}\0{name}")
}

/// Key prefix selecting all objects of a resource, optionally in one namespace.
pub fn prefix(rid: &str, ns: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("{rid}\0{ns}\0"),
        None => format!("{rid}\0"),
    }
}

/// The in-memory state of the server.
pub struct Store {
    objects: BTreeMap<String, Obj>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    /// Every event with rv > floor is in `history`.
    floor: u64,
    history_len: usize,
    rollouts: HashMap<String, Vec<TemplateRecord>>,
    notify: tokio::sync::watch::Sender<u64>,
}

/// One page of a list.
pub struct Page {
    /// Matching objects, in key order.
    pub items: Vec<Obj>,
    /// The RV the page was read at.
    pub rv: u64,
    /// Key of the last item when more matching items remain.
    pub continue_after: Option<String>,
}

impl Store {
    /// An empty store keeping `history_len` events for watchers.
    pub fn new(history_len: usize) -> Store {
        Store {
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::with_capacity(history_len.min(65_536)),
            floor: 0,
            history_len,
            rollouts: HashMap::new(),
            notify: tokio::sync::watch::channel(0).0,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest RV a watch may still start from.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// A receiver woken after every write.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Looks an object up.
    pub fn get(&self, rid: &str, ns: &str, name: &str) -> Option<Obj> {
        self.objects.get(&key(rid, ns, name)).cloned()
    }

    /// All current objects of a resource (optionally one namespace), in key order.
    pub fn scan(&self, rid: &str, ns: Option<&str>) -> impl Iterator<Item = &Obj> {
        let p = prefix(rid, ns);
        self.objects
            .range::<str, _>((Bound::Included(p.as_str()), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(&p))
            .map(|(_, v)| v)
    }

    /// Stores `obj` (creating or replacing), assigning the next resourceVersion. Returns the stored object.
    /// Events are also stored in their other API's view (see `crate::events`).
    pub fn put(&mut self, rid: &Arc<str>, ns: &str, name: &str, obj: Value) -> Obj {
        let stored = self.put_one(rid, ns, name, obj);
        if let Some((other, converted)) = crate::events::mirror(rid, &stored.obj) {
            self.put_one(&Arc::from(other), ns, name, converted);
        }
        stored
    }

    fn put_one(&mut self, rid: &Arc<str>, ns: &str, name: &str, mut obj: Value) -> Obj {
        let rv = self.rv + 1;
        self.rv = rv;
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let stored = Stored::new(obj, rv);
        let k = key(rid, ns, name);
        let prev = self.objects.insert(k.clone(), stored.clone());
        let typ = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.push(Event {
            typ,
            rid: rid.clone(),
            ns: ns.to_string(),
            key: k,
            rv,
            obj: stored.clone(),
            prev,
        });
        stored
    }

    /// Removes an object; `last` is its final state (e.g. with deletionTimestamp). Returns what the
    /// DELETED event carried, or None if the object did not exist.
    pub fn remove(
        &mut self,
        rid: &Arc<str>,
        ns: &str,
        name: &str,
        last: Option<Value>,
    ) -> Option<Obj> {
        let removed = self.remove_one(rid, ns, name, last)?;
        if let Some((other, _)) = crate::events::mirror(rid, &removed.obj) {
            self.remove_one(&Arc::from(other), ns, name, None);
        }
        Some(removed)
    }

    fn remove_one(
        &mut self,
        rid: &Arc<str>,
        ns: &str,
        name: &str,
        last: Option<Value>,
    ) -> Option<Obj> {
        let k = key(rid, ns, name);
        let prev = self.objects.remove(&k)?;
        let rv = self.rv + 1;
        self.rv = rv;
        let mut obj = last.unwrap_or_else(|| prev.obj.clone());
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let stored = Stored::new(obj, rv);
        self.push(Event {
            typ: EventType::Deleted,
            rid: rid.clone(),
            ns: ns.to_string(),
            key: k,
            rv,
            obj: stored.clone(),
            prev: Some(prev),
        });
        Some(stored)
    }

    fn push(&mut self, ev: Event) {
        if self.history_len == 0 {
            self.floor = ev.rv;
        } else {
            while self.history.len() >= self.history_len {
                if let Some(old) = self.history.pop_front() {
                    self.floor = old.rv;
                }
            }
            self.history.push_back(Arc::new(ev));
        }
        self.notify.send_replace(self.rv);
    }

    /// Drops all retained history: watches and lists from any older RV now get 410 Expired.
    pub fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    /// Up to `max` events with rv > `after`, or 410 Expired if some were already dropped.
    pub fn events_since(&self, after: u64, max: usize) -> Result<Vec<Arc<Event>>, ApiError> {
        if after < self.floor {
            return Err(ApiError::expired(after, self.floor));
        }
        let start = (after - self.floor) as usize;
        Ok(self.history.iter().skip(start).take(max).cloned().collect())
    }

    /// Reads a page of a resource's objects as of `at` (None = now), after key `start_after`, keeping
    /// those accepted by `filter`. `limit` 0 means no limit.
    pub fn list(
        &self,
        rid: &str,
        ns: Option<&str>,
        at: Option<u64>,
        start_after: Option<&str>,
        limit: usize,
        filter: &dyn Fn(&Value) -> bool,
    ) -> Result<Page, ApiError> {
        let at_rv = at.unwrap_or(self.rv);
        if at_rv < self.floor {
            return Err(ApiError::expired(at_rv, self.floor));
        }
        let p = prefix(rid, ns);
        let lower = match start_after {
            Some(s) if s >= p.as_str() => Bound::Excluded(s),
            _ => Bound::Included(p.as_str()),
        };
        // Undo events newer than the snapshot: the earliest event per key after `at_rv` carries the
        // state the key had at `at_rv` in `prev`.
        let mut overlay: BTreeMap<&str, Option<&Obj>> = BTreeMap::new();
        if at_rv < self.rv {
            for ev in self.history.iter().rev() {
                if ev.rv <= at_rv {
                    break;
                }
                if ev.key.starts_with(&p) {
                    overlay.insert(ev.key.as_str(), ev.prev.as_ref());
                }
            }
        }
        let mut current = self
            .objects
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&p))
            .filter(|(k, _)| !overlay.contains_key(k.as_str()))
            .map(|(k, v)| (k.as_str(), v))
            .peekable();
        let mut old = overlay
            .range::<&str, _>((lower, Bound::Unbounded))
            .filter_map(|(k, v)| v.map(|o| (*k, o)))
            .peekable();
        let mut items = Vec::new();
        let mut last_key: Option<&str> = None;
        let want = if limit == 0 { usize::MAX } else { limit };
        loop {
            let next = match (current.peek(), old.peek()) {
                (None, None) => break,
                (Some(_), None) => current.next(),
                (None, Some(_)) => old.next(),
                (Some(a), Some(b)) => {
                    if a.0 < b.0 {
                        current.next()
                    } else {
                        old.next()
                    }
                }
            };
            let Some((k, o)) = next else { break };
            if !filter(&o.obj) {
                continue;
            }
            if items.len() == want {
                return Ok(Page {
                    items,
                    rv: at_rv,
                    continue_after: last_key.map(str::to_string),
                });
            }
            items.push(o.clone());
            last_key = Some(k);
        }
        Ok(Page {
            items,
            rv: at_rv,
            continue_after: None,
        })
    }

    /// Appends `template` to the object's rollout record unless it equals the last one.
    pub fn record_template(
        &mut self,
        rid: &str,
        ns: &str,
        name: &str,
        rv: u64,
        generation: i64,
        template: &Value,
    ) {
        let list = self.rollouts.entry(key(rid, ns, name)).or_default();
        if list.last().is_some_and(|r| r.template == *template) {
            return;
        }
        let annotations = template
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        list.push(TemplateRecord {
            resource_version: rv.to_string(),
            generation,
            annotations,
            template: template.clone(),
        });
    }

    /// The rollout record of one object.
    pub fn rollouts(&self, rid: &str, ns: &str, name: &str) -> Vec<TemplateRecord> {
        self.rollouts
            .get(&key(rid, ns, name))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, v: i64) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "data": {"v": v}})
    }

    fn names(p: &Page) -> Vec<String> {
        p.items
            .iter()
            .map(|o| o.obj["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn every_write_bumps_rv_and_is_visible_to_watchers_in_order() {
        let mut s = Store::new(100);
        let rid: Arc<str> = "/secrets".into();
        s.put(&rid, "default", "a", obj("a", 1));
        s.put(&rid, "default", "a", obj("a", 2));
        s.remove(&rid, "default", "a", None);
        assert_eq!(s.rv(), 3);
        let evs = s.events_since(0, 10).unwrap();
        let types: Vec<_> = evs.iter().map(|e| e.typ).collect();
        assert_eq!(
            types,
            [EventType::Added, EventType::Modified, EventType::Deleted]
        );
        assert_eq!(evs[2].obj.obj["metadata"]["resourceVersion"], "3");
        assert_eq!(s.events_since(2, 10).unwrap().len(), 1);
    }

    #[test]
    fn old_events_expire_once_history_is_full_or_compacted() {
        let mut s = Store::new(2);
        let rid: Arc<str> = "/secrets".into();
        for i in 0..4 {
            s.put(&rid, "default", "a", obj("a", i));
        }
        assert_eq!(s.events_since(1, 10).unwrap_err().code, 410);
        assert_eq!(s.events_since(2, 10).unwrap().len(), 2);
        s.compact();
        let e = s.events_since(3, 10).unwrap_err();
        assert_eq!(e.message, "too old resource version: 3 (4)");
        assert!(s.events_since(4, 10).unwrap().is_empty());
    }

    #[test]
    fn pages_are_consistent_with_their_snapshot_rv() {
        let mut s = Store::new(100);
        let rid: Arc<str> = "/secrets".into();
        for n in ["a", "b", "c", "d"] {
            s.put(&rid, "default", n, obj(n, 0));
        }
        let all = |_: &Value| true;
        let p1 = s
            .list("/secrets", Some("default"), None, None, 2, &all)
            .unwrap();
        assert_eq!(names(&p1), ["a", "b"]);
        // Writes after the snapshot must not show up on the next page.
        s.remove(&rid, "default", "c", None);
        s.put(&rid, "default", "bb", obj("bb", 0));
        s.put(&rid, "default", "d", obj("d", 9));
        let p2 = s
            .list(
                "/secrets",
                Some("default"),
                Some(p1.rv),
                p1.continue_after.as_deref(),
                2,
                &all,
            )
            .unwrap();
        assert_eq!(names(&p2), ["c", "d"]);
        assert_eq!(p2.items[1].obj["data"]["v"], 0);
        assert!(p2.continue_after.is_none());
        let now = s.list("/secrets", None, None, None, 0, &all).unwrap();
        assert_eq!(names(&now), ["a", "b", "bb", "d"]);
    }

    #[test]
    fn filter_applies_before_limit() {
        let mut s = Store::new(100);
        let rid: Arc<str> = "/secrets".into();
        for (i, n) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            s.put(&rid, "default", n, obj(n, i as i64));
        }
        let even = |v: &Value| v["data"]["v"].as_i64().unwrap() % 2 == 0;
        let p = s.list("/secrets", None, None, None, 2, &even).unwrap();
        assert_eq!(names(&p), ["a", "c"]);
        let p = s
            .list(
                "/secrets",
                None,
                None,
                p.continue_after.as_deref(),
                2,
                &even,
            )
            .unwrap();
        assert_eq!(names(&p), ["e"]);
        assert!(p.continue_after.is_none());
    }

    #[test]
    fn rollout_record_keeps_only_distinct_templates() {
        let mut s = Store::new(10);
        let t1 = json!({"metadata": {"annotations": {"x": "1"}}, "spec": {}});
        let t2 = json!({"metadata": {"annotations": {"x": "2"}}, "spec": {}});
        s.record_template("apps/deployments", "ns", "d", 1, 1, &t1);
        s.record_template("apps/deployments", "ns", "d", 2, 1, &t1);
        s.record_template("apps/deployments", "ns", "d", 3, 2, &t2);
        let r = s.rollouts("apps/deployments", "ns", "d");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].annotations["x"], "2");
        assert_eq!(r[1].resource_version, "3");
    }
}
