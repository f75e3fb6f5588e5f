//! The simulator: a packet walks the tables and chains of one hook the way
//! the kernel walks them, and comes out with a verdict and the path that led
//! to it. Where the outcome depends on something the model cannot know (a
//! random `statistic` branch, an ipset's members, an unmodelled match), the
//! walk forks and every branch is reported.

use std::net::IpAddr;

use serde::Serialize;

use crate::question::{Answer, Assumption, Condition, Fork, Question, Side};

use super::rules::*;
use crate::words::Hook;
pub use crate::words::Verdict;

/// A packet as it reaches a hook.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    pub hook: Hook,
    /// IP protocol number; 0 = unknown.
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// `None` = no input device (OUTPUT, POSTROUTING of local traffic).
    pub in_iface: Option<String>,
    /// `None` = no output device yet (PREROUTING, INPUT).
    pub out_iface: Option<String>,
    pub mark: u32,
    pub ct: CtState,
    /// Addresses of the node (for `addrtype LOCAL`); `None` = unknown.
    pub local_addrs: Option<Vec<IpAddr>>,
    pub icmp_type: Option<String>,
    /// Bridged (iptables runs through br_netfilter); `None` = routed.
    pub bridged: Option<BridgePorts>,
}

/// The bridge ports a bridged packet came in on and leaves by (`None` =
/// name unknown), as `-m physdev` sees them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BridgePorts {
    pub physdev_in: Option<String>,
    pub physdev_out: Option<String>,
}

impl Packet {
    pub fn new(hook: Hook, proto: u8, src: IpAddr, dst: IpAddr) -> Self {
        Self {
            hook,
            proto,
            src,
            dst,
            sport: None,
            dport: None,
            in_iface: None,
            out_iface: None,
            mark: 0,
            ct: CtState::New,
            local_addrs: None,
            icmp_type: None,
            bridged: None,
        }
    }
}

/// One rule (or chain policy) the packet matched on its way.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// The hook the packet was at: a native chain's name need not say it.
    pub hook: Hook,
    pub table: String,
    pub chain: String,
    /// 1-based position in the chain, as `iptables -L --line-numbers`; `None`
    /// for the chain's policy.
    pub rule_no: Option<usize>,
    /// Rule text as iptables-save prints it; the policy for a policy step.
    pub text: String,
    /// Line in the dump.
    #[serde(skip)]
    pub line: usize,
}

impl Step {
    pub fn is_policy(&self) -> bool {
        self.rule_no.is_none()
    }
}

/// One way the walk can end.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub verdict: Verdict,
    /// `REJECT --reject-with` type, for rejects.
    pub reject_with: Option<String>,
    /// Every rule the packet matched, in order; the last one decided.
    pub path: Vec<Step>,
    /// What this branch assumed (a statistic branch, an ipset membership...),
    /// in walk order.
    #[serde(skip)]
    pub assumptions: Vec<Assumption>,
    /// A match netdrop does not model influenced this branch.
    pub unmodelled: bool,
    /// The source NAT applied in POSTROUTING, if any (`MASQUERADE`, `SNAT ...`).
    pub snat: Option<String>,
    /// The destination NAT applied, if any.
    pub dnat: Option<String>,
    /// Where the walk ended: the hook that dropped the packet, or the last
    /// one it passed.
    pub hook: Hook,
    /// The packet as it was there (DNAT applied, marks set, its devices
    /// as that hook sees them).
    #[serde(skip)]
    pub packet: Packet,
    /// The hooks walked, in order, up to `hook`.
    pub hooks: Vec<Hook>,
}

impl Outcome {
    /// The rule or policy that decided the verdict.
    pub fn decider(&self) -> Option<&Step> {
        self.path.last()
    }
}

/// Outcomes that end alike (same verdict, decided at the same rule or
/// policy): one line of a summary, however many branches reach it.
#[derive(Clone, Debug)]
pub struct OutcomeGroup<'a> {
    /// The first outcome of the group (its path and NAT stand for all).
    pub first: &'a Outcome,
    /// Its index among the walk's outcomes.
    pub index: usize,
    /// How many branches end so.
    pub branches: usize,
}

/// The outcomes of one walk grouped by how they end, in walk order.
pub fn group_outcomes(outcomes: &[Outcome]) -> Vec<OutcomeGroup<'_>> {
    let mut out: Vec<OutcomeGroup<'_>> = Vec::new();
    for (index, o) in outcomes.iter().enumerate() {
        let same = |g: &&mut OutcomeGroup<'_>| {
            g.first.verdict == o.verdict && g.first.decider() == o.decider()
        };
        match out.iter_mut().find(same) {
            Some(g) => g.branches += 1,
            None => out.push(OutcomeGroup {
                first: o,
                index,
                branches: 1,
            }),
        }
    }
    out
}

/// What the outcomes of one walk hang on, split the way a user asks: the
/// questions whose answers change the verdict, and those that change only
/// how it ends (the rule that decides, source or destination NAT).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Depends {
    /// Questions whose answers change the verdict, in walk order.
    pub verdict: Vec<Question>,
    /// Questions that change how the packet ends but not the verdict.
    pub rest: Vec<Question>,
    /// For each outcome (same order), the indices of its assumptions that
    /// are ways of a fork that changes the verdict.
    pub deciding: Vec<Vec<usize>>,
}

impl Depends {
    /// The assumptions of outcome `i` its verdict hangs on: the ways of
    /// forks that change the verdict, and whatever is not a way of a fork
    /// (a match taken not to match, a walk cut short…). A fork whose every
    /// way ends in the same verdict is left out: that verdict is certain.
    pub fn essential(&self, i: usize, o: &Outcome) -> Vec<Assumption> {
        let deciding = self.deciding.get(i);
        o.assumptions
            .iter()
            .enumerate()
            .filter(|(k, a)| a.fork().is_none() || deciding.is_none_or(|d| d.contains(k)))
            .map(|(_, a)| a.clone())
            .collect()
    }
}

/// How one outcome ends, for telling forks apart: its verdict, the rule
/// that decided, its NAT.
fn ending(o: &Outcome) -> (Verdict, Option<&Step>, Option<&str>, Option<&str>) {
    (o.verdict, o.decider(), o.snat.as_deref(), o.dnat.as_deref())
}

/// One fork of a walk: the ways taken before it, and the outcomes reached
/// down each of its two ways (`(outcome, index of its assumption there)`).
struct ForkSeen<'a> {
    before: Vec<(Fork<'a>, bool)>,
    at: Fork<'a>,
    questions: Vec<Question>,
    yes: Vec<(usize, usize)>,
    no: Vec<(usize, usize)>,
}

/// Whether the outcomes down two ways reach the same set of `key`s.
fn same_ends<K: PartialEq>(
    a: &[(usize, usize)],
    b: &[(usize, usize)],
    key: impl Fn(usize) -> K,
) -> bool {
    let within = |x: &[(usize, usize)], y: &[(usize, usize)]| {
        x.iter()
            .all(|(i, _)| y.iter().any(|(j, _)| key(*i) == key(*j)))
    };
    within(a, b) && within(b, a)
}

/// Which questions change the verdict of a walk, and which only how it
/// ends. Each fork of the walk (a rule it could not decide, routing) is
/// looked at with the branches below it: it changes the verdict when the
/// verdicts reachable down its two ways differ (a fork under which every
/// way accepts changes nothing a user asked, however many NAT rules it
/// picks between).
pub fn depends(outcomes: &[Outcome]) -> Depends {
    let mut seen: Vec<ForkSeen<'_>> = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        let forks: Vec<(usize, Fork<'_>, bool)> = o
            .assumptions
            .iter()
            .enumerate()
            .filter_map(|(k, a)| a.fork().map(|(f, way)| (k, f, way)))
            .collect();
        for (n, (k, at, way)) in forks.iter().enumerate() {
            let before: Vec<(Fork<'_>, bool)> =
                forks[..n].iter().map(|(_, f, w)| (*f, *w)).collect();
            let pos = match seen.iter().position(|s| s.at == *at && s.before == before) {
                Some(p) => p,
                None => {
                    seen.push(ForkSeen {
                        before,
                        at: *at,
                        questions: o.assumptions[*k].questions(),
                        yes: Vec::new(),
                        no: Vec::new(),
                    });
                    seen.len() - 1
                }
            };
            let s = &mut seen[pos];
            if *way { &mut s.yes } else { &mut s.no }.push((i, *k));
        }
    }
    // A branch that assumed as much as it may lost the rest: its forks
    // are not all known, so every question is taken to matter.
    let complete = outcomes
        .iter()
        .all(|o| o.assumptions.len() < MAX_ASSUMPTIONS);
    let all_alike = outcomes.windows(2).all(|w| w[0].verdict == w[1].verdict);
    let mut out = Depends {
        deciding: vec![Vec::new(); outcomes.len()],
        ..Depends::default()
    };
    let push = |into: &mut Vec<Question>, qs: &[Question]| {
        for q in qs {
            if !into.contains(q) {
                into.push(q.clone());
            }
        }
    };
    for s in &seen {
        let changes_verdict = if complete {
            !same_ends(&s.yes, &s.no, |i| outcomes[i].verdict)
        } else {
            !all_alike
        };
        if changes_verdict {
            push(&mut out.verdict, &s.questions);
            for (i, k) in s.yes.iter().chain(&s.no) {
                out.deciding[*i].push(*k);
            }
        } else if !same_ends(&s.yes, &s.no, |i| ending(&outcomes[i])) {
            push(&mut out.rest, &s.questions);
        }
    }
    out.rest.retain(|q| !out.verdict.contains(q));
    out
}

