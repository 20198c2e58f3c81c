//! Personal data on an immutable log: crypto-shredding (issue 19, decision 0030).
//!
//! A stream may declare which members of its records are personal data and which member
//! names the record's data subject (`personal_data` in its settings). On the write path
//! those members are encrypted under the subject's data key before the records are queued
//! ([`Privacy::seal_records`]); the log, its copies and backups hold only ciphertext for
//! them. Reads put the plaintext back ([`Privacy::reveal`]). Erasing a subject
//! ([`Privacy::erase`]) records the erasure in the internal stream `_data_subjects` and
//! destroys the key: every copy of those members becomes noise, and reads show them as
//! `{"erased": true}`.
//!
//! ```text
//!  append ─▶ subject of each record ─▶ key_store.keys_for (new keys fdatasynced) ─▶ seal ─▶ log
//!  read   ◀─ reveal (decrypt, or {"erased": true}) ◀──────────────────────────────────── log
//!  erase  ─▶ _data_subjects: {"subject", "key_id", "erased_at_ms"} (fsynced) ─▶ slot zeroed,
//!            fdatasynced ─▶ answer; at open, a recorded erasure whose key is still live is
//!            carried out again (an erasure never stays half-done)
//! ```
//!
//! Views hold what the log holds — the sealed objects — and their reads reveal them
//! ([`Privacy::reveal_row`]); a view may not compute on a personal field, nor a derived
//! stream read or write a personal stream ([`views`]). Master-key rotation is offline
//! ([`rotate_master_key`]). What it is not (yet): per-field retention and the cluster's store
//! (etcd), planned in decision 0030.

pub mod fields;
pub mod key_store;
pub mod master_key;
pub mod views;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use logbook_log::{LogBackend, LogError, LogStream, PersonalData, Record};
use serde_json::Value;

use self::key_store::KeyStore;
use self::master_key::MasterKey;

/// The internal stream of erasure records.
pub const ERASURES_STREAM: &str = "_data_subjects";
/// Most bytes of a data subject id.
pub const SUBJECT_BYTES_MAX: usize = 64;

/// Why personal data could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// The master key could not be loaded.
    #[error("master key from {from}: {reason}")]
    MasterKey {
        /// `master_key_file PATH` or `LOGBOOK_MASTER_KEY`.
        from: String,
        /// Why.
        reason: String,
    },
    /// The master key does not open the key store: nothing was decrypted.
    #[error(
        "the master key from {from} is not the one of the key store {path}: start with the master key it was created with"
    )]
    WrongMasterKey {
        /// Where the key came from.
        from: String,
        /// The key store.
        path: PathBuf,
    },
    /// Streams declare personal data but the key store or the master key is missing:
    /// starting would show every personal field as erased.
    #[error("{0}")]
    Missing(String),
    /// The key store is damaged.
    #[error("key store {path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error on the key store (a write or fsync failure poisons it).
    #[error("key store {path}: {op} failed: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The key store failed a write or fsync earlier and refuses changes until restart.
    #[error("key store {path} refuses changes after a failed write; restart the server")]
    Poisoned {
        /// The file.
        path: PathBuf,
    },
    /// The key store holds as many keys as it may.
    #[error("the key store holds {max} data keys, its limit")]
    TooManyKeys {
        /// The limit.
        max: u64,
    },
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// A value could not be encrypted or re-serialised.
    #[error("cipher: {0}")]
    Cipher(String),
    /// A stream's `personal_data` declaration is malformed; `field` names the member.
    #[error("{field}: {reason}")]
    InvalidDeclaration {
        /// E.g. `personal_data.fields[2]`.
        field: String,
        /// Why.
        reason: String,
    },
    /// A record without a valid data subject at the declared pointer.
    #[error("data subject at {pointer}: {reason}")]
    InvalidSubject {
        /// The stream's subject pointer.
        pointer: String,
        /// Why.
        reason: String,
    },
    /// The server has no key store (no master key was given).
    #[error(
        "the server has no master key: start it with master_key_file or LOGBOOK_MASTER_KEY to keep personal data"
    )]
    NoKeyStore,
    /// The log refused or failed the erasure record.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Rotates the master key of the key store in `data_dir` (see [`key_store::rotate`]) while
