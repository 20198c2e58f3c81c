//! The sockets of the benchmarks' own connections (see the [`super`] docs for why they do
//! not use `logbook-api`'s client): TCP to `HOST:PORT`, over TLS when a connector is given.

use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

/// A connection, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The TLS connector of a client trusting `ca_cert_pem` (else the system's roots).
///
/// # Errors
/// A CA file without a usable certificate, or no system roots.
pub fn connector(ca_cert_pem: Option<&[u8]>) -> anyhow::Result<TlsConnector> {
    let config: Arc<rustls::ClientConfig> =
        logbook_api::client::tls::client_config(ca_cert_pem).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(TlsConnector::from(config))
}

/// Connects to `authority` (`HOST:PORT`, no delay on the socket), then makes a TLS
/// handshake with `tls` when given, checking the certificate names `HOST`.
///
/// # Errors
/// The connection or the handshake failed (the CA is named in the message).
pub async fn connect(authority: &str, tls: Option<&TlsConnector>) -> anyhow::Result<Box<dyn Io>> {
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    tcp.set_nodelay(true)
        .with_context(|| format!("setting TCP_NODELAY on {authority}"))?;
    let Some(connector) = tls else {
        return Ok(Box::new(tcp));
    };
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .with_context(|| format!("{host} is not a host name or address"))?;
    let stream = connector.connect(name, tcp).await.with_context(|| {
        format!("TLS with {authority} failed (is its CA given with --ca-cert / LOGBOOK_CA_CERT?)")
    })?;
    Ok(Box::new(stream))
}
