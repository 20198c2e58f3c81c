//! The arguments of `bench http`, which its runner (`mod.rs`), its load generator
//! (`load.rs`) and its cluster run (`cluster.rs`) all read.

use logbook_server::AuthMode;

/// Arguments of `logbook bench http`.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpBenchArgs {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Open-loop append rates, records/s (single-record requests).
    #[arg(long, value_delimiter = ',', default_value = "10000,25000,50000")]
    pub append_rates: Vec<u64>,
    /// Open-loop point-read rates, reads/s.
    #[arg(long, value_delimiter = ',', default_value = "25000,50000,100000")]
    pub read_rates: Vec<u64>,
    /// Connections of the closed-loop runs.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Connections the open-loop rate is spread over.
    #[arg(long, default_value_t = 128)]
    pub open_connections: usize,
    /// Most requests in flight per connection (HTTP/1.1 pipelining above 1). Closed loop
    /// keeps this many in flight; open loop sends when due unless this many are unanswered.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Bytes of each appended record's value (a JSON object padded to this size).
    #[arg(long, default_value_t = 100)]
    pub record_bytes: usize,
    /// Partitions of the stream.
    #[arg(long, default_value_t = 2)]
    pub partitions: u32,
    /// Distinct keys (appends cycle through them; reads pick one at random).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Skip the `pgbench -S` comparison.
    #[arg(long)]
    pub no_pg: bool,
    /// A directory of PostgreSQL programs (default: looked up).
    #[arg(long)]
    pub pg_bin: Option<std::path::PathBuf>,
    /// Authentication of the server, `on` and/or `off` (comma-separated): each runs every
    /// phase on a fresh server, in this order, so `--auth off,on` compares them in one run.
    #[arg(long, value_delimiter = ',', default_value = "on")]
    pub auth: Vec<AuthMode>,
    /// TLS of the server, `off` and/or `on` (comma-separated): each runs every phase on a
    /// fresh server, after the `--auth` configurations of the one before it.
    #[arg(long, value_delimiter = ',', default_value = "off")]
    pub tls: Vec<TlsMode>,
    /// How many times every configuration (`--auth` × `--tls`) runs, in turn; the summary
    /// takes medians over the rounds.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Also run every phase against this running cluster (its nodes' URLs, comma-separated,
    /// e.g. `scripts/dev-cluster up`'s), the connections spread round-robin over the nodes,
    /// after the single node of this process; reads then carry the session's consistency
    /// token on both. Reported under `cluster`, with each run's ratio to the single node's.
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// The bearer token the clients send to `--cluster` (it creates a stream and a view).
    #[arg(long = "auth-token", env = "LOGBOOK_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also run every configuration with the padding declared a personal field (decision
    /// 0030), its subject the record's key number: every append encrypts it under that
    /// subject's key (keys made while preloading) and every view read decrypts it. Each
    /// configuration then runs plain, then encrypted, on fresh servers; the report's
    /// `personal_fields` gives the encrypted medians' ratio to the plain ones (budget:
    /// appends ≥ 0.8× plain, issue 19).
    #[arg(long)]
    pub personal_fields: bool,
    /// Also run every configuration with the continuous audit at work (issue 18): the view
    /// auditor starting a round every second (`audit_interval_s = 1`, at its default pace)
    /// and the segment scrubber at its default rate; the plain runs then have both off, and
    /// every run's stream rolls its segments at 1 MiB so that sealed segments exist to
    /// scrub. The report's `audit` gives the audited medians' ratio to the plain ones
    /// (budget: ≥ 0.9× for appends and reads, `docs/benchmarks.md`) and what the auditors
    /// did during each audited server's runs.
    #[arg(long)]
    pub audit: bool,
}

/// Whether the benchmarked server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP.
    Off,
    /// HTTPS with a self-signed certificate made for the run.
    On,
}

impl std::str::FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<TlsMode, String> {
        match s {
            "on" => Ok(TlsMode::On),
            "off" => Ok(TlsMode::Off),
            other => Err(format!("tls must be on or off, not {other:?}")),
        }
    }
}
