//! Flows from the kernel's fixed-size headers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netdrop_common::FlowHdr;
use serde::Serialize;

use netdrop_model::{
    packet::flow_notation,
    rules::{proto_name, proto_number},
};

/// A decoded packet flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: String,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
}

impl Flow {
    pub fn from_hdr(h: &FlowHdr) -> Option<Self> {
        let (src, dst) = match h.family {
            4 => (
                IpAddr::V4(Ipv4Addr::new(h.src[0], h.src[1], h.src[2], h.src[3])),
                IpAddr::V4(Ipv4Addr::new(h.dst[0], h.dst[1], h.dst[2], h.dst[3])),
            ),
            6 => (
                IpAddr::V6(Ipv6Addr::from(h.src)),
                IpAddr::V6(Ipv6Addr::from(h.dst)),
            ),
            _ => return None,
        };
        let ports = matches!(h.proto, 6 | 17 | 132);
        Some(Self {
            src,
            dst,
            proto: proto_name(h.proto)
                .map(str::to_owned)
                .unwrap_or_else(|| h.proto.to_string()),
            sport: ports.then_some(h.sport),
            dport: ports.then_some(h.dport),
            icmp_type: matches!(h.proto, 1 | 58).then_some(h.icmp_type),
        })
    }

    pub fn proto_number(&self) -> u8 {
        proto_number(&self.proto).unwrap_or(0)
    }
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&flow_notation(
            &self.proto,
            self.src,
            self.sport,
            self.dst,
            self.dport,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_v6_flows() {
        let mut h = FlowHdr {
            family: 4,
            proto: 17,
            sport: 5,
            dport: 8472,
            ..Default::default()
        };
        h.src[..4].copy_from_slice(&[192, 0, 2, 2]);
        h.dst[..4].copy_from_slice(&[192, 0, 2, 1]);
        let f = Flow::from_hdr(&h).unwrap();
        assert_eq!(f.to_string(), "udp 192.0.2.2:5 -> 192.0.2.1:8472");
        let h6 = FlowHdr {
            family: 6,
            proto: 58,
            icmp_type: 128,
            src: Ipv6Addr::LOCALHOST.octets(),
            dst: Ipv6Addr::LOCALHOST.octets(),
            ..Default::default()
        };
        let f = Flow::from_hdr(&h6).unwrap();
        assert_eq!(
            (f.proto.as_str(), f.icmp_type, f.sport),
            ("icmpv6", Some(128), None)
        );
        assert!(Flow::from_hdr(&FlowHdr::default()).is_none());
    }
}
