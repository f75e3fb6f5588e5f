//! The `check` and `explain` subcommands.

use std::process::ExitCode;

use anyhow::Context as _;

use netdrop_model::{
    Family, OwnerContext,
    check::{NodeFacts, PodCidrs},
    simulate_path,
};

use crate::{
    attribute::rules::reader::{self, NodeRules},
    cli::{CheckArgs, ExplainArgs, Output},
    explain::{
        self,
        check::{ExplainedFinding, check_node, is_failing},
    },
    netns::Netns,
};

/// Exit code of `check` when a finding of warning or worse exists (1 is for
/// errors, 2 for usage errors).
pub const EXIT_FINDINGS: u8 = 3;

pub fn run_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.cluster.cluster();
    let (rules, facts) = match &args.rules {
        Some(path) => {
            let rs = reader::read_file(path)?;
            let v6 = rs.family == Family::Ipv6;
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
            let facts = ns.facts(rules.split_backends())?;
            (rules, facts)
        }
    };
    for (_, rs) in rules.all() {
        for w in &rs.warnings {
            log::warn!("line {}: {}", w.line, w.message);
        }
    }
    let shape = netdrop_model::check::shape_of(
        rules.all().map(|(_, rs)| rs).next(),
        &facts,
        cluster.vxlan_port,
    );
    // No --pod-cidr: the rules' own (flannel's FLANNEL-FWD and masquerade
    // rules name its Network), else the node's routes, said as such.
    let mut cluster = cluster;
    let mut cidr_note = None;
    if cluster.pod_cidrs.is_empty() {
        let inferred = PodCidrs::infer(rules.all().map(|(_, rs)| rs), &facts, cluster.vxlan_port);
        cluster.pod_cidrs = inferred.nets();
        cidr_note = Some(crate::explain::check::pod_cidrs_note(&inferred));
    }
    let mut findings = check_node(rules.all().map(|(_, rs)| rs), &cluster, &facts);
    findings.sort_by(|a, b| {
        b.unmodelled
            .cmp(&a.unmodelled)
            .reverse()
            .then(b.severity.cmp(&a.severity))
    });
    if args.output != Output::Json {
        println!("rules read: {}", rules_read(&rules));
        if let Some(n) = &cidr_note {
            println!("{n}");
        }
        if !cluster.pod_cidrs.is_empty() {
            println!("probes: {}", probes_text(&shape));
        }
    }
    print_findings(&findings, args.output)?;
    Ok(if is_failing(&findings) {
        ExitCode::from(EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    })
}

/// The node `check` probed, in a line: which CNI's devices, how it knows.
fn probes_text(shape: &netdrop_model::check::NodeShape) -> String {
    let remote = match &shape.overlay {
        Some(o) => format!("other nodes' pods via {o}"),
        None => format!("other nodes' pods routed over {}", shape.underlay),
    };
    let port = match shape.overlay_port {
        Some(p) => format!("overlay udp {p} from other nodes"),
        None => "no UDP overlay port".to_owned(),
    };
    format!(
        "{} node ({}): pods on {}, {remote}, egress by {}, {port}, kubelet tcp 10250",
        explain::owner_name(shape.cni),
        shape.learned.as_str(),
        shape.pod_iface,
        shape.underlay
    )
}

/// What `check` read, side by side: every backend's tables with their
/// rule counts (`iptables-nft: filter (12), nat (40) · nftables: inet
/// firewalld (212)`), so a finding's absence means something.
fn rules_read(rules: &NodeRules) -> String {
    let mut by: Vec<(&str, Vec<String>)> = Vec::new();
    for (backend, rs) in rules.all() {
        for t in rs.tables.values() {
            let label = rs.backend_of(&t.name).unwrap_or(match backend {
                reader::Backend::File => "file",
                _ => "iptables",
            });
            let n: usize = t.chains.iter().map(|c| c.rules.len()).sum();
            let entry = format!("{} ({n})", t.name);
            match by.iter_mut().find(|(l, _)| *l == label) {
                // An inet table is in both families' rulesets: once.
                Some((_, v)) if v.contains(&entry) => {}
                Some((_, v)) => v.push(entry),
                None => by.push((label, vec![entry])),
            }
        }
    }
    if by.is_empty() {
        return "no tables (nothing filters packets here)".into();
    }
    by.iter()
        .map(|(l, v)| format!("{l}: {}", v.join(", ")))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn print_findings(findings: &[ExplainedFinding], output: Output) -> anyhow::Result<()> {
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
        let sev = f.severity.as_str().to_uppercase();
        match f.owner {
            Some(owner) => writeln!(
                out,
                "{sev} {} [{}{}]",
                f.id,
                owner.as_str(),
                if f.leftover { ", leftover" } else { "" }
            )?,
            None => writeln!(out, "{sev} {}", f.id)?,
        }
        writeln!(out, "  {}", f.explanation)?;
        if let (Some(r), Some(t), Some(c)) = (&f.rule, &f.table, &f.chain) {
            match f.backend {
                Some(b) => writeln!(out, "  rule: {t}/{c} {r} [{b}]")?,
                None => writeln!(out, "  rule: {t}/{c} {r}")?,
            }
        }
        for flow in &f.flows {
            writeln!(out, "  blocks: {flow}")?;
        }
        writeln!(out, "  fix: {}", f.fix)?;
        if f.unmodelled {
            writeln!(
                out,
                "  note: depends on matches netdrop does not model: {}",
                f.assumptions.join("; ")
            )?;
        }
    }
    Ok(())
}

pub fn run_explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let rulesets: Vec<(reader::Backend, netdrop_model::Ruleset)> = match &args.rules {
        Some(path) => vec![(reader::Backend::File, reader::read_file(path)?)],
        None => {
            crate::preflight::require_capabilities("explain")?;
            if let Some(n) = &args.netns {
                Netns::named(n)?;
            }
            let live =
                reader::read_live(args.netns.as_deref()).context("reading the live ruleset")?;
            for p in &live.problems {
                log::warn!("{p}");
            }
            if args.packet.src.is_ipv6() {
                live.v6
            } else {
                live.v4
            }
        }
    };
    let several = rulesets.len() > 1;
    for (backend, rs) in &rulesets {
        if several {
            println!("# the {backend:?} iptables backend's rules (and native nftables tables)");
        }
        explain_in(rs, &args)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `explain` of the packet through one ruleset: along its whole way
/// through the node, from the first hook it crosses to the last.
fn explain_in(rs: &netdrop_model::Ruleset, args: &ExplainArgs) -> anyhow::Result<()> {
    let owners = OwnerContext::new(rs, None);
    let cluster = args.cluster.cluster();
    let outcomes = simulate_path(rs, &args.packet);
    let answer = explain::answer::Answer::new(rs, &owners, &cluster, &args.packet, &outcomes);
    if args.output == Output::Json {
        println!("{}", answer.json());
    } else {
        print!("{}", answer.text());
    }
    Ok(())
}
