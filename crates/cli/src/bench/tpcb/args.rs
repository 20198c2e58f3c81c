//! The arguments of `logbook bench tpcb` and the workload's shape (rows per unit of scale),
//! read by every side of the benchmark: in-process, over HTTP, on a cluster.

use std::path::PathBuf;

use logbook_txn::Isolation;

/// Arguments of `logbook bench tpcb`.
#[derive(Debug, Clone, clap::Args)]
pub struct TpcbArgs {
    /// Isolation level of every transaction: read_committed, snapshot or serializable.
    /// PostgreSQL runs at the matching level: read committed, repeatable read (its snapshot
    /// isolation) or serializable.
    #[arg(long, default_value = "serializable")]
    pub(super) isolation: Isolation,
    /// How a transaction changes the balances: `rmw` reads each balance and writes the new
    /// value (conflicts, retries — or lost updates at read_committed); `atomic` uses
    /// increments evaluated at commit, which never conflict with each other.
    #[arg(long, value_enum, default_value_t = Form::Rmw)]
    pub(super) form: Form,
    /// Client threads, each running one transaction at a time (pgbench -c).
    #[arg(long, default_value_t = 8)]
    pub(super) clients: usize,
    /// Seconds of the measured run, per system (pgbench -T).
    #[arg(long, default_value_t = 10)]
    pub(super) seconds: u64,
    /// Scale factor (pgbench -s): S branches, 10×S tellers, 100,000×S accounts.
    #[arg(long, default_value_t = 10)]
    pub(super) scale: u32,
    /// Tries per transaction, the first included (pgbench --max-tries).
    #[arg(long, default_value_t = 10)]
    pub(super) max_tries: u32,
    /// Let snapshots include commits that are certified but not yet durable (reads of them
    /// wait for their fsync): `TxnStoreOptions::early_lock_release`. `false` makes
    /// snapshots stop at the durable end of the commit stream.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(super) early_lock_release: bool,
    /// Versions the store keeps for this many commits behind the newest
    /// (`TxnStoreOptions::history_commits`). Needed with `--early-lock-release false` on the
    /// current library: its garbage collector prunes below the newest commit, not below the
    /// durable end where new snapshots then start, so reads would miss rows; 1000 keeps
    /// every version such a snapshot can read (the durable end trails by one group commit).
    #[arg(long, default_value_t = 0)]
    pub(super) history_commits: u64,
    /// Directory for Logbook's store; it must be empty or absent and is kept afterwards.
    /// Default: a fresh directory under the system temp directory, removed afterwards.
    #[arg(long)]
    pub(super) data_dir: Option<PathBuf>,
    /// Skip the PostgreSQL peer.
    #[arg(long)]
    pub(super) no_postgres: bool,
    /// Directory holding PostgreSQL's initdb, postgres, pg_ctl, pg_isready (and pgbench,
    /// else it is taken from PATH). Default: the newest /usr/lib/postgresql/*/bin, else
    /// the directory `initdb` on PATH resolves to.
    #[arg(long)]
    pub(super) pg_bin: Option<PathBuf>,
    /// Seed of the clients' random choices (default: random; printed in `params`).
    #[arg(long)]
    pub(super) seed: Option<u64>,
    /// Where Logbook's transactions run: `in-process` (the `logbook-txn` library, one
    /// thread per client) or `http` (each transaction driven through the HTTP API —
    /// `POST /v1/txns`, kv get/put/increment, commit — of a `logbook serve` started in this
    /// process; one keep-alive connection per client).
    #[arg(long, value_enum, default_value_t = Over::InProcess)]
    pub(super) over: Over,
    /// With `--over http`: how a transaction travels. `interactive`: begin, one request per
    /// read and write, commit (ten round trips for `rmw`). `one-shot`: `POST /v1/kv/read`
    /// of the three balances, then one `POST /v1/commits` declaring those reads (two round
    /// trips for `rmw`, one for `atomic`).
    #[arg(long, value_enum, default_value_t = Protocol::Interactive)]
    pub(super) protocol: Protocol,
    /// With `--over http`: worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    pub(super) server_threads: usize,
    /// With `--over http`: worker threads of the clients' runtime.
    #[arg(long, default_value_t = 2)]
    pub(super) client_threads: usize,
    /// With `--over http`: also run the clients against this running cluster (its nodes'
    /// URLs, comma-separated, e.g. `scripts/dev-cluster up`'s), spread round-robin over the
    /// nodes, after the single node of this process: the rows are loaded over HTTP first
    /// (overwriting the cluster's `a:`, `t:`, `b:` keys). Reported under `cluster`, with
    /// commit latency on the certifier's leader and on the followers.
    #[arg(long, value_delimiter = ',')]
    pub(super) cluster: Vec<String>,
    /// With `--cluster`: after the cluster's measured run, a failover phase — the clients
    /// (`--protocol one-shot`; every commit with an `Idempotency-Key`, sent again with it
    /// until answered, moving to the next node when theirs is gone) commit while the
    /// certifier's leader is killed (`kill -9`) this many times, each time started again
    /// and waited for. Reported under `cluster.failover`: the commit stall per failover,
    /// overall and per client, against the budget (lease TTL + 5 s). Needs `--dev-cluster`.
    #[arg(long, default_value_t = 0)]
    pub(super) failovers: u32,
    /// With `--failovers`: the development cluster's directory (`scripts/dev-cluster up
    /// DIR`). Its `lI.pid` files name the nodes; a killed node is started again with the
    /// command line, environment and directory it ran with (read from Linux's /proc),
    /// its output appended to `lI.log`.
    #[arg(long)]
    pub(super) dev_cluster: Option<PathBuf>,
    /// With `--failovers`: seconds of commits before each kill.
    #[arg(long, default_value_t = 3)]
    pub(super) settle_seconds: u64,
    /// With `--failovers`: the nodes' etcd lease TTL, s (`logbook serve`'s is 10); the
    /// stall's budget is it + 5 s.
    #[arg(long, default_value_t = 10)]
    pub(super) lease_ttl_s: u64,
    /// The bearer token the clients send to `--cluster` (an admin token: it writes keys).
    #[arg(long = "auth-token", env = "LOGBOOK_TOKEN", hide_env_values = true)]
    pub(super) auth_token: Option<String>,
    /// Print the figures as one JSON object instead of a summary.
    #[arg(long)]
    pub(super) json: bool,
}

