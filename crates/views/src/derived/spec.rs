//! A derived stream's spec — the JSON a user writes — compiled into a [`DerivedPlan`], and
//! the pure transform of one input record into its output record (or none). Decision 0031.
//!
//! The words are the view spec's where they mean the same (`source`, `filter`, `fields`);
//! so is the code: the filter is a view [`Filter`], the projection a table view's
//! [`project`], the new key an aggregate's group key ([`join_key`]).
//!
//! With `unique` the transform is stateful: each record passing the filter is a claim of the
//! value its `unique` fields make, and its output is the claim's outcome
//! ([`super::unique`]). With `ledger` it is the account processor of
//! [`super::ledger`]. The state of either is the source partition's [`State`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use logbook_log::{Record, StoredRecord};

use crate::apply::{join_key, project};
use crate::error::{Result, ViewError};
use crate::limits::{DERIVED_STATE_BYTES_MAX, SPEC_FIELDS_MAX};
use crate::spec::{FieldPath, Filter};

use super::ledger::{Balances, Step};
use super::unique::{self, Verdict, Winners};

/// What a stateful plan remembers of one source partition's records (empty for a
/// stateless one).
#[derive(Debug, Default)]
pub struct State {
    winners: Winners,
    balances: Balances,
}

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
    /// A uniqueness constraint on these fields' values (joined as `key_by`'s): each claim's
    /// output is its outcome, accepted or rejected (issue 21 item 2). The source must be
    /// keyed by the constrained value, so that every rival claim is in one partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Vec<String>>,
    /// The account processor of a ledger ([`super::ledger`]): the target is the source, and
    /// it consumes the credit instructions it emits itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ledger: bool,
}

/// A validated, compiled spec.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedPlan {
    /// The spec it came from.
    pub spec: DerivedSpec,
    filter: Option<Filter>,
    fields: Option<Vec<FieldPath>>,
    key_by: Option<Vec<FieldPath>>,
    unique: Option<Vec<FieldPath>>,
}

