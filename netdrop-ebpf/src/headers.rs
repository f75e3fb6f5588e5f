//! IP / L4 / VXLAN header decoding from kernel memory (probe reads into
//! stack buffers with constant indices, so the verifier sees every access
//! bounded).

use netdrop_common::FlowHdr;

use crate::read::{KernelRead, Probe};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;

pub enum Parsed {
    /// Decoded; `l4_at` is the kernel address of the L4 header.
    Ok {
        l4_at: u64,
    },
    None,
}

#[inline(always)]
fn has_ports(proto: u8) -> bool {
    matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
}

#[inline(always)]
fn l4_from(buf: &[u8; 4], proto: u8, f: &mut FlowHdr) {
    if has_ports(proto) {
        f.sport = u16::from_be_bytes([buf[0], buf[1]]);
        f.dport = u16::from_be_bytes([buf[2], buf[3]]);
    } else if proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 {
        f.icmp_type = buf[0];
        f.icmp_code = buf[1];
    }
}

/// Decodes the IPv4/IPv6 header at kernel address `at` and the first four
/// bytes of its L4 header.
#[inline(always)]
pub fn parse_ip(at: u64, f: &mut FlowHdr) -> Parsed {
    // 44 bytes: a full IPv6 header, or an option-less IPv4 header + L4 ports.
    let Some(buf) = (unsafe { Probe::read::<[u8; 44]>(at as *const u8, 0) }) else {
        return Parsed::None;
    };
    match buf[0] >> 4 {
        4 => {
            let ihl = u64::from(buf[0] & 0x0f) * 4;
            if ihl < 20 {
                return Parsed::None;
            }
            f.family = 4;
            f.proto = buf[9];
            f.src[..4].copy_from_slice(&buf[12..16]);
            f.dst[..4].copy_from_slice(&buf[16..20]);
            // Only the first fragment carries the L4 header.
            let frag_off = u16::from_be_bytes([buf[6], buf[7]]) & 0x1fff;
            if frag_off == 0 {
                if ihl == 20 {
                    l4_from(&[buf[20], buf[21], buf[22], buf[23]], f.proto, f);
                } else if let Some(l4) =
                    unsafe { Probe::read::<[u8; 4]>((at + ihl) as *const u8, 0) }
                {
                    l4_from(&l4, f.proto, f);
                }
            }
            Parsed::Ok { l4_at: at + ihl }
        }
        6 => {
            f.family = 6;
            f.proto = buf[6];
            f.src.copy_from_slice(&buf[8..24]);
            f.dst.copy_from_slice(&buf[24..40]);
            // Extension headers are not walked: their packets keep proto only.
            l4_from(&[buf[40], buf[41], buf[42], buf[43]], f.proto, f);
            Parsed::Ok { l4_at: at + 40 }
        }
        _ => Parsed::None,
    }
}

/// Decodes a VXLAN header at `at` (right after the outer UDP header) and the
/// inner Ethernet + IP flow. Returns the VNI.
#[inline(always)]
pub fn parse_vxlan(at: u64, inner: &mut FlowHdr) -> u32 {
    // VXLAN (8) + Ethernet (14).
    let Some(hdr) = (unsafe { Probe::read::<[u8; 22]>(at as *const u8, 0) }) else {
        return 0;
    };
    let vni = u32::from_be_bytes([0, hdr[4], hdr[5], hdr[6]]);
    let ethertype = u16::from_be_bytes([hdr[20], hdr[21]]);
    if ethertype == 0x0800 || ethertype == 0x86dd {
        let _ = parse_ip(at + 22, inner);
    }
    vni
}
