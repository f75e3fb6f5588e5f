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
    /// A bridged packet (br_netfilter) in FORWARD or POSTROUTING: the
    /// routing state cannot tell which, so the counted path does not; each
    /// sample of the site says (see `DropSample::hook`), from the stack.
    pub const BRIDGED: u8 = 6;
    /// Received on `lo` (the node talking to itself): PREROUTING or INPUT,
    /// told apart like [`BRIDGED`].
    pub const LOOPBACK: u8 = 7;
    /// Routed back out of the device it came in on (hairpin): FORWARD or
    /// POSTROUTING, told apart like [`BRIDGED`].
    pub const HAIRPIN: u8 = 8;

    /// Whether samples of a key with this hook name the real one.
    pub const fn from_stack(h: u8) -> bool {
        h >= BRIDGED
    }
}

/// Flags of a [`DropKey`]: which side of the packet is a pod, and whether
/// it was a VXLAN packet (then the inner flags describe the pods inside).
pub mod flags {
    pub const SRC_POD: u8 = 1;
    pub const DST_POD: u8 = 2;
    pub const VXLAN: u8 = 4;
    pub const INNER_SRC_POD: u8 = 8;
    pub const INNER_DST_POD: u8 = 16;
    /// Bridged by a Linux bridge and seen by iptables through br_netfilter
    /// (`bridge-nf-call-iptables`): in and out device are the bridge, the
    /// sample carries the bridge ports. Set with [`hook::BRIDGED`]; it keeps
    /// bridged sites apart from routed ones once userspace has put the
    /// sampled hook in the key.
    pub const BRIDGED: u8 = 32;
}

/// Where a drop was counted: the small key of the in-kernel aggregation.
///
/// Bounded by (reasons × hooks × drop locations × namespaces × devices ×
/// protocols × pod flags): no addresses or ports, so the per-CPU hash stays
/// small while every packet is counted. Flows travel in [`DropSample`]s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// Kernel address of the code that freed the skb (`location` argument).
    pub location: u64,
    /// Inode number of the network namespace the packet was in.
    pub netns: u32,
    /// `enum skb_drop_reason` value; names come from the running kernel.
    pub reason: u32,
    /// Device the packet came in on (PREROUTING, INPUT, FORWARD); 0 if none.
    pub in_ifindex: u32,
    /// Device it was routed out of (FORWARD, OUTPUT, POSTROUTING); 0 if none.
    pub out_ifindex: u32,
    /// [`hook`] constant, only for `NETFILTER_DROP`.
    pub hook: u8,
    /// IP protocol number of the packet's L4 header, 0 when unknown.
    pub l4proto: u8,
    /// 4 / 6 / 0 (IP version).
    pub family: u8,
    /// [`flags`] bits.
    pub flags: u8,
    pub _pad: u32,
}

/// One decoded flow: addresses (IPv4 in the first 4 bytes) and ports.
/// 8-aligned (its size is a multiple of 8, so no padding is added): the
/// drop program clears it per drop, with five 8-byte stores rather than a
/// byte-by-byte `memset` call.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowHdr {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// 4 / 6 / 0 when nothing was decoded.
    pub family: u8,
    pub proto: u8,
    /// ICMP type and code (when `proto` is ICMP / ICMPv6).
    pub icmp_type: u8,
    pub icmp_code: u8,
}

impl FlowHdr {
    /// Zeroes the flow in five 8-byte stores. (`*f = FlowHdr::default()`
    /// compiles to a call of a byte-by-byte `memset` for the BPF target,
    /// ~200 instructions on every drop.)
    #[inline(always)]
    pub fn clear(&mut self) {
        let words = (self as *mut Self).cast::<u64>();
        for i in 0..core::mem::size_of::<Self>() / 8 {
            // SAFETY: `Self` is 8-aligned and a whole number of u64s long;
            // volatile keeps the stores from being merged back into a memset.
            unsafe { words.add(i).write_volatile(0) };
        }
    }
}

/// A detailed drop, sent through the ring buffer at a rate-limited pace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropSample {
    pub key: DropKey,
    pub ts_ns: u64,
    pub len: u32,
    pub mark: u32,
    pub outer: FlowHdr,
    /// The pod flow inside a VXLAN packet (`outer` is node-to-node UDP).
    pub inner: FlowHdr,
    /// VXLAN network identifier, when `inner` is set.
    pub vni: u32,
    /// Bridge ports the packet came in on and was going out of (ifindex),
    /// when the key is [`flags::BRIDGED`].
    pub phys_in: u32,
    pub phys_out: u32,
    /// The sampled packet's [`hook`]: the key's, or for a key whose hook
    /// is [`hook::from_stack`] the one found on the kernel stack.
    pub hook: u8,
    pub _pad: [u8; 3],
}

