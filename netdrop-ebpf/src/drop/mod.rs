//! Drop capture: every freed-with-a-reason skb is counted here, in kernel,
//! per drop site, and a rate-limited few are sampled with their full flow.
//! Two probes feed the same code: `tp_btf` (fast, preferred) and the plain
//! `skb:kfree_skb` tracepoint (fallback).

pub mod bridge;
pub mod stack;
pub mod tp_btf;
pub mod tracepoint;

use core::ffi::c_void;

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
};
use netdrop_common::{
    DropConfig, DropCounters, DropKey, DropSample, KernelLayout, SiteCache, TokenBucket, drop_stat,
    flags, hook,
};

use netdrop_ebpf::{
    bucket, global,
    headers::{self, Parsed},
    pods::pod_flags,
    read::KernelRead,
};

/// Exact per-CPU counters, keyed by drop site.
#[map]
static DROPS: PerCpuHashMap<DropKey, DropCounters> = PerCpuHashMap::with_max_entries(16384, 0);

/// Per-CPU cache of drop sites in front of `DROPS` (see `SiteCache`).
#[map]
static DROP_SITE_CACHE: PerCpuArray<SiteCache> = PerCpuArray::with_max_entries(1, 0);

/// Detailed samples for userspace (flows, inner VXLAN flows).
#[map]
static DROP_SAMPLES: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// The program's own health counters (`drop_stat`).
#[map]
static DROP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_stat::COUNT, 0);

#[map]
static DROP_BUCKET: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch for the headers being decoded and the sample being
/// built: too big for the 512-byte stack, and per-CPU needs no locking.
#[map]
static DROP_SCRATCH: PerCpuArray<DropSample> = PerCpuArray::with_max_entries(1, 0);

/// Kernel struct offsets and symbol addresses, from BTF and kallsyms.
#[unsafe(no_mangle)]
// SAFETY: all-zero is valid for this plain-integer struct (the loader writes it).
static LAYOUT: KernelLayout = unsafe { core::mem::zeroed() };

#[unsafe(no_mangle)]
// SAFETY: all-zero is valid for this plain-integer struct (the loader writes it).
static DROP_CONFIG: DropConfig = unsafe { core::mem::zeroed() };

const SKB_DST_PTRMASK: u64 = !1;
/// `skb->network_header` when unset (`(u16)~0U`).
const HEADER_UNSET: u16 = 0xffff;

#[inline(always)]
fn bump(stat: u32) {
    if let Some(v) = DROP_STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += 1 };
    }
}

