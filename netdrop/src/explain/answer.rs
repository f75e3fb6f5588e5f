//! `explain`'s answer for one packet walked along its whole way: the
//! verdict first, then what it hangs on. When every way the walk can take
//! ends in the same verdict, that verdict is said as certain in the first
//! line, and what still varies (the rule that decides, NAT) is said after
//! it, with the questions it varies with. When ways end differently, the
//! first line names only the questions that change the verdict, and the
//! ways are listed by verdict before each is told in full.

use std::fmt::Write as _;

use netdrop_model::{
    Decision, Outcome, OwnerContext, Packet, Ruleset, Verdict,
    check::Cluster,
    decision::step_notation,
    question::Assumption,
    simulate::{Depends, OutcomeGroup, depends, group_outcomes},
};

use super::{Explanation, explain, flow_text, unknowns};

/// Lines per verdict in the summary of ways that end differently.
const MAX_LINES: usize = 8;

/// A walk's outcomes with what explains them.
pub struct Answer<'a> {
    pkt: &'a Packet,
    outcomes: &'a [Outcome],
    groups: Vec<OutcomeGroup<'a>>,
    depends: Depends,
    /// Each group's explanation: its drop's, `None` for a way that passes.
    explained: Vec<Option<Explanation>>,
}

impl<'a> Answer<'a> {
    /// `outcomes`: `simulate_path(rs, pkt)`.
    pub fn new(
        rs: &Ruleset,
        owners: &OwnerContext,
        cluster: &Cluster,
        pkt: &'a Packet,
        outcomes: &'a [Outcome],
    ) -> Self {
        let groups = group_outcomes(outcomes);
        // Each drop is explained as the packet was where it died (DNAT
        // applied, its devices at that hook).
        let explained = groups
            .iter()
            .map(|g| {
                let o = g.first;
                o.verdict
                    .is_drop()
                    .then(|| explain(rs, owners, cluster, &o.packet, Decision::of(rs, owners, o)))
            })
            .collect();
        Self {
            pkt,
            outcomes,
            depends: depends(outcomes),
            groups,
            explained,
        }
    }

    /// The verdicts the ways end in, each once, in walk order.
    fn verdicts(&self) -> Vec<Verdict> {
        let mut v: Vec<Verdict> = Vec::new();
        for g in &self.groups {
            if !v.contains(&g.first.verdict) {
                v.push(g.first.verdict);
            }
        }
        v
    }

    /// What outcome `i`'s verdict hangs on, in words.
    fn deciding_words(&self, i: usize) -> Vec<String> {
        unknowns::assumptions(&self.depends.essential(i, &self.outcomes[i]))
    }

    /// The ways of forks that change how `o` ends but not its verdict, in
    /// words.
    fn varying_words(&self, o: &Outcome) -> Vec<String> {
        let varies = |a: &Assumption| {
            a.fork().is_some() && a.questions().iter().any(|q| self.depends.rest.contains(q))
        };
        o.assumptions
            .iter()
            .filter(|a| varies(a))
            .map(unknowns::assumption)
            .collect()
    }

    /// What differs between the ways that end in the same verdict.
    fn what_varies(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let Some(a) = self.groups.first().map(|g| g.first) else {
            return out;
        };
        let os = || self.groups.iter().map(|g| g.first);
        if os().any(|o| o.decider() != a.decider()) {
            out.push("the rule that decides");
        }
        if os().any(|o| o.snat != a.snat) {
            out.push("source NAT");
        }
        if os().any(|o| o.dnat != a.dnat) {
            out.push("destination NAT");
        }
        out
    }

