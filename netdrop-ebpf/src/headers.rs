//! IP / L4 / VXLAN header decoding from kernel memory, through a reader's
//! `Window`: one probe read into a stack buffer (constant indices, so the
//! verifier sees every access bounded), or loads in place through cast
//! memory.

use netdrop_common::FlowHdr;

use crate::read::{KernelRead, Window};
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
fn l4_from(buf: [u8; 4], proto: u8, f: &mut FlowHdr) {
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
pub fn parse_ip<U: KernelRead>(at: u64, f: &mut FlowHdr) -> Parsed {
    // 44 bytes: a full IPv6 header, or an option-less IPv4 header + L4 ports.
    // SAFETY: `at` is the packet's headers in the skb's head buffer; faults read as None.
    let Some(w) = (unsafe { U::window::<44>(at) }) else {
        return Parsed::None;
    };
    let b0 = w.b1(0);
    match b0 >> 4 {
        4 => {
            let ihl = u64::from(b0 & 0x0f) * 4;
            if ihl < 20 {
                return Parsed::None;
            }
            f.family = 4;
            f.proto = w.b1(9);
            f.src[..4].copy_from_slice(&w.b4(12));
            f.dst[..4].copy_from_slice(&w.b4(16));
            // Only the first fragment carries the L4 header.
            let frag = w.b4(4);
            let frag_off = u16::from_be_bytes([frag[2], frag[3]]) & 0x1fff;
            if frag_off == 0 {
                if ihl == 20 {
                    l4_from(w.b4(20), f.proto, f);
                // SAFETY: `at` is the packet's headers in the skb's head buffer; faults read as None.
                } else if let Some(l4) = unsafe { U::window::<4>(at + ihl) } {
                    l4_from(l4.b4(0), f.proto, f);
                }
            }
            Parsed::Ok { l4_at: at + ihl }
        }
        6 => {
            f.family = 6;
            f.proto = w.b1(6);
            f.src[..8].copy_from_slice(&w.b8(8));
            f.src[8..].copy_from_slice(&w.b8(16));
            f.dst[..8].copy_from_slice(&w.b8(24));
            f.dst[8..].copy_from_slice(&w.b8(32));
            // Extension headers are not walked: their packets keep proto only.
            l4_from(w.b4(40), f.proto, f);
            Parsed::Ok { l4_at: at + 40 }
        }
        _ => Parsed::None,
    }
}

/// Decodes a VXLAN header at `at` (right after the outer UDP header) and the
/// inner Ethernet + IP flow. Returns the VNI.
#[inline(always)]
pub fn parse_vxlan<U: KernelRead>(at: u64, inner: &mut FlowHdr) -> u32 {
    // VXLAN (8) + Ethernet (14).
    // SAFETY: `at` is the packet's headers in the skb's head buffer; faults read as None.
    let Some(w) = (unsafe { U::window::<22>(at) }) else {
        return 0;
    };
    let v = w.b4(4);
    let vni = u32::from_be_bytes([0, v[0], v[1], v[2]]);
    // The EtherType's two bytes close the window: read them as the tail of
    // a 4-byte field (16..20 are the source MAC's last bytes).
    let e = w.b4(18);
    let ethertype = u16::from_be_bytes([e[2], e[3]]);
    if ethertype == 0x0800 || ethertype == 0x86dd {
        let _ = parse_ip::<U>(at + 22, inner);
    }
    vni
}