/// More branches than this and the walk stops forking (and says so).
const MAX_BRANCHES: usize = 64;
const MAX_DEPTH: usize = 48;
/// Rule visits per walk: real rulesets need far fewer; a pathological one
/// (jump loops, which iptables-restore refuses but a file may contain) is
/// cut short instead of running forever.
const MAX_STEPS: usize = 20_000;

/// What one walk may still spend, and what it walks instead of the
/// ruleset's own.
struct Budget<'a> {
    branches: usize,
    steps: usize,
    /// A rule (table, chain, index) to walk as if it were not there.
    skip: Option<(&'a str, &'a str, usize)>,
    /// Chains walked in place of the ruleset's (a fix applied to a copy
    /// of only the chains it edits): (table, chain).
    over: &'a [(String, Chain)],
}

impl<'a> Budget<'a> {
    fn new(skip: Option<(&'a str, &'a str, usize)>, over: &'a [(String, Chain)]) -> Self {
        Self {
            branches: MAX_BRANCHES,
            steps: MAX_STEPS,
            skip,
            over,
        }
    }

    /// `table`'s chain `name`, or the one walked in its place.
    fn chain(&self, table: &'a Table, name: &str) -> Option<&'a Chain> {
        let over: &'a [(String, Chain)] = self.over;
        over.iter()
            .find(|(t, c)| *t == table.name && c.name == name)
            .map(|(_, c)| c)
            .or_else(|| table.chain(name))
    }
}

/// Assumptions kept per branch; more are summarised, so a pathological
/// ruleset cannot grow every cloned state without bound.
const MAX_ASSUMPTIONS: usize = 16;

impl State {
    fn assume(&mut self, what: Assumption) {
        if self.assumptions.len() < MAX_ASSUMPTIONS && !self.assumptions.contains(&what) {
            self.assumptions.push(what);
        }
    }
}

#[derive(Clone, Debug)]
struct State {
    pkt: Packet,
    path: Vec<Step>,
    assumptions: Vec<Assumption>,
    unmodelled: bool,
    snat: Option<String>,
    dnat: Option<String>,
    /// Unknowns this branch has decided (an ipset's membership, a `recent`
    /// list, an address type): the same question later on the path gets
    /// the same answer, so no branch assumes a set holds the packet at one
    /// rule and not at the next.
    facts: Vec<Answer>,
    /// The hooks walked so far.
    hooks: Vec<Hook>,
}

impl State {
    fn new(pkt: &Packet) -> Self {
        Self {
            pkt: pkt.clone(),
            path: Vec::new(),
            assumptions: Vec::new(),
            unmodelled: false,
            snat: None,
            dnat: None,
            facts: Vec::new(),
            hooks: Vec::new(),
        }
    }

    /// The packet arriving at `hook` of its way (`given`: as the user
    /// gave it): the devices that hook has.
    fn at_hook(&mut self, hook: Hook, given: &Packet) {
        self.hooks.push(hook);
        self.pkt.hook = hook;
        self.pkt.in_iface = match hook {
            Hook::Prerouting | Hook::Input | Hook::Forward => given.in_iface.clone(),
            Hook::Output | Hook::Postrouting => None,
        };
        self.pkt.out_iface = match hook {
            Hook::Forward | Hook::Output | Hook::Postrouting => given.out_iface.clone(),
            Hook::Prerouting | Hook::Input => None,
        };
    }

    fn decide(&mut self, fact: Answer) {
        if !self.facts.iter().any(|f| f.question == fact.question) {
            self.facts.push(fact);
        }
    }
}

enum Ending {
    Verdict(Verdict, Option<String>),
    Return,
}

enum Tri {
    Yes,
    No,
    /// Unknown: the match holds when the condition does. A condition that
    /// is one remembered answer ([`Question::remembered`]) the branch
    /// decides once.
    Maybe(Condition),
}

/// Walks `pkt` through every table of its hook; returns every possible
/// outcome (one, unless something could not be decided).
pub fn simulate(rs: &Ruleset, pkt: &Packet) -> Vec<Outcome> {
    simulate_inner(rs, pkt, None, None, &[])
}

/// Like [`simulate`], for a packet the kernel says `engine` freed: a drop
/// by the other engine's tables cannot have happened, so the walk goes on
/// past it (with an assumption saying so) to the rule that did drop it.
pub fn simulate_freed_by(rs: &Ruleset, pkt: &Packet, engine: Option<Engine>) -> Vec<Outcome> {
    simulate_inner(rs, pkt, None, engine, &[])
}

/// Like [`simulate`], with rule `index` (0-based) of `table`/`chain` left
/// out: what would happen without it, without copying the ruleset.
pub fn simulate_without(
    rs: &Ruleset,
    pkt: &Packet,
    table: &str,
    chain: &str,
    index: usize,
) -> Vec<Outcome> {
    simulate_inner(rs, pkt, Some((table, chain, index)), None, &[])
}

fn simulate_inner<'a>(
    rs: &'a Ruleset,
    pkt: &Packet,
    skip: Option<(&'a str, &'a str, usize)>,
    freed_by: Option<Engine>,
    over: &'a [(String, Chain)],
) -> Vec<Outcome> {
    let mut done = Vec::new();
    let mut budget = Budget::new(skip, over);
    let mut st = State::new(pkt);
    st.hooks.push(pkt.hook);
    let states = walk_hook(rs, pkt.hook, vec![st], &mut budget, freed_by, &mut done);
    done.extend(
        states
            .into_iter()
            .map(|st| finish(st, Verdict::Accept, None)),
    );
    done
}

/// The hooks a packet crosses to reach `pkt.hook` and leave the node, in
/// order: what [`simulate_path`] walks. `None` after PREROUTING: routing
/// decides (INPUT when the destination, DNAT applied, is the node's).
fn hooks_of(pkt: &Packet) -> &'static [Option<Hook>] {
    use Hook::*;
    match pkt.hook {
        Prerouting => &[Some(Prerouting), None],
        Input => &[Some(Prerouting), Some(Input)],
        Forward => &[Some(Prerouting), Some(Forward), Some(Postrouting)],
        Output => &[Some(Output), Some(Postrouting)],
        Postrouting if pkt.in_iface.is_some() => {
            &[Some(Prerouting), Some(Forward), Some(Postrouting)]
        }
        Postrouting => &[Some(Output), Some(Postrouting)],
    }
}

/// Like [`simulate`], with the chains of `over` ((table, chain)) walked in
/// place of the ruleset's own of that name: a fix applied to copies of
/// the chains it edits, the rest shared.
pub fn simulate_with(rs: &Ruleset, pkt: &Packet, over: &[(String, Chain)]) -> Vec<Outcome> {
    simulate_inner(rs, pkt, None, None, over)
}

/// Walks `pkt` along its whole way through the node: every hook it
/// crosses (see [`Packet::hook`]: the one it is said to be at), with what
/// each did carried into the next — raw's NOTRACK, mangle's marks, nat
/// PREROUTING's DNAT (which routing then sees: a Service's ClusterIP
/// DNATed to a pod is forwarded), and POSTROUTING's source NAT. Each
/// outcome says the hook it ended at. Where routing depends on whether
/// the destination is one of the node's addresses and the packet does not
/// say (`local`), the walk decides it once, as for `addrtype LOCAL`.
pub fn simulate_path(rs: &Ruleset, pkt: &Packet) -> Vec<Outcome> {
    let mut done = Vec::new();
    let mut budget = Budget::new(None, &[]);
    let mut states = vec![State::new(pkt)];
    for hook in hooks_of(pkt) {
        match hook {
            Some(h) => {
                for st in &mut states {
                    st.at_hook(*h, pkt);
                }
                states = walk_hook(rs, *h, states, &mut budget, None, &mut done);
            }
            None => {
                // Routing after PREROUTING: to the node, or through it.
                let mut routed = Vec::new();
                for st in states {
                    for (st, local) in route(st, pkt) {
                        let hooks: &[Hook] = if local {
                            &[Hook::Input]
                        } else {
                            &[Hook::Forward, Hook::Postrouting]
                        };
                        let mut these = vec![st];
                        for h in hooks {
                            for st in &mut these {
                                st.at_hook(*h, pkt);
                            }
                            these = walk_hook(rs, *h, these, &mut budget, None, &mut done);
                        }
                        routed.extend(these);
                    }
                }
                states = routed;
            }
        }
    }
    done.extend(
        states
            .into_iter()
            .map(|st| finish(st, Verdict::Accept, None)),
    );
    done
}

