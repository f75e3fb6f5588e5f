//! Is this a pod address? Pod CIDRs are few, so they live in a read-only
//! global and are compared with masks: a handful of ALU ops, where an LPM
//! trie lookup would cost a helper call and a trie walk per address.

use netdrop_common::{FlowHdr, MAX_POD_CIDRS, PodCidrs};

use crate::global;

/// Whether an IPv4 address (byte order as loaded) is in a pod CIDR.
#[inline(always)]
pub fn is_pod_v4(cidrs: &PodCidrs, addr: u32) -> bool {
    let n = global(&cidrs.n_v4) as usize;
    for i in 0..MAX_POD_CIDRS {
        if i >= n {
            break;
        }
        let [net, mask] = global(&cidrs.v4[i]);
        if addr & mask == net {
            return true;
        }
    }
    false
}

#[inline(always)]
pub fn is_pod_v6(cidrs: &PodCidrs, a0: u64, a1: u64) -> bool {
    let n = global(&cidrs.n_v6) as usize;
    for i in 0..MAX_POD_CIDRS {
        if i >= n {
            break;
        }
        let [n0, n1, m0, m1] = global(&cidrs.v6[i]);
        if a0 & m0 == n0 && a1 & m1 == n1 {
            return true;
        }
    }
    false
}

#[inline(always)]
pub fn halves(a: &[u8; 16]) -> (u64, u64) {
    let mut h = [0u8; 8];
    let mut l = [0u8; 8];
    h.copy_from_slice(&a[..8]);
    l.copy_from_slice(&a[8..]);
    (u64::from_ne_bytes(h), u64::from_ne_bytes(l))
}

/// `src_flag` / `dst_flag` for the pod ends of a flow.
#[inline(always)]
pub fn pod_flags(cidrs: &PodCidrs, f: &FlowHdr, src_flag: u8, dst_flag: u8) -> u8 {
    let mut out = 0;
    match f.family {
        4 => {
            if is_pod_v4(
                cidrs,
                u32::from_ne_bytes([f.src[0], f.src[1], f.src[2], f.src[3]]),
            ) {
                out |= src_flag;
            }
            if is_pod_v4(
                cidrs,
                u32::from_ne_bytes([f.dst[0], f.dst[1], f.dst[2], f.dst[3]]),
            ) {
                out |= dst_flag;
            }
        }
        6 => {
            let (s0, s1) = halves(&f.src);
            let (d0, d1) = halves(&f.dst);
            if is_pod_v6(cidrs, s0, s1) {
                out |= src_flag;
            }
            if is_pod_v6(cidrs, d0, d1) {
                out |= dst_flag;
            }
        }
        _ => {}
    }
    out
}