/// holding the data directory's lock, so no server has the store open: an offline step
/// (`logbook keys rotate`). Start the server with `new` afterwards, then destroy `old`.
///
/// # Errors
/// [`PrivacyError::Log`] with [`LogError::Locked`] while a server runs on `data_dir`;
/// [`PrivacyError::Missing`] when the directory has no key store; [`key_store::rotate`]'s.
pub fn rotate_master_key(
    data_dir: &Path,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<key_store::Rotation, PrivacyError> {
    let _lock = logbook_log::lock_data_dir(&logbook_log::storage::OsStorage, data_dir)?;
    let path = KeyStore::path_in(&data_dir.join("keys"));
    if !path.exists() {
        return Err(PrivacyError::Missing(format!(
            "no key store at {}: this data directory keeps no personal data",
            path.display()
        )));
    }
    key_store::rotate(&path, old, new)
}

/// A data subject's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// The subject has a live key: its personal fields are readable.
    Live,
    /// The subject was erased and has no live key.
    Erased,
    /// No key and no erasure: nothing of this subject was stored encrypted.
    None,
}

/// The server's handling of personal data: the key store (when a master key was given)
/// and the erasure records.
pub struct Privacy {
    store: Option<KeyStore>,
    erasures: Option<Arc<dyn LogStream>>,
    /// Subjects with an erasure record (replayed at open); erasures run one at a time.
    erased: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("store", &self.store)
            .field("erased", &self.lock_erased().len())
            .finish()
    }
}

impl Privacy {
    /// No key store: streams cannot declare personal data (a cluster node, for now).
    pub fn disabled() -> Privacy {
        Privacy {
            store: None,
            erasures: None,
            erased: Mutex::new(HashSet::new()),
        }
    }

    /// Opens the key store under `data_dir/keys` with the master key (from `master_key_file`
    /// or `LOGBOOK_MASTER_KEY`), replays `_data_subjects` and completes any erasure a crash
    /// interrupted.
    ///
    /// # Errors
    /// [`PrivacyError::Missing`] when a stream declares personal data and the master key or
    /// the key store is missing, or a key store exists without a master key;
    /// [`PrivacyError::WrongMasterKey`]; the store's and the log's errors.
    pub fn open(
        log: &dyn LogBackend,
        data_dir: &Path,
        master_key_file: Option<&Path>,
    ) -> Result<Privacy, PrivacyError> {
        let dir = data_dir.join("keys");
        let path = KeyStore::path_in(&dir);
        let declaring: Vec<String> = log
            .stream_names()
            .into_iter()
            .filter(|n| {
                log.stream(n)
                    .is_ok_and(|s| s.config().personal_data.is_some())
            })
            .collect();
        let exists = path.exists();
        let store = match (MasterKey::load(master_key_file)?, exists) {
            (Some(kek), true) => Some(KeyStore::open(&path, kek)?),
            (Some(kek), false) if declaring.is_empty() => {
                private_dir(&dir)?;
                Some(KeyStore::create(&path, kek)?)
            }
            (Some(_), false) => {
                return Err(PrivacyError::Missing(format!(
                    "the key store {} is missing while streams {declaring:?} declare personal data: restore it (without it every personal field reads as erased)",
                    path.display()
                )));
            }
            (None, true) => {
                return Err(PrivacyError::Missing(format!(
                    "the key store {} needs its master key: give master_key_file or LOGBOOK_MASTER_KEY",
                    path.display()
                )));
            }
            (None, false) if !declaring.is_empty() => {
                return Err(PrivacyError::Missing(format!(
                    "streams {declaring:?} declare personal data but the server has no master key: give master_key_file or LOGBOOK_MASTER_KEY"
                )));
            }
            (None, false) => None,
        };
        let erasures = crate::internal_stream::open_or_create(log, ERASURES_STREAM, false)?;
        let privacy = Privacy {
            store,
            erasures: Some(erasures),
            erased: Mutex::new(HashSet::new()),
        };
        privacy.replay()?;
        Ok(privacy)
    }

