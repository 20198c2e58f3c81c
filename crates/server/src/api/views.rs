//! Views over HTTP: `PUT/GET/DELETE /v1/views/{view}`, `GET /v1/views`, row reads
//! (`/v1/views/{view}/rows/{key}`, `/v1/views/{view}/rows`), `POST .../rebuild` and
//! `POST .../switch`, on the [`logbook_views::Views`] engine the server opened next to the
//! log.
//!
//! ```text
//!  GET rows ─▶ read with the token, wait 0 ─── applied? ──▶ rows   (inline, no thread hop)
//!                                      └── not yet ─▶ blocking pool: wait ≤ timeout_ms
//!                                                      └▶ rows, or 504 consistency_timeout
//! ```
//!
//! Reads are answered on the async worker when the view has already applied the token (the
//! usual case, and every read without a token): a point lookup is a snapshot and a few
//! key-value gets, cheaper than a hop to the blocking pool. Only a read that has to *wait*
//! for the view moves to the blocking pool, so a slow view never holds a worker. (The
//! engine's monotonic-read floor — a read never shows less than this view showed before —
//! can still wait inline after a switch to a lagging version; see the report of issue 6.)
//!
//! Catalog changes (create, rebuild, switch, drop) fsync the catalog and start or stop
//! processor threads, and status reads the log's newest records: all on the blocking pool.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use logbook_api::paths::route;
use logbook_api::streams::{BelowRetention, ReaderKind};
use logbook_api::views::{
    ProgressOut, RebuildBody, Rebuilt, RetentionGap, RolloutOut, StatusOut, SwitchBody, ViewDetail,
    ViewList, ViewOut, ViewRow, ViewRows,
};

use logbook_views::{
    ConsistencyToken, ReadOptions, ReadResult, ScanRange, VersionStatus, ViewError, ViewInfo,
    ViewSpec, Views,
};

use crate::error::{ApiError, Problem, ProblemCode};
use crate::extract::{JsonBody, Path, blocking};
use crate::limits;
use crate::state::AppState;

use super::Params;

fn rollout(r: Option<logbook_views::Rollout>) -> Option<RolloutOut> {
    r.map(|r| RolloutOut {
        version: r.version,
        percent: r.percent,
    })
}

fn spec_json(spec: &ViewSpec) -> serde_json::Value {
    serde_json::to_value(spec).unwrap_or(serde_json::Value::Null)
}

fn view_out(info: ViewInfo) -> ViewOut {
    ViewOut {
        spec: spec_json(&info.spec),
        view: info.name,
        current: info.current,
        versions: info.versions,
        rollout: rollout(info.rollout),
    }
}

fn status_out(name: &str, v: VersionStatus) -> StatusOut {
    StatusOut {
        version: v.version,
        applied: v.applied,
        lag_records: v.lag_records,
        lag_ms: v.lag_ms,
        rows: Some(v.rows),
        digest: v.digest.map(|d| format!("{:032x}", d.hash)),
        progress: ProgressOut {
            done: v.progress.done,
            total: v.progress.total,
            rate_per_s: v.progress.rate_per_s,
            eta_s: v.progress.eta_s,
        },
        skipped_records: v.skipped_records,
        error: v.error,
        below_retention: v
            .below_retention
            .into_iter()
            .map(|b| BelowRetention {
                kind: ReaderKind::View,
                name: name.to_string(),
                version: Some(v.version),
                partition: b.partition,
                position: b.applied,
                start: b.start,
            })
            .collect(),
        retention_gaps: v
            .retention_gaps
            .into_iter()
            .map(|g| RetentionGap {
                partition: g.partition,
                start: g.start,
            })
            .collect(),
    }
}

fn row_out(r: logbook_views::Row) -> ViewRow {
    ViewRow {
        key: r.key,
        value: r.value,
        partition: r.partition,
        offset: r.offset,
        request_id: r.request_id,
        token: None,
    }
}

/// The token of what a read reflected: the applied offsets, in the source stream of the
/// version that served it. Made from the read's own answer: no lookups of the view or the
/// stream per read.
fn read_token(result: &ReadResult) -> Result<Option<String>, ApiError> {
    ConsistencyToken::encode_one(&result.source, result.source_incarnation, &result.applied)
        .map(Some)
        .map_err(|e| ApiError::token(&e))
}