/// Where routing sends a packet leaving PREROUTING: `(state, local)` for
/// each way it can go (two when the node's addresses are not known and
/// nothing on the path decided whether the destination is one of them).
fn route(mut st: State, given: &Packet) -> Vec<(State, bool)> {
    let dst = st.pkt.dst;
    if let Some(local) = st.pkt.local_addrs.as_deref() {
        let local = local.contains(&dst) || dst.is_loopback();
        return vec![(st, local)];
    }
    if given.out_iface.is_some() || dst.is_multicast() {
        return vec![(st, false)];
    }
    let question = Question::AddressType {
        side: Side::Destination,
        addr: dst,
        types: vec!["LOCAL".into()],
    };
    if let Some(f) = st.facts.iter().find(|f| f.question == question) {
        let local = f.holds;
        return vec![(st, local)];
    }
    let mut other = st.clone();
    for (st, holds) in [(&mut st, true), (&mut other, false)] {
        st.decide(Answer {
            question: question.clone(),
            holds,
        });
        st.assume(Assumption::Routed { dst, local: holds });
    }
    vec![(st, true), (other, false)]
}

/// Every base chain of `hook`, iptables' and native nftables' alike, in
/// priority order, for each state still walking: the states that pass
/// the hook; those that end there go to `done`.
fn walk_hook<'a>(
    rs: &'a Ruleset,
    hook: Hook,
    mut states: Vec<State>,
    budget: &mut Budget<'a>,
    freed_by: Option<Engine>,
    done: &mut Vec<Outcome>,
) -> Vec<State> {
    // An accept ends one base chain, not the hook.
    for (table, chain, base) in rs.base_chains(hook) {
        let chain = budget.chain(table, &chain.name).unwrap_or(chain);
        let mut next = Vec::new();
        let other_engine = match (freed_by, rs.engine_of(&table.name)) {
            (Some(f), Some(t)) => f != t,
            _ => false,
        };
        for st in states {
            // nat sees only the first packet of a connection (not an
            // untracked one: raw's NOTRACK may have made it so on the way).
            if base.nat && st.pkt.ct != CtState::New {
                next.push(st);
                continue;
            }
            let before = st.path.len();
            for (ending, mut st) in walk_chain(table, chain, st, 0, budget) {
                match ending {
                    Ending::Verdict(Verdict::Accept, _) => next.push(st),
                    Ending::Verdict(_, _) if other_engine => {
                        let at = st.path.last().map(|s| s.text.clone()).unwrap_or_default();
                        st.path.truncate(before);
                        st.assumptions.push(Assumption::FreedElsewhere {
                            rule: at,
                            table: table.name.clone(),
                            chain: chain.name.clone(),
                            freed_by,
                        });
                        next.push(st);
                    }
                    Ending::Verdict(v, with) => done.push(finish(st, v, with)),
                    Ending::Return => {
                        let policy = chain.policy.unwrap_or(Policy::Accept);
                        let mut st = st;
                        // Record the policy only where it decides something.
                        if policy == Policy::Drop && !other_engine {
                            st.path.push(Step {
                                hook,
                                table: table.name.clone(),
                                chain: chain.name.clone(),
                                rule_no: None,
                                text: format!(":{} DROP", chain.name),
                                line: 0,
                            });
                            done.push(finish(st, Verdict::Drop, None));
                        } else {
                            next.push(st);
                        }
                    }
                }
            }
        }
        states = next;
    }
    states
}

fn finish(st: State, verdict: Verdict, reject_with: Option<String>) -> Outcome {
    Outcome {
        hook: st.pkt.hook,
        verdict,
        reject_with,
        path: st.path,
        assumptions: st.assumptions,
        unmodelled: st.unmodelled,
        snat: st.snat,
        dnat: st.dnat,
        packet: st.pkt,
        hooks: st.hooks,
    }
}

fn walk_chain<'a>(
    table: &'a Table,
    chain: &'a Chain,
    st: State,
    depth: usize,
    budget: &mut Budget<'a>,
) -> Vec<(Ending, State)> {
    let mut out = Vec::new();
    // (next rule index, state) still walking this chain.
    let mut work = vec![(0usize, st)];
    'work: while let Some((start, mut st)) = work.pop() {
        // A long chain visits only the rules that can match this
        // destination (DNAT may have changed it on the way here).
        let candidates = chain.candidates(st.pkt.dst);
        let mut i = start;
        while i < chain.rules.len() {
            if let Some(c) = &candidates {
                // Jump to the next candidate at or after i.
                match c.get(c.partition_point(|&x| x < i)) {
                    Some(&next) => i = next,
                    None => break,
                }
            }
            if budget.steps == 0 {
                st.unmodelled = true;
                st.assume(Assumption::WalkCutShort {
                    chain: chain.name.clone(),
                });
                break;
            }
            budget.steps -= 1;
            if budget
                .skip
                .is_some_and(|(t, c, k)| k == i && c == chain.name && t == table.name)
            {
                i += 1;
                continue;
            }
            let rule = &chain.rules[i];
            // A rule that changes nothing the walk models (LOG, a
            // counting rule, CT --helper) cannot change the verdict:
            // whether it matches is not worth a branch (Shorewall puts a
            // rate-limited LOG before each of its drops).
            if matches!(
                rule.target,
                Target::None | Target::Log | Target::Nflog | Target::Other { modelled: true, .. }
            ) {
                i += 1;
                continue;
            }
            match eval_rule(rule, &st.pkt, &st.facts) {
                Err(false) => {
                    i += 1;
                    continue;
                }
                Err(true) => {}
                Ok(when) => {
                    st.unmodelled |= when.iter().any(Condition::unmodelled);
                    let at = |matched, when: Vec<Condition>| Assumption::AtRule {
                        table: table.name.clone(),
                        chain: chain.name.clone(),
                        rule_no: i + 1,
                        matched,
                        when,
                    };
                    if budget.branches > 1 {
                        budget.branches -= 1;
                        // Branch where the rule does not match: one fact
                        // that alone decides it is then known the other way.
                        let mut other = st.clone();
                        if let [only] = when.as_slice()
                            && let Some(f) = only.as_fact()
                        {
                            other.decide(f.not());
                        }
                        other.assume(at(false, when.clone()));
                        work.push((i + 1, other));
                        for f in when.iter().filter_map(Condition::as_fact) {
                            st.decide(f.clone());
                        }
                        st.assume(at(true, when));
                    } else {
                        st.assume(Assumption::BranchLimit {
                            table: table.name.clone(),
                            chain: chain.name.clone(),
                            rule_no: i + 1,
                        });
                        i += 1;
                        continue;
                    }
                }
            }
            let step = Step {
                hook: st.pkt.hook,
                table: table.name.clone(),
                chain: chain.name.clone(),
                rule_no: Some(i + 1),
                text: rule.text.clone(),
                line: rule.line,
            };
            match &rule.target {
                Target::Accept => {
                    st.path.push(step);
                    out.push((Ending::Verdict(Verdict::Accept, None), st));
                    continue 'work;
                }
                Target::Drop => {
                    st.path.push(step);
                    out.push((Ending::Verdict(Verdict::Drop, None), st));
                    continue 'work;
                }
                Target::Reject { with } => {
                    st.path.push(step);
                    out.push((
                        Ending::Verdict(
                            Verdict::Reject,
                            Some(
                                with.clone()
                                    .unwrap_or_else(|| "icmp-port-unreachable".into()),
                            ),
                        ),
                        st,
                    ));
                    continue 'work;
                }
                Target::Return => {
                    out.push((Ending::Return, st));
                    continue 'work;
                }
                Target::Jump(name) | Target::Goto(name) => {
                    let goto = matches!(rule.target, Target::Goto(_));
                    let Some(sub) = budget.chain(table, name) else {
                        // A jump to a chain the dump never shows acts like an empty chain.
                        st.assumptions.push(Assumption::MissingChain {
                            chain: name.clone(),
                        });
                        i += 1;
                        continue;
                    };
                    // A jump into a chain already on the stack is a loop:
                    // the kernel refuses such a ruleset, a file may hold
                    // one; walking it would only spend the budget.
                    let looping = sub.name == chain.name
                        || st.path.iter().any(|s| {
                            s.rule_no.is_some() && s.chain == sub.name && s.table == table.name
                        });
                    if depth >= MAX_DEPTH || looping {
                        st.assume(if looping {
                            Assumption::JumpLoop {
                                chain: name.clone(),
                            }
                        } else {
                            Assumption::JumpDepth {
                                chain: name.clone(),
                            }
                        });
                        st.unmodelled = true;
                        i += 1;
                        continue;
                    }
                    // The path is the stack of jumps in force: a chain that
                    // returns leaves it again.
                    let base = st.path.len();
                    st.path.push(step);
                    for (ending, mut sub_st) in
                        walk_chain(table, sub, st.clone(), depth + 1, budget)
                    {
                        match ending {
                            Ending::Verdict(..) => out.push((ending, sub_st)),
                            Ending::Return => {
                                sub_st.path.truncate(base);
                                if goto {
                                    // goto: RETURN from the target returns from this chain too.
                                    out.push((Ending::Return, sub_st));
                                } else {
                                    work.push((i + 1, sub_st));
                                }
                            }
                        }
                    }
                    continue 'work;
                }
                Target::Mark(op) => {
                    st.pkt.mark = op.apply(st.pkt.mark);
                }
                Target::NoTrack => {
                    // raw's NOTRACK / CT --notrack: conntrack leaves the
                    // packet alone; later `--ctstate UNTRACKED` matches it
                    // and nat does not see it.
                    st.pkt.ct = CtState::Untracked;
                }
                Target::Dnat { to } => {
                    st.path.push(step);
                    apply_dnat(&mut st.pkt, to);
                    st.dnat = Some(to.clone());
                    out.push((Ending::Verdict(Verdict::Accept, None), st));
                    continue 'work;
                }
                Target::Snat { to } => {
                    st.path.push(step);
                    st.snat = Some(format!("SNAT {to}"));
                    out.push((Ending::Verdict(Verdict::Accept, None), st));
                    continue 'work;
                }
                Target::Masquerade => {
                    st.path.push(step);
                    st.snat = Some("MASQUERADE".into());
                    out.push((Ending::Verdict(Verdict::Accept, None), st));
                    continue 'work;
                }
                Target::Other {
                    modelled: false, ..
                } => {
                    st.unmodelled = true;
                    st.assume(Assumption::TargetUnmodelled {
                        table: table.name.clone(),
                        chain: chain.name.clone(),
                        rule_no: i + 1,
                        target: rule.target.name().to_string(),
                    });
                }
                Target::None | Target::Log | Target::Nflog | Target::Other { .. } => {}
            }
            i += 1;
        }
        out.push((Ending::Return, st));
    }
    out
}

