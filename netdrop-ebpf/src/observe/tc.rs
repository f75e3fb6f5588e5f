//! TC (tcx) programs, ingress and egress, shared by every observed device.
//! Direct packet access with bounds checks; the common path is a few loads,
//! mask compares and one per-CPU array add.

use core::mem::MaybeUninit;

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use netdrop_common::{
    DropCounters, EgressSample, FlowHdr, OBS_SLOTS, ObsCounters, PeerKey, direction, obs_stat, role,
};
use netdrop_ebpf::{
    global,
    pods::{is_pod_v4, is_pod_v6},
};

use super::{
    EGRESS_SAMPLES, OBS_CONFIG, OBS_COUNTERS, OBS_STATS, VXLAN_PEER_CACHE, VXLAN_PEERS, take_token,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV6_HLEN: usize = 40;
const IPPROTO_UDP: u8 = 17;

#[classifier]
pub fn netdrop_tc_ingress(ctx: TcContext) -> i32 {
    let _ = try_observe(&ctx, direction::INGRESS);
    // TC_ACT_UNSPEC (tcx: TCX_NEXT): whatever comes next decides, as if we
    // were not here.
    TC_ACT_UNSPEC
}

#[classifier]
pub fn netdrop_tc_egress(ctx: TcContext) -> i32 {
    let _ = try_observe(&ctx, direction::EGRESS);
    TC_ACT_UNSPEC
}

/// The device's slot (`OBS_SLOTS`): overlay, bridge, then underlays.
#[inline(always)]
fn slot_of(ifindex: u32) -> Option<u32> {
    let ifs = global(&OBS_CONFIG.ifindex);
    // Unrolled: a handful of compares, the common devices first.
    let mut slot = 0;
    while slot < OBS_SLOTS {
        if ifindex == ifs[slot as usize] {
            return Some(slot);
        }
        slot += 1;
    }
    None
}

/// A slot's role: every slot from the first underlay's on is an underlay.
#[inline(always)]
fn role_of(slot: u32) -> u32 {
    if slot >= role::UNDERLAY {
        role::UNDERLAY
    } else {
        slot
    }
}

#[inline(always)]
fn try_observe(ctx: &TcContext, dir: u32) -> Result<(), ()> {
    // SAFETY: the skb context pointer is valid for this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let slot = slot_of(ifindex).ok_or(())?;
    let data = ctx.data();
    let end = ctx.data_end();
    // Ethernet + the first 24 bytes of an option-less IPv4 header + ports.
    if data + ETH_HLEN + 24 > end {
        return Err(());
    }
    // SAFETY: bounds checked above.
    let p = data as *const u8;
    let at = |i: usize| unsafe { *p.add(i) };
    let ethertype = u16::from_be_bytes([at(12), at(13)]);
    if ethertype == ETH_P_IPV6 {
        return observe_v6(ctx, slot, dir);
    }
    if ethertype != ETH_P_IP {
        return Err(());
    }
    let l3 = ETH_HLEN;
    let ihl = usize::from(at(l3) & 0x0f) * 4;
    let proto = at(l3 + 9);
    let src = u32::from_ne_bytes([at(l3 + 12), at(l3 + 13), at(l3 + 14), at(l3 + 15)]);
    let dst = u32::from_ne_bytes([at(l3 + 16), at(l3 + 17), at(l3 + 18), at(l3 + 19)]);
    let len = u64::from(ctx.len());
    let cidrs = &OBS_CONFIG.pod_cidrs;
    let src_pod = is_pod_v4(cidrs, src);
    let dst_pod = is_pod_v4(cidrs, dst);

    let c = count_pod(slot, dir, src_pod || dst_pod, len)?;
    if role_of(slot) != role::UNDERLAY {
        return Ok(());
    }
    if proto == IPPROTO_UDP && ihl == 20 {
        let dport = u16::from_be_bytes([at(l3 + 22), at(l3 + 23)]);
        if dport == global(&OBS_CONFIG.vxlan_port) {
            c.vxlan_packets += 1;
            c.vxlan_bytes += len;
            let peer = if dir == direction::INGRESS { src } else { dst };
            let mut key = MaybeUninit::uninit();
            count_peer(PeerKey::fill(&mut key, [peer, 0, 0, 0], dir, 4), len);
            return Ok(());
        }
    }
    // Pod source leaving the node's NIC towards neither a pod nor a node:
    // masquerade should have replaced the pod address (scenario S4).
    if dir == direction::EGRESS
        && src_pod
        && !dst_pod
        && dst & global(&OBS_CONFIG.node_mask) != global(&OBS_CONFIG.node_net)
    {
        c.unnat_packets += 1;
        c.unnat_bytes += len;
        if take_token() {
            let mut flow = FlowHdr {
                family: 4,
                proto,
                ..FlowHdr::default()
            };
            flow.src[..4].copy_from_slice(&src.to_ne_bytes());
            flow.dst[..4].copy_from_slice(&dst.to_ne_bytes());
            if ihl == 20 && matches!(proto, 6 | 17) {
                flow.sport = u16::from_be_bytes([at(l3 + 20), at(l3 + 21)]);
                flow.dport = u16::from_be_bytes([at(l3 + 22), at(l3 + 23)]);
            }
            send_egress(flow, ifindex, len);
        } else {
            bump(obs_stat::SAMPLES_SUPPRESSED);
        }
    }
    Ok(())
}

/// This device slot and direction's counters, with the packet counted as
/// pod traffic when `pod`.
#[inline(always)]
fn count_pod(slot: u32, dir: u32, pod: bool, len: u64) -> Result<&'static mut ObsCounters, ()> {
    let c = OBS_COUNTERS.get_ptr_mut(slot * 2 + dir).ok_or(())?;
    // SAFETY: per-CPU value, no concurrent writer on this CPU.
    let c = unsafe { &mut *c };
    if pod {
        c.pod_packets += 1;
        c.pod_bytes += len;
    }
    Ok(c)
}