/// Counters of the drop program itself (indices of its `DROP_STATS` array).
pub mod drop_stat {
    /// Drops not counted: no pod address and not node-to-node VXLAN.
    pub const FILTERED: u32 = 0;
    /// Samples not sent because the token bucket was empty (by design:
    /// counts stay exact).
    pub const SUPPRESSED: u32 = 1;
    /// Samples lost because the ring buffer was full.
    pub const LOST: u32 = 2;
    /// Drops not counted because the site map was full.
    pub const MAP_FULL: u32 = 3;
    /// Drops the program could not handle (a failed read of its own
    /// scratch space or of the kernel's context).
    pub const ERRORS: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// Counters of the TC observers themselves (indices of `OBS_STATS`).
pub mod obs_stat {
    /// Un-NATed egress samples lost because the ring buffer was full.
    pub const SAMPLES_LOST: u32 = 0;
    /// Un-NATed egress samples not sent because the token bucket was empty.
    pub const SAMPLES_SUPPRESSED: u32 = 1;
    /// VXLAN packets not counted per peer because the peer map was full.
    pub const PEERS_MAP_FULL: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Token bucket state for rate-limited samples (one per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens × 1e9 (so refills need no division by time units).
    pub tokens: u64,
    pub last_ns: u64,
    /// Jiffy of the last refill: the precise clock is read at most once per
    /// tick, not per event.
    pub last_jiffies: u64,
}

/// Up to this many pod CIDRs per family are matched in kernel.
pub const MAX_POD_CIDRS: usize = 8;

/// Pod CIDRs as (network, mask) pairs, compared with masks in kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodCidrs {
    /// IPv4 network and mask, both in network byte order as loaded (u32 of the 4 bytes).
    pub v4: [[u32; 2]; MAX_POD_CIDRS],
    /// IPv6 network (2 × u64) and mask (2 × u64), byte order as loaded.
    pub v6: [[u64; 4]; MAX_POD_CIDRS],
    pub n_v4: u32,
    pub n_v6: u32,
}

/// Packet and byte counts of one [`DropKey`], per CPU in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// Slots of the per-CPU drop site cache.
pub const SITE_SLOTS: usize = 128;

/// One drop site and its counts in the site cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteSlot {
    pub key: DropKey,
    pub counters: DropCounters,
}

/// Direct-mapped per-CPU cache in front of the drop hash map: the common
/// case (a drop site seen before) costs a hash of the key and four compares
/// instead of a map lookup. A slot belongs to the first site that hashes to
/// it for good; other sites of that slot are counted in the hash map, so
/// every drop is counted in exactly one place.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteCache {
    pub slots: [SiteSlot; SITE_SLOTS],
}

impl DropKey {
    /// Slot of this key in the [`SiteCache`]: a multiplicative hash of a
    /// few cheap folds (no loops, no helper calls).
    #[inline(always)]
    pub fn slot(&self) -> usize {
        let a = self.location
            ^ (u64::from(self.netns) << 32)
            ^ u64::from(self.reason)
            ^ (u64::from(self.in_ifindex) << 16)
            ^ (u64::from(self.out_ifindex) << 40)
            ^ (u64::from(self.hook) << 8)
            ^ (u64::from(self.l4proto) << 24)
            ^ (u64::from(self.flags) << 56);
        (a.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57) as usize % SITE_SLOTS
    }

    /// The key as four words, for branch-light equality in the kernel.
    #[inline(always)]
    pub fn words(&self) -> [u64; 4] {
        // SAFETY: repr(C), 32 bytes, no implicit padding, any bits valid.
        unsafe { core::mem::transmute::<DropKey, [u64; 4]>(*self) }
    }
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
    /// `sk_buff.mark`
    pub skb_mark: u32,
    /// `sk_buff.head`
    pub skb_head: u32,
    /// `sk_buff.network_header` (u16 offset from head)
    pub skb_network_header: u32,
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
    /// `sk_buff.active_extensions` (u8 bit set of `enum skb_ext_id`)
    pub skb_active_extensions: u32,
    /// `sk_buff.extensions`
    pub skb_extensions: u32,
    /// `skb_ext.offset` (u8 per extension: where it sits, in 8-byte chunks)
    pub skb_ext_offset: u32,
    /// `SKB_EXT_BRIDGE_NF`; [`NO_BRIDGE_NF`] when the kernel has no br_netfilter.
    pub skb_ext_bridge_nf: u32,
    /// `nf_bridge_info.physinif`
    pub nf_bridge_physinif: u32,
    /// `nf_bridge_info.physoutdev`
    pub nf_bridge_physoutdev: u32,
    /// `sk_buff.skb_iif` (ifindex the packet was received on; 0 if local)
    pub skb_iif: u32,
    /// Address of `ip_local_deliver` (dst->input of locally delivered IPv4).
    pub ip_local_deliver: u64,
    /// Address of `ip_forward` (dst->input of forwarded IPv4).
    pub ip_forward: u64,
    /// Address of `ip6_input` (dst->input of locally delivered IPv6).
    pub ip6_input: u64,
    /// Address of `ip6_forward` (dst->input of forwarded IPv6).
    pub ip6_forward: u64,
    /// Address of `dst_discard` (dst->input of IPv4 output routes).
    pub dst_discard: u64,
    /// The functions that run each netfilter hook (`ip_rcv`, `ip_forward`,
    /// br_netfilter's...): the innermost return address inside one names
    /// the hook of a sampled drop whose routing state could not.
    pub hook_ranges: [CodeRange; HOOK_RANGES],
}

