//! The schema registry over HTTP: Confluent Schema Registry's REST API under
//! `/v1/schema-registry/` (bodies: `logbook_api::schemas`; state: [`crate::schemas`]).
//! Member names, answers and `error_code`s are Confluent's, so its clients work unchanged;
//! every error also is a problem document. Every call reads or appends `_schemas` and may
//! wait for an fsync: all run on the blocking pool.
//!
//! Query parameters are Confluent's: `deleted` (include soft-deleted versions),
//! `deleted_only`, `offset` and `limit` (listings), `permanent` (a hard delete, after a soft
//! one), `normalize` (accepted; the stored form is already normalized), `verbose` (a
//! compatibility check's messages), `defaultToGlobal`, `subjectPrefix`, and `format`,
//! `fetchMaxId`, `reference_format` (accepted; they change nothing here). Booleans are
//! `true` or `false` in any case. Others are refused by name.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use logbook_api::paths::route;
use logbook_api::schemas::{
    CompatibilityCheck, CompatibilityConfig, CompatibilityLevel, RegisteredId, RegistryMode,
    SchemaById, SchemaDocument, SchemaRequest, SubjectVersion, SubjectVersionRef,
};
use logbook_schema::{
    Level, ParsedSchema, Planned, Record, Registered, SchemaError, SchemaType, VersionSel,
};

use crate::auth::Caller;
use crate::auth::scope::{Action, Kind, Need};
use crate::error::{ApiError, Problem};
use crate::extract::{JsonBody, Path, blocking};
use crate::schemas::{Plan, SchemaRegistry};
use crate::state::AppState;

use super::Params;

/// A request's body as a handler takes it: its parse error is answered as the registry's.
type Body<T> = Result<JsonBody<T>, ApiError>;

/// Every error of these routes carries an `error_code` for Confluent's clients: the
/// registry's own, else the HTTP status (as Confluent does for errors of its framework).
fn confluent(mut e: ApiError) -> ApiError {
    if e.error_code.is_none() {
        e.error_code = Some(u32::from(e.status().as_u16()));
    }
    e
}

/// Runs `f` on the registry on the blocking pool; errors carry `error_code`.
async fn run<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&SchemaRegistry) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let registry: Arc<SchemaRegistry> = state
        .opened()
        .and_then(|o| o.schemas())
        .map_err(confluent)?;
    blocking(move || f(&registry))
        .await
        .and_then(|r| r)
        .map_err(confluent)
}

/// A boolean query parameter (absent: false), `true` or `false` in any case (Confluent's
/// Python client sends `True` and `False`).
fn flag(q: &Params, name: &str) -> Result<bool, ApiError> {
    match q.text(name) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(ApiError::invalid(
            name,
            format!("query parameter {name}={v:?}: expected true or false"),
        )),
    }
}

/// A listing as Confluent pages it: from `offset` (default 0), at most `limit` items
/// (default -1: all); `deleted_only` keeps what `deleted=true` adds.
fn listing<T: PartialEq>(q: &Params, all: Vec<T>, live: Vec<T>) -> Result<Vec<T>, ApiError> {
    // Both flags are checked whichever wins: a bad `deleted` is refused beside
    // `deleted_only=true` too.
    let (deleted_only, deleted) = (flag(q, "deleted_only")?, flag(q, "deleted")?);
    let mut items = if deleted_only {
        all.into_iter().filter(|x| !live.contains(x)).collect()
    } else if deleted {
        all
    } else {
        live
    };
    // Confluent's offset is a Java int: 0 to 2^31 - 1, as the OpenAPI document says.
    let offset = match q.get::<i32>("offset")? {
        None => 0,
        Some(o) => usize::try_from(o).map_err(|_| {
            ApiError::invalid(
                "offset",
                format!("query parameter offset={o}: must be 0 or more"),
            )
        })?,
    };
    items.drain(..offset.min(items.len()));
    if let Some(limit) = q.get::<i64>("limit")?.and_then(|l| usize::try_from(l).ok()) {
        items.truncate(limit);
    }
    Ok(items)
}

/// The schema a request names, parsed by its type (references refused: not supported).
fn parse_schema(body: &SchemaRequest) -> Result<ParsedSchema, SchemaError> {
    if body.references.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(SchemaError::InvalidSchema {
            reason: "references: schema references are not supported".into(),
        });
    }
    let schema_type = match body.schema_type.as_deref() {
        None => SchemaType::Avro,
        Some(name) => SchemaType::parse(name)?,
    };
    ParsedSchema::parse(schema_type, &body.schema)
}

