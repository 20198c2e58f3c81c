//! The token table: derived from the internal stream `_auth`, like the catalog is from its
//! records, so every creation and revocation is a logged, replicated record.
//!
//! ```text
//!  _auth (1 partition, fsync always)        Tokens (memory)
//!   {"op":"create","id",…,"sha256"}   ──▶   sha256 → token (principal, scopes, expiry)
//!   {"op":"revoke","id","at_ms"}      ──▶   id → revoked_at_ms
//! ```
//!
//! A secret is `lb_` and 32 hex digits (128 bits from the OS generator); only its SHA-256 is
//! stored (a slow password hash buys nothing for random secrets and would cost every
//! request). Lookups are by that hash, so comparing it leaks nothing about the secret. On
//! first start (an empty `_auth`) an `admin` token is made and its secret written to
//! [`ADMIN_TOKEN_FILE`] in the data directory, mode 0600, before its record is appended: a
//! crash in between leaves `_auth` empty and the next start writes a new one.
//!
//! The table applies `_auth` in log order from the offset it has reached ([`Tokens::catch_up`]),
//! whoever appended: its own creations and revocations, and on a cluster node those of the
//! other nodes, which [`Tokens::follow`] picks up as they arrive. A node sharing `_auth` also
//! catches up once before refusing an unknown secret ([`Tokens::authenticate_fresh`]), so a
//! token made on one node works on the next at once; those catch-ups take turns, so a flood
//! of bad secrets costs one read of `_auth` at a time.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use logbook_api::auth::{CreateToken, TokenCreated, TokenInfo};
use logbook_api::limits::{PRINCIPAL_BYTES_MAX, TOKEN_SCOPES_MAX, TOKENS_MAX};
use logbook_log::{AppendCondition, LogBackend, LogError, LogStream, Record};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::scope::Scope;

/// The internal stream holding token records.
pub const AUTH_STREAM: &str = "_auth";
/// The file in the data directory holding the first admin token's secret (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The principal of the first token.
pub const ADMIN_PRINCIPAL: &str = "admin";
/// Longest expiry, ms (100 years).
const EXPIRES_IN_MS_MAX: u64 = 100 * 365 * 24 * 3600 * 1000;
/// Looks at the table before a revocation gives up because other nodes keep appending.
const REVOKE_TRIES: usize = 8;

/// Why the token table cannot be used or changed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The log refused or failed.
    #[error("token stream {AUTH_STREAM}: {0}")]
    Log(#[from] LogError),
    /// A record of `_auth` is not one this version writes.
    #[error("token stream {AUTH_STREAM}: record at offset {offset}: {reason}")]
    Corrupt {
        /// Its offset.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The admin token file could not be written.
    #[error("cannot write the admin token file {path}: {source}")]
    AdminFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A field of a token to create is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (`principal`, `scopes[2]`, `expires_in_ms`).
        field: String,
        /// Why.
        reason: String,
    },
    /// No token has this id.
    #[error("no token has id {0:?}")]
    UnknownToken(String),
    /// [`TOKENS_MAX`] tokens exist.
    #[error("{TOKENS_MAX} tokens exist, the most a node keeps")]
    TooMany,
    /// Revoking this token would leave no live `admin` token: no one could make tokens again.
    #[error(
        "token {0} is the last live admin token: revoking it would leave no one able to \
         administer the node; create another admin token first"
    )]
    LastAdmin(String),
    /// Other nodes kept appending to `_auth` between every look and the revocation.
    #[error("token stream {AUTH_STREAM} kept changing under the revocation; retry")]
    Contended,
    /// The OS random generator failed.
    #[error("the OS random generator failed: {0}")]
    Random(String),
}

