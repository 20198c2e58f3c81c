//! TLS on the listener (decision 0017): rustls through tokio-rustls, inside the server's own
//! accept loop, so every limit of that loop (connection permits, the request-head guard,
//! the header timeout, graceful shutdown) holds for TLS connections as for plain ones.
//!
//! ```text
//!  accept ─▶ permit ─▶ task: first byte (within the header timeout)
//!                        ├ 0x16, a TLS handshake record ─▶ rustls handshake ─▶ Conn::Tls ─▶ hyper
//!                        ├ an ASCII letter: plain HTTP sent to the TLS port
//!                        │     ─▶ 400 problem+json in plain text ("use https://"), close
//!                        └ anything else, a failed handshake, or silence ─▶ close
//! ```
//!
//! The certificate chain and key are read once, at bind: a missing or malformed file stops
//! the server before it says it is listening. Only HTTP/1.1 is offered (ALPN `http/1.1`).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;
use crate::error::{ApiError, ProblemCode};

/// The first byte of a TLS handshake record (RFC 8446, §5.1: `ContentType.handshake`).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Most certificates in the chain file.
pub const CHAIN_CERTS_MAX: usize = 16;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM block; `setting` names the setting
    /// (`tls_cert`, `tls_key`).
    #[error("{setting} = {path}: {reason}")]
    File {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (the key does not match the certificate, an unsupported
    /// key type).
    #[error("the certificate and key cannot be used together: {0}")]
    Pair(#[source] rustls::Error),
}

/// The provider of every TLS configuration here: `ring`, named explicitly so that another
/// provider linked into the binary cannot change it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener's TLS configuration, ready to take connections through their handshake.
#[derive(Clone)]
pub struct Acceptor(TlsAcceptor);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor(rustls)")
    }
}

/// The acceptor for the certificate chain and private key of `files` (PEM).
///
/// # Errors
/// [`TlsError::File`] naming the setting for an unreadable file, no certificate, more than
/// [`CHAIN_CERTS_MAX`], or no private key; [`TlsError::Pair`].
pub fn acceptor(files: &TlsFiles) -> Result<Acceptor, TlsError> {
    let chain = read_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::File {
        setting: "tls_key",
        path: files.key.display().to_string(),
        reason: format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) could be read: {e}"),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Pair)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Pair)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Acceptor(TlsAcceptor::from(Arc::new(config))))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::File {
        setting: "tls_cert",
        path: path.display().to_string(),
        reason,
    };
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read it as PEM: {e}")))?;
    let mut chain = Vec::new();
    for cert in iter {
        if chain.len() == CHAIN_CERTS_MAX {
            return Err(bad(format!("more than {CHAIN_CERTS_MAX} certificates")));
        }
        chain.push(cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?);
    }
    if chain.is_empty() {
        return Err(bad(
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(chain)
}

/// An accepted connection as hyper reads it: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum Conn {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS (boxed: rustls' state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

/// Takes a TLS connection through its handshake, within `within`, the header timeout (a client that
/// connects and says nothing holds its permit no longer than one that sends no head). A
/// plain HTTP request is answered 400 in plain text, naming `https://`; anything else that
/// is not a handshake, or a handshake that fails, closes the connection. `None` when no TLS
/// connection came of it.
pub async fn handshake(tcp: TcpStream, acceptor: Acceptor, within: Duration) -> Option<Conn> {
    let peer = tcp.peer_addr().ok();
    let attempt = async move {
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        if n == 1 && first[0] != TLS_HANDSHAKE_RECORD {
            if first[0].is_ascii_alphabetic() {
                refuse_plain_http(tcp).await;
            }
            return Ok(None);
        }
        acceptor.0.accept(tcp).await.map(Some)
    };
    match tokio::time::timeout(within, attempt).await {
        Ok(Ok(Some(tls))) => Some(Conn::Tls(Box::new(tls))),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            tracing::debug!(?peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "no TLS handshake within the header timeout");
            None
        }
    }
}

/// Answers a plain HTTP request on the TLS port: a problem naming the scheme to use.
async fn refuse_plain_http(mut tcp: TcpStream) {
    let mut problem = ApiError::new(
        ProblemCode::InvalidRequest,
        "this port serves HTTPS only: send the request to https://HOST:PORT (the server's \
         certificate must be trusted: --ca-cert for a private CA)",
    );
    problem.field = Some("scheme".into());
    crate::error::answer_and_close(&mut tcp, "400 Bad Request", "", problem).await;
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, data),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