/// Counts one dropped skb. `R` reads fields of the skb itself (plain loads in
/// `tp_btf`, probe reads in the tracepoint); `U` reads what lies behind
/// untyped addresses (route, packet headers): cast loads where the kernel
/// allows them, else probe reads.
#[inline(always)]
pub fn count_drop<R: KernelRead, U: KernelRead>(
    ctx: *mut c_void,
    skb: *const u8,
    location: u64,
    reason: u32,
) -> Result<(), i64> {
    if skb.is_null() {
        return Ok(());
    }
    let scratch = DROP_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU value, no concurrent writer on this CPU.
    let sample = unsafe { &mut *scratch };
    sample.outer.clear();
    // `inner` and `vni` are cleared only when a VXLAN packet needs them, and
    // when a sample without them is sent.

    // Headers: the L3 header and the L4 ports right after it.
    // SAFETY: `skb` is the kernel's sk_buff; the offset, one of its fields, from BTF.
    let head: u64 = unsafe { R::read(skb, global(&LAYOUT.skb_head)) }.unwrap_or(0);
    let nh: u16 =
        // SAFETY: `skb` is the kernel's sk_buff; the offset, one of its fields, from BTF.
        unsafe { R::read(skb, global(&LAYOUT.skb_network_header)) }.unwrap_or(HEADER_UNSET);
    let mut fl = 0u8;
    if head != 0 && nh != HEADER_UNSET {
        let l3 = head + u64::from(nh);
        if let Parsed::Ok { l4_at } = headers::parse_ip::<U>(l3, &mut sample.outer) {
            fl |= pod_flags(
                &DROP_CONFIG.pod_cidrs,
                &sample.outer,
                flags::SRC_POD,
                flags::DST_POD,
            );
            if sample.outer.proto == headers::IPPROTO_UDP
                && sample.outer.dport == global(&DROP_CONFIG.vxlan_port)
            {
                fl |= flags::VXLAN;
                sample.inner.clear();
                sample.vni = headers::parse_vxlan::<U>(l4_at + 8, &mut sample.inner);
                fl |= pod_flags(
                    &DROP_CONFIG.pod_cidrs,
                    &sample.inner,
                    flags::INNER_SRC_POD,
                    flags::INNER_DST_POD,
                );
            }
        }
    }
    if fl == 0 && global(&DROP_CONFIG.keep_all) == 0 {
        bump(drop_stat::FILTERED);
        return Ok(());
    }

    // Only drops that are kept get their route read and their hook told.
    // SAFETY: `skb` is the kernel's sk_buff; the offset, one of its fields, from BTF.
    let dev: u64 = unsafe { R::read(skb, global(&LAYOUT.skb_dev)) }.unwrap_or(0);
    // SAFETY: `skb` is the kernel's sk_buff; the offset, one of its fields, from BTF.
    let refdst: u64 = unsafe { R::read(skb, global(&LAYOUT.skb_refdst)) }.unwrap_or(0);
    let dst = refdst & SKB_DST_PTRMASK;
    let netfilter = reason == global(&DROP_CONFIG.reason_netfilter_drop);
    // The route tells the hook of a netfilter drop, and the namespace of a
    // packet with no device yet; other drops do without reading the route.
    let (dst_dev, dst_input) = if dst != 0 && (netfilter || dev == 0) {
        read_dst::<U>(dst)
    } else {
        (0, 0)
    };
    let (hook, ports) = if netfilter {
        netfilter_hook::<R, U>(skb, dev, dst, dst_dev, dst_input)
    } else {
        (hook::UNKNOWN, None)
    };
    if ports.is_some() {
        fl |= flags::BRIDGED;
    }

    // The device the packet came in on (hooks before routing decides its
    // way out), and the one it was routed out of (after). With no device yet
    // (OUTPUT), the route's device tells the namespace.
    // `dev` came from the skb: in `tp_btf` it is a typed pointer, read with
    // plain loads; `dst_dev` came from the route and stays untyped.
    let netns = if dev != 0 {
        netns_of::<R>(dev as *const u8)
    } else if dst_dev != 0 {
        netns_of::<U>(dst_dev as *const u8)
    } else {
        0
    };
    let (in_ifindex, out_ifindex) = match hook {
        // iptables sees the bridge itself as `-i` and `-o`.
        hook::BRIDGED => {
            let bridge = ifindex_of::<U>(dst_dev);
            (bridge, bridge)
        }
        hook::PREROUTING | hook::INPUT | hook::LOOPBACK => (ifindex_of::<R>(dev), 0),
        hook::HAIRPIN => {
            let i = ifindex_of::<R>(dev);
            (i, i)
        }
        hook::FORWARD => (ifindex_of::<R>(dev), ifindex_of::<U>(dst_dev)),
        hook::OUTPUT | hook::POSTROUTING => (0, ifindex_of::<U>(dst_dev)),
        _ => (ifindex_of::<R>(dev), 0),
    };
    // SAFETY: `skb` is the kernel's sk_buff; the offset, one of its fields, from BTF.
    let len: u32 = unsafe { R::read(skb, global(&LAYOUT.skb_len)) }.unwrap_or(0);
    let key = DropKey {
        location,
        netns,
        reason,
        in_ifindex,
        out_ifindex,
        hook,
        l4proto: sample.outer.proto,
        family: sample.outer.family,
        flags: fl,
        _pad: 0,
    };
    let new_site = match count_cached(&key, len) {
        Some(new_site) => new_site,
        None => count_in_map(key, len),
    };
    // The first drop of a site is always sampled: its flow explains it.
    if new_site || take_token() {
        if fl & flags::VXLAN == 0 {
            sample.inner.clear();
            sample.vni = 0;
        }
        sample.key = key;
        // SAFETY: a helper with no arguments and no preconditions.
        sample.ts_ns = unsafe { bpf_ktime_get_ns() };
        sample.len = len;
        // SAFETY: `skb` is the kernel's sk_buff; the offset, one of its fields, from BTF.
        sample.mark = unsafe { R::read(skb, global(&LAYOUT.skb_mark)) }.unwrap_or(0);
        (sample.phys_in, sample.phys_out) = ports.unwrap_or((0, 0));
        sample.hook = if hook::from_stack(hook) {
            stack::hook_from_stack(ctx)
        } else {
            hook
        };
        if DROP_SAMPLES.output::<DropSample>(sample, 0).is_err() {
            bump(drop_stat::LOST);
        }
    } else {
        bump(drop_stat::SUPPRESSED);
    }
    Ok(())
}