    /// The answer as `explain` prints it.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let flow = flow_text(self.pkt);
        let hook = self.pkt.hook.as_str();
        let verdicts = self.verdicts();
        let forked = self.groups.len() > 1 || !self.depends.rest.is_empty();
        if verdicts.len() <= 1 {
            let v = verdicts.first().map_or("ACCEPT", |v| v.as_str());
            let _ = writeln!(out, "{hook} {flow}: {v}");
            if forked {
                let varies = self.what_varies();
                let _ = writeln!(
                    out,
                    "  certain: every way the walk can take ends so{}",
                    if varies.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; what netdrop cannot see changes only {}",
                            varies.join(" and ")
                        )
                    }
                );
                if !self.depends.rest.is_empty() {
                    let _ = writeln!(
                        out,
                        "  varies with: {}",
                        unknowns::questions(&self.depends.rest).join("; ")
                    );
                }
            }
            // Ways that all pass differ only in NAT and the rule that
            // decides: one line each. Ways that all drop are each told in
            // full: each has its rule, its why and its fix.
            if forked && verdicts.first().is_none_or(|v| !v.is_drop()) {
                for g in &self.groups {
                    let when = self.varying_words(g.first);
                    let _ = writeln!(
                        out,
                        "  - {}{}{}",
                        ending_words(g.first),
                        more(g.branches),
                        if when.is_empty() {
                            String::new()
                        } else {
                            format!(", when {}", when.join("; "))
                        }
                    );
                }
                return out;
            }
            for (n, g) in self.groups.iter().enumerate() {
                if forked {
                    let when = self.varying_words(g.first);
                    let _ = writeln!(
                        out,
                        "when {}{}:",
                        if when.is_empty() {
                            "nothing else decides".to_owned()
                        } else {
                            when.join("; ")
                        },
                        more(g.branches)
                    );
                }
                self.way(&mut out, n, forked);
            }
            return out;
        }
        let _ = writeln!(
            out,
            "{hook} {flow}: {}, depending on: {}",
            or_list(&verdicts.iter().map(|v| v.as_str()).collect::<Vec<_>>()),
            unknowns::questions(&self.depends.verdict).join("; ")
        );
        // Every way by verdict, each said by what its verdict hangs on
        // (two ways to the same end on different answers are two lines).
        for v in &verdicts {
            let mut lines: Vec<String> = Vec::new();
            for (i, o) in self.outcomes.iter().enumerate() {
                if o.verdict != *v {
                    continue;
                }
                let when = self.deciding_words(i);
                let line = format!(
                    "  {} {}{}",
                    v.as_str(),
                    place(o),
                    if when.is_empty() {
                        String::new()
                    } else {
                        format!(", when {}", when.join("; "))
                    }
                );
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
            let shown = lines.len().min(MAX_LINES);
            for line in &lines[..shown] {
                let _ = writeln!(out, "{line}");
            }
            if lines.len() > shown {
                let _ = writeln!(
                    out,
                    "  {} in {} more ways (see --output json)",
                    v.as_str(),
                    lines.len() - shown
                );
            }
        }
        if !self.depends.rest.is_empty() {
            let _ = writeln!(
                out,
                "  not changing the verdict, {} varies with: {}",
                self.what_varies().join(" and "),
                unknowns::questions(&self.depends.rest).join("; ")
            );
        }
        for (n, g) in self.groups.iter().enumerate() {
            let all = unknowns::assumptions(&g.first.assumptions);
            let _ = writeln!(
                out,
                "when {}{}:",
                if all.is_empty() {
                    "nothing else decides".to_owned()
                } else {
                    all.join("; ")
                },
                more(g.branches)
            );
            self.way(&mut out, n, true);
        }
        out
    }

    /// One way told in full: the verdict, the hooks, the rules it
    /// matched, NAT, and for a drop whose rule it was, why, and the fix.
    /// Group `n`, that is.
    fn way(&self, out: &mut String, n: usize, verdict_line: bool) {
        let o = self.groups[n].first;
        let flow = flow_text(self.pkt);
        if verdict_line {
            let _ = writeln!(
                out,
                "{} {flow}: {}",
                self.pkt.hook.as_str(),
                o.verdict.as_str()
            );
        }
        let _ = writeln!(
            out,
            "  way: {} ({} in {})",
            o.hooks
                .iter()
                .map(|h| h.as_str())
                .collect::<Vec<_>>()
                .join(" → "),
            match o.verdict {
                Verdict::Accept => "passed, last",
                Verdict::Reject => "rejected",
                _ => "dropped",
            },
            o.hook.as_str()
        );
        for s in &o.path {
            let _ = writeln!(out, "  {} {}", s.hook.as_str(), step_notation(s));
        }
        if let Some(d) = &o.dnat {
            let _ = writeln!(out, "  DNAT to {d}");
        }
        if let Some(s) = &o.snat {
            let _ = writeln!(out, "  source NAT: {s}");
        }
        if let Some(e) = &self.explained[n] {
            let _ = writeln!(
                out,
                "  owner: {}{}",
                e.decision.owner.as_str(),
                if e.decision.leftover {
                    " (leftover)"
                } else {
                    ""
                }
            );
            let _ = writeln!(out, "  why: {}", e.explanation);
            let _ = writeln!(out, "  fix: {}", e.fix);
        }
    }

    /// The answer as `explain --output json` prints it. `depends_on`:
    /// the questions that change the verdict; `varies_with`: those that
    /// change only how it ends; each drop and accept says `when`: what its
    /// verdict hangs on.
    pub fn json(&self) -> serde_json::Value {
        let verdicts = self.verdicts();
        let drops: Vec<serde_json::Value> = self
            .groups
            .iter()
            .zip(&self.explained)
            .filter_map(|(g, e)| {
                let mut v = serde_json::to_value(e.as_ref()?).unwrap_or_default();
                v["when"] = serde_json::json!(self.deciding_words(g.index));
                Some(v)
            })
            .collect();
        let accepts: Vec<serde_json::Value> = self
            .groups
            .iter()
            .filter(|g| g.first.verdict == Verdict::Accept)
            .map(|g| {
                let o = g.first;
                serde_json::json!({
                    "path": o.path.iter().map(step_notation).collect::<Vec<_>>(),
                    "hooks": o.hooks,
                    "assumptions": unknowns::assumptions(&o.assumptions),
                    "when": self.deciding_words(g.index),
                    "dnat": o.dnat,
                    "snat": o.snat,
                })
            })
            .collect();
        serde_json::json!({
            "hook": self.pkt.hook.as_str(),
            "flow": flow_text(self.pkt),
            "verdict": match verdicts.as_slice() {
                [] => "ACCEPT",
                [one] => one.as_str(),
                _ => "DEPENDS",
            },
            "depends_on": unknowns::questions(&self.depends.verdict),
            "varies_with": unknowns::questions(&self.depends.rest),
            "branches": self.outcomes.len(),
            "drops": drops,
            "accepts": accepts,
        })
    }
}

