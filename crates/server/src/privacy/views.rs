//! What views and derived streams may do with a stream's personal fields (issue 19,
//! decision 0030).
//!
//! A view holds what the log holds: for a personal field, the sealed object, never the
//! plaintext. Its reads reveal it ([`super::Privacy::reveal_row`]): decrypted while the
//! subject's key lives, `{"erased": true}` once it is destroyed. So an erasure needs no
//! rewrite of any view, its checkpoints or its journal — every copy is ciphertext under a
//! destroyed key — and a view rebuilt from offset 0 after the erasure equals the live one
//! (the same ciphertext, the same digest).
//!
//! What a view cannot do is *compute* on a personal field: a filter, an index, a group or
//! an aggregate over ciphertext would be meaningless (each subject's key differs) and an
//! index or group key would put the ciphertext where a reader expects a value. Such specs
//! are refused by field (`invalid_view_spec`), nothing created. A table may carry personal
//! fields (whole, or projected). A derived stream may neither read a stream that declares
//! personal data (it would copy the ciphertext out of the stream its authentication binds
//! it to) nor write one (its appends do not pass the sealing of the write path).

use logbook_log::PersonalData;
use logbook_views::Plan;
use logbook_views::spec::{FieldPath, Filter, PlanKind};

use super::fields::{personal_overlap, pointer_of_path};

/// Where a view spec computes on a personal field: `(field, reason)` of the first such use.
pub fn computes_on_personal(d: &PersonalData, plan: &Plan) -> Option<(String, String)> {
    let mut uses: Vec<(String, &FieldPath)> = Vec::new();
    match &plan.kind {
        PlanKind::Table { .. } => {}
        PlanKind::Index { on } => {
            uses.extend(on.iter().enumerate().map(|(i, p)| (format!("on[{i}]"), p)));
        }
        PlanKind::Aggregate {
            group_by,
            aggregates,
        } => {
            uses.extend(
                group_by
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("group_by[{i}]"), p)),
            );
            uses.extend(aggregates.iter().filter_map(|a| {
                let p = a.field.as_ref()?;
                Some((format!("aggregates.{}.field", a.name), p))
            }));
        }
    }
    if let Some(f) = &plan.filter {
        filter_paths(f, &mut uses);
    }
    uses.into_iter().find_map(|(field, path)| {
        let pointer = pointer_of_path(&path.segments);
        let personal = personal_overlap(d, &pointer)?;
        Some((
            field,
            format!(
                "{:?} is (or holds) the personal field {personal:?} of stream {:?}, stored encrypted per data subject: a view may carry it in a table, not filter, index, group or aggregate on it",
                path.text, plan.spec.source
            ),
        ))
    })
}

fn filter_paths<'a>(f: &'a Filter, out: &mut Vec<(String, &'a FieldPath)>) {
    match f {
        Filter::Cmp(p, _, _) | Filter::IsNull(p) | Filter::IsNotNull(p) => {
            out.push(("filter".to_string(), p));
        }
        Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|f| filter_paths(f, out)),
        Filter::Not(f) => filter_paths(f, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(spec: serde_json::Value) -> Option<String> {
        let d = PersonalData {
            subject: "/user".into(),
            fields: vec!["/email".into(), "/addr/ip".into()],
        };
        let plan = Plan::from_value(spec).unwrap_or_else(|e| panic!("{e}"));
        computes_on_personal(&d, &plan).map(|(field, _)| field)
    }

    #[test]
    fn views_may_carry_personal_fields_but_not_compute_on_them() {
        assert_eq!(check(json!({"source": "s", "kind": "table"})), None);
        assert_eq!(
            check(json!({"source": "s", "kind": "table", "fields": ["email", "addr.city"]})),
            None
        );
        assert_eq!(
            check(json!({"source": "s", "kind": "index", "on": ["user", "email"]})),
            Some("on[1]".into())
        );
        assert_eq!(
            check(json!({"source": "s", "kind": "index", "on": ["addr"]})),
            Some("on[0]".into()),
            "a member holding a personal field"
        );
        assert_eq!(
            check(
                json!({"source": "s", "kind": "aggregate", "group_by": ["addr.ip"],
                "aggregates": {"n": {"fn": "count"}}})
            ),
            Some("group_by[0]".into())
        );
        assert_eq!(
            check(json!({"source": "s", "kind": "aggregate",
                "aggregates": {"d": {"fn": "count_distinct", "field": "email"}}})),
            Some("aggregates.d.field".into())
        );
        assert_eq!(
            check(json!({"source": "s", "kind": "table",
                "filter": {"not": {"field": "email", "op": "is_null"}}})),
            Some("filter".into())
        );
        assert_eq!(
            check(
                json!({"source": "s", "kind": "aggregate", "group_by": ["user"],
                "aggregates": {"n": {"fn": "count"}}})
            ),
            None
        );
    }
}
