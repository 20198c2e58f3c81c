//! Node membership against real etcd members (3 on loopback, started by `common`).

#![expect(
    clippy::expect_used,
    reason = "helpers of tests: a panic is the failure report"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, ClusterSpec};
use logbook_jetstream::membership::{
    Membership, MembershipError, MembershipSettings, NodeRecord, NodeStatus, RegistrationState,
};

fn etcd_only(members: usize) -> ClusterSpec {
    ClusterSpec {
        nats: 0,
        etcd: members,
        ..ClusterSpec::default()
    }
}

fn node(id: &str) -> NodeRecord {
    NodeRecord {
        node_id: id.into(),
        advertise_url: format!("http://127.0.0.1:7700/{id}"),
        serves: vec!["appends".into()],
    }
}

fn ids(nodes: &[NodeStatus]) -> Vec<&str> {
    nodes.iter().map(|n| n.record.node_id.as_str()).collect()
}

/// Polls `nodes()` until `done` holds or 20 s pass; returns the last list.
async fn until(membership: &Membership, done: impl Fn(&[NodeStatus]) -> bool) -> Vec<NodeStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = membership.nodes().await.expect("list nodes");
        if done(&nodes) || Instant::now() > deadline {
            return nodes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_list_deregister() {
    let cluster = Cluster::start(etcd_only(3)).await;
    let settings = MembershipSettings::new(cluster.etcd_urls(), &cluster.run_id);
    let membership = Membership::connect(settings).await.expect("connect");
    let a = membership
        .register(node("node-a"))
        .await
        .expect("register a");
    let b = membership
        .register(node("node-b"))
        .await
        .expect("register b");
    assert!(matches!(a.state(), RegistrationState::Registered { .. }));
    let nodes = membership.nodes().await.expect("list");
    assert_eq!(ids(&nodes), ["node-a", "node-b"]);
    assert!(nodes.iter().all(|n| n.healthy), "{nodes:?}");
    assert_eq!(nodes[0].record, node("node-a"));
    assert_eq!(nodes[0].lease_ttl_s, 10);

    a.deregister().await.expect("deregister");
    // Revoking the lease removes the key at once: no wait.
    assert_eq!(ids(&membership.nodes().await.expect("list")), ["node-b"]);
    drop(b);

    // Another cluster name sees none of these.
    let other = MembershipSettings::new(cluster.etcd_urls(), "another-cluster");
    let other = Membership::connect(other).await.expect("connect");
    assert!(other.nodes().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_holds_the_lease_and_a_crashed_node_expires() {
    let cluster = Cluster::start(etcd_only(3)).await;
    let mut settings = MembershipSettings::new(cluster.etcd_urls(), &cluster.run_id);
    settings.lease_ttl_s = 2;
    let membership = Membership::connect(settings).await.expect("connect");
    let alive = membership.register(node("alive")).await.expect("register");
    let crashed = membership
        .register(node("crashed"))
        .await
        .expect("register");
    // Outlive two TTLs: only keep-alives keep a lease this long.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let nodes = membership.nodes().await.expect("list");
    assert_eq!(
        ids(&nodes),
        ["alive", "crashed"],
        "keep-alives renewed both leases"
    );
    // A crash: the keep-alives stop, nothing is revoked.
    drop(crashed);
    let nodes = until(&membership, |n| n.len() == 1).await;
    assert_eq!(ids(&nodes), ["alive"], "the crashed node's lease expired");
    assert!(matches!(
        alive.state(),
        RegistrationState::Registered { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_etcd_member_of_three_is_tolerated() {
    let mut cluster = Cluster::start(etcd_only(3)).await;
    let mut settings = MembershipSettings::new(cluster.etcd_urls(), &cluster.run_id);
    settings.lease_ttl_s = 3;
    let membership = Membership::connect(settings).await.expect("connect");
    let _a = membership.register(node("node-a")).await.expect("register");
    cluster.kill_etcd("e1");
    // The client fails over to the members left; the lease is kept alive through them.
    let _b = common::retry(
        Duration::from_secs(20),
        MembershipError::is_retryable,
        || membership.register(node("node-b")),
    )
    .await
    .expect("register with a member down");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let nodes = until(&membership, |n| n.len() == 2).await;
    assert_eq!(ids(&nodes), ["node-a", "node-b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_and_bad_settings_are_named() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }; // Released: nothing listens there now.
    let url = format!("http://127.0.0.1:{closed}");
    let mut settings = MembershipSettings::new([url.clone()], "c");
    settings.request_timeout_ms = 1_000;
    match Membership::connect(settings).await {
        Err(e @ MembershipError::Unavailable { .. }) => {
            assert!(e.is_retryable());
            assert!(e.to_string().contains(&url), "{e}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let mut settings = MembershipSettings::new([url], "c");
    settings.lease_ttl_s = 1;
    assert!(matches!(
        Membership::connect(settings).await,
        Err(MembershipError::InvalidArgument {
            field: "lease_ttl_s",
            ..
        })
    ));
}
