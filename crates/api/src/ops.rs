//! Operations: the body of `/v1/health`.

use serde::{Deserialize, Serialize};

/// Health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// The process answers (always true in a response).
    pub live: bool,
    /// The data directory is open and requests are served.
    pub ready: bool,
    /// `opening` (recovering the data directory), `ready`, `shutting_down` or `failed`.
    pub state: String,
    /// Interactive transactions open.
    pub open_transactions: usize,
}
