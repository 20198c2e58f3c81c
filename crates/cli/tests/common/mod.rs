//! What the end-to-end tests share: a real `logbook serve` on a free port, killed when the
//! test ends on any path and ready before the test talks to it; requests through the Rust
//! client ([`api`]); raw HTTP/1.1 on a socket for the tests about the wire itself ([`wire`]).
//!
//! `LOGBOOK_TEST_BIN=/path/to/logbook` starts that server instead of this build's (say the
//! previous main's, to see a test fail there).
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers (`expect` would be unfulfilled where one uses them all)"
)]
#![expect(
    clippy::unwrap_used,
    reason = "helpers, like tests, fail loudly on an unexpected error"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logbook_api::client::blocking::Client;

pub mod api;
pub mod derived;
pub mod wire;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_logbook");

/// The server binary: `LOGBOOK_TEST_BIN` if set, else [`BIN`].
pub fn bin() -> String {
    std::env::var("LOGBOOK_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// Longest wait for a server to open its data directory and answer ready.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Longest wait for a server to exit after SIGTERM.
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// A running `logbook serve`, SIGKILLed when dropped (on every path out of a test).
pub struct Serve {
    /// The server process.
    pub child: Child,
    /// `http://HOST:PORT`, or `https://HOST:PORT` for a server started with TLS.
    pub base: String,
    /// The admin token the server wrote to its data directory (authentication is on by
    /// default): every helper here sends it.
    pub token: Option<String>,
    /// For an `https://` server: the CA file its certificate is checked against (every
    /// client helper here trusts it).
    pub ca_cert: Option<PathBuf>,
}

impl Serve {
    /// `HOST:PORT`.
    pub fn addr(&self) -> &str {
        let base = self.base.trim_start_matches("http://");
        base.trim_start_matches("https://")
    }

    /// A client of this server making one attempt per request ([`api::client`]), sending
    /// the admin token.
    pub fn client(&self) -> Client {
        let options = api::options(self.token.as_deref(), self.ca_cert.as_deref());
        Client::with_options(&self.base, &options).unwrap()
    }

    /// The options of a client with the default settings (retries included) sending the
    /// admin token and trusting the server's CA.
    fn default_options(&self) -> logbook_api::client::ClientOptions {
        logbook_api::client::ClientOptions {
            config: logbook_api::client::ClientConfig::default(),
            bearer_token: self.token.clone(),
            ca_cert_pem: self.ca_cert.as_ref().map(|p| std::fs::read(p).unwrap()),
        }
    }

    /// The blocking Rust client of this server with its default settings (retries
    /// included), sending the admin token.
    pub fn default_client(&self) -> Client {
        Client::with_options(&self.base, &self.default_options()).unwrap()
    }

    /// The async Rust client of this server with its default settings, sending the admin
    /// token.
    pub fn async_client(&self) -> logbook_api::client::Client {
        logbook_api::client::Client::with_options(&self.base, &self.default_options()).unwrap()
    }

    /// The admin token's `Authorization` header value (`Bearer lb_…`), for raw requests.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token.as_deref().unwrap_or_default())
    }

    /// The environment a `logbook` client command needs to act as the admin on this
    /// server: `LOGBOOK_SERVER` and `LOGBOOK_TOKEN`.
    pub fn cli_env(&self) -> [(&'static str, String); 2] {
        [
            ("LOGBOOK_SERVER", self.base.clone()),
            ("LOGBOOK_TOKEN", self.token.clone().unwrap_or_default()),
        ]
    }

    /// Returns once a request other than this look is in flight on the server (no timing:
    /// its metric of requests in flight says so); panics after 30 s.
    pub fn until_a_request_is_in_flight(&self) {
        self.until_requests_in_flight(1);
    }

    /// Waits (bounded) until at least `n` requests are in flight on the server, long polls
    /// included (its metric says so; read on a connection of its own).
    pub fn until_requests_in_flight(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let bearer = self.bearer();
            let auth = [("authorization", bearer.as_str())];
            let metrics = wire::one(self.addr(), "GET", "/metrics", &auth, b"").body;
            let in_flight = metrics.lines().find_map(|l| {
                let value = l.strip_prefix("logbook_http_requests_in_flight ")?;
                value.trim().parse::<u64>().ok()
            });
            if in_flight.is_some_and(|v| v >= n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} requests never got in flight"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit; its code (-1 for a signal).
    pub fn terminate(&mut self) -> i32 {
        self.sigterm();
        self.wait_exit()
    }

    /// Sends SIGTERM (the server begins its graceful shutdown) without waiting for the exit.
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits (bounded) for the process to exit on its own; its code (-1 for a signal).
    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.base);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `logbook serve --listen 127.0.0.1:0 --data-dir DATA EXTRA…` with `envs` set and
/// stderr sent to `stderr`, learns its address from its first stdout line (`listening on
/// http://HOST:PORT`) and waits until `GET /v1/health` answers ready (it is not while the
/// data directory opens).
pub fn spawn_serve(data: &Path, extra: &[&str], envs: &[(&str, &str)], stderr: Stdio) -> Serve {
    spawn_serve_trusting(data, extra, envs, stderr, None)
}

/// [`spawn_serve`] of a server whose `https://` certificate is checked against `ca_cert`
/// (pass `--tls-cert` and `--tls-key` in `extra`).
pub fn spawn_serve_trusting(
    data: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
    stderr: Stdio,
    ca_cert: Option<&Path>,
) -> Serve {
    spawn_listening("127.0.0.1:0", data, extra, envs, stderr, ca_cert)
}

/// [`spawn_serve`] listening on `addr` (`HOST:PORT`): a server restarted where its clients
/// know it.
pub fn spawn_serve_at(addr: &str, data: &Path, extra: &[&str], stderr: Stdio) -> Serve {
    spawn_listening(addr, data, extra, &[], stderr, None)
}

fn spawn_listening(
    listen: &str,
    data: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
    stderr: Stdio,
    ca_cert: Option<&Path>,
) -> Serve {
    let mut child = Command::new(bin())
        .args(["serve", "--listen", listen, "--data-dir"])
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
    let mut serve = Serve {
        child,
        base,
        token: None,
        ca_cert: ca_cert.map(Path::to_path_buf),
    };
    wait_ready(&mut serve);
    serve.token = admin_token(data);
    serve
}

/// Polls `GET /v1/health` (one attempt each, no client retries) until it answers 200.
fn wait_ready(serve: &mut Serve) {
    let options = api::options(None, serve.ca_cert.as_deref());
    let client = Client::with_options(&serve.base, &options).unwrap();
    let deadline = Instant::now() + READY_WAIT;
    while client.health().is_err() {
        if let Some(exit) = serve.child.try_wait().unwrap() {
            panic!("the server at {} exited while opening: {exit}", serve.base);
        }
        assert!(
            Instant::now() < deadline,
            "the server at {} never became ready",
            serve.base
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The admin token a server wrote to its data directory on first start (`admin.token`),
/// if there is one: how every test authenticates as the administrator.
pub fn admin_token(data: &Path) -> Option<String> {
    std::fs::read_to_string(data.join("admin.token"))
        .ok()
        .map(|t| t.trim().to_string())
}
