//! Why a source is denied: the deny map's reason codes (`MLD_REASON_*` in the XDP
//! program's header; mld-capture tests the two against each other), their names on the
//! command line, in the saved blocks and on the wire between the tasks.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a source is denied (`MLD_REASON_*`): which drop counter its packets bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    Manual,
    Scan,
    Flood,
    BruteForce,
    Slow,
    Other,
}

impl DenyReason {
    pub const ALL: [DenyReason; 6] = [DenyReason::Manual, DenyReason::Scan, DenyReason::Flood, DenyReason::BruteForce, DenyReason::Slow, DenyReason::Other];

    pub fn code(self) -> u32 {
        match self {
            DenyReason::Manual => 0,
            DenyReason::Scan => 1,
            DenyReason::Flood => 2,
            DenyReason::BruteForce => 3,
            DenyReason::Slow => 4,
            DenyReason::Other => 5,
        }
    }

    pub fn from_code(code: u32) -> DenyReason {
        DenyReason::ALL.into_iter().find(|reason| reason.code() == code).unwrap_or(DenyReason::Other)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Manual => "manual",
            DenyReason::Scan => "scan",
            DenyReason::Flood => "flood",
            DenyReason::BruteForce => "brute-force",
            DenyReason::Slow => "slow",
            DenyReason::Other => "other",
        }
    }

    pub fn parse(text: &str) -> Option<DenyReason> {
        DenyReason::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// On the wire as its name (`"brute-force"`), so a frame reads the same as the logs.
impl Serialize for DenyReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DenyReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DenyReason, D::Error> {
        let text = String::deserialize(deserializer)?;
        DenyReason::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown deny reason `{text}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_travels_as_its_name_and_an_unknown_name_is_refused() {
        for reason in DenyReason::ALL {
            let text = serde_json::to_string(&reason).expect("encode");
            assert_eq!(text, format!("\"{}\"", reason.as_str()));
            assert_eq!(serde_json::from_str::<DenyReason>(&text).expect("decode"), reason);
            assert_eq!(DenyReason::from_code(reason.code()), reason);
        }
        assert!(serde_json::from_str::<DenyReason>("\"nonsense\"").is_err());
    }
}
