//! A derived stream's spec — the JSON a user writes — compiled into a [`DerivedPlan`], and
//! the pure transform of one input record into its output record (or none). Decision 0031.
//!
//! The words are the view spec's where they mean the same (`source`, `filter`, `fields`);
//! so is the code: the filter is a view [`Filter`], the projection a table view's
//! [`project`], the new key an aggregate's group key ([`join_key`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use logbook_log::{Record, StoredRecord};

use crate::apply::{join_key, project};
use crate::error::{Result, ViewError};
use crate::limits::SPEC_FIELDS_MAX;
use crate::spec::{FieldPath, Filter};

/// A derived stream's spec as written by the user (decision 0031).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedSpec {
    /// The stream read.
    pub source: String,
    /// The stream appended to (may be `source`).
    pub target: String,
    /// Only records that pass it are emitted (the view filter grammar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// The output value holds only these paths (default: the whole value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// The output key: these fields' values joined as a group key (default: the input key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_by: Option<Vec<String>>,
}

/// A validated, compiled spec.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedPlan {
    /// The spec it came from.
    pub spec: DerivedSpec,
    filter: Option<Filter>,
    fields: Option<Vec<FieldPath>>,
    key_by: Option<Vec<FieldPath>>,
}

/// What the transform makes of one input record.
#[derive(Debug, Clone, PartialEq)]
pub enum Derived {
    /// The output record.
    Emit(Record),
    /// The filter rejected it.
    Filtered,
    /// Its value is not JSON: skipped and counted.
    Skipped,
}

impl DerivedPlan {
    /// Parses and validates a spec given as JSON bytes.
    ///
    /// # Errors
    /// [`ViewError::InvalidSpec`] naming the field (bad JSON, wrong type, unknown or missing
    /// member, limits).
    pub fn parse(json: &[u8]) -> Result<DerivedPlan> {
        let value = crate::spec::spec_value(json)?;
        if !value.is_object() {
            return Err(ViewError::spec(
                "",
                "a derived stream spec is a JSON object",
            ));
        }
        let spec: DerivedSpec =
            serde_path_to_error::deserialize(value).map_err(crate::spec::spec_error)?;
        DerivedPlan::compile(spec)
    }

    /// Validates and compiles a typed spec.
    ///
    /// # Errors
    /// As [`DerivedPlan::parse`].
    pub fn compile(spec: DerivedSpec) -> Result<DerivedPlan> {
        let paths = |field: &str, list: &Option<Vec<String>>| -> Result<Option<Vec<FieldPath>>> {
            let Some(list) = list else { return Ok(None) };
            if list.is_empty() || list.len() > SPEC_FIELDS_MAX {
                return Err(ViewError::spec(
                    field,
                    format!("expected 1 to {SPEC_FIELDS_MAX} field paths"),
                ));
            }
            let out = list
                .iter()
                .enumerate()
                .map(|(i, p)| FieldPath::parse(&format!("{field}[{i}]"), p))
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(out))
        };
        let fields = paths("fields", &spec.fields)?;
        let key_by = paths("key_by", &spec.key_by)?;
        let filter = spec
            .filter
            .as_ref()
            .map(|f| Filter::compile("filter", f, 1, &mut 0))
            .transpose()?;
        Ok(DerivedPlan {
            spec,
            filter,
            fields,
            key_by,
        })
    }

    /// The output of one input record: deterministic (no clock, no randomness), so reading
    /// the same input again makes the same output. Headers are copied except the ones the
    /// log reserves for request ids; the timestamp is left to the log.
    pub fn derive(&self, r: &StoredRecord) -> Derived {
        let Ok(value) = serde_json::from_slice::<Value>(&r.value) else {
            return Derived::Skipped;
        };
        if self.filter.as_ref().is_some_and(|f| !f.matches(&value)) {
            return Derived::Filtered;
        }
        let out_value = match &self.fields {
            // The input's bytes as they are: nothing to re-encode.
            None => r.value.clone(),
            Some(_) => match serde_json::to_vec(&project(&self.fields, &value)) {
                Ok(bytes) => bytes,
                Err(_) => return Derived::Skipped,
            },
        };
        let key = match &self.key_by {
            None => r.key.clone(),
            Some(paths) => Some(join_key(paths, &value).0.into_bytes()),
        };
        Derived::Emit(Record {
            key,
            value: out_value,
            headers: r
                .headers
                .iter()
                .filter(|(name, _)| !logbook_log::dedup::is_reserved_header(name))
                .cloned()
                .collect(),
            timestamp_ms: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(key: Option<&str>, value: &str) -> StoredRecord {
        StoredRecord {
            offset: 7,
            timestamp_ms: 0,
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.as_bytes().to_vec(),
            headers: vec![
                ("request-id".into(), b"r".to_vec()),
                ("trace".into(), b"t".to_vec()),
            ],
        }
    }

    #[test]
    fn filters_projects_and_rekeys() {
        let plan = DerivedPlan::parse(
            br#"{"source":"orders","target":"paid","fields":["customer","total"],
                "key_by":["customer"],"filter":{"field":"status","op":"eq","value":"paid"}}"#,
        )
        .unwrap();
        let out = plan.derive(&stored(
            Some("o-1"),
            r#"{"status":"paid","customer":"c|7","total":12,"note":"x"}"#,
        ));
        let Derived::Emit(r) = out else {
            panic!("{out:?}")
        };
        assert_eq!(r.key.as_deref(), Some(&br"c\|7"[..]));
        assert_eq!(
            serde_json::from_slice::<Value>(&r.value).unwrap(),
            serde_json::json!({"customer":"c|7","total":12})
        );
        assert_eq!(r.headers, vec![("trace".to_string(), b"t".to_vec())]);
        assert_eq!(
            plan.derive(&stored(Some("o-2"), r#"{"status":"open"}"#)),
            Derived::Filtered
        );
        assert_eq!(plan.derive(&stored(None, "not json")), Derived::Skipped);
    }

    #[test]
    fn without_fields_the_value_is_copied_byte_for_byte() {
        let plan = DerivedPlan::parse(br#"{"source":"a","target":"b"}"#).unwrap();
        let Derived::Emit(r) = plan.derive(&stored(Some("k"), r#"{ "b":1,  "a":2 }"#)) else {
            panic!()
        };
        assert_eq!(r.value, br#"{ "b":1,  "a":2 }"#);
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
    }

    #[test]
    fn errors_name_the_field() {
        for (json, field) in [
            (r#"{"source":"a"}"#, "target"),
            (r#"{"source":"a","target":"b","fields":[]}"#, "fields"),
            (
                r#"{"source":"a","target":"b","key_by":["x..y"]}"#,
                "key_by[0]",
            ),
            (
                r#"{"source":"a","target":"b","filter":{"field":"x","op":"zz","value":1}}"#,
                "filter.op",
            ),
            (r#"{"source":"a","target":"b","colour":1}"#, "colour"),
        ] {
            match DerivedPlan::parse(json.as_bytes()) {
                Err(ViewError::InvalidSpec { field: f, .. }) => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }
}