/// Confluent's `schemaType` member: absent for Avro.
fn type_member(schema: &ParsedSchema) -> Option<String> {
    match schema.schema_type() {
        SchemaType::Avro => None,
        other => Some(other.name().to_string()),
    }
}

fn subject_version(v: Registered) -> SubjectVersion {
    SubjectVersion {
        schema_type: type_member(&v.schema),
        schema: v.schema.canonical().to_string(),
        subject: v.subject,
        id: v.id,
        version: v.version,
        deleted: v.deleted.then_some(true),
    }
}

/// Every subject with a live version (with `deleted=true`, soft-deleted ones too; with
/// `deleted_only=true`, only those), in name order; `subjectPrefix` keeps those starting
/// with it; `offset` and `limit` page the list.
#[utoipa::path(get, path = route::SR_SUBJECTS, tag = "schemas",
    params(("deleted" = Option<bool>, Query), ("deleted_only" = Option<bool>, Query),
        ("subjectPrefix" = Option<String>, Query), ("offset" = Option<u32>, Query),
        ("limit" = Option<i64>, Query, description = "Most subjects; -1 (default): all")),
    responses((status = 200, body = Vec<String>)))]
pub async fn list_subjects(
    State(state): State<AppState>,
    q: Params,
) -> Result<Json<Vec<String>>, ApiError> {
    q.only(&[
        "deleted",
        "deleted_only",
        "subjectPrefix",
        "offset",
        "limit",
    ])
    .map_err(confluent)?;
    let prefix = q.text("subjectPrefix").unwrap_or("").to_string();
    let (all, live) = run(&state, move |r| {
        r.read(|reg| Ok((reg.subjects(true), reg.subjects(false))))
    })
    .await?;
    let keep = |list: Vec<String>| -> Vec<String> {
        list.into_iter()
            .filter(|s| s.starts_with(&prefix))
            .collect()
    };
    Ok(Json(listing(&q, keep(all), keep(live)).map_err(confluent)?))
}

/// A subject's version numbers, ascending (`deleted`, `deleted_only`, `offset`, `limit` as
/// for the subjects).
#[utoipa::path(get, path = route::SR_VERSIONS, tag = "schemas",
    params(("subject" = String, Path), ("deleted" = Option<bool>, Query), ("deleted_only" = Option<bool>, Query),
        ("offset" = Option<u32>, Query), ("limit" = Option<i64>, Query, description = "Most versions; -1 (default): all")),
    responses((status = 200, body = Vec<u32>),
        (status = 404, description = "`subject_not_found` (40401)", body = Problem, content_type = "application/problem+json")))]
pub async fn list_versions(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
) -> Result<Json<Vec<u32>>, ApiError> {
    q.only(&["deleted", "deleted_only", "offset", "limit"])
        .map_err(confluent)?;
    let any =
        flag(&q, "deleted").map_err(confluent)? || flag(&q, "deleted_only").map_err(confluent)?;
    let (all, live) = run(&state, move |r| {
        r.read(|reg| {
            let all = reg.versions(&subject, any)?;
            // A subject whose versions are all soft-deleted has no live ones.
            let live = reg.versions(&subject, false).unwrap_or_default();
            Ok((all, live))
        })
    })
    .await?;
    Ok(Json(listing(&q, all, live).map_err(confluent)?))
}