/// A drop the program could not handle: counted, so a loss is never silent.
/// Returns the program's return value.
#[inline(always)]
pub fn count_error<T: Default>() -> T {
    bump(drop_stat::ERRORS);
    T::default()
}

/// Counts the drop in its site cache slot: `Some(new site?)`, or `None`
/// when the slot belongs to another site.
#[inline(always)]
fn count_cached(key: &DropKey, len: u32) -> Option<bool> {
    let cache = DROP_SITE_CACHE.get_ptr_mut(0)?;
    // SAFETY: per-CPU value, no concurrent writer on this CPU; `slot()` is
    // below SITE_SLOTS.
    let slot = unsafe { &mut (*cache).slots[key.slot()] };
    if slot.counters.packets == 0 {
        // Key first, counts after: userspace skips slots with no packets.
        slot.key = *key;
        slot.counters.bytes = u64::from(len);
        slot.counters.packets = 1;
        return Some(true);
    }
    let [a, b, c, d] = slot.key.words();
    let [w, x, y, z] = key.words();
    if (a ^ w) | (b ^ x) | (c ^ y) | (d ^ z) != 0 {
        return None;
    }
    slot.counters.packets += 1;
    slot.counters.bytes += u64::from(len);
    Some(false)
}

/// Counts the drop in the hash map (sites whose cache slot is taken).
#[inline(always)]
fn count_in_map(key: DropKey, len: u32) -> bool {
    match DROPS.get_ptr_mut(key) {
        Some(c) => {
            // SAFETY: per-CPU value, no concurrent writer on this CPU.
            unsafe {
                (*c).packets += 1;
                (*c).bytes += u64::from(len);
            }
            false
        }
        None => {
            let c = DropCounters {
                packets: 1,
                bytes: u64::from(len),
            };
            if DROPS.insert(key, c, 0).is_err() {
                bump(drop_stat::MAP_FULL);
            }
            true
        }
    }
}

/// One token from this CPU's sample bucket.
#[inline(always)]
fn take_token() -> bool {
    let Some(b) = DROP_BUCKET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value, no concurrent writer on this CPU.
    bucket::take_token(
        unsafe { &mut *b },
        global(&DROP_CONFIG.sample_rate),
        global(&DROP_CONFIG.sample_burst),
    )
}

/// The hook of a netfilter drop, and the bridge ports (in, out) of a
/// bridged packet. Routing state first (`classify_hook`), then what the
/// skb adds where that state is ambiguous: received on the very device it
/// is delivered on or routed out of (`lo`, a hairpin), an IPv6 tunnel's
/// packet in OUTPUT, a packet being bridged. Ambiguous keys are resolved per
/// sample, from the stack.
#[inline(always)]
fn netfilter_hook<R: KernelRead, U: KernelRead>(
    skb: *const u8,
    dev: u64,
    dst: u64,
    dst_dev: u64,
    dst_input: u64,
) -> (u8, Option<(u32, u32)>) {
    let hook = classify_hook(dev, dst, dst_dev, dst_input);
    if hook == hook::POSTROUTING && received_on::<R>(skb, dev) {
        let h = if is_local_delivery(dst_input) {
            hook::LOOPBACK
        } else {
            hook::HAIRPIN
        };
        return (h, None);
    }
    // Leaving by a device other than its route's: maybe a bridge port.
    if dev != 0
        && dst_dev != 0
        && dev != dst_dev
        && hook != hook::INPUT
        && let Some(phys_in) = bridge::bridged_in::<R, U>(skb, dev)
    {
        return (hook::BRIDGED, Some((phys_in, ifindex_of::<R>(dev))));
    }
    // IPv6 output routes also say `ip6_forward`: a packet that was not
    // received on its device is a tunnel's (flannel-v6.1) in OUTPUT.
    if hook == hook::FORWARD
        && dst_input == global(&LAYOUT.ip6_forward)
        && !received_on::<R>(skb, dev)
    {
        return (hook::OUTPUT, None);
    }
    (hook, None)
}

