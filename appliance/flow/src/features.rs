//! The CIC-IDS2017 flow features (CICFlowMeter names), computed incrementally.
//!
//! Every feature's exact definition and unit is in `docs/features.md`; where
//! CICFlowMeter's code computes something other than what its feature name means
//! (bulk always zero, subflow parenthesis, FIN-count typo, backward PSH/URG never
//! counted, integer division), we compute the intended value, and the document lists
//! each deviation. Lengths are transport payload bytes, as in CICFlowMeter; times
//! are microseconds.

use mld_packet::{tcp_flags, PacketRecord};

use crate::stats::RunningStats;

/// Timing parameters of the feature definitions (CICFlowMeter's constants by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureParams {
    /// A gap longer than this between packets ends an active period (CIC: 5 s).
    pub activity_timeout_ns: u64,
    /// A gap longer than this between packets starts a new subflow (CIC: 1 s).
    pub subflow_gap_ns: u64,
    /// A gap longer than this between payload packets ends a bulk (CIC: 1 s).
    pub bulk_gap_ns: u64,
}

impl Default for FeatureParams {
    fn default() -> FeatureParams {
        FeatureParams { activity_timeout_ns: 5_000_000_000, subflow_gap_ns: 1_000_000_000, bulk_gap_ns: 1_000_000_000 }
    }
}

macro_rules! features {
    ($($variant:ident => $cic:literal, $unit:literal;)*) => {
        /// One CIC flow feature. The order is the CIC-IDS2017 CSV column order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Feature { $($variant,)* }

        impl Feature {
            pub const ALL: &'static [Feature] = &[$(Feature::$variant,)*];

            /// The CICFlowMeter / CIC-IDS2017 column name.
            pub fn cic_name(self) -> &'static str {
                match self { $(Feature::$variant => $cic,)* }
            }

            /// The unit of the value.
            pub fn unit(self) -> &'static str {
                match self { $(Feature::$variant => $unit,)* }
            }
        }
    };
}

