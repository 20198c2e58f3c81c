//! The registry's state: subjects, their versions, global schema ids and compatibility
//! levels, derived from a sequence of [`Record`]s and nothing else.
//!
//! ```text
//!  request ──▶ plan_*(&self) ── refused: SchemaError, nothing written
//!                   │ a Record (ids and versions already chosen)
//!                   ▼
//!            the caller appends it to the registry's stream (`_schemas`)
//!                   ▼
//!            apply(&mut self, &Record) ── the answer is read from the new state
//!  replay: apply every record of the stream in order → the same state, the same ids
//! ```
//!
//! A record carries its outcome (the version and id it assigns), so replay never re-runs a
//! compatibility check and gives identical ids even if the checks change between releases.
//!
//! Invariants (checked by [`Registry::apply`]; a record that breaks one is refused, not
//! applied): a subject's versions only grow; a global id names one `(type, canonical
//! text)` forever, and that schema keeps that id even after every version using it is
//! deleted; a version is soft-deleted before it is hard-deleted.
//!
//! Semantics follow Confluent Schema Registry: registering a schema the subject already has
//! live returns the existing version; a soft-deleted version is hidden unless `deleted` is
//! asked for, but keeps its number; versions are numbered from the highest one present.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compat::{self, Level};
use crate::schema::{ParsedSchema, SchemaType};
use crate::{SchemaError, limits};

/// One record of the registry's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// A schema registered under a subject as `version`, with global id `id`.
    Register {
        /// The subject.
        subject: String,
        /// The version it gets (1, 2, …).
        version: u32,
        /// Its global id (1, 2, …).
        id: u32,
        /// Its type.
        schema_type: SchemaType,
        /// Its canonical text.
        schema: String,
    },
    /// A version deleted: soft (hidden, number kept) or permanent (gone).
    DeleteVersion {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
        /// Whether permanently.
        permanent: bool,
    },
    /// Every version of a subject deleted: soft, or permanent (the subject is gone).
    DeleteSubject {
        /// The subject.
        subject: String,
        /// Whether permanently.
        permanent: bool,
    },
    /// A compatibility level set, for one subject or (`None`) the global default.
    SetLevel {
        /// The subject; `None` for the global default.
        subject: Option<String>,
        /// The level.
        level: Level,
    },
    /// A subject's own level removed (it falls back to the global one), or (`None`) the
    /// global level reset to `BACKWARD`.
    DeleteLevel {
        /// The subject; `None` for the global default.
        subject: Option<String>,
    },
}

/// Which version of a subject: a number, or the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSel {
    /// The highest version (live, unless deleted ones are asked for).
    Latest,
    /// Version `n` (1 ≤ n ≤ 2^31 − 1).
    Number(u32),
}

impl VersionSel {
    /// Parses Confluent's version path segment: `latest`, `-1` (latest) or 1..=2^31−1.
    ///
    /// # Errors
    /// [`SchemaError::InvalidVersion`] with the text.
    pub fn parse(text: &str) -> Result<VersionSel, SchemaError> {
        match text {
            "latest" | "-1" => Ok(VersionSel::Latest),
            _ => match text.parse::<u32>() {
                Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionSel::Number(n)),
                _ => Err(SchemaError::InvalidVersion {
                    version: text.into(),
                }),
            },
        }
    }
}

/// A subject's version, as the registry answers it.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The subject.
    pub subject: String,
    /// The version.
    pub version: u32,
    /// The global id.
    pub id: u32,
    /// The schema.
    pub schema: ParsedSchema,
    /// Whether the version is soft-deleted.
    pub deleted: bool,
}

/// What registering a schema comes to.
#[derive(Debug, Clone)]
pub enum Planned {
    /// The subject already has it live: nothing to write.
    Existing(Registered),
    /// Append this record, then apply it.
    New(Record),
}

#[derive(Debug, Clone, Copy)]
struct Version {
    id: u32,
    deleted: bool,
}

#[derive(Debug, Default, Clone)]
struct Subject {
    versions: BTreeMap<u32, Version>,
    level: Option<Level>,
}

