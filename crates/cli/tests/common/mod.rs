//! What the end-to-end tests share: starting a real `logbook serve` on a free port.
#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_logbook");

/// Starts `logbook serve --listen 127.0.0.1:0 --data-dir DATA EXTRA…` with `envs` set and
/// stderr sent to `stderr`; returns the child and the base URL from its first stdout line
/// (`listening on http://HOST:PORT`). The caller waits for readiness (its own way).
pub fn spawn_serve(
    data: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
    stderr: Stdio,
) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .envs(envs.iter().copied())
        .env_remove("LOGBOOK_CONFIG")
        .env_remove("LOGBOOK_LISTEN")
        .env_remove("LOGBOOK_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, base)
}
