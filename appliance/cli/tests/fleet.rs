//! A fleet of three lab appliances (each a supervisor in its own lab's gateway namespace)
//! sharing blocks through a real 3-member etcd cluster with mutual TLS and a role per node
//! (tests/fleet/etcd.sh). A scanner blocked at one gateway is dropped at the others before
//! it sends them anything; a node's allowlist still wins over a shared block; a block's
//! expiry ends it everywhere. Privileged (root, network namespaces); CI requires it.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{text, Cluster};
use common::lab::{eventually, Lab};
use common::supervisor::Supervisor;
use common::*;
use serde_json::Value;

const ATTACKER: &str = "10.66.2.2";
const CLIENT: &str = "10.66.1.2";
const SERVER: &str = "10.66.9.2";

/// The fleet part of a node's configuration: its name, its bundle (issued by the
/// cluster's CA on `up`, as an operator machine would), the cluster.
fn fleet_config(cluster: &Cluster, node: &str, extra: &str) -> String {
    let endpoints: Vec<String> = cluster.endpoints().iter().map(|endpoint| format!("\"{endpoint}\"")).collect();
    format!(
        "[log]\nnode = \"{node}\"\n[pki]\nenabled = true\nca = \"external\"\ndir = \"{}\"\n[fleet]\nenabled = true\nendpoints = [{}]\n{extra}",
        cluster.state.join("bundles").join(node).display(),
        endpoints.join(", ")
    )
}

fn blocked(lab: &Lab, address: &str) -> bool {
    stdout(&lab.mldefender(&["block", "list"])).lines().any(|line| line.starts_with(&format!("{address}/32")))
}

fn scan(lab: &Lab, node: &str) {
    let scan = lab.exec(node, &["nmap", "-n", "-Pn", "-sT", "-sV", "--version-light", "-T4", "--top-ports", "200", SERVER]);
    assert!(scan.status.success(), "{}", stderr(&scan));
}

fn events_with(lab: &Lab, action: &str, source: &str) -> Vec<Value> {
    lab.events().into_iter().filter(|event| event["action"] == action && event["src_ip"] == source).collect()
}

#[test]
fn a_scanner_blocked_at_one_gateway_is_dropped_at_the_others_and_each_nodes_allowlist_still_wins() {
    let Some(a) = Lab::up() else { return };
    let b = Lab::up().expect("lab b");
    let c = Lab::up().expect("lab c");
    let cluster = Cluster::up(&["gw-a", "gw-b", "gw-c"]).expect("the etcd cluster");
    for (n, lab) in [&a, &b, &c].into_iter().enumerate() {
        cluster.attach(&format!("mld{}g", lab.id), n as u32 + 1);
    }
    // Before: the attacker and the client of labs B and C reach their servers.
    for lab in [&b, &c] {
        assert!(lab.ping("a", SERVER) && lab.ping("c", SERVER), "lab {} works before any block", lab.id);
    }
    // A's scan blocks last 40 s, so that their end is seen everywhere; C allowlists the
    // attacker's address.
    let mut sa = Supervisor::start(&a, &fleet_config(&cluster, "gw-a", "[response]\nttl-scan-secs = 40\n"));
    let mut sb = Supervisor::start(&b, &fleet_config(&cluster, "gw-b", ""));
    let mut sc = Supervisor::start(&c, &fleet_config(&cluster, "gw-c", &format!("[allowlist]\nprefixes = [\"{ATTACKER}\"]\n")));
    for supervisor in [&mut sa, &mut sb, &mut sc] {
        supervisor.wait_ready(Duration::from_secs(30));
    }
    let members = |supervisor: &Supervisor| supervisor.status()["pipeline"]["fleet_members"].as_u64().unwrap_or(0);
    for supervisor in [&sa, &sb, &sc] {
        assert!(eventually(Duration::from_secs(20), || members(supervisor) == 3), "three members: {}\n{}", supervisor.status(), supervisor.log());
    }

    // The attacker scans A only, and is blocked there...
    scan(&a, "a");
    assert!(eventually(Duration::from_secs(10), || blocked(&a, ATTACKER)), "A blocks the scanner:\n{}", sa.log());
    let at_a = Instant::now();
    // ... then at B, which it never touched: dropped before it sends B anything.
    assert!(eventually(Duration::from_secs(5), || blocked(&b, ATTACKER)), "B applies A's block:\n{}\n{}", sb.status(), sb.log());
    eprintln!("A's block in B's deny map {} ms after it was seen in A's", at_a.elapsed().as_millis());
    assert!(!b.ping("a", SERVER), "B drops the scanner");
    assert!(b.ping("c", SERVER), "B's client is not affected");
    let applied = events_with(&b, "shared-block", ATTACKER);
    assert!(!applied.is_empty() && applied[0]["provenance"].as_str().unwrap_or("").contains("from fleet node gw-a"), "B logs the shared block: {applied:?}");
    // C allowlists the attacker: the shared block is refused there and logged with why.
    assert!(eventually(Duration::from_secs(5), || !events_with(&c, "shared-refused", ATTACKER).is_empty()), "C refuses:\n{}", sc.log());
    let refused = events_with(&c, "shared-refused", ATTACKER);
    assert!(refused[0]["provenance"].as_str().unwrap_or("").contains("allowlisted"), "{refused:?}");
    assert!(!blocked(&c, ATTACKER) && c.ping("a", SERVER), "C's allowlist wins");

    // The client of lab A scans too: blocked at A, then at B and at C.
    scan(&a, "c");
    assert!(eventually(Duration::from_secs(10), || blocked(&a, CLIENT)), "A blocks its client's scan:\n{}", sa.log());
    for lab in [&b, &c] {
        assert!(eventually(Duration::from_secs(5), || blocked(lab, CLIENT)), "lab {} applies the block", lab.id);
        assert!(!lab.ping("c", SERVER), "lab {} drops it", lab.id);
    }

    // The blocks end everywhere with their expiry: the deny entries lapse, etcd drops the
    // keys with their lease, and B's attacker gets through again.
    assert!(eventually(Duration::from_secs(60), || !blocked(&b, ATTACKER) && !blocked(&b, CLIENT)), "B's shared blocks expire");
    let keys = || text(&cluster.ctl("root", &["get", "--prefix", "--keys-only", "/mld/blocks/"]));
    assert!(eventually(Duration::from_secs(20), || keys().trim().is_empty()), "etcd still holds blocks: {}", keys());
    assert!(b.ping("a", SERVER), "B lets the attacker through again once the block expired");
    for supervisor in [sa, sb, sc] {
        supervisor.stop();
    }
}

