//! A Logbook server in this process, for benchmarks that load it over HTTP from a load
//! generator on another runtime: its own tokio runtime, a loopback port, a graceful stop.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::Method;
use logbook_api::paths;
use logbook_server::{AppState, Server, ServerConfig, ServerError};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::conn::Conn;

/// A running server; [`BenchServer::stop`] shuts it down (dropping it without does too, less
/// gracefully: the runtime's tasks are cancelled).
pub(crate) struct BenchServer {
    runtime: Runtime,
    addr: SocketAddr,
    state: AppState,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<Result<(), ServerError>>,
}

impl BenchServer {
    /// Binds a server on `127.0.0.1:0` over `data_dir` with `threads` runtime workers and
    /// request and connection limits far above any benchmark's load — the node's and the
    /// per-principal and per-address quotas alike, since one load generator is one principal
    /// at one address; `config` sets the rest.
    pub(crate) fn start(
        data_dir: &Path,
        threads: usize,
        config: ServerConfig,
    ) -> anyhow::Result<BenchServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(logbook_server::limits::BLOCKING_THREADS_MAX)
            .thread_name("bench-server")
            .enable_all()
            .build()
            .context("starting the server runtime")?;
        let config = ServerConfig {
            data_dir: data_dir.to_path_buf(),
            listen: "127.0.0.1:0".into(),
            requests_max: 8192,
            connections_max: 8192,
            requests_per_principal_max: 8192,
            connections_per_client_max: 8192,
            connections_per_principal_max: 8192,
            ..config
        };
        let server = runtime.block_on(Server::bind(config))?;
        let addr = server.local_addr().context("reading the bound address")?;
        let state = server.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = runtime.spawn(server.run(async {
            let _ = stopped.await;
        }));
        Ok(BenchServer {
            runtime,
            addr,
            state,
            stop,
            serving,
        })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's state, for benchmarks that read its counters beside the load.
    pub(crate) fn state(&self) -> &AppState {
        &self.state
    }

    /// Shuts the server down (draining its requests, closing the log); a failure is a
    /// warning on stderr, since the figures are already measured.
    pub(crate) fn stop(self) {
        // The state holds the log open: the shutdown closes it only once this copy is gone.
        drop(self.state);
        let _ = self.stop.send(());
        match self.runtime.block_on(self.serving) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: server shut down with an error: {e}"),
            Err(e) => eprintln!("warning: server task failed: {e}"),
        }
    }
}

/// Waits until the server at `addr` answers health with 200 (it opens its data directory
/// first), for at most `within`.
pub(crate) async fn wait_ready(addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
    wait_ready_over(addr, within, None).await
}

/// [`wait_ready`] over TLS when `tls` is given.
pub(crate) async fn wait_ready_over(
    addr: SocketAddr,
    within: Duration,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<()> {
    let mut conn = Conn::open_with(addr, None, tls).await?;
    let deadline = Instant::now() + within;
    loop {
        let (status, _) = conn.call(Method::GET, &paths::health(), None).await?;
        if status == 200 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the server did not become ready in {} s", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
