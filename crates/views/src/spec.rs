//! View specs: the JSON a user writes, its validation, and the compiled [`Plan`] processors
//! run. Grammar with examples: `docs/views.md`.
//!
//! Parsing is strict: unknown members are rejected anywhere, every error names the field
//! (`aggregates.avg_delay.fn`), and a spec that fails changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, ViewError};
use crate::limits::{
    AGGREGATES_MAX, FIELD_PATH_BYTES_MAX, FIELD_PATH_SEGMENTS_MAX, FILTER_DEPTH_MAX,
    FILTER_NODES_MAX, SPEC_BYTES_MAX, SPEC_FIELDS_MAX,
};
use crate::value::{Scalar, lookup};

/// A view spec as written by the user (see `docs/views.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSpec {
    /// The source stream.
    pub source: String,
    /// `table`, `index` or `aggregate`.
    pub kind: ViewKind,
    /// Optional filter: only records that pass it are in the view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// `table` only: the projection (default: the whole value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// `index` only: the indexed fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
    /// `aggregate` only: the grouping fields (empty: one group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
    /// `aggregate` only: output name → aggregate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregates: Option<BTreeMap<String, AggregateSpec>>,
    /// How a keyed record is read: `table` (the default: it replaces its key's previous
    /// record) or `events` (`aggregate` only: every record counts). Left out when `table`, so
    /// a spec that names the default is the same spec as one that does not.
    #[serde(default, skip_serializing_if = "Semantics::is_table")]
    pub semantics: Semantics,
}

/// Event or table semantics (Kafka Streams' `KStream` and `KTable`): what a keyed record
/// means to a view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Semantics {
    /// Each keyed record is the new value of its key: it retracts the previous record's
    /// contribution, and a null value deletes the key (a changelog, a `KTable`). The
    /// default, and the only meaning for `table` and `index` views.
    #[default]
    Table,
    /// Each record is an event of its own: an aggregate adds every record the filter keeps
    /// and retracts nothing; a null value is not counted and deletes nothing (a `KStream`).
    Events,
}

impl Semantics {
    /// Its name in a spec: `table` or `events`.
    pub fn as_str(self) -> &'static str {
        match self {
            Semantics::Table => "table",
            Semantics::Events => "events",
        }
    }

    /// Whether it is [`Semantics::Table`], the default.
    pub fn is_table(&self) -> bool {
        *self == Semantics::Table
    }
}

/// The kind of a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewKind {
    /// Latest value per record key.
    Table,
    /// Value(s) of fields → the primary keys that have them.
    Index,
    /// Grouped aggregates.
    Aggregate,
}

impl ViewKind {
    /// Its name in a spec: `table`, `index` or `aggregate`.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewKind::Table => "table",
            ViewKind::Index => "index",
            ViewKind::Aggregate => "aggregate",
        }
    }
}

/// One aggregate of an aggregate view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    /// The function.
    #[serde(rename = "fn")]
    pub func: AggFn,
    /// The field it reads (`count` without one counts rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFn {
    /// Rows (no field) or rows whose field is not null.
    Count,
    /// Sum of the numbers (integers exact in `i128`).
    Sum,
    /// Smallest ordered value.
    Min,
    /// Largest ordered value.
    Max,
    /// Mean of the numbers (`f64`).
    Avg,
    /// Number of distinct non-null values.
    CountDistinct,
}

impl AggFn {
    /// Its name in a spec (`fn`): `count`, `sum`, `min`, `max`, `avg`, `count_distinct`.
    pub fn as_str(self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Avg => "avg",
            AggFn::CountDistinct => "count_distinct",
        }
    }
}

/// A parsed field path.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath {
    /// As written (`a.b`).
    pub text: String,
    /// Its segments.
    pub segments: Vec<String>,
}

