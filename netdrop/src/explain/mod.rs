//! Explain: turn a simulated drop into plain sentences an operator can act
//! on — whose rule it is, why it matched, and the command that fixes it
//! (and how to make the fix survive a reboot).

pub mod check;
pub mod kernel;
pub mod run;

use ipnet::IpNet;
use serde::Serialize;

use crate::attribute::{
    Outcome, OwnerContext, Packet, Verdict,
    owner::Owner,
    rules::{Policy, Ruleset, Target},
    simulate::{Step, simulate, simulate_without},
};

/// Everything netdrop says about one drop (or one simulated drop).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Explanation {
    pub hook: String,
    pub table: String,
    pub chain: String,
    /// Rule text as iptables-save prints it; `None` when the policy dropped.
    pub rule: Option<String>,
    /// 1-based rule number in its chain (`iptables -L --line-numbers`).
    pub rule_no: Option<usize>,
    pub policy: bool,
    pub verdict: String,
    pub reject_with: Option<String>,
    pub owner: Owner,
    pub leftover: bool,
    /// kube-proxy `namespace/name:port` when the rule names one.
    pub service: Option<String>,
    /// The rules walked to get there (table/chain #n: text).
    pub path: Vec<String>,
    /// What the model had to assume (random branches, ipsets, unmodelled matches).
    pub assumptions: Vec<String>,
    pub unmodelled: bool,
    pub explanation: String,
    pub fix: String,
}

/// Hints that make explanations concrete.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub pod_cidrs: Vec<IpNet>,
    pub vxlan_port: u16,
}

impl Context {
    pub fn new(pod_cidrs: Vec<IpNet>) -> Self {
        Self {
            pod_cidrs,
            vxlan_port: 8472,
        }
    }

    fn is_pod(&self, a: std::net::IpAddr) -> bool {
        self.pod_cidrs.iter().any(|n| n.contains(&a))
    }

    fn pod_cidr_text(&self) -> String {
        match self.pod_cidrs.first() {
            Some(n) => n.to_string(),
            None => "<pod CIDR>".into(),
        }
    }
}

/// Explains the drop outcomes of a packet; `None` if every outcome accepts.
pub fn explain_packet(
    rs: &Ruleset,
    owners: &OwnerContext,
    ctx: &Context,
    pkt: &Packet,
) -> Option<Explanation> {
    let outcomes = simulate(rs, pkt);
    // Prefer a branch that needed no assumption; among drops, the first.
    let drop = outcomes
        .iter()
        .filter(|o| o.verdict.is_drop())
        .min_by_key(|o| (o.unmodelled, o.assumptions.len()))?;
    let mut e = explain_outcome(rs, owners, ctx, pkt, drop);
    if outcomes.iter().any(|o| o.verdict == Verdict::Accept) {
        e.assumptions
            .push("other branches of the walk accept this packet".into());
    }
    Some(e)
}

pub fn explain_outcome(
    rs: &Ruleset,
    owners: &OwnerContext,
    ctx: &Context,
    pkt: &Packet,
    o: &Outcome,
) -> Explanation {
    let fallback = Step {
        table: "filter".into(),
        chain: pkt.hook.as_str().into(),
        rule_no: None,
        text: String::new(),
        line: 0,
    };
    let d = o.decider().cloned().unwrap_or(fallback);
    let rule = d
        .rule_no
        .and_then(|n| rs.tables.get(&d.table)?.chain(&d.chain)?.rules.get(n - 1));
    let owner = match rule {
        Some(r) => owners.rule_owner(&d.chain, r),
        None => owners.policy_owner(&d.chain, Policy::Drop),
    };
    // A drop inside a leftover agent's chain, or reached through one.
    let leftover_owner = o
        .path
        .iter()
        .filter_map(|s| crate::attribute::owner::chain_owner(&s.chain))
        .find(|ow| owners.is_leftover(*ow));
    let leftover = leftover_owner.is_some();
    let owner = leftover_owner.unwrap_or(owner);
    let service = rule.and_then(|r| r.comment()).and_then(|c| service_of(&c));
    let flow = flow_text(pkt);
    let place = match d.rule_no {
        Some(n) => format!("rule #{n} of {}/{} `{}`", d.table, d.chain, d.text),
        None => format!("the DROP policy of {}/{}", d.table, d.chain),
    };
    let verdict = o.verdict.as_str().to_owned();
    let (explanation, fix) = sentences(
        rs,
        owners,
        ctx,
        pkt,
        o,
        &d,
        rule.map(|r| &r.target),
        owner,
        leftover,
        service.as_deref(),
        &flow,
        &place,
    );
    Explanation {
        hook: pkt.hook.as_str().to_owned(),
        table: d.table.clone(),
        chain: d.chain.clone(),
        rule: d.rule_no.map(|_| d.text.clone()),
        rule_no: d.rule_no,
        policy: d.rule_no.is_none(),
        verdict,
        reject_with: o.reject_with.clone(),
        owner,
        leftover,
        service,
        path: o
            .path
            .iter()
            .map(|s| match s.rule_no {
                Some(n) => format!("{}/{} #{n}: {}", s.table, s.chain, s.text),
                None => format!("{}/{} policy DROP", s.table, s.chain),
            })
            .collect(),
        assumptions: o.assumptions.clone(),
        unmodelled: o.unmodelled,
        explanation,
        fix,
    }
}

