//! Network namespaces for the fault tests (Linux; needs root and `ip` from iproute2): a
//! bridge in the test's own namespace, holding the address the engines listen on, and one
//! namespace per Logbook node joined to the bridge by a veth pair.
//!
//! ```text
//!  test, nats-server ×3, etcd ×3 ── 10.231.K.1 ─ bridge lbfK
//!                                                  ├─ veth lbfK-0 ══ netns lbfK-0: node 0, 10.231.K.10
//!                                                  ├─ veth lbfK-1 ══ netns lbfK-1: node 1, 10.231.K.11
//!                                                  └─ veth lbfK-2 ══ netns lbfK-2: node 2, 10.231.K.12
//! ```
//!
//! [`Net::cut`] takes a node's veth down: every packet to or from that node is dropped, both
//! ways, while its process runs on — a partition of it from the engines, its peers and the
//! test's clients (this kernel has neither iptables nor netem, so a link is the unit that
//! can be cut). [`Net::heal`] brings it up; TCP connections that did not time out carry on.
//!
//! Names are per run: `K` is the first free index from a random start, claimed by creating
//! the bridge (creation fails if another run holds it); a namespace left by a run that was
//! killed under the same `K` is removed first. Everything is deleted on drop.

use std::process::Command;

/// The bridge's subnet is `10.231.K.0/24`.
const SUBNET: &str = "10.231";

/// A bridge and one namespace per node, removed on drop.
pub struct Net {
    bridge: String,
    index: u8,
    nodes: usize,
}

impl Net {
    /// Creates the bridge and `nodes` namespaces (at most 200). Panics, naming the
    /// command, if this host cannot (not root, no `ip`).
    pub fn create(nodes: usize) -> Net {
        assert!(nodes <= 200, "at most 200 namespaces per bridge");
        let start: u8 = rand::random();
        let (index, bridge) = (0..=255u8)
            .map(|i| start.wrapping_add(i))
            .find_map(|k| {
                let bridge = format!("lbf{k}");
                ip(&["link", "add", &bridge, "type", "bridge"])
                    .ok()
                    .map(|()| (k, bridge))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no bridge could be created (the fault tests need root and iproute2): {}",
                    ip(&["link", "add", "lbf-probe", "type", "bridge"]).unwrap_err()
                )
            });
        let mut net = Net {
            bridge,
            index,
            nodes: 0,
        };
        let host = format!("{}/24", net.host_ip());
        must(&["addr", "add", &host, "dev", &net.bridge]);
        must(&["link", "set", &net.bridge, "up"]);
        for i in 0..nodes {
            net.add_node(i);
        }
        net
    }

    fn add_node(&mut self, i: usize) {
        let (ns, veth) = (self.namespace(i), self.veth(i));
        // A namespace of a killed run with this index: nobody holds the bridge, so it is stale.
        let _ = ip(&["netns", "del", &ns]);
        must(&["netns", "add", &ns]);
        self.nodes = i + 1;
        must(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        must(&["link", "set", &veth, "master", &self.bridge, "up"]);
        let addr = format!("{}/24", self.node_ip(i));
        must(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        must(&["-n", &ns, "link", "set", "eth0", "up"]);
        must(&["-n", &ns, "link", "set", "lo", "up"]);
    }

    /// The address of this namespace on the bridge: the engines listen there.
    pub fn host_ip(&self) -> String {
        format!("{SUBNET}.{}.1", self.index)
    }

    /// Node `i`'s address, in its namespace.
    pub fn node_ip(&self, i: usize) -> String {
        format!("{SUBNET}.{}.{}", self.index, 10 + i)
    }

    /// Node `i`'s namespace (for `ip netns exec`).
    pub fn namespace(&self, i: usize) -> String {
        format!("{}-{i}", self.bridge)
    }

    fn veth(&self, i: usize) -> String {
        format!("{}-{i}", self.bridge)
    }

    /// Cuts node `i` off: its link goes down, every packet to or from it is dropped.
    pub fn cut(&self, i: usize) {
        must(&["link", "set", &self.veth(i), "down"]);
    }

    /// Undoes [`Net::cut`].
    pub fn heal(&self, i: usize) {
        must(&["link", "set", &self.veth(i), "up"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and so the pair.
        for i in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.namespace(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Runs `ip args`: Ok, or what it said.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(why) = ip(args) {
        panic!("{why}");
    }
}