#[test]
fn no_etcd_member_loss_fleet_task_kill_or_whole_cluster_outage_loses_a_shared_block() {
    let Some(a) = Lab::up() else { return };
    let b = Lab::up().expect("lab b");
    let cluster = Cluster::up(&["gw-a", "gw-b"]).expect("the etcd cluster");
    cluster.attach(&format!("mld{}g", a.id), 1);
    cluster.attach(&format!("mld{}g", b.id), 2);
    let mut sa = Supervisor::start(&a, &fleet_config(&cluster, "gw-a", ""));
    let mut sb = Supervisor::start(&b, &fleet_config(&cluster, "gw-b", ""));
    for supervisor in [&mut sa, &mut sb] {
        supervisor.wait_ready(Duration::from_secs(30));
    }
    let pipeline = |supervisor: &Supervisor, key: &str| supervisor.status()["pipeline"][key].as_u64().unwrap_or(0);
    for supervisor in [&sa, &sb] {
        assert!(eventually(Duration::from_secs(20), || pipeline(supervisor, "fleet_members") == 2), "{}", supervisor.log());
    }

    // One member of three killed: quorum holds and blocks still go round.
    cluster.kill(3);
    scan(&a, "a");
    assert!(eventually(Duration::from_secs(10), || blocked(&a, ATTACKER)), "A blocks:\n{}", sa.log());
    assert!(eventually(Duration::from_secs(10), || blocked(&b, ATTACKER)), "B applies with 2 of 3 members:\n{}", sb.log());

    // B's fleet task SIGKILLed: the supervisor restarts it; it reads the blocks anew and
    // applies nothing twice (the one it has is already in force).
    let pid = sb.task("fleet")["pid"].as_u64().expect("the fleet task's pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the fleet task");
    assert!(
        eventually(Duration::from_secs(20), || {
            let task = sb.task("fleet");
            task["restarts"] == 1 && task["state"] == "ready" && pipeline(&sb, "fleet_connected") == 1
        }),
        "the fleet task is back: {}\n{}",
        sb.status(),
        sb.log()
    );

    // The whole cluster down for 30 s: local protection goes on (A blocks its client's
    // scan at once), applied shared blocks stay, and what A decided is published once
    // etcd is back.
    cluster.kill(1);
    cluster.kill(2);
    assert!(eventually(Duration::from_secs(15), || pipeline(&sa, "fleet_connected") == 0), "A notices the outage: {}\n{}", sa.status(), sa.log());
    let outage = Instant::now();
    scan(&a, "c");
    assert!(eventually(Duration::from_secs(10), || blocked(&a, CLIENT)), "A blocks locally while etcd is down:\n{}", sa.log());
    assert!(blocked(&b, ATTACKER), "B keeps the shared block it applied");
    assert!(!blocked(&b, CLIENT), "nothing can reach B while etcd is down");
    std::thread::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed()));
    for member in 1..=3 {
        cluster.start(member);
    }
    assert!(eventually(Duration::from_secs(30), || blocked(&b, CLIENT)), "B applies what A decided during the outage:\n{}\n{}", sb.status(), sb.log());
    for supervisor in [&sa, &sb] {
        assert!(eventually(Duration::from_secs(20), || pipeline(supervisor, "fleet_connected") == 1), "{}", supervisor.status());
    }
    // One record per shared block at B, whatever the restarts and resyncs.
    assert_eq!(events_with(&b, "shared-block", ATTACKER).len(), 1, "the attacker's block applied once at B");
    assert_eq!(events_with(&b, "shared-block", CLIENT).len(), 1, "the client's block applied once at B");
    let notes: Vec<String> = b.events().iter().filter(|event| event["action"] == "fleet").map(|event| event["provenance"].to_string()).collect();
    assert!(
        notes.iter().any(|note| note.contains("lost etcd")) && notes.iter().any(|note| note.contains("connected to etcd")),
        "B's log has the outage: {notes:?}"
    );
    for supervisor in [sa, sb] {
        supervisor.stop();
    }
}
