//! The registry's errors, each carrying the `error_code` Confluent Schema Registry documents
//! for it, so Confluent clients report them as they would Confluent's own.

/// What a registry operation can fail with. Nothing is changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// No subject of that name (or only a soft-deleted one, when deleted ones are not asked for).
    #[error("subject '{subject}' not found")]
    SubjectNotFound {
        /// The subject.
        subject: String,
    },
    /// The subject has no such version.
    #[error("version {version} not found for subject '{subject}'")]
    VersionNotFound {
        /// The subject.
        subject: String,
        /// The version asked for, as given.
        version: String,
    },
    /// No schema has that id, or the schema given is not registered under the subject.
    #[error("schema {what} not found")]
    SchemaNotFound {
        /// The id, or "for subject 'S'".
        what: String,
    },
    /// The subject is already soft-deleted.
    #[error("subject '{subject}' was soft deleted; set permanent=true to delete permanently")]
    SubjectSoftDeleted {
        /// The subject.
        subject: String,
    },
    /// A permanent delete of a subject that was not soft-deleted first.
    #[error("subject '{subject}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted {
        /// The subject.
        subject: String,
    },
    /// The version is already soft-deleted.
    #[error(
        "subject '{subject}' version {version} was soft deleted; set permanent=true to delete permanently"
    )]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// A permanent delete of a version that was not soft-deleted first.
    #[error(
        "subject '{subject}' version {version} was not deleted first before being permanently deleted"
    )]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// The subject has no compatibility level of its own.
    #[error("subject '{subject}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound {
        /// The subject.
        subject: String,
    },
    /// The schema cannot be registered under the subject's compatibility level.
    #[error("schema being registered is incompatible with an earlier schema for subject '{subject}': {}", reasons.join("; "))]
    Incompatible {
        /// The subject.
        subject: String,
        /// Why, one message per failed check (which version, which field).
        reasons: Vec<String>,
    },
    /// The schema does not parse as its type.
    #[error("invalid schema: {reason}")]
    InvalidSchema {
        /// Why, naming the place in the schema where the parser said.
        reason: String,
    },
    /// A version that is neither a number in 1..=2^31-1 nor `latest` (nor -1).
    #[error(
        "the specified version '{version}' is not a valid version id; allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion {
        /// The version as given.
        version: String,
    },
    /// A compatibility level that is not one of the seven.
    #[error(
        "invalid compatibility level '{level}'; valid values are NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
    )]
    InvalidCompatibilityLevel {
        /// The level as given.
        level: String,
    },
    /// A subject name the registry does not take.
    #[error("invalid subject '{subject}': {reason}")]
    InvalidSubject {
        /// The subject, as given.
        subject: String,
        /// Why.
        reason: String,
    },
    /// Something this registry does not support, such as schema references.
    #[error("operation not permitted: {reason}")]
    NotPermitted {
        /// What and why.
        reason: String,
    },
    /// A record of the registry's stream does not apply to the state (damage, or a record
    /// of a newer version): our own invariant, said rather than applied.
    #[error("registry record does not apply: {reason}")]
    BadRecord {
        /// Why.
        reason: String,
    },
}

impl SchemaError {
    /// Confluent's `error_code` for this error; its HTTP status is the code's first three
    /// digits ([`SchemaError::http_status`]).
    pub fn error_code(&self) -> u32 {
        match self {
            SchemaError::SubjectNotFound { .. } => 40401,
            SchemaError::VersionNotFound { .. } => 40402,
            SchemaError::SchemaNotFound { .. } => 40403,
            SchemaError::SubjectSoftDeleted { .. } => 40404,
            SchemaError::SubjectNotSoftDeleted { .. } => 40405,
            SchemaError::VersionSoftDeleted { .. } => 40406,
            SchemaError::VersionNotSoftDeleted { .. } => 40407,
            SchemaError::SubjectConfigNotFound { .. } => 40408,
            SchemaError::Incompatible { .. } => 409,
            SchemaError::InvalidSchema { .. } => 42201,
            SchemaError::InvalidVersion { .. } => 42202,
            SchemaError::InvalidCompatibilityLevel { .. } => 42203,
            SchemaError::InvalidSubject { .. } | SchemaError::NotPermitted { .. } => 42205,
            SchemaError::BadRecord { .. } => 50001,
        }
    }

    /// The HTTP status Confluent answers with for this error (404, 409, 422 or 500).
    pub fn http_status(&self) -> u16 {
        let code = self.error_code();
        let status = if code < 1000 { code } else { code / 100 };
        u16::try_from(status).unwrap_or(500)
    }
}