impl FieldPath {
    pub(crate) fn parse(field: &str, text: &str) -> Result<FieldPath> {
        if text.is_empty() || text.len() > FIELD_PATH_BYTES_MAX {
            return Err(ViewError::spec(
                field,
                format!("a field path must be 1 to {FIELD_PATH_BYTES_MAX} bytes"),
            ));
        }
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(ViewError::spec(
                field,
                format!("field path {text:?} has an empty segment"),
            ));
        }
        if segments.len() > FIELD_PATH_SEGMENTS_MAX {
            return Err(ViewError::spec(
                field,
                format!("field path {text:?} has more than {FIELD_PATH_SEGMENTS_MAX} segments"),
            ));
        }
        Ok(FieldPath {
            text: text.to_string(),
            segments,
        })
    }

    /// The scalar at this path in `value`.
    pub fn get(&self, value: &Value) -> Scalar {
        Scalar::of(lookup(value, &self.segments))
    }
}

/// Comparison operators of filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A compiled filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `field op value`; false when the field is null or of another class.
    Cmp(FieldPath, CmpOp, Scalar),
    /// The field is null or missing.
    IsNull(FieldPath),
    /// The field is present and not null.
    IsNotNull(FieldPath),
    /// All of them (true when empty).
    And(Vec<Filter>),
    /// Any of them (false when empty).
    Or(Vec<Filter>),
    /// Not it.
    Not(Box<Filter>),
}

impl Filter {
    /// Evaluates the filter on a record value.
    pub fn matches(&self, value: &Value) -> bool {
        match self {
            Filter::Cmp(path, op, want) => {
                let got = path.get(value);
                if got.is_null() {
                    return false;
                }
                match op {
                    CmpOp::Eq => got.equals(want),
                    CmpOp::Ne => !got.equals(want),
                    _ => match got.compare(want) {
                        None => false,
                        Some(o) => match op {
                            CmpOp::Lt => o.is_lt(),
                            CmpOp::Le => o.is_le(),
                            CmpOp::Gt => o.is_gt(),
                            CmpOp::Ge => o.is_ge(),
                            CmpOp::Eq | CmpOp::Ne => false,
                        },
                    },
                }
            }
            Filter::IsNull(path) => path.get(value).is_null(),
            Filter::IsNotNull(path) => !path.get(value).is_null(),
            Filter::And(fs) => fs.iter().all(|f| f.matches(value)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(value)),
            Filter::Not(f) => !f.matches(value),
        }
    }

