//! Attribute: which iptables rule killed a packet. A model of the node's
//! rules (parsed from `iptables-save`), a simulator that walks a packet
//! through it, owners for every rule, and the join with kernel drops.

pub mod attribution;
pub mod generate;
pub mod owner;
pub mod packet;
pub mod parse;
pub mod reader;
pub mod rules;
pub mod simulate;

pub use owner::{Owner, OwnerContext};
pub use parse::{ParseError, parse_ruleset};
pub use rules::Ruleset;
pub use simulate::{BridgePorts, Outcome, Packet, Verdict, simulate};
