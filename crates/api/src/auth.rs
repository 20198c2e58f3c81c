//! Bearer tokens on the wire: the bodies of `/v1/tokens` (admin only).
//!
//! A token's secret is `lb_` and 32 lowercase hex digits (128 bits from the server's OS
//! random generator); it is in the answer to its creation and nowhere else — the server
//! keeps only its SHA-256. Its `id` (16 hex digits, the first 64 bits of that hash) names it
//! in listings and revocations and is not a secret. A client sends the secret as
//! `Authorization: Bearer <secret>`, or as HTTP Basic with the principal as the user name.
//!
//! Scopes (`streams:append:orders`, `kv:read:user/*`, `admin`, …) are described in the
//! server's `auth::scope` module and docs/decisions/0013-authentication.md.

use serde::{Deserialize, Serialize};

/// `POST /v1/tokens`: a token to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Who the token acts as: 1 to 128 characters of `A-Z a-z 0-9 . _ @ -`.
    pub principal: String,
    /// What it may do: 1 to 64 scopes.
    pub scopes: Vec<String>,
    /// The token stops working this many ms after creation (1 ..= 100 years); default never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
}

/// A token as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    /// 16 lowercase hex digits: the first 64 bits of the secret's SHA-256.
    pub id: String,
    /// Who it acts as.
    pub principal: String,
    /// Its scopes, as given.
    pub scopes: Vec<String>,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Stops working at this time (ms since the Unix epoch), if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Revoked at this time (ms since the Unix epoch), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
}

/// `201` to `POST /v1/tokens`: the token and, this once, its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    /// The token.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret: `lb_` and 32 hex digits. Shown once; the server keeps only its SHA-256.
    pub token: String,
}

/// `GET /v1/tokens`: every token, revoked and expired ones included, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    /// The tokens.
    pub tokens: Vec<TokenInfo>,
}