/// Which netfilter hook freed the skb, from routing state alone (no stack
/// walk): no route yet → PREROUTING; on its output device → POSTROUTING;
/// routed in to local delivery → INPUT, to forwarding → FORWARD; no device
/// yet → OUTPUT (locally generated, before `ip_output` sets `skb->dev`);
/// an output route while `skb->dev` is still a tunnel's (flannel.1 has just
/// wrapped it in VXLAN) → OUTPUT too (IPv6: see `netfilter_hook`).
#[inline(always)]
fn classify_hook(dev: u64, dst: u64, dst_dev: u64, input: u64) -> u8 {
    if dst == 0 {
        return hook::PREROUTING;
    }
    if dev == 0 {
        return hook::OUTPUT;
    }
    if dev == dst_dev {
        return hook::POSTROUTING;
    }
    if is_local_delivery(input) {
        hook::INPUT
    } else if input == global(&LAYOUT.ip_forward) || input == global(&LAYOUT.ip6_forward) {
        hook::FORWARD
    } else if input == global(&LAYOUT.dst_discard) {
        hook::OUTPUT
    } else {
        hook::UNKNOWN
    }
}

#[inline(always)]
fn is_local_delivery(input: u64) -> bool {
    input == global(&LAYOUT.ip_local_deliver) || input == global(&LAYOUT.ip6_input)
}

/// Whether the skb was received on `dev` (locally made packets have no
/// `skb_iif`; forwarded ones leave by another device).
#[inline(always)]
fn received_on<R: KernelRead>(skb: *const u8, dev: u64) -> bool {
    // SAFETY: `skb` is the kernel's sk_buff; the offset, one of its fields, from BTF.
    let iif: u32 = unsafe { R::read(skb, global(&LAYOUT.skb_iif)) }.unwrap_or(0);
    iif != 0 && iif == ifindex_of::<R>(dev)
}

/// `dst->dev` and `dst->input`. With probe reads, one read when they lie
/// within 48 bytes of each other (every layout seen so far: 0 and 40).
#[inline(always)]
fn read_dst<U: KernelRead>(dst: u64) -> (u64, u64) {
    const WINDOW: u32 = 6;
    let dev_off = global(&LAYOUT.dst_dev);
    let input_off = global(&LAYOUT.dst_input);
    let gap = input_off.wrapping_sub(dev_off);
    if U::CALLS && gap.is_multiple_of(8) && gap / 8 < WINDOW {
        // No zeroed fallback array: it would cost a `memset` per drop.
        // SAFETY: `dst` is the skb's dst_entry (refdst less its flag); offsets from BTF.
        let Some(w) = (unsafe { U::read::<[u64; WINDOW as usize]>(dst as *const u8, dev_off) })
        else {
            return (0, 0);
        };
        let i = (gap / 8) as usize;
        return (w[0], if i < w.len() { w[i] } else { 0 });
    }
    // SAFETY: `dst` is the skb's dst_entry (refdst less its flag); offsets from BTF.
    let dev = unsafe { U::read(dst as *const u8, dev_off) }.unwrap_or(0);
    // SAFETY: `dst` is the skb's dst_entry (refdst less its flag); offsets from BTF.
    let input = unsafe { U::read(dst as *const u8, input_off) }.unwrap_or(0);
    (dev, input)
}

#[inline(always)]
fn ifindex_of<R: KernelRead>(dev: u64) -> u32 {
    if dev == 0 {
        return 0;
    }
    // SAFETY: `dev` is the skb's net_device; the offset one of its fields, from BTF.
    unsafe { R::read(dev as *const u8, global(&LAYOUT.dev_ifindex)) }.unwrap_or(0)
}

/// `dev->nd_net.net->ns.inum`. With `Direct`, `dev` must be a typed pointer
/// (loaded from the skb): the verifier follows the types through both loads.
#[inline(always)]
fn netns_of<R: KernelRead>(dev: *const u8) -> u32 {
    // SAFETY: `dev` is the skb's net_device; the offset one of its fields, from BTF.
    let net: u64 = unsafe { R::read(dev, global(&LAYOUT.dev_nd_net)) }.unwrap_or(0);
    if net == 0 {
        return 0;
    }
    // SAFETY: `net` is the device's struct net; the offset one of its fields, from BTF.
    unsafe { R::read(net as *const u8, global(&LAYOUT.net_ns_inum)) }.unwrap_or(0)
}