/// The API's answer to a token-table failure: a named 400/404/409 for what the caller can
/// fix, 500 (logged) for the rest.
impl From<AuthError> for crate::error::ApiError {
    fn from(e: AuthError) -> Self {
        use crate::error::{ApiError, ProblemCode as C};
        use AuthError as A;
        match e {
            A::Invalid { field, reason } => {
                ApiError::new(C::InvalidRequest, format!("{field}: {reason}")).field(field)
            }
            A::UnknownToken(id) => {
                ApiError::new(C::UnknownToken, format!("no token has id {id:?}")).field("id")
            }
            A::TooMany => ApiError::new(C::TooManyTokens, A::TooMany.to_string()),
            A::LastAdmin(id) => {
                ApiError::new(C::LastAdminToken, A::LastAdmin(id).to_string()).field("id")
            }
            A::Contended => ApiError::new(C::ServerBusy, A::Contended.to_string()).retry_after(1),
            A::Log(e) => ApiError::from_log(e, |_| String::new()),
            other => {
                tracing::error!(error = %other, "token table");
                ApiError::internal("the token table failed; see the server log")
            }
        }
    }
}

/// Who a request acts as: a valid token's principal and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's name.
    pub name: String,
    /// The token's id.
    pub token_id: String,
    /// The token's scopes.
    pub scopes: Vec<Scope>,
    /// Who per-principal quotas count ([`crate::quota`]): `token:` and the token's id, made
    /// once with the token.
    pub quota_key: crate::quota::PrincipalKey,
}

/// One record of `_auth`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum AuthRecord {
    Create {
        id: String,
        principal: String,
        scopes: Vec<String>,
        sha256: String,
        created_at_ms: u64,
        #[serde(default)]
        expires_at_ms: Option<u64>,
    },
    Revoke {
        id: String,
        at_ms: u64,
    },
}

#[derive(Debug)]
struct Entry {
    info: TokenInfo,
    principal: Arc<Principal>,
}

#[derive(Debug, Default)]
struct Table {
    /// The offset of `_auth` to apply next.
    next: u64,
    by_hash: HashMap<[u8; 32], usize>,
    by_id: HashMap<String, usize>,
    entries: Vec<Entry>,
}

impl Table {
    fn info(&self, id: &str) -> Result<TokenInfo, AuthError> {
        self.by_id
            .get(id)
            .map(|&i| self.entries[i].info.clone())
            .ok_or_else(|| AuthError::UnknownToken(id.chars().take(64).collect()))
    }

    /// Whether token `id` is a live `admin` token at `now_ms` and no other is.
    fn last_live_admin(&self, id: &str, now_ms: u64) -> bool {
        let live_admin = |e: &Entry| {
            e.info.revoked_at_ms.is_none()
                && e.info.expires_at_ms.is_none_or(|at| now_ms < at)
                && e.principal.scopes.contains(&Scope::Admin)
        };
        let Some(&index) = self.by_id.get(id) else {
            return false;
        };
        live_admin(&self.entries[index])
            && !self
                .entries
                .iter()
                .enumerate()
                .any(|(i, e)| i != index && live_admin(e))
    }
}

/// The token table (see the module docs).
#[derive(Debug)]
pub struct Tokens {
    stream: Arc<dyn LogStream>,
    table: RwLock<Table>,
    /// Appends take turns.
    writer: Mutex<()>,
    /// Catch-ups take turns, so the table applies records once each, in log order.
    reader: Mutex<()>,
    /// Whether other nodes append to `_auth` too (a cluster node).
    shared: bool,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new secret: `lb_` and 32 hex digits from the OS generator.
fn new_secret() -> Result<String, AuthError> {
    let mut bits = [0u8; 16];
    getrandom::getrandom(&mut bits).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(format!("lb_{}", hex(&bits)))
}

/// Checks a principal name: 1..=128 bytes of `A-Z a-z 0-9 . _ @ -`.
fn check_principal(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= PRINCIPAL_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_@".contains(&b));
    if ok {
        return Ok(());
    }
    Err(AuthError::Invalid {
        field: "principal".into(),
        reason: format!(
            "{:?} is not 1 to {PRINCIPAL_BYTES_MAX} characters of A-Z a-z 0-9 . _ @ -",
            name.chars().take(160).collect::<String>()
        ),
    })
}

fn parse_scopes(scopes: &[String]) -> Result<Vec<Scope>, AuthError> {
    if scopes.is_empty() || scopes.len() > TOKEN_SCOPES_MAX {
        return Err(AuthError::Invalid {
            field: "scopes".into(),
            reason: format!("give 1 to {TOKEN_SCOPES_MAX} scopes, not {}", scopes.len()),
        });
    }
    scopes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Scope>().map_err(|e| AuthError::Invalid {
                field: format!("scopes[{i}]"),
                reason: e.to_string(),
            })
        })
        .collect()
}