/// Registers a schema under a subject (the subject is made by its first version): its
/// global id. A schema the subject already has live answers its id and writes nothing.
#[utoipa::path(post, path = route::SR_VERSIONS, tag = "schemas",
    params(("subject" = String, Path), ("normalize" = Option<bool>, Query)),
    request_body(content = SchemaRequest, description = "JSON; Confluent's application/vnd.schemaregistry.v1+json is taken too"),
    responses((status = 200, body = RegisteredId),
        (status = 409, description = "`schema_incompatible` (409): incompatible under the subject's level", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_schema` (42201), `schema_operation_not_permitted` (42205)", body = Problem, content_type = "application/problem+json")))]
pub async fn register(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
    body: Body<SchemaRequest>,
) -> Result<Json<RegisteredId>, ApiError> {
    q.only(&["normalize"]).map_err(confluent)?;
    flag(&q, "normalize").map_err(confluent)?;
    let JsonBody(body) = body.map_err(confluent)?;
    let id = run(&state, move |r| {
        let schema = parse_schema(&body)?;
        r.write(|reg| match reg.plan_register(&subject, &schema)? {
            Planned::Existing(v) => Ok(Plan::Done(v.id)),
            Planned::New(record) => {
                let id = match &record {
                    Record::Register { id, .. } => *id,
                    other => {
                        return Err(SchemaError::BadRecord {
                            reason: format!("a registration planned {other:?}"),
                        });
                    }
                };
                Ok(Plan::Append(record, id))
            }
        })
    })
    .await?;
    Ok(Json(RegisteredId { id }))
}

/// Looks a schema up under a subject: the version that holds it.
#[utoipa::path(post, path = route::SR_SUBJECT, tag = "schemas",
    params(("subject" = String, Path), ("normalize" = Option<bool>, Query), ("deleted" = Option<bool>, Query),
        ("format" = Option<String>, Query, description = "Accepted; changes nothing")),
    request_body(content = SchemaRequest, description = "JSON; Confluent's application/vnd.schemaregistry.v1+json is taken too"),
    responses((status = 200, body = SubjectVersion),
        (status = 404, description = "`subject_not_found` (40401), `schema_not_found` (40403)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_schema` (42201)", body = Problem, content_type = "application/problem+json")))]
pub async fn lookup(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
    body: Body<SchemaRequest>,
) -> Result<Json<SubjectVersion>, ApiError> {
    q.only(&["normalize", "deleted", "format"])
        .map_err(confluent)?;
    flag(&q, "normalize").map_err(confluent)?;
    let deleted = flag(&q, "deleted").map_err(confluent)?;
    let JsonBody(body) = body.map_err(confluent)?;
    let found = run(&state, move |r| {
        let schema = parse_schema(&body)?;
        r.read(|reg| reg.lookup(&subject, &schema, deleted))
    })
    .await?;
    Ok(Json(subject_version(found)))
}

/// Deletes a subject: soft (its versions hidden, numbers and ids kept), or with
/// `permanent=true` after a soft delete, for good. Answers the versions deleted.
#[utoipa::path(delete, path = route::SR_SUBJECT, tag = "schemas",
    params(("subject" = String, Path), ("permanent" = Option<bool>, Query)),
    responses((status = 200, body = Vec<u32>),
        (status = 404, description = "`subject_not_found` (40401), `subject_soft_deleted` (40404), `subject_not_soft_deleted` (40405)", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_subject(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
) -> Result<Json<Vec<u32>>, ApiError> {
    q.only(&["permanent"]).map_err(confluent)?;
    let permanent = flag(&q, "permanent").map_err(confluent)?;
    let versions = run(&state, move |r| {
        r.write(|reg| {
            let (record, versions) = reg.plan_delete_subject(&subject, permanent)?;
            Ok(Plan::Append(record, versions))
        })
    })
    .await?;
    Ok(Json(versions))
}

/// One version of a subject (`latest`, `-1` or a number).
#[utoipa::path(get, path = route::SR_VERSION, tag = "schemas",
    params(("subject" = String, Path), ("version" = String, Path, description = "`latest`, -1 or 1..=2^31-1"), ("deleted" = Option<bool>, Query),
        ("format" = Option<String>, Query, description = "Accepted; changes nothing")),
    responses((status = 200, body = SubjectVersion),
        (status = 404, description = "`subject_not_found` (40401), `schema_version_not_found` (40402)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_schema_version` (42202)", body = Problem, content_type = "application/problem+json")))]
pub async fn get_version(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    q: Params,
) -> Result<Json<SubjectVersion>, ApiError> {
    q.only(&["deleted", "format"]).map_err(confluent)?;
    let deleted = flag(&q, "deleted").map_err(confluent)?;
    let found = run(&state, move |r| {
        let sel = VersionSel::parse(&version)?;
        r.read(|reg| reg.version(&subject, sel, deleted))
    })
    .await?;
    Ok(Json(subject_version(found)))
}

/// One version's schema text alone (the JSON of the schema itself).
#[utoipa::path(get, path = route::SR_VERSION_SCHEMA, tag = "schemas",
    params(("subject" = String, Path), ("version" = String, Path, description = "`latest`, -1 or 1..=2^31-1"), ("deleted" = Option<bool>, Query)),
    responses((status = 200, description = "The schema (JSON)", body = SchemaDocument),
        (status = 404, description = "`subject_not_found` (40401), `schema_version_not_found` (40402)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_schema_version` (42202)", body = Problem, content_type = "application/problem+json")))]
