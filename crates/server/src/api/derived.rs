//! Derived streams over HTTP (decision 0031): `PUT/GET/DELETE /v1/derived-streams/{name}`
//! and `GET /v1/derived-streams`, on the [`logbook_views::derived::DerivedStreams`] the
//! server opened next to the log. Scope `derived_streams:manage:NAME`; creating one also
//! needs `streams:read` on its source and `streams:append` on its target, since its
//! processor reads and appends on the creator's word. Creating and dropping append to the
//! catalog `_derived` and start or stop threads: on the blocking pool.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use logbook_api::derived::{DerivedPartitionOut, DerivedStreamList, DerivedStreamOut};
use logbook_api::paths::route;
use logbook_views::ViewError;
use logbook_views::derived::DerivedInfo;

use crate::auth::scope::Action;
use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{JsonBody, Path, blocking};
use crate::state::AppState;

use super::Params;

fn out(info: DerivedInfo) -> DerivedStreamOut {
    DerivedStreamOut {
        spec: serde_json::to_value(&info.spec).unwrap_or(serde_json::Value::Null),
        name: info.name,
        generation: info.generation,
        partitions: info
            .partitions
            .into_iter()
            .map(|p| DerivedPartitionOut {
                partition: p.partition,
                next: p.next,
                end: p.end,
                emitted: p.emitted,
                skipped: p.skipped,
            })
            .collect(),
        error: info.error,
    }
}

/// 400 `invalid_derived_spec` naming `source` or `target` when that stream declares
/// personal data ([`crate::privacy::views`]): a derived stream would copy its ciphertext
/// out of the stream it is bound to, or write plaintext past the write path's sealing.
fn refuse_personal(
    log: &dyn logbook_log::LogBackend,
    spec: &serde_json::Value,
) -> Result<(), ApiError> {
    for field in ["source", "target"] {
        let Some(name) = spec[field].as_str() else {
            continue;
        };
        if log
            .stream(name)
            .is_ok_and(|s| s.config().personal_data.is_some())
        {
            return Err(ApiError::new(
                ProblemCode::InvalidDerivedSpec,
                format!(
                    "invalid derived stream spec: {field}: stream {name:?} declares personal data (personal_data): a derived stream can neither copy its encrypted fields out of it nor write records past its encryption"
                ),
            )
            .field(field));
        }
    }
    Ok(())
}

/// A views-crate error of a derived stream request in the derived streams' words: a spec
/// error is `invalid_derived_spec`, an unknown stream names `source` or `target`.
fn problem(e: ViewError, spec: &serde_json::Value) -> ApiError {
    match e {
        ViewError::InvalidSpec { field, reason } => {
            let mut out = ApiError::view_spec("", &field, &reason);
            out.code = ProblemCode::InvalidDerivedSpec;
            out.detail = out
                .detail
                .replacen("invalid view spec", "invalid derived stream spec", 1);
            out
        }
        ViewError::UnknownStream { stream } => {
            let field = if spec["source"].as_str() == Some(stream.as_str()) {
                "source"
            } else {
                "target"
            };
            let mut out = ApiError::new(
                ProblemCode::InvalidDerivedSpec,
                format!("invalid derived stream spec: {field}: unknown stream {stream:?}"),
            );
            out.field = Some(field.to_string());
            out
        }
        ViewError::InvalidViewName { name, reason } => {
            let mut out = ApiError::new(
                ProblemCode::InvalidRequest,
                format!("invalid derived stream name {name:?}: {reason}"),
            );
            out.field = Some("name".to_string());
            out
        }
        other => ApiError::from(other),
    }
}

/// Every derived stream, with its status.
#[utoipa::path(get, path = route::DERIVED_STREAMS, tag = "derived streams",
    responses((status = 200, body = DerivedStreamList),
        (status = 501, description = "`not_supported_in_cluster`", body = Problem, content_type = "application/problem+json")))]
