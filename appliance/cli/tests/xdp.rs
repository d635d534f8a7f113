//! Privileged tests of the XDP data plane: real program, real veths in network
//! namespaces, real traffic tools. They need root; CI sets MLD_REQUIRE_LAB=1 so that
//! they cannot be skipped silently.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::lab::{eventually, Lab};
use common::*;
use serde_json::Value;

fn counters(lab: &Lab) -> serde_json::Map<String, Value> {
    let output = lab.mldefender(&["counters", "--json"]);
    assert!(output.status.success(), "counters failed: {}", stderr(&output));
    match serde_json::from_str(stdout(&output).trim()) {
        Ok(Value::Object(map)) => map,
        other => panic!("counters printed {other:?}"),
    }
}

fn counter(lab: &Lab, name: &str) -> u64 {
    counters(lab)[name].as_u64().unwrap_or_else(|| panic!("counter {name}"))
}

fn dropped_for(lab: &Lab, reason: &str) -> u64 {
    counters(lab)["dropped_by_reason"][reason].as_u64().expect("reason counter")
}

fn xdp_attached(lab: &Lab) -> bool {
    let output = lab.exec("g", &["ip", "link", "show"]);
    let text = stdout(&output);
    text.contains(" xdp") || text.contains("xdpgeneric") || text.contains("prog/xdp")
}

#[test]
fn deny_allow_expiry_del_and_ipv6_on_live_traffic() {
    let Some(lab) = Lab::up() else { return };
    let config = lab.config("");
    let mut capture = lab.capture(&config);
    assert!(xdp_attached(&lab), "the program is attached");

    // Nothing is blocked yet.
    assert!(lab.ping("a", "10.66.9.2"), "attacker reaches the server before any block");

    // A deny entry drops: traffic stops and the reason's counter rises.
    let added = lab.mldefender(&["block", "add", "10.66.2.2", "--ttl", "600", "--reason", "scan"]);
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(!lab.ping("a", "10.66.9.2"), "blocked attacker still reaches the server");
    assert!(dropped_for(&lab, "scan") >= 1, "scan drops are counted");
    assert!(lab.ping("c", "10.66.9.2"), "the client is not affected");
    let listed = stdout(&lab.mldefender(&["block", "list"]));
    assert!(listed.contains("10.66.2.2/32") && listed.contains("scan"), "{listed}");

    // `block del` restores traffic.
    let deleted = lab.mldefender(&["block", "del", "10.66.2.2"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(lab.ping("a", "10.66.9.2"), "unblocked attacker reaches the server again");

    // Allow beats deny: a covered deny entry is refused, and a wider deny entry does
    // not drop the allowlisted source.
    assert!(lab.mldefender(&["allow", "add", "10.66.1.0/24"]).status.success());
    let refused = lab.mldefender(&["block", "add", "10.66.1.2", "--ttl", "60"]);
    assert_eq!(refused.status.code(), Some(64), "covered by the allowlist: {}", stderr(&refused));
    assert!(stderr(&refused).contains("covered by allowlist entry 10.66.1.0/24"), "{}", stderr(&refused));
    // 10.66.0.0/22 holds the client (10.66.1.2) and the attacker (10.66.2.2), not the server.
    let wide = lab.mldefender(&["block", "add", "10.66.0.0/22", "--ttl", "600"]);
    assert!(wide.status.success(), "{}", stderr(&wide));
    assert!(stdout(&wide).contains("allowlisted 10.66.1.0/24 inside 10.66.0.0/22 stay reachable"), "{}", stdout(&wide));
    let allowed_before = counter(&lab, "allowed");
    assert!(lab.ping("c", "10.66.9.2"), "the allowlisted client passes a wider deny entry");
    assert!(counter(&lab, "allowed") > allowed_before);
    assert!(!lab.ping("a", "10.66.9.2"), "the attacker is inside the wide deny entry");
    assert!(lab.mldefender(&["block", "del", "10.66.0.0/22"]).status.success());

    // An expired entry lets traffic through again and is swept.
    assert!(lab.mldefender(&["block", "add", "10.66.2.2", "--ttl", "2"]).status.success());
    assert!(!lab.ping("a", "10.66.9.2"), "dropped while the entry lives");
    assert!(eventually(Duration::from_secs(10), || lab.ping("a", "10.66.9.2")), "traffic resumes after the TTL");
    capture.wait_for_stderr("deny entry 10.66.2.2/32 expired and was removed", Duration::from_secs(10));
    assert!(!stdout(&lab.mldefender(&["block", "list"])).contains("10.66.2.2"), "swept from the map");

    // IPv6 prefixes.
    assert!(lab.ping("a", "fd66:9::2"), "IPv6 reaches the server");
    assert!(lab.mldefender(&["block", "add", "fd66:2::/64", "--ttl", "600", "--reason", "flood"]).status.success());
    assert!(!lab.ping("a", "fd66:9::2"), "the IPv6 prefix is dropped");
    assert!(lab.ping("c", "fd66:9::2"), "another IPv6 source is not");
    assert!(lab.ping("a", "10.66.9.2"), "the attacker's IPv4 address is not in the IPv6 prefix");
    assert!(dropped_for(&lab, "flood") >= 1);

    // SIGTERM leaves the program enforcing (fail static): the IPv6 block still drops.
    let (_, log) = capture.stop();
    assert!(log.contains("XDP program left enforcing"), "{log}");
    assert!(xdp_attached(&lab), "the program was detached at exit");
    assert!(!lab.ping("a", "fd66:9::2"), "the block lapsed with the capture process");
    assert!(stdout(&lab.mldefender(&["block", "list"])).contains("fd66:2::/64"), "the deny entry is gone");
    // `capture detach` is the way to remove it: no program, no pins, traffic passes.
    let detached = run(mldefender().args(["capture", "detach", "--config"]).arg(config.path()));
    assert!(detached.status.success(), "{}", stderr(&detached));
    assert!(stderr(&detached).contains("XDP program detached"), "{}", stderr(&detached));
    assert!(!xdp_attached(&lab), "ip link still shows an XDP program");
    assert!(!std::path::Path::new(&lab.bpffs_dir()).join("mld_deny").exists(), "pins removed");
    assert!(lab.ping("a", "fd66:9::2"), "traffic passes once detached");
    let after = lab.mldefender(&["block", "list"]);
    assert!(!after.status.success() && stderr(&after).contains("no capture is running"), "{}", stderr(&after));
}

fn flows_from(jsonl: &str) -> Vec<serde_json::Map<String, Value>> {
    jsonl
        .lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("bad flow line {line}: {other:?}"),
        })
        .collect()
}

