//! The `check` and `explain` subcommands.

use std::process::ExitCode;

use anyhow::Context as _;

use super::{
    Context, Explanation,
    check::{self, Finding, NodeFacts},
};
use crate::{
    attribute::{
        OwnerContext,
        packet::parse_packet,
        reader::{self, NodeRules},
        simulate::{Verdict, simulate},
    },
    cli::{CheckArgs, ExplainArgs, Output},
    decode::netns::Netns,
};

/// Exit code of `check` when a finding of warning or worse exists (1 is for
/// errors, 2 for usage errors).
pub const EXIT_FINDINGS: u8 = 3;

pub fn run_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let ctx = Context::new(args.pod_cidrs.clone());
    let (rules, facts) = match &args.rules {
        Some(path) => {
            let rs = reader::read_file(path)?;
            let v6 = rs.family == crate::attribute::rules::Family::Ipv6;
            let mut node = NodeRules::default();
            let entry = (reader::Backend::File, rs);
            if v6 {
                node.v6.push(entry)
            } else {
                node.v4.push(entry)
            }
            (node, NodeFacts::default())
        }
        None => {
            crate::preflight::require_capabilities("check")?;
            let ns = match &args.netns {
                Some(n) => Netns::named(n)?,
                None => Netns::own()?,
            };
            let rules =
                reader::read_live(args.netns.as_deref()).context("reading the live ruleset")?;
            let facts = live_facts(&ns, &rules)?;
            (rules, facts)
        }
    };
    let mut findings: Vec<Finding> = Vec::new();
    for (_, rs) in rules.v4.iter().chain(rules.v6.iter()) {
        for w in &rs.warnings {
            log::warn!("line {}: {}", w.line, w.message);
        }
        findings.extend(check::check(rs, &ctx, &facts));
    }
    findings.extend(check::node_findings(&facts, &ctx));
    findings.sort_by(|a, b| {
        b.detail
            .unmodelled
            .cmp(&a.detail.unmodelled)
            .reverse()
            .then(b.severity.cmp(&a.severity))
    });
    print_findings(&findings, args.output)?;
    Ok(if check::is_failing(&findings) {
        ExitCode::from(EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    })
}

/// Interfaces and sysctls of a live namespace.
pub fn live_facts(ns: &Netns, rules: &NodeRules) -> anyhow::Result<NodeFacts> {
    let interfaces: Vec<String> = ns.interfaces()?.into_values().collect();
    let (ip_forward, br_nf) = ns.run_in(|| {
        let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim() == "1");
        (
            read("/proc/sys/net/ipv4/ip_forward"),
            // Missing file: br_netfilter is not loaded, bridged traffic skips iptables.
            Some(read("/proc/sys/net/bridge/bridge-nf-call-iptables").unwrap_or(false)),
        )
    })?;
    Ok(NodeFacts {
        interfaces: Some(interfaces),
        ip_forward,
        bridge_nf_call_iptables: br_nf,
        split_backends: rules.split_backends(),
    })
}

fn print_findings(findings: &[Finding], output: Output) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        for f in findings {
            serde_json::to_writer(&mut out, f)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    if findings.is_empty() {
        writeln!(
            out,
            "no findings: nothing in these rules blocks pod traffic"
        )?;
    }
    for f in findings {
        let sev = format!("{:?}", f.severity).to_uppercase();
        match f.rule_owner() {
            Some(owner) => writeln!(
                out,
                "{sev} {} [{}{}]",
                f.id,
                owner.as_str(),
                if f.detail.leftover { ", leftover" } else { "" }
            )?,
            None => writeln!(out, "{sev} {}", f.id)?,
        }
        writeln!(out, "  {}", f.detail.explanation)?;
        if let Some(r) = &f.detail.rule {
            writeln!(out, "  rule: {}/{} {r}", f.detail.table, f.detail.chain)?;
        }
        for flow in &f.flows {
            writeln!(out, "  blocks: {flow}")?;
        }
        writeln!(out, "  fix: {}", f.detail.fix)?;
        if f.detail.unmodelled {
            writeln!(
                out,
                "  note: depends on matches netdrop does not model: {}",
                f.detail.assumptions.join("; ")
            )?;
        }
    }
    Ok(())
}

pub fn run_explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let rs = reader::read_file(&args.rules)?;
    let pkt = parse_packet(&args.packet)?;
    let owners = OwnerContext::new(&rs, None);
    let ctx = Context::new(args.pod_cidrs.clone());
    let outcomes = simulate(&rs, &pkt);
    let drops: Vec<Explanation> = outcomes
        .iter()
        .filter(|o| o.verdict.is_drop())
        .map(|o| super::explain_outcome(&rs, &owners, &ctx, &pkt, o))
        .collect();
    let flow = super::flow_text(&pkt);
    if args.output == Output::Json {
        let accepted: Vec<_> = outcomes
            .iter()
            .filter(|o| o.verdict == Verdict::Accept)
            .collect();
        let v = serde_json::json!({
            "hook": pkt.hook.as_str(),
            "flow": flow,
            "verdict": if drops.is_empty() { "ACCEPT" } else if accepted.is_empty() { drops[0].verdict.as_str() } else { "DEPENDS" },
            "drops": drops,
            "accepts": accepted.iter().map(|o| serde_json::json!({"path": o.path, "assumptions": o.assumptions, "dnat": o.dnat, "snat": o.snat})).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    for (i, o) in outcomes.iter().enumerate() {
        if outcomes.len() > 1 {
            println!(
                "branch {} of {}: {}",
                i + 1,
                outcomes.len(),
                o.assumptions.join("; ")
            );
        }
        println!("{} {flow}: {}", pkt.hook.as_str(), o.verdict.as_str());
        for s in &o.path {
            match s.rule_no {
                Some(n) => println!("  {}/{} #{n}: {}", s.table, s.chain, s.text),
                None => println!("  {}/{} policy DROP", s.table, s.chain),
            }
        }
        if let Some(d) = &o.dnat {
            println!("  DNAT to {d}");
        }
        if let Some(s) = &o.snat {
            println!("  source NAT: {s}");
        }
        if o.verdict.is_drop() {
            let e = super::explain_outcome(&rs, &owners, &ctx, &pkt, o);
            println!(
                "  owner: {}{}",
                e.owner.as_str(),
                if e.leftover { " (leftover)" } else { "" }
            );
            println!("  why: {}", e.explanation);
            println!("  fix: {}", e.fix);
        }
    }
    Ok(ExitCode::SUCCESS)
}