/// Where Logbook's side of the benchmark runs its transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Over {
    /// Calls into `logbook-txn` from client threads.
    InProcess,
    /// HTTP requests to a server in this process.
    Http,
}

impl Over {
    pub(super) fn name(self) -> &'static str {
        match self {
            Over::InProcess => "in-process",
            Over::Http => "http",
        }
    }
}

/// How a transaction travels over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Protocol {
    /// An interactive transaction: a request per operation.
    Interactive,
    /// Reads at a snapshot, then one self-contained commit request.
    OneShot,
}

impl Protocol {
    pub(super) fn name(self) -> &'static str {
        match self {
            Protocol::Interactive => "interactive",
            Protocol::OneShot => "one-shot",
        }
    }
}

/// How a TPC-B transaction changes the balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Form {
    /// Read each balance, write the new value (get + put).
    Rmw,
    /// Increment each balance at commit.
    Atomic,
}

impl Form {
    pub(super) fn name(self) -> &'static str {
        match self {
            Form::Rmw => "rmw",
            Form::Atomic => "atomic",
        }
    }
}

/// Accounts per unit of scale (pgbench's `naccounts`).
pub(super) const ACCOUNTS_PER_SCALE: u64 = 100_000;
/// Tellers per unit of scale (pgbench's `ntellers`).
pub(super) const TELLERS_PER_SCALE: u64 = 10;