    pub(crate) fn compile(at: &str, v: &Value, depth: usize, nodes: &mut usize) -> Result<Filter> {
        *nodes += 1;
        if *nodes > FILTER_NODES_MAX {
            return Err(ViewError::spec(
                at,
                format!("a filter may have at most {FILTER_NODES_MAX} nodes"),
            ));
        }
        if depth > FILTER_DEPTH_MAX {
            return Err(ViewError::spec(
                at,
                format!("a filter may nest at most {FILTER_DEPTH_MAX} deep"),
            ));
        }
        let Some(obj) = v.as_object() else {
            return Err(ViewError::spec(at, "expected an object"));
        };
        let list = |name: &str, nodes: &mut usize| -> Result<Vec<Filter>> {
            if obj.len() != 1 {
                return Err(ViewError::spec(
                    at,
                    format!("`{name}` must be the only member"),
                ));
            }
            let Some(items) = obj.get(name).and_then(Value::as_array) else {
                return Err(ViewError::spec(format!("{at}.{name}"), "expected an array"));
            };
            items
                .iter()
                .enumerate()
                .map(|(i, x)| Filter::compile(&format!("{at}.{name}[{i}]"), x, depth + 1, nodes))
                .collect()
        };
        if obj.contains_key("and") {
            return Ok(Filter::And(list("and", nodes)?));
        }
        if obj.contains_key("or") {
            return Ok(Filter::Or(list("or", nodes)?));
        }
        if let Some(inner) = obj.get("not") {
            if obj.len() != 1 {
                return Err(ViewError::spec(at, "`not` must be the only member"));
            }
            return Ok(Filter::Not(Box::new(Filter::compile(
                &format!("{at}.not"),
                inner,
                depth + 1,
                nodes,
            )?)));
        }
        for k in obj.keys() {
            if !matches!(k.as_str(), "field" | "op" | "value") {
                return Err(ViewError::spec(
                    format!("{at}.{k}"),
                    "unknown member; expected field, op, value, and, or, not",
                ));
            }
        }
        let field = match obj.get("field") {
            Some(Value::String(s)) => FieldPath::parse(&format!("{at}.field"), s)?,
            Some(_) => return Err(ViewError::spec(format!("{at}.field"), "expected a string")),
            None => return Err(ViewError::spec(format!("{at}.field"), "missing")),
        };
        let op = match obj.get("op") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(ViewError::spec(format!("{at}.op"), "expected a string")),
            None => return Err(ViewError::spec(format!("{at}.op"), "missing")),
        };
        let value = obj.get("value");
        let cmp = match op {
            "is_null" | "is_not_null" => {
                if value.is_some() {
                    return Err(ViewError::spec(
                        format!("{at}.value"),
                        format!("`{op}` takes no value"),
                    ));
                }
                return Ok(if op == "is_null" {
                    Filter::IsNull(field)
                } else {
                    Filter::IsNotNull(field)
                });
            }
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            other => {
                return Err(ViewError::spec(
                    format!("{at}.op"),
                    format!(
                        "unknown op {other:?}; expected eq, ne, lt, le, gt, ge, is_null, is_not_null"
                    ),
                ));
            }
        };
        let want = Scalar::of(value);
        match (&want, cmp) {
            (Scalar::Null, _) => Err(ViewError::spec(
                format!("{at}.value"),
                format!("`{op}` needs a non-null value (use is_null / is_not_null for null)"),
            )),
            (Scalar::Json(_), CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge) => {
                Err(ViewError::spec(
                    format!("{at}.value"),
                    format!("`{op}` needs a boolean, number or string"),
                ))
            }
            _ => Ok(Filter::Cmp(field, cmp, want)),
        }
    }
}

/// One compiled aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Output name.
    pub name: String,
    /// Function.
    pub func: AggFn,
    /// Field read (none: `count` of rows).
    pub field: Option<FieldPath>,
}

/// What a view computes, compiled from its spec.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanKind {
    /// Latest value per key, optionally projected.
    Table {
        /// Projection.
        fields: Option<Vec<FieldPath>>,
    },
    /// Secondary index.
    Index {
        /// Indexed fields.
        on: Vec<FieldPath>,
    },
    /// Grouped aggregates.
    Aggregate {
        /// Grouping fields.
        group_by: Vec<FieldPath>,
        /// Aggregates in output-name order.
        aggregates: Vec<Aggregate>,
    },
}

/// A validated, compiled spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The spec it came from.
    pub spec: ViewSpec,
    /// Filter, if any.
    pub filter: Option<Filter>,
    /// What it computes.
    pub kind: PlanKind,
    /// The top-level members of a record it reads (`None`: all), see [`crate::extract`].
    pub members: Option<Vec<String>>,
}

/// A spec's deserialization error as [`ViewError::InvalidSpec`] naming the field (view and
/// derived stream specs alike).
pub(crate) fn spec_error(e: serde_path_to_error::Error<serde_json::Error>) -> ViewError {
    let path = e.path().to_string();
    let mut field = if path == "." { String::new() } else { path };
    let reason = e.into_inner().to_string();
    // serde reports a missing member at the object that lacks it: name the member.
    if let Some(member) = missing_member(&reason) {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(member);
    }
    ViewError::spec(field, reason)
}

/// The member named by serde's "missing field `name`" message, if that is the message.
fn missing_member(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("missing field `")?;
    let end = rest.find('`')?;
    Some(&rest[..end])
}

