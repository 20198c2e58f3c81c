//! TLS to the engines: the CA certificates a NATS server's or etcd member's certificate is
//! checked against and, for servers that verify their clients (mutual TLS), this client's
//! certificate and key. The files are PEM, read when connecting; one that cannot be read is
//! refused by name before anything is sent. The system's roots are not consulted: an
//! engine's certificate must chain to the CA given.

use std::path::{Path, PathBuf};

/// TLS to one engine (NATS or etcd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA certificates (PEM) the servers' certificates are checked against.
    pub ca_cert: PathBuf,
    /// This client's certificate chain and its private key (PEM; PKCS#8, PKCS#1 or SEC1),
    /// for servers that verify clients. `None`: no client certificate is presented.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The contents of a [`ClientTls`]'s files.
#[derive(Debug)]
pub(crate) struct ClientTlsPem {
    /// The CA certificates.
    pub ca_cert: Vec<u8>,
    /// The client's certificate chain and key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// Reads the files.
    ///
    /// # Errors
    /// The setting whose file cannot be read (`tls.ca_cert`, `tls.client_cert`,
    /// `tls.client_key`) and why, naming the path.
    pub(crate) fn read(&self) -> Result<ClientTlsPem, (&'static str, String)> {
        let read = |field: &'static str, path: &Path| {
            std::fs::read(path).map_err(|e| (field, format!("cannot read {}: {e}", path.display())))
        };
        let ca_cert = read("tls.ca_cert", &self.ca_cert)?;
        let identity = match &self.identity {
            Some((cert, key)) => {
                Some((read("tls.client_cert", cert)?, read("tls.client_key", key)?))
            }
            None => None,
        };
        Ok(ClientTlsPem { ca_cert, identity })
    }
}
