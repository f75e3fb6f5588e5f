//! Object `floor`: programs that do nothing, for `cargo xtask bench` only
//! (netdrop never loads them). bpf_stats charges every program run the cost
//! of its own clock reads; these show that cost on the same hooks as the
//! real programs, so the benchmarks can tell the programs' work from it.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{btf_tracepoint, classifier},
    programs::{BtfTracePointContext, TcContext},
};

#[btf_tracepoint(function = "kfree_skb")]
pub fn floor_kfree_skb(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[classifier]
pub fn floor_tc(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

netdrop_ebpf::object_boilerplate!();
