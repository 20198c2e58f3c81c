//! The HTTP API (v1): the router, the OpenAPI document and the small shared pieces of the
//! handlers. One module per resource:
//!
//! | module | routes |
//! | --- | --- |
//! | [`streams`] | `/v1/streams`, `/v1/streams/{stream}`, `/v1/streams/{stream}/records`, `/v1/streams/{stream}/offsets`, `/v1/streams/{stream}/retention` |
//! | [`events`] | `/v1/streams/{stream}/records/events` (the push tail, server-sent events) |
//! | [`txns`] | `/v1/txns`, `/v1/txns/{txn}/...`, `/v1/kv`, `/v1/kv/{key}` |
//! | `empty_key` | `/v1/kv/`, `/v1/txns/{txn}/kv/`, `/v1/views/{view}/rows/`: the `{key}` routes with the empty key |
//! | [`commits`] | `/v1/kv/read`, `/v1/commits` (transactions in one round trip) |
//! | [`derived`] | `/v1/derived-streams`, `/v1/derived-streams/{name}` (derived streams, scope `derived_streams:manage`) |
//! | [`groups`] | `/v1/groups`, `/v1/groups/{group}`, `/v1/groups/{group}/members[/{member}[/heartbeat\|/commit]]`, `/v1/groups/{group}/reset` (consumer groups) |
//! | [`schemas`] | `/v1/schema-registry/…`: Confluent Schema Registry's REST API (subjects, versions, schemas by id, compatibility, config, mode) |
//! | [`ops`] | `/v1/health`, `/v1/cluster`, `/v1/limits`, `/metrics`, `/openapi.json` |
//! | [`openapi`] | no route: the answers every route gives besides its handler's, added to the document |
//! | [`tokens`] | `/v1/tokens`, `/v1/tokens/{id}` (admin only) |
//! | [`data_subjects`] | `/v1/data-subjects/{id}`: a data subject's state, its erasure (scope `data_subjects:erase`); `/v1/data-subjects/{id}/export` (scope `data_subjects:export`) |
//! | [`views`] | `/v1/views`, `/v1/views/{view}`, `/v1/views/{view}/rows[/{key}]`, `/v1/views/{view}/rebuild`, `/v1/views/{view}/switch` |
//!
//! Every route is registered through `utoipa_axum::routes!`, which puts it in the router
//! and in the OpenAPI document at once; a test checks that the document holds every route
//! of docs/DESIGN.md's "HTTP API (v1)" table, and that every documented route answers.

mod certify;
pub mod commits;
pub mod data_subjects;
pub mod derived;
mod empty_key;
pub mod events;
pub mod groups;
pub mod openapi;
pub mod ops;
pub mod schemas;
pub mod streams;
pub mod tokens;
pub mod txns;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::middleware;
use serde_json::value::RawValue;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ProblemCode};
use crate::limits;
use crate::state::AppState;

/// The OpenAPI document's fixed parts; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Logbook HTTP API",
        version = "1",
        description = "The event log is the database. Errors are RFC 9457 application/problem+json with a stable `code` and the offending `field`."
    ),
    tags(
        (name = "streams", description = "Streams and records"),
        (name = "transactions", description = "Interactive transactions and key-value reads"),
        (name = "views", description = "Views derived from streams: specs, status, row reads with consistency tokens, rebuilds and switches"),
        (name = "derived streams", description = "Processors that filter, project and re-key one stream's records into another, each output exactly once (scope derived_streams:manage; creating one also needs streams:read on its source and streams:append on its target)"),
        (name = "groups", description = "Consumer groups: members share a stream's partitions, commit processed offsets and resume from them"),
        (name = "operations", description = "Health, metrics, this document"),
        (name = "tokens", description = "Bearer tokens (admin only): create, list, revoke"),
        (name = "data subjects", description = "Personal data: a data subject's state and its erasure (crypto-shredding: the subject's key is destroyed)"),
        (name = "schemas", description = "The schema registry: Confluent Schema Registry's REST API under /v1/schema-registry (give Confluent's clients that base URL); errors also carry Confluent's error_code and message")
    )
)]
struct ApiDoc;

