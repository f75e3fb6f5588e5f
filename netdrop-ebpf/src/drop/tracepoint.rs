//! `tracepoint/skb/kfree_skb`: the fallback drop probe for kernels where
//! `tp_btf` does not attach. Record offsets come from the tracefs format file
//! (they moved between kernels); skb fields are read with probe reads.

use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use netdrop_common::TracepointLayout;

use netdrop_ebpf::global;
use netdrop_ebpf::read::Probe;

#[unsafe(no_mangle)]
static TP_LAYOUT: TracepointLayout = unsafe { core::mem::zeroed() };

#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn netdrop_kfree_skb_tp(ctx: TracePointContext) -> u32 {
    match try_kfree_skb_tp(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

#[inline(always)]
fn try_kfree_skb_tp(ctx: &TracePointContext) -> Result<(), i64> {
    let skb: u64 = unsafe { ctx.read_at(global(&TP_LAYOUT.skbaddr) as usize) }?;
    let location: u64 = unsafe { ctx.read_at(global(&TP_LAYOUT.location) as usize) }?;
    let reason: u32 = unsafe { ctx.read_at(global(&TP_LAYOUT.reason) as usize) }?;
    super::count_drop::<Probe, Probe>(ctx.as_ptr(), skb as *const u8, location, reason)
}