pub async fn list_derived(
    State(state): State<AppState>,
    q: Params,
) -> Result<Json<DerivedStreamList>, ApiError> {
    q.only(&[])?;
    let derived = state.opened()?.derived()?;
    Ok(Json(DerivedStreamList {
        derived_streams: derived.list().into_iter().map(out).collect(),
    }))
}

/// Creates a derived stream (decision 0031): `{"source", "target", "filter"?, "fields"?,
/// "key_by"?, "unique"?, "ledger"?}`; its processors start at the source's first retained record. The same spec
/// again answers 200; another spec under the name, 409.
#[utoipa::path(put, path = route::DERIVED_STREAM, tag = "derived streams",
    params(("name" = String, Path, description = "1..=48 bytes of [A-Za-z0-9._-]")),
    request_body(content = Object, description = "A derived stream spec: `source` and `target` (existing streams; the target may be the source), `filter` (the view filter grammar), `fields` (the output value's paths; default the whole value), `key_by` (the output key: these fields' values joined by `|`; default the input key), `unique` (a uniqueness constraint on these fields' values: each claim's output is its outcome, `accepted` or `rejected` with `taken_by`; the source must be keyed by the constrained value), `ledger` (`true`: the account processor of a ledger, writing into its own source; docs/derived-streams.md)"),
    responses((status = 201, body = DerivedStreamOut),
        (status = 200, description = "Exists with this spec", body = DerivedStreamOut),
        (status = 400, description = "`invalid_derived_spec` naming the field (a cycle of derived streams: `target`), `invalid_request` for the name", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`derived_stream_exists` with another spec, `too_many_derived_streams`", body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "`not_supported_in_cluster`", body = Problem, content_type = "application/problem+json")))]
pub async fn put_derived(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
    caller: crate::auth::Caller,
    JsonBody(spec): JsonBody<serde_json::Value>,
) -> Result<(StatusCode, Json<DerivedStreamOut>), ApiError> {
    q.only(&[])?;
    // Its processor reads the source and appends to the target on the creator's word.
    crate::auth::check_spec_streams(
        &caller,
        &spec,
        &[("source", Action::Read), ("target", Action::Append)],
    )?;
    let opened = state.opened()?;
    let derived = opened.derived()?;
    refuse_personal(&*opened.log, &spec)?;
    let bytes =
        serde_json::to_vec(&spec).map_err(|e| ApiError::invalid_json(None, e.to_string()))?;
    let n = name.clone();
    let (info, created) = blocking(move || derived.create(&n, &bytes))
        .await?
        .map_err(|e| problem(e, &spec))?;
    if created {
        tracing::info!(derived_stream = %name, generation = info.generation, "derived stream created");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out(info))))
}

/// A derived stream: its spec and, per source partition, the next input offset, the end,
/// records emitted and skipped since it started, and the error that stopped it.
#[utoipa::path(get, path = route::DERIVED_STREAM, tag = "derived streams",
    params(("name" = String, Path)),
    responses((status = 200, body = DerivedStreamOut),
        (status = 404, description = "`unknown_derived_stream`", body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "`not_supported_in_cluster`", body = Problem, content_type = "application/problem+json")))]
pub async fn get_derived(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
) -> Result<Json<DerivedStreamOut>, ApiError> {
    q.only(&[])?;
    let derived = state.opened()?.derived()?;
    Ok(Json(out(derived.info(&name)?)))
}

/// Stops and drops a derived stream; what it emitted stays in its target.
#[utoipa::path(delete, path = route::DERIVED_STREAM, tag = "derived streams",
    params(("name" = String, Path)),
    responses((status = 204, description = "Dropped"),
        (status = 404, description = "`unknown_derived_stream`", body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "`not_supported_in_cluster`", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_derived(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
) -> Result<StatusCode, ApiError> {
    q.only(&[])?;
    let derived = state.opened()?.derived()?;
    blocking(move || derived.drop_stream(&name)).await??;
    Ok(StatusCode::NO_CONTENT)
}