/// `skb_ext_bridge_nf` of a kernel without br_netfilter: no `active_extensions` bit.
pub const NO_BRIDGE_NF: u32 = 8;

/// Room for the hook functions (and their compiler-split parts).
pub const HOOK_RANGES: usize = 16;

/// Kernel code `[lo, hi)` that runs netfilter `hook`; `lo == hi` when unused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeRange {
    pub lo: u64,
    pub hi: u64,
    pub hook: u8,
    pub _pad: [u8; 7],
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
    /// VXLAN UDP port (flannel: 8472), host byte order.
    pub vxlan_port: u16,
    /// 1: count every drop, not only pod and VXLAN ones (`--all`).
    pub keep_all: u8,
    pub _pad: u8,
    /// Samples per second per CPU, and the bucket size.
    pub sample_rate: u32,
    pub sample_burst: u32,
    pub pod_cidrs: PodCidrs,
}

/// Roles of the interfaces a node's TC observers watch (slot numbers).
pub mod role {
    /// The VXLAN device (`flannel.1`): decapsulated pod traffic.
    pub const OVERLAY: u32 = 0;
    /// The pod bridge (`cni0`).
    pub const BRIDGE: u32 = 1;
    /// The node's NICs: VXLAN between nodes, and pod egress to the world.
    pub const UNDERLAY: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Underlay devices one node's observers can watch: the VXLAN device's
/// lower device and every device holding a default route.
pub const MAX_UNDERLAYS: u32 = 4;

/// Observed device slots: overlay, bridge, then the underlays (slot 2 is
/// the VXLAN device's lower device, whose network is the node network).
/// A slot's role is `min(slot, role::UNDERLAY)`.
pub const OBS_SLOTS: u32 = role::UNDERLAY + MAX_UNDERLAYS;

/// Packet directions of the observers (index = slot * 2 + direction).
pub mod direction {
    pub const INGRESS: u32 = 0;
    pub const EGRESS: u32 = 1;
}

/// A kfunc call as netdrop's eBPF object holds it: `call` (0x85) with
/// src_reg 2 (a kfunc of the vmlinux BTF) and a placeholder id, "ndrc",
/// that the loader replaces with the running kernel's (aya 0.14 does not
/// resolve kfuncs).
pub const KFUNC_CALL_PLACEHOLDER: [u8; 8] = [0x85, 0x20, 0, 0, b'n', b'd', b'r', b'c'];

/// Configuration of one node's observers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObsConfig {
    /// ifindex of each slot ([`OBS_SLOTS`]; 0: not observed).
    pub ifindex: [u32; OBS_SLOTS as usize],
    /// The node network of the underlay (e.g. 192.0.2.0/24) as (net, mask),
    /// byte order as loaded: pod egress to it is not "to the world".
    pub node_net: u32,
    pub node_mask: u32,
    pub vxlan_port: u16,
    pub _pad: u16,
    /// Un-NATed egress samples per second per CPU, and the bucket size.
    pub sample_rate: u32,
    pub sample_burst: u32,
    pub _pad2: u32,
    /// The underlay's IPv6 node network as (net high, net low, mask high,
    /// mask low) halves, byte order as loaded, like [`PodCidrs::v6`].
    pub node_net6: [u64; 4],
    pub pod_cidrs: PodCidrs,
}

/// Per (role, direction) counters of the observers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObsCounters {
    /// Packets with a pod source or destination.
    pub pod_packets: u64,
    pub pod_bytes: u64,
    /// VXLAN packets (underlay only).
    pub vxlan_packets: u64,
    pub vxlan_bytes: u64,
    /// Pod-sourced packets leaving the underlay un-NATed (egress only).
    pub unnat_packets: u64,
    pub unnat_bytes: u64,
}

