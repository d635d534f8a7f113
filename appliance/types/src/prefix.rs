//! IP prefixes ("10.0.0.0/8", "fd00::/8", a bare address) as the allowlist, the deny
//! map and the CLI use them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    pub fn new(addr: IpAddr, len: u8) -> Result<IpPrefix, String> {
        let max = max_len(addr);
        if len > max {
            return Err(format!("prefix length {len} is longer than {max}"));
        }
        let prefix = IpPrefix { addr, len };
        if prefix.network() != addr {
            return Err(format!("host bits are set (did you mean {}/{len}?)", prefix.network()));
        }
        Ok(prefix)
    }

    /// The one-address prefix of `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> IpPrefix {
        IpPrefix::new(addr, max_len(addr)).expect("a full-length prefix is valid")
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The prefix as IPv6 (IPv4 mapped into ::ffff:0:0/96) and its length there.
    pub fn to_mapped_v6(&self) -> ([u8; 16], u8) {
        match self.addr {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), self.len + 96),
            IpAddr::V6(v6) => (v6.octets(), self.len),
        }
    }

    /// The inverse of [`IpPrefix::to_mapped_v6`].
    pub fn from_mapped_v6(addr: [u8; 16], len: u8) -> Option<IpPrefix> {
        let v6 = std::net::Ipv6Addr::from(addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if len >= 96 => IpPrefix::new(IpAddr::V4(v4), len - 96).ok(),
            _ => IpPrefix::new(IpAddr::V6(v6), len).ok(),
        }
    }

    /// True when every address of `other` is in `self`.
    pub fn covers(&self, other: &IpPrefix) -> bool {
        let (mine, my_len) = self.to_mapped_v6();
        let (theirs, their_len) = other.to_mapped_v6();
        my_len <= their_len && mask(theirs, my_len) == mine
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let masked = if self.len == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(self.len))) };
                IpAddr::V4(masked.into())
            }
            IpAddr::V6(v6) => IpAddr::V6(mask(v6.octets(), self.len).into()),
        }
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask(addr: [u8; 16], len: u8) -> [u8; 16] {
    let bits = u128::from_be_bytes(addr);
    let masked = if len == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(len))) };
    masked.to_be_bytes()
}

impl FromStr for IpPrefix {
    type Err = String;

    fn from_str(text: &str) -> Result<IpPrefix, String> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| format!("`{text}` is not an IP address or prefix"))?;
        let len = match len_text {
            Some(len) => len.parse::<u8>().map_err(|_| format!("`{text}` has a bad prefix length"))?,
            None => max_len(addr),
        };
        IpPrefix::new(addr, len).map_err(|reason| format!("`{text}`: {reason}"))
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// On the wire as its text (`"10.66.2.66/32"`), parsed (and checked: no host bits) when
/// a frame is decoded.
impl serde::Serialize for IpPrefix {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IpPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<IpPrefix, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|error| serde::de::Error::custom(format!("bad prefix `{text}`: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("10.0.0.0/8".parse::<IpPrefix>().expect("v4").to_string(), "10.0.0.0/8");
        assert_eq!("192.0.2.7".parse::<IpPrefix>().expect("host").to_string(), "192.0.2.7/32");
        assert_eq!("fd00::/8".parse::<IpPrefix>().expect("v6").to_string(), "fd00::/8");
        let error = "10.0.0.1/8".parse::<IpPrefix>().expect_err("host bits");
        assert!(error.contains("did you mean 10.0.0.0/8"), "{error}");
        assert!("10.0.0.0/33".parse::<IpPrefix>().is_err());
        assert!("example.com".parse::<IpPrefix>().is_err());
    }

    #[test]
    fn mapping_round_trips_and_covers() {
        for text in ["10.1.0.0/16", "0.0.0.0/0", "2001:db8::/32", "::/0"] {
            let prefix: IpPrefix = text.parse().expect("prefix");
            let (addr, len) = prefix.to_mapped_v6();
            assert_eq!(IpPrefix::from_mapped_v6(addr, len), Some(prefix));
        }
        let wide: IpPrefix = "10.0.0.0/8".parse().expect("prefix");
        let host: IpPrefix = "10.9.9.9".parse().expect("prefix");
        assert!(wide.covers(&host));
        assert!(!host.covers(&wide));
        assert!(!"2001:db8::/32".parse::<IpPrefix>().expect("v6").covers(&host));
    }

    #[test]
    fn a_prefix_travels_as_its_text_and_a_bad_one_is_refused_when_decoded() {
        let prefix: IpPrefix = "10.66.2.0/24".parse().expect("prefix");
        let text = serde_json::to_string(&prefix).expect("encode");
        assert_eq!(text, "\"10.66.2.0/24\"");
        assert_eq!(serde_json::from_str::<IpPrefix>(&text).expect("decode"), prefix);
        for bad in ["\"10.66.2.1/24\"", "\"not-an-address\"", "42"] {
            assert!(serde_json::from_str::<IpPrefix>(bad).is_err(), "{bad}");
        }
    }
}
