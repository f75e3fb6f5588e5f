//! Attribution: a kernel drop (hook + packet) joined with the rules in
//! force. The simulator names the rule; the rule counters, read before and
//! after, confirm it when they grew by the drops the kernel saw.

use std::collections::HashMap;

use crate::{
    decision::Decision,
    owner::OwnerContext,
    rules::{Counters, Engine, Policy, Ruleset, Target},
    simulate::{Outcome, Packet, Step, could_match, simulate_freed_by},
    words::{Evidence, Verdict},
};

/// A kernel drop's rule, and why netdrop believes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribution {
    pub evidence: Evidence,
    pub decision: Decision,
}

/// The counters attribution needs of a snapshot taken before the drops:
/// those of every chain's policy and of the rules that can end a packet's
/// walk there (DROP, REJECT, targets netdrop does not know), by table,
/// chain and rule text (positions move when rules are inserted). A few per
/// cent of a kube-proxy ruleset's rules: what `watch` keeps between two
/// reads, instead of a second whole ruleset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CounterSnapshot {
    /// (table, chain) → its kept counters.
    chains: HashMap<(String, String), Vec<Kept>>,
}

/// A rule's text (`None`: the chain's policy) and its counters.
type Kept = (Option<String>, Counters);

impl CounterSnapshot {
    pub fn of(rs: &Ruleset) -> Self {
        let mut chains = HashMap::new();
        for t in rs.tables.values() {
            for c in &t.chains {
                // Only a chain with a policy (a base chain) ends a walk at
                // its end; kube-proxy's tens of thousands of user chains
                // keep nothing unless a rule of theirs can end one.
                let mut kept = Vec::new();
                if c.policy.is_some() {
                    kept.push((None, c.counters));
                }
                for r in &c.rules {
                    let ends = matches!(
                        r.target,
                        Target::Drop | Target::Reject { .. } | Target::Other { .. }
                    );
                    if let (true, Some(n)) = (ends, r.counters)
                        && !kept
                            .iter()
                            .any(|(t, _)| t.as_deref() == Some(r.text.as_str()))
                    {
                        kept.push((Some(r.text.clone()), n));
                    }
                }
                if !kept.is_empty() {
                    chains.insert((t.name.clone(), c.name.clone()), kept);
                }
            }
        }
        Self { chains }
    }

    fn counter(&self, step: &Step) -> Option<Counters> {
        let kept = self.chains.get(&(step.table.clone(), step.chain.clone()))?;
        let text = step.rule_no.map(|_| step.text.as_str());
        kept.iter()
            .find(|(t, _)| t.as_deref() == text)
            .map(|(_, c)| *c)
    }
}

/// Counter of a rule (by table, chain and text: positions move when rules
/// are inserted) or of a chain's policy.
fn counter(rs: &Ruleset, step: &Step) -> Option<Counters> {
    let chain = rs.tables.get(&step.table)?.chain(&step.chain)?;
    match step.rule_no {
        None => Some(chain.counters),
        Some(_) => chain
            .rules
            .iter()
            .find(|r| r.text == step.text)
            .and_then(|r| r.counters),
    }
}

fn grew(before: &CounterSnapshot, after: &Ruleset, step: &Step, drops: u64) -> bool {
    match (before.counter(step), counter(after, step)) {
        (Some(b), Some(a)) => drops > 0 && a.packets.saturating_sub(b.packets) >= drops,
        _ => false,
    }
}

