//! TLS for `https://` servers (decision 0017): which certificates the client trusts, and
//! telling a failed handshake apart from a server that cannot be reached.
//!
//! With a CA file the client trusts only the certificates in it (a private CA, or a
//! self-signed development certificate from `logbook tls self-signed`); without one, the
//! system's roots. Either way the server's certificate must name the host the URL names.
//! rustls runs on the `ring` provider, chosen explicitly so that another provider linked
//! into the same program cannot change it.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::ClientError;

/// Most certificates read from a CA file: a bundle of the system's size fits, a runaway
/// file does not.
pub const CA_CERTS_MAX: usize = 1_000;

/// The `ring` provider every TLS configuration of Logbook uses (server and client alike).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client's TLS settings: trusting the certificates of `ca_cert_pem` (PEM, one or more
/// `CERTIFICATE` blocks) when given, else the system's roots.
///
/// # Errors
/// [`ClientError::InvalidArgument`] naming `ca_cert` when the PEM holds no certificate,
/// more than [`CA_CERTS_MAX`], or one that cannot be a trust anchor; naming `tls` when no
/// root could be loaded from the system.
pub fn client_config(ca_cert_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let roots = match ca_cert_pem {
        Some(pem) => roots_from_pem(pem)?,
        None => system_roots()?,
    };
    config_with(roots)
}

/// A configuration that trusts nothing: for a client of a plain `http://` server, whose
/// connector is never asked for a handshake.
pub(crate) fn plain_config() -> Result<Arc<rustls::ClientConfig>, ClientError> {
    config_with(rustls::RootCertStore::empty())
}

fn config_with(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    // No ALPN here: hyper-rustls offers `http/1.1` itself (and refuses a configuration that
    // names protocols already); a connection without ALPN is HTTP/1.1 to the server too.
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::InvalidArgument {
            field: "tls",
            reason: format!("no TLS protocol version available: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn roots_from_pem(pem: &[u8]) -> Result<rustls::RootCertStore, ClientError> {
    let bad = |reason: String| ClientError::InvalidArgument {
        field: "ca_cert",
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
        if i >= CA_CERTS_MAX {
            return Err(bad(format!("more than {CA_CERTS_MAX} certificates")));
        }
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("certificate {} cannot be trusted: {e}", i + 1)))?;
    }
    if roots.is_empty() {
        return Err(bad(
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(roots)
}

fn system_roots() -> Result<rustls::RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    // Unparsable system certificates are skipped, as browsers do: one bad file in the
    // system's store must not make every server untrusted.
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(|| "the system has none".to_string(), ToString::to_string);
        return Err(ClientError::InvalidArgument {
            field: "tls",
            reason: format!(
                "no trusted root certificates could be loaded ({why}); give the server's CA \
                 certificate file"
            ),
        });
    }
    Ok(roots)
}

/// The TLS error behind a failed connection, if the handshake is what failed. The
/// connector's errors wrap rustls' in `std::io::Error`s (whose `source()` skips the error
/// they carry), so each level is looked into as well as followed.
pub(crate) fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    let mut depth = 0;
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(explain(tls));
        }
        let io = e.downcast_ref::<std::io::Error>();
        // tokio-rustls' own error when the server closes during the handshake: a plain
        // HTTP server drops a ClientHello it cannot parse.
        if let Some(io) = io
            && io.kind() == std::io::ErrorKind::UnexpectedEof
            && io.to_string().contains("tls handshake")
        {
            return Some(
                "the server closed the connection during the TLS handshake: is it serving \
                 plain http:// on that port?"
                    .into(),
            );
        }
        next = match io.and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
        depth += 1;
        if depth > 16 {
            break;
        }
    }
    None
}

/// What a handshake failure means for the user.
fn explain(error: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    let hint = match error {
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => {
            "the server's certificate is not signed by a CA this client trusts: give the CA \
             certificate that signed it"
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the server's certificate does not name the host in the server's URL",
        Error::InvalidCertificate(_) => "the server's certificate is not acceptable",
        Error::InvalidMessage(_) | Error::InappropriateHandshakeMessage { .. } => {
            "the server did not answer in TLS: is it serving plain http:// on that port?"
        }
        _ => "the TLS handshake failed",
    };
    format!("{hint} ({error})")
}