/// `ns/name:port` from a kube-proxy comment like `ns6/svc6:p80 has no endpoints`.
pub fn service_of(comment: &str) -> Option<String> {
    let first = comment.split_whitespace().next()?;
    (first.contains('/') && !first.contains("//")).then(|| first.trim_end_matches(',').to_owned())
}

pub fn flow_text(p: &Packet) -> String {
    let proto = crate::decode::proto_name(p.proto)
        .map(str::to_owned)
        .unwrap_or_else(|| p.proto.to_string());
    let ep = |a: std::net::IpAddr, port: Option<u16>| match (a, port) {
        (std::net::IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
        (a, Some(port)) => format!("{a}:{port}"),
        (a, None) => a.to_string(),
    };
    let mut s = format!("{proto} {} -> {}", ep(p.src, p.sport), ep(p.dst, p.dport));
    if let Some(i) = &p.in_iface {
        s.push_str(&format!(" in {i}"));
    }
    if let Some(o) = &p.out_iface {
        s.push_str(&format!(" out {o}"));
    }
    s
}

const PERSIST: &str = "Make it permanent: save the rules with your distribution's tool (Debian/Ubuntu: `netfilter-persistent save`; RHEL/CentOS: `service iptables save`) or add the command to a systemd unit that runs after docker.service and kubelet.service.";

/// What well-known port a packet is for, in words.
fn port_role(ctx: &Context, p: &Packet) -> Option<&'static str> {
    match (p.proto, p.dport?) {
        (17, port) if port == ctx.vxlan_port => Some("flannel's VXLAN traffic between nodes"),
        (6, 10250) => Some("the kubelet API (kubectl exec/logs, metrics)"),
        (6, 6443) => Some("the Kubernetes API server"),
        (6, 2379 | 2380) => Some("etcd"),
        (6 | 17, 53) => Some("DNS"),
        (6, 179) => Some("BGP between nodes"),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn sentences(
    rs: &Ruleset,
    owners: &OwnerContext,
    ctx: &Context,
    p: &Packet,
    o: &Outcome,
    d: &Step,
    target: Option<&Target>,
    owner: Owner,
    leftover: bool,
    service: Option<&str>,
    flow: &str,
    place: &str,
) -> (String, String) {
    let verb = if o.verdict == Verdict::Reject {
        format!(
            "rejects it ({})",
            o.reject_with.as_deref().unwrap_or("icmp-port-unreachable")
        )
    } else {
        "drops it".to_owned()
    };
    let pod = ctx.pod_cidr_text();
    let shadow = shadowed_accept(rs, p, d)
        .map(|s| format!(" It shadows {s}, which would accept this packet."))
        .unwrap_or_default();

    if leftover {
        let hook_jump = o.path.first().filter(|s| s.rule_no.is_some());
        let removal = match hook_jump {
            Some(j) => format!(
                "iptables -t {} -D {}",
                j.table,
                j.text.trim_start_matches("-A ").trim()
            ),
            None => format!(
                "iptables -t {} -F {} && iptables -t {} -X {}",
                d.table, d.chain, d.table, d.chain
            ),
        };
        let prefix = leftover_prefix(owner);
        return (
            format!(
                "{flow}: {place} {verb}. It belongs to {}, which is not running on this node (none of its interfaces {} exist): a leftover of an uninstalled {} still hooked into {}/{}.{shadow}",
                owner.display(),
                owner.signature_interfaces().join(", "),
                owner.display(),
                d.table,
                p.hook.as_str()
            ),
            format!(
                "Unhook and remove the leftover chains: `{removal}`, then delete the rest of them: `iptables-save | grep -v -e '{prefix}' | iptables-restore`. If they were not persisted, a reboot also clears them."
            ),
        );
    }

    // Built-in chain policy.
    if d.rule_no.is_none() {
        let by = match owner {
            Owner::Docker => "which Docker sets when it enables IP forwarding".to_owned(),
            o => format!("set by {}", o.display()),
        };
        let why = match p.hook.as_str() {
            "FORWARD" => {
                let flannel_hint = owners
                    .flannel_networks
                    .iter()
                    .filter(|n| !ctx.pod_cidrs.contains(n))
                    .map(|n| format!(" flannel's rules accept {n}, not the pod CIDR {pod}: flannel's Network does not match the cluster's pod CIDR."))
                    .next()
                    .unwrap_or_default();
                format!(
                    " Nothing before it accepts this pod traffic (kube-proxy's KUBE-FORWARD only accepts packets marked 0x4000 or RELATED,ESTABLISHED).{flannel_hint}"
                )
            }
            _ => String::new(),
        };
        let fix = match (
            p.hook.as_str(),
            p.in_iface.as_deref(),
            p.out_iface.as_deref(),
        ) {
            ("FORWARD", Some(i), Some(out)) if has_chain(rs, "filter", "DOCKER-USER") => {
                format!(
                    "`iptables -I DOCKER-USER -i {i} -o {out} -j ACCEPT` (or accept the pod CIDR: `iptables -I FORWARD -s {pod} -j ACCEPT; iptables -I FORWARD -d {pod} -j ACCEPT`). {PERSIST}"
                )
            }
            ("FORWARD", ..) => format!(
                "`iptables -I FORWARD -s {pod} -j ACCEPT; iptables -I FORWARD -d {pod} -j ACCEPT`. {PERSIST}"
            ),
            (h, ..) => format!(
                "Accept it before the policy: `iptables -I {h} {} -j ACCEPT`. {PERSIST}",
                match_words(p)
            ),
        };
        return (
            format!(
                "{flow} reaches the end of {}/{} and falls to its policy DROP, {by}.{why}",
                d.table, d.chain
            ),
            fix,
        );
    }

    let rule_no = d.rule_no.unwrap_or(1);
    match (owner, target) {
        (Owner::KubeProxy, Some(Target::Reject { .. })) if d.text.contains("has no endpoints") => (
            format!("{flow}: Service {} has no ready endpoints, so kube-proxy {verb} ({place}).", service.unwrap_or("?")),
            service_fix(service, "Check that the Service's pods exist, are Ready and match its selector"),
        ),
        (Owner::KubeProxy, Some(Target::Drop)) if d.text.contains("has no local endpoints") => (
            format!("{flow}: Service {} has externalTrafficPolicy: Local and no endpoint on this node, so kube-proxy {verb} ({place}).", service.unwrap_or("?")),
            service_fix(service, "Run an endpoint on every node that receives external traffic (e.g. a DaemonSet), or set externalTrafficPolicy: Cluster"),
        ),
        (Owner::KubeProxy, Some(Target::Drop)) if d.chain == "KUBE-PROXY-FIREWALL" => (
            format!("{flow}: the source is outside the Service's loadBalancerSourceRanges, so kube-proxy {verb} ({place})."),
            service_fix(service, "Add the client's range to spec.loadBalancerSourceRanges of the Service"),
        ),
        (Owner::KubeProxy, Some(Target::Drop)) if d.text.contains("INVALID") => (
            format!("{flow}: conntrack considers the packet INVALID (often out-of-window TCP or asymmetric routing), and kube-proxy {verb} ({place})."),
            "Find why conntrack loses the flow (asymmetric routes, MTU, conntrack table full: `conntrack -S`); as a workaround `sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=1` (kube-proxy ≥ 1.28 sets it with --conntrack-tcp-be-liberal), persisted in /etc/sysctl.d/.".into(),
        ),
        (Owner::Kubelet, Some(Target::Drop)) => (
            format!("{flow}: kubelet's KUBE-FIREWALL {verb}: traffic to 127.0.0.0/8 from outside the node is blocked ({place})."),
            "Do not send traffic to 127.0.0.0/8 from other hosts or pods; if it is a NodePort on localhost, use the node's address instead.".into(),
        ),
        (Owner::Docker, Some(Target::Drop)) if d.chain.starts_with("DOCKER-ISOLATION") => (
            format!("{flow}: Docker's network isolation {verb} ({place}): traffic between two Docker networks is blocked."),
            "Connect both containers to one Docker network (`docker network connect`), or add an ACCEPT in DOCKER-USER for this flow.".into(),
        ),
        (Owner::Calico | Owner::Cilium | Owner::KubeRouter, _) => (
            format!("{flow}: {place} {verb}: a NetworkPolicy enforced by {} does not allow this traffic.{shadow}", owner.display()),
            "List the policies that select the source and destination pods (`kubectl get networkpolicy -A`) and add one that allows this flow.".into(),
        ),
        (Owner::DistroFirewall, _) => {
            let role = port_role(ctx, p);
            let accept = accept_rule(ctx, p, &d.chain, rule_no);
            (
                format!(
                    "{flow}: {place} {verb}. It is the catch-all reject of the distribution's iptables service (iptables-services, /etc/sysconfig/iptables), and nothing before it accepts {}.{shadow}",
                    role.map(str::to_owned).unwrap_or_else(|| if ctx.is_pod(p.src) || ctx.is_pod(p.dst) { format!("pod traffic ({pod})") } else { "this traffic".into() })
                ),
                format!("Insert an ACCEPT before it: {accept}. Make it permanent with `service iptables save` (or edit /etc/sysconfig/iptables), or stop the service if the node does not need it: `systemctl disable --now iptables`."),
            )
        }
        (Owner::Firewalld, _) => {
            let fix = match (p.proto, p.dport) {
                (6 | 17, Some(port)) if !ctx.is_pod(p.dst) => format!("`firewall-cmd --permanent --add-port={port}/{} && firewall-cmd --reload`", if p.proto == 6 { "tcp" } else { "udp" }),
                _ => format!("`firewall-cmd --permanent --zone=trusted --add-source={pod} && firewall-cmd --reload`"),
            };
            (format!("{flow}: firewalld {verb} ({place}).{shadow}"), format!("{fix} (firewalld keeps --permanent rules across reboots)."))
        }
        _ => {
            let role = port_role(ctx, p).map(|r| format!(" This is {r}.")).unwrap_or_default();
            (
                format!("{flow}: {place} {verb}; it belongs to {}.{role}{shadow}", owner.display()),
                format!(
                    "If the rule is not intended, delete it: `iptables -t {} -D {} {rule_no}`; otherwise insert an ACCEPT before it: {}. {PERSIST}",
                    d.table,
                    d.chain,
                    accept_rule(ctx, p, &d.chain, rule_no)
                ),
            )
        }
    }
}

fn leftover_prefix(owner: Owner) -> &'static str {
    match owner {
        Owner::Calico => "cali-",
        Owner::Cilium => "CILIUM",
        Owner::KubeRouter => "KUBE-ROUTER",
        Owner::Flannel => "FLANNEL",
        Owner::Docker => "DOCKER",
        _ => "",
    }
}

fn service_fix(service: Option<&str>, advice: &str) -> String {
    match service.and_then(|s| s.split_once('/')) {
        Some((ns, rest)) => {
            let name = rest.split(':').next().unwrap_or(rest);
            format!(
                "{advice}: `kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={name}` and `kubectl -n {ns} describe service {name}`."
            )
        }
        None => format!("{advice}."),
    }
}

/// `-p udp --dport 8472`, `-s 10.224.0.0/16`: the narrowest words that
/// accept this packet.
fn match_words(p: &Packet) -> String {
    let proto = crate::decode::proto_name(p.proto).unwrap_or("all");
    match p.dport {
        Some(port) if matches!(p.proto, 6 | 17) => format!("-p {proto} --dport {port}"),
        _ => format!("-s {} -d {}", p.src, p.dst),
    }
}

fn accept_rule(ctx: &Context, p: &Packet, chain: &str, rule_no: usize) -> String {
    let pod = ctx.pod_cidr_text();
    if chain == "FORWARD" && (ctx.is_pod(p.src) || ctx.is_pod(p.dst)) {
        format!(
            "`iptables -I FORWARD {rule_no} -s {pod} -j ACCEPT; iptables -I FORWARD {rule_no} -d {pod} -j ACCEPT`"
        )
    } else {
        format!(
            "`iptables -I {chain} {rule_no} {} -j ACCEPT`",
            match_words(p)
        )
    }
}

fn has_chain(rs: &Ruleset, table: &str, chain: &str) -> bool {
    rs.tables.get(table).and_then(|t| t.chain(chain)).is_some()
}

/// If removing the deciding rule lets the packet through, the accepting
/// rule it shadows (`rule #n of table/chain \`text\``).
fn shadowed_accept(rs: &Ruleset, p: &Packet, d: &Step) -> Option<String> {
    let n = d.rule_no?;
    let outcomes = simulate_without(rs, p, &d.table, &d.chain, n - 1);
    let accept = outcomes
        .iter()
        .find(|o| o.verdict == Verdict::Accept && o.assumptions.is_empty())?;
    if !outcomes.iter().all(|o| o.verdict == Verdict::Accept) {
        return None;
    }
    // The first rule after the skipped one on the accepted path, in the same
    // chain (numbers are the real ones: nothing was removed).
    let s = accept
        .path
        .iter()
        .find(|s| s.table == d.table && s.chain == d.chain && s.rule_no.is_some_and(|m| m > n))?;
    Some(format!(
        "rule #{} of {}/{} `{}`",
        s.rule_no?, s.table, s.chain, s.text
    ))
}
