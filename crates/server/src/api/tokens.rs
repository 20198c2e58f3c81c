//! Bearer tokens over HTTP (admin only): `POST /v1/tokens` creates one and answers its
//! secret this once, `GET /v1/tokens` lists them without secrets, `DELETE /v1/tokens/{id}`
//! revokes one. Each change is a record of the internal stream `_auth`, durable before the
//! answer ([`crate::auth::tokens`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use logbook_api::auth::{CreateToken, TokenCreated, TokenInfo, TokenList};
use logbook_api::paths::route;

use crate::error::{ApiError, Problem};
use crate::extract::{JsonBody, blocking};
use crate::state::AppState;

use super::Params;

fn table(state: &AppState) -> Result<std::sync::Arc<crate::auth::Tokens>, ApiError> {
    state.opened()?;
    state
        .tokens()
        .cloned()
        .ok_or_else(|| ApiError::not_ready("the token table is not open yet; retry shortly"))
}

/// Creates a token for a principal; the answer holds its secret, shown this once.
#[utoipa::path(post, path = route::TOKENS, tag = "tokens",
    request_body = CreateToken,
    responses((status = 201, body = TokenCreated),
        (status = 400, description = "`invalid_request` naming the field", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`too_many_tokens`", body = Problem, content_type = "application/problem+json")))]
pub async fn create_token(
    State(state): State<AppState>,
    q: Params,
    JsonBody(body): JsonBody<CreateToken>,
) -> Result<Response, ApiError> {
    q.only(&[])?;
    let tokens = table(&state)?;
    let created = blocking(move || tokens.create(body)).await??;
    tracing::info!(id = %created.info.id, principal = %created.info.principal, "token created");
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Every token (revoked and expired ones too), oldest first, without secrets.
#[utoipa::path(get, path = route::TOKENS, tag = "tokens",
    responses((status = 200, body = TokenList)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    q: Params,
) -> Result<Json<TokenList>, ApiError> {
    q.only(&[])?;
    Ok(Json(TokenList {
        tokens: table(&state)?.list(),
    }))
}

/// Revokes a token: it authenticates nothing from now on. Revoking it again changes nothing.
/// The last live admin token is not revoked (409 `last_admin_token`): make another first.
#[utoipa::path(delete, path = route::TOKEN, tag = "tokens",
    params(("id" = String, Path, description = "The token's id (16 hex digits)")),
    responses((status = 200, body = TokenInfo),
        (status = 404, description = "`unknown_token`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`last_admin_token`: it is the last live admin token; nothing was revoked", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Json<TokenInfo>, ApiError> {
    q.only(&[])?;
    let tokens = table(&state)?;
    let revoked = blocking(move || tokens.revoke(&id)).await??;
    tracing::info!(id = %revoked.id, "token revoked");
    Ok(Json(revoked))
}
