//! The compatibility matrix of issue 20: each level × each change, for Avro and JSON Schema,
//! through the registry (a subject holding v1, then v2 checked and registered), and
//! transitive against non-transitive levels over three versions.
#![expect(
    clippy::unwrap_used,
    reason = "tests fail loudly on an unexpected error"
)]

use logbook_schema::{Level, ParsedSchema, Planned, Record, Registry, SchemaType};

/// Whether `level` allows a change that is (`backward`, `forward`) compatible.
fn allowed(level: Level, backward: bool, forward: bool) -> bool {
    match level {
        Level::None => true,
        Level::Backward | Level::BackwardTransitive => backward,
        Level::Forward | Level::ForwardTransitive => forward,
        Level::Full | Level::FullTransitive => backward && forward,
    }
}

fn parse(t: SchemaType, text: &str) -> ParsedSchema {
    ParsedSchema::parse(t, text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn register(
    r: &mut Registry,
    subject: &str,
    s: &ParsedSchema,
) -> Result<(), logbook_schema::SchemaError> {
    match r.plan_register(subject, s)? {
        Planned::Existing(_) => panic!("already registered"),
        Planned::New(record) => r.apply(&record),
    }
}

fn set_level(r: &mut Registry, subject: &str, level: Level) {
    let record = r.plan_set_level(Some(subject), level).unwrap();
    r.apply(&record).unwrap();
}

/// A registry whose subject `s` holds `versions` (registered under NONE), at `level`.
fn subject_with(t: SchemaType, versions: &[&str], level: Level) -> Registry {
    let mut r = Registry::new();
    set_level(&mut r, "s", Level::None);
    for v in versions {
        register(&mut r, "s", &parse(t, v)).unwrap();
    }
    set_level(&mut r, "s", level);
    r
}

/// Checks every level against one (name, v1, v2, backward, forward) case.
fn matrix(t: SchemaType, cases: &[(&str, &str, &str, bool, bool)]) {
    for (name, v1, v2, backward, forward) in cases {
        for level in Level::ALL {
            let mut r = subject_with(t, &[v1], level);
            let new = parse(t, v2);
            let reasons = r.compatibility("s", None, &new).unwrap();
            let want = allowed(level, *backward, *forward);
            assert_eq!(
                reasons.is_empty(),
                want,
                "{t:?} {name} under {}: {reasons:?}",
                level.name()
            );
            let registered = register(&mut r, "s", &new);
            match registered {
                Ok(()) => assert!(want),
                Err(e) => {
                    assert!(!want, "{name} {level:?}: {e}");
                    assert_eq!(e.error_code(), 409);
                    assert_eq!(
                        r.versions("s", true).unwrap(),
                        vec![1],
                        "nothing registered"
                    );
                }
            }
        }
    }
}

fn avro_record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Flight","fields":[{fields}]}}"#)
}

#[test]
fn avro_matrix() {
    let a = r#"{"name":"a","type":"int"}"#;
    let enum2 = r#"{"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"]}}"#;
    let enum3 = r#"{"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y","Z"]}}"#;
    let cases = [
        (
            "add a field with a default",
            avro_record(a),
            avro_record(&format!(
                r#"{a},{{"name":"b","type":"string","default":"x"}}"#
            )),
            true,
            true,
        ),
        (
            "add a field without a default",
            avro_record(a),
            avro_record(&format!(r#"{a},{{"name":"b","type":"string"}}"#)),
            false,
            true,
        ),
        (
            "remove a field",
            avro_record(&format!(r#"{a},{{"name":"b","type":"string"}}"#)),
            avro_record(a),
            true,
            false,
        ),
        (
            "rename a field with an alias",
            avro_record(a),
            avro_record(r#"{"name":"a2","type":"int","aliases":["a"]}"#),
            true,
            false,
        ),
        (
            "promote int to long",
            avro_record(a),
            avro_record(r#"{"name":"a","type":"long"}"#),
            true,
            false,
        ),
        (
            "add an enum symbol",
            avro_record(enum2),
            avro_record(enum3),
            true,
            false,
        ),
        (
            "change a type",
            avro_record(a),
            avro_record(r#"{"name":"a","type":"string"}"#),
            false,
            false,
        ),
    ];
    let cases: Vec<_> = cases
        .iter()
        .map(|(n, v1, v2, b, f)| (*n, v1.as_str(), v2.as_str(), *b, *f))
        .collect();
    matrix(SchemaType::Avro, &cases);
}

fn object(props: &str, required: &str, closed: bool) -> String {
    let extra = if closed {
        r#","additionalProperties":false"#
    } else {
        ""
    };
    format!(r#"{{"type":"object","properties":{{{props}}},"required":[{required}]{extra}}}"#)
}

#[test]
fn json_schema_matrix() {
    let a = r#""a":{"type":"string"}"#;
    let ab = r#""a":{"type":"string"},"b":{"type":"number"}"#;
    let mut cases = Vec::new();
    for closed in [false, true] {
        let model = if closed { "closed" } else { "open" };
        // (change, v1, v2, backward, forward)
        cases.extend([
            (
                format!("add an optional property, {model}"),
                object(a, "", closed),
                object(ab, "", closed),
                closed,
                !closed,
            ),
            (
                format!("add a required property, {model}"),
                object(a, "", closed),
                object(ab, r#""b""#, closed),
                false,
                !closed,
            ),
            (
                format!("remove a property, {model}"),
                object(ab, "", closed),
                object(a, "", closed),
                !closed,
                closed,
            ),
            (
                format!("narrow a type, {model}"),
                object(ab, "", closed),
                object(
                    r#""a":{"type":"string"},"b":{"type":"integer"}"#,
                    "",
                    closed,
                ),
                false,
                true,
            ),
            (
                format!("widen a type, {model}"),
                object(
                    r#""a":{"type":"string"},"b":{"type":"integer"}"#,
                    "",
                    closed,
                ),
                object(ab, "", closed),
                true,
                false,
            ),
        ]);
    }
    cases.push((
        "open a closed content model".into(),
        object(a, "", true),
        object(a, "", false),
        true,
        false,
    ));
    cases.push((
        "close an open content model".into(),
        object(a, "", false),
        object(a, "", true),
        false,
        true,
    ));
    let cases: Vec<_> = cases
        .iter()
        .map(|(n, v1, v2, b, f)| (n.as_str(), v1.as_str(), v2.as_str(), *b, *f))
        .collect();
    matrix(SchemaType::Json, &cases);
}

/// Three versions where the new one is compatible with the latest but not with the first:
/// the plain level passes, the transitive one does not.
#[test]
fn transitive_levels_check_every_live_version() {
    let a = r#"{"name":"a","type":"int"}"#;
    let b = r#"{"name":"b","type":"string"}"#;
    let b_default = r#"{"name":"b","type":"string","default":"x"}"#;
    let cases = [
        // v3 cannot read v1's data (b has no default there and v1 lacks it).
        (
            Level::Backward,
            [
                avro_record(a),
                avro_record(&format!("{a},{b_default}")),
                avro_record(&format!("{a},{b}")),
            ],
        ),
        // v1 cannot read v3's data (v3 lacks b, v1 has no default for it).
        (
            Level::Forward,
            [
                avro_record(&format!("{a},{b}")),
                avro_record(&format!("{a},{b_default}")),
                avro_record(a),
            ],
        ),
        (
            Level::Full,
            [
                avro_record(&format!("{a},{b}")),
                avro_record(&format!("{a},{b_default}")),
                avro_record(a),
            ],
        ),
    ];
    for (plain, [v1, v2, v3]) in cases {
        let transitive = Level::parse(&format!("{}_TRANSITIVE", plain.name())).unwrap();
        let mut r = subject_with(SchemaType::Avro, &[&v1, &v2], plain);
        let new = parse(SchemaType::Avro, &v3);
        assert_eq!(
            r.compatibility("s", None, &new).unwrap(),
            Vec::<String>::new(),
            "{plain:?}"
        );
        set_level(&mut r, "s", transitive);
        let reasons = r.compatibility("s", None, &new).unwrap();
        assert_eq!(reasons.len(), 1, "{transitive:?}: {reasons:?}");
        assert!(reasons[0].starts_with("version 1 "), "{reasons:?}");
        // Soft-deleting v1 takes it out of the transitive check.
        let (record, _) = r
            .plan_delete_version("s", logbook_schema::VersionSel::Number(1), false)
            .unwrap();
        r.apply(&record).unwrap();
        assert!(
            r.compatibility("s", None, &new).unwrap().is_empty(),
            "{transitive:?}"
        );
        register(&mut r, "s", &new).unwrap();
        assert_eq!(r.versions("s", false).unwrap(), vec![2, 3]);
    }
}

#[test]
fn levels_parse_case_insensitively_and_refuse_others() {
    for l in Level::ALL {
        assert_eq!(Level::parse(l.name()).unwrap(), l);
        assert_eq!(Level::parse(&l.name().to_lowercase()).unwrap(), l);
    }
    let e = Level::parse("SIDEWAYS").unwrap_err();
    assert_eq!(e.error_code(), 42203);
    assert_eq!(e.http_status(), 422);
    // The records name levels as Confluent does.
    let r = Record::SetLevel {
        subject: None,
        level: Level::FullTransitive,
    };
    assert!(
        serde_json::to_string(&r)
            .unwrap()
            .contains("\"FULL_TRANSITIVE\"")
    );
}

#[test]
fn another_type_is_never_compatible() {
    let avro = parse(SchemaType::Avro, r#""string""#);
    let json = parse(SchemaType::Json, r#"{"type":"string"}"#);
    let mut r = subject_with(SchemaType::Avro, &[r#""string""#], Level::Backward);
    let e = register(&mut r, "s", &json).unwrap_err();
    assert_eq!(e.error_code(), 409, "{e}");
    assert!(logbook_schema::can_read(&avro, &json).is_err());
}
