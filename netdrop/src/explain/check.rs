//! `netdrop check`: static findings about a node's rules — the pod flows a
//! Kubernetes node must let through are simulated, and every one that dies
//! becomes a finding with its rule, owner, explanation and fix.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Serialize;

use super::{Context, Explanation, explain_packet};
use crate::{
    attribute::{
        OwnerContext, Packet,
        owner::chain_owner,
        rules::{Ruleset, Target},
        simulate::simulate,
    },
    decode::Hook,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Finding {
    /// Stable identifier, e.g. `forward-policy-drop`.
    pub id: String,
    pub severity: Severity,
    /// The pod flow(s) that die because of it.
    pub flows: Vec<String>,
    #[serde(flatten)]
    pub detail: Explanation,
}

impl Finding {
    /// Whose rule or chain this finding is about; `None` for node settings
    /// (sysctls, iptables backends), which belong to no rule's owner.
    pub fn rule_owner(&self) -> Option<crate::attribute::Owner> {
        (!self.detail.chain.is_empty()).then_some(self.detail.owner)
    }
}

/// What is known of the node beyond its rules (live checks fill it in).
#[derive(Clone, Debug, Default)]
pub struct NodeFacts {
    /// Interface names; `None` offline.
    pub interfaces: Option<Vec<String>>,
    /// `net.ipv4.ip_forward`
    pub ip_forward: Option<bool>,
    /// `net.bridge.bridge-nf-call-iptables`; `Some(false)` also when
    /// br_netfilter is not loaded.
    pub bridge_nf_call_iptables: Option<bool>,
    /// Rules in both iptables-legacy and iptables-nft.
    pub split_backends: bool,
}

/// Addresses of the probe flows, derived from the pod CIDR.
struct Probe {
    id_prefix: &'static str,
    severity: Severity,
    pkt: Packet,
}

fn nth(net: &IpNet, n: u32) -> IpAddr {
    match net {
        IpNet::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()).wrapping_add(n))),
        IpNet::V6(v6) => IpAddr::V6(Ipv6Addr::from(
            u128::from(v6.network()).wrapping_add(u128::from(n)),
        )),
    }
}

fn probes(pod: &IpNet, vxlan_port: u16) -> Vec<Probe> {
    let (local_pod, remote_pod, gw) = if pod.prefix_len() <= 16 || matches!(pod, IpNet::V6(_)) {
        (nth(pod, 0x0102), nth(pod, 0x0202), nth(pod, 0x0101))
    } else {
        (nth(pod, 2), nth(pod, 3), nth(pod, 1))
    };
    let v4 = pod.addr().is_ipv4();
    let (node, peer, internet): (IpAddr, IpAddr, IpAddr) = if v4 {
        (
            [192, 0, 2, 1].into(),
            [192, 0, 2, 2].into(),
            [203, 0, 113, 10].into(),
        )
    } else {
        (
            "2001:db8::1".parse().expect("v6"),
            "2001:db8::2".parse().expect("v6"),
            "2001:db8:ffff::10".parse().expect("v6"),
        )
    };
    let locals = vec![node, gw];
    let mk = |hook, proto, src, sport, dst, dport, i: Option<&str>, o: Option<&str>| {
        let mut p = Packet::new(hook, proto, src, dst);
        p.sport = Some(sport);
        p.dport = Some(dport);
        p.in_iface = i.map(str::to_owned);
        p.out_iface = o.map(str::to_owned);
        p.local_addrs = Some(locals.clone());
        p
    };
    let mut v = vec![
        Probe {
            id_prefix: "forward",
            severity: Severity::Critical,
            pkt: mk(
                Hook::Forward,
                6,
                remote_pod,
                40000,
                local_pod,
                80,
                Some("flannel.1"),
                Some("cni0"),
            ),
        },
        Probe {
            id_prefix: "forward",
            severity: Severity::Critical,
            pkt: mk(
                Hook::Forward,
                6,
                local_pod,
                40000,
                remote_pod,
                80,
                Some("cni0"),
                Some("flannel.1"),
            ),
        },
        Probe {
            id_prefix: "forward",
            severity: Severity::Warning,
            pkt: mk(
                Hook::Forward,
                6,
                local_pod,
                40000,
                internet,
                443,
                Some("cni0"),
                Some("eth0"),
            ),
        },
    ];
    if v4 {
        v.push(Probe {
            id_prefix: "input-blocks-vxlan",
            severity: Severity::Critical,
            pkt: mk(
                Hook::Input,
                17,
                peer,
                51000,
                node,
                vxlan_port,
                Some("eth0"),
                None,
            ),
        });
        v.push(Probe {
            id_prefix: "input-blocks-kubelet",
            severity: Severity::Warning,
            pkt: mk(Hook::Input, 6, peer, 51000, node, 10250, Some("eth0"), None),
        });
    }
    v
}