pub async fn get_version_schema(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    q: Params,
) -> Result<Response, ApiError> {
    q.only(&["deleted"]).map_err(confluent)?;
    let deleted = flag(&q, "deleted").map_err(confluent)?;
    let found = run(&state, move |r| {
        let sel = VersionSel::parse(&version)?;
        r.read(|reg| reg.version(&subject, sel, deleted))
    })
    .await?;
    let mut resp = found.schema.canonical().to_string().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Deletes one version: soft (hidden, its number and id kept), or with `permanent=true`
/// after a soft delete, for good. Answers the version deleted.
#[utoipa::path(delete, path = route::SR_VERSION, tag = "schemas",
    params(("subject" = String, Path), ("version" = String, Path, description = "`latest`, -1 or 1..=2^31-1"), ("permanent" = Option<bool>, Query)),
    responses((status = 200, body = u32),
        (status = 404, description = "`subject_not_found` (40401), `schema_version_not_found` (40402), `schema_version_soft_deleted` (40406), `schema_version_not_soft_deleted` (40407)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_schema_version` (42202)", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_version(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    q: Params,
) -> Result<Json<u32>, ApiError> {
    q.only(&["permanent"]).map_err(confluent)?;
    let permanent = flag(&q, "permanent").map_err(confluent)?;
    let deleted = run(&state, move |r| {
        let sel = VersionSel::parse(&version)?;
        r.write(|reg| {
            let (record, number) = reg.plan_delete_version(&subject, sel, permanent)?;
            Ok(Plan::Append(record, number))
        })
    })
    .await?;
    Ok(Json(deleted))
}

/// The subjects whose versions use schema `id`: what reading it needs (one of them).
fn id_needs(reg: &logbook_schema::Registry, id: u32) -> Vec<Need> {
    reg.uses(id, true)
        .into_iter()
        .map(|(subject, _)| Need::Name(Kind::Schemas, Action::Read, subject))
        .collect()
}

/// A schema by its global id (readable while any version, soft-deleted ones too, uses it).
/// Needs `schemas:read` on one of the subjects using it.
#[utoipa::path(get, path = route::SR_SCHEMA, tag = "schemas",
    params(("id" = u32, Path), ("subject" = Option<String>, Query), ("format" = Option<String>, Query),
        ("fetchMaxId" = Option<bool>, Query), ("reference_format" = Option<String>, Query)),
    responses((status = 200, body = SchemaById),
        (status = 404, description = "`schema_not_found` (40403)", body = Problem, content_type = "application/problem+json")))]
pub async fn get_schema(
    State(state): State<AppState>,
    Path(id): Path<u32>,
    q: Params,
    caller: Caller,
) -> Result<Json<SchemaById>, ApiError> {
    q.only(&["subject", "format", "fetchMaxId", "reference_format"])
        .map_err(confluent)?;
    flag(&q, "fetchMaxId").map_err(confluent)?;
    let found = run(&state, move |r| {
        r.read(|reg| {
            let schema = reg.schema(id)?.clone();
            Ok((schema, id_needs(reg, id)))
        })
        .and_then(|(schema, needs)| {
            crate::auth::authorize_any(&caller, &needs, &format!("schema {id}"))?;
            Ok(schema)
        })
    })
    .await?;
    Ok(Json(SchemaById {
        schema_type: type_member(&found),
        schema: found.canonical().to_string(),
    }))
}

/// The (subject, version) pairs whose versions use schema `id`.
#[utoipa::path(get, path = route::SR_SCHEMA_VERSIONS, tag = "schemas",
    params(("id" = u32, Path), ("deleted" = Option<bool>, Query), ("subject" = Option<String>, Query, description = "Only this subject's versions")),
    responses((status = 200, body = Vec<SubjectVersionRef>),
        (status = 404, description = "`schema_not_found` (40403)", body = Problem, content_type = "application/problem+json")))]
pub async fn get_schema_versions(
    State(state): State<AppState>,
    Path(id): Path<u32>,
    q: Params,
    caller: Caller,
) -> Result<Json<Vec<SubjectVersionRef>>, ApiError> {
    q.only(&["deleted", "subject"]).map_err(confluent)?;
    let deleted = flag(&q, "deleted").map_err(confluent)?;
    let subject = q.text("subject").map(str::to_string);
    let uses = run(&state, move |r| {
        let (uses, needs) = r.read(|reg| {
            reg.schema(id)?;
            Ok((reg.uses(id, deleted), id_needs(reg, id)))
        })?;
        crate::auth::authorize_any(&caller, &needs, &format!("schema {id}"))?;
        Ok(uses)
    })
    .await?;
    Ok(Json(
        uses.into_iter()
            .filter(|(s, _)| subject.as_ref().is_none_or(|want| want == s))
            .map(|(subject, version)| SubjectVersionRef { subject, version })
            .collect(),
    ))
}

