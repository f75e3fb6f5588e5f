//! Drop capture: every freed-with-a-reason skb is counted here, in kernel,
//! per drop site. Two probes feed the same counting code: `tp_btf` (fast,
//! preferred) and the plain `skb:kfree_skb` tracepoint (fallback).

pub mod tp_btf;
pub mod tracepoint;

use aya_ebpf::{macros::map, maps::PerCpuHashMap};
use netdrop_common::{DropConfig, DropCounters, DropKey, KernelLayout, hook};

use crate::read::{KernelRead, Probe};

/// Exact per-CPU counters, keyed by drop site.
#[map]
static DROPS: PerCpuHashMap<DropKey, DropCounters> = PerCpuHashMap::with_max_entries(16384, 0);

/// Kernel struct offsets and symbol addresses, from BTF and kallsyms.
#[unsafe(no_mangle)]
static LAYOUT: KernelLayout = unsafe { core::mem::zeroed() };

#[unsafe(no_mangle)]
static DROP_CONFIG: DropConfig = unsafe { core::mem::zeroed() };

/// Reads one field of a read-only global. Volatile, so the compiler keeps the
/// load from `.rodata` (which the verifier then treats as a constant) rather
/// than folding in the zero the object file was built with.
#[inline(always)]
pub fn global<T: Copy>(field: &T) -> T {
    // SAFETY: a reference to a static is valid to read.
    unsafe { core::ptr::read_volatile(field) }
}

const SKB_DST_PTRMASK: u64 = !1;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Counts one dropped skb. `R` reads fields of the skb itself (plain loads in
/// `tp_btf`, probe reads in the tracepoint); everything behind untyped
/// addresses is read with `bpf_probe_read_kernel`.
#[inline(always)]
pub fn count_drop<R: KernelRead>(skb: *const u8, location: u64, reason: u32) -> Result<(), i64> {
    if skb.is_null() {
        return Ok(());
    }
    let dev: u64 = unsafe { R::read(skb, global(&LAYOUT.skb_dev)) }.unwrap_or(0);
    let refdst: u64 = unsafe { R::read(skb, global(&LAYOUT.skb_refdst)) }.unwrap_or(0);
    let dst = refdst & SKB_DST_PTRMASK;
    let dst_dev: u64 = if dst != 0 {
        unsafe { Probe::read(dst as *const u8, global(&LAYOUT.dst_dev)) }.unwrap_or(0)
    } else {
        0
    };

    let hook = if reason == global(&DROP_CONFIG.reason_netfilter_drop) {
        classify_hook(dev, dst, dst_dev)
    } else {
        hook::UNKNOWN
    };

    // The packet's device: where it arrived, or, before it has one (OUTPUT),
    // the device its route leaves through. Both tell its namespace.
    let ndev = if dev != 0 { dev } else { dst_dev };
    let (ifindex, netns) = if ndev != 0 {
        device_ids(ndev as *const u8)
    } else {
        (0, 0)
    };

    let protocol =
        u16::from_be(unsafe { R::read::<u16>(skb, global(&LAYOUT.skb_protocol)) }.unwrap_or(0));
    let (family, l4proto) = l3_info::<R>(skb, protocol);
    let len: u32 = unsafe { R::read(skb, global(&LAYOUT.skb_len)) }.unwrap_or(0);

    let key = DropKey {
        location,
        netns,
        reason,
        ifindex,
        hook,
        l4proto,
        family,
        _pad: 0,
    };
    match DROPS.get_ptr_mut(key) {
        Some(c) => unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(len);
        },
        None => {
            let c = DropCounters {
                packets: 1,
                bytes: u64::from(len),
            };
            DROPS.insert(key, c, 0)?;
        }
    }
    Ok(())
}

/// Which netfilter hook freed the skb, from routing state alone (no stack
/// walk): no route yet → PREROUTING; on its output device → POSTROUTING;
/// routed in to local delivery → INPUT, to forwarding → FORWARD; no device
/// yet → OUTPUT (locally generated, before `ip_output` sets `skb->dev`).
#[inline(always)]
fn classify_hook(dev: u64, dst: u64, dst_dev: u64) -> u8 {
    if dst == 0 {
        return hook::PREROUTING;
    }
    if dev == 0 {
        return hook::OUTPUT;
    }
    if dev == dst_dev {
        return hook::POSTROUTING;
    }
    let input: u64 =
        unsafe { Probe::read(dst as *const u8, global(&LAYOUT.dst_input)) }.unwrap_or(0);
    if input == global(&LAYOUT.ip_local_deliver) || input == global(&LAYOUT.ip6_input) {
        hook::INPUT
    } else if input == global(&LAYOUT.ip_forward) || input == global(&LAYOUT.ip6_forward) {
        hook::FORWARD
    } else {
        hook::UNKNOWN
    }
}

#[inline(always)]
fn device_ids(dev: *const u8) -> (u32, u32) {
    let ifindex: u32 = unsafe { Probe::read(dev, global(&LAYOUT.dev_ifindex)) }.unwrap_or(0);
    let net: u64 = unsafe { Probe::read(dev, global(&LAYOUT.dev_nd_net)) }.unwrap_or(0);
    let netns = if net != 0 {
        unsafe { Probe::read(net as *const u8, global(&LAYOUT.net_ns_inum)) }.unwrap_or(0)
    } else {
        0
    };
    (ifindex, netns)
}

#[inline(always)]
fn l3_info<R: KernelRead>(skb: *const u8, protocol: u16) -> (u8, u8) {
    let (family, proto_off) = match protocol {
        ETH_P_IP => (AF_INET, 9u64),
        ETH_P_IPV6 => (AF_INET6, 6u64),
        _ => return (0, 0),
    };
    let head: u64 = unsafe { R::read(skb, global(&LAYOUT.skb_head)) }.unwrap_or(0);
    let nh: u16 = unsafe { R::read(skb, global(&LAYOUT.skb_network_header)) }.unwrap_or(0);
    if head == 0 {
        return (family, 0);
    }
    let at = (head + u64::from(nh) + proto_off) as *const u8;
    let l4: u8 = unsafe { Probe::read(at, 0) }.unwrap_or(0);
    (family, l4)
}