/// All findings for one ruleset (one family, one backend).
pub fn check(rs: &Ruleset, ctx: &Context, facts: &NodeFacts) -> Vec<Finding> {
    let owners = OwnerContext::new(rs, facts.interfaces.clone());
    let mut out: Vec<Finding> = Vec::new();
    let family_pods: Vec<IpNet> = ctx
        .pod_cidrs
        .iter()
        .filter(|n| n.addr().is_ipv4() == (rs.family == crate::attribute::rules::Family::Ipv4))
        .copied()
        .collect();
    for pod in &family_pods {
        for probe in probes(pod, ctx.vxlan_port) {
            let Some(e) = explain_packet(rs, &owners, ctx, &probe.pkt) else {
                continue;
            };
            let id = if probe.id_prefix != "forward" {
                probe.id_prefix.to_owned()
            } else if e.leftover {
                "leftover-cni-drops-pod-traffic".to_owned()
            } else if e.policy {
                "forward-policy-drop".to_owned()
            } else {
                "forward-rule-drops-pod-traffic".to_owned()
            };
            let flow = super::flow_text(&probe.pkt);
            // One finding per deciding rule; every flow it kills listed.
            match out
                .iter_mut()
                .find(|f| f.id == id && f.detail.rule == e.rule && f.detail.chain == e.chain)
            {
                Some(f) => f.flows.push(flow),
                None => out.push(Finding {
                    id,
                    severity: probe.severity,
                    flows: vec![flow],
                    detail: e,
                }),
            }
        }
        if let Some(f) = masquerade_mismatch(rs, &owners, ctx, pod) {
            out.push(f);
        }
    }
    out.extend(leftover_chains(rs, &owners));
    out.extend(services_without_endpoints(rs, &owners, ctx));
    out
}

/// Node-wide findings that are not about one ruleset.
pub fn node_findings(facts: &NodeFacts, ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    let bare = |id: &str, severity, explanation: String, fix: String| Finding {
        id: id.to_owned(),
        severity,
        flows: Vec::new(),
        detail: Explanation {
            hook: String::new(),
            table: String::new(),
            chain: String::new(),
            rule: None,
            rule_no: None,
            policy: false,
            verdict: String::new(),
            reject_with: None,
            owner: crate::attribute::Owner::Custom,
            leftover: false,
            service: None,
            path: Vec::new(),
            assumptions: Vec::new(),
            unmodelled: false,
            explanation,
            fix,
        },
    };
    if facts.ip_forward == Some(false) {
        out.push(bare(
            "sysctl-ip-forward",
            Severity::Critical,
            "net.ipv4.ip_forward is 0: the node does not forward packets, so no pod traffic crosses it (the kernel drops it before filter/FORWARD).".into(),
            "`sysctl -w net.ipv4.ip_forward=1`, and persist it: `echo net.ipv4.ip_forward=1 > /etc/sysctl.d/99-kubernetes.conf`.".into(),
        ));
    }
    let on_bridge = facts
        .interfaces
        .as_ref()
        .is_some_and(|i| i.iter().any(|n| n == "cni0"));
    if on_bridge && facts.bridge_nf_call_iptables == Some(false) {
        out.push(bare(
            "sysctl-bridge-nf-call-iptables",
            Severity::Warning,
            format!("Pods share the cni0 bridge but bridged traffic bypasses iptables (br_netfilter not loaded or net.bridge.bridge-nf-call-iptables=0): Service traffic between pods of this node ({}) is not NATed back correctly.", ctx.pod_cidr_text()),
            "`modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1`; persist with /etc/modules-load.d/k8s.conf and /etc/sysctl.d/99-kubernetes.conf.".into(),
        ));
    }
    if facts.split_backends {
        out.push(bare(
            "iptables-legacy-nft-split",
            Severity::Warning,
            "This node has rules in both iptables-legacy and iptables-nft: the kernel runs both, but each tool shows only its own half, so a rule you add with one may never meet a drop in the other.".into(),
            "Make every agent (kube-proxy, Docker, the CNI) use the same backend (`update-alternatives --set iptables /usr/sbin/iptables-nft`), then remove the stale half (`iptables-legacy-save` shows it) and reboot or restart the agents.".into(),
        ));
    }
    out
}