/// The registry's state. See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    /// Every schema ever given an id.
    schemas: BTreeMap<u32, ParsedSchema>,
    ids: BTreeMap<(SchemaType, String), u32>,
    subjects: BTreeMap<String, Subject>,
    global: Option<Level>,
}

fn subject_not_found(subject: &str) -> SchemaError {
    SchemaError::SubjectNotFound {
        subject: subject.into(),
    }
}

/// Checks a subject name: 1 to [`limits::SUBJECT_BYTES_MAX`] bytes, no control characters.
///
/// # Errors
/// [`SchemaError::InvalidSubject`] saying why.
pub fn check_subject(subject: &str) -> Result<(), SchemaError> {
    let reason = if subject.is_empty() {
        "empty"
    } else if subject.len() > limits::SUBJECT_BYTES_MAX {
        "longer than 255 bytes"
    } else if subject.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(SchemaError::InvalidSubject {
        subject: subject.into(),
        reason: reason.into(),
    })
}

impl Registry {
    /// An empty registry (global level `BACKWARD`).
    pub fn new() -> Registry {
        Registry::default()
    }

    fn subject(&self, subject: &str) -> Result<&Subject, SchemaError> {
        self.subjects
            .get(subject)
            .filter(|s| !s.versions.is_empty())
            .ok_or_else(|| subject_not_found(subject))
    }

    /// A subject with versions visible under `deleted`.
    fn visible(&self, subject: &str, deleted: bool) -> Result<&Subject, SchemaError> {
        self.subject(subject)
            .ok()
            .filter(|s| deleted || s.versions.values().any(|v| !v.deleted))
            .ok_or_else(|| subject_not_found(subject))
    }

    fn registered(
        &self,
        subject: &str,
        version: u32,
        v: Version,
    ) -> Result<Registered, SchemaError> {
        let schema = self
            .schemas
            .get(&v.id)
            .cloned()
            .ok_or_else(|| SchemaError::BadRecord {
                reason: format!(
                    "subject '{subject}' version {version} names unknown id {}",
                    v.id
                ),
            })?;
        Ok(Registered {
            subject: subject.into(),
            version,
            id: v.id,
            schema,
            deleted: v.deleted,
        })
    }

