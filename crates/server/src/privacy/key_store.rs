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
        let mut header = [0u8; HEADER_BYTES as usize];
        header[0..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&(SLOT_BYTES as u32).to_le_bytes());
        header[16..48].copy_from_slice(&kek_check(&kek));
        let crc = crc32c::crc32c(&header[..60]);
        header[60..64].copy_from_slice(&crc.to_le_bytes());
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
        let corrupt = |reason: String| PrivacyError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("open"))?;
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io("read"))?);
        let header = bytes
            .get(..HEADER_BYTES as usize)
            .ok_or_else(|| corrupt("shorter than its header".into()))?;
        let crc = u32::from_le_bytes([header[60], header[61], header[62], header[63]]);
        if &header[0..8] != MAGIC || crc32c::crc32c(&header[..60]) != crc {
            return Err(corrupt("not a key store (magic or header checksum)".into()));
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let slot_bytes = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        if version != FORMAT_VERSION || u64::from(slot_bytes) != SLOT_BYTES {
            return Err(corrupt(format!(
                "format version {version} with {slot_bytes}-byte slots; this build reads version {FORMAT_VERSION}"
            )));
        }
        if header[16..48] != kek_check(&kek) {
            return Err(PrivacyError::WrongMasterKey {
                from: kek.source.clone(),
                path: path.to_path_buf(),
            });
        }
        let mut slots = Slots::default();
        let body = &bytes[HEADER_BYTES as usize..];
        slots.count = (body.len() as u64) / SLOT_BYTES;
        for (i, raw) in body.chunks_exact(SLOT_BYTES as usize).enumerate() {
            let slot = i as u64;
            if raw.iter().all(|&b| b == 0) {
                slots.free.push(slot);
                continue;
            }
            let crc = u32::from_le_bytes([
                raw[CRC_AT],
                raw[CRC_AT + 1],
                raw[CRC_AT + 2],
                raw[CRC_AT + 3],
            ]);
            if raw[0] != SLOT_LIVE || crc32c::crc32c(&raw[..CRC_AT]) != crc {
                tracing::warn!(path = %path.display(), slot, "key store slot torn (a crash while a key was created); left unused");
                continue;
            }
            let (subject, key) = unwrap_slot(&kek, raw)
                .map_err(|reason| corrupt(format!("slot {slot}: {reason}")))?;
            slots.by_id.insert(key.id, subject.clone());
            slots.live.insert(
                subject,
                Live {
                    slot,
                    key: Arc::new(key),
                },
            );
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
    let mut wrap_nonce = [0u8; 12];
    for buf in [&mut material[..], &mut id[..], &mut wrap_nonce[..]] {
        getrandom::getrandom(buf).map_err(|e| PrivacyError::Random(e.to_string()))?;
    }
    let id = u64::from_le_bytes(id);
    let wrapped = kek
        .cipher
        .encrypt(
            Nonce::from_slice(&wrap_nonce),
            Payload {
                msg: &material[..],
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
    Ok((raw, data_key(id, &material[..])))
}

/// A live slot's subject and key.
fn unwrap_slot(kek: &MasterKey, raw: &[u8]) -> Result<(String, DataKey), String> {
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
    let subject = std::str::from_utf8(subject)
        .map_err(|_| "subject is not UTF-8".to_string())?
        .to_string();
    Ok((subject, data_key(id, &material[..])))
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