features! {
    FlowDuration => "Flow Duration", "us";
    TotalFwdPackets => "Total Fwd Packets", "packets";
    TotalBwdPackets => "Total Backward Packets", "packets";
    TotalLengthFwdPackets => "Total Length of Fwd Packets", "bytes";
    TotalLengthBwdPackets => "Total Length of Bwd Packets", "bytes";
    FwdPacketLengthMax => "Fwd Packet Length Max", "bytes";
    FwdPacketLengthMin => "Fwd Packet Length Min", "bytes";
    FwdPacketLengthMean => "Fwd Packet Length Mean", "bytes";
    FwdPacketLengthStd => "Fwd Packet Length Std", "bytes";
    BwdPacketLengthMax => "Bwd Packet Length Max", "bytes";
    BwdPacketLengthMin => "Bwd Packet Length Min", "bytes";
    BwdPacketLengthMean => "Bwd Packet Length Mean", "bytes";
    BwdPacketLengthStd => "Bwd Packet Length Std", "bytes";
    FlowBytesPerSec => "Flow Bytes/s", "bytes/s";
    FlowPacketsPerSec => "Flow Packets/s", "packets/s";
    FlowIatMean => "Flow IAT Mean", "us";
    FlowIatStd => "Flow IAT Std", "us";
    FlowIatMax => "Flow IAT Max", "us";
    FlowIatMin => "Flow IAT Min", "us";
    FwdIatTotal => "Fwd IAT Total", "us";
    FwdIatMean => "Fwd IAT Mean", "us";
    FwdIatStd => "Fwd IAT Std", "us";
    FwdIatMax => "Fwd IAT Max", "us";
    FwdIatMin => "Fwd IAT Min", "us";
    BwdIatTotal => "Bwd IAT Total", "us";
    BwdIatMean => "Bwd IAT Mean", "us";
    BwdIatStd => "Bwd IAT Std", "us";
    BwdIatMax => "Bwd IAT Max", "us";
    BwdIatMin => "Bwd IAT Min", "us";
    FwdPshFlags => "Fwd PSH Flags", "packets";
    BwdPshFlags => "Bwd PSH Flags", "packets";
    FwdUrgFlags => "Fwd URG Flags", "packets";
    BwdUrgFlags => "Bwd URG Flags", "packets";
    FwdHeaderLength => "Fwd Header Length", "bytes";
    BwdHeaderLength => "Bwd Header Length", "bytes";
    FwdPacketsPerSec => "Fwd Packets/s", "packets/s";
    BwdPacketsPerSec => "Bwd Packets/s", "packets/s";
    MinPacketLength => "Min Packet Length", "bytes";
    MaxPacketLength => "Max Packet Length", "bytes";
    PacketLengthMean => "Packet Length Mean", "bytes";
    PacketLengthStd => "Packet Length Std", "bytes";
    PacketLengthVariance => "Packet Length Variance", "bytes^2";
    FinFlagCount => "FIN Flag Count", "packets";
    SynFlagCount => "SYN Flag Count", "packets";
    RstFlagCount => "RST Flag Count", "packets";
    PshFlagCount => "PSH Flag Count", "packets";
    AckFlagCount => "ACK Flag Count", "packets";
    UrgFlagCount => "URG Flag Count", "packets";
    CweFlagCount => "CWE Flag Count", "packets";
    EceFlagCount => "ECE Flag Count", "packets";
    DownUpRatio => "Down/Up Ratio", "ratio";
    AveragePacketSize => "Average Packet Size", "bytes";
    AvgFwdSegmentSize => "Avg Fwd Segment Size", "bytes";
    AvgBwdSegmentSize => "Avg Bwd Segment Size", "bytes";
    FwdAvgBytesPerBulk => "Fwd Avg Bytes/Bulk", "bytes";
    FwdAvgPacketsPerBulk => "Fwd Avg Packets/Bulk", "packets";
    FwdAvgBulkRate => "Fwd Avg Bulk Rate", "bytes/s";
    BwdAvgBytesPerBulk => "Bwd Avg Bytes/Bulk", "bytes";
    BwdAvgPacketsPerBulk => "Bwd Avg Packets/Bulk", "packets";
    BwdAvgBulkRate => "Bwd Avg Bulk Rate", "bytes/s";
    SubflowFwdPackets => "Subflow Fwd Packets", "packets";
    SubflowFwdBytes => "Subflow Fwd Bytes", "bytes";
    SubflowBwdPackets => "Subflow Bwd Packets", "packets";
    SubflowBwdBytes => "Subflow Bwd Bytes", "bytes";
    InitWinBytesForward => "Init_Win_bytes_forward", "bytes";
    InitWinBytesBackward => "Init_Win_bytes_backward", "bytes";
    ActDataPktFwd => "act_data_pkt_fwd", "packets";
    MinSegSizeForward => "min_seg_size_forward", "bytes";
    ActiveMean => "Active Mean", "us";
    ActiveStd => "Active Std", "us";
    ActiveMax => "Active Max", "us";
    ActiveMin => "Active Min", "us";
    IdleMean => "Idle Mean", "us";
    IdleStd => "Idle Std", "us";
    IdleMax => "Idle Max", "us";
    IdleMin => "Idle Min", "us";
}

/// The number of CIC features.
pub const FEATURE_COUNT: usize = Feature::ALL.len();

/// A flow's CIC feature values, indexed by [`Feature`].
#[derive(Debug, Clone, PartialEq)]
pub struct FlowFeatures(pub [f64; FEATURE_COUNT]);

