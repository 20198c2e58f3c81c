//! The schema registry through the real binary (issue 20): Confluent Schema Registry's REST
//! API under `/v1/schema-registry/` on a `logbook serve`, every route and its errors with
//! Confluent's `error_code` beside the problem's `code`; the state rebuilt from `_schemas`
//! after a restart with identical ids; the `schemas:*` scopes; and Confluent's own Python
//! client (`confluent_kafka.schema_registry`) against it.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::process::{Command, Stdio};

use logbook_api::client::blocking::Client;
use logbook_api::paths::{self, route};
use serde_json::{Value, json};

mod common;
use common::api::call;

const V1: &str =
    r#"{"type":"record","name":"Flight","fields":[{"name":"carrier","type":"string"}]}"#;
/// V1 spelled otherwise (whitespace, member order): the same schema.
const V1_RESPELLED: &str = r#"{ "name": "Flight", "fields": [ {"type": "string", "name": "carrier"} ], "type": "record" }"#;
/// A field without a default: old records lack it, so not BACKWARD compatible.
const V2_BAD: &str = r#"{"type":"record","name":"Flight","fields":[{"name":"carrier","type":"string"},{"name":"delay","type":"int"}]}"#;
/// The same field with a default: BACKWARD compatible.
const V2: &str = r#"{"type":"record","name":"Flight","fields":[{"name":"carrier","type":"string"},{"name":"delay","type":"int","default":0}]}"#;

fn sr(rest: &str) -> String {
    format!("{}{rest}", route::SCHEMA_REGISTRY)
}

fn avro(schema: &str) -> Value {
    json!({ "schema": schema })
}

/// Asserts an error answer: its status, the problem's `code`, and Confluent's `error_code`
/// with a `message`.
fn assert_error(answer: &(u16, Value), status: u16, code: &str, error_code: u64) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["error_code"], error_code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn subject(
    client: &Client,
    method: &str,
    name: &str,
    rest: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    call(client, method, &paths::schema_subject(name, rest), body)
}

