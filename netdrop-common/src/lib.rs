//! Types shared by netdrop's kernel programs and its userspace.
//!
//! Everything here is `#[repr(C)]` with explicit padding so that the kernel and
//! userspace agree byte for byte, and so that map keys hash the same whatever
//! the compiler would have put in implicit padding.
#![no_std]

/// Netfilter hook a drop happened in, as netdrop classifies it in the kernel.
///
/// Numbered like the kernel's `enum nf_inet_hooks` plus one, so that 0 can
/// mean "not a netfilter drop / unknown".
pub mod hook {
    pub const UNKNOWN: u8 = 0;
    pub const PREROUTING: u8 = 1;
    pub const INPUT: u8 = 2;
    pub const FORWARD: u8 = 3;
    pub const OUTPUT: u8 = 4;
    pub const POSTROUTING: u8 = 5;
}

/// Where a drop was counted: the small key of the in-kernel aggregation.
///
/// Bounded by (reasons × hooks × drop locations × namespaces × devices ×
/// protocols), so the per-CPU hash stays small while every packet is counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// Kernel address of the code that freed the skb (`location` argument).
    pub location: u64,
    /// Inode number of the network namespace the packet was in.
    pub netns: u32,
    /// `enum skb_drop_reason` value; names come from the running kernel.
    pub reason: u32,
    /// Device the packet was on (received on, or routed out of); 0 if none.
    pub ifindex: u32,
    /// [`hook`] constant, only for `NETFILTER_DROP`.
    pub hook: u8,
    /// IP protocol number of the packet's L4 header, 0 when unknown.
    pub l4proto: u8,
    /// `AF_INET` / `AF_INET6` / 0.
    pub family: u8,
    pub _pad: u8,
}

/// Packet and byte counts of one [`DropKey`], per CPU in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// Struct member offsets and kernel addresses the drop program needs.
///
/// Rust eBPF has no CO-RE, so userspace reads these from the running kernel's
/// BTF and `/proc/kallsyms` and hands them over as a read-only global. The
/// verifier sees them as constants.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `sk_buff.dev`
    pub skb_dev: u32,
    /// `sk_buff._skb_refdst`
    pub skb_refdst: u32,
    /// `sk_buff.len`
    pub skb_len: u32,
    /// `sk_buff.protocol` (big-endian ethertype)
    pub skb_protocol: u32,
    /// `sk_buff.head`
    pub skb_head: u32,
    /// `sk_buff.network_header` (u16 offset from head)
    pub skb_network_header: u32,
    /// `sk_buff.transport_header` (u16 offset from head)
    pub skb_transport_header: u32,
    /// `net_device.ifindex`
    pub dev_ifindex: u32,
    /// `net_device.nd_net` (a `possible_net_t`, whose first member is the pointer)
    pub dev_nd_net: u32,
    /// `net.ns.inum`
    pub net_ns_inum: u32,
    /// `dst_entry.dev`
    pub dst_dev: u32,
    /// `dst_entry.input`
    pub dst_input: u32,
    /// Address of `ip_local_deliver` (dst->input of locally delivered IPv4).
    pub ip_local_deliver: u64,
    /// Address of `ip_forward` (dst->input of forwarded IPv4).
    pub ip_forward: u64,
    /// Address of `ip6_input` (dst->input of locally delivered IPv6).
    pub ip6_input: u64,
    /// Address of `ip6_forward` (dst->input of forwarded IPv6).
    pub ip6_forward: u64,
}

/// Field offsets of the `skb:kfree_skb` tracepoint record (tracefs format
/// file), for the plain-tracepoint fallback. They moved between kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointLayout {
    pub skbaddr: u32,
    pub location: u32,
    pub reason: u32,
    pub _pad: u32,
}

/// Run-time switches of the drop program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropConfig {
    /// Value of `SKB_DROP_REASON_NETFILTER_DROP` in the running kernel.
    pub reason_netfilter_drop: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain-old-data, `#[repr(C)]`, explicit padding, no pointers.
    unsafe impl aya::Pod for DropKey {}
    unsafe impl aya::Pod for DropCounters {}
    unsafe impl aya::Pod for KernelLayout {}
    unsafe impl aya::Pod for DropConfig {}
    unsafe impl aya::Pod for TracepointLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<DropKey>(), 8 + 4 * 3 + 4);
        assert_eq!(size_of::<DropCounters>(), 16);
        assert_eq!(size_of::<KernelLayout>(), 12 * 4 + 4 * 8);
        assert_eq!(size_of::<DropConfig>(), 8);
        assert_eq!(size_of::<TracepointLayout>(), 16);
    }
}
