//! `tp_btf/kfree_skb`: the preferred drop probe. Its skb argument is
//! BTF-typed, so its fields are read with plain loads.

use aya_ebpf::{EbpfContext, macros::btf_tracepoint, programs::BtfTracePointContext};

use netdrop_ebpf::read::Direct;

#[btf_tracepoint(function = "kfree_skb")]
pub fn netdrop_kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    match try_kfree_skb_btf(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

#[inline(always)]
fn try_kfree_skb_btf(ctx: &BtfTracePointContext) -> Result<(), i64> {
    // TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason, ...)
    let skb: *const u8 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    super::count_drop::<Direct>(ctx.as_ptr(), skb, location, reason)
}
