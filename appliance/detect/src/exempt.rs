//! Learned exemptions: prefixes the operator released from a block and marked benign
//! (`mldefender block del PREFIX --benign`). The responder refuses to block a source
//! that one covers, until it expires, and the refusal names it. Pure state, bounded:
//! the detect task persists it (`mld_runtime::benign`).

use std::net::IpAddr;
use std::time::Duration;

use mld_types::IpPrefix;

/// Exemptions in force at most; one more is refused (expired ones are dropped first).
pub const MAX_EXEMPTIONS: usize = 1024;
/// The operator's reason, characters at most.
pub const MAX_REASON_CHARS: usize = 256;
/// How long an exemption lasts unless the operator says otherwise (`--for`): 7 days.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(7 * 86_400);
/// How long an exemption may last at most: 365 days (none is forever).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);
/// The widest prefix an exemption may cover, as for a block: /24 (IPv4), /64 (IPv6).
pub const MIN_PREFIX_LEN_V4: u8 = 24;
pub const MIN_PREFIX_LEN_V6: u8 = 64;

/// One exemption. Times are the detect task's clock: ns since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exemption {
    pub prefix: IpPrefix,
    pub marked_at_ns: u64,
    pub until_ns: u64,
    pub reason: String,
}

impl Exemption {
    /// What a refusal says: "marked benign by the operator at T (reason); exempt until U".
    pub fn describe(&self) -> String {
        let reason = if self.reason.is_empty() { "no reason given".to_string() } else { self.reason.clone() };
        format!(
            "marked benign by the operator at {} ({reason}); exemption {} until {}",
            mld_flow::time::rfc3339_utc(self.marked_at_ns),
            self.prefix,
            mld_flow::time::rfc3339_utc(self.until_ns)
        )
    }

    pub fn is_active(&self, now_ns: u64) -> bool {
        self.until_ns > now_ns
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExemptError {
    #[error("the exemption list is full ({MAX_EXEMPTIONS} exemptions in force, the maximum); wait for some to expire")]
    Full,
    #[error("the reason is longer than {MAX_REASON_CHARS} characters")]
    ReasonTooLong,
    #[error("an exemption covers at most a /{MIN_PREFIX_LEN_V4} (IPv4) or a /{MIN_PREFIX_LEN_V6} (IPv6), not {0}")]
    TooWide(IpPrefix),
    #[error("an exemption lasts 1 s to {days} days, not {0} s", days = MAX_DURATION.as_secs() / 86_400)]
    Duration(u64),
}

/// The exemptions in force (at most [`MAX_EXEMPTIONS`]), one per prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exemptions {
    entries: Vec<Exemption>,
}

impl Exemptions {
    /// The exemptions as read back (from the file): checked as [`Exemptions::add`] checks
    /// them; expired ones are left out.
    pub fn from_entries(entries: Vec<Exemption>, now_ns: u64) -> Result<Exemptions, ExemptError> {
        let mut exemptions = Exemptions::default();
        for entry in entries.into_iter().filter(|entry| entry.is_active(now_ns)) {
            exemptions.insert(entry, now_ns)?;
        }
        Ok(exemptions)
    }

    /// Marks `prefix` benign from `now_ns` for `duration` (replacing an exemption of the
    /// same prefix). Returns the exemption.
    pub fn add(&mut self, prefix: IpPrefix, reason: &str, duration: Duration, now_ns: u64) -> Result<Exemption, ExemptError> {
        if duration.is_zero() || duration > MAX_DURATION {
            return Err(ExemptError::Duration(duration.as_secs()));
        }
        let exemption = Exemption { prefix, marked_at_ns: now_ns, until_ns: now_ns.saturating_add(duration.as_nanos() as u64), reason: reason.to_string() };
        self.insert(exemption.clone(), now_ns)?;
        Ok(exemption)
    }

    fn insert(&mut self, exemption: Exemption, now_ns: u64) -> Result<(), ExemptError> {
        let min_len = if exemption.prefix.addr().is_ipv4() { MIN_PREFIX_LEN_V4 } else { MIN_PREFIX_LEN_V6 };
        if exemption.prefix.len() < min_len {
            return Err(ExemptError::TooWide(exemption.prefix));
        }
        if exemption.reason.chars().count() > MAX_REASON_CHARS {
            return Err(ExemptError::ReasonTooLong);
        }
        self.prune(now_ns);
        if let Some(existing) = self.entries.iter_mut().find(|entry| entry.prefix == exemption.prefix) {
            *existing = exemption;
            return Ok(());
        }
        if self.entries.len() >= MAX_EXEMPTIONS {
            return Err(ExemptError::Full);
        }
        self.entries.push(exemption);
        Ok(())
    }