/// As a JSON array; a non-finite value travels as `null` and comes back as NaN, so an
/// encoded record always decodes.
impl serde::Serialize for FlowFeatures {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(FEATURE_COUNT))?;
        for value in &self.0 {
            seq.serialize_element(&value.is_finite().then_some(*value))?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for FlowFeatures {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<FlowFeatures, D::Error> {
        let values: Vec<Option<f64>> = serde::Deserialize::deserialize(deserializer)?;
        if values.len() != FEATURE_COUNT {
            return Err(serde::de::Error::invalid_length(values.len(), &"the CIC feature count"));
        }
        let mut features = [0.0; FEATURE_COUNT];
        for (slot, value) in features.iter_mut().zip(values) {
            *slot = value.unwrap_or(f64::NAN);
        }
        Ok(FlowFeatures(features))
    }
}

impl FlowFeatures {
    pub fn get(&self, feature: Feature) -> f64 {
        self.0[feature as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (Feature, f64)> + '_ {
        Feature::ALL.iter().map(|feature| (*feature, self.0[*feature as usize]))
    }
}

/// Per-direction state of a flow.
#[derive(Debug, Clone, Default)]
struct DirectionState {
    payload: RunningStats,
    /// Inter-arrival times between this direction's packets, µs.
    iat: RunningStats,
    last_ts_ns: u64,
    header_bytes: u64,
    ip_bytes: u64,
    min_header_bytes: u16,
    data_packets: u64,
    /// TCP window of the first packet; -1 until a TCP packet is seen.
    init_window: i32,
    /// Packets with each TCP flag set, indexed by bit position (FIN = 0 … CWR = 7).
    flags: [u32; 8],
    bulk: BulkState,
}

/// CICFlowMeter's bulk detector for one direction: a bulk is four or more payload
/// packets in a row in this direction, each within the bulk gap of the previous, with
/// no payload packet from the other side in between.
#[derive(Debug, Clone, Copy, Default)]
struct BulkState {
    /// Start of the candidate bulk (0: none).
    start_ns: u64,
    candidate_packets: u64,
    candidate_bytes: u64,
    last_ns: u64,
    bulks: u64,
    packets: u64,
    bytes: u64,
    duration_ns: u64,
}

impl BulkState {
    fn update(&mut self, ts_ns: u64, payload: u64, other_side_last_ns: u64, gap_ns: u64) {
        if other_side_last_ns > self.start_ns {
            self.start_ns = 0;
        }
        if payload == 0 {
            return;
        }
        if self.start_ns == 0 || ts_ns.saturating_sub(self.last_ns) > gap_ns {
            self.start_ns = ts_ns.max(1);
            self.candidate_packets = 1;
            self.candidate_bytes = payload;
        } else {
            self.candidate_packets += 1;
            self.candidate_bytes += payload;
            if self.candidate_packets == 4 {
                self.bulks += 1;
                self.packets += 4;
                self.bytes += self.candidate_bytes;
                self.duration_ns += ts_ns.saturating_sub(self.start_ns);
            } else if self.candidate_packets > 4 {
                self.packets += 1;
                self.bytes += payload;
                self.duration_ns += ts_ns.saturating_sub(self.last_ns);
            }
        }
        self.last_ns = ts_ns;
    }

    fn avg_bytes(&self) -> f64 {
        ratio(self.bytes as f64, self.bulks as f64)
    }

    fn avg_packets(&self) -> f64 {
        ratio(self.packets as f64, self.bulks as f64)
    }

    fn rate(&self) -> f64 {
        ratio(self.bytes as f64, self.duration_ns as f64 / 1e9)
    }
}

/// Everything a flow accumulates from its packets, in constant memory.
#[derive(Debug, Clone)]
pub struct FlowAccumulator {
    first_ts_ns: u64,
    last_ts_ns: u64,
    forward: DirectionState,
    backward: DirectionState,
    payload: RunningStats,
    /// Inter-arrival times between consecutive packets of the flow, µs.
    iat: RunningStats,
    subflows: u64,
    active: RunningStats,
    idle: RunningStats,
    active_start_ns: u64,
    active_end_ns: u64,
}

impl FlowAccumulator {
    /// Starts a flow with its first packet (sent by the initiator, so forward).
    pub fn new(first: &PacketRecord, params: &FeatureParams) -> FlowAccumulator {
        let fresh = DirectionState { init_window: -1, ..DirectionState::default() };
        let mut flow = FlowAccumulator {
            first_ts_ns: first.ts_ns,
            last_ts_ns: first.ts_ns,
            forward: fresh.clone(),
            backward: fresh,
            payload: RunningStats::default(),
            iat: RunningStats::default(),
            subflows: 1,
            active: RunningStats::default(),
            idle: RunningStats::default(),
            active_start_ns: first.ts_ns,
            active_end_ns: first.ts_ns,
        };
        flow.add_to_direction(first, true, params);
        flow
    }

    pub fn first_ts_ns(&self) -> u64 {
        self.first_ts_ns
    }

    pub fn last_ts_ns(&self) -> u64 {
        self.last_ts_ns
    }

    pub fn packets(&self) -> u64 {
        self.payload.count()
    }

    /// Packets sent by the initiator (`forward`) or the responder.
    pub fn direction_packets(&self, forward: bool) -> u64 {
        self.direction(forward).payload.count()
    }

    /// IP-level bytes (IP length field summed) sent by the initiator or the responder.
    pub fn direction_ip_bytes(&self, forward: bool) -> u64 {
        self.direction(forward).ip_bytes
    }

    /// Packets with `flag` set, per direction.
    pub fn direction_flag_packets(&self, forward: bool, flag: u8) -> u32 {
        self.direction(forward).flags[flag.trailing_zeros() as usize % 8]
    }

    /// Adds a packet after the first. Timestamps that go backwards count as zero gaps.
    pub fn add(&mut self, packet: &PacketRecord, forward: bool, params: &FeatureParams) {
        let ts_ns = packet.ts_ns.max(self.last_ts_ns);
        let gap_ns = ts_ns - self.last_ts_ns;
        self.iat.add(gap_ns as f64 / 1e3);
        if gap_ns > params.subflow_gap_ns {
            self.subflows += 1;
        }
        if gap_ns > params.activity_timeout_ns {
            if self.active_end_ns > self.active_start_ns {
                self.active.add((self.active_end_ns - self.active_start_ns) as f64 / 1e3);
            }
            self.idle.add(gap_ns as f64 / 1e3);
            self.active_start_ns = ts_ns;
        }
        self.active_end_ns = ts_ns;
        self.last_ts_ns = ts_ns;
        self.add_to_direction(packet, forward, params);
    }

    fn add_to_direction(&mut self, packet: &PacketRecord, forward: bool, params: &FeatureParams) {
        let ts_ns = packet.ts_ns.max(self.last_ts_ns);
        let payload = u64::from(packet.payload_len);
        self.payload.add(payload as f64);
        let other_side_bulk_ns = if forward { self.backward.bulk.last_ns } else { self.forward.bulk.last_ns };
        let direction = if forward { &mut self.forward } else { &mut self.backward };
        if direction.payload.count() > 0 {
            direction.iat.add(ts_ns.saturating_sub(direction.last_ts_ns) as f64 / 1e3);
            direction.min_header_bytes = direction.min_header_bytes.min(packet.l4_header_len);
        } else {
            direction.min_header_bytes = packet.l4_header_len;
            if packet.protocol == 6 {
                direction.init_window = i32::from(packet.tcp_window);
            }
        }
        direction.last_ts_ns = ts_ns;
        direction.payload.add(payload as f64);
        direction.header_bytes += u64::from(packet.l4_header_len);
        direction.ip_bytes += u64::from(packet.ip_len);
        if payload > 0 {
            direction.data_packets += 1;
        }
        let mut bits = packet.tcp_flags;
        while bits != 0 {
            direction.flags[bits.trailing_zeros() as usize] += 1;
            bits &= bits - 1;
        }
        direction.bulk.update(ts_ns, payload, other_side_bulk_ns, params.bulk_gap_ns);
    }

    fn direction(&self, forward: bool) -> &DirectionState {
        if forward {
            &self.forward
        } else {
            &self.backward
        }
    }

    /// The feature values of the flow as it stands.
    pub fn features(&self) -> FlowFeatures {
        use Feature as F;
        let mut values = [0.0; FEATURE_COUNT];
        let mut set = |feature: Feature, value: f64| values[feature as usize] = value;
        let (fwd, bwd) = (&self.forward, &self.backward);
        let duration_us = (self.last_ts_ns - self.first_ts_ns) as f64 / 1e3;
        let duration_s = duration_us / 1e6;
        let flag_count = |bit: u8| f64::from(fwd.flags[bit.trailing_zeros() as usize] + bwd.flags[bit.trailing_zeros() as usize]);
        let fwd_packets = fwd.payload.count() as f64;
        let bwd_packets = bwd.payload.count() as f64;
        let subflows = self.subflows as f64;

        set(F::FlowDuration, duration_us);
        set(F::TotalFwdPackets, fwd_packets);
        set(F::TotalBwdPackets, bwd_packets);
        set(F::TotalLengthFwdPackets, fwd.payload.sum());
        set(F::TotalLengthBwdPackets, bwd.payload.sum());
        set(F::FwdPacketLengthMax, fwd.payload.max());
        set(F::FwdPacketLengthMin, fwd.payload.min());
        set(F::FwdPacketLengthMean, fwd.payload.mean());
        set(F::FwdPacketLengthStd, fwd.payload.std_dev());
        set(F::BwdPacketLengthMax, bwd.payload.max());
        set(F::BwdPacketLengthMin, bwd.payload.min());
        set(F::BwdPacketLengthMean, bwd.payload.mean());
        set(F::BwdPacketLengthStd, bwd.payload.std_dev());
        set(F::FlowBytesPerSec, ratio(self.payload.sum(), duration_s));
        set(F::FlowPacketsPerSec, ratio(self.payload.count() as f64, duration_s));
        set(F::FlowIatMean, self.iat.mean());
        set(F::FlowIatStd, self.iat.std_dev());
        set(F::FlowIatMax, self.iat.max());
        set(F::FlowIatMin, self.iat.min());
        set(F::FwdIatTotal, fwd.iat.sum());
        set(F::FwdIatMean, fwd.iat.mean());
        set(F::FwdIatStd, fwd.iat.std_dev());
        set(F::FwdIatMax, fwd.iat.max());
        set(F::FwdIatMin, fwd.iat.min());
        set(F::BwdIatTotal, bwd.iat.sum());
        set(F::BwdIatMean, bwd.iat.mean());
        set(F::BwdIatStd, bwd.iat.std_dev());
        set(F::BwdIatMax, bwd.iat.max());
        set(F::BwdIatMin, bwd.iat.min());
        set(F::FwdPshFlags, f64::from(fwd.flags[3]));
        set(F::BwdPshFlags, f64::from(bwd.flags[3]));
        set(F::FwdUrgFlags, f64::from(fwd.flags[5]));
        set(F::BwdUrgFlags, f64::from(bwd.flags[5]));
        set(F::FwdHeaderLength, fwd.header_bytes as f64);
        set(F::BwdHeaderLength, bwd.header_bytes as f64);
        set(F::FwdPacketsPerSec, ratio(fwd_packets, duration_s));
        set(F::BwdPacketsPerSec, ratio(bwd_packets, duration_s));
        set(F::MinPacketLength, self.payload.min());
        set(F::MaxPacketLength, self.payload.max());
        set(F::PacketLengthMean, self.payload.mean());
        set(F::PacketLengthStd, self.payload.std_dev());
        set(F::PacketLengthVariance, self.payload.variance());
        set(F::FinFlagCount, flag_count(tcp_flags::FIN));
        set(F::SynFlagCount, flag_count(tcp_flags::SYN));
        set(F::RstFlagCount, flag_count(tcp_flags::RST));
        set(F::PshFlagCount, flag_count(tcp_flags::PSH));
        set(F::AckFlagCount, flag_count(tcp_flags::ACK));
        set(F::UrgFlagCount, flag_count(tcp_flags::URG));
        set(F::CweFlagCount, flag_count(tcp_flags::CWR));
        set(F::EceFlagCount, flag_count(tcp_flags::ECE));
        set(F::DownUpRatio, ratio(bwd_packets, fwd_packets));
        set(F::AveragePacketSize, self.payload.mean());
        set(F::AvgFwdSegmentSize, fwd.payload.mean());
        set(F::AvgBwdSegmentSize, bwd.payload.mean());
        set(F::FwdAvgBytesPerBulk, fwd.bulk.avg_bytes());
        set(F::FwdAvgPacketsPerBulk, fwd.bulk.avg_packets());
        set(F::FwdAvgBulkRate, fwd.bulk.rate());
        set(F::BwdAvgBytesPerBulk, bwd.bulk.avg_bytes());
        set(F::BwdAvgPacketsPerBulk, bwd.bulk.avg_packets());
        set(F::BwdAvgBulkRate, bwd.bulk.rate());
        set(F::SubflowFwdPackets, fwd_packets / subflows);
        set(F::SubflowFwdBytes, fwd.payload.sum() / subflows);
        set(F::SubflowBwdPackets, bwd_packets / subflows);
        set(F::SubflowBwdBytes, bwd.payload.sum() / subflows);
        set(F::InitWinBytesForward, f64::from(fwd.init_window));
        set(F::InitWinBytesBackward, f64::from(bwd.init_window));
        set(F::ActDataPktFwd, fwd.data_packets as f64);
        set(F::MinSegSizeForward, f64::from(fwd.min_header_bytes));
        // The active period still open when the flow ends counts too.
        let mut active = self.active;
        if self.active_end_ns > self.active_start_ns {
            active.add((self.active_end_ns - self.active_start_ns) as f64 / 1e3);
        }
        set(F::ActiveMean, active.mean());
        set(F::ActiveStd, active.std_dev());
        set(F::ActiveMax, active.max());
        set(F::ActiveMin, active.min());
        set(F::IdleMean, self.idle.mean());
        set(F::IdleStd, self.idle.std_dev());
        set(F::IdleMax, self.idle.max());
        set(F::IdleMin, self.idle.min());
        FlowFeatures(values)
    }
}

/// `numerator / denominator`, or 0 when the denominator is 0 (CICFlowMeter writes
/// NaN or Infinity there, which breaks most model pipelines).
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests;
