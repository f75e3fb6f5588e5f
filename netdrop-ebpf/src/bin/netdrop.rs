//! Object `netdrop`: the drop probes (`tp_btf` and tracepoint on kfree_skb).
#![no_std]
#![no_main]

#[path = "../drop/mod.rs"]
mod drop;

netdrop_ebpf::object_boilerplate!();
