//! The data directory's hash key: a secret that keys the hash indexes built from
//! client-chosen strings (the request-id index), so that colliding ids cannot be computed
//! ahead of time (hash flooding, or a crafted id that the index takes for another's).
//!
//! ```text
//!  <data-dir>/hash.key   32 bytes, mode 0600, written once (fsynced) when the log is created
//!                        or first opened by a binary that keys its indexes
//!  id ──SipHash-2-4-128(key)──▶ 128-bit share key  (the request-id index's identity and bucket)
//! ```
//!
//! The key is 128 random bits from the operating system's generator. It never leaves the
//! data directory and is never logged; a copy of the directory (a backup) carries it, so a
//! restored directory reads its own checkpoints. SipHash (Aumasson & Bernstein, 2012) is a
//! keyed pseudo-random function built for exactly this; the 128-bit variant gives the
//! index's identity the same width as the unkeyed XXH3-128 it replaces
//! (docs/decisions/0012-keyed-hash-indexes.md).

use std::hash::Hasher;
use std::path::Path;

use siphasher::sip128::{Hasher128, SipHasher24};

use crate::error::{LogError, Result};
use crate::storage::{Storage, replace_durably};

/// The file's name in the data directory.
pub const HASH_KEY_FILE: &str = "hash.key";
const MAGIC: [u8; 8] = *b"LBK-KEY\n";
const VERSION: u32 = 1;
/// magic, version, key, crc32c.
const FILE_BYTES: usize = 8 + 4 + 16 + 4;

/// A data directory's hash key (see the module docs). `Debug` does not show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashKey([u8; 16]);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    /// A key from its 16 bytes (tests and tools; the log reads its own from the directory).
    pub const fn from_bytes(bytes: [u8; 16]) -> HashKey {
        HashKey(bytes)
    }

    /// A new key of 128 bits from the operating system's generator, for an index kept only
    /// in memory (a cluster node's request-id index, rebuilt from the replicated log at start).
    ///
    /// # Errors
    /// When the operating system has no randomness to give.
    pub fn random() -> std::io::Result<HashKey> {
        let mut key = [0u8; 16];
        getrandom::getrandom(&mut key).map_err(std::io::Error::other)?;
        Ok(HashKey(key))
    }

    /// SipHash-2-4 with 128-bit output of `parts` under this key, each part
    /// length-prefixed (so `("ab", "c")` and `("a", "bc")` differ).
    pub fn hash128(&self, parts: &[&[u8]]) -> [u64; 2] {
        let mut h = SipHasher24::new_with_key(&self.0);
        for part in parts {
            h.write_u64(part.len() as u64);
            h.write(part);
        }
        let v = h.finish128();
        [v.h1, v.h2]
    }

    /// A short check value of the key (not the key: a hash under it of a fixed text), stored
    /// beside what was hashed with it so that a key that changed is noticed.
    pub fn check_value(&self) -> u64 {
        self.hash128(&[b"logbook hash key check"])[0]
    }

    /// Reads the key of the data directory `dir`, creating it (128 bits from the OS
    /// generator, written to a temporary file, fsynced, renamed, directory fsynced) if the
    /// directory has none yet.
    ///
    /// # Errors
    /// [`LogError::Corrupt`] for a key file of the wrong size, magic, version or checksum;
    /// [`LogError::Io`] when it cannot be read or written, or the OS has no randomness.
    pub fn load_or_create(storage: &dyn Storage, dir: &Path) -> Result<HashKey> {
        let path = dir.join(HASH_KEY_FILE);
        match crate::segment::read_whole(storage, &path) {
            Ok(bytes) => decode(&bytes).ok_or_else(|| LogError::Corrupt {
                path,
                file_offset: 0,
                reason: format!(
                    "{HASH_KEY_FILE} is not a Logbook hash key ({} bytes; expected {FILE_BYTES} \
                     with a valid checksum)",
                    bytes.len()
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(storage, dir),
            Err(e) => Err(LogError::io("read", path, e)),
        }
    }
}

fn decode(b: &[u8]) -> Option<HashKey> {
    if b.len() != FILE_BYTES || b[..8] != MAGIC {
        return None;
    }
    let (body, crc) = b.split_at(FILE_BYTES - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    if u32::from_le_bytes(body[8..12].try_into().ok()?) != VERSION {
        return None;
    }
    Some(HashKey(body[12..28].try_into().ok()?))
}

fn create(storage: &dyn Storage, dir: &Path) -> Result<HashKey> {
    let HashKey(key) =
        HashKey::random().map_err(|e| LogError::io("read the OS random generator", dir, e))?;
    let mut bytes = Vec::with_capacity(FILE_BYTES);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&key);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    replace_durably(storage, &dir.join(HASH_KEY_FILE), &bytes)?;
    Ok(HashKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;
    use crate::storage::OpenMode;

    #[test]
    fn created_once_then_read_back_and_damage_is_refused() {
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new("/a")).unwrap();
        sim.create_dir_all(Path::new("/b")).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        let a = HashKey::load_or_create(&sim, Path::new("/a")).unwrap();
        let b = HashKey::load_or_create(&sim, Path::new("/b")).unwrap();
        assert_ne!(a, b, "two directories draw two keys");
        assert_eq!(HashKey::load_or_create(&sim, Path::new("/a")).unwrap(), a);
        // Durable: a power loss right after keeps it.
        sim.power_loss();
        assert_eq!(HashKey::load_or_create(&sim, Path::new("/a")).unwrap(), a);
        assert_ne!(a.hash128(&[b"id"]), b.hash128(&[b"id"]));
        assert_ne!(a.hash128(&[b"ab", b"c"]), a.hash128(&[b"a", b"bc"]));
        assert_eq!(format!("{a:?}"), "HashKey(..)");

        let path = Path::new("/a").join(HASH_KEY_FILE);
        sim.remove_file(&path).unwrap();
        let f = sim.open(&path, OpenMode::CreateNew).unwrap();
        f.write_at(&[0u8; FILE_BYTES], 0).unwrap();
        assert!(matches!(
            HashKey::load_or_create(&sim, Path::new("/a")),
            Err(LogError::Corrupt { .. })
        ));
    }
}
