//! The packet spec of `netdrop explain --packet`:
//! `<hook> <proto> <src>[:port] -> <dst>[:port] [in IF] [out IF] [mark M] [ct STATE] [icmp TYPE]`

use std::net::{IpAddr, SocketAddr};

use super::{rules::CtState, rules::proto_number, simulate::Packet};
use crate::words::Hook;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "bad --packet {spec:?}: {why} (expected \"<hook> <proto> <src>[:port] -> <dst>[:port] [in IF] [out IF] [mark M] [ct STATE]\")"
)]
pub struct PacketSpecError {
    spec: String,
    why: String,
}

/// The one way a flow is written: `tcp 10.224.1.2:40000 -> 10.224.2.2:80`,
/// IPv6 endpoints with a port bracketed.
pub fn flow_notation(
    proto: &str,
    src: IpAddr,
    sport: Option<u16>,
    dst: IpAddr,
    dport: Option<u16>,
) -> String {
    let ep = |a: IpAddr, port: Option<u16>| match (a, port) {
        (IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
        (a, Some(port)) => format!("{a}:{port}"),
        (a, None) => a.to_string(),
    };
    format!("{proto} {} -> {}", ep(src, sport), ep(dst, dport))
}

pub fn parse_packet(spec: &str) -> Result<Packet, PacketSpecError> {
    let fail = |why: String| PacketSpecError {
        spec: spec.to_owned(),
        why,
    };
    let toks: Vec<&str> = spec.split_whitespace().collect();
    let [hook, proto, src, arrow, dst, rest @ ..] = toks.as_slice() else {
        return Err(fail("too few words".into()));
    };
    if *arrow != "->" {
        return Err(fail(format!("expected `->`, found {arrow:?}")));
    }
    let hook: Hook = hook.parse().map_err(fail)?;
    let proto = proto_number(proto).ok_or_else(|| fail(format!("unknown protocol {proto:?}")))?;
    let (src, sport) = endpoint(src).ok_or_else(|| fail(format!("bad source {src:?}")))?;
    let (dst, dport) = endpoint(dst).ok_or_else(|| fail(format!("bad destination {dst:?}")))?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(fail(
            "source and destination are of different IP families".into(),
        ));
    }
    let mut p = Packet::new(hook, proto, src, dst);
    p.sport = sport;
    p.dport = dport;
    let mut it = rest.iter();
    while let Some(k) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| fail(format!("{k} needs a value")))?;
        match *k {
            "in" | "-i" => p.in_iface = Some((*v).to_owned()),
            "out" | "-o" => p.out_iface = Some((*v).to_owned()),
            "mark" => {
                let m = match v.strip_prefix("0x") {
                    Some(h) => u32::from_str_radix(h, 16),
                    None => v.parse(),
                };
                p.mark = m.map_err(|_| fail(format!("bad mark {v:?}")))?;
            }
            "ct" | "state" => {
                p.ct =
                    CtState::parse(v).ok_or_else(|| fail(format!("bad conntrack state {v:?}")))?
            }
            "icmp" => p.icmp_type = Some((*v).to_owned()),
            "local" => {
                let addrs: Result<Vec<IpAddr>, _> = v.split(',').map(str::parse).collect();
                p.local_addrs =
                    Some(addrs.map_err(|_| fail(format!("bad local addresses {v:?}")))?);
            }
            other => return Err(fail(format!("unknown word {other:?}"))),
        }
    }
    if matches!(proto, 1 | 58) && p.icmp_type.is_none() {
        p.icmp_type = Some("echo-request".into());
    }
    Ok(p)
}

/// `10.0.0.1`, `10.0.0.1:80`, `fd00::1`, `[fd00::1]:80`.
fn endpoint(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip(), Some(sa.port())));
    }
    s.parse::<IpAddr>().ok().map(|ip| (ip, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_form() {
        let p = parse_packet("FORWARD tcp 10.224.1.2:40000 -> 10.224.2.2:80 in flannel.1 out cni0 mark 0x4000 ct NEW").unwrap();
        assert_eq!(p.hook, Hook::Forward);
        assert_eq!((p.proto, p.sport, p.dport), (6, Some(40000), Some(80)));
        assert_eq!(p.in_iface.as_deref(), Some("flannel.1"));
        assert_eq!(p.out_iface.as_deref(), Some("cni0"));
        assert_eq!(p.mark, 0x4000);
        let p = parse_packet("input udp [fd00::2]:5 -> [fd00::1]:8472").unwrap();
        assert_eq!(p.dport, Some(8472));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (spec, want) in [
            ("FORWARD tcp 10.0.0.1", "too few"),
            ("SIDEWAYS tcp 1.1.1.1 -> 2.2.2.2", "unknown hook"),
            ("INPUT tcp 1.1.1.1 => 2.2.2.2", "->"),
            ("INPUT tcp 1.1.1.1 -> 2.2.2.2 mark zz", "bad mark"),
            ("INPUT tcp 1.1.1.1 -> fd00::1", "families"),
        ] {
            let e = parse_packet(spec).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }
}
