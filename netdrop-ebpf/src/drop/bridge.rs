//! Bridged packets seen by iptables through br_netfilter
//! (`bridge-nf-call-iptables=1`, what kube-proxy asks of every node): two pods
//! on one `cni0` talk through the bridge, yet the IPv4 FORWARD and
//! POSTROUTING hooks run on them. The routing state cannot tell those two
//! apart (the same fake or real route, `skb->dev` the outgoing port in
//! both), nor can any other field of the skb (compared on this kernel); the
//! kernel stack can (`stack.rs`). So the counted path keys these drops as
//! `hook::BRIDGED`.

use netdrop_ebpf::{global, read::KernelRead};

use super::LAYOUT;

/// For a packet being bridged (br_netfilter's `physoutdev` set, and it is
/// the device the packet leaves by), the ifindex of the port it came in on.
/// Routed packets that entered through a bridge carry br_netfilter state
/// too, but no out port: `None`, like unbridged ones.
#[inline(always)]
pub fn bridged_in<R: KernelRead, U: KernelRead>(skb: *const u8, dev: u64) -> Option<u32> {
    let bit = global(&LAYOUT.skb_ext_bridge_nf);
    if bit >= 8 {
        return None;
    }
    // SAFETY: offsets in the skb, its skb_ext and nf_bridge_info, from BTF; a fault reads as None.
    let active: u8 = unsafe { R::read(skb, global(&LAYOUT.skb_active_extensions)) }?;
    if active & (1u8 << bit) == 0 {
        return None;
    }
    // SAFETY: offsets in the skb, its skb_ext and nf_bridge_info, from BTF; a fault reads as None.
    let ext: u64 = unsafe { R::read(skb, global(&LAYOUT.skb_extensions)) }?;
    if ext == 0 {
        return None;
    }
    // `skb_ext_get_ptr`: the extension sits `offset[id]` 8-byte chunks in.
    // `ext` came from the skb: typed, like the skb itself in `tp_btf`.
    // SAFETY: offsets in the skb, its skb_ext and nf_bridge_info, from BTF; a fault reads as None.
    let chunk: u8 = unsafe { R::read(ext as *const u8, global(&LAYOUT.skb_ext_offset) + bit) }?;
    let info = (ext + (u64::from(chunk) << 3)) as *const u8;
    let (physin_off, physout_off) = (
        global(&LAYOUT.nf_bridge_physinif),
        global(&LAYOUT.nf_bridge_physoutdev),
    );
    // With probe reads, one read when the int and the pointer sit side by
    // side (they do: 4 and 8).
    let (physin, physout) = if U::CALLS && physout_off == physin_off + 4 {
        // SAFETY: offsets in the skb, its skb_ext and nf_bridge_info, from BTF; a fault reads as None.
        let w: [u32; 3] = unsafe { U::read(info, physin_off) }?;
        (w[0], u64::from(w[1]) | (u64::from(w[2]) << 32))
    } else {
        // SAFETY: offsets in the skb, its skb_ext and nf_bridge_info, from BTF; a fault reads as None.
        let physout: u64 = unsafe { U::read(info, physout_off) }?;
        // SAFETY: offsets in the skb, its skb_ext and nf_bridge_info, from BTF; a fault reads as None.
        (unsafe { U::read(info, physin_off) }?, physout)
    };
    (physout != 0 && physout == dev).then_some(physin)
}