    /// Reads every erasure record; a subject whose live key is the one a record names was
    /// erased in the log but not in the store (a crash between the two): erased now.
    fn replay(&self) -> Result<(), PrivacyError> {
        let Some(stream) = &self.erasures else {
            return Ok(());
        };
        let part = stream.partition(0)?;
        let mut from = part.start_offset();
        let mut erased = self.lock_erased();
        loop {
            let batch = part.read(from, 1000, 1 << 20)?;
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            for r in batch {
                let Ok(e) = serde_json::from_slice::<ErasureRecord>(&r.value) else {
                    tracing::warn!(
                        offset = r.offset,
                        "not an erasure record in {ERASURES_STREAM}; skipped"
                    );
                    continue;
                };
                if let Some(store) = &self.store
                    && store
                        .key(&e.subject)
                        .is_some_and(|k| format!("{:016x}", k.id) == e.key_id)
                {
                    tracing::info!(subject = %e.subject, "completing an erasure a restart interrupted");
                    store.erase(&e.subject)?;
                }
                erased.insert(e.subject);
            }
        }
        Ok(())
    }

    fn lock_erased(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.erased.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the server can keep personal data (it has a key store).
    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    /// Checks a stream's declaration before the stream is created with it.
    ///
    /// # Errors
    /// [`PrivacyError::InvalidDeclaration`], [`PrivacyError::NoKeyStore`].
    pub fn check_declaration(&self, d: &PersonalData) -> Result<(), PrivacyError> {
        fields::check_declaration(d)?;
        if self.store.is_none() {
            return Err(PrivacyError::NoKeyStore);
        }
        Ok(())
    }

    /// Encrypts the declared members of `records` (of `stream`) in place; nothing for a
    /// stream without a declaration. Every record's subject is checked before any key is
    /// created; new keys are durable before this returns.
    ///
    /// With `create` false it never touches the disk (an async task may call it): when a
    /// subject has no key yet it returns `Ok(false)` and leaves `records` as they were, and
    /// the caller retries with `create` true on a blocking thread. Appends under subjects
    /// already known — nearly all of them — so skip the hand-off to the blocking pool, which
    /// cost more CPU than the sealing itself (issue 19's benchmark).
    ///
    /// # Errors
    /// `(index, error)`: [`PrivacyError::InvalidSubject`] for the record at `index`
    /// (nothing created), [`PrivacyError::NoKeyStore`], the key store's errors.
    pub fn seal_records(
        &self,
        stream: &dyn LogStream,
        records: &mut [Record],
        create: bool,
    ) -> Result<bool, (usize, PrivacyError)> {
        let Some(d) = stream.config().personal_data else {
            return Ok(true);
        };
        let store = self.store.as_ref().ok_or((0, PrivacyError::NoKeyStore))?;
        let mut parsed = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let value: Value = serde_json::from_slice(&r.value).map_err(|e| {
                (
                    i,
                    PrivacyError::InvalidSubject {
                        pointer: d.subject.clone(),
                        reason: format!("the value is not JSON: {e}"),
                    },
                )
            })?;
            let subject = fields::subject_of(&value, &d.subject).map_err(|e| (i, e))?;
            parsed.push((value, subject));
        }
        let subjects: Vec<&str> = parsed.iter().map(|(_, s)| s.as_str()).collect();
        let keys = match store.live_keys(&subjects) {
            Some(keys) => keys,
            None if create => store.keys_for(&subjects).map_err(|e| (0, e))?,
            None => return Ok(false),
        };
        for (i, ((mut value, subject), key)) in parsed.into_iter().zip(keys).enumerate() {
            fields::seal(&mut value, stream.name(), &d, &subject, &key).map_err(|e| (i, e))?;
            records[i].value = fields::canonical_text(&value).map_err(|e| (i, e))?;
        }
        Ok(true)
    }

