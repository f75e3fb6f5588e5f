//! What the model cannot see on a packet's way, as data: the questions a
//! walk asks (an ipset's members, a `recent` list, an address type the
//! routes decide, a random branch, a match it does not model), the answer
//! each branch took, and everything else a branch had to assume. No
//! words: `netdrop`'s `explain` says them.

use std::net::IpAddr;

use crate::rules::Engine;

/// Which end of the packet a question is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Source,
    Destination,
}

/// One thing the walk cannot know from the packet and the ruleset.
#[derive(Clone, Debug, PartialEq)]
pub enum Question {
    /// Whether ipset `name` holds the packet, looked up by `flags`
    /// (`src`, `dst,dst`…).
    InIpset { name: String, flags: String },
    /// Whether `recent` list `name` holds the address at `side`.
    InRecentList {
        name: String,
        side: Side,
        addr: IpAddr,
    },
    /// Whether `addr` (at `side`) has one of the address types `types`
    /// (`-m addrtype`, `fib … type`): the node's addresses and routes
    /// decide. Routing's "is the destination the node's?" is this
    /// question with `LOCAL`, so one answer serves both.
    AddressType {
        side: Side,
        addr: IpAddr,
        types: Vec<String>,
    },
    /// Whether the packet was sent from MAC address `mac`.
    FromMac { mac: String },
    /// The packet's protocol is not known and the rule asks for `proto`.
    Protocol { proto: String },
    /// The packet's ports are not known and the rule matches some.
    Port,
    /// The packet's ICMP type is not known and the rule asks for `icmp_type`.
    IcmpType { icmp_type: String },
    /// The packet's device at this hook is not known and the rule names
    /// `pattern`.
    Interface { pattern: String },
    /// The bridge port the packet crossed is not known and the rule names
    /// `pattern`.
    BridgePort { pattern: String },
    /// `-m statistic --mode random --probability p`: a random branch.
    Random { probability: f64 },
    /// `-m statistic --mode nth --every n`.
    EveryNth { every: u32 },
    /// `-m statistic` of another mode.
    Statistic,
    /// A match netdrop does not model, as the ruleset prints it.
    Unmodelled { text: String },
}

impl Question {
    /// Whether a branch keeps its answer: a set's members, a list, an
    /// address's type or a sender's MAC do not change along one packet's
    /// way, so the same question later gets the same answer. A random
    /// branch, a port or a match netdrop does not model is asked anew.
    pub fn remembered(&self) -> bool {
        matches!(
            self,
            Self::InIpset { .. }
                | Self::InRecentList { .. }
                | Self::AddressType { .. }
                | Self::FromMac { .. }
        )
    }
}

/// A question with the answer a branch needs: the rule matches when
/// `question`'s answer is `holds`.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub question: Question,
    pub holds: bool,
}

impl Answer {
    /// The other answer to the same question.
    pub fn not(&self) -> Self {
        Self {
            question: self.question.clone(),
            holds: !self.holds,
        }
    }
}

/// What a match needs of the packet that the model cannot see.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// One question answered one way.
    Is(Answer),
    /// At least one of these holds (`neg`: none does): a match of several
    /// options with an unknown among them.
    AnyOf { neg: bool, of: Vec<Condition> },
    /// Every one of these holds.
    AllOf(Vec<Condition>),
}

impl Condition {
    /// Every question inside, in order.
    pub fn questions(&self) -> Vec<&Question> {
        match self {
            Self::Is(a) => vec![&a.question],
            Self::AnyOf { of, .. } | Self::AllOf(of) => {
                of.iter().flat_map(Condition::questions).collect()
            }
        }
    }

    /// A match netdrop does not model is in it.
    pub fn unmodelled(&self) -> bool {
        self.questions()
            .iter()
            .any(|q| matches!(q, Question::Unmodelled { .. }))
    }

    /// The one remembered answer this is, if it is one.
    pub fn as_fact(&self) -> Option<&Answer> {
        match self {
            Self::Is(a) if a.question.remembered() => Some(a),
            _ => None,
        }
    }
}

/// Something a branch of the walk had to assume, or that the walk tells
/// of its answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Assumption {
    /// Rule `rule_no` of `table`'s `chain` matched (`matched`) or not, on what the
    /// model cannot see: `when` is what it needs (all of it). One of the
    /// two ways of a fork.
    AtRule {
        table: String,
        chain: String,
        rule_no: usize,
        matched: bool,
        when: Vec<Condition>,
    },
    /// Routing sent the packet to the node (`local`: INPUT) or through it;
    /// the other way of the fork went the other way.
    Routed { dst: IpAddr, local: bool },
    /// Rule `rule_no` of `chain` was taken not to match: the walk had
    /// forked as often as it may.
    BranchLimit {
        table: String,
        chain: String,
        rule_no: usize,
    },
    /// A rule of `table` would have dropped the packet, but the kernel
    /// freed it in `freed_by`'s code, which is not that table's engine.
    FreedElsewhere {
        rule: String,
        table: String,
        chain: String,
        freed_by: Option<Engine>,
    },
    /// The walk visited as many rules as it may, in `chain`.
    WalkCutShort { chain: String },
    /// A jump to `chain`, which the ruleset does not hold: walked as empty.
    MissingChain { chain: String },
    /// A jump into `chain`, already on the way: not followed.
    JumpLoop { chain: String },
    /// A jump into `chain` past the depth the walk follows.
    JumpDepth { chain: String },
    /// Rule `rule_no` of `chain` has a target netdrop does not model: the
    /// walk went on past it.
    TargetUnmodelled {
        table: String,
        chain: String,
        rule_no: usize,
        target: String,
    },
    /// The rule that dropped was found by its counters growing; the walk
    /// did not reach it.
    FoundByCounters,
    /// Other ways of the walk accept the packet.
    OtherBranchesAccept,
}

impl Assumption {
    /// The fork this is one way of, and which way: `(fork, way)`. Two
    /// branches took the two ways of one fork when their forks are equal
    /// and their ways differ.
    pub fn fork(&self) -> Option<(Fork<'_>, bool)> {
        match self {
            Self::AtRule {
                table,
                chain,
                rule_no,
                matched,
                ..
            } => Some((Fork::Rule(table, chain, *rule_no), *matched)),
            Self::Routed { dst, local } => Some((Fork::Route(*dst), *local)),
            _ => None,
        }
    }

    /// The questions this assumption answered (routing's: whether the
    /// destination is the node's).
    pub fn questions(&self) -> Vec<Question> {
        match self {
            Self::AtRule { when, .. } => when
                .iter()
                .flat_map(Condition::questions)
                .cloned()
                .collect(),
            Self::Routed { dst, .. } => vec![Question::AddressType {
                side: Side::Destination,
                addr: *dst,
                types: vec!["LOCAL".into()],
            }],
            _ => Vec::new(),
        }
    }
}

/// Where a walk forked: at a rule whose match it could not decide, or at
/// routing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fork<'a> {
    Rule(&'a str, &'a str, usize),
    Route(IpAddr),
}