/// Key of the VXLAN-per-peer counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// The other node's underlay address, byte order as loaded (IPv4 in the
    /// first word, the others zero).
    pub peer: [u32; 4],
    /// [`direction`]
    pub direction: u32,
    /// 4 or 6.
    pub family: u32,
}

impl PeerKey {
    /// Slot of this key in the [`PeerCache`].
    #[inline(always)]
    pub fn slot(&self) -> usize {
        let [a, b, c, d] = self.peer.map(u64::from);
        let x = (a | b << 32) ^ (c | d << 32).rotate_left(29);
        let x = (x << 1) | u64::from(self.direction & 1);
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % PEER_SLOTS
    }

    /// Writes a key into `slot` word by word and returns it. (A literal
    /// with zero words, such as an IPv4 peer's, compiles to a call of a
    /// byte-by-byte `memset` for the BPF target: on every VXLAN packet.)
    #[inline(always)]
    pub fn fill(
        slot: &mut core::mem::MaybeUninit<Self>,
        peer: [u32; 4],
        direction: u32,
        family: u32,
    ) -> &Self {
        let words = slot.as_mut_ptr().cast::<u32>();
        let [a, b, c, d] = peer;
        for (i, w) in [a, b, c, d, direction, family].into_iter().enumerate() {
            // SAFETY: `Self` is six u32s, `repr(C)`; volatile keeps the
            // stores from being merged into a memset.
            unsafe { words.add(i).write_volatile(w) };
        }
        // SAFETY: every word was written above.
        unsafe { slot.assume_init_ref() }
    }

    /// Equality in a few ALU ops (a derived `==` on the array may compile
    /// to a `bcmp` call for the BPF target).
    #[inline(always)]
    pub fn same(&self, o: &Self) -> bool {
        let [a, b, c, d] = self.peer;
        let [w, x, y, z] = o.peer;
        (a ^ w)
            | (b ^ x)
            | (c ^ y)
            | (d ^ z)
            | (self.direction ^ o.direction)
            | (self.family ^ o.family)
            == 0
    }
}

/// Slots of the per-CPU VXLAN peer cache.
pub const PEER_SLOTS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerSlot {
    pub key: PeerKey,
    pub counters: DropCounters,
}

/// Direct-mapped per-CPU cache in front of the VXLAN peer hash map, like
/// [`SiteCache`]: a slot belongs to the first peer that hashes to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCache {
    pub slots: [PeerSlot; PEER_SLOTS],
}

/// A pod packet that left the node without source NAT (rate-limited).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressSample {
    pub flow: FlowHdr,
    pub ifindex: u32,
    pub len: u32,
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
    unsafe impl aya::Pod for FlowHdr {}
    unsafe impl aya::Pod for DropSample {}
    unsafe impl aya::Pod for TokenBucket {}
    unsafe impl aya::Pod for PodCidrs {}
    unsafe impl aya::Pod for ObsConfig {}
    unsafe impl aya::Pod for ObsCounters {}
    unsafe impl aya::Pod for PeerKey {}
    unsafe impl aya::Pod for EgressSample {}
    unsafe impl aya::Pod for SiteSlot {}
    unsafe impl aya::Pod for SiteCache {}
    unsafe impl aya::Pod for PeerSlot {}
    unsafe impl aya::Pod for PeerCache {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<DropKey>(), 8 + 4 * 4 + 4 + 4);
        assert_eq!(size_of::<FlowHdr>(), 16 * 2 + 2 * 2 + 4);
        assert_eq!(size_of::<DropSample>(), 32 + 8 + 8 + 40 * 2 + 16);
        assert_eq!(core::mem::offset_of!(DropSample, outer), 48);
        assert_eq!(core::mem::offset_of!(DropSample, inner), 88);
        assert_eq!(
            size_of::<PodCidrs>(),
            MAX_POD_CIDRS * 8 + MAX_POD_CIDRS * 32 + 8
        );
        assert_eq!(size_of::<DropCounters>(), 16);
        assert_eq!(size_of::<CodeRange>(), 24);
        assert_eq!(size_of::<KernelLayout>(), 18 * 4 + 5 * 8 + HOOK_RANGES * 24);
        assert_eq!(size_of::<DropConfig>(), 4 + 4 + 8 + size_of::<PodCidrs>());
        assert_eq!(size_of::<TracepointLayout>(), 16);
        assert_eq!(
            size_of::<ObsConfig>(),
            4 * OBS_SLOTS as usize + 8 + 4 + 8 + 4 + 32 + size_of::<PodCidrs>()
        );
        assert_eq!(size_of::<ObsCounters>(), 48);
        assert_eq!(size_of::<PeerKey>(), 24);
        assert_eq!(core::mem::offset_of!(ObsConfig, node_net6), 48);
        assert_eq!(size_of::<EgressSample>(), 40 + 8);
    }
}
