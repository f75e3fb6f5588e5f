//! netdrop: where did my pod packet die?
//!
//! The data flows one way, one module per stage (ARCHITECTURE.md is the
//! map, and `tests/architecture.rs` holds every module to it):
//! `capture` (kernel programs and their maps) → `decode` (names for
//! numbers) → `attribute` (the node's rules, for the model crate
//! `netdrop-model`) → `explain` (sentences and fixes) → `export` (stdout,
//! Prometheus) → `watch` (the live loop, and `config`, what the operator
//! asked for) → the commands (`cli`,
//! `commands`, `demo`). `netns` and `preflight` serve every stage; `lab`
//! builds the demo's and the tests' clusters.

pub mod attribute;
pub mod capture;
pub mod cli;
pub mod commands;
pub mod config;
pub mod decode;
#[cfg(feature = "lab")]
pub mod demo;
pub mod explain;
pub mod export;
#[cfg(feature = "lab")]
pub mod lab;
pub mod netns;
pub mod preflight;
pub mod watch;

/// The drop probes, built by `build.rs` from `netdrop-ebpf`.
pub const EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netdrop"));

/// The TC interface observers (loaded once per observed node).
pub const OBSERVE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observe"));

/// Programs that do nothing on the drop and TC hooks: the benchmarks'
/// measure of what bpf_stats charges any program there. Not used by
/// netdrop itself (so not part of its binary).
#[cfg(feature = "lab")]
pub const BENCH_FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));
