//! Consistency tokens: how a client carries "I wrote this" to a read. The format (text form,
//! merge by per-partition maximum, incarnations) is part of the HTTP contract and lives in
//! `logbook_api::token`; this module makes tokens from the log's positions and maps the
//! format's errors to [`ViewError`]s.

use logbook_log::{LogStream, Position};

pub use logbook_api::token::{ConsistencyToken, StreamPositions, TokenError};

use crate::error::ViewError;

/// The token of appends to `stream` that landed at `positions`.
pub fn token_of(stream: &dyn LogStream, positions: &[Position]) -> ConsistencyToken {
    ConsistencyToken::from_positions(
        stream.name(),
        stream.incarnation(),
        positions.iter().map(|p| (p.partition, p.offset)),
    )
}

impl From<TokenError> for ViewError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid { reason } => ViewError::InvalidToken { reason },
            TokenError::TooLarge { bytes, max } => ViewError::TokenTooLarge { bytes, max },
        }
    }
}
