//! Object `observe`: TC observers on a node's overlay, bridge and underlay.
#![no_std]
#![no_main]

#[path = "../observe/mod.rs"]
mod observe;

netdrop_ebpf::object_boilerplate!();
