//! Attribute: the rules in force on a node, read live (`iptables-save` in
//! its namespace, every backend) or from a file, for the model crate
//! (`netdrop-model`) to walk and attribute drops to; and the node's pods,
//! from its container runtime, to name a drop's ends.

pub mod api;
pub mod containerd_events;
pub mod nf_tables;
pub mod pods;
pub mod reader;
pub mod xtables;