fn number(flow: &serde_json::Map<String, Value>, key: &str) -> u64 {
    flow[key].as_f64().unwrap_or_else(|| panic!("no {key}")) as u64
}

#[test]
fn live_flows_match_the_exchange_that_was_sent() {
    let Some(lab) = Lab::up() else { return };
    let config = lab.config("");
    let capture = lab.capture(&config);
    let pings = 5;
    let ping = lab.exec("c", &["ping", "-c", &pings.to_string(), "-i", "0.2", "-s", "100", "10.66.9.2"]);
    assert!(ping.status.success());
    let curl = lab.exec("c", &["curl", "-sf", "-o", "/dev/null", "-w", "%{size_request} %{size_header} %{size_download}", "http://10.66.9.2:8080/blob.bin"]);
    assert!(curl.status.success(), "{}", stderr(&curl));
    let sizes: Vec<u64> = stdout(&curl).split_whitespace().map(|n| n.parse().expect("curl size")).collect();
    let (stdout, log) = capture.stop();
    let flows = flows_from(&stdout);

    let ping_flow =
        flows.iter().find(|flow| flow["Src IP"] == "10.66.1.2" && flow["Protocol"] == 1).unwrap_or_else(|| panic!("no ping flow in {stdout}\n{log}"));
    assert_eq!(number(ping_flow, "Total Fwd Packets"), pings, "echo requests");
    assert_eq!(number(ping_flow, "Total Backward Packets"), pings, "echo replies");
    // 20 (IP) + 8 (ICMP) + 100 (payload) per packet, each way.
    assert_eq!(number(ping_flow, "fwd_ip_bytes"), pings * 128);
    assert_eq!(number(ping_flow, "bwd_ip_bytes"), pings * 128);
    assert_eq!(number(ping_flow, "Total Length of Fwd Packets"), pings * 100);

    let http = flows.iter().find(|flow| flow["Src IP"] == "10.66.1.2" && flow["Dst Port"] == 8080).unwrap_or_else(|| panic!("no HTTP flow in {stdout}"));
    assert_eq!(number(http, "Total Length of Fwd Packets"), sizes[0], "request bytes curl sent");
    assert_eq!(number(http, "Total Length of Bwd Packets"), sizes[1] + sizes[2], "header + body bytes curl received");
    assert_eq!(number(http, "SYN Flag Count"), 2, "SYN and SYN-ACK");
    assert_eq!(http["end_reason"], "tcp-fin");
    assert!(number(http, "ifindex") > 0, "the arrival interface is recorded");
}