/// Attributes `drops` kernel drops of `pkt` to a rule of `after` (the rules
/// in force when they happened); `before` is a snapshot from before them.
/// `engine`: the engine the kernel says freed the packets (from the drop
/// location); a rule of the other engine is never the answer.
pub fn attribute(
    before: Option<&CounterSnapshot>,
    after: &Ruleset,
    owners: &OwnerContext,
    pkt: &Packet,
    drops: u64,
    engine: Option<Engine>,
) -> Option<Attribution> {
    let possible = |table: &str| match (engine, after.engine_of(table)) {
        (Some(e), Some(t)) => e == t,
        _ => true,
    };
    let outcomes = simulate_freed_by(after, pkt, engine);
    // Each drop with the assumptions its verdict hangs on (a fork every
    // way of which drops is no assumption of the drop).
    let dep = crate::simulate::depends(&outcomes);
    // Each drop with the assumptions its verdict hangs on; resolved into a
    // Decision only for the one chosen.
    let mut candidates: Vec<(Vec<crate::question::Assumption>, &Outcome)> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.verdict.is_drop())
        .filter(|(_, o)| o.decider().is_none_or(|d| possible(&d.table)))
        .map(|(i, o)| (dep.essential(i, o), o))
        .collect();
    candidates.sort_by_key(|(a, o)| (o.unmodelled, a.len()));
    let resolve = |(assumptions, o): (Vec<crate::question::Assumption>, &Outcome)| {
        let mut d = Decision::of(after, owners, o);
        d.assumptions = assumptions;
        d
    };
    if let Some(before) = before {
        // A simulated drop whose counter confirms it wins.
        if let Some(c) = candidates
            .iter()
            .position(|(_, o)| o.decider().is_some_and(|d| grew(before, after, d, drops)))
        {
            return Some(Attribution {
                evidence: Evidence::Counters,
                decision: resolve(candidates.swap_remove(c)),
            });
        }
        // The model missed it (an ipset, an unmodelled match...): a dropping
        // rule of this hook whose counter grew by the drops seen is the answer.
        if let Some(o) = counter_only(before, after, pkt, drops, &possible) {
            let mut decision = Decision::of(after, owners, &o);
            decision
                .assumptions
                .push(crate::question::Assumption::FoundByCounters);
            return Some(Attribution {
                evidence: Evidence::Counters,
                decision,
            });
        }
    }
    candidates.into_iter().next().map(|c| Attribution {
        evidence: Evidence::Simulated,
        decision: resolve(c),
    })
}

