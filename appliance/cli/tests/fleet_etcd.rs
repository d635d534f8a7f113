//! The fleet's etcd (tests/fleet/etcd.sh): a real 3-member etcd 3.4 cluster with mutual
//! TLS from `mldefender pki` certificates and a role per node. What must be refused is
//! refused, with etcd's own answer asserted: no client certificate, a certificate from
//! another CA, an expired certificate from the fleet's CA, a node writing under another
//! node's prefix. One member killed: the
//! cluster keeps quorum. Privileged (root, network namespaces); CI requires it.

mod common;

use common::cluster::{text, Cluster};
use common::*;

#[test]
fn mutual_tls_and_per_node_roles_refuse_what_they_must_and_a_lost_member_changes_nothing() {
    let Some(cluster) = Cluster::up(&["gw-1", "gw-2"]) else { return };

    // A node writes under its own prefix and reads the fleet's.
    let own = cluster.ctl("gw-1", &["put", "/mld/nodes/gw-1/heartbeat", "1"]);
    assert!(own.status.success() && text(&own).contains("OK"), "{}", text(&own));
    let theirs = cluster.ctl("gw-2", &["get", "/mld/nodes/gw-1/heartbeat"]);
    assert!(theirs.status.success() && text(&theirs).contains("/mld/nodes/gw-1/heartbeat"), "{}", text(&theirs));

    // ... and nothing under another node's prefix: etcd's RBAC answers.
    let forged = cluster.ctl("gw-1", &["put", "/mld/blocks/gw-2/10.66.2.2", "forged"]);
    assert!(!forged.status.success(), "gw-1 wrote under gw-2's prefix: {}", text(&forged));
    assert!(text(&forged).contains("permission denied"), "{}", text(&forged));
    assert!(cluster.ctl("gw-2", &["get", "/mld/blocks/gw-2/10.66.2.2"]).stdout.is_empty(), "nothing was written");

    // No client certificate: the TLS handshake is refused, and etcd logs why.
    let anonymous = cluster.ctl_with(&["--cacert".to_string(), cluster.bundle("gw-1", "ca.pem")], &["get", "/mld/", "--prefix"]);
    assert!(!anonymous.status.success(), "{}", text(&anonymous));
    assert!(
        common::lab::eventually(std::time::Duration::from_secs(5), || cluster.member_log(1).contains("client didn't provide a certificate")),
        "etcd's log: {}",
        cluster.member_log(1)
    );

    // A certificate from another CA (same CN): refused as well.
    let elsewhere = tempfile::tempdir().expect("dir");
    let other_ca = elsewhere.path().join("ca");
    let other_bundle = elsewhere.path().join("gw-1");
    for args in [
        vec!["pki", "init", "--dir", other_ca.to_str().expect("path")],
        vec!["pki", "issue", "--ca-dir", other_ca.to_str().expect("path"), "--node", "gw-1", "--out", other_bundle.to_str().expect("path")],
    ] {
        let output = run(mldefender().args(&args));
        assert!(output.status.success(), "{}", text(&output));
    }
    let foreign = cluster.ctl_with(
        &[
            "--cacert".to_string(),
            cluster.bundle("gw-1", "ca.pem"),
            "--cert".to_string(),
            other_bundle.join("etcd-client.pem").display().to_string(),
            "--key".to_string(),
            other_bundle.join("etcd-client-key.pem").display().to_string(),
        ],
        &["put", "/mld/nodes/gw-1/heartbeat", "2"],
    );
    assert!(!foreign.status.success(), "{}", text(&foreign));
    assert!(
        common::lab::eventually(std::time::Duration::from_secs(5), || cluster.member_log(1).contains("certificate signed by unknown authority")),
        "etcd's log: {}",
        cluster.member_log(1)
    );
    // An expired certificate from the fleet's own CA, with the right CN: refused too.
    let ca_dir = cluster.state.join("ca");
    let ca_key = mld_pki::store::read_secret(&ca_dir.join("ca-key.pem"), "CA key").expect("the cluster's CA key");
    let ca = mld_pki::Ca::from_pem(&std::fs::read_to_string(ca_dir.join("ca.pem")).expect("ca.pem"), ca_key).expect("the cluster's CA");
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let spec = mld_pki::LeafSpec { kind: mld_pki::LeafKind::Client, common_name: "gw-1".to_string(), sans: Vec::new(), lifetime: time::Duration::days(1) };
    let expired = ca.issue(&spec, long_ago).expect("issue an expired certificate");
    let expired_dir = tempfile::tempdir().expect("dir");
    std::fs::write(expired_dir.path().join("cert.pem"), &expired.cert_pem).expect("write");
    std::fs::write(expired_dir.path().join("key.pem"), expired.key_pem.as_bytes()).expect("write");
    let stale = cluster.ctl_with(
        &[
            "--cacert".to_string(),
            cluster.bundle("gw-1", "ca.pem"),
            "--cert".to_string(),
            expired_dir.path().join("cert.pem").display().to_string(),
            "--key".to_string(),
            expired_dir.path().join("key.pem").display().to_string(),
        ],
        &["put", "/mld/nodes/gw-1/heartbeat", "2"],
    );
    assert!(!stale.status.success(), "{}", text(&stale));
    assert!(
        common::lab::eventually(std::time::Duration::from_secs(5), || cluster.member_log(1).contains("certificate has expired or is not yet valid")),
        "etcd's log: {}",
        cluster.member_log(1)
    );
    let unchanged = cluster.ctl("gw-1", &["get", "--print-value-only", "/mld/nodes/gw-1/heartbeat"]);
    assert_eq!(String::from_utf8_lossy(&unchanged.stdout).trim(), "1", "{}", text(&unchanged));

    // One member killed: the other two keep quorum; writes and reads go on. A write in
    // flight when the leader dies is lost with it (etcd drops the proposal, the client
    // times out after 5 s): like any etcd client, write again.
    cluster.kill(3);
    let mut during = None;
    let written = common::lab::eventually(std::time::Duration::from_secs(20), || {
        let output = cluster.ctl("gw-1", &["put", "/mld/nodes/gw-1/heartbeat", "3"]);
        let ok = output.status.success();
        during = Some(output);
        ok
    });
    assert!(written, "with 2 of 3 members: {}", during.as_ref().map(text).unwrap_or_default());
    let read = cluster.ctl("gw-2", &["get", "--print-value-only", "/mld/nodes/gw-1/heartbeat"]);
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "3", "{}", text(&read));
}
