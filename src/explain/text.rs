//! `explain`'s reports as text for people: the verdict first, then what it rests on.

use std::fmt::Write;

use crate::explain::report::{Keys, SourceLine, SourceReport, SourceStatus, WorkloadReport};

/// One workload: verdict, tracking, then each source with its keys, state and where it is used.
pub fn workload(r: &WorkloadReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} {}/{}", r.kind, r.namespace, r.name);
    let _ = writeln!(out, "Verdict: {}", r.verdict.reason);
    let _ = writeln!(out, "Tracking: {}", r.tracking.detail);
    if !r.sources.is_empty() {
        let _ = writeln!(out, "Sources:");
        for s in &r.sources {
            source_line(&mut out, s);
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "Note: {n}");
    }
    out
}

fn source_line(out: &mut String, s: &SourceLine) {
    let optional = if s.optional { ", optional" } else { "" };
    let _ = writeln!(
        out,
        "  {} {}: {}{optional}",
        s.kind,
        s.name,
        status(s.state)
    );
    let _ = writeln!(out, "    keys: {}", keys(&s.keys));
    for via in &s.via {
        let _ = writeln!(out, "    via: {via}");
    }
    if let Some(d) = &s.detail {
        let _ = writeln!(out, "    {d}");
    }
}

fn status(s: SourceStatus) -> &'static str {
    match s {
        SourceStatus::Same => "same as recorded",
        SourceStatus::Changed => "changed since recorded",
        SourceStatus::NotRecorded => "not recorded yet",
        SourceStatus::Absent => "absent",
        SourceStatus::Missing => "missing",
        SourceStatus::NotWatched => "not watched",
        SourceStatus::Ignored => "ignored",
        SourceStatus::Excluded => "excluded",
        SourceStatus::Unknown => "unknown (cannot compare)",
    }
}

fn keys(k: &Keys) -> String {
    match k {
        Keys::All(_) => "all".into(),
        Keys::Some(keys) => keys.join(", "),
    }
}

/// One Secret or ConfigMap: its state, then each workload that uses it.
pub fn source(r: &SourceReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} {}/{}: {}", r.kind, r.namespace, r.name, r.state);
    if !r.keys.is_empty() {
        let _ = writeln!(out, "Keys: {}", r.keys.join(", "));
    }
    if r.users.is_empty() {
        let _ = writeln!(out, "Used by: no workload hashroll watches");
    } else {
        let _ = writeln!(out, "Used by:");
    }
    for u in &r.users {
        let optional = if u.optional { ", optional" } else { "" };
        let state = match u.state {
            "tracked" => "tracked",
            "excluded" => "excluded by an annotation on the workload",
            "not_opted_in" => "uses it, not opted in",
            "invalid_annotation" => "uses it, skipped for a malformed annotation",
            other => other,
        };
        let _ = writeln!(out, "  {} {}: {state}{optional}", u.kind, u.name);
        let _ = writeln!(out, "    keys: {}", keys(&u.keys));
        for via in &u.via {
            let _ = writeln!(out, "    via: {via}");
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "Note: {n}");
    }
    out
}
