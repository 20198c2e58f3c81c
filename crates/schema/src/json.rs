//! JSON Schema: compiling (the document checked against its draft's meta-schema, no remote
//! `$ref` fetched), validating instances, and the compatibility check.
//!
//! Compatibility is containment: a reader can read a writer's data when every instance the
//! writer's schema accepts, the reader's accepts too. [`can_read`] decides it for the
//! keywords that shape records — `type`, `properties`, `required`, `additionalProperties`
//! (the open or closed content model), `items`, `enum`, `const` and the numeric and length
//! bounds — and answers *incompatible, cannot decide* for any other keyword that differs
//! between the two, rather than guess. So, as in Confluent's registry:
//!
//! | change                         | backward | forward |
//! |--------------------------------|----------|---------|
//! | add an optional property, open model   | no  | yes |
//! | add an optional property, closed model | yes | no  |
//! | add a required property                | no  | yes |
//! | remove a property, open model          | yes | no  |
//! | remove a property, closed model        | no  | yes |
//! | narrow a type (`number` → `integer`)   | no  | yes |
//! | widen a type (`integer` → `number`)    | yes | no  |

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::SchemaError;

/// Compiles a JSON Schema document into a validator, after checking it against its
/// draft's meta-schema.
///
/// # Errors
/// [`SchemaError::InvalidSchema`] naming the place in the schema and why.
pub fn compile(document: &Value) -> Result<jsonschema::Validator, SchemaError> {
    if let Err(e) = jsonschema::meta::validate(document) {
        return Err(SchemaError::InvalidSchema {
            reason: format!("schema{}: {e}", e.instance_path()),
        });
    }
    jsonschema::validator_for(document).map_err(|e| SchemaError::InvalidSchema {
        reason: format!("schema{}: {e}", e.instance_path()),
    })
}

/// The first failure of `instance` against `validator`: the JSON Pointer of the failing
/// value in the instance and why; `None` when it conforms.
pub fn first_failure(
    validator: &jsonschema::Validator,
    instance: &Value,
) -> Option<(String, String)> {
    validator
        .iter_errors(instance)
        .next()
        .map(|e| (e.instance_path().to_string(), e.to_string()))
}

/// Whether every instance `writer` accepts, `reader` accepts too.
///
/// # Errors
/// Why not (or why it cannot be decided), naming the place in the schema as a JSON Pointer.
pub fn can_read(writer: &Value, reader: &Value) -> Result<(), String> {
    contained(writer, reader, "#")
}

/// The keywords [`contained`] reasons about; any other one must be equal on both sides.
const UNDERSTOOD: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    // Annotations: they change no instance's validity.
    "$schema",
    "$id",
    "title",
    "description",
    "default",
    "examples",
    "$comment",
];

fn contained(w: &Value, r: &Value, at: &str) -> Result<(), String> {
    if w == r || r == &Value::Bool(true) || w == &Value::Bool(false) {
        return Ok(());
    }
    let empty = Map::new();
    let (wm, rm) = match (w, r) {
        (Value::Object(wm), Value::Object(rm)) => (wm, rm),
        (Value::Bool(true), Value::Object(rm)) => (&empty, rm),
        (_, Value::Bool(false)) => return Err(format!("{at}: the reader accepts nothing")),
        _ => return Err(format!("{at}: not a schema")),
    };
    if rm.is_empty() {
        return Ok(());
    }
    for k in wm.keys().chain(rm.keys()) {
        if !UNDERSTOOD.contains(&k.as_str()) && wm.get(k) != rm.get(k) {
            return Err(format!(
                "{at}/{k}: differs, and compatibility of '{k}' is not decided"
            ));
        }
    }
    types(wm, rm, at)?;
    values(wm, rm, at)?;
    bounds(wm, rm, at)?;
    object(wm, rm, at)?;
    match (wm.get("items"), rm.get("items")) {
        (_, None) => Ok(()),
        (None, Some(ri)) => contained(&Value::Bool(true), ri, &format!("{at}/items")),
        (Some(wi), Some(ri)) => contained(wi, ri, &format!("{at}/items")),
    }
}