/// One un-NATed egress sample to userspace.
#[inline(always)]
fn send_egress(flow: FlowHdr, ifindex: u32, len: u64) {
    let sample = EgressSample {
        flow,
        ifindex,
        len: len as u32,
    };
    if EGRESS_SAMPLES.output::<EgressSample>(&sample, 0).is_err() {
        bump(obs_stat::SAMPLES_LOST);
    }
}

/// Counts a VXLAN packet for its peer node: the per-CPU slot cache, else
/// the hash map.
#[inline(always)]
fn count_peer(key: &PeerKey, len: u64) {
    if count_peer_cached(key, len) {
        return;
    }
    match VXLAN_PEERS.get_ptr_mut(key) {
        // SAFETY: per-CPU value.
        Some(v) => unsafe {
            (*v).packets += 1;
            (*v).bytes += len;
        },
        None => {
            let c = DropCounters {
                packets: 1,
                bytes: len,
            };
            if VXLAN_PEERS.insert(key, c, 0).is_err() {
                bump(obs_stat::PEERS_MAP_FULL);
            }
        }
    }
}

/// IPv6, like IPv4: pod packets per device and direction; on the underlay,
/// VXLAN per peer node (flannel's `flannel-v6.1` over an IPv6 underlay) and
/// un-NATed pod egress (dual-stack flannel masquerades IPv6 pods too).
/// Extension headers are not walked: such packets count as pod traffic only.
#[inline(always)]
fn observe_v6(ctx: &TcContext, slot: u32, dir: u32) -> Result<(), ()> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + ETH_HLEN + IPV6_HLEN > end {
        return Err(());
    }
    let p = data as *const u8;
    // The addresses (8..24 and 24..40 of the IPv6 header) as 8-byte halves,
    // in four loads: a byte-wise copy is ~100 instructions.
    let half = |off: usize| -> u64 {
        // SAFETY: bounds checked above; unaligned packet loads are allowed
        // where the kernel has efficient unaligned access (x86-64, arm64),
        // as the kernel's own IPv6 code does.
        unsafe { core::ptr::read(p.add(ETH_HLEN + off).cast::<u64>()) }
    };
    let cidrs = &OBS_CONFIG.pod_cidrs;
    let (s0, s1, d0, d1) = (half(8), half(16), half(24), half(32));
    let src_pod = is_pod_v6(cidrs, s0, s1);
    let dst_pod = is_pod_v6(cidrs, d0, d1);
    let len = u64::from(ctx.len());
    let c = count_pod(slot, dir, src_pod || dst_pod, len)?;
    if role_of(slot) != role::UNDERLAY {
        return Ok(());
    }
    // SAFETY: within the bounds checked above.
    let next = unsafe { *p.add(ETH_HLEN + 6) };
    // The L4 ports, when the frame holds them.
    let l4 = ETH_HLEN + IPV6_HLEN;
    let ports = (data + l4 + 4 <= end).then(|| {
        // SAFETY: bounds checked just above.
        let at = |i: usize| unsafe { *p.add(l4 + i) };
        (
            u16::from_be_bytes([at(0), at(1)]),
            u16::from_be_bytes([at(2), at(3)]),
        )
    });
    if next == IPPROTO_UDP
        && let Some((_, dport)) = ports
        && dport == global(&OBS_CONFIG.vxlan_port)
    {
        c.vxlan_packets += 1;
        c.vxlan_bytes += len;
        let peer = if dir == direction::INGRESS {
            (s0, s1)
        } else {
            (d0, d1)
        };
        let mut key = MaybeUninit::uninit();
        count_peer(PeerKey::fill(&mut key, words(peer), dir, 6), len);
        return Ok(());
    }
    let [n0, n1, m0, m1] = global(&OBS_CONFIG.node_net6);
    let to_node = d0 & m0 == n0 && d1 & m1 == n1;
    if dir == direction::EGRESS && src_pod && !dst_pod && !to_node {
        c.unnat_packets += 1;
        c.unnat_bytes += len;
        if take_token() {
            let mut flow = FlowHdr {
                family: 6,
                proto: next,
                src: bytes((s0, s1)),
                dst: bytes((d0, d1)),
                ..FlowHdr::default()
            };
            if matches!(next, 6 | 17)
                && let Some((sport, dport)) = ports
            {
                flow.sport = sport;
                flow.dport = dport;
            }
            // SAFETY: the skb context pointer is valid for this program run.
            send_egress(flow, unsafe { (*ctx.skb.skb).ifindex }, len);
        } else {
            bump(obs_stat::SAMPLES_SUPPRESSED);
        }
    }
    Ok(())
}

