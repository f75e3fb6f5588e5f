//! `check`'s findings in words: the model finds them
//! ([`netdrop_model::check`]), this module says what each one means and
//! the command that fixes it.

use netdrop_model::{
    FindingId, Hook, Owner, OwnerContext, Packet, Ruleset, Severity, Verdict,
    check::{self, Cluster, Finding, NodeFacts, PodCidrs, Subject},
    decision::step_notation,
};
use serde::Serialize;

use super::{PERSIST, flow_text, leftover_prefix, owner_name, service_fix};

/// A finding with its words, as `check --output json` and watch's
/// `finding` records carry it. Fields that do not apply are null (a node
/// setting has no table, chain or owner).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ExplainedFinding {
    pub id: FindingId,
    pub severity: Severity,
    /// The pod flows that die because of it.
    pub flows: Vec<String>,
    pub hook: Option<Hook>,
    /// Whose rules the table is: `iptables-nft`, `iptables-legacy`
    /// (`ip6tables-…`), or `nftables` for a native table.
    pub backend: Option<&'static str>,
    pub table: Option<String>,
    pub chain: Option<String>,
    pub rule: Option<String>,
    pub rule_no: Option<usize>,
    pub policy: bool,
    pub verdict: Option<Verdict>,
    pub reject_with: Option<String>,
    pub owner: Option<Owner>,
    pub leftover: bool,
    pub service: Option<String>,
    pub path: Vec<String>,
    pub assumptions: Vec<String>,
    pub unmodelled: bool,
    pub explanation: String,
    pub fix: String,
    /// Whether the fix was walked on the model (drops only).
    pub fix_check: Option<super::FixStatus>,
}

/// Every finding of a node: each ruleset's (IPv4 and IPv6, each backend)
/// and the node's settings, in words.
pub fn check_node<'a>(
    rulesets: impl IntoIterator<Item = &'a Ruleset>,
    cluster: &Cluster,
    facts: &NodeFacts,
) -> Vec<ExplainedFinding> {
    let mut out = Vec::new();
    for rs in rulesets {
        let owners = OwnerContext::new(rs, facts.interfaces.clone());
        let shape = check::shape_of(Some(rs), facts, cluster.vxlan_port);
        for f in check::check(rs, &owners, cluster, &shape) {
            out.push(explain_finding(&f, Some((rs, &owners)), cluster));
        }
    }
    for f in check::node_findings(facts) {
        out.push(explain_finding(&f, None, cluster));
    }
    out
}

