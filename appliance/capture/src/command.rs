//! The check the capture task makes of every block command before it writes the deny
//! map, whoever sent it: the detect task is less trusted than the data plane (it parses
//! attacker-shaped traffic and runs native model code), so a compromised detect task
//! must not be able to deny the whole Internet, the site's infrastructure, or block for
//! ever.

use std::time::Duration;

use mld_hostnet::Protected;
use mld_types::IpPrefix;

use mld_types::DenyReason;

/// The shortest IPv4 prefix a block command may name (a /24 at most).
pub const MIN_BLOCK_PREFIX_V4: u8 = 24;
/// The shortest IPv6 prefix a block command may name (a /64 at most).
pub const MIN_BLOCK_PREFIX_V6: u8 = 64;

/// A block command that passed the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedBlock {
    pub prefix: IpPrefix,
    pub ttl: Duration,
    pub reason: DenyReason,
}

/// Checks a block command (its prefix and reason were parsed when its frame was decoded):
/// a prefix no wider than a /24 (IPv4) or /64 (IPv6),
/// that neither covers nor lies inside anything protected; a TTL between 1 s and
/// `ttl_max`; a known reason other than "manual" (only an operator blocks by hand).
/// Every refusal says why.
pub fn check_block_command(parsed: IpPrefix, ttl_secs: u64, reason: DenyReason, protected: &Protected, ttl_max: Duration) -> Result<CheckedBlock, String> {
    let min_len = if parsed.addr().is_ipv4() { MIN_BLOCK_PREFIX_V4 } else { MIN_BLOCK_PREFIX_V6 };
    if parsed.len() < min_len {
        return Err(format!("prefix {parsed} is wider than a /{min_len}: blocks name hosts or small prefixes only"));
    }
    if let Some(protection) = protected.of_prefix(&parsed) {
        return Err(format!("{parsed} is protected: {}", protection.describe()));
    }
    if ttl_secs == 0 || ttl_secs > ttl_max.as_secs() {
        return Err(format!("TTL {ttl_secs} s is outside 1..={} s (response.ttl-max-secs)", ttl_max.as_secs()));
    }
    if reason == DenyReason::Manual {
        return Err("reason `manual` is the operator's: a block command names what it detected".to_string());
    }
    Ok(CheckedBlock { prefix: parsed, ttl: Duration::from_secs(ttl_secs), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protected() -> Protected {
        let response = mld_config::Config::from_toml("", "test").expect("defaults").response;
        let mut protected = Protected::new(&response, &["10.66.1.0/24".parse().expect("prefix")]);
        protected.set_host_part(vec!["10.66.9.1".parse().expect("addr")], vec!["10.66.3.2".parse().expect("addr")], vec!["10.66.0.1".parse().expect("addr")]);
        protected
    }

    fn p(text: &str) -> IpPrefix {
        text.parse().expect("prefix")
    }

    fn r(text: &str) -> DenyReason {
        DenyReason::parse(text).expect("reason")
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_host_block_within_bounds_passes() {
        let checked = check_block_command(p("10.66.2.66/32"), 600, r("scan"), &protected(), DAY).expect("valid");
        assert_eq!((checked.ttl, checked.reason), (Duration::from_secs(600), DenyReason::Scan));
    }

    #[test]
    fn the_whole_internet_and_wide_prefixes_are_refused() {
        for prefix in ["0.0.0.0/0", "::/0", "10.0.0.0/8", "2001:db8::/32"] {
            let error = check_block_command(p(prefix), 600, DenyReason::Scan, &Protected::default(), DAY).expect_err(prefix);
            assert!(error.contains("wider than"), "{prefix}: {error}");
        }
    }

    #[test]
    fn protected_infrastructure_is_refused_even_inside_a_prefix() {
        for prefix in ["10.66.3.2/32", "10.66.3.0/24", "10.66.0.1", "10.66.9.1", "10.66.1.5"] {
            let error = check_block_command(p(prefix), 600, DenyReason::Flood, &protected(), DAY).expect_err(prefix);
            assert!(error.contains("is protected"), "{prefix}: {error}");
        }
    }

    #[test]
    fn absurd_ttls_and_the_operators_manual_reason_are_refused() {
        assert!(check_block_command(p("10.66.2.66"), 0, r("scan"), &protected(), DAY).is_err());
        assert!(check_block_command(p("10.66.2.66"), u64::MAX, r("scan"), &protected(), DAY).expect_err("ttl").contains("TTL"));
        assert!(check_block_command(p("10.66.2.66"), 600, r("manual"), &protected(), DAY).is_err());
    }
}