    /// A stored value of `stream` as a reader sees it: declared members decrypted, or
    /// `{"erased": true}` when the subject's key is gone (`{"undecryptable": true}` for a
    /// ciphertext damaged on disk, logged). `None`: show the value as stored.
    pub fn reveal(&self, stream: &str, d: &PersonalData, value: &[u8]) -> Option<Vec<u8>> {
        let mut v: Value = serde_json::from_slice(value).ok()?;
        let subject = fields::subject_of(&v, &d.subject).ok()?;
        let key = self.store.as_ref().and_then(|s| s.key(&subject));
        for pointer in &d.fields {
            let Some(member) = v.pointer_mut(pointer) else {
                continue;
            };
            if let Some(r) = fields::reveal(member, stream, pointer, &subject, key.as_deref()) {
                *member = r.shown(stream);
            }
        }
        serde_json::to_vec(&v).ok()
    }

    /// A view row's value over `stream` as a reader sees it: every sealed member, wherever
    /// the view put it, decrypted or marked `{"erased": true}` ([`fields::reveal_anywhere`]).
    /// Views hold what the log holds — ciphertext — so a live view and one rebuilt from
    /// offset 0 after an erasure both show the subject's fields as erased.
    pub fn reveal_row(&self, stream: &str, d: &PersonalData, value: &mut Value) {
        let live_key = |id: u64| self.store.as_ref().and_then(|s| s.key_by_id(id));
        fields::reveal_anywhere(value, stream, d, &live_key);
    }

    /// The subject's state.
    pub fn state(&self, subject: &str) -> KeyState {
        if self
            .store
            .as_ref()
            .is_some_and(|s| s.key(subject).is_some())
        {
            KeyState::Live
        } else if self.lock_erased().contains(subject) {
            KeyState::Erased
        } else {
            KeyState::None
        }
    }

    /// Erases `subject`: the erasure record appended to `_data_subjects` and fsynced, then
    /// the key destroyed. Idempotent: without a live key nothing is appended. Blocks (fsyncs).
    ///
    /// # Errors
    /// The log's (nothing destroyed), the key store's (the key is gone from memory and the
    /// erasure is completed at the next start), [`PrivacyError::Cipher`] never.
    pub fn erase(&self, subject: &str, now_ms: i64) -> Result<KeyState, PrivacyError> {
        let mut erased = self.lock_erased();
        let (Some(store), Some(stream)) = (&self.store, &self.erasures) else {
            return Ok(if erased.contains(subject) {
                KeyState::Erased
            } else {
                KeyState::None
            });
        };
        let Some(key) = store.key(subject) else {
            return Ok(if erased.contains(subject) {
                KeyState::Erased
            } else {
                KeyState::None
            });
        };
        let record = ErasureRecord {
            subject: subject.to_string(),
            key_id: format!("{:016x}", key.id),
            erased_at_ms: now_ms,
        };
        let value = serde_json::to_vec(&record).map_err(|e| PrivacyError::Cipher(e.to_string()))?;
        stream
            .append_batch(vec![Record {
                key: Some(subject.as_bytes().to_vec()),
                value,
                headers: Vec::new(),
                timestamp_ms: None,
            }])?
            .wait()?;
        erased.insert(subject.to_string());
        store.erase(subject)?;
        tracing::info!(subject, "data subject erased");
        Ok(KeyState::Erased)
    }
}

/// A record of `_data_subjects`: no personal data (the subject id is pseudonymous, decision
/// 0030), the key id it destroys, when.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ErasureRecord {
    subject: String,
    key_id: String,
    erased_at_ms: i64,
}

fn private_dir(dir: &Path) -> Result<(), PrivacyError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(logbook_log::storage::DIR_MODE)
        .create(dir)
        .map_err(|source| PrivacyError::Io {
            op: "create directory",
            path: dir.to_path_buf(),
            source,
        })
}