#[test]
fn live_capture_and_replay_of_a_tcpdump_capture_give_the_same_flows() {
    let Some(lab) = Lab::up() else { return };
    let config = lab.config("");
    let capture = lab.capture(&config);
    let dir = tempfile::tempdir().expect("temp dir");
    let pcap = dir.path().join("gc.pcap");
    let interface = lab.gateway_interface("c");
    let netns = format!("--net=/var/run/netns/mld{}g", lab.id);
    let mut tcpdump = std::process::Command::new("nsenter")
        .args([netns.as_str(), "tcpdump", "-i", &interface, "--immediate-mode", "-U", "-s", "0", "-w"])
        .arg(&pcap)
        .arg("ip or ip6")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tcpdump");
    let err = tcpdump.stderr.take().expect("stderr");
    let listening = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(err).lines().map_while(Result::ok).any(|line| line.contains("listening on"))
    });
    assert!(eventually(Duration::from_secs(10), || listening.is_finished()), "tcpdump did not start");
    for _ in 0..3 {
        assert!(lab.exec("c", &["curl", "-sf", "-o", "/dev/null", "http://10.66.9.2:8080/blob.bin"]).status.success());
    }
    assert!(lab.exec("c", &["ping", "-c", "3", "-i", "0.2", "10.66.9.2"]).status.success());
    assert!(lab.exec("c", &["dig", "+short", "@10.66.9.2", "lab.test"]).status.success());
    assert!(lab.exec("c", &["ping", "-6", "-c", "2", "-i", "0.2", "fd66:9::2"]).status.success());
    // tcpdump hands packets over in blocks: stop it only once the last answer is on disk,
    // or the replay misses what the live capture saw.
    let echo_replies = || {
        let read = run(std::process::Command::new("tcpdump").args(["-nn", "-r"]).arg(&pcap).arg("icmp6 and ip6[40] == 129"));
        stdout(&read).lines().count()
    };
    assert!(eventually(Duration::from_secs(10), || echo_replies() >= 2), "the capture holds both ICMPv6 echo replies");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(tcpdump.id() as i32), nix::sys::signal::Signal::SIGINT).expect("stop tcpdump");
    tcpdump.wait().expect("tcpdump exit");
    let (live, _) = capture.stop();

    let replay = run(mldefender().arg("flows").arg(&pcap).args(["--format", "jsonl"]));
    assert!(replay.status.success(), "{}", stderr(&replay));
    let key =
        |flow: &serde_json::Map<String, Value>| format!("{} {} {} {} {}", flow["Src IP"], flow["Src Port"], flow["Dst IP"], flow["Dst Port"], flow["Protocol"]);
    // Only the client's conversations with the server: the gateway's own packets
    // (neighbour discovery) leave through the capture point but never arrive at XDP.
    let keep = |flow: &serde_json::Map<String, Value>| {
        let src = flow["Src IP"].as_str().unwrap_or_default();
        let dst = flow["Dst IP"].as_str().unwrap_or_default();
        (src == "10.66.1.2" && dst == "10.66.9.2") || (src == "fd66:1::2" && dst == "fd66:9::2")
    };
    let live: HashMap<String, _> = flows_from(&live).into_iter().filter(keep).map(|flow| (key(&flow), flow)).collect();
    let replayed: HashMap<String, _> = flows_from(&stdout(&replay)).into_iter().filter(keep).map(|flow| (key(&flow), flow)).collect();
    assert!(live.len() >= 6, "curl x3, ping, dig, ping6: {live:?}");
    let mut live_keys: Vec<&String> = live.keys().collect();
    let mut replay_keys: Vec<&String> = replayed.keys().collect();
    live_keys.sort();
    replay_keys.sort();
    assert_eq!(live_keys, replay_keys, "the same flows");
    for (key, flow) in &live {
        let other = &replayed[key];
        for column in [
            "Total Fwd Packets",
            "Total Backward Packets",
            "Total Length of Fwd Packets",
            "Total Length of Bwd Packets",
            "fwd_ip_bytes",
            "bwd_ip_bytes",
            "Fwd Header Length",
            "Bwd Header Length",
            "SYN Flag Count",
            "FIN Flag Count",
            "ACK Flag Count",
            "PSH Flag Count",
            "RST Flag Count",
            "Init_Win_bytes_forward",
            "Init_Win_bytes_backward",
            "Max Packet Length",
            "min_seg_size_forward",
        ] {
            assert_eq!(flow[column], other[column], "{key}: {column} live vs replay");
        }
    }
}