    /// Subjects with a live version (with `deleted`, soft-deleted ones too), in name order.
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, s)| s.versions.values().any(|v| deleted || !v.deleted))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A subject's version numbers, ascending (with `deleted`, soft-deleted ones too).
    ///
    /// # Errors
    /// [`SchemaError::SubjectNotFound`].
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, SchemaError> {
        let s = self.visible(subject, deleted)?;
        Ok(s.versions
            .iter()
            .filter(|(_, v)| deleted || !v.deleted)
            .map(|(n, _)| *n)
            .collect())
    }

    /// One version of a subject.
    ///
    /// # Errors
    /// [`SchemaError::SubjectNotFound`], [`SchemaError::VersionNotFound`] (a soft-deleted
    /// one without `deleted` included).
    pub fn version(
        &self,
        subject: &str,
        sel: VersionSel,
        deleted: bool,
    ) -> Result<Registered, SchemaError> {
        let s = self.visible(subject, deleted)?;
        let mut visible = s.versions.iter().filter(|(_, v)| deleted || !v.deleted);
        let found = match sel {
            VersionSel::Latest => visible.next_back(),
            VersionSel::Number(n) => visible.find(|(k, _)| **k == n),
        };
        let (n, v) = found.ok_or_else(|| SchemaError::VersionNotFound {
            subject: subject.into(),
            version: match sel {
                VersionSel::Latest => "latest".into(),
                VersionSel::Number(n) => n.to_string(),
            },
        })?;
        self.registered(subject, *n, *v)
    }

    /// The schema with global id `id`, while any version (soft-deleted included) uses it.
    ///
    /// # Errors
    /// [`SchemaError::SchemaNotFound`].
    pub fn schema(&self, id: u32) -> Result<&ParsedSchema, SchemaError> {
        let used = self
            .subjects
            .values()
            .any(|s| s.versions.values().any(|v| v.id == id));
        self.schemas
            .get(&id)
            .filter(|_| used)
            .ok_or_else(|| SchemaError::SchemaNotFound {
                what: id.to_string(),
            })
    }

    /// The (subject, version) pairs that use id `id`, live ones (with `deleted`, all).
    pub fn uses(&self, id: u32, deleted: bool) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for (name, s) in &self.subjects {
            for (n, v) in &s.versions {
                if v.id == id && (deleted || !v.deleted) {
                    out.push((name.clone(), *n));
                }
            }
        }
        out
    }

    /// The subject's version holding `schema` (the latest such, live unless `deleted`).
    ///
    /// # Errors
    /// [`SchemaError::SubjectNotFound`], [`SchemaError::SchemaNotFound`].
    pub fn lookup(
        &self,
        subject: &str,
        schema: &ParsedSchema,
        deleted: bool,
    ) -> Result<Registered, SchemaError> {
        let s = self.visible(subject, deleted)?;
        let id = self
            .ids
            .get(&(schema.schema_type(), schema.canonical().to_string()));
        let found = s
            .versions
            .iter()
            .rev()
            .find(|(_, v)| Some(&v.id) == id && (deleted || !v.deleted));
        match found {
            Some((n, v)) => self.registered(subject, *n, *v),
            None => Err(SchemaError::SchemaNotFound {
                what: format!("for subject '{subject}'"),
            }),
        }
    }

    /// The live versions of a subject, oldest first, with their schemas.
    fn live(&self, subject: &str) -> Vec<(u32, &ParsedSchema)> {
        let Some(s) = self.subjects.get(subject) else {
            return Vec::new();
        };
        s.versions
            .iter()
            .filter(|(_, v)| !v.deleted)
            .filter_map(|(n, v)| self.schemas.get(&v.id).map(|p| (*n, p)))
            .collect()
    }

    /// The compatibility level in force for `subject` (its own, else the global one), or
    /// with `None` the global one.
    pub fn level(&self, subject: Option<&str>) -> Level {
        subject
            .and_then(|s| self.subjects.get(s))
            .and_then(|s| s.level)
            .or(self.global)
            .unwrap_or_default()
    }

    /// The subject's own level.
    ///
    /// # Errors
    /// [`SchemaError::SubjectConfigNotFound`] when it has none.
    pub fn own_level(&self, subject: &str) -> Result<Level, SchemaError> {
        self.subjects
            .get(subject)
            .and_then(|s| s.level)
            .ok_or_else(|| SchemaError::SubjectConfigNotFound {
                subject: subject.into(),
            })
    }

    /// Checks `schema` against the subject under its level: against one version when `sel`
    /// names it, else the versions the level names. Returns the reasons it is incompatible
    /// (empty: compatible).
    ///
    /// # Errors
    /// [`SchemaError::SubjectNotFound`] / [`SchemaError::VersionNotFound`] for a version
    /// that does not exist.
    pub fn compatibility(
        &self,
        subject: &str,
        sel: Option<VersionSel>,
        schema: &ParsedSchema,
    ) -> Result<Vec<String>, SchemaError> {
        let level = self.level(Some(subject));
        match sel {
            None => Ok(compat::check(level, schema, &self.live(subject))),
            Some(sel) => {
                let v = self.version(subject, sel, false)?;
                Ok(compat::check(level, schema, &[(v.version, &v.schema)]))
            }
        }
    }

    /// Plans registering `schema` under `subject`.
    ///
    /// # Errors
    /// [`SchemaError::InvalidSubject`], [`SchemaError::Incompatible`] with the reasons,
    /// [`SchemaError::NotPermitted`] past [`limits::SCHEMAS_MAX`] or
    /// [`limits::VERSIONS_PER_SUBJECT_MAX`].
    pub fn plan_register(
        &self,
        subject: &str,
        schema: &ParsedSchema,
    ) -> Result<Planned, SchemaError> {
        check_subject(subject)?;
        if let Ok(found) = self.lookup(subject, schema, false) {
            return Ok(Planned::Existing(found));
        }
        let reasons = compat::check(self.level(Some(subject)), schema, &self.live(subject));
        if !reasons.is_empty() {
            return Err(SchemaError::Incompatible {
                subject: subject.into(),
                reasons,
            });
        }
        let key = (schema.schema_type(), schema.canonical().to_string());
        let id = match self.ids.get(&key) {
            Some(id) => *id,
            None => {
                let next = self.schemas.keys().next_back().map_or(1, |k| k + 1);
                if next > limits::SCHEMAS_MAX {
                    return Err(SchemaError::NotPermitted {
                        reason: format!(
                            "the registry holds {} schemas, its limit",
                            limits::SCHEMAS_MAX
                        ),
                    });
                }
                next
            }
        };
        let versions = self.subjects.get(subject).map(|s| &s.versions);
        if versions.is_some_and(|v| v.len() >= limits::VERSIONS_PER_SUBJECT_MAX) {
            return Err(SchemaError::NotPermitted {
                reason: format!(
                    "subject '{subject}' holds {} versions, its limit",
                    limits::VERSIONS_PER_SUBJECT_MAX
                ),
            });
        }
        let version = versions
            .and_then(|v| v.keys().next_back())
            .map_or(1, |n| n + 1);
        Ok(Planned::New(Record::Register {
            subject: subject.into(),
            version,
            id,
            schema_type: schema.schema_type(),
            schema: schema.canonical().into(),
        }))
    }

    /// Plans deleting one version; returns the record and the version's number.
    ///
    /// # Errors
    /// [`SchemaError::SubjectNotFound`], [`SchemaError::VersionNotFound`],
    /// [`SchemaError::VersionSoftDeleted`] (soft delete of a soft-deleted version),
    /// [`SchemaError::VersionNotSoftDeleted`] (permanent delete of a live one).
    pub fn plan_delete_version(
        &self,
        subject: &str,
        sel: VersionSel,
        permanent: bool,
    ) -> Result<(Record, u32), SchemaError> {
        // `latest` for a permanent delete is the latest soft-deleted version; for a soft one,
        // the latest live one. A number names its version either way.
        let any = permanent || matches!(sel, VersionSel::Number(_));
        let found = self.version(subject, sel, any)?;
        match (found.deleted, permanent) {
            (true, false) => Err(SchemaError::VersionSoftDeleted {
                subject: subject.into(),
                version: found.version,
            }),
            (false, true) => Err(SchemaError::VersionNotSoftDeleted {
                subject: subject.into(),
                version: found.version,
            }),
            _ => Ok((
                Record::DeleteVersion {
                    subject: subject.into(),
                    version: found.version,
                    permanent,
                },
                found.version,
            )),
        }
    }

    /// Plans deleting a subject; returns the record and the versions it deletes.
    ///
    /// # Errors
    /// [`SchemaError::SubjectNotFound`], [`SchemaError::SubjectSoftDeleted`] (soft delete of
    /// a soft-deleted subject), [`SchemaError::SubjectNotSoftDeleted`] (permanent delete of
    /// one with live versions).
    pub fn plan_delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<(Record, Vec<u32>), SchemaError> {
        let s = self.subject(subject)?;
        let live: Vec<u32> = s
            .versions
            .iter()
            .filter(|(_, v)| !v.deleted)
            .map(|(n, _)| *n)
            .collect();
        let versions = match (live.is_empty(), permanent) {
            (true, false) => {
                return Err(SchemaError::SubjectSoftDeleted {
                    subject: subject.into(),
                });
            }
            (false, true) => {
                return Err(SchemaError::SubjectNotSoftDeleted {
                    subject: subject.into(),
                });
            }
            (false, false) => live,
            (true, true) => s.versions.keys().copied().collect(),
        };
        let record = Record::DeleteSubject {
            subject: subject.into(),
            permanent,
        };
        Ok((record, versions))
    }

    /// Plans setting a level (`subject` `None`: the global default).
    ///
    /// # Errors
    /// [`SchemaError::InvalidSubject`].
    pub fn plan_set_level(
        &self,
        subject: Option<&str>,
        level: Level,
    ) -> Result<Record, SchemaError> {
        if let Some(s) = subject {
            check_subject(s)?;
        }
        Ok(Record::SetLevel {
            subject: subject.map(String::from),
            level,
        })
    }

    /// Plans removing a subject's level (`None`: resetting the global one); returns the
    /// record and the level in force before.
    ///
    /// # Errors
    /// [`SchemaError::SubjectConfigNotFound`] for a subject without a level of its own.
    pub fn plan_delete_level(&self, subject: Option<&str>) -> Result<(Record, Level), SchemaError> {
        let before = match subject {
            Some(s) => self.own_level(s)?,
            None => self.level(None),
        };
        Ok((
            Record::DeleteLevel {
                subject: subject.map(String::from),
            },
            before,
        ))
    }

    /// Applies one record (planned here, or replayed from the stream).
    ///
    /// # Errors
    /// [`SchemaError::BadRecord`] when it breaks an invariant (see the module
    /// documentation); the state is then unchanged.
    pub fn apply(&mut self, record: &Record) -> Result<(), SchemaError> {
        let bad = |reason: String| SchemaError::BadRecord { reason };
        match record {
            Record::Register {
                subject,
                version,
                id,
                schema_type,
                schema,
            } => {
                let parsed =
                    ParsedSchema::parse(*schema_type, schema).map_err(|e| bad(e.to_string()))?;
                let key = (*schema_type, parsed.canonical().to_string());
                match (self.ids.get(&key), self.schemas.contains_key(id)) {
                    (Some(known), _) if known != id => {
                        return Err(bad(format!("schema has id {known}, the record says {id}")));
                    }
                    (None, true) => return Err(bad(format!("id {id} names another schema"))),
                    _ => {}
                }
                let s = self.subjects.get(subject.as_str());
                if let Some(last) = s.and_then(|s| s.versions.keys().next_back())
                    && last >= version
                {
                    return Err(bad(format!(
                        "subject '{subject}' version {version} is not past {last}"
                    )));
                }
                self.ids.insert(key, *id);
                self.schemas.insert(*id, parsed);
                self.subjects
                    .entry(subject.clone())
                    .or_default()
                    .versions
                    .insert(
                        *version,
                        Version {
                            id: *id,
                            deleted: false,
                        },
                    );
            }
            Record::DeleteVersion {
                subject,
                version,
                permanent,
            } => {
                let s = self
                    .subjects
                    .get_mut(subject)
                    .ok_or_else(|| bad(format!("no subject '{subject}'")))?;
                let v = s
                    .versions
                    .get_mut(version)
                    .ok_or_else(|| bad(format!("subject '{subject}' has no version {version}")))?;
                if *permanent {
                    if !v.deleted {
                        return Err(bad(format!("'{subject}' version {version} is live")));
                    }
                    s.versions.remove(version);
                } else {
                    v.deleted = true;
                }
            }
            Record::DeleteSubject { subject, permanent } => {
                let s = self
                    .subjects
                    .get_mut(subject)
                    .ok_or_else(|| bad(format!("no subject '{subject}'")))?;
                if *permanent {
                    if s.versions.values().any(|v| !v.deleted) {
                        return Err(bad(format!("'{subject}' has live versions")));
                    }
                    self.subjects.remove(subject);
                } else {
                    s.versions.values_mut().for_each(|v| v.deleted = true);
                }
            }
            Record::SetLevel { subject, level } => match subject {
                Some(s) => self.subjects.entry(s.clone()).or_default().level = Some(*level),
                None => self.global = Some(*level),
            },
            Record::DeleteLevel { subject } => match subject {
                Some(s) => {
                    if let Some(sub) = self.subjects.get_mut(s) {
                        sub.level = None;
                    }
                }
                None => self.global = None,
            },
        }
        Ok(())
    }
}
