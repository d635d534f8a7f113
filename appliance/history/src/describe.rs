//! Events as text (issue 19): a short, deterministic English description of a decision
//! event, built from its signed fields, in the words an analyst would use ("blocked
//! 10.66.2.2, which scanned 10.66.9.2 (112 ports in 10 s): a TCP port scan; the fast rules
//! and the model agreed; for 1 hour").
//!
//! The description is derived, not stored: it is a pure function of the verified record,
//! so the same record always reads the same, an old log gains descriptions when this
//! wording improves (the text index is rebuilt when [`DESCRIPTION_VERSION`] changes), and
//! the signed record stays the single source of truth. Observations (one per flow) are not
//! described by default: they are most of the log (1,696 of 1,700 records in the bundled
//! attack capture), and a question is almost always about a decision.
//!
//! Numbers come from the record's own measurements (the source's 10 s window and the
//! flow); service names from the destination port's well-known service.

use serde_json::{Map, Value};

/// Changes whenever the wording does: the text index records it and is rebuilt from the log
/// when it differs, so old and new wordings never mix in one index.
pub const DESCRIPTION_VERSION: u32 = 2;

/// The description of an event record, or `None` for what is not described: records
/// that are not events, and observations unless `observations` is set.
pub fn describe(record: &Map<String, Value>, observations: bool) -> Option<String> {
    if record.get("type").and_then(Value::as_str) != Some("event") {
        return None;
    }
    let event = Event(record);
    let action = event.text("action")?;
    let src = event.text("src_ip").unwrap_or("an unknown source");
    let text = match action {
        "observe" if observations => observation(&event),
        "observe" => return None,
        "block" => {
            let mut text = format!("blocked {src}, which {}; {}; for {}", attack(&event), engines(&event), duration(event.number("block_ttl_secs")));
            if let Some(step) = event.number("escalation_step").filter(|step| *step >= 1.0) {
                text.push_str(&format!(", repeat offender (block number {}, time doubled)", step as u64 + 1));
            }
            text
        }
        "would-block" => format!("would have blocked {src} (dry run, not enforced), which {}; {}", attack(&event), engines(&event)),
        "alert" => format!("alert, not blocked: {src} looked like it {}; {}; {}", attack(&event), engines(&event), why_not_blocked(&event)),
        "refused" => format!("refused to block {src}, which {}: {}", attack(&event), why_not_blocked(&event)),
        "breaker-open" => format!("the blocking breaker opened (too many blocks at once): {src}, which {}, was not blocked", attack(&event)),
        "expire" => format!("a block expired: {src} may connect again (it had been blocked for {})", category_words(&event)),
        "release-benign" => format!("an operator released {src} and marked it benign"),
        "unblock" => format!("an operator removed the block of {src}"),
        "guard-on" => format!("guarded {} against a flood from random (spoofed) sources", service_target(&event)),
        "guard-off" => format!("the flood guard of {} lapsed: the random-source flood stopped", service_target(&event)),
        "shared-block" => format!("applied another fleet member's block of {src}, which {}", attack(&event)),
        "shared-refused" => format!("refused another fleet member's block of {src}: {}", why_not_blocked(&event)),
        "shared-withdrawn" => format!("withdrew another fleet member's block of {src}"),
        "fleet" => format!("fleet: {}", first_clause(event.text("provenance").unwrap_or("an event of the fleet"))),
        "gap" => format!("the log lost events: {}", first_clause(event.text("provenance").unwrap_or("the queue was full"))),
        "config" => format!("the configuration changed: {}", first_clause(event.text("provenance").unwrap_or("a configuration was applied"))),
        other => format!("{other} about {src}"),
    };
    Some(text)
}

