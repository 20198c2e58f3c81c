//! Files the CLI writes that hold secrets or personal data: created private (mode 0600),
//! never over an existing file, synced before the command reports success.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;

/// Creates `path` (mode 0600, failing if it exists) holding `bytes`, synced.
///
/// # Errors
/// The file exists (it is not overwritten: the message says so), or creating, writing or
/// syncing it failed.
pub fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing file is not overwritten: remove it or choose \
                 another --out)",
                path.display()
            )
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_new_file_is_private_and_an_existing_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_new(&path, b"one").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let refused = write_new(&path, b"two").unwrap_err();
        assert!(
            format!("{refused:#}").contains("not overwritten"),
            "{refused:#}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
    }
}
