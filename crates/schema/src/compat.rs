//! Compatibility levels and the check a new schema must pass against a subject's earlier
//! versions (Confluent Schema Registry's seven levels).
//!
//! ```text
//!  BACKWARD   new reads the latest          FORWARD    the latest reads new
//!  FULL       both                          NONE       no check
//!  *_TRANSITIVE: against every live version, not only the latest
//! ```

use serde::{Deserialize, Serialize};

use crate::schema::{Parsed, ParsedSchema};
use crate::{SchemaError, avro, json};

/// A subject's compatibility level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    /// No check.
    None,
    /// The new schema can read data written with the latest version (the default).
    #[default]
    Backward,
    /// ... with every live version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema.
    Forward,
    /// Every live version can read data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every live version.
    FullTransitive,
}

impl Level {
    /// All seven, in Confluent's order.
    pub const ALL: [Level; 7] = [
        Level::None,
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
    ];

    /// Parses a level's name (`BACKWARD`, …; case-insensitive, as Confluent's server).
    ///
    /// # Errors
    /// [`SchemaError::InvalidCompatibilityLevel`] with the name.
    pub fn parse(name: &str) -> Result<Level, SchemaError> {
        Level::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| SchemaError::InvalidCompatibilityLevel { level: name.into() })
    }

    /// The level's name, as Confluent spells it.
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the check covers every live version rather than the latest only.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

/// Whether data written with `writer` can be read with `reader`: the Avro resolution rules,
/// or JSON Schema containment. This is the one resolution check: the registry's levels and
/// (later) a view's reader schema use it alike.
///
/// # Errors
/// Why not; a schema of another type can never be read.
pub fn can_read(writer: &ParsedSchema, reader: &ParsedSchema) -> Result<(), String> {
    match (writer.parsed(), reader.parsed()) {
        (Parsed::Avro(w), Parsed::Avro(r)) => avro::can_read(w, r),
        (Parsed::Json { document: w, .. }, Parsed::Json { document: r, .. }) => {
            json::can_read(w, r)
        }
        _ => Err(format!(
            "a {} schema cannot read {} data",
            reader.schema_type().name(),
            writer.schema_type().name()
        )),
    }
}

/// Checks `new` against `earlier` (a subject's live versions, oldest first, each with its
/// version number) under `level`; returns one message per failed check, empty when `new`
/// is compatible. A non-transitive level checks against the last of `earlier` only.
pub fn check(level: Level, new: &ParsedSchema, earlier: &[(u32, &ParsedSchema)]) -> Vec<String> {
    let against = if level.transitive() {
        earlier
    } else {
        earlier.last().map(std::slice::from_ref).unwrap_or_default()
    };
    let mut reasons = Vec::new();
    for (version, old) in against {
        if level.backward()
            && let Err(e) = can_read(old, new)
        {
            reasons.push(format!(
                "version {version} (backward: the new schema cannot read its data): {e}"
            ));
        }
        if level.forward()
            && let Err(e) = can_read(new, old)
        {
            reasons.push(format!(
                "version {version} (forward: it cannot read the new schema's data): {e}"
            ));
        }
    }
    reasons
}