impl Tokens {
    /// Opens `_auth` (creating it), replays it, and on first start (an empty `_auth`) makes
    /// the admin token and writes its secret to `data_dir/admin.token` (mode 0600). `shared`:
    /// other nodes append to `_auth` too (a cluster node; see [`Tokens::authenticate_fresh`]).
    /// Blocks.
    ///
    /// # Errors
    /// [`AuthError::Log`], [`AuthError::Corrupt`], [`AuthError::AdminFile`],
    /// [`AuthError::Random`].
    pub fn open(
        log: &Arc<dyn LogBackend>,
        data_dir: &Path,
        shared: bool,
    ) -> Result<Tokens, AuthError> {
        let stream = crate::internal_stream::open_or_create(log.as_ref(), AUTH_STREAM, shared)?;
        let tokens = Tokens {
            stream,
            table: RwLock::new(Table::default()),
            writer: Mutex::new(()),
            reader: Mutex::new(()),
            shared,
        };
        if tokens.catch_up()? == 0 {
            tokens.bootstrap(data_dir)?;
        }
        Ok(tokens)
    }

    /// Applies the records of `_auth` this table has not applied yet; returns how many.
    /// Blocks (reads the log).
    ///
    /// # Errors
    /// [`AuthError::Log`]; [`AuthError::Corrupt`] for a record this version cannot apply
    /// (the table stays before it).
    pub fn catch_up(&self) -> Result<u64, AuthError> {
        let _turn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let partition = self.stream.partition(0)?;
        let mut count = 0;
        loop {
            let at = self.table.read().map_or(0, |t| t.next);
            let records = partition.read(at, 1000, 1 << 20)?;
            if records.is_empty() {
                return Ok(count);
            }
            for r in records {
                let record = serde_json::from_slice::<AuthRecord>(&r.value).map_err(|e| {
                    AuthError::Corrupt {
                        offset: r.offset,
                        reason: e.to_string(),
                    }
                })?;
                self.apply(record, r.offset + 1)
                    .map_err(|reason| AuthError::Corrupt {
                        offset: r.offset,
                        reason,
                    })?;
                count += 1;
            }
        }
    }

