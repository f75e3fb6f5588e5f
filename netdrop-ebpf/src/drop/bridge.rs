//! Bridged packets seen by iptables through br_netfilter
//! (`bridge-nf-call-iptables=1`, what kube-proxy asks of every node): two pods
//! on one `cni0` talk through the bridge, yet the IPv4 FORWARD and
//! POSTROUTING hooks run on them. The routing state cannot tell those two
//! apart (the same fake or real route, `skb->dev` the outgoing port in
//! both), nor can any other field of the skb (compared on this kernel); the
//! kernel stack can, at about 2.7 µs a walk here. So the counted path keys
//! these drops as `hook::BRIDGED` and only rate-limited samples walk it.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_get_stack;
use netdrop_common::{BRIDGE_HOOK_RANGES, hook};

use netdrop_ebpf::{
    global,
    read::{KernelRead, Probe},
};

use super::LAYOUT;

/// Return addresses walked: the tracing trampoline, the drop itself,
/// the table (`nft_do_chain`/`ipt_do_table`), `nf_hook_slow`, then the
/// br_netfilter caller; room to spare for inlining differences.
const STACK_FRAMES: usize = 12;

/// For a packet being bridged (br_netfilter's `physoutdev` set, and it is
/// the device the packet leaves by), the ifindex of the port it came in on.
/// Routed packets that entered through a bridge carry br_netfilter state
/// too, but no out port: `None`, like unbridged ones.
#[inline(always)]
pub fn bridged_in<R: KernelRead>(skb: *const u8, dev: u64) -> Option<u32> {
    let bit = global(&LAYOUT.skb_ext_bridge_nf);
    if bit >= 8 {
        return None;
    }
    let active: u8 = unsafe { R::read(skb, global(&LAYOUT.skb_active_extensions)) }?;
    if active & (1u8 << bit) == 0 {
        return None;
    }
    let ext: u64 = unsafe { R::read(skb, global(&LAYOUT.skb_extensions)) }?;
    if ext == 0 {
        return None;
    }
    // `skb_ext_get_ptr`: the extension sits `offset[id]` 8-byte chunks in.
    // `ext` came from the skb: typed, like the skb itself in `tp_btf`.
    let chunk: u8 = unsafe { R::read(ext as *const u8, global(&LAYOUT.skb_ext_offset) + bit) }?;
    let info = (ext + (u64::from(chunk) << 3)) as *const u8;
    let (physin_off, physout_off) = (
        global(&LAYOUT.nf_bridge_physinif),
        global(&LAYOUT.nf_bridge_physoutdev),
    );
    // One probe read when the int and the pointer sit side by side (they
    // do: 4 and 8), else two.
    let (physin, physout) = if physout_off == physin_off + 4 {
        let w: [u32; 3] = unsafe { Probe::read(info, physin_off) }?;
        (w[0], u64::from(w[1]) | (u64::from(w[2]) << 32))
    } else {
        let physout: u64 = unsafe { Probe::read(info, physout_off) }?;
        (unsafe { Probe::read(info, physin_off) }?, physout)
    };
    (physout != 0 && physout == dev).then_some(physin)
}

/// FORWARD or POSTROUTING, from the br_netfilter function on the stack;
/// UNKNOWN when none is (br_netfilter's symbols were not found).
#[inline(always)]
pub fn hook_from_stack(ctx: *mut c_void) -> u8 {
    let mut frames = [0u64; STACK_FRAMES];
    let got = unsafe {
        bpf_get_stack(
            ctx,
            frames.as_mut_ptr().cast(),
            core::mem::size_of_val(&frames) as u32,
            0,
        )
    };
    if got <= 0 {
        return hook::UNKNOWN;
    }
    let n = (got as usize) / 8;
    for (i, ip) in frames.iter().enumerate() {
        if i >= n {
            break;
        }
        for r in 0..BRIDGE_HOOK_RANGES {
            let range = &LAYOUT.bridge_hooks[r];
            if *ip >= global(&range.lo) && *ip < global(&range.hi) {
                return global(&range.hook);
            }
        }
    }
    hook::UNKNOWN
}