/// The schema types the registry takes.
#[utoipa::path(get, path = route::SR_SCHEMA_TYPES, tag = "schemas",
    responses((status = 200, body = Vec<String>)))]
pub async fn schema_types(q: Params) -> Result<Json<Vec<String>>, ApiError> {
    q.only(&[]).map_err(confluent)?;
    Ok(Json(vec![
        SchemaType::Avro.name().to_string(),
        SchemaType::Json.name().to_string(),
    ]))
}

/// Checks a schema against one version of a subject under the subject's level.
#[utoipa::path(post, path = route::SR_COMPATIBILITY_VERSION, tag = "schemas",
    params(("subject" = String, Path), ("version" = String, Path, description = "`latest`, -1 or 1..=2^31-1"),
        ("verbose" = Option<bool>, Query), ("normalize" = Option<bool>, Query)),
    request_body(content = SchemaRequest, description = "JSON; Confluent's application/vnd.schemaregistry.v1+json is taken too"),
    responses((status = 200, body = CompatibilityCheck),
        (status = 404, description = "`subject_not_found` (40401), `schema_version_not_found` (40402)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_schema` (42201), `invalid_schema_version` (42202)", body = Problem, content_type = "application/problem+json")))]
pub async fn check_version(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    q: Params,
    body: Body<SchemaRequest>,
) -> Result<Json<CompatibilityCheck>, ApiError> {
    check(state, subject, Some(version), q, body).await
}

/// Checks a schema against the versions the subject's level names (every live one for a
/// transitive level, else the latest); a subject without versions takes any schema.
#[utoipa::path(post, path = route::SR_COMPATIBILITY, tag = "schemas",
    params(("subject" = String, Path), ("verbose" = Option<bool>, Query), ("normalize" = Option<bool>, Query)),
    request_body(content = SchemaRequest, description = "JSON; Confluent's application/vnd.schemaregistry.v1+json is taken too"),
    responses((status = 200, body = CompatibilityCheck),
        (status = 422, description = "`invalid_schema` (42201)", body = Problem, content_type = "application/problem+json")))]
pub async fn check_versions(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
    body: Body<SchemaRequest>,
) -> Result<Json<CompatibilityCheck>, ApiError> {
    check(state, subject, None, q, body).await
}

async fn check(
    state: AppState,
    subject: String,
    version: Option<String>,
    q: Params,
    body: Body<SchemaRequest>,
) -> Result<Json<CompatibilityCheck>, ApiError> {
    q.only(&["verbose", "normalize"]).map_err(confluent)?;
    let verbose = flag(&q, "verbose").map_err(confluent)?;
    flag(&q, "normalize").map_err(confluent)?;
    let JsonBody(body) = body.map_err(confluent)?;
    let reasons = run(&state, move |r| {
        let sel = version.as_deref().map(VersionSel::parse).transpose()?;
        let schema = parse_schema(&body)?;
        r.read(|reg| reg.compatibility(&subject, sel, &schema))
    })
    .await?;
    Ok(Json(CompatibilityCheck {
        is_compatible: reasons.is_empty(),
        messages: verbose.then_some(reasons),
    }))
}

fn level_answer(level: Level) -> Json<CompatibilityLevel> {
    Json(CompatibilityLevel {
        compatibility_level: level.name().to_string(),
    })
}

/// The global compatibility level (`BACKWARD` unless set).
#[utoipa::path(get, path = route::SR_CONFIG, tag = "schemas",
    responses((status = 200, body = CompatibilityLevel)))]
pub async fn get_config(
    State(state): State<AppState>,
    q: Params,
) -> Result<Json<CompatibilityLevel>, ApiError> {
    q.only(&[]).map_err(confluent)?;
    let level = run(&state, |r| r.read(|reg| Ok(reg.level(None)))).await?;
    Ok(level_answer(level))
}

/// Sets the global compatibility level (subjects without their own follow it).
#[utoipa::path(put, path = route::SR_CONFIG, tag = "schemas",
    request_body(content = CompatibilityConfig, description = "JSON; Confluent's application/vnd.schemaregistry.v1+json is taken too"),
    responses((status = 200, body = CompatibilityConfig),
        (status = 422, description = "`invalid_compatibility_level` (42203)", body = Problem, content_type = "application/problem+json")))]
