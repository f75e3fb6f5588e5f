//! netdrop's netfilter model: what a node's rules are, where a packet goes
//! through them and whose rule decides it — as typed data. No kernel, no
//! command line, no async runtime and no prose: the explanations are the
//! `netdrop` crate's.
//!
//! - [`words`]: hook, family, verdict, evidence, severity, finding id;
//! - [`rules`]: tables that know their family, chains (base chains know
//!   their hook and priority), rules with typed matches and targets;
//! - [`parse`]: the iptables-save frontend;
//! - [`simulate`]: the walk of one packet through one hook, or along its
//!   whole way through the node (PREROUTING's DNAT → INPUT or FORWARD →
//!   POSTROUTING);
//! - [`owner`]: whose rule it is, and leftovers of CNIs that are gone;
//! - [`question`]: what the walk cannot see (an ipset's members, an address
//!   type, a random branch), the answers its branches take, what they assume;
//! - [`decision`]: where a walk ended, resolved against the ruleset;
//! - [`attribution`]: a kernel drop joined with the rules and their counters;
//! - [`check`]: the pod flows a node must carry, and the findings;
//! - [`edit`]: an `iptables -I`/`-A` of a fix, applied to copies of the
//!   chains it changes;
//! - [`fix`]: a fix walked before it is printed: the packet passes, and
//!   probes outside its flow keep their verdicts.

pub mod attribution;
pub mod check;
pub mod decision;
pub mod edit;
pub mod fix;
#[cfg(feature = "lab")]
pub mod generate;
pub mod nft;
pub mod owner;
pub mod packet;
pub mod parse;
pub mod question;
pub mod rules;
pub mod simulate;
pub mod words;

pub use attribution::{Attribution, CounterSnapshot, attribute};
pub use decision::Decision;
pub use owner::{Owner, OwnerContext};
pub use parse::{ParseError, parse_ruleset};
pub use rules::Ruleset;
pub use simulate::{BridgePorts, Outcome, Packet, Step, simulate, simulate_path};
pub use words::{Evidence, Family, FindingId, Hook, Severity, Verdict};