/// How a passing way ends, in a few words: its hooks and NAT, and the
/// rule that did it.
fn ending_words(o: &Outcome) -> String {
    let by = |o: &Outcome| {
        o.decider()
            .and_then(|s| {
                s.rule_no
                    .map(|n| format!(" by {}/{} #{n}", s.table, s.chain))
            })
            .unwrap_or_default()
    };
    let hooks = o
        .hooks
        .iter()
        .map(|h| h.as_str())
        .collect::<Vec<_>>()
        .join(" → ");
    let nat = match (&o.dnat, &o.snat) {
        (Some(d), Some(s)) => format!("DNAT to {d}, source NAT {s}{}", by(o)),
        (Some(d), None) => format!("DNAT to {d}{}", by(o)),
        (None, Some(s)) => format!("source NAT {s}{}", by(o)),
        (None, None) => "no NAT".to_owned(),
    };
    format!("{} {hooks}, {nat}", o.verdict.as_str())
}

/// `(and 2 more branches ending so)`, or nothing for one branch.
fn more(branches: usize) -> String {
    match branches {
        1 => String::new(),
        n => format!(
            " (and {} more branch{} ending so)",
            n - 1,
            if n == 2 { "" } else { "es" }
        ),
    }
}

/// Where a way ended: the rule or policy that decided, or the hook it
/// passed last.
fn place(o: &Outcome) -> String {
    match o.decider() {
        Some(s) if o.verdict.is_drop() => format!("at {}", step_notation(s)),
        _ => format!("(passed, last in {})", o.hook.as_str()),
    }
}

/// `DROP or ACCEPT`, `DROP, REJECT or ACCEPT`.
fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}
