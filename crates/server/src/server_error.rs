//! Why a server could not start, or stopped with an error: the one error type of binding,
//! opening the data directory (embedded or as a cluster node) and serving.

use logbook_log::LogError;
use logbook_txn::TxnError;
use logbook_views::ViewError;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The log could not be opened (locked, damaged, unreadable).
    #[error("cannot open the log in {dir}: {source}")]
    OpenLog {
        /// The data directory.
        dir: String,
        /// Why.
        #[source]
        source: LogError,
    },
    /// The transaction store could not be opened.
    #[error("cannot open the transaction store: {0}")]
    OpenTxns(#[source] TxnError),
    /// The views could not be opened (their state store, or a damaged catalog).
    #[error("cannot open the views: {0}")]
    OpenViews(#[source] ViewError),
    /// The TLS certificate or key cannot be used.
    #[error("cannot serve TLS: {0}")]
    Tls(#[source] crate::tls::TlsError),
    /// The token table could not be opened, or the first admin token not written.
    #[error("cannot open the tokens: {0}")]
    OpenTokens(#[source] crate::auth::tokens::AuthError),
    /// The key store of personal data could not be opened (a wrong or missing master key, a
    /// missing store while streams declare personal data; decision 0030).
    #[error("cannot open the key store: {0}")]
    OpenPrivacy(#[source] crate::privacy::PrivacyError),
    /// A task of the server failed.
    #[error("server task failed: {0}")]
    Task(String),
    /// etcd refused the node's membership for a reason retrying cannot fix.
    #[error("cannot join the cluster in etcd: {0}")]
    Membership(String),
    /// The configuration asks for the cluster mode, which this binary was built without.
    #[error(
        "the [cluster] settings need a binary built with the cluster mode: \
         cargo build --release --features cluster"
    )]
    ClusterNotBuilt,
    /// Shutdown was requested while the node was still connecting.
    #[error("stopped before the node was ready")]
    Stopped,
}
