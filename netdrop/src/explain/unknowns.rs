//! The words for what the model cannot see: its questions
//! (`netdrop_model::question::Question`), the answers a branch took and
//! what a walk had to assume. Made here once; nothing parses them back.

use netdrop_model::question::{Answer, Assumption, Condition, Question, Side};

fn side(s: Side) -> &'static str {
    match s {
        Side::Source => "source",
        Side::Destination => "destination",
    }
}

/// An address type question that asks only whether the address is the
/// node's own (`LOCAL`, as routing asks it too).
fn only_local(types: &[String]) -> bool {
    matches!(types, [t] if t.eq_ignore_ascii_case("LOCAL"))
}

/// A question, as the first line of `explain` lists what an answer
/// depends on: `in ipset KUBE-…`.
pub fn question(q: &Question) -> String {
    match q {
        Question::InIpset { name, .. } => format!("in ipset {name}"),
        Question::InRecentList { name, side: s, .. } => {
            format!("{} in recent list {name}", side(*s))
        }
        Question::AddressType {
            side: s,
            addr,
            types,
        } if only_local(types) => {
            format!(
                "{} {addr} is an address of the node (its addresses decide)",
                side(*s)
            )
        }
        Question::AddressType { side: s, types, .. } => format!(
            "{} address type {} (the node's addresses and routes decide)",
            side(*s),
            types.join(",")
        ),
        Question::FromMac { mac } => format!("sent from MAC {mac}"),
        Question::Protocol { proto } => format!("protocol {proto}"),
        Question::Port => "port".into(),
        Question::IcmpType { icmp_type } => format!("icmp type {icmp_type}"),
        Question::Interface { pattern } => format!("interface {pattern}"),
        Question::BridgePort { pattern } => format!("bridge port {pattern}"),
        Question::Random { probability } => {
            format!("random {:.0}% branch", probability * 100.0)
        }
        Question::EveryNth { every } => format!("every {every}th packet"),
        Question::Statistic => "statistic".into(),
        Question::Unmodelled { text } => format!("`{text}`"),
    }
}

/// Questions in words, each wording once (two questions can read alike:
/// one set looked up by source and by destination).
pub fn questions<'q>(qs: impl IntoIterator<Item = &'q Question>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for q in qs {
        let w = question(q);
        if !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// An answer: `in ipset X`, `not in ipset X`.
pub fn answer(a: &Answer) -> String {
    match (&a.question, a.holds) {
        (
            Question::AddressType {
                side: s,
                addr,
                types,
            },
            holds,
        ) => {
            let is = if holds { "is" } else { "is not" };
            if only_local(types) {
                format!("{} {addr} {is} the node's", side(*s))
            } else {
                format!(
                    "{} {addr} {is} of address type {}",
                    side(*s),
                    types.join(",")
                )
            }
        }
        (q, true) => question(q),
        (q, false) => format!("not {}", question(q)),
    }
}

/// What a match needs, in words.
pub fn condition(c: &Condition) -> String {
    match c {
        Condition::Is(a) => answer(a),
        Condition::AnyOf { neg, of } => match (neg, of.as_slice()) {
            (false, [one]) => condition(one),
            (true, [one]) => format!("not {}", condition(one)),
            (false, _) => format!("one of: {}", list(of, ", ")),
            (true, _) => format!("none of: {}", list(of, ", ")),
        },
        Condition::AllOf(of) => list(of, " and "),
    }
}

fn list(of: &[Condition], sep: &str) -> String {
    of.iter().map(condition).collect::<Vec<_>>().join(sep)
}

/// What a branch assumed, as one line of `explain`'s "when …".
pub fn assumption(a: &Assumption) -> String {
    match a {
        Assumption::AtRule {
            chain,
            rule_no,
            matched,
            when,
            ..
        } => {
            let what = match (matched, when.as_slice()) {
                (true, _) => list(when, " and "),
                // Not matched on one answer: the other answer.
                (false, [Condition::Is(a)]) => answer(&a.not()),
                (false, _) => format!("not ({})", list(when, " and ")),
            };
            format!("{chain} #{rule_no}: {what}")
        }
        Assumption::Routed { dst, local: true } => {
            format!("routing: {dst} is the node's (INPUT)")
        }
        Assumption::Routed { dst, local: false } => {
            format!("routing: {dst} is not the node's (forwarded)")
        }
        Assumption::BranchLimit { chain, rule_no, .. } => {
            format!("{chain} #{rule_no}: assumed no match (too many branches)")
        }
        Assumption::FreedElsewhere {
            rule,
            table,
            chain,
            freed_by,
        } => format!(
            "not dropped by `{rule}` ({table}/{chain}): the kernel freed the packet in {}",
            freed_by.map_or("?", |e| e.as_str())
        ),
        Assumption::WalkCutShort { chain } => {
            format!("walk cut short in {chain} (ruleset too large or looping)")
        }
        Assumption::MissingChain { chain } => {
            format!("chain {chain} is not in the dump; treated as empty")
        }
        Assumption::JumpLoop { chain } => format!("jump loop into {chain}; not followed"),
        Assumption::JumpDepth { chain } => format!("jump depth limit at {chain}"),
        Assumption::TargetUnmodelled {
            chain,
            rule_no,
            target,
            ..
        } => format!("{chain} #{rule_no}: target {target} not modelled; assumed to continue"),
        Assumption::FoundByCounters => {
            "found by rule counters; the simulation did not reach this rule".into()
        }
        Assumption::OtherBranchesAccept => "other branches of the walk accept this packet".into(),
    }
}

/// Assumptions in words, in order.
pub fn assumptions(a: &[Assumption]) -> Vec<String> {
    a.iter().map(assumption).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, holds: bool) -> Condition {
        Condition::Is(Answer {
            question: Question::InIpset {
                name: name.into(),
                flags: "src".into(),
            },
            holds,
        })
    }

    #[test]
    fn a_branch_says_the_answer_it_took() {
        let at = |matched, when: Vec<Condition>| Assumption::AtRule {
            table: "filter".into(),
            chain: "INPUT".into(),
            rule_no: 1,
            matched,
            when,
        };
        assert_eq!(
            assumption(&at(true, vec![set("BAD", true)])),
            "INPUT #1: in ipset BAD"
        );
        // Not matched on one answer: the other answer, said plainly.
        assert_eq!(
            assumption(&at(false, vec![set("BAD", false)])),
            "INPUT #1: in ipset BAD"
        );
        assert_eq!(
            assumption(&at(false, vec![set("A", true), set("B", true)])),
            "INPUT #1: not (in ipset A and in ipset B)"
        );
        assert_eq!(
            condition(&Condition::AnyOf {
                neg: true,
                of: vec![set("A", true), set("B", true)]
            }),
            "none of: in ipset A, in ipset B"
        );
    }

    #[test]
    fn a_question_reads_once_however_often_it_is_asked() {
        let by = |flags: &str| Question::InIpset {
            name: "KUBE-X".into(),
            flags: flags.into(),
        };
        assert_eq!(questions([&by("src"), &by("dst")]), ["in ipset KUBE-X"]);
        let local = Question::AddressType {
            side: Side::Destination,
            addr: "192.0.2.1".parse().unwrap(),
            types: vec!["LOCAL".into()],
        };
        assert_eq!(
            question(&local),
            "destination 192.0.2.1 is an address of the node (its addresses decide)"
        );
        let not_local = Answer {
            question: local,
            holds: false,
        };
        assert_eq!(
            answer(&not_local),
            "destination 192.0.2.1 is not the node's"
        );
    }
}