/// A spec's bytes as a JSON value, within [`SPEC_BYTES_MAX`]: the first step of every spec
/// parser (views' and derived streams').
///
/// # Errors
/// [`ViewError::InvalidSpec`] for a spec over the limit or not JSON.
pub(crate) fn spec_value(json: &[u8]) -> Result<Value> {
    if json.len() > SPEC_BYTES_MAX {
        return Err(ViewError::spec(
            "",
            format!(
                "the spec is {} bytes; the limit is {SPEC_BYTES_MAX}",
                json.len()
            ),
        ));
    }
    serde_json::from_slice(json).map_err(|e| ViewError::spec("", format!("not JSON: {e}")))
}

impl Plan {
    /// Parses and validates a spec given as JSON bytes.
    ///
    /// # Errors
    /// [`ViewError::UnknownKind`]; [`ViewError::InvalidSpec`] naming the field (bad JSON,
    /// wrong type, unknown or missing member, member not allowed for the kind, limits).
    pub fn parse(json: &[u8]) -> Result<Plan> {
        Plan::from_value(spec_value(json)?)
    }

    /// Validates a spec given as a JSON value; see [`Plan::parse`].
    ///
    /// # Errors
    /// As [`Plan::parse`].
    pub fn from_value(value: Value) -> Result<Plan> {
        let Some(obj) = value.as_object() else {
            return Err(ViewError::spec("", "a view spec is a JSON object"));
        };
        match obj.get("kind") {
            Some(Value::String(k)) if !matches!(k.as_str(), "table" | "index" | "aggregate") => {
                return Err(ViewError::UnknownKind { kind: k.clone() });
            }
            _ => {}
        }
        let spec: ViewSpec = serde_path_to_error::deserialize(value).map_err(spec_error)?;
        Plan::compile(spec)
    }

    /// Validates and compiles a typed spec.
    ///
    /// # Errors
    /// As [`Plan::parse`].
    pub fn compile(spec: ViewSpec) -> Result<Plan> {
        let not_for = |field: &str, present: bool| -> Result<()> {
            if present {
                Err(ViewError::spec(
                    field,
                    format!("not allowed for kind \"{}\"", spec.kind.as_str()),
                ))
            } else {
                Ok(())
            }
        };
        let paths = |field: &str, list: &[String], min: usize| -> Result<Vec<FieldPath>> {
            if list.len() < min || list.len() > SPEC_FIELDS_MAX {
                return Err(ViewError::spec(
                    field,
                    format!("expected {min} to {SPEC_FIELDS_MAX} field paths"),
                ));
            }
            let out = list
                .iter()
                .enumerate()
                .map(|(i, p)| FieldPath::parse(&format!("{field}[{i}]"), p))
                .collect::<Result<Vec<_>>>()?;
            for (i, p) in out.iter().enumerate() {
                if out[..i].iter().any(|q| q.text == p.text) {
                    return Err(ViewError::spec(
                        format!("{field}[{i}]"),
                        format!("{:?} is listed twice", p.text),
                    ));
                }
            }
            Ok(out)
        };
        if spec.semantics == Semantics::Events && spec.kind != ViewKind::Aggregate {
            return Err(ViewError::spec(
                "semantics",
                format!(
                    "\"events\" is for kind \"aggregate\" only; a {} view holds each key's latest record",
                    spec.kind.as_str()
                ),
            ));
        }
        let kind = match spec.kind {
            ViewKind::Table => {
                not_for("on", spec.on.is_some())?;
                not_for("group_by", spec.group_by.is_some())?;
                not_for("aggregates", spec.aggregates.is_some())?;
                PlanKind::Table {
                    fields: spec
                        .fields
                        .as_deref()
                        .map(|f| paths("fields", f, 1))
                        .transpose()?,
                }
            }
            ViewKind::Index => {
                not_for("fields", spec.fields.is_some())?;
                not_for("group_by", spec.group_by.is_some())?;
                not_for("aggregates", spec.aggregates.is_some())?;
                let Some(on) = &spec.on else {
                    return Err(ViewError::spec("on", "missing; an index needs its fields"));
                };
                PlanKind::Index {
                    on: paths("on", on, 1)?,
                }
            }
            ViewKind::Aggregate => {
                not_for("fields", spec.fields.is_some())?;
                not_for("on", spec.on.is_some())?;
                let group_by = paths("group_by", spec.group_by.as_deref().unwrap_or(&[]), 0)?;
                let Some(aggs) = &spec.aggregates else {
                    return Err(ViewError::spec("aggregates", "missing"));
                };
                if aggs.is_empty() || aggs.len() > AGGREGATES_MAX {
                    return Err(ViewError::spec(
                        "aggregates",
                        format!("expected 1 to {AGGREGATES_MAX} aggregates"),
                    ));
                }
                let mut aggregates = Vec::new();
                for (name, a) in aggs {
                    let at = format!("aggregates.{name}");
                    if name.is_empty() || name.len() > FIELD_PATH_BYTES_MAX {
                        return Err(ViewError::spec(
                            at,
                            format!("an output name must be 1 to {FIELD_PATH_BYTES_MAX} bytes"),
                        ));
                    }
                    if group_by.iter().any(|g| &g.text == name) {
                        return Err(ViewError::spec(
                            at,
                            "the output name is also a group_by field",
                        ));
                    }
                    let field = a
                        .field
                        .as_deref()
                        .map(|f| FieldPath::parse(&format!("{at}.field"), f))
                        .transpose()?;
                    if field.is_none() && a.func != AggFn::Count {
                        return Err(ViewError::spec(
                            format!("{at}.field"),
                            format!("missing; \"{}\" needs a field", a.func.as_str()),
                        ));
                    }
                    aggregates.push(Aggregate {
                        name: name.clone(),
                        func: a.func,
                        field,
                    });
                }
                PlanKind::Aggregate {
                    group_by,
                    aggregates,
                }
            }
        };
        let filter = spec
            .filter
            .as_ref()
            .map(|f| Filter::compile("filter", f, 1, &mut 0))
            .transpose()?;
        let members = members_needed(&kind, filter.as_ref());
        Ok(Plan {
            spec,
            filter,
            kind,
            members,
        })
    }
}

