//! A keep-alive HTTP/1.1 connection for benchmark setup calls and closed-loop clients that
//! wait for each answer, and for subscriptions to server-sent events (the pipelined load
//! generator of `bench http` has its own).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;

/// One HTTP/1.1 keep-alive connection (setup calls here; the TPC-B clients of
/// `bench tpcb --over http`).
pub(crate) struct Conn {
    host: String,
    sender: SendRequest<String>,
    /// `Bearer <token>`, sent with every request when given.
    authorization: Option<String>,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        Conn::open_as(addr, None).await
    }

    /// A connection whose requests carry `token` as a bearer token.
    pub(crate) async fn open_as(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<Conn> {
        Conn::open_with(addr, token, None).await
    }

    /// A connection whose requests carry `token` as a bearer token, over TLS when `tls` is
    /// given (the certificate must name `addr`'s IP address).
    pub(crate) async fn open_with(
        addr: SocketAddr,
        token: Option<&str>,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> anyhow::Result<Conn> {
        let io = crate::bench::net::connect(&addr.to_string(), tls).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            host: addr.to_string(),
            sender,
            authorization: token.map(|t| format!("Bearer {t}")),
        })
    }

    /// Sends one request; the status and the body.
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        self.call_with(method, path, body, &[]).await
    }

    /// Sends one request with extra `headers` (name, value); the status and the body.
    pub(crate) async fn call_with(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let resp = self.send_with(method, path, body, headers).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes.to_vec()))
    }

    /// Sends a GET and returns once the answer's head arrived: the status and the body, to
    /// be read as it comes (a stream of server-sent events).
    pub(crate) async fn get_streaming(&mut self, path: &str) -> anyhow::Result<(u16, Incoming)> {
        let resp = self.send(Method::GET, path, None).await?;
        Ok((resp.status().as_u16(), resp.into_body()))
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Response<Incoming>> {
        self.send_with(method, path, body, &[]).await
    }

    async fn send_with(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        if let Some(auth) = &self.authorization {
            req = req.header("authorization", auth);
        }
        let req = req.body(body.unwrap_or_default())?;
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }
}

/// `http://HOST:PORT` (or `HOST:PORT`) as a socket address: a node URL given to a benchmark
/// (`--cluster`, `--server`). Benchmark clients speak plain HTTP only.
pub(crate) fn socket_addr(url: &str) -> anyhow::Result<SocketAddr> {
    if url.starts_with("https://") {
        bail!("{url}: the benchmark's clients speak plain HTTP only");
    }
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    std::net::ToSocketAddrs::to_socket_addrs(host)
        .with_context(|| format!("{url}: not HOST:PORT"))?
        .next()
        .with_context(|| format!("{url}: no address"))
}