fn apply_dnat(pkt: &mut Packet, to: &str) {
    // "10.224.1.14:80", "[fd00::1]:80", "10.0.0.1"; garbled values change nothing.
    let to = to.split_whitespace().next().unwrap_or("");
    if let Ok(sa) = to.parse::<std::net::SocketAddr>() {
        pkt.dst = sa.ip();
        pkt.dport = Some(sa.port());
    } else if let Ok(ip) = to.parse::<IpAddr>() {
        pkt.dst = ip;
    }
}

/// Whether `rule` could match `pkt` on what a kernel sample tells of it
/// (addresses, ports, protocol, devices, mark): matches on conntrack
/// state, which the walk only assumes (`NEW`), do not rule it out.
pub(crate) fn could_match(rule: &Rule, pkt: &Packet) -> bool {
    rule.matches.iter().all(|m| {
        matches!(m, Match::CtState { .. } | Match::TcpSyn { .. })
            || !matches!(eval_match(m, pkt, &[]), Tri::No)
    })
}

/// Whether `rule` matches (`Err(matches)`: decided), or what it needs
/// that the model cannot see (all of it).
fn eval_rule(rule: &Rule, pkt: &Packet, known: &[Answer]) -> Result<Vec<Condition>, bool> {
    let mut when = Vec::new();
    for m in &rule.matches {
        match eval_match(m, pkt, known) {
            Tri::No => return Err(false),
            Tri::Yes => {}
            Tri::Maybe(c) => when.push(c),
        }
    }
    if when.is_empty() { Err(true) } else { Ok(when) }
}

/// A match that holds when `question`'s answer is `holds`: decided if the
/// branch already answered it (a remembered question), else unknown.
fn ask(known: &[Answer], question: Question, holds: bool) -> Tri {
    let knew = question
        .remembered()
        .then(|| known.iter().find(|f| f.question == question))
        .flatten();
    match knew {
        Some(f) => tri(f.holds == holds, false),
        None => Tri::Maybe(Condition::Is(Answer { question, holds })),
    }
}

fn tri(b: bool, neg: bool) -> Tri {
    if b != neg { Tri::Yes } else { Tri::No }
}

fn eval_match(m: &Match, pkt: &Packet, known: &[Answer]) -> Tri {
    match m {
        Match::Src { neg, net } => tri(net.contains(&pkt.src), *neg),
        Match::Dst { neg, net } => tri(net.contains(&pkt.dst), *neg),
        Match::InIface { neg, pat } => iface(
            pkt.in_iface.as_deref(),
            pat,
            *neg,
            in_iface_exists(pkt.hook),
        ),
        Match::OutIface { neg, pat } => iface(
            pkt.out_iface.as_deref(),
            pat,
            *neg,
            out_iface_exists(pkt.hook),
        ),
        Match::Proto { neg, proto } => {
            if pkt.proto == 0 {
                ask(
                    known,
                    Question::Protocol {
                        proto: proto.to_string(),
                    },
                    !neg,
                )
            } else {
                tri(pkt.proto == *proto, *neg)
            }
        }
        Match::Fragment { neg } => tri(false, *neg),
        Match::Port { side, neg, ranges } => {
            if !matches!(pkt.proto, 6 | 17 | 132 | 136 | 0) {
                return Tri::No;
            }
            let hit =
                |p: Option<u16>| p.map(|p| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&p)));
            let r = match side {
                PortSide::Src => hit(pkt.sport),
                PortSide::Dst => hit(pkt.dport),
                PortSide::Any => match (hit(pkt.sport), hit(pkt.dport)) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
            };
            match r {
                Some(b) => tri(b, *neg),
                None => ask(known, Question::Port, !neg),
            }
        }
        Match::TcpSyn { neg } => tri(pkt.proto == 6 && pkt.ct == CtState::New, *neg),
        Match::IcmpType { neg, icmp_type } => match &pkt.icmp_type {
            Some(t) => tri(icmp_type_eq(t, icmp_type), *neg),
            None => ask(
                known,
                Question::IcmpType {
                    icmp_type: icmp_type.to_string(),
                },
                !neg,
            ),
        },
        Match::Comment(_) | Match::Limit { .. } => Tri::Yes,
        Match::Mark { neg, value, mask } => tri(pkt.mark & mask == *value, *neg),
        Match::CtState { neg, states } => {
            // DNAT/SNAT are conntrack *statuses* that --ctstate also accepts.
            let hit = states.contains(&pkt.ct);
            tri(hit, *neg)
        }
        Match::AddrType { src, dst, .. } => {
            let mut unknown = Vec::new();
            for (side, cond, addr) in [
                (Side::Source, src, pkt.src),
                (Side::Destination, dst, pkt.dst),
            ] {
                let Some(cond) = cond else { continue };
                let t = match addrtype_is(&cond.types, addr, pkt.local_addrs.as_deref()) {
                    Some(b) => tri(b, cond.neg),
                    None => ask(
                        known,
                        Question::AddressType {
                            side,
                            addr,
                            types: cond.types.clone(),
                        },
                        !cond.neg,
                    ),
                };
                match t {
                    Tri::No => return Tri::No,
                    Tri::Yes => {}
                    Tri::Maybe(c) => unknown.push(c),
                }
            }
            all_of(unknown)
        }
        Match::Recent(r) => {
            if r.set {
                // `--set` records the address and always matches.
                return tri(true, r.neg);
            }
            let (side, addr) = if r.dest {
                (Side::Destination, pkt.dst)
            } else {
                (Side::Source, pkt.src)
            };
            ask(
                known,
                Question::InRecentList {
                    name: r.name.to_string(),
                    side,
                    addr,
                },
                !r.neg,
            )
        }
        Match::Statistic { probability, every } => ask(
            known,
            match (probability, every) {
                (Some(p), _) => Question::Random { probability: *p },
                (_, Some(n)) => Question::EveryNth { every: *n },
                _ => Question::Statistic,
            },
            true,
        ),
        Match::Physdev {
            is_in,
            is_out,
            is_bridged,
            physdev_in,
            physdev_out,
        } => match &pkt.bridged {
            // Routed: only negated conditions hold (xt_physdev without
            // bridge info).
            None => {
                let any_true = [is_in, is_out, is_bridged]
                    .iter()
                    .any(|c| **c == Some(true));
                let named = [physdev_in, physdev_out]
                    .iter()
                    .any(|p| p.as_deref().is_some_and(|(neg, _)| !neg));
                if any_true || named { Tri::No } else { Tri::Yes }
            }
            // Bridged drops are told in FORWARD and POSTROUTING: both ports exist.
            Some(ports) => {
                let mut res = Tri::Yes;
                for want in [is_in, is_out, is_bridged].into_iter().flatten() {
                    if !*want {
                        return Tri::No;
                    }
                }
                for (cond, have) in [
                    (physdev_in, &ports.physdev_in),
                    (physdev_out, &ports.physdev_out),
                ] {
                    let Some((neg, pat)) = cond.as_deref() else {
                        continue;
                    };
                    match have {
                        Some(name) => {
                            if let Tri::No = tri(pat.matches(name), *neg) {
                                return Tri::No;
                            }
                        }
                        None => {
                            res = ask(
                                known,
                                Question::BridgePort {
                                    pattern: pat.0.to_string(),
                                },
                                !neg,
                            )
                        }
                    }
                }
                res
            }
        },
        Match::IpRange(r) => {
            let a = if r.dst { pkt.dst } else { pkt.src };
            if a.is_ipv4() != r.from.is_ipv4() {
                return Tri::No;
            }
            tri(r.from <= a && a <= r.to, r.neg)
        }
        Match::MacSource { neg, mac } => ask(
            known,
            Question::FromMac {
                mac: mac.to_string(),
            },
            !neg,
        ),
        Match::Set(set) => ask(
            known,
            Question::InIpset {
                name: set.name.to_string(),
                flags: set.flags.to_string(),
            },
            !set.neg,
        ),
        Match::OneOf { neg, options } => {
            let mut unknown = Vec::new();
            for o in options {
                match eval_match(o, pkt, known) {
                    Tri::Yes => return tri(true, *neg),
                    Tri::No => {}
                    Tri::Maybe(c) => unknown.push(c),
                }
            }
            if unknown.is_empty() {
                tri(false, *neg)
            } else {
                Tri::Maybe(Condition::AnyOf {
                    neg: *neg,
                    of: unknown,
                })
            }
        }
        Match::AllOf { options } => {
            let mut unknown = Vec::new();
            for o in options {
                match eval_match(o, pkt, known) {
                    Tri::No => return Tri::No,
                    Tri::Yes => {}
                    Tri::Maybe(c) => unknown.push(c),
                }
            }
            all_of(unknown)
        }
        Match::NfProto { neg, v6 } => tri(pkt.src.is_ipv6() == *v6, *neg),
        Match::Unmodelled { text } => ask(
            known,
            Question::Unmodelled {
                text: text.to_string(),
            },
            true,
        ),
    }
}

