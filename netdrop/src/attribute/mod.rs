//! Attribute: what a drop is attributed to. Two halves that do not import
//! each other:
//!
//! - [`rules`]: the rules in force on a node, read live (`iptables-save`
//!   in its namespace, every backend; native nftables over netlink) or from
//!   a file, for the model crate (`netdrop-model`) to walk;
//! - [`names`]: the node's pods (and the cluster's), to name a drop's ends.

pub mod names;
pub mod rules;