/// S4: pod egress leaves un-NATed because the MASQUERADE rules cover
/// another CIDR than the pod CIDR.
fn masquerade_mismatch(
    rs: &Ruleset,
    owners: &OwnerContext,
    ctx: &Context,
    pod: &IpNet,
) -> Option<Finding> {
    let probe = probes(pod, ctx.vxlan_port).into_iter().nth(2)?;
    let mut pkt = probe.pkt;
    pkt.hook = Hook::Postrouting;
    pkt.in_iface = None;
    let outcomes = simulate(rs, &pkt);
    if outcomes.iter().any(|o| o.snat.is_some()) {
        return None;
    }
    // Which MASQUERADE rules exist, and for which sources?
    let nat = rs.tables.get("nat")?;
    let masq: Vec<(&str, &crate::attribute::rules::Rule)> = nat
        .chains
        .iter()
        .flat_map(|c| c.rules.iter().map(move |r| (c.name.as_str(), r)))
        .filter(|(c, r)| {
            r.target == Target::Masquerade
                && owners.rule_owner(c, r) != crate::attribute::Owner::Docker
        })
        .collect();
    let other: Vec<IpNet> = masq
        .iter()
        .flat_map(|(_, r)| r.matches.iter())
        .filter_map(|m| match m {
            crate::attribute::rules::Match::Src { neg: false, net }
                if !net.contains(&pod.addr())
                    && net.addr().is_ipv4() == pod.addr().is_ipv4()
                    && net.prefix_len() < 24 =>
            {
                Some(*net)
            }
            _ => None,
        })
        .collect();
    let (chain, rule) = masq.iter().find(|(_, r)| r.matches.iter().any(|m| matches!(m, crate::attribute::rules::Match::Src { neg: false, net } if other.contains(net))))?;
    let cidr = other.first()?;
    let owner = owners.rule_owner(chain, rule);
    Some(Finding {
        id: "masquerade-cidr-mismatch".into(),
        severity: Severity::Critical,
        flows: vec![super::flow_text(&pkt)],
        detail: Explanation {
            hook: "POSTROUTING".into(),
            table: "nat".into(),
            chain: (*chain).to_owned(),
            rule: Some(rule.text.clone()),
            rule_no: None,
            policy: false,
            verdict: "ACCEPT".into(),
            reject_with: None,
            owner,
            leftover: false,
            service: None,
            path: Vec::new(),
            assumptions: Vec::new(),
            unmodelled: outcomes.iter().any(|o| o.unmodelled),
            explanation: format!(
                "Pod egress leaves the node with its pod source address un-masqueraded: POSTROUTING masquerades {cidr} (`{}`, {}) but the pod CIDR is {pod}, so replies from outside never find their way back.",
                rule.text,
                owner.display()
            ),
            fix: format!(
                "Make flannel's Network match the pod CIDR: set \"Network\": \"{pod}\" in net-conf.json (kube-flannel-cfg ConfigMap, kubeadm's --pod-network-cidr) and restart flannel. Stop-gap: `iptables -t nat -A POSTROUTING -s {pod} ! -d {pod} -j MASQUERADE` (not persistent)."
            ),
        },
    })
}