/// 400 `invalid_view_spec` when `spec` filters, indexes, groups or aggregates on a personal
/// field of its source ([`crate::privacy::views`]); `prefix` as [`ApiError::view_spec`]. A spec
/// that does not compile, or whose source does not exist, is left to the engine to refuse.
fn check_personal(
    state: &AppState,
    spec: &serde_json::Value,
    prefix: &str,
) -> Result<(), ApiError> {
    let Ok(plan) = logbook_views::Plan::from_value(spec.clone()) else {
        return Ok(());
    };
    let Some(d) = personal_data_of(state, &plan.spec.source)? else {
        return Ok(());
    };
    match crate::privacy::views::computes_on_personal(&d, &plan) {
        Some((field, reason)) => Err(ApiError::view_spec(prefix, &field, &reason)),
        None => Ok(()),
    }
}

fn personal_data_of(
    state: &AppState,
    stream: &str,
) -> Result<Option<logbook_log::PersonalData>, ApiError> {
    Ok(state
        .opened()?
        .log
        .stream(stream)
        .ok()
        .and_then(|s| s.config().personal_data))
}

/// Rows as a reader sees them: the source's personal fields decrypted, or `{"erased": true}`
/// ([`crate::privacy::Privacy::reveal_row`]). Nothing for a source without personal data.
fn reveal_rows(state: &AppState, result: &mut ReadResult) -> Result<(), ApiError> {
    let Some(d) = personal_data_of(state, &result.source)? else {
        return Ok(());
    };
    let privacy = state.opened()?.privacy;
    for r in &mut result.rows {
        privacy.reveal_row(&result.source, &d, &mut r.value);
    }
    Ok(())
}

fn views_of(state: &AppState) -> Result<Arc<Views>, ApiError> {
    Ok(state.opened()?.views)
}

/// `token` and `timeout_ms` of a read. With a token the default wait is
/// [`limits::VIEW_READ_TIMEOUT_MS_DEFAULT`]. `timeout_ms` is checked whether or not a token
/// is given (and whether or not the read ends up waiting), so a bad value is always refused;
/// the wait is cut to the node's `wait_ms_max`.
fn read_options(q: &Params, state: &AppState) -> Result<ReadOptions, ApiError> {
    let token = q.text("token").map(str::to_string);
    let timeout_ms = q.get::<u64>("timeout_ms")?;
    check_timeout_ms(timeout_ms, logbook_views::limits::READ_TIMEOUT_MS_MAX)?;
    let timeout_ms = state.wait_ms(timeout_ms.unwrap_or(if token.is_some() {
        limits::VIEW_READ_TIMEOUT_MS_DEFAULT
    } else {
        0
    }));
    Ok(ReadOptions { token, timeout_ms })
}

/// Refuses a `timeout_ms` over `max` (400 `invalid_request` naming it).
fn check_timeout_ms(timeout_ms: Option<u64>, max: u64) -> Result<(), ApiError> {
    match timeout_ms {
        Some(t) if t > max => Err(ApiError::invalid(
            "timeout_ms",
            format!("timeout_ms is {t}; the limit is {max}"),
        )),
        _ => Ok(()),
    }
}

/// Runs a read: first without waiting, on this worker; if the view has not applied the
/// token yet and the request allows a wait, again on the blocking pool with the wait.
async fn read<F>(views: Arc<Views>, opts: ReadOptions, f: F) -> Result<ReadResult, ApiError>
where
    F: Fn(&Views, &ReadOptions) -> logbook_views::Result<ReadResult> + Send + 'static,
{
    let quick = ReadOptions {
        token: opts.token.clone(),
        timeout_ms: 0,
    };
    match f(&views, &quick) {
        Err(ViewError::ConsistencyTimeout { .. }) if opts.timeout_ms > 0 => {
            Ok(blocking(move || f(&views, &opts)).await??)
        }
        other => Ok(other?),
    }
}

/// Every view.
#[utoipa::path(get, path = route::VIEWS, tag = "views",
    responses((status = 200, body = ViewList)))]