#[test]
fn every_route_answers_as_confluent_and_the_registry_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = common::spawn_serve(dir.path(), &[], &[], Stdio::null());
    let c = serve.client();
    // An empty registry.
    assert_eq!(call(&c, "GET", &sr("/subjects"), None), (200, json!([])));
    assert_eq!(
        call(&c, "GET", &sr("/schemas/types"), None),
        (200, json!(["AVRO", "JSON"]))
    );
    assert_eq!(
        call(&c, "GET", &sr("/mode"), None),
        (200, json!({"mode": "READWRITE"}))
    );
    assert_eq!(
        call(&c, "GET", &sr("/config"), None),
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    // Register; the same schema spelled otherwise, or under another subject, keeps its id.
    let f = "flights-value";
    assert_eq!(
        subject(&c, "POST", f, "/versions", Some(&avro(V1))),
        (200, json!({"id": 1}))
    );
    assert_eq!(
        subject(
            &c,
            "POST",
            f,
            "/versions?normalize=true",
            Some(&avro(V1_RESPELLED))
        ),
        (200, json!({"id": 1}))
    );
    assert_eq!(
        subject(&c, "POST", "other-value", "/versions", Some(&avro(V1))),
        (200, json!({"id": 1}))
    );
    assert_eq!(subject(&c, "GET", f, "/versions", None), (200, json!([1])));
    let canonical: Value = serde_json::from_str(V1).unwrap();
    let (status, v1) = subject(&c, "GET", f, "/versions/1", None);
    assert_eq!(status, 200, "{v1}");
    assert_eq!(
        (
            &v1["subject"],
            &v1["id"],
            &v1["version"],
            v1.get("schemaType")
        ),
        (&json!(f), &json!(1), &json!(1), None)
    );
    assert_eq!(
        serde_json::from_str::<Value>(v1["schema"].as_str().unwrap()).unwrap(),
        canonical
    );
    assert_eq!(
        subject(&c, "GET", f, "/versions/latest/schema", None),
        (200, canonical.clone())
    );
    let (status, by_id) = call(
        &c,
        "GET",
        &sr("/schemas/ids/1?subject=flights-value&format=resolved"),
        None,
    );
    assert_eq!((status, by_id.get("schemaType")), (200, None), "{by_id}");
    assert_eq!(
        serde_json::from_str::<Value>(by_id["schema"].as_str().unwrap()).unwrap(),
        canonical
    );
    assert_eq!(
        call(&c, "GET", &sr("/schemas/ids/1/versions"), None),
        (
            200,
            json!([{"subject": f, "version": 1}, {"subject": "other-value", "version": 1}])
        )
    );
    assert_error(
        &call(&c, "GET", &sr("/schemas/ids/99"), None),
        404,
        "schema_not_found",
        40403,
    );

    // Compatibility: refused under BACKWARD, with the reason; a default makes it compatible.
    assert_error(
        &subject(&c, "POST", f, "/versions", Some(&avro(V2_BAD))),
        409,
        "schema_incompatible",
        409,
    );
    assert_eq!(
        call(
            &c,
            "POST",
            &paths::schema_compatibility(f, "latest"),
            Some(&avro(V2_BAD))
        ),
        (200, json!({"is_compatible": false}))
    );
    let (status, verbose) = call(
        &c,
        "POST",
        &format!("{}?verbose=true", paths::schema_compatibility(f, "1")),
        Some(&avro(V2_BAD)),
    );
    assert_eq!((status, &verbose["is_compatible"]), (200, &json!(false)));
    assert!(
        verbose["messages"][0].as_str().unwrap().contains("delay"),
        "{verbose}"
    );
    assert_eq!(
        subject(&c, "POST", "compatibility-subjects-unused", "", None).0,
        400,
        "a lookup without a body names what is missing"
    );
    assert_eq!(
        call(
            &c,
            "POST",
            &sr("/compatibility/subjects/flights-value/versions"),
            Some(&avro(V2))
        ),
        (200, json!({"is_compatible": true}))
    );
    assert_eq!(
        subject(&c, "POST", f, "/versions", Some(&avro(V2))),
        (200, json!({"id": 2}))
    );
    assert_eq!(
        subject(&c, "GET", f, "/versions", None),
        (200, json!([1, 2]))
    );

    // Lookup.
    let (status, found) = subject(&c, "POST", f, "", Some(&avro(V1_RESPELLED)));
    assert_eq!(
        (status, &found["version"], &found["id"]),
        (200, &json!(1), &json!(1)),
        "{found}"
    );
    let never = r#"{"type":"record","name":"Never","fields":[]}"#;
    assert_error(
        &subject(&c, "POST", f, "", Some(&avro(never))),
        404,
        "schema_not_found",
        40403,
    );
    assert_error(
        &subject(&c, "POST", "nobody", "", Some(&avro(V1))),
        404,
        "subject_not_found",
        40401,
    );
    assert_error(
        &subject(&c, "GET", f, "/versions/3", None),
        404,
        "schema_version_not_found",
        40402,
    );
    assert_error(
        &subject(&c, "GET", f, "/versions/abc", None),
        422,
        "invalid_schema_version",
        42202,
    );
    assert_error(
        &subject(&c, "GET", "nobody", "/versions", None),
        404,
        "subject_not_found",
        40401,
    );

    // Levels: per subject, global, removed.
    let none = json!({"compatibility": "NONE"});
    assert_eq!(
        call(&c, "PUT", &paths::schema_subject_config(f), Some(&none)),
        (200, none.clone())
    );
    assert_eq!(
        call(&c, "GET", &paths::schema_subject_config(f), None),
        (200, json!({"compatibilityLevel": "NONE"}))
    );
    assert_error(
        &call(
            &c,
            "GET",
            &paths::schema_subject_config("other-value"),
            None,
        ),
        404,
        "subject_level_not_found",
        40408,
    );
    assert_eq!(
        call(
            &c,
            "GET",
            &format!(
                "{}?defaultToGlobal=true",
                paths::schema_subject_config("other-value")
            ),
            None
        ),
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_error(
        &call(
            &c,
            "PUT",
            &sr("/config"),
            Some(&json!({"compatibility": "SIDEWAYS"})),
        ),
        422,
        "invalid_compatibility_level",
        42203,
    );
    assert_eq!(
        call(
            &c,
            "PUT",
            &sr("/config"),
            Some(&json!({"compatibility": "FULL"}))
        ),
        (200, json!({"compatibility": "FULL"}))
    );
    assert_eq!(
        call(&c, "GET", &sr("/config"), None),
        (200, json!({"compatibilityLevel": "FULL"}))
    );
    assert_eq!(
        call(&c, "DELETE", &sr("/config"), None),
        (200, json!({"compatibilityLevel": "FULL"}))
    );
    assert_eq!(
        call(&c, "GET", &sr("/config"), None),
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_eq!(
        call(&c, "DELETE", &paths::schema_subject_config(f), None),
        (200, json!({"compatibilityLevel": "NONE"}))
    );
    assert_error(
        &call(&c, "DELETE", &paths::schema_subject_config(f), None),
        404,
        "subject_level_not_found",
        40408,
    );

    // Deletes: soft before permanent, versions keep their numbers and ids.
    assert_error(
        &subject(&c, "DELETE", f, "/versions/2?permanent=true", None),
        404,
        "schema_version_not_soft_deleted",
        40407,
    );
    assert_eq!(
        subject(&c, "DELETE", f, "/versions/2", None),
        (200, json!(2))
    );
    assert_error(
        &subject(&c, "DELETE", f, "/versions/2", None),
        404,
        "schema_version_soft_deleted",
        40406,
    );
    assert_eq!(subject(&c, "GET", f, "/versions", None), (200, json!([1])));
    assert_eq!(
        subject(&c, "GET", f, "/versions?deleted=true", None),
        (200, json!([1, 2]))
    );
    let (status, soft) = subject(&c, "GET", f, "/versions/2?deleted=true", None);
    assert_eq!((status, &soft["deleted"]), (200, &json!(true)), "{soft}");
    assert_eq!(
        call(&c, "GET", &sr("/schemas/ids/2"), None).0,
        200,
        "a soft-deleted version's id stays readable"
    );
    assert_eq!(
        subject(&c, "DELETE", f, "/versions/2?permanent=true", None),
        (200, json!(2))
    );
    assert_error(
        &call(&c, "GET", &sr("/schemas/ids/2"), None),
        404,
        "schema_not_found",
        40403,
    );
    assert_error(
        &subject(&c, "DELETE", f, "?permanent=true", None),
        404,
        "subject_not_soft_deleted",
        40405,
    );
    assert_eq!(subject(&c, "DELETE", f, "", None), (200, json!([1])));
    assert_error(
        &subject(&c, "DELETE", f, "", None),
        404,
        "subject_soft_deleted",
        40404,
    );
    assert_eq!(
        call(&c, "GET", &sr("/subjects"), None),
        (200, json!(["other-value"]))
    );
    assert_eq!(
        call(&c, "GET", &sr("/subjects?deleted=true"), None),
        (200, json!([f, "other-value"]))
    );
    assert_eq!(
        call(
            &c,
            "GET",
            &sr("/subjects?deleted=true&subjectPrefix=fl"),
            None
        ),
        (200, json!([f]))
    );
    assert_eq!(
        subject(&c, "DELETE", f, "?permanent=true", None),
        (200, json!([1]))
    );
    assert_eq!(
        call(&c, "GET", &sr("/subjects?deleted=true"), None),
        (200, json!(["other-value"]))
    );

    // JSON Schema: its type is said; what the registry does not take is named.
    let events = json!({"schemaType": "JSON", "schema": r#"{"type":"object","properties":{"n":{"type":"integer"}}}"#});
    assert_eq!(
        subject(&c, "POST", "events-value", "/versions", Some(&events)),
        (200, json!({"id": 3}))
    );
    let (status, by_id) = call(&c, "GET", &sr("/schemas/ids/3"), None);
    assert_eq!(
        (status, &by_id["schemaType"]),
        (200, &json!("JSON")),
        "{by_id}"
    );
    for refused in [
        json!({"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";"}),
        json!({"schema": V1, "references": [{"name": "x", "subject": "y", "version": 1}]}),
        json!({"schema": "{\"type\": \"record\"}"}),
    ] {
        assert_error(
            &subject(&c, "POST", "events-value", "/versions", Some(&refused)),
            422,
            "invalid_schema",
            42201,
        );
    }
    assert_error(
        &subject(&c, "GET", "events-value", "/versions?zzz=1", None),
        400,
        "invalid_request",
        400,
    );
    assert_eq!(
        subject(&c, "GET", "events-value", "/versions", None),
        (200, json!([1]))
    );

    // Confluent's content type is taken.
    let bearer = serve.bearer();
    let body = serde_json::to_vec(&avro(V2)).unwrap();
    let answer = common::wire::one(
        serve.addr(),
        "POST",
        &paths::schema_subject("typed-value", "/versions"),
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/vnd.schemaregistry.v1+json"),
        ],
        &body,
    );
    assert_eq!((answer.status, answer.body.as_str()), (200, r#"{"id":2}"#));

    // A restart rebuilds the registry from `_schemas`: the same subjects, versions, ids.
    let before: Vec<(u16, Value)> = [
        sr("/subjects?deleted=true"),
        sr("/schemas/ids/1/versions?deleted=true"),
        sr("/schemas/ids/3"),
        paths::schema_subject("other-value", "/versions/latest"),
        paths::schema_subject("typed-value", "/versions/1"),
    ]
    .iter()
    .map(|p| call(&c, "GET", p, None))
    .collect();
    assert_eq!(serve.terminate(), 0);
    let serve = common::spawn_serve(dir.path(), &[], &[], Stdio::null());
    let c = serve.client();
    let after: Vec<(u16, Value)> = [
        sr("/subjects?deleted=true"),
        sr("/schemas/ids/1/versions?deleted=true"),
        sr("/schemas/ids/3"),
        paths::schema_subject("other-value", "/versions/latest"),
        paths::schema_subject("typed-value", "/versions/1"),
    ]
    .iter()
    .map(|p| call(&c, "GET", p, None))
    .collect();
    assert_eq!(before, after);
    // A new schema after the restart takes the next id, not a reused one.
    let v3 = r#"{"type":"record","name":"Flight","fields":[{"name":"carrier","type":"string"},{"name":"gate","type":"string","default":""}]}"#;
    assert_eq!(
        subject(&c, "POST", "other-value", "/versions", Some(&avro(v3))),
        (200, json!({"id": 4}))
    );
}

/// A token for `principal` with `scopes`, made by the admin; its secret.
fn token(serve: &common::Serve, principal: &str, scopes: &[&str]) -> String {
    let (status, created) = call(
        &serve.client(),
        "POST",
        route::TOKENS,
        Some(&json!({"principal": principal, "scopes": scopes})),
    );
    assert_eq!(status, 201, "{created}");
    created["token"].as_str().unwrap().to_string()
}

#[test]
fn schemas_scopes_cover_subjects_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(dir.path(), &[], &[], Stdio::null());
    let admin = serve.client();
    assert_eq!(
        subject(
            &admin,
            "POST",
            "flights-value",
            "/versions",
            Some(&avro(V1))
        )
        .0,
        200
    );
    assert_eq!(
        subject(&admin, "POST", "secret-value", "/versions", Some(&avro(V2))).0,
        200
    );
    let reader = common::api::client_with_token(
        &serve.base,
        Some(&token(&serve, "reader", &["schemas:read:flights-*"])),
    );
    let writer = common::api::client_with_token(
        &serve.base,
        Some(&token(&serve, "writer", &["schemas:write:flights-*"])),
    );

    assert_eq!(
        subject(&reader, "GET", "flights-value", "/versions", None),
        (200, json!([1]))
    );
    assert_eq!(call(&reader, "GET", &sr("/schemas/ids/1"), None).0, 200);
    for (method, path, body) in [
        (
            "GET",
            paths::schema_subject("secret-value", "/versions"),
            None,
        ),
        ("GET", sr("/schemas/ids/2"), None),
        ("GET", sr("/subjects"), None),
        (
            "POST",
            paths::schema_subject("flights-value", "/versions"),
            Some(avro(V2)),
        ),
        ("PUT", sr("/config"), Some(json!({"compatibility": "NONE"}))),
    ] {
        let (status, body) = call(&reader, method, &path, body.as_ref());
        assert_eq!(
            (status, &body["code"]),
            (403, &json!("forbidden")),
            "{method} {path}: {body}"
        );
    }
    assert_eq!(
        subject(
            &writer,
            "POST",
            "flights-value",
            "/versions",
            Some(&avro(V2))
        ),
        (200, json!({"id": 2}))
    );
    assert_eq!(
        call(
            &writer,
            "PUT",
            &paths::schema_subject_config("flights-value"),
            Some(&json!({"compatibility": "FULL"}))
        )
        .0,
        200
    );
    let (status, _) = subject(&writer, "DELETE", "secret-value", "", None);
    assert_eq!(status, 403);
    assert_eq!(
        subject(&admin, "GET", "secret-value", "/versions", None),
        (200, json!([1])),
        "the refused delete changed nothing"
    );
}

/// Confluent's Python client — its `SchemaRegistryClient`, `AvroSerializer` and
/// `AvroDeserializer`, `JSONSerializer` — against a real server, through HTTP Basic with a
/// token's principal: registers, reads back by id and version, checks compatibility, sees
/// an incompatible registration refused with `error_code` 409, and round-trips records
/// through a stream. Needs `LOGBOOK_PYTHON` (scripts/test sets it from scripts/pyenv): a
/// missing one fails the test rather than skipping it.
#[test]
fn confluent_python_client_works_against_logbook() {
    let python = std::env::var("LOGBOOK_PYTHON").expect(
        "LOGBOOK_PYTHON must name a python with confluent-kafka[avro,json,schemaregistry] \
         (PY=$(scripts/pyenv) makes one; scripts/test exports it)",
    );
    let dir = tempfile::tempdir().unwrap();
    let serve = common::spawn_serve(dir.path(), &[], &[], Stdio::null());
    let secret = token(
        &serve,
        "sr-client",
        &[
            "schemas:read:*",
            "schemas:write:*",
            "streams:append:flights",
            "streams:read:flights",
            "streams:manage:flights",
        ],
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/schema_registry_client.py"
    );
    let out = Command::new(&python)
        .arg(script)
        .arg(&serve.base)
        .arg(format!("sr-client:{secret}"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Confluent client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok: every step"), "{stdout}");
}
