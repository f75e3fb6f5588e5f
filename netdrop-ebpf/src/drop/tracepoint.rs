//! `tracepoint/skb/kfree_skb`: the fallback drop probe for kernels where
//! `tp_btf` does not attach. Record offsets come from the tracefs format file
//! (they moved between kernels); skb fields are read with probe reads.

use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use netdrop_common::TracepointLayout;

use netdrop_ebpf::global;
use netdrop_ebpf::read::Probe;

#[unsafe(no_mangle)]
// SAFETY: all-zero is valid for this plain-integer struct (the loader writes it).
static TP_LAYOUT: TracepointLayout = unsafe { core::mem::zeroed() };

#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn netdrop_kfree_skb_tp(ctx: TracePointContext) -> u32 {
    match try_kfree_skb_tp(&ctx) {
        Ok(()) => 0,
        Err(_) => super::count_error(),
    }
}

#[inline(always)]
fn try_kfree_skb_tp(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: the offset is from this tracepoint's format file, inside its record.
    let skb: u64 = unsafe { ctx.read_at(global(&TP_LAYOUT.skbaddr) as usize) }?;
    // SAFETY: the offset is from this tracepoint's format file, inside its record.
    let location: u64 = unsafe { ctx.read_at(global(&TP_LAYOUT.location) as usize) }?;
    // SAFETY: the offset is from this tracepoint's format file, inside its record.
    let reason: u32 = unsafe { ctx.read_at(global(&TP_LAYOUT.reason) as usize) }?;
    super::count_drop::<Probe, Probe>(ctx.as_ptr(), skb as *const u8, location, reason)
}
