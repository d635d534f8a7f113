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
    fleet_config_checking(cluster, node, 3600, extra)
}

/// The same, with the running supervisor checking the certificates every `check_secs`.
fn fleet_config_checking(cluster: &Cluster, node: &str, check_secs: u32, extra: &str) -> String {
    let endpoints: Vec<String> = cluster.endpoints().iter().map(|endpoint| format!("\"{endpoint}\"")).collect();
    format!(
        "[log]\nnode = \"{node}\"\n[pki]\nenabled = true\nca = \"external\"\ndir = \"{}\"\ncheck-interval-secs = {check_secs}\n[fleet]\nenabled = true\nendpoints = [{}]\n{extra}",
        cluster.state.join("bundles").join(node).display(),
        endpoints.join(", ")
    )
}

/// Three lab gateways (nodes gw-a, gw-b, gw-c) linked to a fresh etcd cluster; `None`
/// (skipped) without root.
fn three_gateways() -> Option<(Lab, Lab, Lab, Cluster)> {
    let a = Lab::up()?;
    let b = Lab::up().expect("lab b");
    let c = Lab::up().expect("lab c");
    let cluster = Cluster::up(&["gw-a", "gw-b", "gw-c"]).expect("the etcd cluster");
    for (n, lab) in [&a, &b, &c].into_iter().enumerate() {
        cluster.attach(&format!("mld{}g", lab.id), n as u32 + 1);
    }
    Some((a, b, c, cluster))
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
    let Some((a, b, c, cluster)) = three_gateways() else { return };
    // Before: the attacker and the client of labs B and C reach their servers.
    for lab in [&b, &c] {
        assert!(lab.ping("a", SERVER) && lab.ping("c", SERVER), "lab {} works before any block", lab.id);
    }
    // The operator's key for configuration documents.
    let operator = tempfile::tempdir().expect("dir");
    let (private, public) = (operator.path().join("operator.key"), operator.path().join("operator.pub"));
    let keygen = run(mldefender().args(["model", "keygen"]).arg(&private).arg(&public));
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let trust = format!("[fleet]\noperator-public-key = \"{}\"\n", std::fs::read_to_string(&public).expect("public key").trim());
    // C allowlists the attacker's address. (Scan blocks last 40 s, so that their end is
    // seen everywhere: the operator's configuration document below says so.)
    let mut sa = Supervisor::start(&a, &fleet_config(&cluster, "gw-a", &trust));
    let mut sb = Supervisor::start(&b, &fleet_config(&cluster, "gw-b", &trust));
    let mut sc = Supervisor::start(&c, &fleet_config(&cluster, "gw-c", &format!("{trust}[allowlist]\nprefixes = [\"{ATTACKER}\"]\n")));
    for supervisor in [&mut sa, &mut sb, &mut sc] {
        supervisor.wait_ready(Duration::from_secs(30));
    }
    let members = |supervisor: &Supervisor| supervisor.status()["pipeline"]["fleet_members"].as_u64().unwrap_or(0);
    for supervisor in [&sa, &sb, &sc] {
        assert!(eventually(Duration::from_secs(20), || members(supervisor) == 3), "three members: {}\n{}", supervisor.status(), supervisor.log());
    }

    // `fleet status` on B lists the three members with their version and heartbeat.
    let fleet_status = run(mldefender().args(["fleet", "status", "--runtime-dir", &sb.runtime_dir]));
    let listed = stdout(&fleet_status);
    assert!(fleet_status.status.success(), "{listed}{}", stderr(&fleet_status));
    assert!(listed.contains("node gw-b: connected to https://10.77.0."), "{listed}");
    for node in ["gw-a", "gw-b", "gw-c"] {
        let line = listed.lines().find(|line| line.starts_with(node)).unwrap_or_else(|| panic!("{node} is not listed:\n{listed}"));
        assert!(line.contains(env!("CARGO_PKG_VERSION")) && line.contains(" s ago"), "{line}");
    }

    // A configuration document signed by the operator is taken by every node; the same
    // document altered after signing is refused by every node, with the reason on record
    // and under the node's prefix.
    let document = |generation: u32, toml: &str| {
        let file = operator.path().join(format!("policy-{generation}.toml"));
        std::fs::write(&file, toml).expect("write policy");
        let signed = run(mldefender().args(["fleet", "sign-config", "--key"]).arg(&private).args(["--generation", &generation.to_string()]).arg(&file));
        assert!(signed.status.success(), "{}", stderr(&signed));
        stdout(&signed).trim().to_string()
    };
    let notes = |lab: &Lab, what: &str| -> Vec<String> {
        lab.events()
            .iter()
            .filter(|event| event["action"] == "fleet")
            .filter_map(|event| event["provenance"].as_str().map(str::to_string))
            .filter(|note| note.contains(what))
            .collect()
    };
    // Each node takes it and applies it: its supervisor restarts in place (the same pid,
    // enforcement kept in the kernel) with the document laid over its file.
    let pids: Vec<Value> = [&sa, &sb, &sc].iter().map(|supervisor| supervisor.status()["supervisor_pid"].clone()).collect();
    let good = document(1, "[response]\nttl-scan-secs = 40\n");
    assert!(cluster.ctl("root", &["put", "/mld/config", &good]).status.success());
    for (lab, supervisor) in [(&a, &mut sa), (&b, &mut sb), (&c, &mut sc)] {
        supervisor.wait_ready_times(2, Duration::from_secs(60));
        assert!(
            eventually(Duration::from_secs(10), || notes(lab, "config-applied").iter().any(|note| note.contains("generation 1"))),
            "lab {} applies the document:\n{}",
            lab.id,
            supervisor.log()
        );
    }
    for (supervisor, pid) in [&sa, &sb, &sc].into_iter().zip(&pids) {
        assert_eq!(&supervisor.status()["supervisor_pid"], pid, "restarted in place");
        assert!(eventually(Duration::from_secs(20), || members(supervisor) == 3), "three members again: {}", supervisor.status());
    }
    // `fleet status` shows the generation every member runs.
    let generations = || {
        let listed = stdout(&run(mldefender().args(["fleet", "status", "--runtime-dir", &sb.runtime_dir])));
        ["gw-a", "gw-b", "gw-c"].iter().all(|node| listed.lines().any(|line| line.starts_with(node) && line.split_whitespace().nth(3) == Some("1")))
    };
    assert!(eventually(Duration::from_secs(10), generations), "every member runs generation 1");
    let reported = text(&cluster.ctl("root", &["get", "--print-value-only", "/mld/nodes/gw-a/config"]));
    assert!(reported.contains("\"applied\""), "{reported}");
    let tampered = document(2, "[response]\nttl-scan-secs = 40\n").replace("ttl-scan-secs = 40", "ttl-scan-secs = 1");
    assert!(cluster.ctl("root", &["put", "/mld/config", &tampered]).status.success());
    for lab in [&a, &b, &c] {
        assert!(
            eventually(Duration::from_secs(10), || notes(lab, "config-refused").iter().any(|note| note.contains("bad signature"))),
            "lab {} refuses",
            lab.id
        );
    }
    let reported = text(&cluster.ctl("root", &["get", "--print-value-only", "/mld/nodes/gw-b/config"]));
    assert!(reported.contains("\"refused\"") && reported.contains("bad signature"), "{reported}");

    // The attacker scans A only, and is blocked there...
    scan(&a, "a");
    assert!(eventually(Duration::from_secs(10), || blocked(&a, ATTACKER)), "A blocks the scanner:\n{}", sa.log());
    let at_a = Instant::now();
    let decided = events_with(&a, "block", ATTACKER);
    assert_eq!(decided.first().map(|event| event["block_ttl_secs"].clone()), Some(Value::from(40)), "the document's TTL is in force at A: {decided:?}");
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

    // A's operator releases the client (`block del`): A withdraws its block from the
    // fleet, and B and C remove theirs long before its expiry, with the reason on record.
    let released = a.mldefender(&["block", "del", CLIENT, "--runtime-dir", &sa.runtime_dir]);
    assert!(released.status.success(), "{}{}", stdout(&released), stderr(&released));
    assert!(stdout(&released).contains("withdraws them from the fleet"), "{}", stdout(&released));
    for lab in [&b, &c] {
        assert!(eventually(Duration::from_secs(5), || !blocked(lab, CLIENT)), "lab {} removes the withdrawn block:\n{}", lab.id, sb.log());
        assert!(lab.ping("c", SERVER), "lab {} lets the released client through", lab.id);
        let withdrawn = events_with(lab, "shared-withdrawn", CLIENT);
        assert!(
            withdrawn.first().and_then(|event| event["provenance"].as_str()).is_some_and(|why| why.contains("fleet node gw-a withdrew")),
            "lab {}: {withdrawn:?}",
            lab.id
        );
    }
    assert!(!events_with(&a, "unblock", CLIENT).is_empty(), "A logs the operator's release");
    assert!(!blocked(&a, CLIENT), "A does not block the released client again on the scan that led to the block");

    // The blocks end everywhere with their expiry: the deny entries lapse, etcd drops the
    // keys with their lease, and B's attacker gets through again.
    assert!(
        eventually(Duration::from_secs(60), || !blocked(&b, ATTACKER) && !blocked(&b, CLIENT)),
        "B's shared blocks expire:\n{}\n{:?}\n{:?}",
        stdout(&b.mldefender(&["block", "list"])),
        events_with(&b, "shared-block", CLIENT),
        events_with(&a, "block", CLIENT)
    );
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
    let mut sb = Supervisor::start(&b, &fleet_config_checking(&cluster, "gw-b", 1, ""));
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

    // A new bundle for B, issued by the fleet CA and copied over B's (as an operator renews
    // a node): the running fleet task gets it from the supervisor and reconnects once with
    // it, no restart, no reconnect storm.
    let renewed = tempfile::tempdir().expect("dir").keep();
    let issued = run(mldefender().args(["pki", "issue", "--ca-dir"]).arg(cluster.state.join("ca")).args(["--node", "gw-b", "--out"]).arg(renewed.join("gw-b")));
    assert!(issued.status.success(), "{}", stderr(&issued));
    for file in ["etcd-client.pem", "etcd-client-key.pem"] {
        let to = cluster.state.join("bundles/gw-b").join(file);
        std::fs::copy(renewed.join("gw-b").join(file), cluster.state.join("bundles/gw-b").join(format!(".{file}.new"))).expect("copy");
        std::fs::rename(cluster.state.join("bundles/gw-b").join(format!(".{file}.new")), &to).expect("rename into place");
    }
    let renewal_noted =
        || b.events().iter().any(|event| event["action"] == "fleet" && event["provenance"].as_str().unwrap_or("").contains("certificate-renewed"));
    assert!(eventually(Duration::from_secs(15), renewal_noted), "B's fleet task took the new certificate:\n{}", sb.log());
    assert!(eventually(Duration::from_secs(10), || pipeline(&sb, "fleet_connected") == 1), "{}", sb.status());
    std::thread::sleep(Duration::from_secs(3));
    let notes: Vec<String> =
        b.events().iter().filter(|event| event["action"] == "fleet").map(|event| event["provenance"].as_str().unwrap_or("").to_string()).collect();
    let after: Vec<&String> = notes.iter().skip_while(|note| !note.contains("certificate-renewed")).skip(1).collect();
    assert_eq!(after.iter().filter(|note| note.contains("connected to etcd")).count(), 1, "one reconnect for the new certificate: {after:?}");
    assert!(!after.iter().any(|note| note.contains("lost etcd")), "{after:?}");
    assert_eq!(sb.task("fleet")["restarts"], 1, "no restart for it (the one restart is the SIGKILL's)");
    let _ = std::fs::remove_dir_all(&renewed);

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

    // A's log head is anchored in etcd: its log verifies against the anchor, and the same
    // log cut back to before the anchored record no longer does.
    let anchors = || text(&cluster.ctl("root", &["get", "--prefix", "--print-value-only", "/mld/nodes/gw-a/"]));
    assert!(eventually(Duration::from_secs(10), || anchors().contains("\"hmac\"")), "A's anchor: {}", anchors());
    let exported = tempfile::NamedTempFile::new().expect("anchors file");
    std::fs::write(exported.path(), anchors()).expect("write anchors");
    let anchored: u64 = mld_eventlog::parse_anchors(&anchors()).iter().map(|anchor| anchor.seq).max().expect("an anchor");
    sb.stop();
    sa.stop();
    let key = format!("/run/mldefender-lab-{}/keys/log.key", a.id);
    let verify = || run(mldefender().args(["log", "verify", "--key", &key, "--anchors"]).arg(exported.path()).arg(a.log_dir()));
    let intact = verify();
    assert!(intact.status.success() && stdout(&intact).contains("anchor ok"), "{}{}", stdout(&intact), stderr(&intact));
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(a.log_dir()).expect("log dir").flatten().map(|entry| entry.path()).collect();
    files.retain(|file| file.file_name().is_some_and(|name| name.to_string_lossy().starts_with("events-")));
    files.sort();
    let newest = files.last().expect("a log file");
    let kept: Vec<String> = std::fs::read_to_string(newest)
        .expect("read log")
        .lines()
        .filter(|line| serde_json::from_str::<Value>(line).ok().and_then(|record| record["seq"].as_u64()).is_some_and(|seq| seq < anchored))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(newest, kept.concat()).expect("cut the log back");
    let cut = verify();
    assert!(!cut.status.success() && stdout(&cut).contains("cut back"), "{}{}", stdout(&cut), stderr(&cut));
}

