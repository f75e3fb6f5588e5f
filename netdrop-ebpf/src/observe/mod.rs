//! Interface observers: TC programs on a node's overlay (`flannel.1`),
//! bridge (`cni0`) and underlay NIC. They count pod packets per direction,
//! VXLAN packets per peer node, and pod egress that leaves un-NATed
//! (scenario S4). They never change a packet's fate.

pub mod tc;

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
};
use netdrop_common::{
    DropCounters, OBS_SLOTS, ObsConfig, ObsCounters, PeerCache, PeerKey, TokenBucket, obs_stat,
};

#[unsafe(no_mangle)]
// SAFETY: all-zero is valid for this plain-integer struct (the loader writes it).
static OBS_CONFIG: ObsConfig = unsafe { core::mem::zeroed() };

/// Index: slot * 2 + direction.
#[map]
static OBS_COUNTERS: PerCpuArray<ObsCounters> = PerCpuArray::with_max_entries(OBS_SLOTS * 2, 0);

#[map]
static VXLAN_PEERS: PerCpuHashMap<PeerKey, DropCounters> = PerCpuHashMap::with_max_entries(4096, 0);

#[map]
static EGRESS_SAMPLES: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

#[map]
static OBS_BUCKET: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);

/// The observers' own losses (`obs_stat`).
#[map]
static OBS_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(obs_stat::COUNT, 0);

/// Per-CPU cache of VXLAN peers in front of `VXLAN_PEERS` (see
/// `PeerCache`): a flood between two nodes costs no hash lookup.
#[map]
static VXLAN_PEER_CACHE: PerCpuArray<PeerCache> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn take_token() -> bool {
    let Some(b) = OBS_BUCKET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value, no concurrent writer on this CPU.
    netdrop_ebpf::bucket::take_token(
        unsafe { &mut *b },
        netdrop_ebpf::global(&OBS_CONFIG.sample_rate),
        netdrop_ebpf::global(&OBS_CONFIG.sample_burst),
    )
}