/// Chains of an agent that does not run here, still hooked into a built-in chain.
fn leftover_chains(rs: &Ruleset, owners: &OwnerContext) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in rs.tables.values() {
        for c in t.chains.iter().filter(|c| c.is_builtin()) {
            for (i, r) in c.rules.iter().enumerate() {
                let (Target::Jump(to) | Target::Goto(to)) = &r.target else {
                    continue;
                };
                let Some(owner) = chain_owner(to) else {
                    continue;
                };
                if !owners.is_leftover(owner) {
                    continue;
                }
                let count = rs
                    .tables
                    .values()
                    .flat_map(|t| &t.chains)
                    .filter(|c| chain_owner(&c.name) == Some(owner))
                    .count();
                out.push(Finding {
                    id: "leftover-cni-chains".into(),
                    severity: Severity::Warning,
                    flows: Vec::new(),
                    detail: Explanation {
                        hook: c.name.clone(),
                        table: t.name.clone(),
                        chain: c.name.clone(),
                        rule: Some(r.text.clone()),
                        rule_no: Some(i + 1),
                        policy: false,
                        verdict: String::new(),
                        reject_with: None,
                        owner,
                        leftover: true,
                        service: None,
                        path: Vec::new(),
                        assumptions: Vec::new(),
                        unmodelled: false,
                        explanation: format!(
                            "{}/{} still jumps into {} chain {to} (`{}`), but {} is not running on this node (none of {} exist): {count} leftover chains of an uninstalled {} can still drop traffic.",
                            t.name, c.name, owner.display(), r.text, owner.display(), owner.signature_interfaces().join(", "), owner.display()
                        ),
                        fix: format!(
                            "`iptables -t {} -D {}`, then remove the rest: `iptables-save | grep -v -e '{}' | iptables-restore` (a reboot also clears them if they were not persisted).",
                            t.name,
                            r.text.trim_start_matches("-A "),
                            super::leftover_prefix(owner)
                        ),
                    },
                });
            }
        }
    }
    out
}

/// kube-proxy's "has no endpoints" rejects: not a broken node, but worth knowing.
fn services_without_endpoints(rs: &Ruleset, owners: &OwnerContext, ctx: &Context) -> Vec<Finding> {
    let Some(t) = rs.tables.get("filter") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in &t.chains {
        for (i, r) in c.rules.iter().enumerate() {
            let Some(comment) = r.comment() else { continue };
            if !comment.contains("has no endpoints") || !matches!(r.target, Target::Reject { .. }) {
                continue;
            }
            let service = super::service_of(&comment);
            out.push(Finding {
                id: "service-without-endpoints".into(),
                severity: Severity::Info,
                flows: Vec::new(),
                detail: Explanation {
                    hook: String::new(),
                    table: t.name.clone(),
                    chain: c.name.clone(),
                    rule: Some(r.text.clone()),
                    rule_no: Some(i + 1),
                    policy: false,
                    verdict: "REJECT".into(),
                    reject_with: None,
                    owner: owners.rule_owner(&c.name, r),
                    leftover: false,
                    service: service.clone(),
                    path: Vec::new(),
                    assumptions: Vec::new(),
                    unmodelled: false,
                    explanation: format!(
                        "Service {} has no endpoints: kube-proxy rejects connections to it.",
                        service.as_deref().unwrap_or("?")
                    ),
                    fix: super::service_fix(
                        service.as_deref(),
                        "Check that the Service's pods exist, are Ready and match its selector",
                    ),
                },
            });
        }
    }
    let _ = ctx;
    out
}

/// Whether any finding is a warning or worse (`check`'s exit code).
pub fn is_failing(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity >= Severity::Warning)
}