    /// Follows `_auth` until its partition closes, applying what any node appends (a cluster
    /// node runs this; a single node's table learns its own appends as it makes them). A
    /// record it cannot apply stops it, logged: the next start refuses that record by name.
    pub async fn follow(self: Arc<Self>) {
        let Ok(partition) = self.stream.partition(0) else {
            return;
        };
        loop {
            let seen = partition.end_offset();
            let tokens = self.clone();
            match tokio::task::spawn_blocking(move || tokens.catch_up()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "token table: stopped following {AUTH_STREAM}");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "token table: the catch-up task failed");
                    return;
                }
            }
            // Past `seen` means a record not read yet may exist; not past it, closed.
            if partition.end_offset_above(seen).await <= seen {
                return;
            }
        }
    }

    /// Applies one record to the table; `next` is the offset after it.
    fn apply(&self, record: AuthRecord, next: u64) -> Result<(), String> {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        match record {
            AuthRecord::Create {
                id,
                principal,
                scopes,
                sha256,
                created_at_ms,
                expires_at_ms,
            } => {
                let hash = unhex32(&sha256).ok_or("sha256 is not 64 hex digits")?;
                let parsed = parse_scopes(&scopes).map_err(|e| e.to_string())?;
                let index = table.entries.len();
                table.by_hash.insert(hash, index);
                table.by_id.insert(id.clone(), index);
                table.entries.push(Entry {
                    principal: Arc::new(Principal {
                        name: principal.clone(),
                        quota_key: crate::quota::token_key(&id),
                        token_id: id.clone(),
                        scopes: parsed,
                    }),
                    info: TokenInfo {
                        id,
                        principal,
                        scopes,
                        created_at_ms,
                        expires_at_ms,
                        revoked_at_ms: None,
                    },
                });
            }
            AuthRecord::Revoke { id, at_ms } => {
                let index = *table.by_id.get(&id).ok_or("revokes an unknown token")?;
                let info = &mut table.entries[index].info;
                info.revoked_at_ms.get_or_insert(at_ms);
            }
        }
        table.next = next;
        Ok(())
    }

    /// Appends `record` and, once it is durable, catches the table up to it (and to whatever
    /// other nodes appended before it). Called with the writer lock held.
    fn append(&self, record: AuthRecord) -> Result<(), AuthError> {
        self.append_if(record, AppendCondition::Always)
    }

    /// [`Tokens::append`] under `condition` (a refused condition is
    /// [`LogError::EndOffsetMismatch`], nothing appended).
    fn append_if(&self, record: AuthRecord, condition: AppendCondition) -> Result<(), AuthError> {
        let bytes = serde_json::to_vec(&record).map_err(|e| AuthError::Corrupt {
            offset: 0,
            reason: e.to_string(),
        })?;
        self.stream
            .partition(0)?
            .append_batch(&[Record::new(bytes)], condition)?
            .wait()?;
        self.catch_up().map(drop)
    }

    fn bootstrap(&self, data_dir: &Path) -> Result<(), AuthError> {
        let secret = new_secret()?;
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        write_private(&path, &format!("{secret}\n")).map_err(|source| AuthError::AdminFile {
            path: path.clone(),
            source,
        })?;
        let _turn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let (_, record) = create_record(
            &secret,
            ADMIN_PRINCIPAL,
            vec!["admin".into()],
            now_ms(),
            None,
        );
        self.append(record)?;
        tracing::info!(
            file = %path.display(),
            "first start: an admin token was made; its secret is in this file (owner-only)"
        );
        Ok(())
    }

    /// The principal of a valid secret at `now_ms` (`None`: unknown, expired or revoked).
    /// `principal`, when given (HTTP Basic), must be the token's.
    pub fn authenticate(
        &self,
        secret: &str,
        principal: Option<&str>,
        now_ms: u64,
    ) -> Option<Arc<Principal>> {
        let hash = digest(secret);
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let entry = &table.entries[*table.by_hash.get(&hash)?];
        let live = entry.info.revoked_at_ms.is_none()
            && entry.info.expires_at_ms.is_none_or(|at| now_ms < at);
        let same = principal.is_none_or(|p| p == entry.info.principal);
        (live && same).then(|| entry.principal.clone())
    }

    /// [`Tokens::authenticate`], and on a node sharing `_auth` with others, once more after
    /// catching up when the secret is unknown here: a token just made on another node is
    /// known at once. Catch-ups take turns; a secret still unknown after one is refused.
    pub async fn authenticate_fresh(
        self: &Arc<Self>,
        secret: &str,
        principal: Option<&str>,
        now_ms: u64,
    ) -> Option<Arc<Principal>> {
        if let Some(p) = self.authenticate(secret, principal, now_ms) {
            return Some(p);
        }
        if !self.shared || self.knows(secret) {
            return None;
        }
        let tokens = self.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || tokens.catch_up()).await {
            tracing::warn!(error = %e, "token table: cannot catch up with {AUTH_STREAM}");
        }
        self.authenticate(secret, principal, now_ms)
    }

    /// Whether a token with this secret is in the table (live or not).
    fn knows(&self, secret: &str) -> bool {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.by_hash.contains_key(&digest(secret))
    }

    /// Creates a token. Blocks until its record is durable.
    ///
    /// # Errors
    /// [`AuthError::Invalid`] naming the field, [`AuthError::TooMany`], [`AuthError::Log`].
    pub fn create(&self, request: CreateToken) -> Result<TokenCreated, AuthError> {
        check_principal(&request.principal)?;
        parse_scopes(&request.scopes)?;
        let now = now_ms();
        let expires_at_ms = match request.expires_in_ms {
            None => None,
            Some(ms) if (1..=EXPIRES_IN_MS_MAX).contains(&ms) => Some(now + ms),
            Some(ms) => {
                return Err(AuthError::Invalid {
                    field: "expires_in_ms".into(),
                    reason: format!("{ms} is not 1 ..= {EXPIRES_IN_MS_MAX} (100 years)"),
                });
            }
        };
        let _turn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.table.read().map_or(0, |t| t.entries.len()) >= TOKENS_MAX {
            return Err(AuthError::TooMany);
        }
        let secret = new_secret()?;
        let (id, record) = create_record(
            &secret,
            &request.principal,
            request.scopes,
            now,
            expires_at_ms,
        );
        self.append(record)?;
        let info = self.info(&id)?;
        Ok(TokenCreated {
            info,
            token: secret,
        })
    }

    /// Revokes a token (again: no change). Blocks until the record is durable. The last live
    /// `admin` token (unrevoked, unexpired) is not revoked: without one no token could be
    /// made again. That check and the revocation are one step across nodes: the record is
    /// appended only where `_auth` ended when the table was looked at, else the table
    /// catches up and looks again (at most `REVOKE_TRIES` (8) times).
    ///
    /// # Errors
    /// [`AuthError::UnknownToken`], [`AuthError::LastAdmin`], [`AuthError::Contended`],
    /// [`AuthError::Log`].
    pub fn revoke(&self, id: &str) -> Result<TokenInfo, AuthError> {
        let _turn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..REVOKE_TRIES {
            // The end as the log's authority knows it, taken before catching up: the table
            // then holds every record below it, and the append lands only if none came since.
            // (Not the table's next offset: a replicated log's end need not be last + 1.)
            let end = self.stream.partition(0)?.latest_end_offset()?;
            self.catch_up()?;
            let (info, last_admin) = {
                let table = self.table.read().unwrap_or_else(|e| e.into_inner());
                let info = table.info(id)?;
                (info, table.last_live_admin(id, now_ms()))
            };
            if info.revoked_at_ms.is_some() {
                return Ok(info);
            }
            if last_admin {
                return Err(AuthError::LastAdmin(info.id));
            }
            let record = AuthRecord::Revoke {
                id: id.to_string(),
                at_ms: now_ms(),
            };
            match self.append_if(record, AppendCondition::EndOffset(end)) {
                Err(AuthError::Log(LogError::EndOffsetMismatch { .. })) => continue,
                other => other?,
            }
            return self.info(id);
        }
        Err(AuthError::Contended)
    }

    fn info(&self, id: &str) -> Result<TokenInfo, AuthError> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .info(id)
    }

    /// Every token, oldest first, without secrets.
    pub fn list(&self) -> Vec<TokenInfo> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.entries.iter().map(|e| e.info.clone()).collect()
    }
}

fn create_record(
    secret: &str,
    principal: &str,
    scopes: Vec<String>,
    created_at_ms: u64,
    expires_at_ms: Option<u64>,
) -> (String, AuthRecord) {
    let hash = digest(secret);
    let id = hex(&hash[..8]);
    let record = AuthRecord::Create {
        id: id.clone(),
        principal: principal.to_string(),
        scopes,
        sha256: hex(&hash),
        created_at_ms,
        expires_at_ms,
    };
    (id, record)
}

/// Writes `text` to `path` through a temporary file with mode 0600, synced and renamed.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