/// What the sentence embedder reads of a description: the words, without addresses and
/// measurements. Addresses and numbers carry no meaning a sentence model can compare (an
/// address is 7 tokens of digits), cost most of the tokens (a description's 55 become about
/// 25) and would make every description distinct; questions about an address are answered
/// by the address filter instead (`TextIndex::ask` takes addresses from the question).
/// So: every address becomes "a host", and every parenthesised aside holding a digit
/// ("(112 ports in 10 s)", "(score 0.81)", "(port 22)") is left out. Identical texts embed
/// once (the index caches them).
pub fn semantic_text(description: &str) -> String {
    let mut out = String::with_capacity(description.len());
    let mut depth_start: Option<usize> = None;
    let mut aside = String::new();
    for c in description.chars() {
        match (c, depth_start) {
            ('(', None) => {
                depth_start = Some(out.len());
                aside.clear();
                aside.push(c);
            }
            (')', Some(_)) => {
                aside.push(c);
                if !aside.chars().any(|c| c.is_ascii_digit()) {
                    out.push_str(&aside);
                }
                depth_start = None;
            }
            (_, Some(_)) => aside.push(c),
            (_, None) => out.push(c),
        }
    }
    if depth_start.is_some() {
        out.push_str(&aside);
    }
    let words: Vec<String> = out
        .split(' ')
        .filter(|word| !word.is_empty())
        .map(|word| {
            let core = word.trim_end_matches([',', ';', ':', '.']);
            if core.parse::<std::net::IpAddr>().is_ok() {
                format!("a host{}", &word[core.len()..])
            } else {
                word.to_string()
            }
        })
        .collect();
    words.join(" ").replace(" ;", ";").replace(" ,", ",").replace(" :", ":")
}

/// Read access to a record's fields.
struct Event<'a>(&'a Map<String, Value>);

impl Event<'_> {
    fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    fn number(&self, name: &str) -> Option<f64> {
        self.0.get(name).and_then(Value::as_f64).filter(|value| value.is_finite())
    }

    fn port(&self) -> Option<u16> {
        self.0.get("dst_port").and_then(Value::as_u64).and_then(|port| u16::try_from(port).ok()).filter(|port| *port != 0)
    }

    fn protocol(&self) -> &str {
        self.text("protocol_name").unwrap_or("ip")
    }
}

/// What the source did, by category, as a clause after it: "scanned 10.66.9.2 (112 ports
/// in 10 s): a TCP port scan". The verb comes first: analysts ask "who scanned", "who
/// flooded", and the sentence model matches verbs to verbs.
fn attack(event: &Event) -> String {
    let protocol = event.protocol().to_uppercase();
    let dst = event.text("dst_ip").unwrap_or("an unknown host");
    let ports = event.number("src_10s_distinct_dst_ports").unwrap_or(0.0);
    let hosts = event.number("src_10s_distinct_dst_addrs").unwrap_or(0.0);
    let packets = event.number("src_10s_packets_per_sec").unwrap_or(0.0);
    let connections = event.number("src_10s_new_flows_per_sec").unwrap_or(0.0);
    match event.text("category").unwrap_or("unclassified") {
        "scan" if hosts >= 2.0 => format!("scanned {} hosts ({} ports in 10 s), among them {dst}: a {protocol} scan", count(hosts), count(ports)),
        "scan" => format!("scanned {dst} ({} ports in 10 s): a {protocol} port scan", count(ports)),
        "flood" => {
            let kind = match event.protocol() {
                "tcp" if event.number("src_10s_syn_without_ack_ratio").unwrap_or(0.0) >= 0.5 => "a SYN flood",
                "tcp" if is_web(event.port()) => "an HTTP request flood",
                "tcp" => "a TCP flood",
                "udp" => "a UDP flood",
                "icmp" | "icmpv6" => "an ICMP (ping) flood",
                _ => "a flood",
            };
            format!("flooded {} ({} packets/s): {kind}", service_target(event), count(packets))
        }
        "brute-force" => format!("guessed passwords on {} ({} connections/s): password guessing (brute force)", service_target(event), rate(connections)),
        "slow" => format!("held connections open to {}: a slow HTTP attack (slowloris)", service_target(event)),
        "other" => format!("sent suspicious {protocol} traffic to {}", service_target(event)),
        _ => format!("sent {protocol} traffic to {}", service_target(event)),
    }
}