/// The router and the OpenAPI document it serves.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(streams::list_streams))
        .routes(routes!(
            streams::put_stream,
            streams::get_stream,
            streams::delete_stream
        ))
        .routes(routes!(streams::append, streams::read_records))
        .routes(routes!(streams::offsets_at_time))
        .routes(routes!(streams::put_retention))
        .routes(routes!(events::events))
        .routes(routes!(txns::begin))
        .routes(routes!(txns::get_key, txns::put_key, txns::delete_key))
        .routes(routes!(txns::scan))
        .routes(routes!(txns::increment))
        .routes(routes!(txns::commit))
        .routes(routes!(txns::abort))
        .routes(routes!(txns::kv_get))
        .routes(routes!(txns::kv_scan))
        .routes(routes!(commits::read, commits::get_read_key))
        .routes(routes!(commits::commit))
        .routes(routes!(views::list_views))
        .routes(routes!(
            views::put_view,
            views::get_view,
            views::delete_view
        ))
        .routes(routes!(views::get_row))
        .routes(routes!(views::scan_rows))
        .routes(routes!(views::rebuild))
        .routes(routes!(views::switch))
        .routes(routes!(derived::list_derived))
        .routes(routes!(
            derived::put_derived,
            derived::get_derived,
            derived::delete_derived
        ))
        .routes(routes!(groups::list_groups))
        .routes(routes!(groups::describe_group, groups::delete_group))
        .routes(routes!(groups::join))
        .routes(routes!(groups::leave))
        .routes(routes!(groups::heartbeat))
        .routes(routes!(groups::commit))
        .routes(routes!(groups::reset))
        .routes(routes!(ops::health))
        .routes(routes!(ops::cluster))
        .routes(routes!(ops::audit))
        .routes(routes!(ops::limits))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(
            data_subjects::get_data_subject,
            data_subjects::erase_data_subject
        ))
        .routes(routes!(data_subjects::export_data_subject))
        .routes(routes!(schemas::list_subjects))
        .routes(routes!(schemas::lookup, schemas::delete_subject))
        .routes(routes!(schemas::list_versions, schemas::register))
        .routes(routes!(schemas::get_version, schemas::delete_version))
        .routes(routes!(schemas::get_version_schema))
        .routes(routes!(schemas::get_schema))
        .routes(routes!(schemas::get_schema_versions))
        .routes(routes!(schemas::schema_types))
        .routes(routes!(
            schemas::get_config,
            schemas::put_config,
            schemas::delete_config
        ))
        .routes(routes!(
            schemas::get_subject_config,
            schemas::put_subject_config,
            schemas::delete_subject_config
        ))
        .routes(routes!(schemas::check_version))
        .routes(routes!(schemas::check_versions))
        .routes(routes!(schemas::get_mode))
        .split_for_parts();
    let mut doc = doc;
    openapi::complete(&mut doc);
    let doc_json: Arc<str> = doc.to_json().unwrap_or_default().into();
    let router = router
        .merge(empty_key::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::edge::edge,
        ))
        .layer(axum::Extension(ops::OpenApiJson(doc_json)))
        .layer(DefaultBodyLimit::max(limits::BODY_BYTES_MAX))
        .with_state(state);
    (router, doc)
}

async fn no_route() -> ApiError {
    ApiError::new(
        ProblemCode::NoRoute,
        "no route matches this path; see GET /openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ProblemCode::MethodNotAllowed,
        "this path does not take this method; see GET /openapi.json",
    )
}

/// Query parameters, parsed one by one so an error names the parameter; unknown ones are
/// refused (a typo is not silently ignored).
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // Most requests have no query: nothing to parse (~200 instructions a request).
        if parts.uri.query().is_none() {
            return Ok(Params::default());
        }
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid("query", format!("bad query string: {e}")))?;
        Ok(Params(pairs))
    }
}

impl Params {
    /// Refuses parameters not in `known`, and repeated ones. Every route calls it (with
    /// `&[]` when it takes none), so a misspelt or misplaced parameter (`?dry_run=true` on a
    /// delete) is an error, never silently ignored.
    ///
    /// # Errors
    /// 400 `invalid_request` naming the parameter and listing the accepted ones.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        for (i, (k, _)) in self.0.iter().enumerate() {
            if !known.contains(&k.as_str()) {
                let takes = if known.is_empty() {
                    "this route takes no query parameters".to_string()
                } else {
                    format!("this route takes {}", known.join(", "))
                };
                return Err(ApiError::invalid(
                    k.clone(),
                    format!("unknown query parameter {k:?}; {takes}"),
                ));
            }
            if self.0[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(ApiError::invalid(
                    k.clone(),
                    format!("query parameter {k:?} is given twice"),
                ));
            }
        }
        Ok(())
    }

    /// The raw text of a parameter.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter parsed as `T`.
    ///
    /// # Errors
    /// 400 `invalid_request` naming the parameter.
    pub fn get<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError>
    where
        T::Err: std::fmt::Display,
    {
        match self.text(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<T>()
                .map(Some)
                .map_err(|e| ApiError::invalid(name, format!("query parameter {name}={v:?}: {e}"))),
        }
    }
}

/// Bytes shown as text: UTF-8 as is, invalid sequences replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A stored value as JSON: the bytes themselves when they are JSON, else a JSON string.
pub fn raw_json(bytes: &[u8]) -> Box<RawValue> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| RawValue::from_string(s.to_string()).ok())
        .or_else(|| serde_json::value::to_raw_value(&text(bytes)).ok())
        .unwrap_or_else(|| RawValue::NULL.to_owned())
}

/// The bytes stored for a JSON value: its canonical form ([`crate::canonical`]), so two
/// spellings of one value are the same bytes (a retry with reordered members or `1.0` for
/// `1` is no request-id conflict).
///
/// # Errors
/// 400 `not_i_json` naming `field` for a value without one (nested deeper than
/// [`logbook_api::limits::JSON_DEPTH_MAX`], a number beyond a double).
pub fn json_value(v: &RawValue, field: impl FnOnce() -> String) -> Result<Vec<u8>, ApiError> {
    crate::canonical::canonical(v).map_err(|e| {
        let field = field();
        ApiError::new(ProblemCode::NotIJson, format!("{field}: {e}")).field(field)
    })
}