/// What the transform makes of one input record.
#[derive(Debug, Clone, PartialEq)]
pub enum Derived {
    /// The output record.
    Emit(Record),
    /// (With `ledger`.) These output records.
    EmitAll(Vec<Record>),
    /// The filter rejected it.
    Filtered,
    /// Its value is not JSON, or (with `unique`) its key is not its constrained value:
    /// skipped and counted.
    Skipped,
    /// (With `unique`.) Holding its claim would pass the state's byte limit.
    StateFull {
        /// Bytes the state would hold.
        bytes: usize,
    },
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
        let unique = paths("unique", &spec.unique)?;
        if unique.is_some() && spec.source == spec.target {
            return Err(ViewError::spec(
                "target",
                "a uniqueness constraint's outcomes go to another stream than its claims",
            ));
        }
        if spec.ledger {
            if spec.source != spec.target {
                return Err(ViewError::spec(
                    "target",
                    "a ledger writes its outcomes and credit instructions back into its source",
                ));
            }
            for (field, given) in [
                ("fields", spec.fields.is_some()),
                ("key_by", spec.key_by.is_some()),
                ("unique", spec.unique.is_some()),
            ] {
                if given {
                    return Err(ViewError::spec(
                        field,
                        "a ledger's records have a fixed shape: no fields, key_by or unique",
                    ));
                }
            }
        }
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
            unique,
        })
    }

    /// Whether outputs depend on earlier records (`unique`): a restart rebuilds the state by
    /// deriving the partition's records from its start again.
    pub fn is_stateful(&self) -> bool {
        self.unique.is_some() || self.spec.ledger
    }

    /// Whether it processes the records it emitted itself (a ledger applies its credit
    /// instructions); a stateless one passes over them.
    pub fn consumes_own_output(&self) -> bool {
        self.spec.ledger
    }

    /// The output of one input record: deterministic (no clock, no randomness), so reading
    /// the same input again — after the same records before it, for a stateful plan — makes
    /// the same output. `own` says whether this derived stream emitted `r` itself (a
    /// stateless plan is never given those); `state` is the source partition's (untouched by
    /// a stateless plan). Headers are copied except the ones the log reserves for request ids; the
    /// timestamp is left to the log.
    pub fn derive(&self, r: &StoredRecord, own: bool, state: &mut State) -> Derived {
        let Ok(value) = serde_json::from_slice::<Value>(&r.value) else {
            return Derived::Skipped;
        };
        if self.filter.as_ref().is_some_and(|f| !f.matches(&value)) {
            return Derived::Filtered;
        }
        if self.spec.ledger {
            return match state.balances.apply(
                r.key.as_deref(),
                &value,
                own,
                DERIVED_STATE_BYTES_MAX,
            ) {
                Step::Emit(records) => Derived::EmitAll(records),
                Step::Nothing => Derived::Filtered,
                Step::Skipped => Derived::Skipped,
                Step::Full { bytes } => Derived::StateFull { bytes },
            };
        }
        let key = match &self.key_by {
            None => r.key.clone(),
            Some(paths) => Some(join_key(paths, &value).0.into_bytes()),
        };
        let out_value = match &self.unique {
            Some(paths) => {
                if value.is_null() {
                    // A tombstone claims nothing.
                    return Derived::Filtered;
                }
                let constrained = join_key(paths, &value).0;
                if r.key.as_deref() != Some(constrained.as_bytes()) {
                    // Its rivals may be in another partition: no verdict would be sound.
                    return Derived::Skipped;
                }
                let taken_by = match state.winners.claim(
                    &constrained,
                    r.offset,
                    key.as_deref(),
                    DERIVED_STATE_BYTES_MAX,
                ) {
                    Verdict::Accepted => None,
                    Verdict::Rejected(w) => Some(w),
                    Verdict::Full { bytes } => return Derived::StateFull { bytes },
                };
                let claim = project(&self.fields, &value);
                let out = unique::outcome(&constrained, r.offset, claim, taken_by.as_ref());
                match serde_json::to_vec(&out) {
                    Ok(bytes) => bytes,
                    Err(_) => return Derived::Skipped,
                }
            }
            // The input's bytes as they are: nothing to re-encode.
            None if self.fields.is_none() => r.value.clone(),
            None => match serde_json::to_vec(&project(&self.fields, &value)) {
                Ok(bytes) => bytes,
                Err(_) => return Derived::Skipped,
            },
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

    /// A stateless plan's output (no earlier claims).
    fn once(plan: &DerivedPlan, r: &StoredRecord) -> Derived {
        plan.derive(r, false, &mut State::default())
    }

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
        let out = once(
            &plan,
            &stored(
                Some("o-1"),
                r#"{"status":"paid","customer":"c|7","total":12,"note":"x"}"#,
            ),
        );
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
            once(&plan, &stored(Some("o-2"), r#"{"status":"open"}"#)),
            Derived::Filtered
        );
        assert_eq!(once(&plan, &stored(None, "not json")), Derived::Skipped);
    }

    #[test]
    fn without_fields_the_value_is_copied_byte_for_byte() {
        let plan = DerivedPlan::parse(br#"{"source":"a","target":"b"}"#).unwrap();
        let Derived::Emit(r) = once(&plan, &stored(Some("k"), r#"{ "b":1,  "a":2 }"#)) else {
            panic!()
        };
        assert_eq!(r.value, br#"{ "b":1,  "a":2 }"#);
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
    }

    #[test]
    fn unique_claims_get_outcomes_in_offset_order() {
        let plan = DerivedPlan::parse(
            br#"{"source":"claims","target":"outcomes","unique":["username"],
                "key_by":["signup"],"fields":["signup"]}"#,
        )
        .unwrap();
        let mut state = State::default();
        let claim = |offset, key: &str, signup: &str| StoredRecord {
            offset,
            ..stored(
                Some(key),
                &format!(r#"{{"username":{key:?},"signup":{signup:?}}}"#),
            )
        };
        let mut outcomes = Vec::new();
        for r in [
            claim(3, "ada", "s-1"),
            claim(4, "bob", "s-2"),
            claim(9, "ada", "s-7"),
        ] {
            let Derived::Emit(out) = plan.derive(&r, false, &mut state) else {
                panic!()
            };
            outcomes.push((
                String::from_utf8(out.key.unwrap()).unwrap(),
                serde_json::from_slice::<Value>(&out.value).unwrap(),
            ));
        }
        assert_eq!(outcomes[0].0, "s-1");
        assert_eq!(outcomes[0].1["outcome"], "accepted");
        assert_eq!(outcomes[1].1["outcome"], "accepted");
        assert_eq!(
            outcomes[2],
            (
                "s-7".to_string(),
                serde_json::json!({"outcome": "rejected", "unique": "ada", "offset": 9,
                    "claim": {"signup": "s-7"}, "taken_by": {"offset": 3, "key": "s-1"}})
            )
        );
        // Not keyed by its value: its rivals may be elsewhere, so it gets no verdict.
        let stray = StoredRecord {
            offset: 10,
            ..stored(Some("s-8"), r#"{"username":"ada","signup":"s-8"}"#)
        };
        assert_eq!(plan.derive(&stray, false, &mut state), Derived::Skipped);
        assert!(plan.is_stateful());
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
            (r#"{"source":"a","target":"b","unique":[]}"#, "unique"),
            (r#"{"source":"a","target":"a","unique":["u"]}"#, "target"),
            (r#"{"source":"a","target":"b","ledger":true}"#, "target"),
            (
                r#"{"source":"a","target":"a","ledger":true,"key_by":["x"]}"#,
                "key_by",
            ),
        ] {
            match DerivedPlan::parse(json.as_bytes()) {
                Err(ViewError::InvalidSpec { field: f, .. }) => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }
}
