//! Label and field selectors, parsed and applied the way kube-apiserver does it.
//!
//! Parsing follows the upstream grammar closely (including its lexer quirks and the exact
//! wording of its error messages) because clients such as `kubectl` show those messages
//! verbatim, and hashroll's tests compare against them.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Operator of one label-selector requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value` (also matches objects without the label)
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)` (also matches objects without the label)
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>5` (integer comparison)
    GreaterThan,
    /// `key<5` (integer comparison)
    LessThan,
}

/// One requirement of a label selector, e.g. `tier in (web,api)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    op: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a validated requirement; errors use the apiserver's wording (`key: Invalid value: ...`).
    pub fn new(key: &str, op: Operator, values: Vec<String>) -> Result<Requirement, String> {
        let mut errs = Vec::new();
        let key_errs = is_qualified_name(key);
        if !key_errs.is_empty() {
            errs.push(invalid("key", &go_quote(key), &key_errs.join("; ")));
        }
        match op {
            Operator::In | Operator::NotIn if values.is_empty() => errs.push(invalid(
                "values",
                &go_string_slice(&values),
                "for 'in', 'notin' operators, values set can't be empty",
            )),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errs.push(invalid(
                    "values",
                    &go_string_slice(&values),
                    "exact-match compatibility requires one single value",
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errs.push(invalid(
                "values",
                &go_string_slice(&values),
                "values set must be empty for exists and does not exist",
            )),
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(invalid(
                        "values",
                        &go_string_slice(&values),
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(invalid(
                            &format!("values[{i}]"),
                            &go_quote(v),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let value_errs = is_valid_label_value(v);
            if !value_errs.is_empty() {
                errs.push(invalid(
                    &format!("values[{i}][{key}]"),
                    &go_quote(v),
                    &value_errs.join("; "),
                ));
            }
        }
        if errs.is_empty() {
            Ok(Requirement {
                key: key.to_string(),
                op,
                values,
            })
        } else {
            Err(aggregate(&errs))
        }
    }

    /// The label key this requirement tests.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The requirement's operator.
    pub fn operator(&self) -> Operator {
        self.op
    }

    /// The requirement's values (empty for exists / does-not-exist).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether labels (looked up through `get`) satisfy this requirement.
    fn matches_with<'v>(&self, get: &impl Fn(&str) -> Option<&'v str>) -> bool {
        let found = get(&self.key);
        let in_set = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            Operator::Equals | Operator::DoubleEquals | Operator::In => found.is_some_and(in_set),
            // Absent labels satisfy negative requirements, as upstream.
            Operator::NotEquals | Operator::NotIn => found.is_none_or(|v| !in_set(v)),
            Operator::Exists => found.is_some(),
            Operator::DoesNotExist => found.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = found.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(want) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        let one = self.values.first().map(String::as_str).unwrap_or("");
        match self.op {
            Operator::Exists => write!(f, "{k}"),
            Operator::DoesNotExist => write!(f, "!{k}"),
            Operator::Equals => write!(f, "{k}={one}"),
            Operator::DoubleEquals => write!(f, "{k}=={one}"),
            Operator::NotEquals => write!(f, "{k}!={one}"),
            Operator::GreaterThan => write!(f, "{k}>{one}"),
            Operator::LessThan => write!(f, "{k}<{one}"),
            Operator::In | Operator::NotIn => {
                let word = if self.op == Operator::In {
                    "in"
                } else {
                    "notin"
                };
                let mut vals = self.values.clone();
                vals.sort();
                write!(f, "{k} {word} ({})", vals.join(","))
            }
        }
    }
}

/// A parsed label selector: a conjunction of requirements. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax; errors carry the apiserver's message text.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut parser = Parser::new(s);
        let mut requirements = parser.parse()?;
        // Upstream sorts by key so the canonical form is deterministic.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Converts a `metav1.LabelSelector` JSON object (`matchLabels` / `matchExpressions`).
    ///
    /// An empty object selects everything; a missing (null) selector is the caller's concern,
    /// because upstream treats it as "selects nothing".
    pub fn from_meta(sel: &Value) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                let v = v.as_str().unwrap_or_default().to_string();
                requirements.push(Requirement::new(k, Operator::Equals, vec![v])?);
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for expr in exprs {
                let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
                let op_name = expr
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let op = match op_name {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    other => {
                        return Err(format!(
                            "{} is not a valid label selector operator",
                            go_quote(other)
                        ));
                    }
                };
                let values = expr
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .map(|v| v.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                requirements.push(Requirement::new(key, op, values)?);
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether the given labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |k: &str| labels.get(k).map(String::as_str);
        self.requirements.iter().all(|r| r.matches_with(&get))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches_value(&self, obj: &Value) -> bool {
        let labels = obj
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| r.matches_with(&get))
    }

    /// True when the selector has no requirements (it then matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Ident,
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    Not,
    Comma,
    OpenPar,
    ClosedPar,
    End,
}

/// Characters that end an identifier and start an operator token.
fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits a selector into tokens, always ending with `End`.
fn lex(s: &str) -> Vec<(Tok, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(is_space);
        let Some(c) = rest.chars().next() else {
            out.push((Tok::End, String::new()));
            return out;
        };
        if is_special(c) {
            // Longest match: only `==` and `!=` are two characters long.
            let (tok, len) = if rest.starts_with("==") {
                (Tok::DoubleEquals, 2)
            } else if rest.starts_with("!=") {
                (Tok::NotEquals, 2)
            } else {
                let t = match c {
                    '=' => Tok::Equals,
                    '!' => Tok::Not,
                    '(' => Tok::OpenPar,
                    ')' => Tok::ClosedPar,
                    ',' => Tok::Comma,
                    '>' => Tok::GreaterThan,
                    _ => Tok::LessThan,
                };
                (t, 1)
            };
            out.push((tok, rest[..len].to_string()));
            rest = &rest[len..];
        } else {
            let end = rest
                .find(|c: char| is_space(c) || is_special(c))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            let tok = match word {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Ident,
            };
            out.push((tok, word.to_string()));
            rest = &rest[end..];
        }
    }
}

/// Recursive-descent parser mirroring upstream's, so errors arise at the same points.
struct Parser {
    items: Vec<(Tok, String)>,
    pos: usize,
}

impl Parser {
    fn new(s: &str) -> Parser {
        Parser {
            items: lex(s),
            pos: 0,
        }
    }

    /// Peeks the next token; with `values` set, the keywords `in`/`notin` count as identifiers.
    fn lookahead(&self, values: bool) -> (Tok, String) {
        let (tok, lit) = self.items[self.pos].clone();
        if values && matches!(tok, Tok::In | Tok::NotIn) {
            return (Tok::Ident, lit);
        }
        (tok, lit)
    }

    fn consume(&mut self, values: bool) -> (Tok, String) {
        let item = self.lookahead(values);
        if self.pos < self.items.len() - 1 {
            self.pos += 1;
        }
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(true);
            match tok {
                Tok::Ident | Tok::Not => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.consume(true);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(true);
                            if t2 != Tok::Ident && t2 != Tok::Not {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut negated = false;
        let (mut tok, mut lit) = self.consume(true);
        if tok == Tok::Not {
            negated = true;
            (tok, lit) = self.consume(true);
        }
        if tok != Tok::Ident {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let key = lit;
        let key_errs = is_qualified_name(&key);
        if !key_errs.is_empty() {
            // Upstream validates here with a nil field path, hence the odd "<nil>" prefix.
            return Err(invalid("<nil>", &go_quote(&key), &key_errs.join("; ")));
        }
        if negated {
            return Requirement::new(&key, Operator::DoesNotExist, Vec::new());
        }
        if matches!(self.lookahead(true).0, Tok::End | Tok::Comma) {
            return Requirement::new(&key, Operator::Exists, Vec::new());
        }
        let (tok, lit) = self.consume(false);
        let op = match tok {
            Tok::In => Operator::In,
            Tok::NotIn => Operator::NotIn,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::NotEquals => Operator::NotEquals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        };
        let mut values = match op {
            Operator::In | Operator::NotIn => self.set_values()?,
            _ => vec![self.exact_value()?],
        };
        values.sort();
        values.dedup();
        Requirement::new(&key, op, values)
    }

    /// Parses `( a, b, ... )`; empty slots stand for the empty value, as upstream.
    fn set_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.consume(true);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(true);
        match tok {
            Tok::Ident | Tok::Comma => {
                let vals = self.identifier_list()?;
                self.consume(true); // the `)` identifier_list stopped at
                Ok(vals)
            }
            Tok::ClosedPar => {
                self.consume(true);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn identifier_list(&mut self) -> Result<Vec<String>, String> {
        let mut vals: Vec<String> = Vec::new();
        loop {
            let (tok, lit) = self.consume(true);
            match tok {
                Tok::Ident => {
                    vals.push(lit);
                    let (t2, l2) = self.lookahead(true);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(vals),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if vals.is_empty() {
                        vals.push(String::new());
                    }
                    match self.lookahead(true).0 {
                        Tok::ClosedPar => {
                            vals.push(String::new());
                            return Ok(vals);
                        }
                        Tok::Comma => {
                            self.consume(true);
                            vals.push(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    /// Parses the right side of `=`, `==`, `!=`, `>`, `<`; nothing there means the empty value.
    fn exact_value(&mut self) -> Result<String, String> {
        if matches!(self.lookahead(true).0, Tok::End | Tok::Comma) {
            return Ok(String::new());
        }
        let (tok, lit) = self.consume(true);
        if tok == Tok::Ident {
            Ok(lit)
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

/// Formats one `field.Invalid` error the way apimachinery prints it.
fn invalid(path: &str, quoted_value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {quoted_value}: {detail}")
}

/// Joins several errors like apimachinery's aggregate error (deduplicated, bracketed).
pub(crate) fn aggregate(errs: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errs {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    if seen.len() == 1 {
        seen[0].to_string()
    } else {
        format!("[{}]", seen.join(", "))
    }
}

/// Quotes a string like Go's `%q`, which upstream uses for bad values in messages.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%#v` of a `[]string`, used when a whole value list is invalid.
fn go_string_slice(values: &[String]) -> String {
    let inner: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", inner.join(", "))
}

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Upstream's regex error text: message, examples, and the pattern.
fn regex_error(msg: &str, pattern: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, ex) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{ex}', "));
    }
    out.push_str(&format!("regex used for validation is '{pattern}')"));
    out
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, anchored.
fn is_qualified_token(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Validates a label key (`[prefix/]name`); returns upstream's messages, empty when valid.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_token(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Validates a label value; returns upstream's messages, empty when valid.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_token(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Validates a lowercase RFC 1123 subdomain; returns upstream's messages, empty when valid.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        b.first().is_some_and(edge)
            && b.last().is_some_and(edge)
            && b.iter().all(|c| edge(c) || *c == b'-')
    };
    if !value.split('.').all(label_ok) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
            &["example.com"],
        ));
    }
    errs
}

/// One `field=value` or `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    /// The field label, e.g. `metadata.name`.
    pub field: String,
    /// True for `!=`.
    pub negated: bool,
    /// The unescaped value to compare against.
    pub value: String,
}

/// A parsed field selector for one resource: a conjunction of terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    resource: String,
    terms: Vec<FieldTerm>,
}

/// The field labels a resource (plural name) supports in field selectors, besides metadata ones.
pub fn resource_fields(resource: &str) -> &'static [&'static str] {
    match resource {
        "secrets" => &["type"],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "nodes" => &["spec.unschedulable"],
        "namespaces" => &["status.phase"],
        "replicasets" | "replicationcontrollers" => &["status.replicas"],
        "jobs" => &["status.successful"],
        _ => &[],
    }
}

/// Whether `field` may be used in a field selector on `resource`.
pub fn field_supported(resource: &str, field: &str) -> bool {
    field == "metadata.name"
        || field == "metadata.namespace"
        || resource_fields(resource).contains(&field)
}

/// Reads a dotted path as the string the apiserver would compare (numbers and bools printed).
fn path_string(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The value of a supported field label on an object; absent fields read as their zero value.
pub fn field_value(resource: &str, field: &str, obj: &Value) -> String {
    let raw = match (resource, field) {
        // Secrets are always stored with a type; the default fills in for raw fixtures.
        ("secrets", "type") => path_string(obj, "type").or(Some("Opaque".to_string())),
        ("events", "source") => path_string(obj, "source.component")
            .filter(|s| !s.is_empty())
            .or_else(|| path_string(obj, "reportingComponent")),
        ("nodes", "spec.unschedulable") | ("pods", "spec.hostNetwork") => {
            path_string(obj, field).or(Some("false".to_string()))
        }
        ("replicasets" | "replicationcontrollers", "status.replicas")
        | ("jobs", "status.successful") => path_string(obj, field).or(Some("0".to_string())),
        _ => path_string(obj, field),
    };
    raw.unwrap_or_default()
}

/// Splits on unescaped commas, keeping escapes for `unescape_value`.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator; `!=` and `==` win over `=` at the same spot.
fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], op, rhs));
            }
        }
    }
    None
}

/// Undoes `\\`, `\,` and `\=` escapes; bare `,`/`=` and other escapes are errors, as upstream.
pub fn unescape_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ));
                }
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            // Upstream prints the rune with %v, i.e. as its number.
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ));
            }
            _ => out.push(c),
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses the `fieldSelector` query syntax for `resource` (plural, e.g. `secrets`).
    ///
    /// Unsupported fields give `field label not supported: <field>`, which the server returns
    /// as a 400 BadRequest; syntax errors use the apiserver's wording too.
    pub fn parse(s: &str, resource: &str) -> Result<FieldSelector, String> {
        let mut parts = split_terms(s);
        // Upstream sorts terms before parsing, which decides which error is reported first.
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            terms.push(FieldTerm {
                field: lhs.to_string(),
                negated: op == "!=",
                value: unescape_value(rhs)?,
            });
        }
        if let Some(bad) = terms.iter().find(|t| !field_supported(resource, &t.field)) {
            return Err(format!("field label not supported: {}", bad.field));
        }
        Ok(FieldSelector {
            resource: resource.to_string(),
            terms,
        })
    }

    /// Whether the object satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let have = field_value(&self.resource, &t.field, obj);
            (have == t.value) != t.negated
        })
    }

    /// True when there are no terms (it then matches everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The parsed terms, in upstream's sorted order.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// The value required by an equality term on `field`, e.g. the name in `metadata.name=db`.
    ///
    /// Useful because list/watch with a `metadata.name` term is authorized as a named request.
    pub fn exact_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn equality_operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(sel("app=web").matches(&l));
        assert!(sel("app==web").matches(&l));
        assert!(!sel("app=db").matches(&l));
        assert!(sel("app!=db").matches(&l));
        assert!(!sel("app!=web").matches(&l));
        assert!(sel("app=web,tier=front").matches(&l));
        assert!(!sel("app=web,tier=back").matches(&l));
    }

    #[test]
    fn negative_operators_match_missing_labels() {
        let l = labels(&[("app", "web")]);
        assert!(sel("env!=prod").matches(&l));
        assert!(sel("env notin (prod)").matches(&l));
        assert!(!sel("env=prod").matches(&l));
        assert!(!sel("env in (prod)").matches(&l));
    }

    #[test]
    fn set_operators_and_existence() {
        let l = labels(&[("env", "qa")]);
        assert!(sel("env in (prod, qa)").matches(&l));
        assert!(!sel("env in (prod)").matches(&l));
        assert!(sel("env notin (prod,staging)").matches(&l));
        assert!(!sel("env notin (qa)").matches(&l));
        assert!(sel("env").matches(&l));
        assert!(!sel("!env").matches(&l));
        assert!(sel("!other").matches(&l));
        assert!(!sel("other").matches(&l));
    }

    #[test]
    fn keywords_are_values_inside_sets() {
        // `in`/`notin` lex as keywords but are ordinary values in value position.
        let l = labels(&[("mode", "in")]);
        assert!(sel("mode in (in, notin)").matches(&l));
        assert!(sel("mode=in").matches(&l));
    }

    #[test]
    fn empty_values() {
        let l = labels(&[("a", "")]);
        assert!(sel("a=").matches(&l));
        assert!(sel("a in ()").matches(&l));
        assert!(sel("a in (,x)").matches(&l));
        assert!(!sel("a=x").matches(&l));
    }

    #[test]
    fn integer_comparisons() {
        let l = labels(&[("replicas", "5"), ("name", "x")]);
        assert!(sel("replicas>3").matches(&l));
        assert!(!sel("replicas>5").matches(&l));
        assert!(sel("replicas<10").matches(&l));
        assert!(!sel("name>1").matches(&l));
        assert!(!sel("missing<1").matches(&l));
    }

    #[test]
    fn whitespace_is_tolerated() {
        let l = labels(&[("app", "web"), ("env", "qa")]);
        assert!(sel("  app = web ,  env   in(qa ,prod ) ").matches(&l));
        assert!(sel("\tapp\t!=\tdb\n").matches(&l));
        assert!(sel("").is_empty());
        assert!(sel("   ").matches(&l));
    }

    #[test]
    fn prefixed_keys() {
        let l = labels(&[("app.kubernetes.io/name", "web")]);
        assert!(sel("app.kubernetes.io/name=web").matches(&l));
    }

    #[test]
    fn matches_value_reads_metadata_labels() {
        let obj = json!({"metadata": {"name": "x", "labels": {"app": "web"}}});
        assert!(sel("app=web").matches_value(&obj));
        assert!(!sel("app=db").matches_value(&obj));
        let bare = json!({"metadata": {"name": "x"}});
        assert!(sel("app!=web").matches_value(&bare));
        assert!(!sel("app").matches_value(&bare));
        assert!(sel("").matches_value(&bare));
    }

    #[test]
    fn canonical_string_is_sorted() {
        assert_eq!(
            sel("z=1, a notin (y,x), !m, k").to_string(),
            "a notin (x,y),k,!m,z=1"
        );
    }

    #[test]
    fn syntax_errors_use_upstream_wording() {
        let err = |s: &str| LabelSelector::parse(s).unwrap_err();
        assert_eq!(
            err("x ("),
            "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            err("e!!ss"),
            "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(
            err("=a"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("a in x"),
            "unable to parse requirement: found 'x' expected: '('"
        );
        assert_eq!(
            err("a in (x y)"),
            "unable to parse requirement: found 'y', expected: ',' or ')'"
        );
        assert_eq!(
            err("a=(b)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            err("!=a"),
            "found '!=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("!(a)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(err("!a=b"), "found '=', expected: ',' or 'end of string'");
    }

    #[test]
    fn invalid_keys_and_values_name_the_requirement() {
        let err = LabelSelector::parse("app:monolith").unwrap_err();
        assert_eq!(
            err,
            "unable to parse requirement: <nil>: Invalid value: \"app:monolith\": name part must consist of \
             alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character \
             (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
             '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        let err = LabelSelector::parse("app.kubernetes_io/name=x").unwrap_err();
        assert!(
            err.starts_with(
                "unable to parse requirement: <nil>: Invalid value: \"app.kubernetes_io/name\": \
                 prefix part a lowercase RFC 1123 subdomain"
            ),
            "{err}"
        );
        let long = "z".repeat(64);
        assert_eq!(
            LabelSelector::parse(&format!("good-key={long}")).unwrap_err(),
            format!(
                "unable to parse requirement: values[0][good-key]: Invalid value: \"{long}\": \
                 must be no more than 63 characters"
            )
        );
        let err = LabelSelector::parse("tier in (web, bad_)").unwrap_err();
        assert!(
            err.starts_with(
                "unable to parse requirement: values[0][tier]: Invalid value: \"bad_\": a valid label must be"
            ),
            "{err}"
        );
        let err = LabelSelector::parse("a/b/c=x").unwrap_err();
        assert!(err.contains("a qualified name must consist"), "{err}");
        assert!(err.ends_with(
            "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ));
        let err = LabelSelector::parse("n>abc").unwrap_err();
        assert_eq!(
            err,
            "unable to parse requirement: values[0]: Invalid value: \"abc\": \
             for 'Gt', 'Lt' operators, the value must be an integer"
        );
        let err = LabelSelector::parse("/x").unwrap_err();
        assert!(err.contains("prefix part must be non-empty"), "{err}");
    }

    #[test]
    fn label_key_validation_edges() {
        assert!(is_qualified_name(&"a".repeat(63)).is_empty());
        assert_eq!(
            is_qualified_name(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters"]
        );
        assert_eq!(is_qualified_name("example.com/").len(), 2);
        assert!(is_qualified_name("Example.com/x").len() == 1);
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("A.b_c-1").is_empty());
        assert!(!is_valid_label_value("-a").is_empty());
    }

    #[test]
    fn from_meta_selector() {
        let s = LabelSelector::from_meta(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]
        }))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "qa")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(LabelSelector::from_meta(&json!({})).unwrap().is_empty());
        assert_eq!(
            LabelSelector::from_meta(
                &json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
            )
            .unwrap_err(),
            "\"Bogus\" is not a valid label selector operator"
        );
        assert_eq!(
            LabelSelector::from_meta(
                &json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})
            )
            .unwrap_err(),
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
    }

    fn secret(name: &str, ns: &str, ty: Option<&str>) -> Value {
        let mut s = json!({"metadata": {"name": name, "namespace": ns}});
        if let Some(t) = ty {
            s["type"] = json!(t);
        }
        s
    }

    #[test]
    fn field_selector_operators() {
        let db = secret("db", "team-a", Some("kubernetes.io/tls"));
        let fs = |s: &str| FieldSelector::parse(s, "secrets").unwrap();
        assert!(fs("metadata.name=db").matches(&db));
        assert!(fs("metadata.name==db").matches(&db));
        assert!(!fs("metadata.name!=db").matches(&db));
        assert!(fs("metadata.name!=web,metadata.namespace=team-a").matches(&db));
        assert!(!fs("metadata.name=db,metadata.namespace=team-b").matches(&db));
        assert!(fs("type=kubernetes.io/tls").matches(&db));
        assert!(fs("type=Opaque").matches(&secret("x", "y", None)));
        assert!(fs("").is_empty());
        assert!(fs(",").is_empty());
        assert_eq!(
            fs("metadata.name=db").exact_value("metadata.name"),
            Some("db")
        );
        assert_eq!(fs("metadata.name!=db").exact_value("metadata.name"), None);
    }

    #[test]
    fn field_selector_escapes() {
        let odd = secret("a,b=c\\d", "ns", None);
        let fs = FieldSelector::parse(r"metadata.name=a\,b\=c\\d", "secrets").unwrap();
        assert_eq!(fs.terms()[0].value, "a,b=c\\d");
        assert!(fs.matches(&odd));
        // An escaped comma does not split terms.
        assert_eq!(fs.terms().len(), 1);
        assert_eq!(
            FieldSelector::parse(r"metadata.name=a\x", "secrets").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            FieldSelector::parse(r"metadata.name=a\", "secrets").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=a=b", "secrets").unwrap_err(),
            "invalid field selector: unescaped character in value: 61"
        );
    }

    #[test]
    fn field_selector_errors() {
        assert_eq!(
            FieldSelector::parse("spec.foo=x", "secrets").unwrap_err(),
            "field label not supported: spec.foo"
        );
        assert_eq!(
            FieldSelector::parse("type=Opaque", "configmaps").unwrap_err(),
            "field label not supported: type"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=x,oops", "secrets").unwrap_err(),
            "invalid selector: 'metadata.name=x,oops'; can't understand 'oops'"
        );
        // Syntax errors win over unsupported fields, as upstream parses before converting.
        assert_eq!(
            FieldSelector::parse("spec.foo=1,zzz", "secrets").unwrap_err(),
            "invalid selector: 'spec.foo=1,zzz'; can't understand 'zzz'"
        );
    }

    #[test]
    fn event_fields() {
        let ev = json!({
            "metadata": {"name": "e1", "namespace": "ns"},
            "involvedObject": {"kind": "Deployment", "name": "web"},
            "reason": "Rolled",
            "type": "Normal",
            "reportingComponent": "hashroll"
        });
        let fs = FieldSelector::parse(
            "involvedObject.kind=Deployment,involvedObject.name=web,reason=Rolled,type=Normal,source=hashroll",
            "events",
        )
        .unwrap();
        assert!(fs.matches(&ev));
        let fs = FieldSelector::parse("involvedObject.name=db", "events").unwrap();
        assert!(!fs.matches(&ev));
    }

    #[test]
    fn cluster_scoped_namespace_field_is_empty() {
        let ns = json!({"metadata": {"name": "team-a"}, "status": {"phase": "Active"}});
        assert!(
            FieldSelector::parse("metadata.namespace=", "namespaces")
                .unwrap()
                .matches(&ns)
        );
        assert!(
            FieldSelector::parse("status.phase=Active", "namespaces")
                .unwrap()
                .matches(&ns)
        );
        assert!(
            !FieldSelector::parse("metadata.namespace=x", "namespaces")
                .unwrap()
                .matches(&ns)
        );
    }

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\x01\"");
    }
}
