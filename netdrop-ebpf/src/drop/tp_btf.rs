//! `tp_btf/kfree_skb`: the preferred drop probe. Its skb argument is
//! BTF-typed, so its fields are read with plain loads. Two builds: one that
//! reads the route and the packet through `bpf_rdonly_cast` (kernels that
//! cast to `void`), one that probe-reads them (older kernels).

use aya_ebpf::{EbpfContext, macros::btf_tracepoint, programs::BtfTracePointContext};

use netdrop_ebpf::read::{Cast, Direct, KernelRead, Probe};

#[btf_tracepoint(function = "kfree_skb")]
pub fn netdrop_kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    match try_kfree_skb_btf::<Cast>(&ctx) {
        Ok(()) => 0,
        Err(_) => super::count_error(),
    }
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn netdrop_kfree_skb_btf_probe_read(ctx: BtfTracePointContext) -> i32 {
    match try_kfree_skb_btf::<Probe>(&ctx) {
        Ok(()) => 0,
        Err(_) => super::count_error(),
    }
}

#[inline(always)]
fn try_kfree_skb_btf<U: KernelRead>(ctx: &BtfTracePointContext) -> Result<(), i64> {
    // TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason, ...)
    let skb: *const u8 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    super::count_drop::<Direct, U>(ctx.as_ptr(), skb, location, reason)
}
