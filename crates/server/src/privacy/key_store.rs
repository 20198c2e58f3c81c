//! The embedded key store: one data key per data subject, in a file of fixed-size slots,
//! each key wrapped by the master key (decision 0030 has the byte tables).
//!
//! ```text
//!  keys/data-keys:  [ header 64 B ][ slot 0: 192 B ][ slot 1 ] ... [ slot n-1 ]
//!                     magic, version,   live: subject, key id, wrapped key, CRC32C
//!                     KEK check         free: 192 zero bytes
//! ```
//!
//! Invariants:
//! * A key is in a live slot, fdatasynced, before [`KeyStore::keys_for`] returns it: no
//!   record is ever encrypted under a key a crash could lose.
//! * An erased subject's slot is 192 zero bytes on the file, fdatasynced, before
//!   [`KeyStore::erase`] returns; the memory copy is dropped (and zeroed) with it.
//! * A failed write or fdatasync poisons the store: it refuses every later change until the
//!   server restarts (the file's state is unknown; the fsync is never retried).
//! * The master key is checked against the header before any slot is read: a wrong one
//!   decrypts nothing.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aes_gcm_siv::aead::{Aead, Payload};
use aes_gcm_siv::{Aes256GcmSiv, KeyInit, Nonce};
use zeroize::Zeroizing;

use super::master_key::MasterKey;
use super::{PrivacyError, SUBJECT_BYTES_MAX};
use crate::limits::DATA_KEYS_MAX;

const MAGIC: &[u8; 8] = b"LBDKEYS\0";
const FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: u64 = 64;
/// One slot's size in bytes.
pub const SLOT_BYTES: u64 = 192;
/// A data key: 32 bytes of AES-256 key, then 16 bytes of nonce key.
const DATA_KEY_BYTES: usize = 48;
const WRAPPED_BYTES: usize = DATA_KEY_BYTES + 16;
const SLOT_LIVE: u8 = 1;
// Slot layout (offsets within a slot).
const SUBJECT_AT: usize = 2;
const KEY_ID_AT: usize = SUBJECT_AT + SUBJECT_BYTES_MAX;
const WRAP_NONCE_AT: usize = KEY_ID_AT + 8;
const WRAPPED_AT: usize = WRAP_NONCE_AT + 12;
const CRC_AT: usize = SLOT_BYTES as usize - 4;
const _: () = assert!(WRAPPED_AT + WRAPPED_BYTES + 16 <= CRC_AT);
const _: () = assert!(SUBJECT_BYTES_MAX <= u8::MAX as usize);

/// One subject's data key, as the write and read paths use it.
pub struct DataKey {
    /// Random; every ciphertext under the key names it, so a later key of the same subject
    /// (after an erasure) is told apart.
    pub id: u64,
    pub(super) cipher: Aes256GcmSiv,
    pub(super) nonce_key: Zeroizing<[u8; 16]>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({:016x})", self.id)
    }
}

/// The key store of a data directory; see the module docs.
pub struct KeyStore {
    file: File,
    path: PathBuf,
    kek: MasterKey,
    slots: Mutex<Slots>,
    poisoned: AtomicBool,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys, nor a list of subjects.
        write!(
            f,
            "KeyStore({}, {} live keys)",
            self.path.display(),
            self.live_count()
        )
    }
}

#[derive(Default)]
struct Slots {
    live: HashMap<String, Live>,
    /// Key id → subject of every live key: a sealed value names its key, not its subject
    /// (a view's row may not hold the subject).
    by_id: HashMap<u64, String>,
    /// Erased slots, reused by new keys.
    free: Vec<u64>,
    /// Slots in the file.
    count: u64,
}

struct Live {
    slot: u64,
    key: Arc<DataKey>,
}

