//! nf_tables values in nft's words: what the bytes of a comparison or a
//! set element mean depends on what they are compared with (an address, a
//! port, a protocol, a conntrack state...). Names are the ones `nft -j`
//! prints, so rules read over netlink render as nft lists them.

use serde_json::{Value, json};

/// What a register or a set key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ipv4,
    Ipv6,
    /// An IP protocol number (`inet_proto`).
    Proto,
    /// A port, big-endian (`inet_service`).
    Port,
    IcmpType,
    Icmpv6Type,
    /// Conntrack state bits (host byte order).
    CtState,
    CtStatus,
    /// A 32-bit mark (host byte order).
    Mark,
    /// An interface name (16 bytes, NUL-padded).
    Ifname,
    NfProto,
    /// An address type (`fib … type`).
    FibType,
    /// A host-byte-order integer (`numgen`, `meta iif`, `fib … oif`).
    Integer,
    /// A network-byte-order number nft has no name for.
    Raw,
}

impl Kind {
    /// Bytes a value of this kind takes (its register is rounded up to 4).
    pub fn len(self) -> usize {
        match self {
            Kind::Ipv4 | Kind::CtState | Kind::CtStatus | Kind::Mark | Kind::FibType => 4,
            Kind::Integer => 4,
            Kind::Ipv6 => 16,
            Kind::Proto | Kind::IcmpType | Kind::Icmpv6Type | Kind::NfProto => 1,
            Kind::Port => 2,
            Kind::Ifname => 16,
            Kind::Raw => 4,
        }
    }

    /// nft's datatype number (`enum datatypes`) → kind, for set keys.
    pub fn of_type_id(id: u32) -> Kind {
        match id {
            2 => Kind::NfProto,
            7 => Kind::Ipv4,
            8 => Kind::Ipv6,
            12 => Kind::Proto,
            13 => Kind::Port,
            14 => Kind::IcmpType,
            19 => Kind::Mark,
            26 => Kind::CtState,
            28 => Kind::CtStatus,
            29 => Kind::Icmpv6Type,
            38 => Kind::FibType,
            41 => Kind::Ifname,
            4 => Kind::Integer,
            _ => Kind::Raw,
        }
    }

    /// The kinds of a (possibly concatenated) set key type: nft packs each
    /// part's datatype into 6 bits, the first part highest.
    pub fn of_key_type(mut id: u32) -> Vec<Kind> {
        let mut parts = Vec::new();
        while id != 0 {
            parts.push(Kind::of_type_id(id & 0x3f));
            id >>= 6;
        }
        parts.reverse();
        if parts.is_empty() {
            parts.push(Kind::Raw);
        }
        parts
    }

    fn host_order(self) -> bool {
        matches!(
            self,
            Kind::CtState | Kind::CtStatus | Kind::Mark | Kind::FibType | Kind::Integer
        )
    }

    /// The value's number, for sorting elements as nft does (numerically).
    pub fn sort_key(self, b: &[u8]) -> Vec<u8> {
        let mut v = b.to_vec();
        if self.host_order() && cfg!(target_endian = "little") {
            v.reverse();
        }
        v
    }

    /// `bytes` as nft prints a value of this kind.
    pub fn value(self, b: &[u8]) -> Value {
        let host = |b: &[u8]| -> u64 {
            let mut a = [0u8; 4];
            let n = b.len().min(4);
            a[..n].copy_from_slice(&b[..n]);
            u64::from(u32::from_ne_bytes(a))
        };
        let be = |b: &[u8]| -> u64 { b.iter().take(8).fold(0u64, |n, &x| (n << 8) | u64::from(x)) };
        match self {
            Kind::Ipv4 if b.len() >= 4 => {
                json!(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
            }
            Kind::Ipv6 if b.len() >= 16 => {
                let a: [u8; 16] = b[..16].try_into().unwrap_or_default();
                json!(std::net::Ipv6Addr::from(a).to_string())
            }
            Kind::Proto => match b.first() {
                Some(&p) => proto_name(p).map_or_else(|| json!(p), |n| json!(n)),
                None => Value::Null,
            },
            Kind::Port => json!(be(b)),
            Kind::IcmpType => match b.first() {
                Some(&t) => icmp_type(t).map_or_else(|| json!(t), |n| json!(n)),
                None => Value::Null,
            },
            Kind::Icmpv6Type => match b.first() {
                Some(&t) => icmpv6_type(t).map_or_else(|| json!(t), |n| json!(n)),
                None => Value::Null,
            },
            Kind::CtState => bits(host(b), CT_STATES),
            Kind::CtStatus => bits(host(b), CT_STATUS),
            Kind::Mark | Kind::Integer => json!(host(b)),
            Kind::Ifname => {
                let name = b.split(|&c| c == 0).next().unwrap_or(b);
                let mut s = String::from_utf8_lossy(name).into_owned();
                // A comparison shorter than the name field, without its
                // NUL: a prefix (`eth*`).
                if b.len() < 16 && !b.contains(&0) {
                    s.push('*');
                }
                json!(s)
            }
            Kind::NfProto => match b.first() {
                Some(2) => json!("ipv4"),
                Some(10) => json!("ipv6"),
                Some(&n) => json!(n),
                None => Value::Null,
            },
            Kind::FibType => {
                let t = host(b);
                FIB_TYPES
                    .get(t as usize)
                    .map_or_else(|| json!(t), |n| json!(n))
            }
            Kind::Raw | Kind::Ipv4 | Kind::Ipv6 => json!(be(b)),
        }
    }
}

/// Names of the bits set in `v`: one name alone, several as a list.
fn bits(v: u64, names: &[(u64, &str)]) -> Value {
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| v & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    match set.as_slice() {
        [] => json!(v),
        [one] => json!(one),
        many => json!(many),
    }
}

/// `bits` of a mask as a list of names (`ct state { established, related }`
/// read from a bitwise test), one name alone.
pub fn bit_names(kind: Kind, mask: &[u8]) -> Value {
    let mut a = [0u8; 4];
    let n = mask.len().min(4);
    a[..n].copy_from_slice(&mask[..n]);
    let v = u64::from(u32::from_ne_bytes(a));
    match kind {
        Kind::CtState => bits(v, CT_STATES),
        Kind::CtStatus => bits(v, CT_STATUS),
        _ => json!(v),
    }
}

const CT_STATES: &[(u64, &str)] = &[
    (1, "invalid"),
    (2, "established"),
    (4, "related"),
    (8, "new"),
    (64, "untracked"),
];

const CT_STATUS: &[(u64, &str)] = &[
    (1, "expected"),
    (2, "seen-reply"),
    (4, "assured"),
    (8, "confirmed"),
    (16, "snat"),
    (32, "dnat"),
    (512, "dying"),
];

const FIB_TYPES: &[&str] = &[
    "unspec",
    "unicast",
    "local",
    "broadcast",
    "anycast",
    "multicast",
    "blackhole",
    "unreachable",
    "prohibit",
];

/// IP protocol names as nft prints them (from /etc/protocols).
pub fn proto_name(p: u8) -> Option<&'static str> {
    Some(match p {
        0 => "ip",
        1 => "icmp",
        2 => "igmp",
        4 => "ipencap",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        41 => "ipv6",
        47 => "gre",
        50 => "esp",
        51 => "ah",
        58 => "ipv6-icmp",
        89 => "ospf",
        103 => "pim",
        112 => "vrrp",
        132 => "sctp",
        136 => "udplite",
        _ => return None,
    })
}

