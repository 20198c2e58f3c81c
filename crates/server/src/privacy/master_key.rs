//! The master key: the key-encryption key (KEK) that wraps every data key in the key store
//! (decision 0030). 32 bytes written as 64 hex digits, read from the file `master_key_file`
//! (mode 0600 or narrower) or, when none is configured, the environment variable
//! [`MASTER_KEY_ENV`]. It never lives in the data directory: a copy of the data directory
//! alone (a backup, a stolen disk) cannot decrypt a personal field.

use std::path::Path;

use aes_gcm_siv::{Aes256GcmSiv, KeyInit};
use zeroize::Zeroizing;

use super::PrivacyError;

/// The environment variable holding the master key when no `master_key_file` is set.
pub const MASTER_KEY_ENV: &str = "LOGBOOK_MASTER_KEY";

/// A loaded master key and where it came from (named in errors).
pub struct MasterKey {
    pub(super) cipher: Aes256GcmSiv,
    /// `master_key_file /path` or `LOGBOOK_MASTER_KEY`.
    pub(super) source: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.source)
    }
}

impl MasterKey {
    /// The master key from `file` when given, else from [`MASTER_KEY_ENV`]; `None` when
    /// neither is set (the server then keeps no personal data).
    ///
    /// # Errors
    /// [`PrivacyError::MasterKey`]: the file cannot be read, is readable by others, or
    /// does not hold 64 hex digits.
    pub fn load(file: Option<&Path>) -> Result<Option<MasterKey>, PrivacyError> {
        if let Some(path) = file {
            let source = format!("master_key_file {}", path.display());
            let bad = |reason: String| PrivacyError::MasterKey {
                from: source.clone(),
                reason,
            };
            let text =
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
            check_private(path).map_err(bad)?;
            return Ok(Some(MasterKey::parse(text.trim(), source)?));
        }
        match std::env::var(MASTER_KEY_ENV) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                Ok(Some(MasterKey::parse(
                    text.trim(),
                    MASTER_KEY_ENV.to_string(),
                )?))
            }
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(PrivacyError::MasterKey {
                from: MASTER_KEY_ENV.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// A master key from its 64 hex digits.
    ///
    /// # Errors
    /// [`PrivacyError::MasterKey`] naming `source` when `hex` is not 64 hex digits.
    pub fn parse(hex: &str, source: String) -> Result<MasterKey, PrivacyError> {
        let mut key = Zeroizing::new([0u8; 32]);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PrivacyError::MasterKey {
                from: source,
                reason: "expected 64 hex digits (32 bytes; e.g. `openssl rand -hex 32`)".into(),
            });
        }
        for (i, byte) in key.iter_mut().enumerate() {
            let pair = &hex[2 * i..2 * i + 2];
            *byte = u8::from_str_radix(pair, 16).map_err(|e| PrivacyError::MasterKey {
                from: source.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(MasterKey {
            cipher: Aes256GcmSiv::new((&key[..]).into()),
            source,
        })
    }
}

/// A key file readable by group or others is refused: the key would protect nothing.
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {:o} lets others read it; chmod 600 it",
            mode & 0o777
        ));
    }
    Ok(())
}