impl KeyStore {
    /// The store file under `dir` (`<data-dir>/keys`).
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("data-keys")
    }

    /// Creates an empty store at `path` (header only, fsynced, then the directory).
    ///
    /// # Errors
    /// [`PrivacyError::Io`].
    pub fn create(path: &Path, kek: MasterKey) -> Result<KeyStore, PrivacyError> {
        let io = |op: &'static str| {
            let path = path.to_path_buf();
            move |source| PrivacyError::Io { op, path, source }
        };
        let header = header(&kek);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io("create"))?;
        file.write_all_at(&header, 0).map_err(io("write"))?;
        file.sync_all().map_err(io("fsync"))?;
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("fsync directory"))?;
        }
        Ok(KeyStore {
            file,
            path: path.to_path_buf(),
            kek,
            slots: Mutex::new(Slots::default()),
            poisoned: AtomicBool::new(false),
        })
    }

    /// Opens the store at `path`: the header checked against `kek`, every live slot's key
    /// unwrapped. A slot failing its CRC32C (torn by a crash while its key was created, so
    /// no record used it) is left alone and never reused.
    ///
    /// # Errors
    /// [`PrivacyError::WrongMasterKey`], [`PrivacyError::Corrupt`] (a bad header, a live
    /// slot whose key does not unwrap), [`PrivacyError::Io`].
    pub fn open(path: &Path, kek: MasterKey) -> Result<KeyStore, PrivacyError> {
        let io = |op: &'static str| {
            let path = path.to_path_buf();
            move |source| PrivacyError::Io { op, path, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("open"))?;
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io("read"))?);
        let body = check_header(&bytes, &kek, path)?;
        let mut slots = Slots {
            count: (body.len() as u64) / SLOT_BYTES,
            ..Slots::default()
        };
        for (i, raw) in body.chunks_exact(SLOT_BYTES as usize).enumerate() {
            let slot = i as u64;
            match slot_state(raw) {
                SlotState::Free => slots.free.push(slot),
                SlotState::Torn => {
                    tracing::warn!(path = %path.display(), slot, "key store slot torn (a crash while a key was created); left unused");
                }
                SlotState::Live => {
                    let (subject, id, material) = unwrap_material(&kek, raw)
                        .map_err(|reason| corrupt(path, format!("slot {slot}: {reason}")))?;
                    let key = data_key(id, &material[..]);
                    slots.by_id.insert(key.id, subject.clone());
                    slots.live.insert(
                        subject,
                        Live {
                            slot,
                            key: Arc::new(key),
                        },
                    );
                }
            }
        }
        Ok(KeyStore {
            file,
            path: path.to_path_buf(),
            kek,
            slots: Mutex::new(slots),
            poisoned: AtomicBool::new(false),
        })
    }

    /// The live key of `subject`, if any.
    pub fn key(&self, subject: &str) -> Option<Arc<DataKey>> {
        self.lock().live.get(subject).map(|l| l.key.clone())
    }

    /// The live keys of `subjects`, in order, under one lock; `None` when any subject has no
    /// live key yet (then [`KeyStore::keys_for`] must create it, which writes and syncs).
    /// Never touches the disk, so an async task may call it.
    pub fn live_keys(&self, subjects: &[&str]) -> Option<Vec<Arc<DataKey>>> {
        let slots = self.lock();
        subjects
            .iter()
            .map(|s| slots.live.get(*s).map(|l| l.key.clone()))
            .collect()
    }

    /// The live key whose id is `id`, with its subject; `None` once erased.
    pub fn key_by_id(&self, id: u64) -> Option<(String, Arc<DataKey>)> {
        let slots = self.lock();
        let subject = slots.by_id.get(&id)?;
        let live = slots.live.get(subject).filter(|l| l.key.id == id)?;
        Some((subject.clone(), live.key.clone()))
    }

    /// Subjects with a live key.
    pub fn live_count(&self) -> usize {
        self.lock().live.len()
    }

    /// The keys of `subjects` (in order), creating the missing ones: written to free slots
    /// (or appended) and fdatasynced once for all of them before any is returned.
    ///
    /// # Errors
    /// [`PrivacyError::Poisoned`], [`PrivacyError::TooManyKeys`], [`PrivacyError::Io`]
    /// (which poisons the store).
    pub fn keys_for(&self, subjects: &[&str]) -> Result<Vec<Arc<DataKey>>, PrivacyError> {
        let mut slots = self.lock();
        // New keys are written first and become visible only once fdatasynced together.
        let mut written: Vec<(String, u64, Arc<DataKey>)> = Vec::new();
        let mut out = Vec::with_capacity(subjects.len());
        for subject in subjects {
            if let Some(live) = slots.live.get(*subject) {
                out.push(live.key.clone());
                continue;
            }
            if let Some((_, _, key)) = written.iter().find(|(s, _, _)| s == subject) {
                out.push(key.clone());
                continue;
            }
            // On an error, slots already written for this call stay unused until the next
            // start (no record is under their keys).
            let (slot, key) = self.write_new(&mut slots, subject)?;
            written.push(((*subject).to_string(), slot, key.clone()));
            out.push(key);
        }
        if !written.is_empty()
            && let Err(e) = self.file.sync_data()
        {
            return Err(self.poison("fsync", e));
        }
        for (subject, slot, key) in written {
            slots.by_id.insert(key.id, subject.clone());
            slots.live.insert(subject, Live { slot, key });
        }
        Ok(out)
    }

    /// Writes a new key for `subject` to a free slot (or a new one at the end), unsynced.
    fn write_new(
        &self,
        slots: &mut Slots,
        subject: &str,
    ) -> Result<(u64, Arc<DataKey>), PrivacyError> {
        self.check_writable()?;
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None if slots.count >= DATA_KEYS_MAX => {
                return Err(PrivacyError::TooManyKeys { max: DATA_KEYS_MAX });
            }
            None => {
                slots.count += 1;
                slots.count - 1
            }
        };
        let (raw, key) = new_slot(&self.kek, subject)?;
        if let Err(e) = self.file.write_all_at(&raw[..], offset(slot)) {
            return Err(self.poison("write", e));
        }
        Ok((slot, Arc::new(key)))
    }

    /// Destroys `subject`'s key: its slot overwritten with zeros and fdatasynced. Returns
    /// the erased key's id, `None` when the subject had no live key.
    ///
    /// # Errors
    /// [`PrivacyError::Poisoned`], [`PrivacyError::Io`] (which poisons the store; the key is
    /// then gone from memory, and the next start erases it again from the erasure record).
    pub fn erase(&self, subject: &str) -> Result<Option<u64>, PrivacyError> {
        let mut slots = self.lock();
        self.check_writable()?;
        let Some(live) = slots.live.remove(subject) else {
            return Ok(None);
        };
        slots.by_id.remove(&live.key.id);
        if let Err(e) = self
            .file
            .write_all_at(&[0u8; SLOT_BYTES as usize], offset(live.slot))
        {
            return Err(self.poison("write", e));
        }
        if let Err(e) = self.file.sync_data() {
            return Err(self.poison("fsync", e));
        }
        slots.free.push(live.slot);
        Ok(Some(live.key.id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_writable(&self) -> Result<(), PrivacyError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(PrivacyError::Poisoned {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// A failed write or fsync: the file's state is unknown, so no change is made again
    /// until a restart reads it (an fsync is never retried).
    fn poison(&self, op: &'static str, source: std::io::Error) -> PrivacyError {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(path = %self.path.display(), op, error = %source, "key store failed; it refuses changes until restart");
        PrivacyError::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }
}

/// A store's header for `kek`: magic, format version, slot size, the KEK check, CRC32C.
fn header(kek: &MasterKey) -> [u8; HEADER_BYTES as usize] {
    let mut header = [0u8; HEADER_BYTES as usize];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(SLOT_BYTES as u32).to_le_bytes());
    header[16..48].copy_from_slice(&kek_check(kek));
    let crc = crc32c::crc32c(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Checks the header of the store `bytes` (read from `path`) against `kek`; returns the
/// slots after it.
fn check_header<'a>(
    bytes: &'a [u8],
    kek: &MasterKey,
    path: &Path,
) -> Result<&'a [u8], PrivacyError> {
    let header = bytes
        .get(..HEADER_BYTES as usize)
        .ok_or_else(|| corrupt(path, "shorter than its header".into()))?;
    let crc = u32::from_le_bytes([header[60], header[61], header[62], header[63]]);
    if &header[0..8] != MAGIC || crc32c::crc32c(&header[..60]) != crc {
        return Err(corrupt(
            path,
            "not a key store (magic or header checksum)".into(),
        ));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let slot_bytes = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if version != FORMAT_VERSION || u64::from(slot_bytes) != SLOT_BYTES {
        return Err(corrupt(
            path,
            format!(
                "format version {version} with {slot_bytes}-byte slots; this build reads version {FORMAT_VERSION}"
            ),
        ));
    }
    if header[16..48] != kek_check(kek) {
        return Err(PrivacyError::WrongMasterKey {
            from: kek.source.clone(),
            path: path.to_path_buf(),
        });
    }
    Ok(&bytes[HEADER_BYTES as usize..])
}

fn corrupt(path: &Path, reason: String) -> PrivacyError {
    PrivacyError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

/// What a slot on the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// 192 zero bytes: never used, or erased.
    Free,
    /// Neither free nor a whole live slot: a crash while a key was created, so no record
    /// used its key.
    Torn,
    /// A wrapped key whose CRC32C holds.
    Live,
}

fn slot_state(raw: &[u8]) -> SlotState {
    if raw.iter().all(|&b| b == 0) {
        return SlotState::Free;
    }
    let crc = u32::from_le_bytes([
        raw[CRC_AT],
        raw[CRC_AT + 1],
        raw[CRC_AT + 2],
        raw[CRC_AT + 3],
    ]);
    if raw[0] != SLOT_LIVE || crc32c::crc32c(&raw[..CRC_AT]) != crc {
        return SlotState::Torn;
    }
    SlotState::Live
}

/// What [`rotate`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rotation {
    /// Live data keys, now wrapped under the new master key.
    pub rewrapped: u64,
    /// Torn slots (a crash while a key was created: no record used them), now free.
    pub torn_cleared: u64,
}

/// Rotates the master key of the store at `path` from `old` to `new` (decision 0030): every
/// live data key unwrapped with `old` and wrapped again under `new` (a fresh nonce each),
/// keeping its id and slot, so every sealed value still finds its key; erased slots stay
/// zeros. The new store is written beside the old one, fsynced and renamed over it, then
/// the directory fsynced: after a crash the store is whole under one of the two keys. The
/// store must not be open elsewhere (the caller holds the data directory's lock).
///
/// Once `old` is destroyed, every copy of the old file that a medium may keep (a backup, a
/// snapshot, blocks a copy-on-write file system did not overwrite) is noise, and so is every
/// key erased before the rotation: the erasure delay on such copies is the rotation period.
///
/// # Errors
/// [`PrivacyError::WrongMasterKey`] when `old` does not open the store;
/// [`PrivacyError::MasterKey`] when `new` is `old`; [`PrivacyError::Corrupt`] (nothing
/// written); [`PrivacyError::Io`] and [`PrivacyError::Log`] (the replace's steps: the old
/// store is then still in place, or the new one whole).
pub fn rotate(path: &Path, old: &MasterKey, new: &MasterKey) -> Result<Rotation, PrivacyError> {
    if kek_check(old) == kek_check(new) {
        return Err(PrivacyError::MasterKey {
            from: new.source.clone(),
            reason: "it is the key the store is wrapped under already; give a new one".into(),
        });
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| PrivacyError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?);
    let body = check_header(&bytes, old, path)?;
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    out.extend_from_slice(&header(new));
    let mut rotation = Rotation::default();
    for (slot, raw) in body.chunks_exact(SLOT_BYTES as usize).enumerate() {
        match slot_state(raw) {
            SlotState::Free => out.extend_from_slice(&[0u8; SLOT_BYTES as usize]),
            SlotState::Torn => {
                rotation.torn_cleared += 1;
                out.extend_from_slice(&[0u8; SLOT_BYTES as usize]);
            }
            SlotState::Live => {
                let (subject, id, material) = unwrap_material(old, raw)
                    .map_err(|reason| corrupt(path, format!("slot {slot}: {reason}")))?;
                out.extend_from_slice(&wrap_slot(new, &subject, id, &material)?[..]);
                rotation.rewrapped += 1;
            }
        }
    }
    logbook_log::storage::replace_durably(&logbook_log::storage::OsStorage, path, &out)?;
    Ok(rotation)
}

fn offset(slot: u64) -> u64 {
    HEADER_BYTES + slot * SLOT_BYTES
}

/// The header's proof of the master key: 16 zero bytes encrypted under it with nonce 0.
fn kek_check(kek: &MasterKey) -> Vec<u8> {
    kek.cipher
        .encrypt(Nonce::from_slice(&[0u8; 12]), [0u8; 16].as_slice())
        .unwrap_or_default()
}

fn wrap_aad(subject: &[u8], key_id: u64) -> Vec<u8> {
    let mut aad = subject.to_vec();
    aad.extend_from_slice(&key_id.to_le_bytes());
    aad
}

/// A new random data key for `subject` and its slot's bytes.
fn new_slot(
    kek: &MasterKey,
    subject: &str,
) -> Result<(Zeroizing<[u8; SLOT_BYTES as usize]>, DataKey), PrivacyError> {
    let mut material = Zeroizing::new([0u8; DATA_KEY_BYTES]);
    let mut id = [0u8; 8];
    getrandom::getrandom(&mut material[..]).map_err(|e| PrivacyError::Random(e.to_string()))?;
    getrandom::getrandom(&mut id).map_err(|e| PrivacyError::Random(e.to_string()))?;
    let id = u64::from_le_bytes(id);
    let raw = wrap_slot(kek, subject, id, &material[..])?;
    Ok((raw, data_key(id, &material[..])))
}

/// A live slot's bytes: `material` (a data key) wrapped under `kek` with a fresh random
/// nonce, bound to `subject` and `id` by the AAD.
fn wrap_slot(
    kek: &MasterKey,
    subject: &str,
    id: u64,
    material: &[u8],
) -> Result<Zeroizing<[u8; SLOT_BYTES as usize]>, PrivacyError> {
    debug_assert_eq!(material.len(), DATA_KEY_BYTES);
    debug_assert!(!subject.is_empty() && subject.len() <= SUBJECT_BYTES_MAX);
    let mut wrap_nonce = [0u8; 12];
    getrandom::getrandom(&mut wrap_nonce).map_err(|e| PrivacyError::Random(e.to_string()))?;
    let wrapped = kek
        .cipher
        .encrypt(
            Nonce::from_slice(&wrap_nonce),
            Payload {
                msg: material,
                aad: &wrap_aad(subject.as_bytes(), id),
            },
        )
        .map_err(|_| PrivacyError::Random("key wrapping failed".into()))?;
    let mut raw = Zeroizing::new([0u8; SLOT_BYTES as usize]);
    raw[0] = SLOT_LIVE;
    raw[1] = subject.len() as u8;
    raw[SUBJECT_AT..SUBJECT_AT + subject.len()].copy_from_slice(subject.as_bytes());
    raw[KEY_ID_AT..KEY_ID_AT + 8].copy_from_slice(&id.to_le_bytes());
    raw[WRAP_NONCE_AT..WRAP_NONCE_AT + 12].copy_from_slice(&wrap_nonce);
    raw[WRAPPED_AT..WRAPPED_AT + WRAPPED_BYTES].copy_from_slice(&wrapped);
    let crc = crc32c::crc32c(&raw[..CRC_AT]);
    raw[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    Ok(raw)
}

/// A live slot's subject, key id and unwrapped data key.
fn unwrap_material(
    kek: &MasterKey,
    raw: &[u8],
) -> Result<(String, u64, Zeroizing<Vec<u8>>), String> {
    let len = usize::from(raw[1]);
    if len == 0 || len > SUBJECT_BYTES_MAX {
        return Err(format!("subject length {len}"));
    }
    let subject = &raw[SUBJECT_AT..SUBJECT_AT + len];
    let mut id = [0u8; 8];
    id.copy_from_slice(&raw[KEY_ID_AT..KEY_ID_AT + 8]);
    let id = u64::from_le_bytes(id);
    let material = Zeroizing::new(
        kek.cipher
            .decrypt(
                Nonce::from_slice(&raw[WRAP_NONCE_AT..WRAP_NONCE_AT + 12]),
                Payload {
                    msg: &raw[WRAPPED_AT..WRAPPED_AT + WRAPPED_BYTES],
                    aad: &wrap_aad(subject, id),
                },
            )
            .map_err(|_| "the wrapped key does not authenticate".to_string())?,
    );
    if material.len() != DATA_KEY_BYTES {
        return Err(format!("a data key of {} bytes", material.len()));
    }
    let subject = std::str::from_utf8(subject)
        .map_err(|_| "subject is not UTF-8".to_string())?
        .to_string();
    Ok((subject, id, material))
}

pub(super) fn data_key(id: u64, material: &[u8]) -> DataKey {
    let mut nonce_key = Zeroizing::new([0u8; 16]);
    nonce_key.copy_from_slice(&material[32..DATA_KEY_BYTES]);
    DataKey {
        id,
        cipher: Aes256GcmSiv::new((&material[..32]).into()),
        nonce_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::fields::{Revealed, reveal, seal};
    use logbook_log::PersonalData;
    use serde_json::json;

    fn kek(byte: char, name: &str) -> MasterKey {
        let hex: String = std::iter::repeat_n(byte, 64).collect();
        MasterKey::parse(&hex, name.into()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn declared() -> PersonalData {
        PersonalData {
            subject: "/user".into(),
            fields: vec!["/email".into()],
        }
    }

    /// `user`'s record sealed under `key`.
    fn sealed(user: &str, key: &DataKey) -> serde_json::Value {
        let mut v = json!({"user": user, "email": format!("{user}@example.org")});
        seal(&mut v, "s", &declared(), user, key).unwrap_or_else(|e| panic!("{e}"));
        v
    }

    fn revealed(v: &serde_json::Value, user: &str, key: Option<&DataKey>) -> Option<String> {
        match reveal(&v["email"], "s", "/email", user, key) {
            Some(Revealed::Plain(p)) => p.as_str().map(str::to_string),
            _ => None,
        }
    }

    #[test]
    fn rotation_rewraps_live_keys_keeps_erasures_and_refuses_the_old_master_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = KeyStore::path_in(dir.path());
        let store = KeyStore::create(&path, kek('a', "old")).unwrap_or_else(|e| panic!("{e}"));
        let keys = store
            .keys_for(&["ada", "bob", "cy"])
            .unwrap_or_else(|e| panic!("{e}"));
        let records: Vec<_> = ["ada", "bob", "cy"]
            .iter()
            .zip(&keys)
            .map(|(u, k)| sealed(u, k))
            .collect();
        assert_eq!(
            store.erase("bob").unwrap_or_else(|e| panic!("{e}")),
            Some(keys[1].id)
        );
        drop(store);

        let done =
            rotate(&path, &kek('a', "old"), &kek('b', "new")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            done,
            Rotation {
                rewrapped: 2,
                torn_cleared: 0
            }
        );

        match KeyStore::open(&path, kek('a', "old")) {
            Err(PrivacyError::WrongMasterKey { from, .. }) => assert_eq!(from, "old"),
            other => panic!("the old master key must no longer open the store: {other:?}"),
        }
        let store = KeyStore::open(&path, kek('b', "new")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.live_count(), 2);
        for (i, user) in ["ada", "cy"].iter().enumerate() {
            let idx = [0, 2][i];
            let key = store
                .key(user)
                .unwrap_or_else(|| panic!("{user} has no key"));
            assert_eq!(key.id, keys[idx].id, "a rotation keeps key ids");
            assert_eq!(
                revealed(&records[idx], user, Some(&key)),
                Some(format!("{user}@example.org")),
                "a record sealed before the rotation reads after it"
            );
        }
        assert!(store.key("bob").is_none(), "an erased key stays erased");
        assert!(store.key_by_id(keys[1].id).is_none());
    }

    #[test]
    fn rotation_refuses_a_wrong_or_same_master_key_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = KeyStore::path_in(dir.path());
        let store = KeyStore::create(&path, kek('a', "old")).unwrap_or_else(|e| panic!("{e}"));
        store.keys_for(&["ada"]).unwrap_or_else(|e| panic!("{e}"));
        drop(store);
        let before = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        match rotate(&path, &kek('c', "wrong"), &kek('b', "new")) {
            Err(PrivacyError::WrongMasterKey { from, .. }) => assert_eq!(from, "wrong"),
            other => panic!("a wrong old key must be refused: {other:?}"),
        }
        match rotate(&path, &kek('a', "old"), &kek('a', "same")) {
            Err(PrivacyError::MasterKey { from, .. }) => assert_eq!(from, "same"),
            other => panic!("the same key must be refused: {other:?}"),
        }
        assert_eq!(
            std::fs::read(&path).unwrap_or_else(|e| panic!("{e}")),
            before
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names.len(), 1, "no file left beside the store: {names:?}");
    }

    #[test]
    fn rotation_clears_a_torn_slot_and_keeps_slot_positions() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = KeyStore::path_in(dir.path());
        let store = KeyStore::create(&path, kek('a', "old")).unwrap_or_else(|e| panic!("{e}"));
        store
            .keys_for(&["ada", "bob"])
            .unwrap_or_else(|e| panic!("{e}"));
        drop(store);
        // Tear slot 0 (as a crash in the middle of its write would): flip a byte.
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        file.write_all_at(&[0xFF], offset(0) + 40)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(file);
        let done =
            rotate(&path, &kek('a', "old"), &kek('b', "new")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            done,
            Rotation {
                rewrapped: 1,
                torn_cleared: 1
            }
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bytes.len() as u64, offset(2), "two slots, as before");
        assert!(
            bytes[offset(0) as usize..offset(1) as usize]
                .iter()
                .all(|&b| b == 0)
        );
        let store = KeyStore::open(&path, kek('b', "new")).unwrap_or_else(|e| panic!("{e}"));
        assert!(store.key("ada").is_none());
        assert!(store.key("bob").is_some());
    }
}
