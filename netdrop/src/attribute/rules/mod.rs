//! The node's rules as the model needs them: `iptables-save` in the node's
//! namespace, every backend ([`reader`]); its nf_tables tables and each
//! native one's sets, chains and rules over netlink ([`nf_tables`]); what
//! tells iptables-legacy's tables changed ([`xtables`]).

pub mod nf_tables;
pub mod reader;
pub mod xtables;