/// What holds when every one of `unknown` does: yes when there is
/// nothing unknown, the one condition when there is one (a remembered
/// answer stays one the branch decides), else all of them together.
fn all_of(mut unknown: Vec<Condition>) -> Tri {
    match unknown.len() {
        0 => Tri::Yes,
        1 => Tri::Maybe(unknown.remove(0)),
        _ => Tri::Maybe(Condition::AllOf(unknown)),
    }
}

fn in_iface_exists(h: Hook) -> bool {
    matches!(h, Hook::Prerouting | Hook::Input | Hook::Forward)
}

fn out_iface_exists(h: Hook) -> bool {
    matches!(h, Hook::Forward | Hook::Output | Hook::Postrouting)
}

fn iface(have: Option<&str>, pat: &IfacePattern, neg: bool, hook_has_one: bool) -> Tri {
    match have {
        Some(i) => tri(pat.matches(i), neg),
        // The hook has no such device: the kernel compares with "".
        None if !hook_has_one => tri(false, neg),
        None => Tri::Maybe(Condition::Is(Answer {
            question: Question::Interface {
                pattern: pat.0.to_string(),
            },
            holds: !neg,
        })),
    }
}

fn icmp_type_eq(a: &str, b: &str) -> bool {
    let norm = |s: &str| match s {
        "8" | "echo-request" | "128" => "echo-request".to_owned(),
        "0" | "echo-reply" | "129" => "echo-reply".to_owned(),
        other => other.to_owned(),
    };
    norm(a) == norm(b)
}

/// Whether `addr` has one of the address `types` of `-m addrtype` (the
/// kernel's route type of the address, `inet_addr_type`), knowing the
/// node's addresses `local`; `None` when that depends on what the model
/// does not know (the node's addresses, its routes).
fn addrtype_is(types: &[String], addr: IpAddr, local: Option<&[IpAddr]>) -> Option<bool> {
    // What the kernel answers without a route lookup, then the local table.
    let fixed = if is_broadcast(addr) || is_zeronet(addr) {
        Some("BROADCAST")
    } else if addr.is_multicast() {
        Some("MULTICAST")
    } else if addr.is_loopback() || local.is_some_and(|l| l.contains(&addr)) {
        Some("LOCAL")
    } else {
        None
    };
    let mut unknown = false;
    for t in types {
        let t = t.to_ascii_uppercase();
        let hit = match (t.as_str(), fixed) {
            // Obsolete types no address has.
            ("NAT" | "XRESOLVE" | "UNSPEC", _) => Some(false),
            (_, Some(f)) => Some(t == f),
            // Neither local (when the node's addresses are known),
            // multicast nor broadcast: a routed address, UNICAST (a
            // subnet's directed broadcast is taken for unicast: the model
            // has the node's addresses, not their prefixes). Whether a
            // route makes it blackhole, unreachable, prohibit, throw or
            // anycast instead, only the node's routes tell.
            ("LOCAL", None) => local.is_some().then_some(false),
            ("UNICAST", None) => local.is_some().then_some(true),
            // IPv4 has no anycast routes but ones made by hand in the
            // local table; IPv6's subnet-router anycast is the routes' say.
            ("ANYCAST", None) if addr.is_ipv4() => Some(false),
            ("MULTICAST" | "BROADCAST", None) => Some(false),
            _ => None,
        };
        match hit {
            Some(true) => return Some(true),
            Some(false) => {}
            None => unknown = true,
        }
    }
    if unknown { None } else { Some(false) }
}

/// `0.0.0.0/8` (IPv4's "this network"), which the kernel types BROADCAST.
fn is_zeronet(a: IpAddr) -> bool {
    matches!(a, IpAddr::V4(v) if v.octets()[0] == 0)
}

