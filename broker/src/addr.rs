//! Which addresses `http.fetch` may connect to: the SSRF rules, pure.
//!
//! A URL's host is parsed the way resolvers and browsers read it, so an
//! address spelled in another form (`2130706433`, `0x7f.1`, `017700000001`,
//! `127.1`, `[::ffff:127.0.0.1]`) is seen as the address it is, and checked.
//! Only global unicast passes unless the policy allows a class by name; a
//! resolved name passes only if every address it resolved to passes, and
//! the connection then goes to the checked address (DNS pinning).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A URL host, once parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An address literal, in any of the forms resolvers accept.
    Ip(IpAddr),
    /// A DNS name: lower case, without a trailing dot.
    Name(String),
}

/// A class of address that is not global unicast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum AddrClass {
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10/8`, `172.16/12`, `192.168/16`, `fc00::/7`.
    Private,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// `100.64.0.0/10` (RFC 6598, carrier-grade NAT).
    SharedCgnat,
    /// Cloud metadata services: `169.254.169.254`, `fd00:ec2::254`.
    Metadata,
    /// `224/4`, `255.255.255.255`, `ff00::/8`.
    Multicast,
    /// `::ffff:0:0/96` and `::/96`: an IPv4 address inside IPv6.
    Ipv4InIpv6,
    /// `64:ff9b::/96`, `64:ff9b:1::/48`: translated to IPv4 by NAT64.
    Nat64,
    /// Documentation, benchmarking, protocol assignments, `240/4`,
    /// site-local, 6to4, Teredo and discard prefixes.
    Reserved,
}

impl AddrClass {
    /// The class's name in policy and in refusals.
    pub fn name(self) -> &'static str {
        match self {
            AddrClass::Unspecified => "unspecified",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link_local",
            AddrClass::SharedCgnat => "shared_cgnat",
            AddrClass::Metadata => "metadata",
            AddrClass::Multicast => "multicast",
            AddrClass::Ipv4InIpv6 => "ipv4_in_ipv6",
            AddrClass::Nat64 => "nat64",
            AddrClass::Reserved => "reserved",
        }
    }

    /// The class named `name` (as [`AddrClass::name`] spells it).
    pub fn from_name(name: &str) -> Option<AddrClass> {
        [
            AddrClass::Unspecified,
            AddrClass::Loopback,
            AddrClass::Private,
            AddrClass::LinkLocal,
            AddrClass::SharedCgnat,
            AddrClass::Metadata,
            AddrClass::Multicast,
            AddrClass::Ipv4InIpv6,
            AddrClass::Nat64,
            AddrClass::Reserved,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }
}

/// Why a host or address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrRefusal {
    /// The host is empty, too long, or not a valid DNS name or address.
    #[error("host {host:?} is not a valid name or address: {reason}")]
    InvalidHost {
        /// The host as given (at most 256 characters of it).
        host: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `localhost` and names under it always mean this machine (RFC 6761).
    #[error("host {0:?} names this machine")]
    LocalName(String),
    /// The address is not global unicast, and policy does not allow its class.
    #[error("address {addr} is {} and policy allows only global unicast", .class.name())]
    NotGlobal {
        /// The address refused.
        addr: IpAddr,
        /// Its class.
        class: AddrClass,
    },
    /// The name resolved to no address.
    #[error("host {0:?} resolved to no address")]
    NoAddress(String),
}

/// Parses a URL host: `[v6]`, an IPv4 address in any inet_aton form, or a
/// DNS name (case folded, one trailing dot dropped).
pub fn parse_host(host: &str) -> Result<Host, AddrRefusal> {
    let invalid = |reason| AddrRefusal::InvalidHost {
        host: host.chars().take(256).collect(),
        reason,
    };
    if host.is_empty() {
        return Err(invalid("empty"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(invalid("unclosed ["))?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| invalid("not an IPv6 address"));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(invalid("a name is 1 to 253 characters"));
    }
    // A last label that is numeric makes the whole host an IPv4 address to
    // resolvers (WHATWG URL); it must then parse as one, or it is refused.
    let last = name.rsplit('.').next().unwrap_or("");
    if last.bytes().all(|b| b.is_ascii_digit()) || is_hex_number(last) {
        return inet_aton(&name)
            .map(|a| Host::Ip(IpAddr::V4(a)))
            .ok_or(invalid("a numeric host that is not an IPv4 address"));
    }
    for label in name.split('.') {
        let ldh = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if label.is_empty() || label.len() > 63 || !ldh {
            return Err(invalid("a label is 1 to 63 letters, digits or hyphens"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label does not start or end with a hyphen"));
        }
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Err(AddrRefusal::LocalName(name));
    }
    Ok(Host::Name(name))
}

fn is_hex_number(s: &str) -> bool {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"));
    digits.is_some_and(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One inet_aton part: decimal, `0x` hex or leading-zero octal.
fn number(part: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = part.strip_prefix("0x").or(part.strip_prefix("0X")) {
        (h, 16)
    } else if part.len() > 1 && part.starts_with('0') {
        (&part[1..], 8)
    } else {
        (part, 10)
    };
    if digits.is_empty() {
        return (radix == 16).then_some(0);
    }
    if digits.len() > 32 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// inet_aton: `a`, `a.b`, `a.b.c` or `a.b.c.d`, the last part filling the
/// remaining bytes.
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<u64> = s.split('.').map(number).collect::<Option<_>>()?;
    let (last, head) = parts.split_last()?;
    if head.len() > 3 || head.iter().any(|&p| p > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if *last >= 1u64 << rest_bits {
        return None;
    }
    let mut v: u64 = 0;
    for (i, &p) in head.iter().enumerate() {
        v |= p << (24 - 8 * i as u32);
    }
    u32::try_from(v | last).ok().map(Ipv4Addr::from)
}

/// The class of an address that is not global unicast; `None` if it is.
pub fn classify(addr: IpAddr) -> Option<AddrClass> {
    match addr {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn classify_v4(a: Ipv4Addr) -> Option<AddrClass> {
    let [o0, o1, o2, _] = a.octets();
    Some(match (o0, o1, o2) {
        _ if a == Ipv4Addr::new(169, 254, 169, 254) => AddrClass::Metadata,
        (0, _, _) => AddrClass::Unspecified,
        (127, _, _) => AddrClass::Loopback,
        (10, _, _) | (192, 168, _) => AddrClass::Private,
        (172, b, _) if (16..32).contains(&b) => AddrClass::Private,
        (169, 254, _) => AddrClass::LinkLocal,
        (100, b, _) if (64..128).contains(&b) => AddrClass::SharedCgnat,
        (224..=239, _, _) => AddrClass::Multicast,
        _ if a.is_broadcast() => AddrClass::Multicast,
        (240..=255, _, _) => AddrClass::Reserved,
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (192, 88, 99) => {
            AddrClass::Reserved
        }
        (198, 18 | 19, _) => AddrClass::Reserved,
        _ => return None,
    })
}

fn classify_v6(a: Ipv6Addr) -> Option<AddrClass> {
    let s = a.segments();
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => AddrClass::Unspecified,
        [0, 0, 0, 0, 0, 0, 0, 1] => AddrClass::Loopback,
        [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] => AddrClass::Metadata,
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => AddrClass::Ipv4InIpv6,
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 1, ..] => AddrClass::Nat64,
        [x, ..] if x & 0xfe00 == 0xfc00 => AddrClass::Private,
        [x, ..] if x & 0xffc0 == 0xfe80 => AddrClass::LinkLocal,
        [x, ..] if x & 0xffc0 == 0xfec0 => AddrClass::Reserved,
        [x, ..] if x & 0xff00 == 0xff00 => AddrClass::Multicast,
        [0x2001, 0xdb8, ..] | [0x2001, 0, ..] | [0x2002, ..] | [0x100, 0, 0, 0, ..] => {
            AddrClass::Reserved
        }
        // Global unicast is 2000::/3; everything else is unassigned.
        [x, ..] if x & 0xe000 != 0x2000 => AddrClass::Reserved,
        _ => return None,
    })
}

/// Passes `addr` if it is global unicast or its class is in `allowed`.
/// IPv4-in-IPv6 and NAT64 addresses are refused whatever `allowed` says:
/// they reach an IPv4 address that was not itself checked.
pub fn check_addr(addr: IpAddr, allowed: &[AddrClass]) -> Result<(), AddrRefusal> {
    match classify(addr) {
        None => Ok(()),
        Some(class @ (AddrClass::Ipv4InIpv6 | AddrClass::Nat64)) => {
            Err(AddrRefusal::NotGlobal { addr, class })
        }
        Some(class) if allowed.contains(&class) => Ok(()),
        Some(class) => Err(AddrRefusal::NotGlobal { addr, class }),
    }
}

/// Checks every address a name resolved to, and answers the one to connect
/// to: resolve once, check all, connect to the checked address. One bad
/// address refuses the name (a resolver that mixes in `127.0.0.1` is an
/// attack, not a fallback).
pub fn pin(name: &str, resolved: &[IpAddr], allowed: &[AddrClass]) -> Result<IpAddr, AddrRefusal> {
    for &addr in resolved {
        check_addr(addr, allowed)?;
    }
    resolved
        .first()
        .copied()
        .ok_or_else(|| AddrRefusal::NoAddress(name.chars().take(256).collect()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn refused(host: &str) -> AddrRefusal {
        match parse_host(host) {
            Err(e) => e,
            Ok(Host::Ip(ip)) => check_addr(ip, &[]).unwrap_err(),
            Ok(Host::Name(n)) => panic!("{host} parsed as the name {n}"),
        }
    }

    #[test]
    fn class_names_read_back() {
        for c in [
            AddrClass::Loopback,
            AddrClass::SharedCgnat,
            AddrClass::Nat64,
        ] {
            assert_eq!(AddrClass::from_name(c.name()), Some(c));
        }
        assert_eq!(AddrClass::from_name("Loopback"), None);
        assert_eq!(AddrClass::from_name("global"), None);
    }

    #[test]
    fn every_spelling_of_loopback_metadata_and_private_is_refused() {
        let cases = [
            ("127.0.0.1", AddrClass::Loopback),
            ("[::1]", AddrClass::Loopback),
            ("[::ffff:127.0.0.1]", AddrClass::Ipv4InIpv6),
            ("[::127.0.0.1]", AddrClass::Ipv4InIpv6),
            ("169.254.169.254", AddrClass::Metadata),
            ("2130706433", AddrClass::Loopback),
            ("0x7f.1", AddrClass::Loopback),
            ("017700000001", AddrClass::Loopback),
            ("127.1", AddrClass::Loopback),
            ("0x7F000001", AddrClass::Loopback),
            ("0177.0.0.01", AddrClass::Loopback),
            ("[fd00::1]", AddrClass::Private),
            ("100.64.0.1", AddrClass::SharedCgnat),
            ("10.1.2.3", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("192.168.0.1", AddrClass::Private),
            ("169.254.1.1", AddrClass::LinkLocal),
            ("[fe80::1]", AddrClass::LinkLocal),
            ("0.0.0.0", AddrClass::Unspecified),
            ("0", AddrClass::Unspecified),
            ("[::]", AddrClass::Unspecified),
            ("224.0.0.1", AddrClass::Multicast),
            ("255.255.255.255", AddrClass::Multicast),
            ("[ff02::1]", AddrClass::Multicast),
            ("[64:ff9b::7f00:1]", AddrClass::Nat64),
            ("[64:ff9b:1::1]", AddrClass::Nat64),
            ("[fd00:ec2::254]", AddrClass::Metadata),
            ("192.0.2.1", AddrClass::Reserved),
            ("240.0.0.1", AddrClass::Reserved),
            ("[2001:db8::1]", AddrClass::Reserved),
            ("[2002:7f00:1::]", AddrClass::Reserved),
        ];
        for (host, class) in cases {
            match refused(host) {
                AddrRefusal::NotGlobal { class: got, .. } => assert_eq!(got, class, "{host}"),
                other => panic!("{host}: {other}"),
            }
        }
    }

    #[test]
    fn local_names_are_refused_before_any_lookup() {
        for host in ["localhost", "localhost.", "LOCALHOST", "api.localhost."] {
            assert!(matches!(refused(host), AddrRefusal::LocalName(_)), "{host}");
        }
    }

    #[test]
    fn numeric_hosts_that_are_no_address_are_invalid_not_names() {
        for host in [
            "256.0.0.1",
            "1.2.3.4.5",
            "0x1.0x100000000",
            "1.2.3.999",
            "08",
            "1..2",
        ] {
            assert!(
                matches!(refused(host), AddrRefusal::InvalidHost { .. }),
                "{host}"
            );
        }
        for host in [
            "",
            "[::1",
            "a_b.example",
            "-a.example",
            &"a".repeat(64),
            "[zz]",
        ] {
            assert!(
                matches!(parse_host(host), Err(AddrRefusal::InvalidHost { .. })),
                "{host}"
            );
        }
    }

    #[test]
    fn global_unicast_and_names_pass() {
        for host in [
            "93.184.215.14",
            "[2606:2800:21f:cb07:6820:80da:af6b:8b2c]",
            "8.8.8.8",
        ] {
            let Ok(Host::Ip(ip)) = parse_host(host) else {
                panic!("{host}")
            };
            check_addr(ip, &[]).unwrap();
        }
        assert_eq!(
            parse_host("Example.COM.").unwrap(),
            Host::Name("example.com".into())
        );
        assert_eq!(
            parse_host("1a.example").unwrap(),
            Host::Name("1a.example".into())
        );
    }

    #[test]
    fn policy_may_allow_a_class_but_never_a_translated_address() {
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        check_addr(private, &[AddrClass::Private]).unwrap();
        assert!(check_addr(private, &[AddrClass::Loopback]).is_err());
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let all = [AddrClass::Private, AddrClass::Ipv4InIpv6, AddrClass::Nat64];
        assert!(check_addr(mapped, &all).is_err());
    }

    #[test]
    fn a_name_is_pinned_only_if_every_resolved_address_passes() {
        let good: IpAddr = "93.184.215.14".parse().unwrap();
        let loop_: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(pin("a.example", &[good], &[]).unwrap(), good);
        let e = pin("a.example", &[good, loop_], &[]).unwrap_err();
        assert_eq!(
            e,
            AddrRefusal::NotGlobal {
                addr: loop_,
                class: AddrClass::Loopback
            }
        );
        assert_eq!(
            pin("a.example", &[], &[]),
            Err(AddrRefusal::NoAddress("a.example".into()))
        );
    }

    #[test]
    fn no_host_string_panics() {
        let alphabet = [
            "0", "1", "x", "7f", ".", "[", "]", ":", "f", "255", "0x", "-", "a",
        ];
        let mut n = 0u64;
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    for d in alphabet {
                        let host = format!("{a}{b}{c}{d}");
                        if let Ok(Host::Ip(ip)) = parse_host(&host) {
                            let _ = check_addr(ip, &[]);
                        }
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 13u64.pow(4));
    }
}
