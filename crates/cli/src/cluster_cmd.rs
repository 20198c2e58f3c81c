//! `logbook cluster status`: the nodes of a cluster as a node lists them, and the certifier's
//! leader (`GET /v1/cluster`).

use logbook_api::ops::{ClusterAckGuarantee, ClusterPeer, ClusterStatus};
use logbook_api::paths;

use crate::client::{Client, ServerArgs, print_json};

/// The cluster a running node belongs to.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// List the registered nodes (id, URL, health, what each serves), the certifier's
    /// leader (node id, URL, fencing token), what an acknowledged append guarantees (and
    /// each NATS server's version and sync setting), and the other nodes as this node's heartbeats
    /// see them (φ, suspected or alive, round trip, clock offset).
    ///
    /// Example: `logbook cluster status --server http://127.0.0.1:7701`
    Status {
        #[command(flatten)]
        server: ServerArgs,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl ClusterCommand {
    /// Whether errors should print as JSON problem documents.
    pub fn json(&self) -> bool {
        match self {
            ClusterCommand::Status { json, .. } => *json,
        }
    }
}

/// Runs a `logbook cluster` command.
pub fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status { server, json } => {
            let answer = Client::new(&server)?.get(&paths::cluster(), &[])?;
            if json {
                return print_json(&answer);
            }
            let status: ClusterStatus = serde_json::from_value(answer)
                .map_err(|e| anyhow::anyhow!("the server's cluster status is malformed: {e}"))?;
            print_status(&status)
        }
    }
}

fn print_status(status: &ClusterStatus) -> anyhow::Result<()> {
    let Some(me) = &status.node_id else {
        outln!("a single node (mode {}): no cluster", status.mode);
        return Ok(());
    };
    outln!(
        "{} registered, as node {me} sees them:",
        crate::client::count(status.nodes.len() as u64, "node", "nodes")
    );
    outln!("{:<20} {:<9} {:<32} serves", "node", "health", "url");
    for n in &status.nodes {
        let health = if n.healthy { "healthy" } else { "lapsing" };
        let serves = n.serves.join(",");
        outln!(
            "{:<20} {health:<9} {:<32} {serves}",
            n.node_id,
            n.advertise_url
        );
    }
    match &status.leader {
        Some(l) => outln!(
            "certifier's leader: {} at {} (fencing token {})",
            l.node_id,
            l.advertise_url,
            l.fencing_token
        ),
        None => outln!("certifier's leader: none elected now (commits wait for one)"),
    }
    match &status.groups_coordinator {
        Some(c) => outln!(
            "groups' coordinator: {} at {} (fencing token {})",
            c.node_id,
            c.advertise_url,
            c.fencing_token
        ),
        None => outln!("groups' coordinator: none elected now (group routes wait for one)"),
    }
    if let Some(ack) = &status.ack_guarantee {
        print_ack_guarantee(ack)?;
    }
    print_peers(me, &status.peers)
}

/// What an acknowledgment guarantees, and what each NATS server said of its settings.
fn print_ack_guarantee(ack: &ClusterAckGuarantee) -> anyhow::Result<()> {
    outln!("an acknowledged append is {}", ack.summary);
    if ack.servers.is_empty() {
        outln!("  (no NATS monitoring URL configured: an fsync cannot be confirmed)");
    }
    for s in &ack.servers {
        match (&s.version, s.sync_always, &s.error) {
            (Some(v), Some(sync), _) => {
                outln!("  {}: nats-server {v}, sync_always {sync}", s.monitor_url)
            }
            (_, _, Some(why)) => outln!("  {}: unreadable ({why})", s.monitor_url),
            _ => outln!("  {}: not read yet", s.monitor_url),
        }
    }
    Ok(())
}

/// The heartbeats' view: one line per other node.
fn print_peers(me: &str, peers: &[ClusterPeer]) -> anyhow::Result<()> {
    if peers.is_empty() {
        outln!("no other node is probed by {me} yet");
        return Ok(());
    }
    outln!("heartbeats from {me}:");
    outln!(
        "{:<20} {:<9} {:>8} {:>10} {:>12}",
        "node",
        "state",
        "phi",
        "rtt_ms",
        "clock_ms"
    );
    for p in peers {
        let state = if p.suspected { "suspected" } else { "alive" };
        let rtt = p
            .srtt_us
            .map_or_else(|| "-".to_string(), |us| format!("{:.1}", us as f64 / 1e3));
        let clock = match (p.clock_offset_ms, p.clock_error_ms) {
            (Some(o), Some(e)) => format!("{o:+}±{e}"),
            _ => "-".to_string(),
        };
        outln!(
            "{:<20} {state:<9} {:>8.2} {rtt:>10} {clock:>12}",
            p.node_id,
            p.phi
        );
    }
    Ok(())
}
