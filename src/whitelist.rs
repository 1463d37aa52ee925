//! Per-key IP whitelists: named entries, each an address or a CIDR network.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::WhitelistError;
use crate::key;
use crate::time::Timestamp;

/// Longest entry name accepted.
pub(crate) const MAX_ENTRY_NAME_LEN: usize = 200;
/// Length of a whitelist entry id (base62).
pub const ENTRY_ID_LEN: usize = 10;
/// Most entries one key's whitelist may hold.
pub(crate) const MAX_ENTRIES: usize = 1000;

/// One named whitelist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct WhitelistEntry {
    /// Stable id of the entry, used to remove it.
    pub id: String,
    /// What the operator called it ("office", "CRM egress").
    pub name: String,
    /// The address or network, in canonical form (`198.51.100.0/24`, `2001:db8::1`).
    pub network: String,
    /// When it was added.
    pub created_at: Timestamp,
}

/// A key's whitelist: the restriction toggle and its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct Whitelist {
    /// When true, only addresses covered by an entry are admitted; with no
    /// entries, nobody is.
    pub enabled: bool,
    /// The named entries, oldest first.
    pub entries: Vec<WhitelistEntry>,
}

/// An entry name is 1 to [`MAX_ENTRY_NAME_LEN`] bytes without control characters.
pub(crate) fn validate_entry_name(name: &str) -> Result<(), WhitelistError> {
    if name.trim().is_empty()
        || name.len() > MAX_ENTRY_NAME_LEN
        || name.chars().any(char::is_control)
    {
        return Err(WhitelistError::InvalidInput(format!(
            "a whitelist entry name must be 1 to {MAX_ENTRY_NAME_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// A new entry for `wl`, validated: a good name, a network (canonical
/// form) that `wl` does not hold yet, and room for it.
pub(crate) fn new_entry(
    wl: &Whitelist,
    name: &str,
    ip_or_cidr: &str,
    now: i64,
) -> Result<WhitelistEntry, WhitelistError> {
    validate_entry_name(name)?;
    let net = parse_network(ip_or_cidr).map_err(WhitelistError::InvalidNetwork)?;
    let network = canonical(&net);
    if let Some(dup) = wl.entries.iter().find(|e| e.network == network) {
        return Err(WhitelistError::InvalidInput(format!(
            "{network} is already whitelisted as {:?}",
            dup.name
        )));
    }
    if wl.entries.len() >= MAX_ENTRIES {
        return Err(WhitelistError::InvalidInput(format!(
            "a whitelist holds at most {MAX_ENTRIES} entries"
        )));
    }
    Ok(WhitelistEntry {
        id: key::random_base62(ENTRY_ID_LEN),
        name: name.to_string(),
        network,
        created_at: Timestamp::from_unix_millis(now),
    })
}

/// Parses an address or a CIDR network. Host bits set in a CIDR
/// (`10.0.0.1/8`) are an error, not silently masked: the operator meant
/// something and should say which.
pub(crate) fn parse_network(input: &str) -> Result<IpNet, String> {
    let text = input.trim();
    if text.contains('/') {
        let net: IpNet = text
            .parse()
            .map_err(|_| format!("{input:?} is not an IP address or CIDR network"))?;
        if net.trunc() != net {
            return Err(format!(
                "{input:?} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        Ok(normalise_net(net))
    } else {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| format!("{input:?} is not an IP address or CIDR network"))?;
        Ok(IpNet::from(normalise_ip(ip)))
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address it carries.
#[must_use]
pub(crate) fn normalise_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The text an entry is stored and shown as: a bare address for a host
/// network, `addr/len` otherwise.
pub(crate) fn canonical(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

fn normalise_net(net: IpNet) -> IpNet {
    // `::ffff:10.0.0.0/104` is the IPv4 network 10.0.0.0/8.
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        return IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net);
    }
    net
}

/// The rules the verify path checks: networks of an enabled whitelist.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules(Box<[IpNet]>);

impl Rules {
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.0)
    }

    pub(crate) fn from_entries(entries: &[WhitelistEntry]) -> Self {
        Self::from_networks(entries.iter().map(|e| e.network.as_str()))
    }

    /// The rules of entries' networks (in canonical form, as stored).
    pub(crate) fn from_networks<'a>(networks: impl Iterator<Item = &'a str>) -> Self {
        Rules(networks.filter_map(|n| parse_network(n).ok()).collect())
    }

    /// Whether `ip` (already normalised) is covered by some entry.
    pub(crate) fn admits(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(nets: &[&str]) -> Rules {
        Rules(nets.iter().map(|n| parse_network(n).unwrap()).collect())
    }

    #[test]
    fn host_bits_are_an_error() {
        let e = parse_network("10.0.0.1/8").unwrap_err();
        assert!(e.contains("10.0.0.0/8"), "{e}");
        assert!(parse_network("2001:db8::1/32").is_err());
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("not-an-ip").is_err());
        assert!(parse_network("").is_err());
    }

    #[test]
    fn single_addresses_become_host_networks() {
        let c = |s: &str| canonical(&parse_network(s).unwrap());
        assert_eq!(c("203.0.113.7"), "203.0.113.7");
        assert_eq!(c(" 203.0.113.7/32 "), "203.0.113.7");
        assert_eq!(c("2001:db8::1"), "2001:db8::1");
        assert_eq!(c("::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(c("::ffff:10.0.0.0/104"), "10.0.0.0/8");
        assert_eq!(c("2001:db8::/32"), "2001:db8::/32");
    }

    #[test]
    fn matching_covers_v4_v6_and_mapped_v4() {
        let r = rules(&["198.51.100.0/24", "2001:db8::/32"]);
        assert!(r.admits("198.51.100.77".parse().unwrap()));
        assert!(!r.admits("198.51.101.1".parse().unwrap()));
        assert!(r.admits("2001:db8:1::5".parse().unwrap()));
        assert!(!r.admits("2001:db9::5".parse().unwrap()));
        let mapped = normalise_ip("::ffff:198.51.100.9".parse().unwrap());
        assert!(r.admits(mapped));
        assert!(!rules(&[]).admits("127.0.0.1".parse().unwrap()));
    }
}