/// The "arrived N ms after it was decided" of each shared-block record in `lab`'s log.
fn arrival_ms(lab: &Lab) -> Vec<u64> {
    lab.events()
        .iter()
        .filter(|event| event["action"] == "shared-block")
        .filter_map(|event| {
            let provenance = event["provenance"].as_str()?;
            provenance.split("arrived ").nth(1)?.split(" ms").next()?.parse().ok()
        })
        .collect()
}

fn percentile(values: &[u64], p: usize) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get((sorted.len() * p).div_ceil(100).saturating_sub(1)).copied().unwrap_or(0)
}

/// Hands A's fleet task `count` decisions as its detect task would (tests/fleet/inject.py,
/// as the detect task's user).
fn inject(a: &Lab, start: usize, count: usize, spacing_ms: u32) {
    let socket = format!("/run/mldefender-lab-{}/fleet.sock", a.id);
    let output = run(std::process::Command::new("setpriv")
        .args(["--reuid=mld-detect", "--regid=mld-detect", "--clear-groups", "/usr/bin/python3"])
        .arg(repo().join("tests/fleet/inject.py"))
        .args([socket, start.to_string(), count.to_string(), spacing_ms.to_string()]));
    assert!(output.status.success(), "inject: {}", stderr(&output));
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit(')').next().expect("fields").split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// Benchmark (docs/benchmarks.md, "Fleet"): block decided on A → applied on B and C, with
/// etcd's own watch latency (etcdctl) measured in the same run as the anchor.
#[test]
#[ignore = "benchmark: cargo test -p mld-cli --test fleet -- --ignored --nocapture"]
fn bench_shared_block_propagation() {
    let Some((a, b, c, cluster)) = three_gateways() else { return };
    // Receivers whose breaker lets a burst of 1,200 through (the default is 120 a minute).
    let roomy = "[response]\nmax-new-blocks-per-minute = 100000\nmax-active-blocks = 100000\n";
    let mut sa = Supervisor::start(&a, &fleet_config(&cluster, "gw-a", ""));
    let mut sb = Supervisor::start(&b, &fleet_config(&cluster, "gw-b", roomy));
    let mut sc = Supervisor::start(&c, &fleet_config(&cluster, "gw-c", roomy));
    for supervisor in [&mut sa, &mut sb, &mut sc] {
        supervisor.wait_ready(Duration::from_secs(30));
    }
    for supervisor in [&sa, &sb, &sc] {
        let members = || supervisor.status()["pipeline"]["fleet_members"].as_u64() == Some(3);
        assert!(eventually(Duration::from_secs(20), members), "{}", supervisor.log());
    }
    // The anchor: etcdctl watching A's blocks from the cluster's hub.
    let mut watcher = std::process::Command::new("bash")
        .arg(repo().join("tests/fleet/etcd.sh"))
        .args(["ctl", &cluster.id, "root", "watch", "--prefix", "/mld/blocks/gw-a/"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl watch");
    let watched = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let sink = std::sync::Arc::clone(&watched);
    let out = watcher.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
            if let Some(decided) = serde_json::from_str::<Value>(&line).ok().and_then(|value| value["decided-at-ms"].as_u64()) {
                sink.lock().expect("lock").push(now.saturating_sub(decided));
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));

    // 200 blocks, 20 ms apart.
    inject(&a, 0, 200, 20);
    for lab in [&b, &c] {
        assert!(
            eventually(Duration::from_secs(30), || arrival_ms(lab).len() >= 200),
            "lab {}: {} of 200\nA: {}\nB: {}\n{}",
            lab.id,
            arrival_ms(lab).len(),
            sa.status()["pipeline"],
            sb.status()["pipeline"],
            sb.log()
        );
    }
    let anchor = watched.lock().expect("lock").clone();
    let (at_b, at_c) = (arrival_ms(&b), arrival_ms(&c));
    eprintln!(
        "200 blocks, 20 ms apart: decided on A -> judged on B p50 {} ms p99 {} ms max {} ms; on C p50 {} ms p99 {} ms max {} ms; etcdctl watch (anchor) n={} p50 {} ms p99 {} ms",
        percentile(&at_b, 50),
        percentile(&at_b, 99),
        percentile(&at_b, 100),
        percentile(&at_c, 50),
        percentile(&at_c, 99),
        percentile(&at_c, 100),
        anchor.len(),
        percentile(&anchor, 50),
        percentile(&anchor, 99)
    );

    // The fleet task at idle: resident memory and CPU over 10 s.
    let fleet = sa.task("fleet");
    let pid = fleet["pid"].as_u64().expect("pid");
    let before = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(10));
    let cpu = (cpu_secs(pid) - before) / 10.0 * 100.0;
    eprintln!("fleet task on A at idle: resident {} MiB, CPU {cpu:.2} % over 10 s", sa.task("fleet")["memory_bytes"].as_u64().unwrap_or(0) >> 20);

    // A burst of 1,000 at once.
    let started = Instant::now();
    inject(&a, 1000, 1000, 0);
    for lab in [&b, &c] {
        assert!(eventually(Duration::from_secs(60), || arrival_ms(lab).len() >= 1200), "lab {}: {} of 1200", lab.id, arrival_ms(lab).len());
    }
    let took = started.elapsed();
    let burst_b: Vec<u64> = arrival_ms(&b).into_iter().skip(200).collect();
    let burst_c: Vec<u64> = arrival_ms(&c).into_iter().skip(200).collect();
    let anchor = watched.lock().expect("lock").clone();
    let burst_anchor: Vec<u64> = anchor.iter().skip(200).copied().collect();
    eprintln!(
        "burst of 1000: last applied on B {} ms, on C {} ms after its decision (all seen in the logs within {} ms); etcdctl watch (anchor) last {} ms (n={})",
        percentile(&burst_b, 100),
        percentile(&burst_c, 100),
        took.as_millis(),
        percentile(&burst_anchor, 100),
        burst_anchor.len()
    );
    eprintln!("fleet task on A after the burst: resident {} MiB", sa.task("fleet")["memory_bytes"].as_u64().unwrap_or(0) >> 20);
    let _ = watcher.kill();
    let _ = watcher.wait();
    for supervisor in [sa, sb, sc] {
        supervisor.stop();
    }
}