fn icmp_type(t: u8) -> Option<&'static str> {
    Some(match t {
        0 => "echo-reply",
        3 => "destination-unreachable",
        4 => "source-quench",
        5 => "redirect",
        8 => "echo-request",
        9 => "router-advertisement",
        10 => "router-solicitation",
        11 => "time-exceeded",
        12 => "parameter-problem",
        13 => "timestamp-request",
        14 => "timestamp-reply",
        15 => "info-request",
        16 => "info-reply",
        17 => "address-mask-request",
        18 => "address-mask-reply",
        _ => return None,
    })
}

fn icmpv6_type(t: u8) -> Option<&'static str> {
    Some(match t {
        1 => "destination-unreachable",
        2 => "packet-too-big",
        3 => "time-exceeded",
        4 => "parameter-problem",
        128 => "echo-request",
        129 => "echo-reply",
        130 => "mld-listener-query",
        131 => "mld-listener-report",
        132 => "mld-listener-done",
        133 => "nd-router-solicit",
        134 => "nd-router-advert",
        135 => "nd-neighbor-solicit",
        136 => "nd-neighbor-advert",
        137 => "nd-redirect",
        138 => "router-renumbering",
        141 => "ind-neighbor-solicit",
        142 => "ind-neighbor-advert",
        143 => "mld2-listener-report",
        _ => return None,
    })
}

/// The length of the prefix `mask` is (all ones, then all zeros), if it is one.
pub fn prefix_len(mask: &[u8]) -> Option<u32> {
    let mut len = 0;
    let mut ended = false;
    for &b in mask {
        if ended && b != 0 {
            return None;
        }
        if b == 0xff {
            len += 8;
        } else {
            let ones = b.leading_ones();
            if b << ones != 0 {
                return None;
            }
            len += ones;
            ended = true;
        }
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_nft_prints_them() {
        assert_eq!(Kind::Ipv4.value(&[10, 0, 0, 1]), json!("10.0.0.1"));
        assert_eq!(Kind::Port.value(&[0x1f, 0x90]), json!(8080));
        assert_eq!(Kind::Proto.value(&[6]), json!("tcp"));
        assert_eq!(Kind::Proto.value(&[253]), json!(253));
        assert_eq!(
            Kind::CtState.value(&6u32.to_ne_bytes()),
            json!(["established", "related"])
        );
        assert_eq!(Kind::CtStatus.value(&32u32.to_ne_bytes()), json!("dnat"));
        assert_eq!(
            Kind::Ifname.value(b"eth0\0\0\0\0\0\0\0\0\0\0\0\0"),
            json!("eth0")
        );
        assert_eq!(Kind::Ifname.value(b"veth"), json!("veth*"));
        assert_eq!(Kind::FibType.value(&2u32.to_ne_bytes()), json!("local"));
        assert_eq!(
            Kind::Ipv6.value(&[0; 3]),
            json!(0),
            "short: a number, not a panic"
        );
        assert_eq!(
            Kind::of_key_type((7 << 12) | (12 << 6) | 13),
            [Kind::Ipv4, Kind::Proto, Kind::Port]
        );
        assert_eq!(prefix_len(&[255, 255, 0, 0]), Some(16));
        assert_eq!(prefix_len(&[255, 128, 0, 0]), Some(9));
        assert_eq!(prefix_len(&[255, 0, 255, 0]), None);
        assert_eq!(prefix_len(&[0xf0, 0x0f]), None);
    }
}