fn counter_only(
    before: &CounterSnapshot,
    after: &Ruleset,
    pkt: &Packet,
    drops: u64,
    possible: &dyn Fn(&str) -> bool,
) -> Option<Outcome> {
    let mut hits = Vec::new();
    // Every chain of every table with a base chain on this hook (and of
    // the engine that dropped).
    let mut tables: Vec<&crate::rules::Table> = Vec::new();
    for (t, _, _) in after.base_chains(pkt.hook) {
        if possible(&t.name) && !tables.iter().any(|x| x.name == t.name) {
            tables.push(t);
        }
    }
    for table in tables {
        for chain in &table.chains {
            for (i, r) in chain.rules.iter().enumerate() {
                let verdict = match r.target {
                    Target::Drop => Verdict::Drop,
                    Target::Reject { .. } => Verdict::Reject,
                    _ => continue,
                };
                // A rule that cannot match this packet (another port, another
                // address) is no evidence, whatever its counter did: it grew
                // with other drops of the same interval.
                if !could_match(r, pkt) {
                    continue;
                }
                let step = Step {
                    hook: pkt.hook,
                    table: table.name.clone(),
                    chain: chain.name.clone(),
                    rule_no: Some(i + 1),
                    text: r.text.clone(),
                    line: r.line,
                };
                if grew(before, after, &step, drops) {
                    let with = match &r.target {
                        Target::Reject { with } => Some(
                            with.clone()
                                .unwrap_or_else(|| "icmp-port-unreachable".into()),
                        ),
                        _ => None,
                    };
                    hits.push((step, verdict, with));
                }
            }
            let base_here = table
                .base_chain(&chain.name)
                .is_some_and(|b| b.hook == pkt.hook);
            if base_here && chain.policy == Some(Policy::Drop) {
                let step = Step {
                    hook: pkt.hook,
                    table: table.name.clone(),
                    chain: chain.name.clone(),
                    rule_no: None,
                    text: format!(":{} DROP", chain.name),
                    line: 0,
                };
                if grew(before, after, &step, drops) {
                    hits.push((step, Verdict::Drop, None));
                }
            }
        }
    }
    // Only an unambiguous counter is evidence.
    if hits.len() != 1 {
        return None;
    }
    let (step, verdict, reject_with) = hits.pop()?;
    Some(Outcome {
        verdict,
        reject_with,
        path: vec![step],
        assumptions: Vec::new(),
        unmodelled: false,
        snat: None,
        dnat: None,
        hook: pkt.hook,
        packet: pkt.clone(),
        hooks: vec![pkt.hook],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_ruleset, words::Hook};

    const BEFORE: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [10:1000]\n[0:0] -A FORWARD -m set --match-set allowed src -j ACCEPT\n[3:300] -A INPUT -p udp -m udp --dport 8472 -j DROP\nCOMMIT\n";

    fn pkt() -> Packet {
        let mut p = Packet::new(
            Hook::Forward,
            6,
            "10.224.2.2".parse().unwrap(),
            "10.224.1.2".parse().unwrap(),
        );
        p.in_iface = Some("flannel.1".into());
        p.out_iface = Some("cni0".into());
        p
    }

    #[test]
    fn a_snapshot_keeps_policies_and_rules_that_end_a_walk_only() {
        let mut dump = String::from("*nat\n:PREROUTING ACCEPT [1:1]\n");
        for i in 0..100 {
            dump += &format!(
                ":SVC-{i} - [0:0]\n-A PREROUTING -d 10.96.0.{i}/32 -j SVC-{i}\n-A SVC-{i} -j DNAT --to-destination 10.224.1.{i}:80\n"
            );
        }
        dump += "COMMIT\n*filter\n:INPUT ACCEPT [2:2]\n:CHECKS - [0:0]\n[3:3] -A CHECKS -p udp -j DROP\nCOMMIT\n";
        let snap = CounterSnapshot::of(&parse_ruleset(&dump).unwrap());
        // nat PREROUTING's and filter INPUT's policies, CHECKS' DROP: not
        // the hundred service chains.
        assert_eq!(snap.chains.len(), 3, "{snap:?}");
        assert_eq!(snap.chains[&("filter".into(), "CHECKS".into())].len(), 1);
    }

    #[test]
    fn counters_confirm_the_simulated_policy_drop() {
        let after = BEFORE.replace("FORWARD DROP [10:1000]", "FORWARD DROP [15:1500]");
        let (b, a) = (
            parse_ruleset(BEFORE).unwrap(),
            parse_ruleset(&after).unwrap(),
        );
        let owners = OwnerContext::new(&a, None);
        let at = attribute(Some(&CounterSnapshot::of(&b)), &a, &owners, &pkt(), 5, None).unwrap();
        assert_eq!(at.evidence, Evidence::Counters);
        assert!(at.decision.policy);
        // Counters that did not grow enough: simulated only.
        let at = attribute(Some(&CounterSnapshot::of(&b)), &a, &owners, &pkt(), 6, None).unwrap();
        assert_eq!(at.evidence, Evidence::Simulated);
        let at = attribute(None, &a, &owners, &pkt(), 5, None).unwrap();
        assert_eq!(at.evidence, Evidence::Simulated);
    }

    #[test]
    fn counters_find_what_the_simulation_cannot_reach() {
        // The simulated packet is accepted (unknown ipset, assumed member in
        // one branch); the kernel dropped an INPUT VXLAN packet.
        let after = BEFORE.replace("[3:300] -A INPUT", "[7:700] -A INPUT");
        let (b, a) = (
            parse_ruleset(BEFORE).unwrap(),
            parse_ruleset(&after).unwrap(),
        );
        let owners = OwnerContext::new(&a, None);
        let mut p = Packet::new(
            Hook::Input,
            17,
            "192.0.2.2".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
        );
        p.in_iface = Some("eth0".into());
        p.dport = None; // port unknown to the model: the rule is a "maybe"
        let at = attribute(Some(&CounterSnapshot::of(&b)), &a, &owners, &p, 4, None).unwrap();
        assert_eq!(at.evidence, Evidence::Counters);
        assert_eq!(
            at.decision.rule.as_deref(),
            Some("-A INPUT -p udp -m udp --dport 8472 -j DROP")
        );
    }

    #[test]
    fn a_counter_of_a_rule_that_cannot_match_is_no_evidence() {
        // The 8472 rule's counter grew (by other drops of the interval); the
        // dropped packet went to port 9000, which that rule cannot match.
        let after = BEFORE.replace("[3:300] -A INPUT", "[7:700] -A INPUT");
        let (b, a) = (
            parse_ruleset(BEFORE).unwrap(),
            parse_ruleset(&after).unwrap(),
        );
        let owners = OwnerContext::new(&a, None);
        let mut p = Packet::new(
            Hook::Input,
            17,
            "192.0.2.2".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
        );
        p.in_iface = Some("eth0".into());
        p.dport = Some(9000);
        assert_eq!(
            attribute(Some(&CounterSnapshot::of(&b)), &a, &owners, &p, 4, None),
            None
        );
    }

    #[test]
    fn a_counter_finds_a_conntrack_state_rule_the_walk_assumed_away() {
        // The walk assumes a dropped packet is NEW; this one was INVALID,
        // and only the rule's counter says so.
        let rules = |n: u64| {
            format!(
                "*filter\n:FORWARD ACCEPT [0:0]\n[{n}:0] -A FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n"
            )
        };
        let (b, a) = (
            parse_ruleset(&rules(0)).unwrap(),
            parse_ruleset(&rules(3)).unwrap(),
        );
        let owners = OwnerContext::new(&a, None);
        let at = attribute(Some(&CounterSnapshot::of(&b)), &a, &owners, &pkt(), 3, None).unwrap();
        assert_eq!(at.evidence, Evidence::Counters);
        assert_eq!(
            at.decision.rule.as_deref(),
            Some("-A FORWARD -m conntrack --ctstate INVALID -j DROP")
        );
    }

    #[test]
    fn the_engine_that_freed_the_packet_rules_out_the_other_ones_rules() {
        // A node whose iptables-legacy drops VXLAN in INPUT while a native
        // nftables table drops all of udp: where the kernel freed the
        // packet says which of the two dropped it.
        let mut rs = parse_ruleset(
            "# Generated by iptables-save v1.8.9 on Thu Dec  3 11:16:44 2026\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p udp -m udp --dport 8472 -j DROP\nCOMMIT\n",
        )
        .unwrap();
        let json = r#"{"nftables": [
          {"table": {"family": "inet", "name": "fw", "handle": 1}},
          {"chain": {"family": "inet", "table": "fw", "name": "fwd", "handle": 1, "type": "filter", "hook": "forward", "prio": 10, "policy": "accept"}},
          {"rule": {"family": "inet", "table": "fw", "chain": "fwd", "handle": 2, "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}}, {"drop": null}]}}
        ]}"#;
        let native = crate::nft::parse_nft_json(json, &Default::default(), |_, _| false).unwrap();
        for t in native.v4 {
            rs.tables.insert(t.name.clone(), t);
        }
        let mut p = pkt();
        p.proto = 17;
        p.dport = Some(8472);
        let owners = OwnerContext::new(&rs, None);
        let table =
            |p: &Packet, e| attribute(None, &rs, &owners, p, 1, e).map(|a| a.decision.table);
        assert_eq!(
            table(&p, None).as_deref(),
            Some("filter"),
            "first by priority"
        );
        assert_eq!(table(&p, Some(Engine::XTables)).as_deref(), Some("filter"));
        assert_eq!(
            table(&p, Some(Engine::NfTables)).as_deref(),
            Some("inet fw")
        );
        assert_eq!(rs.engine_of("filter"), Some(Engine::XTables));
        // Only udp is dropped natively: a TCP packet freed by nf_tables
        // has no rule here.
        p.proto = 6;
        assert_eq!(table(&p, Some(Engine::NfTables)), None);
    }
}