pub async fn put_config(
    State(state): State<AppState>,
    q: Params,
    body: Body<CompatibilityConfig>,
) -> Result<Json<CompatibilityConfig>, ApiError> {
    set_level(state, None, q, body).await
}

/// Resets the global level to `BACKWARD`; answers the level in force before.
#[utoipa::path(delete, path = route::SR_CONFIG, tag = "schemas",
    responses((status = 200, body = CompatibilityLevel)))]
pub async fn delete_config(
    State(state): State<AppState>,
    q: Params,
) -> Result<Json<CompatibilityLevel>, ApiError> {
    delete_level(state, None, q).await
}

/// A subject's own compatibility level; with `defaultToGlobal=true`, the level in force
/// for it (its own, else the global one).
#[utoipa::path(get, path = route::SR_SUBJECT_CONFIG, tag = "schemas",
    params(("subject" = String, Path), ("defaultToGlobal" = Option<bool>, Query)),
    responses((status = 200, body = CompatibilityLevel),
        (status = 404, description = "`subject_level_not_found` (40408)", body = Problem, content_type = "application/problem+json")))]
pub async fn get_subject_config(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
) -> Result<Json<CompatibilityLevel>, ApiError> {
    q.only(&["defaultToGlobal"]).map_err(confluent)?;
    let fallback = flag(&q, "defaultToGlobal").map_err(confluent)?;
    let level = run(&state, move |r| {
        r.read(|reg| match reg.own_level(&subject) {
            Err(SchemaError::SubjectConfigNotFound { .. }) if fallback => {
                Ok(reg.level(Some(&subject)))
            }
            other => other,
        })
    })
    .await?;
    Ok(level_answer(level))
}

/// Sets a subject's own compatibility level.
#[utoipa::path(put, path = route::SR_SUBJECT_CONFIG, tag = "schemas",
    params(("subject" = String, Path)),
    request_body(content = CompatibilityConfig, description = "JSON; Confluent's application/vnd.schemaregistry.v1+json is taken too"),
    responses((status = 200, body = CompatibilityConfig),
        (status = 422, description = "`invalid_compatibility_level` (42203), `schema_operation_not_permitted` (42205: the subject's name)", body = Problem, content_type = "application/problem+json")))]
pub async fn put_subject_config(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
    body: Body<CompatibilityConfig>,
) -> Result<Json<CompatibilityConfig>, ApiError> {
    set_level(state, Some(subject), q, body).await
}

/// Removes a subject's own level (it follows the global one again); answers the level it
/// had.
#[utoipa::path(delete, path = route::SR_SUBJECT_CONFIG, tag = "schemas",
    params(("subject" = String, Path)),
    responses((status = 200, body = CompatibilityLevel),
        (status = 404, description = "`subject_level_not_found` (40408)", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_subject_config(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
) -> Result<Json<CompatibilityLevel>, ApiError> {
    delete_level(state, Some(subject), q).await
}

async fn set_level(
    state: AppState,
    subject: Option<String>,
    q: Params,
    body: Body<CompatibilityConfig>,
) -> Result<Json<CompatibilityConfig>, ApiError> {
    q.only(&[]).map_err(confluent)?;
    let JsonBody(body) = body.map_err(confluent)?;
    let level = run(&state, move |r| {
        let level = Level::parse(&body.compatibility)?;
        r.write(|reg| {
            let record = reg.plan_set_level(subject.as_deref(), level)?;
            Ok(Plan::Append(record, level))
        })
    })
    .await?;
    Ok(Json(CompatibilityConfig {
        compatibility: level.name().to_string(),
    }))
}

async fn delete_level(
    state: AppState,
    subject: Option<String>,
    q: Params,
) -> Result<Json<CompatibilityLevel>, ApiError> {
    q.only(&[]).map_err(confluent)?;
    let before = run(&state, move |r| {
        r.write(|reg| {
            let (record, before) = reg.plan_delete_level(subject.as_deref())?;
            Ok(Plan::Append(record, before))
        })
    })
    .await?;
    Ok(level_answer(before))
}

/// The registry's mode: always `READWRITE`.
#[utoipa::path(get, path = route::SR_MODE, tag = "schemas",
    responses((status = 200, body = RegistryMode)))]
pub async fn get_mode(q: Params) -> Result<Json<RegistryMode>, ApiError> {
    q.only(&[]).map_err(confluent)?;
    Ok(Json(RegistryMode {
        mode: "READWRITE".into(),
    }))
}