/// The category alone, for records whose measurements are not the attack's (an expiry).
fn category_words(event: &Event) -> &'static str {
    match event.text("category").unwrap_or("") {
        "scan" => "a port scan",
        "flood" => "a flood",
        "brute-force" => "password guessing (brute force)",
        "slow" => "a slow HTTP attack",
        "benign" => "nothing (released as benign)",
        _ => "an attack",
    }
}

/// "the web server 10.66.9.2 (port 80, http)", "the ssh service of 10.66.9.2 (port 22)".
fn service_target(event: &Event) -> String {
    let dst = event.text("dst_ip").unwrap_or("an unknown host");
    match event.port() {
        Some(port) if is_web(Some(port)) => format!("the web server {dst} (port {port}, {})", service_name(port, event.protocol()).unwrap_or("http")),
        Some(port) => match service_name(port, event.protocol()) {
            Some(service) => format!("the {service} service of {dst} (port {port})"),
            None => format!("{dst} port {port}"),
        },
        None => dst.to_string(),
    }
}

/// Which engines decided, as the analyst reads it.
fn engines(event: &Event) -> String {
    let score = |name| event.number(name).map_or(String::new(), |score| format!(" (score {score:.2})"));
    match event.text("authoritative_source").unwrap_or("none") {
        "both" => "the fast rules and the model agreed".to_string(),
        "fast" => format!("the fast rules decided{}", score("score_fast")),
        "model" => format!("the model decided{}", score("score_model")),
        _ => "no engine was sure".to_string(),
    }
}

/// Why a decision stopped short of a block: the allowlist, or the policy's own words.
fn why_not_blocked(event: &Event) -> String {
    if event.0.get("allowlisted").and_then(Value::as_bool) == Some(true) {
        return "the address is allowlisted (a protected host is never blocked)".to_string();
    }
    let provenance = event.text("provenance").unwrap_or("");
    if let Some((_, reason)) = provenance.split_once("not blocked: ") {
        return first_clause(reason).to_string();
    }
    if provenance.contains("no engine alone is sure enough") {
        return "neither engine was sure enough alone".to_string();
    }
    if let Some((_, policy)) = provenance.rsplit_once("policy ") {
        return format!("policy {}", first_clause(policy));
    }
    "below the blocking thresholds".to_string()
}

fn observation(event: &Event) -> String {
    let packets = event.number("cic_total_fwd_packets").unwrap_or(0.0) + event.number("cic_total_backward_packets").unwrap_or(0.0);
    let bytes = event.number("fwd_ip_bytes").unwrap_or(0.0) + event.number("bwd_ip_bytes").unwrap_or(0.0);
    let seconds = event.number("cic_flow_duration").unwrap_or(0.0) / 1e6;
    format!(
        "a {} connection from {} to {}: {} packets, {} bytes in {seconds:.1} s",
        event.protocol().to_uppercase(),
        event.text("src_ip").unwrap_or("an unknown source"),
        service_target(event),
        count(packets),
        count(bytes)
    )
}

fn first_clause(text: &str) -> &str {
    let end = text.find(';').unwrap_or(text.len());
    let clause = text[..end].trim();
    // Bounded: a description is short whatever the provenance holds.
    let mut cut = clause.len().min(160);
    while !clause.is_char_boundary(cut) {
        cut -= 1;
    }
    &clause[..cut]
}

fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "an unstated time".to_string(),
        Some(seconds) if seconds >= 7200.0 && seconds % 3600.0 == 0.0 => format!("{} hours", count(seconds / 3600.0)),
        Some(seconds) if seconds >= 3600.0 && seconds % 3600.0 == 0.0 => "1 hour".to_string(),
        Some(seconds) if seconds >= 120.0 && seconds % 60.0 == 0.0 => format!("{} minutes", count(seconds / 60.0)),
        Some(seconds) => format!("{} s", count(seconds)),
    }
}