/// The JSON types a schema's `type` allows (`None`: any).
fn type_set(m: &Map<String, Value>) -> Option<BTreeSet<&str>> {
    match m.get("type")? {
        Value::String(t) => Some([t.as_str()].into()),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn types(wm: &Map<String, Value>, rm: &Map<String, Value>, at: &str) -> Result<(), String> {
    let Some(rt) = type_set(rm) else {
        return Ok(());
    };
    let Some(wt) = type_set(wm) else {
        return Err(format!(
            "{at}/type: the writer allows any type, the reader only {rt:?}"
        ));
    };
    for t in &wt {
        let ok = rt.contains(t) || (*t == "integer" && rt.contains("number"));
        if !ok {
            return Err(format!(
                "{at}/type: the writer allows '{t}', the reader does not"
            ));
        }
    }
    Ok(())
}

fn values(wm: &Map<String, Value>, rm: &Map<String, Value>, at: &str) -> Result<(), String> {
    let allowed = |m: &Map<String, Value>| -> Option<Vec<Value>> {
        match (m.get("const"), m.get("enum")) {
            (Some(c), _) => Some(vec![c.clone()]),
            (None, Some(Value::Array(e))) => Some(e.clone()),
            _ => None,
        }
    };
    let Some(r) = allowed(rm) else { return Ok(()) };
    let Some(w) = allowed(wm) else {
        return Err(format!(
            "{at}/enum: the reader allows only listed values, the writer any"
        ));
    };
    match w.iter().find(|v| !r.contains(v)) {
        Some(v) => Err(format!(
            "{at}/enum: the writer allows {v}, the reader does not"
        )),
        None => Ok(()),
    }
}

fn bounds(wm: &Map<String, Value>, rm: &Map<String, Value>, at: &str) -> Result<(), String> {
    // (keyword, whether the reader's bound must be at most the writer's)
    for (k, lower) in [
        ("minimum", true),
        ("minLength", true),
        ("minItems", true),
        ("maximum", false),
        ("maxLength", false),
        ("maxItems", false),
    ] {
        let Some(r) = rm.get(k).and_then(Value::as_f64) else {
            continue;
        };
        let ok = match wm.get(k).and_then(Value::as_f64) {
            None => false,
            Some(w) if lower => r <= w,
            Some(w) => r >= w,
        };
        if !ok {
            return Err(format!(
                "{at}/{k}: the reader's bound {r} is tighter than the writer's"
            ));
        }
    }
    Ok(())
}

/// The schema an object's member `name` must conform to, under `m` (`true`: anything).
fn member<'a>(m: &'a Map<String, Value>, name: &str) -> &'a Value {
    const ANY: &Value = &Value::Bool(true);
    m.get("properties")
        .and_then(|p| p.get(name))
        .or_else(|| m.get("additionalProperties"))
        .unwrap_or(ANY)
}

fn names(m: &Map<String, Value>, key: &str) -> BTreeSet<String> {
    match m.get(key) {
        Some(Value::Object(p)) => p.keys().cloned().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => BTreeSet::new(),
    }
}

fn object(wm: &Map<String, Value>, rm: &Map<String, Value>, at: &str) -> Result<(), String> {
    let w_required = names(wm, "required");
    if let Some(p) = names(rm, "required").difference(&w_required).next() {
        return Err(format!(
            "{at}/required: the reader requires '{p}', the writer does not"
        ));
    }
    let mut declared = names(wm, "properties");
    declared.extend(names(rm, "properties"));
    for p in &declared {
        contained(
            member(wm, p),
            member(rm, p),
            &format!("{at}/properties/{p}"),
        )?;
    }
    // Members neither declares: the writer's additional ones must be the reader's too.
    const ANY: Value = Value::Bool(true);
    let wa = wm.get("additionalProperties").unwrap_or(&ANY);
    let ra = rm.get("additionalProperties").unwrap_or(&ANY);
    contained(wa, ra, &format!("{at}/additionalProperties"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instance_failures_name_the_path() {
        let v = compile(&json!({"type":"object","properties":{"a":{"type":"array","items":{"type":"integer"}}}}))
            .unwrap();
        assert_eq!(first_failure(&v, &json!({"a":[1,2]})), None);
        let (path, _) = first_failure(&v, &json!({"a":[1,"x"]})).unwrap();
        assert_eq!(path, "/a/1");
    }

    #[test]
    fn undecided_keywords_are_incompatible_unless_equal() {
        let w = json!({"type":"object","anyOf":[{"required":["a"]}]});
        assert!(can_read(&w, &w).is_ok());
        let r = json!({"type":"object","anyOf":[{"required":["b"]}]});
        let e = can_read(&w, &r).unwrap_err();
        assert!(e.contains("anyOf"), "{e}");
    }
}
