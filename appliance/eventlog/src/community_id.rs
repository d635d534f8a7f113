//! Community ID flow hashing, version 1 (the Corelight specification): the same flow
//! gets the same id in ml-defender, Zeek, Suricata and the PyPI `communityid` package.

use std::net::IpAddr;

use base64::Engine;
use sha1::{Digest, Sha1};

/// `1:<base64 of SHA-1>` for a flow. ICMP and ICMPv6 flows carry port 0 here (the packet
/// record keeps no ICMP type/code), so their ids differ from tools that hash type/code.
pub fn community_id(seed: u16, src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16, protocol: u8) -> String {
    let bytes = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let (a, b) = (bytes(src), bytes(dst));
    // Ordered endpoints: the smaller address (then port) first.
    let (first, first_port, second, second_port) =
        if (a.as_slice(), src_port) <= (b.as_slice(), dst_port) { (a, src_port, b, dst_port) } else { (b, dst_port, a, src_port) };
    let mut hasher = Sha1::new();
    hasher.update(seed.to_be_bytes());
    hasher.update(&first);
    hasher.update(&second);
    hasher.update([protocol, 0]);
    if matches!(protocol, 6 | 17 | 132) {
        hasher.update(first_port.to_be_bytes());
        hasher.update(second_port.to_be_bytes());
    }
    format!("1:{}", base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_matches_the_published_example() {
        // The specification's example: TCP 128.232.110.120:34855 -> 66.35.250.204:80, seed 0.
        let id = community_id(0, "128.232.110.120".parse().expect("ip"), 34855, "66.35.250.204".parse().expect("ip"), 80, 6);
        assert_eq!(id, "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
        let reverse = community_id(0, "66.35.250.204".parse().expect("ip"), 80, "128.232.110.120".parse().expect("ip"), 34855, 6);
        assert_eq!(id, reverse);
    }
}