/// Where the pod CIDR came from when none was given, in words.
pub fn pod_cidrs_note(inferred: &PodCidrs) -> String {
    match inferred {
        PodCidrs::FlannelRules(nets) => format!(
            "pod CIDR {} (from flannel's rules; --pod-cidr to say otherwise)",
            nets.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        PodCidrs::Routed(net) => format!(
            "pod CIDR {net} (holds the pod subnets the node routes on its overlay and pod devices; --pod-cidr to say exactly)"
        ),
        PodCidrs::Unknown => {
            "no --pod-cidr given and none in the rules or routes: pod flows not probed".to_owned()
        }
    }
}

/// Whether any finding is a warning or worse (`check`'s exit code).
pub fn is_failing(findings: &[ExplainedFinding]) -> bool {
    findings.iter().any(|f| f.severity >= Severity::Warning)
}

/// Puts `f` (found in `rules`, with its owners) into words.
pub fn explain_finding(
    f: &Finding,
    rules: Option<(&Ruleset, &OwnerContext)>,
    cluster: &Cluster,
) -> ExplainedFinding {
    let mut e = ExplainedFinding {
        id: f.id,
        severity: f.severity,
        flows: f.flows.iter().map(flow_text).collect(),
        hook: None,
        backend: None,
        table: None,
        chain: None,
        rule: None,
        rule_no: None,
        policy: false,
        verdict: None,
        reject_with: None,
        owner: f.owner(),
        leftover: f.leftover(),
        service: None,
        path: Vec::new(),
        assumptions: Vec::new(),
        unmodelled: f.unmodelled(),
        explanation: String::new(),
        fix: String::new(),
        fix_check: None,
    };
    let (explanation, fix) = match &f.subject {
        Subject::Drop(d) => {
            e.hook = Some(d.hook);
            e.table = Some(d.table.clone());
            e.chain = Some(d.chain.clone());
            e.rule = d.rule.clone();
            e.rule_no = d.rule_no;
            e.policy = d.policy;
            e.verdict = Some(d.verdict);
            e.reject_with = d.reject_with.clone();
            e.service = d.service.clone();
            e.path = d.path.iter().map(step_notation).collect();
            e.assumptions = super::unknowns::assumptions(&d.assumptions);
            match (rules, f.flows.first()) {
                (Some((rs, owners)), Some(pkt)) => {
                    let x = super::explain(rs, owners, cluster, pkt, d.clone());
                    e.fix_check = Some(x.fix_check);
                    (
                        x.explanation,
                        probe_placeholders(&x.fix, f.id, pkt, cluster),
                    )
                }
                _ => (String::new(), String::new()),
            }
        }
        Subject::Masquerade {
            at, covered, pod, ..
        } => {
            e.hook = Some(Hook::Postrouting);
            e.table = Some(at.table.clone());
            e.chain = Some(at.chain.clone());
            e.rule = Some(at.rule.clone());
            e.verdict = Some(Verdict::Accept);
            (
                format!(
                    "Pod egress leaves the node with its pod source address un-masqueraded: POSTROUTING masquerades {covered} (`{}`, {}) but the pod CIDR is {pod}, so replies from outside never find their way back.",
                    at.rule,
                    owner_name(at.owner)
                ),
                format!(
                    "Make flannel's Network match the pod CIDR: set \"Network\": \"{pod}\" in net-conf.json (kube-flannel-cfg ConfigMap, kubeadm's --pod-network-cidr) and restart flannel. Stop-gap: `iptables -t nat -A POSTROUTING -s {pod} ! -d {pod} -j MASQUERADE` (not persistent)."
                ),
            )
        }
        Subject::LeftoverChains { at, target, chains } => {
            e.hook = Hook::of_chain(&at.chain);
            e.table = Some(at.table.clone());
            e.chain = Some(at.chain.clone());
            e.rule = Some(at.rule.clone());
            e.rule_no = at.rule_no;
            let owner = owner_name(at.owner);
            (
                format!(
                    "{}/{} still jumps into {owner} chain {target} (`{}`), but {owner} is not running on this node (none of {} exist): {chains} leftover chains of an uninstalled {owner} can still drop traffic.",
                    at.table,
                    at.chain,
                    at.rule,
                    at.owner.signature_interfaces().join(", "),
                ),
                format!(
                    "`iptables -t {} -D {}`, then remove the rest: `iptables-save | grep -v -e '{}' | iptables-restore` (a reboot also clears them if they were not persisted).",
                    at.table,
                    at.rule.trim_start_matches("-A "),
                    leftover_prefix(at.owner)
                ),
            )
        }
        Subject::ServiceWithoutEndpoints { at, service } => {
            e.table = Some(at.table.clone());
            e.chain = Some(at.chain.clone());
            e.rule = Some(at.rule.clone());
            e.rule_no = at.rule_no;
            // kube-proxy rejects (a reject, or its nftables mode's goto
            // reject-chain) or, for external traffic to a Local Service
            // without endpoints on the node, drops.
            let drops = rules.is_some_and(|(rs, _)| {
                at.rule_no
                    .and_then(|n| rs.tables.get(&at.table)?.chain(&at.chain)?.rules.get(n - 1))
                    .is_some_and(|r| r.target == netdrop_model::rules::Target::Drop)
            });
            e.verdict = Some(if drops {
                Verdict::Drop
            } else {
                Verdict::Reject
            });
            e.service = service.clone();
            (
                format!(
                    "Service {} has no endpoints: kube-proxy {} connections to it.",
                    service.as_deref().unwrap_or("?"),
                    if drops { "drops" } else { "rejects" }
                ),
                service_fix(
                    service.as_deref(),
                    "Check that the Service's pods exist, are Ready and match its selector",
                ),
            )
        }
        Subject::NodeSetting => node_setting(f.id, cluster),
    };
    e.explanation = explanation;
    e.fix = fix;
    if let Some((rs, _)) = rules {
        e.fix = super::with_tool(&e.fix, &super::iptables_tool(rs));
        if let Some(t) = &e.table {
            e.backend = rs.backend_of(t);
        }
    }
    e
}

/// A finding's fix with the made-up addresses of its probe (TEST-NET
/// nodes and "internet") said as what they stand for: the rule is for the
/// node's real peers, which a dump does not name. Pod CIDRs are real.
fn probe_placeholders(fix: &str, id: FindingId, pkt: &Packet, cluster: &Cluster) -> String {
    let mut fix = fix.to_owned();
    if !cluster.is_pod(pkt.src) {
        let peers = match id {
            FindingId::InputBlocksVxlan | FindingId::InputBlocksKubelet => "<other nodes' network>",
            _ => "<source network>",
        };
        fix = super::without_addr(&fix, pkt.src, peers);
    }
    if !cluster.is_pod(pkt.dst) {
        fix = super::without_addr(&fix, pkt.dst, "<destination>");
    }
    fix
}

fn node_setting(id: FindingId, cluster: &Cluster) -> (String, String) {
    match id {
        FindingId::SysctlIpForward => (
            "net.ipv4.ip_forward is 0: the node does not forward packets, so no pod traffic crosses it (the kernel drops it before filter/FORWARD).".into(),
            "`sysctl -w net.ipv4.ip_forward=1`, and persist it: `echo net.ipv4.ip_forward=1 > /etc/sysctl.d/99-kubernetes.conf`.".into(),
        ),
        FindingId::SysctlBridgeNfCallIptables => (
            format!(
                "Pods share the cni0 bridge but bridged traffic bypasses iptables (br_netfilter not loaded or net.bridge.bridge-nf-call-iptables=0): Service traffic between pods of this node ({}) is not NATed back correctly.",
                super::pod_cidr_text(cluster)
            ),
            "`modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1`; persist with /etc/modules-load.d/k8s.conf and /etc/sysctl.d/99-kubernetes.conf.".into(),
        ),
        FindingId::IptablesLegacyNftSplit => (
            "This node has rules in both iptables-legacy and iptables-nft: the kernel runs both, but each tool shows only its own half, so a rule you add with one may never meet a drop in the other.".into(),
            "Make every agent (kube-proxy, Docker, the CNI) use the same backend (`update-alternatives --set iptables /usr/sbin/iptables-nft`), then remove the stale half (`iptables-legacy-save` shows it) and reboot or restart the agents.".into(),
        ),
        other => (
            format!("{other}"),
            format!("See `netdrop check`. {PERSIST}"),
        ),
    }
}