    /// The exemption in force that covers `source`, if any (the narrowest).
    pub fn covering(&self, source: IpAddr, now_ns: u64) -> Option<&Exemption> {
        let host = IpPrefix::host(source);
        self.entries.iter().filter(|entry| entry.is_active(now_ns) && entry.prefix.covers(&host)).max_by_key(|entry| entry.prefix.len())
    }

    /// Drops the expired exemptions; returns how many.
    pub fn prune(&mut self, now_ns: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.is_active(now_ns));
        before - self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Exemption> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn prefix(text: &str) -> IpPrefix {
        text.parse().expect("prefix")
    }

    #[test]
    fn an_exemption_covers_its_prefix_until_it_expires() {
        let mut exemptions = Exemptions::default();
        let exemption = exemptions.add(prefix("10.66.2.0/24"), "lab scanner", Duration::from_secs(60), 1000 * SECOND).expect("added");
        assert_eq!(exemption.until_ns, 1060 * SECOND);
        assert!(exemptions.covering("10.66.2.2".parse().expect("addr"), 1001 * SECOND).is_some());
        assert!(exemptions.covering("10.66.3.2".parse().expect("addr"), 1001 * SECOND).is_none());
        assert!(exemptions.covering("10.66.2.2".parse().expect("addr"), 1060 * SECOND).is_none(), "expired at its end");
        let description = exemption.describe();
        assert!(description.starts_with("marked benign by the operator at 1970-01-01T00:16:40"), "{description}");
        assert!(description.contains("(lab scanner)") && description.contains("10.66.2.0/24"), "{description}");
        assert_eq!(exemptions.prune(1060 * SECOND), 1);
        assert!(exemptions.is_empty());
    }

    #[test]
    fn the_narrowest_exemption_answers_and_marking_a_prefix_again_replaces_it() {
        let mut exemptions = Exemptions::default();
        exemptions.add(prefix("10.66.2.0/24"), "site", Duration::from_secs(600), 0).expect("added");
        exemptions.add(prefix("10.66.2.2/32"), "first", Duration::from_secs(60), 0).expect("added");
        exemptions.add(prefix("10.66.2.2/32"), "second", Duration::from_secs(120), SECOND).expect("replaced");
        assert_eq!(exemptions.len(), 2);
        let found = exemptions.covering("10.66.2.2".parse().expect("addr"), 2 * SECOND).expect("covered");
        assert_eq!((found.reason.as_str(), found.until_ns), ("second", 121 * SECOND));
    }

    #[test]
    fn the_list_is_bounded_and_expired_exemptions_make_room() {
        let mut exemptions = Exemptions::default();
        for i in 0..MAX_EXEMPTIONS {
            let address = std::net::Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + i as u128);
            exemptions.add(IpPrefix::host(address.into()), "", Duration::from_secs(10 + (i % 2) as u64 * 100), 0).expect("room");
        }
        assert_eq!(exemptions.add(prefix("10.1.1.1/32"), "", Duration::from_secs(10), SECOND), Err(ExemptError::Full));
        // Half of them expire at 10 s: room again.
        exemptions.add(prefix("10.1.1.1/32"), "", Duration::from_secs(10), 10 * SECOND).expect("room after expiry");
        assert_eq!(exemptions.len(), MAX_EXEMPTIONS / 2 + 1);
    }

    #[test]
    fn durations_and_reasons_are_bounded() {
        let mut exemptions = Exemptions::default();
        assert_eq!(exemptions.add(prefix("10.1.1.1/32"), "", Duration::ZERO, 0), Err(ExemptError::Duration(0)));
        assert!(matches!(exemptions.add(prefix("10.1.1.1/32"), "", MAX_DURATION + Duration::from_secs(1), 0), Err(ExemptError::Duration(_))));
        assert_eq!(exemptions.add(prefix("10.1.1.1/32"), &"x".repeat(MAX_REASON_CHARS + 1), Duration::from_secs(1), 0), Err(ExemptError::ReasonTooLong));
        assert!(exemptions.add(prefix("10.1.1.1/32"), "", MAX_DURATION, 0).is_ok());
        assert_eq!(exemptions.add(prefix("10.1.0.0/16"), "", Duration::from_secs(1), 0), Err(ExemptError::TooWide(prefix("10.1.0.0/16"))));
        assert!(matches!(exemptions.add(prefix("2001:db8::/48"), "", Duration::from_secs(1), 0), Err(ExemptError::TooWide(_))));
        assert!(exemptions.add(prefix("2001:db8::/64"), "", Duration::from_secs(1), 0).is_ok());
    }
}