#[test]
fn malformed_traffic_is_counted_and_passed() {
    let Some(lab) = Lab::up() else { return };
    let config = lab.config("");
    let capture = lab.capture(&config);
    let mac = lab.gateway_mac("a");
    let before = counter(&lab, "malformed");
    let script = repo().join("tests/lab/malformed.py");
    // Debian's python3-scapy (scripts/setup installs it).
    let sent = lab.exec("a", &["/usr/bin/python3", script.to_str().expect("path"), &format!("mld{}a0", lab.id), &mac]);
    assert!(sent.status.success(), "scapy failed: {}", stderr(&sent));
    let expected: u64 = stdout(&sent).trim().parse().expect("the script prints how many malformed packets it sent");
    assert!(
        eventually(Duration::from_secs(5), || counter(&lab, "malformed") - before >= expected),
        "malformed counter rose by {} of {expected}",
        counter(&lab, "malformed") - before
    );
    assert!(lab.ping("a", "10.66.9.2"), "well-formed traffic still passes");
    let (_, log) = capture.stop();
    assert!(log.contains("stopped after"), "the capture did not crash: {log}");
}

#[test]
fn unknown_interface_and_missing_privilege_are_named() {
    let Some(lab) = Lab::up() else { return };
    let config = lab.config("[[capture.interfaces]]\nname = \"nosuchif0\"\nrole = \"wan\"\n");
    let netns = format!("--net=/var/run/netns/mld{}g", lab.id);
    let output = run(std::process::Command::new("nsenter").arg(&netns).arg(env!("CARGO_BIN_EXE_mldefender")).args(["capture", "--config"]).arg(config.path()));
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(stderr(&output).contains("interface `nosuchif0` does not exist"), "{}", stderr(&output));

    let config = lab.config("");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(config.path(), std::fs::Permissions::from_mode(0o644)).expect("chmod config");
    let output = run(std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(env!("CARGO_BIN_EXE_mldefender"))
        .args(["capture", "--config"])
        .arg(config.path()));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("needs CAP_NET_ADMIN"), "{}", stderr(&output));
}

/// tcpdump on the server's side of the lab, writing what matches `filter` to a file.
struct ServerCapture {
    child: std::process::Child,
    file: tempfile::NamedTempFile,
}

impl ServerCapture {
    fn start(lab: &Lab, filter: &str) -> ServerCapture {
        let file = tempfile::NamedTempFile::new().expect("temp pcap");
        let netns = format!("--net=/var/run/netns/mld{}s", lab.id);
        let mut child = std::process::Command::new("nsenter")
            .args([netns.as_str(), "tcpdump", "-i", &format!("mld{}s0", lab.id), "-Q", "in", "--immediate-mode", "-U", "-nn", "-s", "128", "-w"])
            .arg(file.path())
            .arg(filter)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start tcpdump on the server");
        let err = child.stderr.take().expect("stderr");
        let listening = std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(err).lines().map_while(Result::ok).any(|line| line.contains("listening on"))
        });
        assert!(eventually(Duration::from_secs(10), || listening.is_finished()), "tcpdump did not start on the server");
        ServerCapture { child, file }
    }

    /// Packets written so far.
    fn count(&self) -> usize {
        let output = run(std::process::Command::new("tcpdump").args(["-nn", "-r"]).arg(self.file.path()));
        stdout(&output).lines().count()
    }

    fn stop(mut self) -> usize {
        self.stop_and_list().lines().count()
    }

    /// Stops the capture; the packets it saw, one line each.
    fn stop_and_list(&mut self) -> String {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
        let output = run(std::process::Command::new("tcpdump").args(["-nn", "-v", "-r"]).arg(self.file.path()));
        stdout(&output)
    }
}