/// An IPv6 address's bytes from its loaded halves.
#[inline(always)]
fn bytes((h, l): (u64, u64)) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&h.to_ne_bytes());
    out[8..].copy_from_slice(&l.to_ne_bytes());
    out
}

/// An IPv6 address as four words, byte order as loaded.
#[inline(always)]
fn words(a: (u64, u64)) -> [u32; 4] {
    let b = bytes(a);
    let w = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Counts a VXLAN packet in its peer cache slot; false when the slot
/// belongs to another peer (then the hash map counts it).
#[inline(always)]
fn count_peer_cached(key: &PeerKey, len: u64) -> bool {
    let Some(cache) = VXLAN_PEER_CACHE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value, no concurrent writer on this CPU; `slot()` is
    // below PEER_SLOTS.
    let slot = unsafe { &mut (*cache).slots[key.slot()] };
    if slot.counters.packets == 0 {
        slot.key = *key;
        slot.counters.bytes = len;
        slot.counters.packets = 1;
        return true;
    }
    if !slot.key.same(key) {
        return false;
    }
    slot.counters.packets += 1;
    slot.counters.bytes += len;
    true
}

#[inline(always)]
fn bump(i: u32) {
    if let Some(v) = OBS_STATS.get_ptr_mut(i) {
        // SAFETY: per-CPU value.
        unsafe { *v += 1 };
    }
}