fn is_broadcast(a: IpAddr) -> bool {
    matches!(a, IpAddr::V4(v) if v.is_broadcast())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_ruleset;

    fn pkt(hook: Hook, src: &str, dst: &str) -> Packet {
        let mut p = Packet::new(hook, 6, src.parse().unwrap(), dst.parse().unwrap());
        p.dport = Some(80);
        p.sport = Some(40000);
        p
    }

    #[test]
    fn tables_run_in_the_kernels_priority_order() {
        // Every iptables table with every built-in chain: each hook's base
        // chains come in `enum nf_ip_hook_priorities` order (nat's INPUT
        // chain is source NAT, after filter).
        let mut text = String::new();
        for t in ["raw", "mangle", "nat", "filter", "security"] {
            text.push_str(&format!("*{t}\n"));
            for h in Hook::ALL {
                if iptables_priority(t, h).is_some() {
                    text.push_str(&format!(":{h} ACCEPT [0:0]\n"));
                }
            }
            text.push_str("COMMIT\n");
        }
        let all = parse_ruleset(&text).unwrap();
        let order = |h: Hook| -> Vec<&str> {
            all.base_chains(h)
                .iter()
                .map(|(t, _, _)| t.name.as_str())
                .collect()
        };
        assert_eq!(order(Hook::Prerouting), ["raw", "mangle", "nat"]);
        assert_eq!(order(Hook::Input), ["mangle", "filter", "security", "nat"]);
        assert_eq!(order(Hook::Forward), ["mangle", "filter", "security"]);
        assert_eq!(
            order(Hook::Output),
            ["raw", "mangle", "nat", "filter", "security"]
        );
        assert_eq!(order(Hook::Postrouting), ["mangle", "nat"]);
        let rs = parse_ruleset(
            "*nat\n:INPUT ACCEPT [0:0]\nCOMMIT\n*filter\n:FORWARD DROP [0:0]\nCOMMIT\n",
        )
        .unwrap();
        let nat = &rs.tables["nat"];
        assert_eq!(nat.family, Family::Ipv4);
        assert_eq!(
            nat.base_chain("INPUT"),
            Some(BaseChain {
                hook: Hook::Input,
                priority: 100,
                nat: true,
            })
        );
        assert_eq!(
            rs.tables["filter"]
                .base_chain("FORWARD")
                .map(|b| b.priority),
            Some(0)
        );
        assert_eq!(rs.tables["filter"].base_chain("KUBE-FORWARD"), None);
    }

    #[test]
    fn falls_to_drop_policy() {
        let rs = parse_ruleset("*filter\n:FORWARD DROP [0:0]\n:KUBE-FORWARD - [0:0]\n-A FORWARD -j KUBE-FORWARD\n-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT\nCOMMIT\n").unwrap();
        let mut p = pkt(Hook::Forward, "10.224.1.2", "10.224.2.2");
        p.in_iface = Some("flannel.1".into());
        p.out_iface = Some("cni0".into());
        let out = simulate(&rs, &p);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].verdict, Verdict::Drop);
        let d = out[0].decider().unwrap();
        assert!(d.is_policy());
        assert_eq!((d.table.as_str(), d.chain.as_str()), ("filter", "FORWARD"));
        // With the masquerade mark it is accepted by KUBE-FORWARD.
        p.mark = 0x4000;
        let out = simulate(&rs, &p);
        assert_eq!(out[0].verdict, Verdict::Accept);
        assert_eq!(out[0].decider().unwrap().rule_no, Some(1));
    }

    #[test]
    fn statistic_forks_every_endpoint_and_dnat_moves_the_packet() {
        let rs = parse_ruleset(concat!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-1 - [0:0]\n:KUBE-SEP-2 - [0:0]\n",
            "-A PREROUTING -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A\n",
            "-A KUBE-SVC-A -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-1\n",
            "-A KUBE-SVC-A -j KUBE-SEP-2\n",
            "-A KUBE-SEP-1 -p tcp -m tcp -j DNAT --to-destination 10.224.1.14:8080\n",
            "-A KUBE-SEP-2 -p tcp -m tcp -j DNAT --to-destination 10.224.2.16:8080\n",
            "COMMIT\n"
        ))
        .unwrap();
        let out = simulate(&rs, &pkt(Hook::Prerouting, "10.224.1.2", "10.96.0.10"));
        let mut dnats: Vec<_> = out.iter().filter_map(|o| o.dnat.clone()).collect();
        dnats.sort();
        assert_eq!(dnats, ["10.224.1.14:8080", "10.224.2.16:8080"]);
        assert!(out.iter().all(|o| o.verdict == Verdict::Accept));
    }

    #[test]
    fn physdev_matches_bridge_ports_of_bridged_packets_only() {
        let rs = parse_ruleset(concat!(
            "*filter\n:FORWARD ACCEPT [0:0]\n",
            "-A FORWARD -m physdev ! --physdev-is-bridged -j ACCEPT\n",
            "-A FORWARD -m physdev --physdev-in veth+ --physdev-out veth-b -j DROP\n",
            "COMMIT\n"
        ))
        .unwrap();
        let mut p = pkt(Hook::Forward, "10.224.9.2", "10.224.9.3");
        p.in_iface = Some("cni0".into());
        p.out_iface = Some("cni0".into());
        // Routed: no bridge ports, `! --physdev-is-bridged` holds.
        assert_eq!(simulate(&rs, &p)[0].decider().unwrap().rule_no, Some(1));
        p.bridged = Some(BridgePorts {
            physdev_in: Some("veth-a".into()),
            physdev_out: Some("veth-b".into()),
        });
        let out = simulate(&rs, &p);
        assert_eq!(out[0].verdict, Verdict::Drop);
        assert_eq!(out[0].decider().unwrap().rule_no, Some(2));
        // Another out port: neither rule.
        p.bridged.as_mut().unwrap().physdev_out = Some("veth-c".into());
        assert_eq!(simulate(&rs, &p)[0].verdict, Verdict::Accept);
        assert!(simulate(&rs, &p)[0].decider().is_none_or(|d| d.is_policy()));
        // Unknown port name: both outcomes, each with its assumption.
        p.bridged.as_mut().unwrap().physdev_out = None;
        let out = simulate(&rs, &p);
        assert_eq!(out.len(), 2, "{out:#?}");
    }

    #[test]
    fn goto_and_return_semantics() {
        let rs = parse_ruleset(concat!(
            "*filter\n:INPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n",
            "-A INPUT -g A\n-A INPUT -j DROP\n",
            "-A A -j B\n-A A -j RETURN\n",
            "-A B -p udp -j REJECT\n",
            "COMMIT\n"
        ))
        .unwrap();
        // tcp: B returns into A, A returns; goto means INPUT's DROP is skipped.
        let out = simulate(&rs, &pkt(Hook::Input, "192.0.2.2", "192.0.2.1"));
        assert_eq!(out[0].verdict, Verdict::Accept);
        let mut p = pkt(Hook::Input, "192.0.2.2", "192.0.2.1");
        p.proto = 17;
        let out = simulate(&rs, &p);
        assert_eq!(out[0].verdict, Verdict::Reject);
        assert_eq!(out[0].reject_with.as_deref(), Some("icmp-port-unreachable"));
        let chains: Vec<_> = out[0].path.iter().map(|s| s.chain.as_str()).collect();
        assert_eq!(chains, ["INPUT", "A", "B"]);
    }

    #[test]
    fn nat_is_skipped_for_established_packets() {
        let rs = parse_ruleset("*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.224.0.0/16 -j MASQUERADE\nCOMMIT\n").unwrap();
        let mut p = pkt(Hook::Postrouting, "10.224.1.2", "203.0.113.10");
        assert_eq!(simulate(&rs, &p)[0].snat.as_deref(), Some("MASQUERADE"));
        p.ct = CtState::Established;
        assert_eq!(simulate(&rs, &p)[0].snat, None);
    }

    #[test]
    fn long_chains_are_indexed_by_destination_with_the_same_answer() {
        let mut text = String::from(
            "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n-A INPUT -j KUBE-SERVICES\n",
        );
        for i in 0..200u32 {
            text.push_str(&format!(
                "-A KUBE-SERVICES -d 10.96.{}.{}/32 -p tcp -m tcp --dport 80 -j REJECT\n",
                i / 250,
                i % 250 + 1
            ));
            if i == 100 {
                text.push_str("-A KUBE-SERVICES -p udp -j DROP\n");
            }
        }
        text.push_str("COMMIT\n");
        let rs = parse_ruleset(&text).unwrap();
        let chain = rs.tables["filter"].chain("KUBE-SERVICES").unwrap();
        assert!(chain.dst_index.is_some());
        // A service address hits its own rule; others fall through.
        let out = simulate(&rs, &pkt(Hook::Input, "10.224.1.2", "10.96.0.150"));
        assert_eq!(out[0].verdict, Verdict::Reject);
        assert_eq!(out[0].decider().unwrap().rule_no, Some(151));
        let out = simulate(&rs, &pkt(Hook::Input, "10.224.1.2", "10.96.9.9"));
        assert_eq!(out[0].verdict, Verdict::Accept);
        // The unindexed rule between them is still visited in order.
        let mut p = pkt(Hook::Input, "10.224.1.2", "10.96.0.150");
        p.proto = 17;
        let out = simulate(&rs, &p);
        assert_eq!(out[0].decider().unwrap().rule_no, Some(102));
    }

    #[test]
    fn jump_loops_end_instead_of_running_forever() {
        // Every rule jumps back into the chain: 2^depth walks without a budget.
        let rs = parse_ruleset("*filter\n:INPUT ACCEPT [0:0]\n:A - [0:0]\n-A INPUT -j A\n-A A -j A\n-A A -j A\n-A A -j A\nCOMMIT\n").unwrap();
        let start = std::time::Instant::now();
        let out = simulate(&rs, &pkt(Hook::Input, "192.0.2.2", "192.0.2.1"));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert!(out.iter().all(|o| o.unmodelled));
    }

    #[test]
    fn unknown_ipset_forks_with_its_membership_as_the_assumption() {
        let rs = parse_ruleset(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m set --match-set BAD src -j DROP\nCOMMIT\n",
        )
        .unwrap();
        let out = simulate(&rs, &pkt(Hook::Input, "192.0.2.2", "192.0.2.1"));
        assert_eq!(out.len(), 2);
        // Modelled: only its contents are unknown, and each branch says
        // which way it took.
        assert!(out.iter().all(|o| !o.unmodelled));
        let drop = out.iter().find(|o| o.verdict == Verdict::Drop).unwrap();
        assert_eq!(drop.assumptions, [at(1, true, [ipset("BAD", true)])]);
        let accept = out.iter().find(|o| o.verdict == Verdict::Accept).unwrap();
        assert_eq!(accept.assumptions, [at(1, false, [ipset("BAD", true)])]);
    }

    /// The answer "the packet is (`holds`) in ipset `name`, by its source".
    fn ipset(name: &str, holds: bool) -> Condition {
        Condition::Is(Answer {
            question: Question::InIpset {
                name: name.into(),
                flags: "src".into(),
            },
            holds,
        })
    }

    /// Rule `rule_no` of filter's INPUT matched (or not) when `when`.
    fn at<const N: usize>(rule_no: usize, matched: bool, when: [Condition; N]) -> Assumption {
        Assumption::AtRule {
            table: "filter".into(),
            chain: "INPUT".into(),
            rule_no,
            matched,
            when: when.to_vec(),
        }
    }

    fn in_set(name: &str) -> Question {
        Question::InIpset {
            name: name.into(),
            flags: "src".into(),
        }
    }

    /// Verdicts of every outcome, sorted, with the policy steps named.
    fn verdicts(out: &[Outcome]) -> Vec<String> {
        let mut v: Vec<String> = out
            .iter()
            .map(|o| {
                format!(
                    "{:?} at {}",
                    o.verdict,
                    o.decider().map_or("end".into(), |s| s.text.clone())
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn branches_are_summarised_by_how_they_end() {
        // Two sets asked in two places each: branches that end alike are
        // one line, and what they hang on is the two sets, once each.
        let rs = parse_ruleset(
            "*filter\n:INPUT DROP [0:0]\n:A - [0:0]\n-A INPUT -m set --match-set ONE src -j A\n-A INPUT -m set --match-set TWO src -j A\n-A A -m set --match-set TWO src -j ACCEPT\n-A A -m set --match-set ONE src -j ACCEPT\nCOMMIT\n",
        )
        .unwrap();
        let out = simulate(&rs, &pkt(Hook::Input, "192.0.2.2", "192.0.2.1"));
        let groups = group_outcomes(&out);
        assert!(out.len() > groups.len(), "{out:#?}");
        assert_eq!(groups.iter().map(|g| g.branches).sum::<usize>(), out.len());
        assert_eq!(
            groups
                .iter()
                .map(|g| (g.first.verdict, g.first.decider().map(|s| s.text.clone())))
                .collect::<Vec<_>>(),
            [
                (Verdict::Drop, Some(":INPUT DROP".into())),
                (
                    Verdict::Accept,
                    Some("-A A -m set --match-set TWO src -j ACCEPT".into())
                ),
                (
                    Verdict::Accept,
                    Some("-A A -m set --match-set ONE src -j ACCEPT".into())
                ),
            ]
        );
        assert_eq!(depends(&out).verdict, [in_set("ONE"), in_set("TWO")]);
        // Asked the negated way first, a set is still one question, and
        // each branch says its answer plainly.
        let rs = parse_ruleset(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m set ! --match-set BLOCKED src -j ACCEPT\n-A INPUT -m set --match-set BLOCKED src -j DROP\nCOMMIT\n",
        )
        .unwrap();
        let out = simulate(&rs, &pkt(Hook::Input, "192.0.2.2", "192.0.2.1"));
        assert_eq!(depends(&out).verdict, [in_set("BLOCKED")]);
        let said: Vec<&Assumption> = out.iter().flat_map(|o| &o.assumptions).collect();
        // The rule asks "not in the set": matched when the set does not
        // hold the packet, and not matched when it does.
        assert_eq!(
            said,
            [
                &at(1, false, [ipset("BLOCKED", false)]),
                &at(1, true, [ipset("BLOCKED", false)])
            ]
        );
    }

    #[test]
    fn only_questions_that_change_the_verdict_are_what_it_depends_on() {
        // Every way accepts; they differ in which rule masquerades.
        let all_accept = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -m set --match-set MASQ src -j MASQUERADE\n-A POSTROUTING -m set --match-set LOOP src -j MASQUERADE\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n";
        let rs = parse_ruleset(all_accept).unwrap();
        let mut p = pkt(Hook::Forward, "10.224.1.2", "10.224.2.2");
        p.in_iface = Some("flannel.1".into());
        p.out_iface = Some("cni0".into());
        let out = simulate_path(&rs, &p);
        assert!(out.len() > 1 && out.iter().all(|o| o.verdict == Verdict::Accept));
        let d = depends(&out);
        assert!(d.verdict.is_empty(), "{d:?}");
        assert_eq!(d.rest, [in_set("MASQ"), in_set("LOOP")]);
        // Certain: no outcome's verdict hangs on an assumption.
        assert!(
            out.iter()
                .enumerate()
                .all(|(i, o)| d.essential(i, o).is_empty())
        );

        // A set above the fork that decides, which does not itself
        // change the verdict, and a set that does.
        let mixed = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -m set --match-set MASQ src -j MASQUERADE\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\n:MARKED - [0:0]\n-A FORWARD -m set --match-set NOTE src -j MARKED\n-A FORWARD -m set --match-set BAD src -j DROP\n-A MARKED -j RETURN\nCOMMIT\n";
        let rs = parse_ruleset(mixed).unwrap();
        let out = simulate_path(&rs, &p);
        let d = depends(&out);
        assert_eq!(d.verdict, [in_set("BAD")], "{d:?}");
        assert_eq!(d.rest, [in_set("MASQ")], "{d:?}");
        let (i, drop) = out
            .iter()
            .enumerate()
            .find(|(_, o)| o.verdict == Verdict::Drop)
            .unwrap();
        let essential = d.essential(i, drop);
        assert_eq!(essential.len(), 1, "{essential:?}");
        assert_eq!(essential[0].questions(), [in_set("BAD")]);
    }

    #[test]
    fn an_unknown_is_decided_once_along_a_path() {
        // The same set asked twice: in it at one rule and not at the next
        // is impossible, so there are two outcomes, not three.
        let rs = parse_ruleset(
            "*filter\n:INPUT ACCEPT [0:0]\n:CHECK - [0:0]\n-A INPUT -m set --match-set ALLOWED src -j CHECK\n-A INPUT -m set ! --match-set ALLOWED src -j DROP\n-A CHECK -m set ! --match-set ALLOWED src -j REJECT\nCOMMIT\n",
        )
        .unwrap();
        let out = simulate(&rs, &pkt(Hook::Input, "192.0.2.2", "192.0.2.1"));
        assert_eq!(
            verdicts(&out),
            [
                // In the set: CHECK returns (it rejects only what is not),
                // and the policy accepts.
                "Accept at end",
                "Drop at -A INPUT -m set ! --match-set ALLOWED src -j DROP"
            ],
            "{out:#?}"
        );
        // Two sets are two unknowns: all four ways stay possible.
        let rs = parse_ruleset(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m set --match-set A src -j ACCEPT\n-A INPUT -m set --match-set B src -j DROP\nCOMMIT\n",
        )
        .unwrap();
        assert_eq!(
            simulate(&rs, &pkt(Hook::Input, "192.0.2.2", "192.0.2.1")).len(),
            3
        );
    }

    #[test]
    fn recent_set_always_matches_and_a_check_is_one_unknown() {
        // The classic SSH brute-force guard.
        let rs = parse_ruleset(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -m recent --set --name SSH --rsource\n-A INPUT -p tcp --dport 22 -m recent --update --seconds 60 --hitcount 4 --name SSH --rsource -j DROP\n-A INPUT -p tcp --dport 22 -m recent --rcheck --name SSH -j LOG\nCOMMIT\n",
        )
        .unwrap();
        let mut p = pkt(Hook::Input, "192.0.2.2", "192.0.2.1");
        p.dport = Some(22);
        let out = simulate(&rs, &p);
        assert!(out.iter().all(|o| !o.unmodelled), "{out:#?}");
        assert_eq!(out.len(), 2, "{out:#?}");
        let drop = out.iter().find(|o| o.verdict == Verdict::Drop).unwrap();
        assert_eq!(drop.decider().unwrap().rule_no, Some(2));
        let ssh = Condition::Is(Answer {
            question: Question::InRecentList {
                name: "SSH".into(),
                side: Side::Source,
                addr: "192.0.2.2".parse().unwrap(),
            },
            holds: true,
        });
        assert_eq!(drop.assumptions, [at(2, true, [ssh.clone()])]);
        let accept = out.iter().find(|o| o.verdict == Verdict::Accept).unwrap();
        assert_eq!(
            accept.assumptions,
            [at(2, false, [ssh])],
            "rule 3 asks the same list: decided already"
        );
    }

    /// A Service's ClusterIP, DNATed in nat PREROUTING, marked in mangle,
    /// filtered in FORWARD, masqueraded in POSTROUTING.
    const PATH: &str = "*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -i eth0 -j MARK --set-xmark 0x100/0x100\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A PREROUTING -d 10.96.0.10/32 -p tcp --dport 80 -j DNAT --to-destination 10.224.2.2:8080\n-A POSTROUTING -s 10.224.0.0/16 ! -d 10.224.0.0/16 -j MASQUERADE\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n-A INPUT -p tcp --dport 8080 -j REJECT\n-A FORWARD -m mark --mark 0x100/0x100 -j ACCEPT\n-A FORWARD -d 10.224.2.2/32 -p tcp --dport 8080 -j DROP\nCOMMIT\n";

    #[test]
    fn a_dnated_packet_is_followed_into_forward_and_dies_there() {
        let rs = parse_ruleset(PATH).unwrap();
        let mut p = pkt(Hook::Forward, "10.224.1.2", "10.96.0.10");
        (p.proto, p.sport, p.dport) = (6, Some(40000), Some(80));
        p.in_iface = Some("cni0".into());
        p.out_iface = Some("flannel.1".into());
        let out = simulate_path(&rs, &p);
        assert_eq!(out.len(), 1, "{out:#?}");
        let o = &out[0];
        assert_eq!((o.verdict, o.hook), (Verdict::Drop, Hook::Forward));
        assert_eq!(o.dnat.as_deref(), Some("10.224.2.2:8080"));
        assert_eq!(o.packet.dst.to_string(), "10.224.2.2");
        assert_eq!(o.packet.dport, Some(8080));
        assert_eq!(o.hooks, [Hook::Prerouting, Hook::Forward]);
        let steps: Vec<_> = o
            .path
            .iter()
            .map(|s| (s.hook, s.chain.as_str(), s.rule_no))
            .collect();
        assert_eq!(
            steps,
            [
                (Hook::Prerouting, "PREROUTING", Some(1)),
                (Hook::Forward, "FORWARD", Some(2))
            ]
        );
        // The walk of FORWARD alone sees the ClusterIP, and nothing drops it
        // but the policy: the half path the whole one replaces.
        let half = simulate(&rs, &p);
        assert!(half[0].decider().unwrap().is_policy());
    }

    #[test]
    fn marks_and_source_nat_are_carried_along_the_path() {
        let rs = parse_ruleset(PATH).unwrap();
        let mut p = pkt(Hook::Forward, "10.224.1.2", "10.96.0.10");
        (p.proto, p.dport) = (6, Some(80));
        p.in_iface = Some("eth0".into());
        p.out_iface = Some("flannel.1".into());
        let out = simulate_path(&rs, &p);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].verdict, Verdict::Accept, "mangle's mark accepted it");
        assert_eq!(out[0].packet.mark, 0x100);
        assert_eq!(
            out[0].hooks,
            [Hook::Prerouting, Hook::Forward, Hook::Postrouting]
        );
        let mut egress = pkt(Hook::Forward, "10.224.1.2", "203.0.113.9");
        egress.proto = 17;
        egress.in_iface = Some("eth0".into());
        egress.out_iface = Some("eth0".into());
        let out = simulate_path(&rs, &egress);
        assert_eq!(out[0].snat.as_deref(), Some("MASQUERADE"), "{out:#?}");
    }

    #[test]
    fn routing_after_prerouting_goes_to_input_or_forward() {
        let rs = parse_ruleset(PATH).unwrap();
        let mut p = pkt(Hook::Prerouting, "192.0.2.2", "10.96.0.10");
        (p.proto, p.dport) = (6, Some(80));
        p.in_iface = Some("eth1".into());
        // The node's addresses known: the DNATed pod is not one of them.
        p.local_addrs = Some(vec!["192.0.2.1".parse().unwrap()]);
        let out = simulate_path(&rs, &p);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].verdict, out[0].hook),
            (Verdict::Drop, Hook::Forward)
        );
        // To the node's own address: INPUT, whose rule rejects port 8080.
        p.dst = "192.0.2.1".parse().unwrap();
        p.dport = Some(8080);
        let out = simulate_path(&rs, &p);
        assert_eq!(
            (out[0].verdict, out[0].hook),
            (Verdict::Reject, Hook::Input)
        );
        // Unknown addresses: both ways, each saying what it assumed.
        p.local_addrs = None;
        let out = simulate_path(&rs, &p);
        let mut ends: Vec<_> = out.iter().map(|o| (o.hook, o.verdict)).collect();
        ends.sort_by_key(|e| e.0);
        assert_eq!(
            ends,
            [
                (Hook::Input, Verdict::Reject),
                (Hook::Forward, Verdict::Drop)
            ]
        );
        assert!(out.iter().all(|o| {
            o.assumptions
                .iter()
                .any(|a| matches!(a, Assumption::Routed { .. }))
        }));
        assert_eq!(
            depends(&out).verdict.len(),
            1,
            "{:?}",
            depends(&out).verdict
        );
    }

    #[test]
    fn iprange_is_decided_and_a_mac_is_one_unknown() {
        let rs = parse_ruleset(
            "*filter\n:INPUT DROP [0:0]\n-A INPUT -m iprange --src-range 192.0.2.10-192.0.2.20 -j ACCEPT\n-A INPUT -m iprange ! --dst-range 192.0.2.1-192.0.2.1 -j DROP\n-A INPUT -m mac --mac-source 52:54:00:AA:BB:CC -j ACCEPT\n-A INPUT -p tcp -m mac ! --mac-source 52:54:00:aa:bb:cc -j REJECT\nCOMMIT\n",
        )
        .unwrap();
        let inside = simulate(&rs, &pkt(Hook::Input, "192.0.2.20", "192.0.2.1"));
        assert_eq!(inside.len(), 1);
        assert_eq!(inside[0].verdict, Verdict::Accept);
        assert_eq!(inside[0].decider().unwrap().rule_no, Some(1));
        let other_dst = simulate(&rs, &pkt(Hook::Input, "192.0.2.21", "192.0.2.9"));
        assert_eq!(other_dst[0].decider().unwrap().rule_no, Some(2));
        let mut p = pkt(Hook::Input, "192.0.2.21", "192.0.2.1");
        p.proto = 6;
        let out = simulate(&rs, &p);
        assert!(out.iter().all(|o| !o.unmodelled), "{out:#?}");
        // The MAC is asked once: accepted at #3, or rejected at #4; never
        // "not that MAC" at #3 and "that MAC" at #4 (the policy).
        let mut ends: Vec<_> = out
            .iter()
            .map(|o| (o.verdict, o.decider().unwrap().rule_no))
            .collect();
        ends.sort_by_key(|e| e.1);
        assert_eq!(
            ends,
            [(Verdict::Accept, Some(3)), (Verdict::Reject, Some(4))]
        );
    }

    #[test]
    fn notrack_makes_the_packet_untracked_and_skips_nat() {
        let rs = parse_ruleset(
            "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p udp --dport 8472 -j NOTRACK\n-A PREROUTING -p udp --dport 8473 -j CT --notrack\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p udp -j DNAT --to-destination 10.224.1.9\nCOMMIT\n",
        )
        .unwrap();
        for port in [8472, 8473] {
            let mut p = pkt(Hook::Prerouting, "192.0.2.2", "192.0.2.1");
            p.proto = 17;
            p.dport = Some(port);
            let out = simulate(&rs, &p);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].dnat, None, "untracked: nat never sees it");
        }
        // mangle runs after raw on the same hook: it sees the packet
        // untracked.
        let rs = parse_ruleset(
            "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p udp --dport 8472 -j NOTRACK\nCOMMIT\n*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m conntrack --ctstate UNTRACKED -j DROP\nCOMMIT\n",
        )
        .unwrap();
        let mut p = pkt(Hook::Prerouting, "192.0.2.2", "192.0.2.1");
        p.proto = 17;
        p.dport = Some(8472);
        assert_eq!(
            verdicts(&simulate(&rs, &p)),
            ["Drop at -A PREROUTING -m conntrack --ctstate UNTRACKED -j DROP"]
        );
        p.dport = Some(9000);
        assert_eq!(verdicts(&simulate(&rs, &p)), ["Accept at end"]);
    }

    #[test]
    fn address_types_follow_the_kernels_route_types() {
        let rs = parse_ruleset(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m addrtype --dst-type UNICAST -j DROP\n-A INPUT -m addrtype --dst-type BLACKHOLE -j REJECT\nCOMMIT\n",
        )
        .unwrap();
        let with_local = |dst: &str| {
            let mut p = pkt(Hook::Input, "192.0.2.2", dst);
            p.local_addrs = Some(vec!["192.0.2.1".parse().unwrap()]);
            simulate(&rs, &p)
        };
        // A node's own address is LOCAL, not UNICAST, and no route makes
        // it a blackhole.
        assert_eq!(verdicts(&with_local("192.0.2.1")), ["Accept at end"]);
        // A routed one is UNICAST.
        let out = with_local("203.0.113.5");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].verdict, Verdict::Drop);
        // Broadcast and multicast are neither, certainly.
        assert_eq!(verdicts(&with_local("255.255.255.255")), ["Accept at end"]);
        assert_eq!(verdicts(&with_local("224.0.0.1")), ["Accept at end"]);
        // Without the node's addresses, UNICAST is unknown (it may be
        // one of them); a blackhole is always the routes' say.
        let out = simulate(&rs, &pkt(Hook::Input, "192.0.2.2", "203.0.113.5"));
        assert_eq!(out.len(), 3, "{out:#?}");
        assert!(out.iter().all(|o| !o.assumptions.is_empty()));
    }
}
