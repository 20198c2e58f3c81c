//! `logbook tls self-signed`: a certificate and key for development, so `logbook serve` can
//! speak HTTPS without a CA. The certificate is its own CA: clients trust it with
//! `--ca-cert DIR/cert.pem` (or `LOGBOOK_CA_CERT`).
//!
//! Not for production: anyone who has the key can impersonate every name in it, and nothing
//! revokes it. Use certificates from your CA there.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::private_file;

/// The certificate file written into `--out`.
pub const CERT_FILE: &str = "cert.pem";
/// The private key file written into `--out` (mode 0600).
pub const KEY_FILE: &str = "key.pem";
/// The names a certificate gets when `--name` is not given.
const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// TLS certificates for `logbook serve`.
#[derive(Debug, clap::Subcommand)]
pub enum TlsCommand {
    /// Make a self-signed certificate and its key for development: DIR/cert.pem and
    /// DIR/key.pem (0600). Serve with `logbook serve --tls-cert DIR/cert.pem --tls-key
    /// DIR/key.pem`; clients trust it with `--ca-cert DIR/cert.pem`.
    SelfSigned {
        /// The directory to write into (created 0700 if missing). Existing files are not
        /// overwritten.
        #[arg(long)]
        out: PathBuf,
        /// A host name or IP address the certificate is valid for (repeat for several).
        /// Default: localhost, 127.0.0.1 and ::1.
        #[arg(long = "name")]
        names: Vec<String>,
    },
}

/// Runs a `tls` command.
pub fn run(cmd: TlsCommand) -> anyhow::Result<()> {
    match cmd {
        TlsCommand::SelfSigned { out, names } => {
            let names = if names.is_empty() {
                DEFAULT_NAMES.iter().map(|n| (*n).to_string()).collect()
            } else {
                names
            };
            let (cert, key) = self_signed(&out, &names)?;
            outln!(
                "certificate: {} (names: {})",
                cert.display(),
                names.join(", ")
            );
            outln!("private key: {} (mode 0600)", key.display());
            outln!(
                "serve:   logbook serve --tls-cert {} --tls-key {}",
                cert.display(),
                key.display()
            );
            outln!(
                "clients: LOGBOOK_CA_CERT={} logbook ... --server https://HOST:PORT",
                cert.display()
            );
            Ok(())
        }
    }
}

/// Writes a self-signed certificate for `names` and its key into `dir`; their paths.
///
/// # Errors
/// A name that cannot go into a certificate, a file that exists already, or an I/O error.
pub fn self_signed(dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let made = rcgen::generate_simple_self_signed(names.to_vec())
        .context("making the certificate (--name must be host names or IP addresses)")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    // The key first: a certificate without its key is useless, a key alone is harmless
    // to retry around (both refuse to overwrite).
    private_file::write_new(&key, made.signing_key.serialize_pem().as_bytes())?;
    private_file::write_new(&cert, made.cert.pem().as_bytes())?;
    Ok((cert, key))
}
