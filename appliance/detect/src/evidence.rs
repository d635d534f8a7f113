//! Two-way evidence: what a flow shows that a source with a spoofed address cannot
//! cheaply make. A spoofer never sees the destination's answers (they go to the address
//! it forged), so the only proof that a source is who its packets say is something it
//! could only do after reading an answer.
//!
//! The rule, deliberately conservative because it decides whether a fast-path block may
//! stand alone and who may use the circuit breaker's reserved share:
//!
//! - **TCP: the destination sent payload on the flow.** A TCP stack sends data only on an
//!   established connection, and a connection is established only by an ACK that
//!   acknowledges the destination's initial sequence number — a random 32-bit value that
//!   only the receiver of the SYN-ACK knows. So payload from the destination (the flow's
//!   backward direction) proves that the source received the SYN-ACK and completed the
//!   handshake: it is the source the address says (or sits on the path).
//! - **Not counted: a source's RST or ACK after a SYN-ACK without payload following.**
//!   `nmap -sS` answers a SYN-ACK with a RST at the right sequence number, which a blind
//!   spoofer cannot do; but the flow record carries no sequence numbers and no flags per
//!   direction, and a blind RST (or ACK) sent after the SYN makes exactly the same
//!   counts. So a SYN scan, and a connect scan of ports whose services stay silent, show
//!   no two-way evidence here.
//! - **UDP, ICMP and everything else: never.** An answer reaching the source's address
//!   proves nothing about who sent the request (that is how reflection attacks work), and
//!   a spoofer can keep sending after an answer it never saw; without payload semantics
//!   (a DNS transaction id, a QUIC connection id) there is nothing to check.

use mld_flow::features::Feature;
use mld_flow::FlowRecord;

/// Whether `flow` proves that its initiator (`flow.src_ip`) received the destination's
/// answers: a TCP flow on which the destination sent payload (see the module doc).
pub fn two_way_evidence(flow: &FlowRecord) -> bool {
    const TCP: u8 = 6;
    flow.protocol == TCP && flow.features.get(Feature::TotalLengthBwdPackets) > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use mld_flow::features::{FlowFeatures, FEATURE_COUNT};
    use mld_flow::EndReason;

    fn flow(protocol: u8, fwd_packets: f64, bwd_packets: f64, bwd_payload: f64, flags: &[(Feature, f64)]) -> FlowRecord {
        let mut features = [0.0; FEATURE_COUNT];
        features[Feature::TotalFwdPackets as usize] = fwd_packets;
        features[Feature::TotalBwdPackets as usize] = bwd_packets;
        features[Feature::TotalLengthBwdPackets as usize] = bwd_payload;
        for (feature, value) in flags {
            features[*feature as usize] = *value;
        }
        FlowRecord {
            src_ip: "203.0.113.7".parse().expect("ip"),
            src_port: 40000,
            dst_ip: "10.66.9.2".parse().expect("ip"),
            dst_port: 22,
            protocol,
            ip_version: 4,
            first_seen_ns: 0,
            last_seen_ns: 0,
            end_reason: EndReason::TcpFin,
            fwd_ip_bytes: 0,
            bwd_ip_bytes: 0,
            ifindex: 0,
            path: Default::default(),
            features: FlowFeatures(features),
            source_windows: Vec::new(),
        }
    }

    #[test]
    fn a_tcp_flow_the_destination_sent_data_on_is_two_way() {
        // Handshake, SSH banner from the server, the client's answer.
        assert!(two_way_evidence(&flow(6, 4.0, 3.0, 41.0, &[(Feature::SynFlagCount, 2.0), (Feature::AckFlagCount, 6.0)])));
    }

    #[test]
    fn answers_a_spoofer_could_cause_or_fake_are_not_two_way() {
        use Feature::{AckFlagCount, RstFlagCount, SynFlagCount};
        // A spoofed SYN: SYN-ACKs (retransmitted) went to the forged address.
        assert!(!two_way_evidence(&flow(6, 1.0, 3.0, 0.0, &[(SynFlagCount, 4.0), (AckFlagCount, 3.0)])));
        // SYN, SYN-ACK, RST: nmap -sS, or a spoofer's blind RST; the counts are the same.
        assert!(!two_way_evidence(&flow(6, 2.0, 1.0, 0.0, &[(SynFlagCount, 2.0), (AckFlagCount, 1.0), (RstFlagCount, 1.0)])));
        // SYN, SYN-ACK, ACK, no data: a connect scan, or a blind ACK (answered by a RST).
        assert!(!two_way_evidence(&flow(6, 2.0, 2.0, 0.0, &[(SynFlagCount, 2.0), (AckFlagCount, 3.0), (RstFlagCount, 1.0)])));
        // UDP and ICMP with answers: the answers reach the address, whoever sent.
        assert!(!two_way_evidence(&flow(17, 3.0, 3.0, 300.0, &[])));
        assert!(!two_way_evidence(&flow(1, 10.0, 10.0, 560.0, &[])));
    }
}