fn send_evasion(lab: &Lab) -> u64 {
    let script = repo().join("tests/lab/evasion.py");
    let mac = lab.gateway_mac("a");
    let sent = lab.exec("a", &["/usr/bin/python3", script.to_str().expect("path"), &format!("mld{}a0", lab.id), &mac, "10.66.2.2", "fd66:2::2"]);
    assert!(sent.status.success(), "scapy failed: {}", stderr(&sent));
    stdout(&sent).trim().parse().expect("the script prints how many packets it sent")
}

#[test]
fn a_denied_source_never_passes_whatever_it_sends() {
    let Some(lab) = Lab::up() else { return };
    let config = lab.config("");
    let capture = lab.capture(&config);
    let filter = "src host 10.66.2.2 or src host fd66:2::2";

    // Neighbour caches warm first: a packet the gateway holds while it resolves the
    // server's address would arrive late, after the block (seen in CI as a false alarm).
    assert!(eventually(Duration::from_secs(5), || lab.ping("a", "10.66.9.2") && lab.ping("a", "fd66:9::2")), "the lab does not route");
    // Not denied: every crafted packet reaches the server (they are worth stopping).
    let server = ServerCapture::start(&lab, filter);
    let sent = send_evasion(&lab) as usize;
    assert!(
        eventually(Duration::from_secs(5), || server.count() >= sent),
        "only {} of {sent} crafted packets reached the server before any block",
        server.count()
    );
    server.stop();

    // Denied: none of them, whatever they are, reaches the server.
    for prefix in ["10.66.2.2", "fd66:2::2"] {
        let added = lab.mldefender(&["block", "add", prefix, "--ttl", "600", "--reason", "scan"]);
        assert!(added.status.success(), "{}", stderr(&added));
    }
    let server = ServerCapture::start(&lab, filter);
    let dropped_before = dropped_for(&lab, "scan");
    let sent = send_evasion(&lab);
    assert!(
        eventually(Duration::from_secs(5), || dropped_for(&lab, "scan") - dropped_before >= sent),
        "{} of {sent} crafted packets from the denied source were dropped",
        dropped_for(&lab, "scan") - dropped_before
    );
    assert!(!lab.ping("a", "10.66.9.2"), "the denied source's pings pass");
    let mut server = server;
    let reached = server.stop_and_list();
    assert_eq!(reached.lines().count(), 0, "packets of a denied source reached the server:\n{reached}");
    assert!(lab.ping("c", "10.66.9.2"), "the client still passes");
    drop(capture);
}

#[test]
fn spoofed_sources_are_dropped_and_counted_on_lan_and_wan() {
    let Some(lab) = Lab::up() else { return };
    let config = lab.config("");
    let capture = lab.capture(&config);
    let script = repo().join("tests/lab/spoof.py");
    let server = ServerCapture::start(&lab, "udp port 7007 and not src host 10.66.2.2");
    let before = counter(&lab, "spoofed");
    // From the attacker's LAN: the client's address, a server-side address, the
    // gateway's own address, the client's IPv6 address.
    let mac = lab.gateway_mac("a");
    let sent = lab.exec(
        "a",
        &[
            "/usr/bin/python3",
            script.to_str().expect("path"),
            &format!("mld{}a0", lab.id),
            &mac,
            "10.66.9.2",
            "10.66.1.2",
            "10.66.9.77",
            "10.66.2.1",
            "fd66:1::2",
        ],
    );
    assert!(sent.status.success(), "scapy failed: {}", stderr(&sent));
    // From the WAN side, to the client: sources inside the LAN's prefixes.
    let mac = lab.gateway_mac("s");
    let sent_wan =
        lab.exec("s", &["/usr/bin/python3", script.to_str().expect("path"), &format!("mld{}s0", lab.id), &mac, "10.66.1.2", "10.66.2.77", "10.66.1.3"]);
    assert!(sent_wan.status.success(), "scapy failed: {}", stderr(&sent_wan));
    assert!(eventually(Duration::from_secs(5), || counter(&lab, "spoofed") - before >= 6), "spoofed counter rose by {}", counter(&lab, "spoofed") - before);
    // The attacker's own address is not spoofed on its own link.
    assert!(lab.ping("a", "10.66.9.2"), "a real source on its own link is dropped");
    // (The client's first IPv6 ping also waits for neighbour discovery on two links.)
    assert!(eventually(Duration::from_secs(3), || lab.ping("c", "fd66:9::2")), "the client's IPv6 is dropped");
    assert_eq!(server.stop(), 0, "spoofed packets reached the server");
    drop(capture);
}