pub async fn list_views(
    State(state): State<AppState>,
    q: Params,
) -> Result<Json<ViewList>, ApiError> {
    q.only(&[])?;
    let views = views_of(&state)?;
    Ok(Json(ViewList {
        views: views.list().into_iter().map(view_out).collect(),
    }))
}

/// Creates a view from a spec (docs/views.md); its processors start from offset 0.
/// The same spec again answers 200 with the view; another spec under the name, 409.
#[utoipa::path(put, path = route::VIEW, tag = "views",
    params(("view" = String, Path, description = "1..=128 bytes of [A-Za-z0-9._-]")),
    request_body(content = Object, description = "A view spec: `source`, `kind` (table, index, aggregate), `filter`, `fields`, `on`, `group_by`, `aggregates`, `semantics` (`table`, the default: a keyed record replaces its key's previous one; `events`, aggregates only: every record counts)"),
    responses((status = 201, body = ViewOut),
        (status = 200, description = "Exists with this spec", body = ViewOut),
        (status = 400, description = "`invalid_view_spec` naming the field, `invalid_view_name`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`view_exists` with another spec, `too_many_views`", body = Problem, content_type = "application/problem+json")))]
pub async fn put_view(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
    caller: crate::auth::Caller,
    JsonBody(spec): JsonBody<serde_json::Value>,
) -> Result<(StatusCode, Json<ViewOut>), ApiError> {
    q.only(&[])?;
    crate::auth::check_view_source(&caller, &spec)?;
    check_personal(&state, &spec, "")?;
    if let Some(catalog) = state.opened()?.view_catalog {
        // A cluster node: through the replicated catalog, so every node has the view.
        let n = name.clone();
        let (info, created) = blocking(move || catalog.create(&n, spec)).await??;
        if created {
            tracing::info!(view = %name, version = info.current, "view created in the cluster's catalog");
        }
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Ok((status, Json(view_out(info))));
    }
    let views = views_of(&state)?;
    let bytes =
        serde_json::to_vec(&spec).map_err(|e| ApiError::invalid_json(None, e.to_string()))?;
    let n = name.clone();
    let v = views.clone();
    let created = blocking(move || v.create(&n, &bytes)).await?;
    match created {
        Ok(info) => {
            tracing::info!(view = %name, version = info.current, "view created");
            Ok((StatusCode::CREATED, Json(view_out(info))))
        }
        Err(ViewError::ViewExists { .. }) => {
            let existing = views.info_of(&name)?;
            match serde_json::from_value::<ViewSpec>(spec) {
                Ok(same) if same == existing.spec => Ok((StatusCode::OK, Json(view_out(existing)))),
                _ => Err(ViewError::ViewExists { name }.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// A view and the status of its versions: applied offsets, lag in records and in ms, and
/// with `?digest=true` the row count and digest (a full scan of the view).
#[utoipa::path(get, path = route::VIEW, tag = "views",
    params(("view" = String, Path),
        ("digest" = Option<bool>, Query, description = "Also count the rows and compute the digest (a full scan)")),
    responses((status = 200, body = ViewDetail),
        (status = 404, description = "`unknown_view`", body = Problem, content_type = "application/problem+json")))]
pub async fn get_view(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
) -> Result<Json<ViewDetail>, ApiError> {
    q.only(&["digest"])?;
    let digest = q.get::<bool>("digest")?.unwrap_or(false);
    let views = views_of(&state)?;
    let (info, status) = blocking(move || {
        let info = views.info_of(&name)?;
        let status = views.status(&name, digest)?;
        Ok::<_, ViewError>((info, status))
    })
    .await??;
    let versions: Vec<StatusOut> = status
        .versions
        .into_iter()
        .map(|v| status_out(&status.name, v))
        .collect();
    let current = versions
        .iter()
        .find(|v| v.version == status.current)
        .cloned()
        .ok_or_else(|| ApiError::internal("the view's current version has no status"))?;
    let audit = state.opened().ok().and_then(|o| {
        let status = o.auditor.as_ref()?.status();
        let v = status.views.iter().find(|v| v.view == info.name)?;
        Some(super::ops::view_audit(v))
    });
    Ok(Json(ViewDetail {
        view: info.name,
        spec: spec_json(&info.spec),
        current: status.current,
        rollout: rollout(status.rollout),
        status: current,
        versions,
        audit,
    }))
}

/// Drops a view and its state; with `?version=` only that (non-current) version.
#[utoipa::path(delete, path = route::VIEW, tag = "views",
    params(("view" = String, Path),
        ("version" = Option<u64>, Query, description = "Drop only this version (not the current one)")),
    responses((status = 204, description = "Dropped"),
        (status = 404, description = "`unknown_view`, `unknown_version`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`version_unavailable`: the current version", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_view(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
) -> Result<StatusCode, ApiError> {
    q.only(&["version"])?;
    let version = q.get::<u64>("version")?;
    if version.is_none()
        && let Some(catalog) = state.opened()?.view_catalog
    {
        // A cluster node: dropped on every node through the replicated catalog.
        blocking(move || catalog.drop_view(&name)).await??;
        return Ok(StatusCode::NO_CONTENT);
    }
    let views = views_of(&state)?;
    blocking(move || match version {
        Some(v) => views.drop_version(&name, v),
        None => views.drop_view(&name),
    })
    .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// Point read of one row. With `token`, waits (≤ `timeout_ms`, default 5000) until the
/// view has applied every write the token stands for.
#[utoipa::path(get, path = route::VIEW_ROW, tag = "views",
    params(("view" = String, Path), ("key" = String, Path),
        ("token" = Option<String>, Query, description = "Consistency token of earlier writes"),
        ("timeout_ms" = Option<u64>, Query, maximum = 60000, description = "Longest wait for the token, ms (default 5000 with a token, at most 60000)")),
    responses((status = 200, body = ViewRow),
        (status = 404, description = "`key_not_found`, `unknown_view`", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`consistency_timeout`: the view did not apply the token in time", body = Problem, content_type = "application/problem+json")))]
pub async fn get_row(
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
    q: Params,
) -> Result<Json<ViewRow>, ApiError> {
    q.only(&["token", "timeout_ms"])?;
    let opts = read_options(&q, &state)?;
    let views = views_of(&state)?;
    let (n, k) = (name.clone(), key.clone());
    let mut found = read(views, opts, move |v, o| v.get(&n, &k, o)).await?;
    reveal_rows(&state, &mut found)?;
    let token = read_token(&found)?;
    match found.rows.into_iter().next() {
        Some(r) => Ok(Json(ViewRow {
            token,
            ..row_out(r)
        })),
        None => Err(ApiError::new(
            ProblemCode::KeyNotFound,
            format!("view {name:?} has no row {key:?}"),
        )
        .field("key")),
    }
}

/// Rows in key order: a range (`prefix`, `start` inclusive, `end` exclusive, `limit`), or
/// `keys=k1,k2,...` for several point reads from one snapshot. `next` continues a range.
#[utoipa::path(get, path = route::VIEW_ROWS, tag = "views",
    params(("view" = String, Path),
        ("prefix" = Option<String>, Query), ("start" = Option<String>, Query, description = "Inclusive; a `next` continues here"),
        ("end" = Option<String>, Query, description = "Exclusive"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000, description = "1..=10000, default 100"),
        ("keys" = Option<String>, Query, description = "Comma-separated keys (at most 1000), instead of a range"),
        ("token" = Option<String>, Query), ("timeout_ms" = Option<u64>, Query, maximum = 60000, description = "Longest wait for the token, ms (default 5000 with a token, at most 60000)")),
    responses((status = 200, body = ViewRows),
        (status = 404, description = "`unknown_view`", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`consistency_timeout`", body = Problem, content_type = "application/problem+json")))]
pub async fn scan_rows(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
) -> Result<Json<ViewRows>, ApiError> {
    q.only(&[
        "prefix",
        "start",
        "end",
        "limit",
        "keys",
        "token",
        "timeout_ms",
    ])?;
    let opts = read_options(&q, &state)?;
    let views = views_of(&state)?;
    let mut result = if let Some(keys) = q.text("keys") {
        if let Some(other) = ["prefix", "start", "end", "limit"]
            .into_iter()
            .find(|p| q.text(p).is_some())
        {
            return Err(ApiError::invalid(
                other,
                "give keys, or a range (prefix, start, end, limit), not both",
            ));
        }
        let keys: Vec<String> = keys.split(',').map(str::to_string).collect();
        read(views, opts, move |v, o| v.get_many(&name, &keys, o)).await?
    } else {
        let range = ScanRange {
            prefix: q.text("prefix").map(str::to_string),
            start: q.text("start").map(str::to_string),
            end: q.text("end").map(str::to_string),
            limit: q
                .get::<usize>("limit")?
                .unwrap_or(logbook_views::limits::READ_LIMIT_DEFAULT),
        };
        read(views, opts, move |v, o| v.scan(&name, &range, o)).await?
    };
    reveal_rows(&state, &mut result)?;
    Ok(Json(ViewRows {
        token: read_token(&result)?,
        rows: result.rows.into_iter().map(row_out).collect(),
        next: result.next,
    }))
}

/// Starts rebuilding the view from offset 0 into a new version (with a new spec, or the
/// current one's) while the current version keeps serving; switch to it when it has
/// caught up (`GET /v1/views/{view}` shows its progress).
#[utoipa::path(post, path = route::VIEW_REBUILD, tag = "views",
    params(("view" = String, Path)),
    request_body(content = RebuildBody, description = "May be empty: rebuild with the current spec"),
    responses((status = 202, body = Rebuilt),
        (status = 400, description = "`invalid_view_spec` naming the field (as `spec.<field>`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_view`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`too_many_versions`", body = Problem, content_type = "application/problem+json")))]
pub async fn rebuild(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
    caller: crate::auth::Caller,
    JsonBody(body): JsonBody<RebuildBody>,
) -> Result<(StatusCode, Json<Rebuilt>), ApiError> {
    q.only(&[])?;
    if let Some(spec) = &body.spec {
        crate::auth::check_view_source(&caller, spec)?;
        check_personal(&state, spec, "spec")?;
    }
    let views = views_of(&state)?;
    let spec = match &body.spec {
        Some(s) => {
            Some(serde_json::to_vec(s).map_err(|e| ApiError::invalid_json(None, e.to_string()))?)
        }
        None => None,
    };
    let n = name.clone();
    let version = blocking(move || views.rebuild(&n, spec.as_deref()))
        .await?
        .map_err(|e| match e {
            ViewError::InvalidSpec { field, reason } => {
                ApiError::view_spec("spec", &field, &reason)
            }
            other => {
                let mut out = ApiError::from(other);
                if out.code == ProblemCode::InvalidViewSpec {
                    out.field = Some(match out.field.as_deref() {
                        None | Some("") => "spec".to_string(),
                        Some(f) => format!("spec.{f}"),
                    });
                }
                out
            }
        })?;
    tracing::info!(view = %name, version, "view rebuild started");
    Ok((
        StatusCode::ACCEPTED,
        Json(Rebuilt {
            view: name,
            version,
        }),
    ))
}

/// Makes a version serve reads: all of them (`percent` 100, the default: a switch; switching
/// back is the rollback) or a share by key hash (a gradual rollout). Waits (≤ `timeout_ms`)
/// for the version to have applied what the current one has, so reads never go back.
#[utoipa::path(post, path = route::VIEW_SWITCH, tag = "views",
    params(("view" = String, Path)),
    request_body = SwitchBody,
    responses((status = 200, body = ViewOut),
        (status = 404, description = "`unknown_view`, `unknown_version`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`not_caught_up` (retry later), `version_unavailable`", body = Problem, content_type = "application/problem+json")))]
pub async fn switch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
    JsonBody(body): JsonBody<SwitchBody>,
) -> Result<Json<ViewOut>, ApiError> {
    q.only(&[])?;
    check_timeout_ms(body.timeout_ms, logbook_views::limits::SWITCH_WAIT_MS_MAX)?;
    let views = views_of(&state)?;
    let timeout_ms = body
        .timeout_ms
        .unwrap_or(limits::VIEW_SWITCH_TIMEOUT_MS_DEFAULT);
    let percent = body.percent.unwrap_or(100);
    let info = blocking(move || {
        views.rollout(&name, body.version, percent, timeout_ms)?;
        views.info_of(&name)
    })
    .await??;
    tracing::info!(view = %info.name, version = body.version, percent, "view routing changed");
    Ok(Json(view_out(info)))
}
