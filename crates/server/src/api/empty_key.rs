//! The routes of the empty key. The empty string is a key like any other (an aggregate
//! without `group_by` has the row key `""`); in a URL it is the empty path segment. The
//! router's path parameters never match an empty segment at the end of a path, so
//! `/v1/kv/`, `/v1/txns/{txn}/kv/` and `/v1/views/{view}/rows/` are routes of their own,
//! each answered by the handler of its `{key}` route with the key `""`. (An empty segment
//! inside a path, as in `/v1/txns/{txn}/kv//increment`, already matches its `{key}` route.)

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use logbook_api::paths::route;
use logbook_api::txns::{PutBody, Row};
use logbook_api::views::ViewRow;

use super::{Params, txns, views};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{JsonBody, Path};
use crate::state::AppState;

/// The empty-key routes, to merge into the API's router.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route(route::KV_EMPTY_KEY, get(kv_get))
        .route(
            route::TXN_EMPTY_KEY,
            get(txn_get).put(txn_put).delete(txn_delete),
        )
        .route(route::VIEW_EMPTY_KEY_ROW, get(view_row))
}

async fn kv_get(state: State<AppState>, q: Params) -> Result<Json<Row>, ApiError> {
    txns::kv_get(state, Path(String::new()), q).await
}

async fn txn_get(
    state: State<AppState>,
    Path(txn): Path<String>,
    q: Params,
) -> Result<Json<Row>, ApiError> {
    txns::get_key(state, Path((txn, String::new())), q).await
}

async fn txn_put(
    state: State<AppState>,
    caller: Caller,
    Path(txn): Path<String>,
    q: Params,
    body: JsonBody<PutBody>,
) -> Result<StatusCode, ApiError> {
    txns::put_key(state, caller, Path((txn, String::new())), q, body).await
}

async fn txn_delete(
    state: State<AppState>,
    caller: Caller,
    Path(txn): Path<String>,
    q: Params,
) -> Result<StatusCode, ApiError> {
    txns::delete_key(state, caller, Path((txn, String::new())), q).await
}

async fn view_row(
    state: State<AppState>,
    Path(view): Path<String>,
    q: Params,
) -> Result<Json<ViewRow>, ApiError> {
    views::get_row(state, Path((view, String::new())), q).await
}
