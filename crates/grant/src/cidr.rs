//! IP blocks in CIDR notation (IPv4 and IPv6; a bare address is a block of one).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP block such as `10.0.0.0/8`, `2001:db8::/32` or `192.0.2.7` (= `/32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpBlock {
    network: IpAddr,
    prefix: u8,
}

/// Why a string is not an IP block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part does not parse.
    #[error("not an IPv4 or IPv6 address")]
    Address,
    /// The prefix is not a number within the family's width.
    #[error("prefix length must be 0-32 for IPv4 and 0-128 for IPv6")]
    Prefix,
    /// Bits are set after the prefix (`10.0.0.1/8`): almost always a typo.
    #[error("address has bits set beyond the prefix; did you mean {0}?")]
    HostBits(String),
}

impl IpBlock {
    /// Whether `ip` lies in this block. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is
    /// treated as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(ip)), self.prefix, 32) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(ip), self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }

    /// Whether `ip` is in any of `blocks`; an empty list allows every address.
    pub fn allows(blocks: &[IpBlock], ip: IpAddr) -> bool {
        blocks.is_empty() || blocks.iter().any(|b| b.contains(ip))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Keeps the top `prefix` bits of a `width`-bit number.
fn masked(value: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let shift = u32::from(width - prefix);
    (value >> shift) << shift
}

impl FromStr for IpBlock {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network = canonical(IpAddr::from_str(addr).map_err(|_| CidrError::Address)?);
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| CidrError::Prefix)?
            }
            Some(_) => return Err(CidrError::Prefix),
        };
        if prefix > width {
            return Err(CidrError::Prefix);
        }
        let bits = match network {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let kept = masked(bits, prefix, width);
        if kept != bits {
            let suggestion = match network {
                IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from(kept as u32)),
                IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(kept)),
            };
            return Err(CidrError::HostBits(format!("{suggestion}/{prefix}")));
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for IpBlock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpBlock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_matches_both_families() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::/0", "::1", true),
            ("2001:db8::1", "2001:db8::1", true),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("::ffff:10.0.0.0/104", "10.1.2.3", false),
        ];
        for (block, addr, want) in cases {
            let b: Result<IpBlock, _> = block.parse();
            match b {
                Ok(b) => assert_eq!(b.contains(ip(addr)), *want, "{block} ∋ {addr}"),
                // ::ffff:10.0.0.0/104 is canonicalised to IPv4 and its prefix is then too long.
                Err(e) => assert_eq!(e, CidrError::Prefix, "{block}"),
            }
        }
    }

    #[test]
    fn rejects_malformed_blocks() {
        assert_eq!(
            "10.0.0.1/8".parse::<IpBlock>(),
            Err(CidrError::HostBits("10.0.0.0/8".into()))
        );
        assert_eq!("10.0.0.0/33".parse::<IpBlock>(), Err(CidrError::Prefix));
        assert_eq!("10.0.0.0/".parse::<IpBlock>(), Err(CidrError::Prefix));
        assert_eq!("10.0.0.0/+8".parse::<IpBlock>(), Err(CidrError::Prefix));
        assert_eq!("2001:db8::/129".parse::<IpBlock>(), Err(CidrError::Prefix));
        assert_eq!("10.0.0".parse::<IpBlock>(), Err(CidrError::Address));
        assert_eq!("example.org/8".parse::<IpBlock>(), Err(CidrError::Address));
        assert_eq!(" 10.0.0.0/8".parse::<IpBlock>(), Err(CidrError::Address));
    }

    #[test]
    fn display_round_trips() {
        for s in ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::/0"] {
            assert_eq!(s.parse::<IpBlock>().unwrap().to_string(), s);
        }
        assert!(IpBlock::allows(&[], ip("1.2.3.4")));
    }
}