/// The top-level member names a view reads (`None`: the whole value, e.g. a table without a
/// projection), sorted and without duplicates.
pub fn members_needed(kind: &PlanKind, filter: Option<&Filter>) -> Option<Vec<String>> {
    let mut out = Vec::new();
    match kind {
        PlanKind::Table { fields: None } => return None,
        PlanKind::Table { fields: Some(f) } => out.extend(f.iter().map(|p| &p.segments[0])),
        PlanKind::Index { on } => out.extend(on.iter().map(|p| &p.segments[0])),
        PlanKind::Aggregate {
            group_by,
            aggregates,
        } => {
            out.extend(group_by.iter().map(|p| &p.segments[0]));
            out.extend(
                aggregates
                    .iter()
                    .filter_map(|a| a.field.as_ref().map(|p| &p.segments[0])),
            );
        }
    }
    let mut names: Vec<String> = out.into_iter().cloned().collect();
    if let Some(f) = filter {
        filter_members(f, &mut names);
    }
    names.sort_unstable();
    names.dedup();
    Some(names)
}

fn filter_members(f: &Filter, out: &mut Vec<String>) {
    match f {
        Filter::Cmp(p, _, _) | Filter::IsNull(p) | Filter::IsNotNull(p) => {
            out.push(p.segments[0].clone());
        }
        Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|f| filter_members(f, out)),
        Filter::Not(f) => filter_members(f, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> ViewError {
        Plan::parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn design_example_parses() {
        let p = Plan::parse(
            br#"{ "source": "flights", "kind": "aggregate",
              "filter": { "field": "dep_delay", "op": "is_not_null" },
              "group_by": ["carrier"],
              "aggregates": { "flights": { "fn": "count" },
                              "avg_dep_delay": { "fn": "avg", "field": "dep_delay" },
                              "max_dep_delay": { "fn": "max", "field": "dep_delay" } } }"#,
        )
        .unwrap();
        assert!(
            matches!(p.kind, PlanKind::Aggregate { ref aggregates, .. } if aggregates.len() == 3)
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert!(
            matches!(err(r#"{"source":"s","kind":"tree"}"#), ViewError::UnknownKind { kind } if kind == "tree")
        );
        match err(r#"{"source":"s","kind":"index","on":"carrier"}"#) {
            ViewError::InvalidSpec { field, .. } => assert_eq!(field, "on"),
            e => panic!("{e}"),
        }
        match err(
            r#"{"source":"s","kind":"aggregate","aggregates":{"a":{"fn":"median","field":"x"}}}"#,
        ) {
            ViewError::InvalidSpec { field, .. } => assert_eq!(field, "aggregates.a.fn"),
            e => panic!("{e}"),
        }
        match err(r#"{"source":"s","kind":"table","colour":1}"#) {
            ViewError::InvalidSpec { reason, .. } => assert!(reason.contains("colour"), "{reason}"),
            e => panic!("{e}"),
        }
        match err(
            r#"{"source":"s","kind":"table","filter":{"and":[{"field":"a","op":"lt","value":null}]}}"#,
        ) {
            ViewError::InvalidSpec { field, .. } => assert_eq!(field, "filter.and[0].value"),
            e => panic!("{e}"),
        }
        match err(r#"{"source":"s","kind":"table","on":["a"]}"#) {
            ViewError::InvalidSpec { field, .. } => assert_eq!(field, "on"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn semantics_default_to_table_and_events_are_for_aggregates() {
        let agg = r#""group_by":["g"],"aggregates":{"n":{"fn":"count"}}"#;
        let plain = Plan::parse(format!(r#"{{"source":"s","kind":"aggregate",{agg}}}"#).as_bytes())
            .unwrap();
        let named = Plan::parse(
            format!(r#"{{"source":"s","kind":"aggregate","semantics":"table",{agg}}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(plain.spec.semantics, Semantics::Table);
        assert_eq!(
            plain.spec, named.spec,
            "naming the default is the same spec"
        );
        assert!(
            !serde_json::to_string(&named.spec)
                .unwrap()
                .contains("semantics")
        );
        let events = Plan::parse(
            format!(r#"{{"source":"s","kind":"aggregate","semantics":"events",{agg}}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(events.spec.semantics, Semantics::Events);
        assert!(
            serde_json::to_string(&events.spec)
                .unwrap()
                .contains(r#""semantics":"events""#)
        );
        for spec in [
            r#"{"source":"s","kind":"table","semantics":"events"}"#,
            r#"{"source":"s","kind":"index","on":["a"],"semantics":"events"}"#,
        ] {
            match err(spec) {
                ViewError::InvalidSpec { field, .. } => assert_eq!(field, "semantics"),
                e => panic!("{e}"),
            }
        }
        match err(
            r#"{"source":"s","kind":"aggregate","semantics":"stream","aggregates":{"n":{"fn":"count"}}}"#,
        ) {
            ViewError::InvalidSpec { field, .. } => assert_eq!(field, "semantics"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn filters_follow_the_documented_semantics() {
        let p = Plan::parse(
            br#"{"source":"s","kind":"table","filter":{"or":[
                {"field":"a.b","op":"ge","value":2.5},
                {"not":{"field":"c","op":"is_null"}}]}}"#,
        )
        .unwrap();
        let f = p.filter.unwrap();
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert!(f.matches(&v(r#"{"a":{"b":3}}"#)));
        assert!(!f.matches(&v(r#"{"a":{"b":2}}"#)));
        assert!(!f.matches(&v(r#"{"a":{"b":"3"}}"#)));
        assert!(f.matches(&v(r#"{"c":0}"#)));
        assert!(!f.matches(&v(r#"{"c":null}"#)));
        assert!(!f.matches(&v("17")));
    }
}
