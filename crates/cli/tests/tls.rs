//! HTTPS through the real binary (issue 17, item 3): `logbook tls self-signed` makes a
//! development pair, `logbook serve --tls-cert --tls-key` serves it, and the CLI and the
//! Rust client talk to it with `--ca-cert`; a client trusting another CA is refused with an
//! error that says so; plain HTTP sent to the TLS port is answered with a problem naming
//! `https://`, and neither it nor a silent connection holds the server up.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic with a message is the failure report"
)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use logbook_api::client::ClientError;
use logbook_api::client::blocking::Client;
use logbook_api::paths;
use logbook_api::streams::{CreateStream, RecordIn};
use serde_json::json;

mod common;
use common::{BIN, Serve, wire};

/// `logbook tls self-signed --out DIR`: the certificate and key files.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let out = Command::new(BIN)
        .args(["tls", "self-signed", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("--ca-cert") || printed.contains("LOGBOOK_CA_CERT"),
        "{printed}"
    );
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// A server with TLS on a fresh data directory, trusted by the helpers' clients.
fn serve_tls(data: &Path, cert: &Path, key: &Path) -> Serve {
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let extra = ["--tls-cert", cert, "--tls-key", key];
    let serve =
        common::spawn_serve_trusting(data, &extra, &[], Stdio::null(), Some(Path::new(cert)));
    assert!(
        serve.base.starts_with("https://127.0.0.1:"),
        "{}",
        serve.base
    );
    serve
}

/// A `logbook` client command against `serve` as the admin, trusting `ca`.
fn cli(serve: &Serve, ca: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(serve.cli_env())
        .env("LOGBOOK_CA_CERT", ca)
        .env_remove("LOGBOOK_DATA_DIR")
        .output()
        .unwrap()
}

#[test]
fn self_signed_pair_is_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let (cert, key) = self_signed(&out);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600, "the private key is the owner's alone");
    assert_eq!(mode(&out), 0o700);
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let key_before = std::fs::read(&key).unwrap();
    // A second run refuses to replace the pair (a server may be using it).
    let again = Command::new(BIN)
        .args(["tls", "self-signed", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("not overwritten"), "{stderr}");
    assert_eq!(std::fs::read(&key).unwrap(), key_before);
}

#[test]
fn the_cli_and_the_rust_client_work_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(&dir.path().join("tls"));
    let serve = serve_tls(&dir.path().join("data"), &cert, &key);

    // The Rust client (blocking, over the async one) with the CA file.
    let client = serve.client();
    client
        .create_stream("orders", &CreateStream::default())
        .unwrap();
    let at = client
        .append("orders", RecordIn::new(json!({"total": 12})).key("o-1"))
        .unwrap();
    assert_eq!(at.offset, 0);

    // The CLI: append and read back through https:// with LOGBOOK_CA_CERT.
    let appended = cli(
        &serve,
        &cert,
        &[
            "stream",
            "append",
            "orders",
            "--key",
            "o-2",
            "--value",
            r#"{"total": 5}"#,
        ],
    );
    assert!(appended.status.success(), "{appended:?}");
    let read = cli(
        &serve,
        &cert,
        &["stream", "tail", "orders", "--from", "0", "--json"],
    );
    assert!(read.status.success(), "{read:?}");
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(
        text.contains("\"o-1\"") && text.contains("\"o-2\""),
        "{text}"
    );

    // The push tail (server-sent events on a connection of its own) over TLS too: its
    // first line is the first record; then it is stopped.
    let mut follow = Command::new(BIN)
        .args([
            "stream", "tail", "orders", "--from", "0", "--follow", "--json",
        ])
        .envs(serve.cli_env())
        .env("LOGBOOK_CA_CERT", &cert)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(follow.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(first.contains("\"o-1\""), "{first:?}");
}

#[test]
fn a_client_trusting_another_ca_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(&dir.path().join("tls"));
    let (other_ca, _) = self_signed(&dir.path().join("other"));
    let serve = serve_tls(&dir.path().join("data"), &cert, &key);

    let options = common::api::options(serve.token.as_deref(), Some(&other_ca));
    let client = Client::with_options(&serve.base, &options).unwrap();
    match client.health() {
        Err(ClientError::Tls { detail, .. }) => {
            assert!(detail.contains("not signed by a CA"), "{detail}");
        }
        other => panic!("expected a TLS refusal, got {other:?}"),
    }

    let refused = cli(&serve, &other_ca, &["stream", "list"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("TLS failed") && stderr.contains("--ca-cert"),
        "{stderr}"
    );

    // A plain http:// client of the TLS port hears the server's problem naming https://.
    let plain = common::api::client(&format!("http://{}", serve.addr()));
    let problem = plain.health().err().unwrap();
    let problem = problem.problem().unwrap();
    assert_eq!(
        (problem.status, problem.field.as_deref()),
        (400, Some("scheme"))
    );
    assert!(problem.detail.contains("https://"), "{}", problem.detail);
}

#[test]
fn plain_http_and_silent_connections_do_not_hold_up_a_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(&dir.path().join("tls"));
    let serve = serve_tls(&dir.path().join("data"), &cert, &key);

    // A connection that says nothing, and one that sends bytes that are neither TLS nor
    // HTTP, stay open while a TLS client is served.
    let _silent = std::net::TcpStream::connect(serve.addr()).unwrap();
    let mut garbage = std::net::TcpStream::connect(serve.addr()).unwrap();
    garbage.write_all(&[0x00, 0xff, 0x10, 0x20]).unwrap();
    // Plain HTTP is answered in plain text: 400, naming the scheme.
    let answer = wire::one(
        serve.addr(),
        "GET",
        &paths::health(),
        &[("host", "localhost")],
        b"",
    );
    answer.assert_problem(400, "invalid_request");
    assert_eq!(answer.json()["field"], "scheme");
    assert!(serve.client().health().is_ok());
    // The garbage connection was closed by the server (EOF or a reset, not a hang).
    garbage
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    match garbage.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "the server answered bytes to garbage"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the server did not close the connection: {e}"
        ),
    }

    // An https:// client of a plain server learns that TLS failed, not that it is down.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = common::spawn_serve(plain_dir.path(), &[], &[], Stdio::null());
    let options = common::api::options(None, Some(&cert));
    let https = Client::with_options(&format!("https://{}", plain.addr()), &options).unwrap();
    match https.health() {
        Err(ClientError::Tls { detail, .. }) => {
            assert!(detail.contains("plain http://"), "{detail}");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}
