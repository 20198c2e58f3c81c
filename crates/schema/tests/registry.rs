//! The registry's state: Confluent's semantics for ids, versions and deletes, each refusal
//! with its `error_code`, and (property) any sequence of operations replayed from its
//! records gives the same state.
#![expect(
    clippy::unwrap_used,
    reason = "tests fail loudly on an unexpected error"
)]

use logbook_schema::{
    Level, ParsedSchema, Planned, Record, Registry, SchemaError, SchemaType, VersionSel,
};
use proptest::prelude::*;

fn avro(fields: &[&str]) -> ParsedSchema {
    let fields: Vec<String> = fields
        .iter()
        .map(|f| format!(r#"{{"name":"{f}","type":"string","default":""}}"#))
        .collect();
    let text = format!(
        r#"{{"type":"record","name":"R","fields":[{}]}}"#,
        fields.join(",")
    );
    ParsedSchema::parse(SchemaType::Avro, &text).unwrap()
}

/// Plans and applies; returns the record written (None: nothing to write).
fn register(r: &mut Registry, subject: &str, s: &ParsedSchema) -> Result<(u32, u32), SchemaError> {
    match r.plan_register(subject, s)? {
        Planned::Existing(found) => Ok((found.id, found.version)),
        Planned::New(record) => {
            r.apply(&record)?;
            let found = r.lookup(subject, s, false)?;
            Ok((found.id, found.version))
        }
    }
}

fn apply(
    r: &mut Registry,
    planned: Result<(Record, impl Sized), SchemaError>,
) -> Result<(), SchemaError> {
    let (record, _) = planned?;
    r.apply(&record)
}

#[test]
fn ids_are_global_and_versions_per_subject() {
    let mut r = Registry::new();
    let (v1, v2) = (avro(&["a"]), avro(&["a", "b"]));
    assert_eq!(register(&mut r, "x-value", &v1).unwrap(), (1, 1));
    // The same schema again: the same answer, nothing new.
    assert_eq!(register(&mut r, "x-value", &v1).unwrap(), (1, 1));
    assert!(matches!(
        r.plan_register("x-value", &v1).unwrap(),
        Planned::Existing(_)
    ));
    // The same schema under another subject: the same id, that subject's version 1.
    assert_eq!(register(&mut r, "y-value", &v1).unwrap(), (1, 1));
    assert_eq!(register(&mut r, "x-value", &v2).unwrap(), (2, 2));
    assert_eq!(r.subjects(false), vec!["x-value", "y-value"]);
    assert_eq!(
        r.uses(1, false),
        vec![("x-value".into(), 1), ("y-value".into(), 1)]
    );
    assert_eq!(r.schema(2).unwrap().canonical(), v2.canonical());
    assert_eq!(
        r.version("x-value", VersionSel::Latest, false).unwrap().id,
        2
    );
    let e = r.schema(3).unwrap_err();
    assert_eq!((e.error_code(), e.http_status()), (40403, 404));
}

#[test]
fn soft_then_hard_delete_as_confluent() {
    let mut r = Registry::new();
    let (v1, v2) = (avro(&["a"]), avro(&["a", "b"]));
    register(&mut r, "s", &v1).unwrap();
    register(&mut r, "s", &v2).unwrap();

    // Permanent before soft: refused, named.
    let e = r
        .plan_delete_version("s", VersionSel::Number(1), true)
        .unwrap_err();
    assert_eq!(e.error_code(), 40407, "{e}");
    let planned = r.plan_delete_version("s", VersionSel::Number(1), false);
    apply(&mut r, planned).unwrap();
    assert_eq!(r.versions("s", false).unwrap(), vec![2]);
    assert_eq!(r.versions("s", true).unwrap(), vec![1, 2]);
    assert_eq!(
        r.version("s", VersionSel::Number(1), false)
            .unwrap_err()
            .error_code(),
        40402
    );
    assert!(r.version("s", VersionSel::Number(1), true).unwrap().deleted);
    assert_eq!(
        r.plan_delete_version("s", VersionSel::Number(1), false)
            .unwrap_err()
            .error_code(),
        40406
    );
    // A soft-deleted version's schema is still served by id.
    assert!(r.schema(1).is_ok());

    // Subjects: soft, then soft again refused, permanent needs soft first.
    assert_eq!(
        r.plan_delete_subject("s", true).unwrap_err().error_code(),
        40405
    );
    let (record, deleted) = r.plan_delete_subject("s", false).unwrap();
    assert_eq!(deleted, vec![2]);
    r.apply(&record).unwrap();
    assert_eq!(r.subjects(false), Vec::<String>::new());
    assert_eq!(r.subjects(true), vec!["s"]);
    assert_eq!(r.versions("s", false).unwrap_err().error_code(), 40401);
    assert_eq!(
        r.plan_delete_subject("s", false).unwrap_err().error_code(),
        40404
    );
    let (record, deleted) = r.plan_delete_subject("s", true).unwrap();
    assert_eq!(deleted, vec![1, 2]);
    r.apply(&record).unwrap();
    assert_eq!(r.subjects(true), Vec::<String>::new());
    assert_eq!(r.schema(1).unwrap_err().error_code(), 40403);

    // Registered again after a hard delete: the schema keeps its id, versions restart.
    assert_eq!(register(&mut r, "s", &v2).unwrap(), (2, 1));
}

#[test]
fn registering_after_a_soft_delete_continues_the_numbering() {
    let mut r = Registry::new();
    let v1 = avro(&["a"]);
    register(&mut r, "s", &v1).unwrap();
    let planned = r.plan_delete_subject("s", false);
    apply(&mut r, planned).unwrap();
    assert_eq!(register(&mut r, "s", &v1).unwrap(), (1, 2));
}

#[test]
fn levels_subject_then_global() {
    let mut r = Registry::new();
    assert_eq!(r.level(Some("s")), Level::Backward);
    assert_eq!(r.own_level("s").unwrap_err().error_code(), 40408);
    r.apply(&r.plan_set_level(None, Level::Full).unwrap())
        .unwrap();
    r.apply(&r.plan_set_level(Some("s"), Level::None).unwrap())
        .unwrap();
    assert_eq!(
        (r.level(Some("s")), r.level(Some("t")), r.level(None)),
        (Level::None, Level::Full, Level::Full)
    );
    let (record, before) = r.plan_delete_level(Some("s")).unwrap();
    assert_eq!(before, Level::None);
    r.apply(&record).unwrap();
    assert_eq!(r.level(Some("s")), Level::Full);
    let planned = r.plan_delete_level(None);
    apply(&mut r, planned).unwrap();
    assert_eq!(r.level(Some("s")), Level::Backward);
}

#[test]
fn bad_input_is_named_and_changes_nothing() {
    let r = Registry::new();
    for (text, code) in [
        ("latest", 0),
        ("-1", 0),
        ("7", 0),
        ("0", 42202),
        ("x", 42202),
        ("2147483648", 42202),
    ] {
        match VersionSel::parse(text) {
            Ok(_) => assert_eq!(code, 0, "{text}"),
            Err(e) => assert_eq!(e.error_code(), code, "{text}"),
        }
    }
    for bad in ["", "a\nb", &"x".repeat(256)] {
        assert_eq!(
            r.plan_register(bad, &avro(&["a"]))
                .unwrap_err()
                .error_code(),
            42205
        );
    }
    assert_eq!(
        r.version("nope", VersionSel::Latest, true)
            .unwrap_err()
            .error_code(),
        40401
    );
    assert_eq!(
        r.lookup("nope", &avro(&["a"]), false)
            .unwrap_err()
            .error_code(),
        40401
    );
}

#[test]
fn records_that_break_an_invariant_are_refused() {
    let mut r = Registry::new();
    let v1 = avro(&["a"]);
    let Planned::New(record) = r.plan_register("s", &v1).unwrap() else {
        panic!()
    };
    r.apply(&record).unwrap();
    // The same version again, an id naming another schema, a hard delete of a live version.
    let before = format!("{r:?}");
    for bad in [
        record.clone(),
        Record::Register {
            subject: "t".into(),
            version: 1,
            id: 1,
            schema_type: SchemaType::Avro,
            schema: avro(&["b"]).canonical().into(),
        },
        Record::DeleteVersion {
            subject: "s".into(),
            version: 1,
            permanent: true,
        },
    ] {
        let e = r.apply(&bad).unwrap_err();
        assert_eq!(e.error_code(), 50001, "{bad:?}");
        assert_eq!(format!("{r:?}"), before, "{bad:?} changed the state");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Register(u8, u8),
    DeleteVersion(u8, u8, bool),
    DeleteSubject(u8, bool),
    SetLevel(Option<u8>, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 0..6u8).prop_map(|(s, k)| Op::Register(s, k)),
        2 => (0..3u8, 0..5u8, any::<bool>()).prop_map(|(s, v, p)| Op::DeleteVersion(s, v, p)),
        1 => (0..3u8, any::<bool>()).prop_map(|(s, p)| Op::DeleteSubject(s, p)),
        1 => (proptest::option::of(0..3u8), 0..7u8).prop_map(|(s, l)| Op::SetLevel(s, l)),
    ]
}

/// Schema `k` of a small pool: records with growing field lists, some with defaults, so
/// that levels accept some registrations and refuse others.
fn pool(k: u8) -> ParsedSchema {
    let fields: Vec<String> = (0..=k)
        .map(|i| {
            if i % 2 == 0 {
                format!(r#"{{"name":"f{i}","type":"int"}}"#)
            } else {
                format!(r#"{{"name":"f{i}","type":"int","default":0}}"#)
            }
        })
        .collect();
    let text = format!(
        r#"{{"type":"record","name":"R","fields":[{}]}}"#,
        fields.join(",")
    );
    ParsedSchema::parse(SchemaType::Avro, &text).unwrap()
}

/// What a client can observe of a registry.
fn observe(r: &Registry) -> Vec<String> {
    let mut out = Vec::new();
    for s in r.subjects(true) {
        for v in r.versions(&s, true).unwrap() {
            let found = r.version(&s, VersionSel::Number(v), true).unwrap();
            out.push(format!(
                "{s} v{v} id{} deleted={} {}",
                found.id,
                found.deleted,
                found.schema.canonical()
            ));
        }
        out.push(format!("{s} level {:?}", r.level(Some(&s))));
    }
    out.push(format!("global {:?}", r.level(None)));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Replaying the records of any run gives the same state; ids name one schema each,
    /// a subject's versions only grow, and a refused operation writes nothing.
    #[test]
    fn replay_gives_the_same_state(ops in proptest::collection::vec(op(), 1..60)) {
        let mut live = Registry::new();
        let mut log: Vec<Record> = Vec::new();
        let mut id_of: std::collections::BTreeMap<String, u32> = Default::default();
        for op in ops {
            let subject = |s: u8| format!("s{s}");
            let planned: Result<Option<Record>, SchemaError> = match op {
                Op::Register(s, k) => live.plan_register(&subject(s), &pool(k)).map(|p| match p {
                    Planned::Existing(_) => None,
                    Planned::New(r) => Some(r),
                }),
                Op::DeleteVersion(s, v, p) => {
                    live.plan_delete_version(&subject(s), VersionSel::Number(u32::from(v) + 1), p).map(|(r, _)| Some(r))
                }
                Op::DeleteSubject(s, p) => live.plan_delete_subject(&subject(s), p).map(|(r, _)| Some(r)),
                Op::SetLevel(s, l) => live
                    .plan_set_level(s.map(subject).as_deref(), Level::ALL[usize::from(l)])
                    .map(Some),
            };
            let before = observe(&live);
            match planned {
                Ok(Some(record)) => {
                    if let Record::Register { id, schema, version, subject, .. } = &record {
                        prop_assert_eq!(*id_of.entry(schema.clone()).or_insert(*id), *id);
                        let last = live.versions(subject, true).ok().and_then(|v| v.last().copied());
                        prop_assert!(last.is_none_or(|l| l < *version));
                    }
                    live.apply(&record).unwrap();
                    log.push(record);
                }
                Ok(None) => prop_assert_eq!(observe(&live), before),
                Err(e) => {
                    prop_assert!(e.error_code() != 50001, "{}", e);
                    prop_assert_eq!(observe(&live), before);
                }
            }
        }
        let mut replayed = Registry::new();
        for record in &log {
            let text = serde_json::to_string(record).unwrap();
            replayed.apply(&serde_json::from_str(&text).unwrap()).unwrap();
        }
        prop_assert_eq!(observe(&replayed), observe(&live));
    }
}