fn count(value: f64) -> u64 {
    value.max(0.0).round() as u64
}

fn rate(value: f64) -> String {
    if value >= 10.0 {
        format!("{}", count(value))
    } else {
        format!("{value:.1}")
    }
}

fn is_web(port: Option<u16>) -> bool {
    matches!(port, Some(80 | 443 | 8000 | 8080 | 8443))
}

/// The well-known service of a port (IANA's names where analysts use them).
pub fn service_name(port: u16, protocol: &str) -> Option<&'static str> {
    let name = match (port, protocol) {
        (20 | 21, "tcp") => "ftp",
        (22, "tcp") => "ssh",
        (23, "tcp") => "telnet",
        (25 | 465 | 587, "tcp") => "mail (smtp)",
        (53, _) => "dns",
        (67 | 68, "udp") => "dhcp",
        (69, "udp") => "tftp",
        (80 | 8000 | 8080, "tcp") => "http",
        (110 | 995, "tcp") => "mail (pop3)",
        (111, _) => "rpcbind",
        (123, "udp") => "ntp",
        (139 | 445, "tcp") => "windows file sharing (smb)",
        (143 | 993, "tcp") => "mail (imap)",
        (161 | 162, "udp") => "snmp",
        (389 | 636, "tcp") => "ldap",
        (443 | 8443, "tcp") => "https",
        (443, "udp") => "https (quic)",
        (514, "udp") => "syslog",
        (1433, "tcp") => "sql server",
        (1883 | 8883, "tcp") => "mqtt",
        (2049, _) => "nfs",
        (3306, "tcp") => "mysql",
        (3389, "tcp") => "remote desktop (rdp)",
        (5060 | 5061, _) => "sip",
        (5432, "tcp") => "postgresql",
        (5900, "tcp") => "vnc",
        (6379, "tcp") => "redis",
        (27017, "tcp") => "mongodb",
        _ => return None,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(fields: Value) -> Map<String, Value> {
        let mut base = json!({"type": "event", "src_ip": "10.66.2.2", "dst_ip": "10.66.9.2", "protocol_name": "tcp", "provenance": ""});
        base.as_object_mut().expect("object").extend(fields.as_object().expect("object").clone());
        base.as_object().expect("object").clone()
    }

    #[test]
    fn a_scan_block_reads_as_an_analyst_would_say_it() {
        let block = record(json!({"action": "block", "category": "scan", "dst_port": 111, "authoritative_source": "both",
            "block_ttl_secs": 3600, "escalation_step": 0, "src_10s_distinct_dst_ports": 112, "src_10s_distinct_dst_addrs": 1}));
        assert_eq!(
            describe(&block, false).as_deref(),
            Some("blocked 10.66.2.2, which scanned 10.66.9.2 (112 ports in 10 s): a TCP port scan; the fast rules and the model agreed; for 1 hour")
        );
        let mut repeat = block.clone();
        repeat.insert("escalation_step".into(), json!(2));
        repeat.insert("block_ttl_secs".into(), json!(14400));
        assert!(describe(&repeat, false).expect("described").ends_with("for 4 hours, repeat offender (block number 3, time doubled)"));
    }

    #[test]
    fn each_decision_names_its_service_and_reason() {
        let brute = record(json!({"action": "alert", "category": "brute-force", "dst_port": 22, "authoritative_source": "fast", "score_fast": 0.51,
            "src_10s_new_flows_per_sec": 6.0, "provenance": "fast 0.51 [...]; policy tiered: no engine alone is sure enough, and they do not"}));
        assert_eq!(
            describe(&brute, false).as_deref(),
            Some("alert, not blocked: 10.66.2.2 looked like it guessed passwords on the ssh service of 10.66.9.2 (port 22) (6.0 connections/s): password guessing (brute force); the fast rules decided (score 0.51); neither engine was sure enough alone")
        );
        let flood = record(json!({"action": "block", "category": "flood", "dst_port": 80, "authoritative_source": "fast", "score_fast": 1.0,
            "src_10s_syn_without_ack_ratio": 0.98, "src_10s_packets_per_sec": 12003.4, "block_ttl_secs": 600}));
        assert!(describe(&flood, false).expect("described").contains("flooded the web server 10.66.9.2 (port 80, http) (12003 packets/s): a SYN flood"));
        let refused = record(json!({"action": "refused", "category": "flood", "protocol_name": "udp", "dst_port": 53, "allowlisted": true}));
        assert!(describe(&refused, false).expect("described").ends_with(
            "flooded the dns service of 10.66.9.2 (port 53) (0 packets/s): a UDP flood: the address is allowlisted (a protected host is never blocked)"
        ));
        let spoofed = record(
            json!({"action": "alert", "category": "flood", "provenance": "fast 1.0; not blocked: a spoofed source cannot be told from a real one; more"}),
        );
        assert!(describe(&spoofed, false).expect("described").ends_with("no engine was sure; a spoofed source cannot be told from a real one"));
        let guard = record(json!({"action": "guard-on", "src_ip": "0.0.0.0", "dst_port": 443}));
        assert_eq!(
            describe(&guard, false).as_deref(),
            Some("guarded the web server 10.66.9.2 (port 443, https) against a flood from random (spoofed) sources")
        );
        let config = record(json!({"action": "config", "provenance": "generation 3 applied; 2 keys changed"}));
        assert_eq!(describe(&config, false).as_deref(), Some("the configuration changed: generation 3 applied"));
        let expire = record(json!({"action": "expire", "category": "scan"}));
        assert_eq!(describe(&expire, false).as_deref(), Some("a block expired: 10.66.2.2 may connect again (it had been blocked for a port scan)"));
    }

    #[test]
    fn observations_and_other_records_are_described_only_when_asked() {
        let observe = record(json!({"action": "observe", "dst_port": 443, "cic_total_fwd_packets": 10, "cic_total_backward_packets": 12,
            "fwd_ip_bytes": 900, "bwd_ip_bytes": 15000, "cic_flow_duration": 2_500_000.0}));
        assert_eq!(describe(&observe, false), None);
        assert_eq!(
            describe(&observe, true).as_deref(),
            Some("a TCP connection from 10.66.2.2 to the web server 10.66.9.2 (port 443, https): 22 packets, 15900 bytes in 2.5 s")
        );
        let mut checkpoint = observe.clone();
        checkpoint.insert("type".into(), json!("checkpoint"));
        assert_eq!(describe(&checkpoint, true), None);
    }

    #[test]
    fn the_embedded_text_keeps_the_words_and_leaves_out_addresses_and_measurements() {
        assert_eq!(
            semantic_text("blocked 10.66.2.2, which scanned 10.66.9.2 (112 ports in 10 s): a TCP port scan; the fast rules decided (score 0.81); for 1 hour"),
            "blocked a host, which scanned a host: a TCP port scan; the fast rules decided; for 1 hour"
        );
        assert_eq!(
            semantic_text("a slow HTTP attack (slowloris) holding connections open to the web server fd00::9:2 (port 8080, http):"),
            "a slow HTTP attack (slowloris) holding connections open to the web server a host:"
        );
        assert_eq!(semantic_text("unbalanced (12"), "unbalanced (12");
    }

    #[test]
    fn a_description_is_bounded_whatever_the_provenance_holds() {
        let long = record(json!({"action": "gap", "provenance": "x".repeat(100_000)}));
        assert!(describe(&long, false).expect("described").len() < 200);
        let multibyte = record(json!({"action": "fleet", "provenance": "é".repeat(1000)}));
        assert!(describe(&multibyte, false).expect("described").len() < 200);
    }
}
