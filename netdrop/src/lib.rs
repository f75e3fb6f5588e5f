//! netdrop: where did my pod packet die?
//!
//! The data flows through one folder per stage:
//! `capture` (kernel programs and their maps) → `decode` (names for numbers)
//! → `attribute` (which iptables rule) → `explain` (whose, and the fix) →
//! `export` (stdout, Prometheus).

pub mod attribute;
pub mod capture;
pub mod cli;
pub mod decode;
pub mod demo;
pub mod explain;
pub mod export;
pub mod lab;
pub mod preflight;
pub mod watch;

/// The drop probes, built by `build.rs` from `netdrop-ebpf`.
pub const EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netdrop"));

/// The TC interface observers (loaded once per observed node).
pub const OBSERVE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observe"));

/// Programs that do nothing on the drop and TC hooks: the benchmarks'
/// measure of what bpf_stats charges any program there. Not used by
/// netdrop itself (so not part of its binary).
pub const BENCH_FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));
