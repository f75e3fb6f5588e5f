//! Explain: turn a simulated drop into plain sentences an operator can act
//! on — whose rule it is, why it matched, and the command that fixes it
//! (and how to make the fix survive a reboot).

pub mod answer;
pub mod check;
mod fix_text;
pub mod kernel;
pub mod unknowns;

use netdrop_model::{
    Decision, Hook, Owner, OwnerContext, Packet, Ruleset, Verdict,
    check::Cluster,
    decision::shadowed_accept,
    edit::{
        Edit, FirewalldChange, FirewalldCommand, FirewalldScope, NftCommand, NftPosition, NftTable,
        RuleCommand,
    },
    fix::FlowClass,
    owner::FixesThrough,
    packet::flow_notation,
    rules::Target,
};

pub use self::fix_text::FixText;
pub(crate) use self::fix_text::with_tool;
use serde::Serialize;

/// Everything netdrop says about one drop (or one simulated drop): where
/// it died, as typed data, and the sentences and fix for it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Explanation {
    #[serde(flatten)]
    pub decision: Decision,
    /// What the model had to assume, in words (the decision's typed
    /// assumptions said once).
    pub assumptions: Vec<String>,
    pub explanation: String,
    pub fix: String,
    /// Whether netdrop walked the fix on its model before printing it.
    pub fix_check: FixStatus,
    /// The explanation of the drop site rather than of this packet: its
    /// flow (pod addresses and ports) said as `udp traffic`, so that
    /// metric labels stay bounded.
    #[serde(skip)]
    pub site_explanation: String,
    /// The fix likewise: a fix that names the packet's addresses (an
    /// ACCEPT for a protocol without ports) names them as placeholders.
    #[serde(skip)]
    pub site_fix: String,
}

/// What netdrop knows of a fix before printing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FixStatus {
    /// Its `iptables` rules were applied to a copy of the chains they edit
    /// and walked: the packet gets past the rule that dropped it, and new
    /// connections outside its flow keep their verdicts.
    Proven,
    /// Applied through the owner's own tool (firewalld, a generator's
    /// configuration, a Kubernetes object, `nft`), or a removal: not
    /// something the model can walk.
    NotModelled,
    /// The rule netdrop would have suggested opens more than this flow, or
    /// does not let it through: not printed, what is needed said instead.
    Withheld,
}

/// How an operator names an owner in a sentence.
pub fn owner_name(o: Owner) -> &'static str {
    match o {
        Owner::KubeProxy => "kube-proxy",
        Owner::Kubelet => "kubelet",
        Owner::Docker => "Docker",
        Owner::Flannel => "flannel",
        Owner::Calico => "Calico",
        Owner::Cilium => "Cilium",
        Owner::KubeRouter => "kube-router",
        Owner::Kindnet => "kindnet",
        Owner::CniPlugin => "a CNI plugin (bridge, portmap or firewall)",
        Owner::Firewalld => "firewalld",
        Owner::DistroFirewall => "the distribution's iptables service",
        Owner::Weave => "Weave Net",
        Owner::WeaveNpc => "Weave Net's NetworkPolicy controller (weave-npc)",
        Owner::Ufw => "ufw",
        Owner::Shorewall => "Shorewall",
        Owner::Csf => "csf (ConfigServer Firewall)",
        Owner::Ferm => "ferm",
        Owner::Custom => "no known agent (a hand-written rule, or an unknown tool's)",
    }
}

/// The pod CIDR in a sentence or command.
fn pod_cidr_text(c: &Cluster) -> String {
    match c.pod_cidrs.first() {
        Some(n) => n.to_string(),
        None => "<pod CIDR>".into(),
    }
}

/// Words and a fix for a drop decided in `rs`.
pub fn explain(
    rs: &Ruleset,
    owners: &OwnerContext,
    cluster: &Cluster,
    pkt: &Packet,
    decision: Decision,
) -> Explanation {
    let flow = flow_text(pkt);
    let place = match (decision.rule_no, &decision.rule) {
        (Some(n), Some(text)) => format!(
            "rule #{n} of {}/{} `{text}`",
            decision.table, decision.chain
        ),
        _ => format!("the DROP policy of {}/{}", decision.table, decision.chain),
    };
    let (explanation, fix) = sentences(rs, owners, cluster, pkt, &decision, &flow, &place);
    let tool = iptables_tool(rs);
    let (fix, fix_check) = checked(rs, cluster, pkt, &decision, &place, fix, &tool);
    let proto = netdrop_model::rules::proto_name(pkt.proto).unwrap_or("IP");
    Explanation {
        site_explanation: explanation.replacen(&flow, &format!("{proto} traffic"), 1),
        site_fix: without_addr(
            &without_addr(&fix, pkt.src, "<source>"),
            pkt.dst,
            "<destination>",
        ),
        assumptions: unknowns::assumptions(&decision.assumptions),
        decision,
        explanation,
        fix,
        fix_check,
    }
}

/// `fix` walked on the model before it is printed (see
/// [`netdrop_model::fix`]): kept and said so when it holds, completed when
/// the replies would still die, withheld when it opens more than the flow.
fn checked(
    rs: &Ruleset,
    ctx: &Cluster,
    p: &Packet,
    d: &Decision,
    place: &str,
    fix: FixText,
    tool: &str,
) -> (String, FixStatus) {
    use netdrop_model::fix::check_fix;
    let edits: Vec<Edit> = fix.added().into_iter().cloned().collect();
    let Some(site) = d.decider() else {
        return (fix.render(tool), FixStatus::NotModelled);
    };
    if edits.is_empty() {
        return (fix.render(tool), FixStatus::NotModelled);
    }
    let mut check = match check_fix(rs, ctx, p, site, &edits) {
        Ok(c) => c,
        Err(e) => {
            log::debug!("fix not walked: {e}");
            return (fix.render(tool), FixStatus::NotModelled);
        }
    };
    let cmds = fix.added_text(tool);
    let mut fix = fix;
    // Replies that would still die: accept the connection's packets at
    // the top of the chain the fix edits (not a port), and walk again.
    if check.holds()
        && let Some(dropped) = &check.replies_dropped_at
        && let Ok(reply) = Edit::new(
            &edits[0].table,
            &edits[0].chain,
            Some(1),
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        )
    {
        let mut with_reply = edits.clone();
        with_reply.push(reply.clone());
        if let Ok(c) = check_fix(rs, ctx, p, site, &with_reply)
            && c.holds()
            && c.replies_dropped_at.is_none()
        {
            fix = fix
                .say(format!(
                    " Its replies would still be dropped ({}): let the connection's packets back too: ",
                    netdrop_model::decision::step_notation(dropped)
                ))
                .run(RuleCommand::Add(reply))
                .say(".");
            check = c;
        }
    }

    if !check.passes {
        return (
            format!(
                "netdrop has no rule it can stand by here: the ACCEPT it would suggest ({cmds}) does not get this packet past {place} on its model of these rules. Accept this flow before that rule, or change it where its owner configures it."
            ),
            FixStatus::Withheld,
        );
    }
    if !check.opened.is_empty() {
        let opened = check
            .opened
            .iter()
            .map(|probe| {
                format!(
                    "{} ({})",
                    flow_text(&probe.pkt),
                    match probe.kind {
                        netdrop_model::fix::ProbeKind::OtherSource => "another source",
                        netdrop_model::fix::ProbeKind::OtherPort => "another port",
                        netdrop_model::fix::ProbeKind::OtherWay => "the other way",
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        return (
            format!(
                "No rule printed: the one netdrop would suggest ({cmds}) would also let through new connections that are dropped today: {opened} (walked on its model of these rules). What is needed: an ACCEPT before {place} that matches only this flow (`{}`), or the change where its owner configures it.",
                accept_words(ctx, p)
            ),
            FixStatus::Withheld,
        );
    }
    let mut probed: Vec<&str> = check
        .probed
        .iter()
        .map(|k| match k {
            netdrop_model::fix::ProbeKind::OtherSource => "from other sources",
            netdrop_model::fix::ProbeKind::OtherPort => "to other ports",
            netdrop_model::fix::ProbeKind::OtherWay => "the other way",
        })
        .collect();
    let last = probed.pop();
    let probed = match (probed.is_empty(), last) {
        (_, None) => String::new(),
        (true, Some(l)) => format!("; new connections {l} keep their verdicts"),
        (false, Some(l)) => format!(
            "; new connections {} and {l} keep their verdicts",
            probed.join(", ")
        ),
    };
    let mut fix = fix.say(format!(
        " (Walked on netdrop's model of these rules: this packet then gets past {place}{probed}.)"
    ));
    if let Some(next) = &check.then_dropped_at {
        fix = fix.say(format!(
            " It would then be dropped by {}: see that rule too.",
            netdrop_model::decision::step_notation(next)
        ));
    }
    (fix.render(tool), FixStatus::Proven)
}

/// `text` with address `addr` (not one that merely starts like it:
/// 10.0.0.2 in 10.0.0.23) written as `with`: a site's words name no flow.
fn without_addr(text: &str, addr: std::net::IpAddr, with: &str) -> String {
    let a = addr.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(&a) {
        let after = &rest[i + a.len()..];
        let before_ok = !rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_hexdigit() || c == '.' || c == ':');
        let after_ok = !after.chars().next().is_some_and(|c| {
            c.is_ascii_hexdigit()
                || c == '.' && after[1..].starts_with(|d: char| d.is_ascii_digit())
        });
        out.push_str(&rest[..i]);
        out.push_str(if before_ok && after_ok { with } else { &a });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The command that edits `rs`'s iptables tables: `ip6tables` for IPv6,
/// `iptables-legacy`/`iptables-nft` where the node has both backends (plain
/// `iptables` there edits only one of them).
pub(crate) fn iptables_tool(rs: &Ruleset) -> String {
    let base = if rs.family == netdrop_model::Family::Ipv6 {
        "ip6tables"
    } else {
        "iptables"
    };
    match rs.backend_suffix.as_deref() {
        Some(suffix) => format!("{base}-{suffix}"),
        None => base.to_owned(),
    }
}

/// Explains the first drop of a packet's walk (see
/// [`netdrop_model::check::first_drop`]); `None` if every outcome accepts.
pub fn explain_packet(
    rs: &Ruleset,
    owners: &OwnerContext,
    cluster: &Cluster,
    pkt: &Packet,
) -> Option<Explanation> {
    let d = netdrop_model::check::first_drop(rs, owners, pkt)?;
    Some(explain(rs, owners, cluster, pkt, d))
}

/// A packet in words: its flow and devices.
pub fn flow_text(p: &Packet) -> String {
    let proto = netdrop_model::rules::proto_name(p.proto)
        .map(str::to_owned)
        .unwrap_or_else(|| p.proto.to_string());
    let mut s = flow_notation(&proto, p.src, p.sport, p.dst, p.dport);
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
fn port_role(ctx: &Cluster, p: &Packet) -> Option<&'static str> {
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

fn sentences(
    rs: &Ruleset,
    owners: &OwnerContext,
    ctx: &Cluster,
    p: &Packet,
    d: &Decision,
    flow: &str,
    place: &str,
) -> (String, FixText) {
    let (owner, leftover, service) = (d.owner, d.leftover, d.service.as_deref());
    let target = d.target(rs);
    let text = d.rule.as_deref().unwrap_or_default();
    let verb = if d.verdict == Verdict::Reject {
        format!(
            "rejects it ({})",
            d.reject_with.as_deref().unwrap_or("icmp-port-unreachable")
        )
    } else {
        "drops it".to_owned()
    };
    let pod = pod_cidr_text(ctx);
    let shadow = d
        .decider()
        .and_then(|step| shadowed_accept(rs, p, step))
        .map(|s| {
            format!(
                " It shadows rule #{} of {}/{} `{}`, which would accept this packet.",
                s.rule_no.unwrap_or_default(),
                s.table,
                s.chain,
                s.text
            )
        })
        .unwrap_or_default();

    if leftover && d.table.contains(' ') {
        // A native table of an agent that is gone: the table goes as a whole.
        return (
            format!(
                "{flow}: {place} {verb}. Table {} belongs to {}, which is not running on this node (none of its interfaces {} exist): a leftover of an uninstalled {} still hooked into {}.{shadow}",
                d.table,
                owner_name(owner),
                owner.signature_interfaces().join(", "),
                owner_name(owner),
                p.hook.as_str()
            ),
            match NftTable::of(&d.table) {
                Some(t) => FixText::words("Remove the leftover table: ")
                    .nft(NftCommand::DeleteTable { table: t.clone() })
                    .say(" (check first with ")
                    .nft(NftCommand::ListTable { table: t })
                    .say("); if it was persisted (/etc/nftables.conf), remove it there too."),
                None => FixText::words("Remove the leftover table."),
            },
        );
    }
    if leftover {
        let hook_jump = d.path.first().filter(|s| s.rule_no.is_some());
        let removal = match hook_jump {
            Some(j) => {
                let rule = j.text.trim_start_matches("-A ").trim();
                let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                RuleCommand::DeleteRule {
                    table: j.table.clone(),
                    chain: chain.to_owned(),
                    spec: spec.to_owned(),
                }
            }
            None => RuleCommand::RemoveChain {
                table: d.table.clone(),
                chain: d.chain.clone(),
            },
        };
        let prefix = leftover_prefix(owner);
        return (
            format!(
                "{flow}: {place} {verb}. It belongs to {}, which is not running on this node (none of its interfaces {} exist): a leftover of an uninstalled {} still hooked into {}/{}.{shadow}",
                owner_name(owner),
                owner.signature_interfaces().join(", "),
                owner_name(owner),
                d.table,
                p.hook.as_str()
            ),
            FixText::words("Unhook and remove the leftover chains: ")
                .run(removal)
                .say(format!(
                    ", then delete the rest of them: `iptables-save | grep -v -e '{prefix}' | iptables-restore`. If they were not persisted, a reboot also clears them."
                )),
        );
    }

    // A native nftables table: nft's own commands, for a table nobody
    // netdrop knows owns, and for any owner's chain policy.
    let native = NftTable::of(&d.table);
    let policy = d.rule_no.is_none() && !is_generator(owner);
    if let Some(t) = &native
        && (owner == Owner::Custom || policy)
    {
        return native_sentences(ctx, p, d, t, [flow, place, &verb, &shadow]);
    }

    // Built-in chain policy (a generator's policy is fixed through the
    // generator, below, like its rules).
    if policy {
        let by = match owner {
            Owner::Docker => "which Docker sets when it enables IP forwarding".to_owned(),
            o => format!("set by {}", owner_name(o)),
        };
        let why = match p.hook {
            Hook::Forward => {
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
        let words = accept_words(ctx, p);
        let fix = match p.hook {
            // A reply: its connection was let in; accept the connection's
            // packets, not the port (which would open it to anyone).
            h if is_reply(p) => FixText::words(
                "Accept the packets of connections already accepted before the policy: ",
            )
            .and(insert(
                &d.table,
                h.as_str(),
                Some(1),
                "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            ))
            .say(format!(" (not the port: this packet is a reply). {PERSIST}")),
            // Docker's own place for rules of the node's: it never rewrites it.
            Hook::Forward if has_chain(rs, "filter", "DOCKER-USER") => FixText::words(
                "Accept this traffic in DOCKER-USER, the chain Docker leaves to the node's own rules: ",
            )
            .and(insert("filter", "DOCKER-USER", None, &format!("{words} -j ACCEPT")))
            .say(format!(". {PERSIST}")),
            h => FixText::words("Accept it before the policy: ")
                .and(insert(&d.table, h.as_str(), None, &format!("{words} -j ACCEPT")))
                .say(format!(". {PERSIST}")),
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
        (Owner::KubeProxy, Some(Target::Reject { .. } | Target::Drop))
            if text.contains("has no endpoints") || via_no_endpoints(d) => (
            format!("{flow}: Service {} has no ready endpoints, so kube-proxy {verb} ({place}).", service.unwrap_or("?")),
            service_fix(service, "Check that the Service's pods exist, are Ready and match its selector").into(),
        ),
        (Owner::KubeProxy, Some(Target::Drop)) if text.contains("has no local endpoints") => (
            format!("{flow}: Service {} has externalTrafficPolicy: Local and no endpoint on this node, so kube-proxy {verb} ({place}).", service.unwrap_or("?")),
            service_fix(service, "Run an endpoint on every node that receives external traffic (e.g. a DaemonSet), or set externalTrafficPolicy: Cluster").into(),
        ),
        (Owner::KubeProxy, Some(Target::Drop))
            if d.chain == "KUBE-PROXY-FIREWALL" || d.chain.starts_with("firewall-") => (
            format!("{flow}: the source is outside the loadBalancerSourceRanges of Service {}, so kube-proxy {verb} ({place}).", service.unwrap_or("?")),
            source_range_fix(service, p.src).into(),
        ),
        (Owner::KubeProxy, Some(Target::Drop)) if text.contains("INVALID") => (
            format!("{flow}: conntrack considers the packet INVALID (often out-of-window TCP or asymmetric routing), and kube-proxy {verb} ({place})."),
            FixText::words("Find why conntrack loses the flow (asymmetric routes, MTU, conntrack table full: `conntrack -S`); as a workaround `sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=1` (kube-proxy ≥ 1.28 sets it with --conntrack-tcp-be-liberal), persisted in /etc/sysctl.d/."),
        ),
        (Owner::Kubelet, Some(Target::Drop)) => (
            format!("{flow}: kubelet's KUBE-FIREWALL {verb}: traffic to 127.0.0.0/8 from outside the node is blocked ({place})."),
            FixText::words("Do not send traffic to 127.0.0.0/8 from other hosts or pods; if it is a NodePort on localhost, use the node's address instead."),
        ),
        (Owner::Docker, Some(Target::Drop)) if d.chain.starts_with("DOCKER-ISOLATION") => (
            format!("{flow}: Docker's network isolation {verb} ({place}): traffic between two Docker networks is blocked."),
            FixText::words("Connect both containers to one Docker network (`docker network connect`), or add an ACCEPT in DOCKER-USER for this flow."),
        ),
        (Owner::CniPlugin, Some(Target::Drop)) if d.chain.starts_with("CNI-ISOLATION") => {
            let (from, to) = (p.in_iface.as_deref().unwrap_or("?"), p.out_iface.as_deref().unwrap_or("?"));
            (
                format!("{flow}: the CNI firewall plugin's bridge isolation {verb} ({place}): its network config has `\"ingressPolicy\": \"same-bridge\"`, so pods on {from} cannot reach pods on {to}."),
                {
                    let (src, dst) = (net_of(ctx, p.src), net_of(ctx, p.dst));
                    let chain = "CNI-ISOLATION-STAGE-1";
                    let (there, back) = (
                        format!("-i {from} -o {to} -s {src} -d {dst} -j RETURN"),
                        format!("-i {to} -o {from} -s {dst} -d {src} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"),
                    );
                    FixText::words("If these networks should talk, set `\"ingressPolicy\": \"open\"` for the firewall plugin in their network configs (/etc/cni/net.d/); pods get the change when they are next set up. Until then, both ways (replies and ICMP errors come back through the same isolation): ")
                        .and(inserts("filter", chain, None, &[&there, &back]))
                        .say(" (the plugin leaves them; delete them when the configs change).")
                },
            )
        }
        // kube-router names the pod it enforces for in the rule's comment:
        // the policy to change is one selecting that pod, in its namespace.
        (Owner::KubeRouter, _) if kube_router_pod(text).is_some() => {
            let (ns, name, ingress) = kube_router_pod(text).unwrap_or_default();
            let dir = if ingress { Direction::Ingress } else { Direction::Egress };
            (
                format!("{flow}: {place} {verb}: kube-router enforces NetworkPolicy for pod {ns}/{name}, and no NetworkPolicy that selects it allows this {} traffic.{shadow}", dir.as_str()),
                format!("See the policies that select the pod: `kubectl -n {ns} get networkpolicy` (and `kubectl -n {ns} get pod {name} --show-labels`). If this traffic should pass, allow it in one of them, or a new one selecting the pod: {}. kube-router applies it by itself; an iptables edit would be undone at its next sync.", policy_rule(ctx, p, dir)).into(),
            )
        }
        // Other NetworkPolicy engines: the direction from the chain, the pod
        // by its address (its name needs the cluster: `kubectl` finds it).
        (o, _) if o.profile().fixes == FixesThrough::NetworkPolicy => {
            let engine = owner_name(owner);
            match policy_direction(owner, &d.chain) {
                Some(dir) => {
                    let pod = match dir {
                        Direction::Ingress => p.dst,
                        Direction::Egress => p.src,
                    };
                    (
                        format!("{flow}: {place} {verb}: {engine} enforces NetworkPolicy for the pod at {pod}, and no policy that selects it allows this {} traffic.{shadow}", dir.as_str()),
                        format!("{} If this traffic should pass, allow it in one of them, or a new one selecting the pod: {}. {engine} applies it by itself; an iptables rule before its chains would bypass the policy, and its next sync would undo it.", pod_policies(pod, None), policy_rule(ctx, p, dir)).into(),
                    )
                }
                None => (
                    format!("{flow}: {place} {verb}: a NetworkPolicy enforced by {engine} does not allow this traffic.{shadow}"),
                    format!("Find the policies that select the source pod (egress) and the destination pod (ingress): `kubectl get pods -A -o wide --field-selector status.podIP={}` (and {}), then `kubectl -n <namespace> get networkpolicy`; allow this flow in the one that denies it ({engine} applies it; an iptables edit would bypass the policy).", p.src, p.dst).into(),
                ),
            }
        }
        // Firewall generators: an iptables edit is lost at their next
        // reload; the fix goes into their own configuration.
        (Owner::Ufw, _) => {
            let proto = netdrop_model::rules::proto_name(p.proto).unwrap_or("any");
            let port = tcp_udp_port(p).map(|d| format!(" port {d}")).unwrap_or_default();
            let fix = match (p.hook, p.in_iface.as_deref(), p.out_iface.as_deref()) {
                (Hook::Forward, Some(i), Some(o)) => format!("`ufw route allow in on {i} out on {o} from {} to {} proto {proto}{port}` (routed traffic: ufw's FORWARD rules)", net_of(ctx, p.src), net_of(ctx, p.dst)),
                _ => format!("`ufw allow proto {proto} from {} to any{port}`", p.src),
            };
            (
                format!("{flow}: {place} {verb}: ufw's rules do not allow it.{shadow}"),
                format!("Allow it through ufw: {fix}. ufw writes these chains itself (/etc/ufw/user.rules): an `iptables` edit would be lost at the next `ufw reload`.").into(),
            )
        }
        (Owner::Shorewall, _) => {
            let (from, to) = shorewall_zones(&d.chain);
            let proto = netdrop_model::rules::proto_name(p.proto).unwrap_or("-");
            let port = tcp_udp_port(p).map_or_else(|| "-".into(), |d| d.to_string());
            (
                format!("{flow}: {place} {verb}: the Shorewall policy from zone {from} to zone {to} does not allow it (Shorewall compiles /etc/shorewall into the whole ruleset).{shadow}"),
                format!("Add to /etc/shorewall/rules: `ACCEPT {from}:{} {to} {proto} {port}`, then `shorewall check && shorewall reload`. An `iptables` edit would be lost at the next reload.", p.src).into(),
            )
        }
        (Owner::Csf, _) => {
            let proto = netdrop_model::rules::proto_name(p.proto).unwrap_or("tcp");
            let line = match tcp_udp_port(p) {
                Some(port) => format!("{proto}|in|d={port}|s={}", p.src),
                None => format!("{}", p.src),
            };
            (
                format!("{flow}: {place} {verb}: csf (ConfigServer Firewall) does not allow it.{shadow}"),
                format!("Allow just this in /etc/csf/csf.allow: `{line}`, then `csf -r`. csf rewrites the whole ruleset: an `iptables` edit would be lost at its next restart.").into(),
            )
        }
        (Owner::Ferm, _) => {
            let conf = rs
                .ferm_conf
                .as_deref()
                .map_or_else(|| "/etc/ferm/ferm.conf".to_owned(), |c| c.display().to_string());
            let domain = if p.src.is_ipv6() { "ip6" } else { "ip" };
            let table = if d.table.contains(' ') { "filter" } else { d.table.as_str() };
            (
                format!("{flow}: {place} {verb}: ferm writes these rules from {conf}, and nothing in it accepts this before.{shadow}"),
                format!(
                    "Allow it in {conf}: in `domain {domain} table {table} chain {}`, before the rule that drops it: `{}`; then `ferm {conf}` (or `systemctl reload ferm`). ferm rewrites the tables from it: an `iptables` edit would be lost at its next run.",
                    p.hook.as_str(),
                    ferm_words(ctx, p)
                )
                .into(),
            )
        }
        (Owner::DistroFirewall, _) => {
            let role = port_role(ctx, p);
            let accept = accept_rule(ctx, p, &d.table, &d.chain, rule_no);
            (
                format!(
                    "{flow}: {place} {verb}. It is the catch-all reject of the distribution's iptables service (iptables-services, /etc/sysconfig/iptables), and nothing before it accepts {}.{shadow}",
                    role.map(str::to_owned).unwrap_or_else(|| if ctx.is_pod(p.src) || ctx.is_pod(p.dst) { format!("pod traffic ({pod})") } else { "this traffic".into() })
                ),
                FixText::words("Insert an ACCEPT before it: ").and(accept).say(". Make it permanent with `service iptables save` (or edit /etc/sysconfig/iptables), or stop the service if the node does not need it: `systemctl disable --now iptables`."),
            )
        }
        (Owner::Firewalld, _) if firewalld_policy(&d.chain).is_some() => {
            let policy = firewalld_policy(&d.chain).unwrap_or_default();
            let proto = if p.proto == 6 { "tcp" } else { "udp" };
            let scope = FirewalldScope::Policy(policy.to_owned());
            let run = |changes| FixText::default().firewalld(FirewalldCommand { changes });
            let fix = match (p.proto, p.dport) {
                (6 | 17, Some(port)) if !ctx.is_pod(p.src) => run(vec![FirewalldChange::AddPort { scope, port, proto: proto.into() }]),
                _ => run(vec![FirewalldChange::AcceptSource { scope, ipv6: p.src.is_ipv6(), source: pod.to_string() }]).say(" (pod traffic then passes the policy)"),
            };
            (
                format!("{flow}: firewalld's policy {policy} {verb} ({place}): nothing in the policy allows it.{shadow}"),
                fix.say(" (firewalld keeps --permanent rules across reboots)."),
            )
        }
        (Owner::Firewalld, _) => {
            let zone = firewalld_zone(&d.chain);
            let scope = zone.map_or(FirewalldScope::Default, |z| FirewalldScope::Zone(z.to_owned()));
            let run = |changes| FixText::default().firewalld(FirewalldCommand { changes });
            let trusted = || run(vec![FirewalldChange::AddSource { zone: "trusted".into(), source: pod.to_string() }]).say(" (pod traffic then meets the trusted zone, which accepts it)");
            let fix = match (p.proto, p.dport) {
                (6 | 17, Some(port)) if !ctx.is_pod(p.dst) => run(vec![FirewalldChange::AddPort { scope, port, proto: if p.proto == 6 { "tcp" } else { "udp" }.into() }]),
                _ if ctx.is_pod(p.src) => trusted(),
                // Into the pods from outside: forwarded within the zone once
                // the pods' device is one of its interfaces (intra-zone
                // forwarding accepts traffic out of the zone's own
                // interfaces only, not the default zone's catch-all).
                _ => match (zone, p.out_iface.as_deref(), p.hook) {
                    (Some(z), Some(out), Hook::Forward) => run(vec![
                        FirewalldChange::AddInterface { zone: z.into(), iface: out.into() },
                        FirewalldChange::AddForward { zone: z.into() },
                    ])
                    .say(format!(" (intra-zone forwarding: traffic entering zone {z} may then leave through {out})")),
                    _ => trusted(),
                },
            };
            let in_zone = zone.map(|z| format!(" of zone {z}")).unwrap_or_default();
            (format!("{flow}: firewalld{in_zone} {verb} ({place}): nothing in the zone allows it.{shadow}"), fix.say(" (firewalld keeps --permanent rules across reboots)."))
        }
        // A native table's rule: nft's own commands, never iptables'.
        _ if let Some(t) = &native => native_sentences(ctx, p, d, t, [flow, place, &verb, &shadow]),
        _ => {
            let role = port_role(ctx, p).map(|r| format!(" This is {r}.")).unwrap_or_default();
            (
                format!("{flow}: {place} {verb}; it belongs to {}.{role}{shadow}", owner_name(owner)),
                FixText::words("If the rule is not intended, delete it: ")
                    .run(RuleCommand::Delete {
                        table: d.table.clone(),
                        chain: d.chain.clone(),
                        rule_no,
                    })
                    .say("; otherwise insert an ACCEPT before it: ")
                    .and(accept_rule(ctx, p, &d.table, &d.chain, rule_no))
                    .say(format!(". {PERSIST}")),
            )
        }
    }
}

/// A drop in a native nftables table that no owner's own words cover:
/// nft's commands on the table itself (an `iptables` command cannot reach
/// it), typed (`NftCommand`) until printed. A table an agent owns is the
/// agent's to rewrite, said so; Docker's is overridden by a mark Docker
/// accepts, as its nftables backend asks (that recipe still words: a
/// table, a base chain and a daemon setting). Its last argument: the flow,
/// the place, the verb and the shadowing accept, as `sentences` words them.
fn native_sentences(
    ctx: &Cluster,
    p: &Packet,
    d: &Decision,
    nft_table: &NftTable,
    [flow, place, verb, shadow]: [&str; 4],
) -> (String, FixText) {
    let (table, chain, owner) = (&d.table, &d.chain, d.owner);
    let matches = nft_match_words(ctx, p);
    let accept = format!("{matches} accept");
    let persist = if matches!(owner, Owner::Custom) {
        "Make it permanent where the table is loaded from (/etc/nftables.conf, or the tool that writes it).".to_owned()
    } else {
        format!(
            "{} writes this table itself: an edit to it lasts until its next sync or restart, so make the change in {}'s own configuration to keep it.",
            owner_name(owner),
            owner_name(owner)
        )
    };
    let whose = if matches!(owner, Owner::Custom) {
        "it belongs to a native nftables table no known agent owns".to_owned()
    } else {
        format!(
            "it belongs to {}'s nftables table {table}",
            owner_name(owner)
        )
    };
    if owner == Owner::Docker {
        // Docker's nftables backend has no DOCKER-USER: an accept in
        // another table does not save a packet from Docker's drop, a mark
        // it was told to accept does (dockerd --bridge-accept-fwmark).
        let hook = p.hook.as_str().to_lowercase();
        let family = table.split(' ').next().unwrap_or("ip");
        return (
            match d.rule_no {
                Some(_) => format!("{flow}: {place} {verb}; {whose}.{shadow}"),
                None => format!(
                    "{flow} reaches the end of {table}/{chain} and falls to its policy drop, set by Docker."
                ),
            },
            format!(
                "Docker's nftables tables are its own (no DOCKER-USER; an accept in another table does not override its drop): mark this traffic before Docker's chain and have Docker accept the mark: `nft add table {family} netdrop-docker-accept; nft add chain {family} netdrop-docker-accept {hook} '{{ type filter hook {hook} priority filter - 1; }}'; nft add rule {family} netdrop-docker-accept {hook} {matches} meta mark set meta mark or 0x1000000`, then `\"bridge-accept-fwmark\": \"0x1000000/0x1000000\"` in /etc/docker/daemon.json and restart Docker (pick a mark bit nothing else on the node uses). Make the table permanent in /etc/nftables.conf."
            )
            .into(),
        );
    }
    match (d.rule_no, d.rule_handle) {
        (Some(_), Some(h)) => (
            format!("{flow}: {place} {verb}; {whose}.{shadow}"),
            FixText::words("If the rule is not intended, delete it: ")
                .nft(NftCommand::DeleteRule {
                    table: nft_table.clone(),
                    chain: chain.clone(),
                    handle: h,
                })
                .say("; otherwise accept before it: ")
                .nft(NftCommand::InsertRule {
                    table: nft_table.clone(),
                    chain: chain.clone(),
                    position: NftPosition::Handle(h),
                    statement: accept,
                })
                .say(format!(". {persist}")),
        ),
        (Some(_), None) => (
            format!("{flow}: {place} {verb}; {whose}.{shadow}"),
            FixText::words("Accept it before that rule (")
                .nft(NftCommand::ListChain {
                    table: nft_table.clone(),
                    chain: chain.clone(),
                })
                .say(" shows its handle H): ")
                .nft(NftCommand::InsertRule {
                    table: nft_table.clone(),
                    chain: chain.clone(),
                    position: NftPosition::Unknown,
                    statement: accept,
                })
                .say(format!(". {persist}")),
        ),
        (None, _) => (
            match owner {
                Owner::Custom => format!(
                    "{flow} reaches the end of {table}/{chain} and falls to its policy drop."
                ),
                o => format!(
                    "{flow} reaches the end of {table}/{chain} and falls to its policy drop, set by {}.",
                    owner_name(o)
                ),
            },
            FixText::words("Accept it before the policy: ")
                .nft(NftCommand::AddRule {
                    table: nft_table.clone(),
                    chain: chain.clone(),
                    statement: accept,
                })
                .say(format!(". {persist}")),
        ),
    }
}

/// An insert a fix runs, typed: at `at`, or (`None`) at the top, printed
/// without a position.
fn insert(table: &str, chain: &str, at: Option<usize>, spec: &str) -> FixText {
    inserts(table, chain, at, &[spec])
}

/// Inserts into `chain` at `at` (`None`: the top, printed without a
/// position), pasted as one command (`a && b`). Rules netdrop's model
/// cannot read stay words (printed, not walked).
fn inserts(table: &str, chain: &str, at: Option<usize>, specs: &[&str]) -> FixText {
    match specs
        .iter()
        .map(|spec| Edit::new(table, chain, Some(at.unwrap_or(1)), spec))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(edits) => FixText::default().run_adds(edits, at.is_none()),
        Err(e) => {
            log::debug!("fix rules not typed: {e}");
            let t = if table == "filter" {
                String::new()
            } else {
                format!("-t {table} ")
            };
            let pos = at.map(|n| format!(" {n}")).unwrap_or_default();
            FixText::words(format!(
                "`{}`",
                specs
                    .iter()
                    .map(|spec| format!("iptables {t}-I {chain}{pos} {spec}"))
                    .collect::<Vec<_>>()
                    .join(" && ")
            ))
        }
    }
}

/// Tools that write the whole ruleset (or, ufw, its chains and the
/// policies): an `iptables` edit is undone at their next reload, so their
/// fixes go into their own configuration.
fn is_generator(owner: Owner) -> bool {
    owner.profile().fixes == FixesThrough::Generator
}

/// What an owner's chains share, to remove its leftovers.
pub(crate) fn leftover_prefix(owner: Owner) -> &'static str {
    owner.profile().leftover_prefix
}

/// Which side of a flow a NetworkPolicy rule is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// The destination pod's policies (`from:`).
    Ingress,
    /// The source pod's policies (`to:`).
    Egress,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// The policy direction a NetworkPolicy engine's chain enforces: Calico's
/// to-workload (`cali-tw-`) and inbound-policy (`cali-pi-`) chains are the
/// destination pod's ingress, from-workload and outbound ones its egress;
/// weave-npc's `WEAVE-NPC-EGRESS*` chains are egress, the rest ingress.
fn policy_direction(owner: Owner, chain: &str) -> Option<Direction> {
    match owner {
        Owner::Calico if chain.starts_with("cali-tw-") || chain.starts_with("cali-pi-") => {
            Some(Direction::Ingress)
        }
        Owner::Calico if chain.starts_with("cali-fw-") || chain.starts_with("cali-po-") => {
            Some(Direction::Egress)
        }
        Owner::WeaveNpc if chain.contains("EGRESS") => Some(Direction::Egress),
        Owner::WeaveNpc => Some(Direction::Ingress),
        _ => None,
    }
}

/// How a fix finds the policies that select the pod at `ip`: by its name
/// when the pod is known (the node's runtime or the API named it), else
/// by a `kubectl` that finds it by address. `Record::set_pods` swaps one
/// for the other when the pod is named after the fix was written.
pub fn pod_policies(ip: std::net::IpAddr, pod: Option<(&str, &str)>) -> String {
    match pod {
        Some((ns, name)) => format!(
            "See the policies that select pod {ns}/{name}: `kubectl -n {ns} get networkpolicy` (and `kubectl -n {ns} get pod {name} --show-labels`)."
        ),
        None => format!(
            "Find the pod and the policies that select it: `kubectl get pods -A -o wide --field-selector status.podIP={ip}`, then `kubectl -n <its namespace> get networkpolicy`."
        ),
    }
}

/// The NetworkPolicy rule that allows this packet, in the policy's words.
fn policy_rule(ctx: &Cluster, p: &Packet, dir: Direction) -> String {
    let (peer, key) = match dir {
        Direction::Ingress => (p.src, "from"),
        Direction::Egress => (p.dst, "to"),
    };
    let peer = if ctx.is_pod(peer) {
        format!("a podSelector (or namespaceSelector) matching the pod at {peer}")
    } else {
        format!("`ipBlock: {{cidr: {}}}`", ipnet::IpNet::from(peer))
    };
    let port = match (p.proto, p.dport) {
        (6 | 17 | 132, Some(port)) => format!(
            ", `ports: [{{protocol: {}, port: {port}}}]`",
            netdrop_model::rules::proto_name(p.proto)
                .unwrap_or("TCP")
                .to_ascii_uppercase()
        ),
        _ => String::new(),
    };
    format!("an {} rule `{key}:` {peer}{port}", dir.as_str())
}

/// The destination port of a TCP or UDP packet.
fn tcp_udp_port(p: &Packet) -> Option<u16> {
    p.dport.filter(|_| matches!(p.proto, 6 | 17))
}

/// The pod a kube-router pod-firewall rule enforces for, from its comment
/// (`… traffic destined for POD name:web-0 namespace: shop`, or `… from
/// POD …`): (namespace, name, ingress).
fn kube_router_pod(rule: &str) -> Option<(String, String, bool)> {
    let at = rule.find("POD name:")?;
    let before = &rule[..at];
    let ingress = before.contains("destined");
    let rest = &rule[at + "POD name:".len()..];
    let name = rest.split_whitespace().next()?.to_owned();
    let ns = rest
        .split_once("namespace:")?
        .1
        .split(|c: char| c.is_whitespace() || c == '"')
        .find(|w| !w.is_empty())?
        .to_owned();
    Some((ns, name, ingress))
}

/// The pod CIDR holding `a`, or `a` itself.
fn net_of(ctx: &Cluster, a: std::net::IpAddr) -> String {
    ctx.pod_cidrs
        .iter()
        .find(|n| n.contains(&a))
        .map_or_else(|| a.to_string(), |n| n.to_string())
}

/// The zones of a Shorewall zone-pair chain (`net2fw`, `loc-net`), or
/// placeholders.
fn shorewall_zones(chain: &str) -> (String, String) {
    let pair = chain
        .split_once('2')
        .or_else(|| chain.split_once('-'))
        .filter(|(a, b)| {
            let zone = |z: &str| !z.is_empty() && z.chars().all(|c| c.is_ascii_alphanumeric());
            zone(a) && zone(b)
        });
    match pair {
        Some((a, b)) => (a.to_owned(), b.to_owned()),
        None => ("<source zone>".into(), "<destination zone>".into()),
    }
}

/// Lets `src` through a Service's loadBalancerSourceRanges.
fn source_range_fix(service: Option<&str>, src: std::net::IpAddr) -> String {
    let range = ipnet::IpNet::from(src);
    match service.and_then(|s| s.split_once('/')) {
        Some((ns, rest)) => {
            let name = rest.split(':').next().unwrap_or(rest);
            format!(
                "If {src} should reach it, add its range to the Service's spec.loadBalancerSourceRanges: `kubectl -n {ns} patch service {name} --type=json -p '[{{\"op\":\"add\",\"path\":\"/spec/loadBalancerSourceRanges/-\",\"value\":\"{range}\"}}]'` (kube-proxy updates its rules by itself); otherwise the drop is the Service doing its job."
            )
        }
        None => format!(
            "If {src} should reach it, add {range} to the Service's spec.loadBalancerSourceRanges; otherwise the drop is the Service doing its job."
        ),
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

/// [`accept_words`] in ferm's configuration language: one ACCEPT line.
fn ferm_words(ctx: &Cluster, p: &Packet) -> String {
    let w = match FlowClass::of(ctx, p) {
        FlowClass::Reply => {
            return "mod conntrack ctstate (ESTABLISHED RELATED) ACCEPT;".to_owned();
        }
        FlowClass::Pods { src, dst } => {
            format!("saddr {} daddr {}", net_text(&src), net_text(&dst))
        }
        FlowClass::Egress { src } => format!("saddr {}", net_text(&src)),
        FlowClass::Flow {
            src,
            dst,
            proto,
            dport,
            ..
        } => {
            let mut w = format!("saddr {}", net_text(&src));
            if let Some(d) = dst {
                w.push_str(&format!(" daddr {}", net_text(&d)));
            }
            if let Some(name) = netdrop_model::rules::proto_name(proto) {
                w.push_str(&format!(" proto {name}"));
                if let Some(port) = dport {
                    w.push_str(&format!(" dport {port}"));
                }
            }
            w
        }
    };
    format!("{w} ACCEPT;")
}

/// A network as a rule names it: a single address without its `/32`.
fn net_text(n: &ipnet::IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// The narrowest iptables words that still match this packet's flow: its
/// [`FlowClass`] (between pods the two pod CIDRs, the pods for their
/// egress, a reply's connection, else source, destination, protocol and
/// port).
fn accept_words(ctx: &Cluster, p: &Packet) -> String {
    match FlowClass::of(ctx, p) {
        FlowClass::Reply => "-m conntrack --ctstate RELATED,ESTABLISHED".to_owned(),
        FlowClass::Pods { src, dst } => format!("-s {} -d {}", net_text(&src), net_text(&dst)),
        FlowClass::Egress { src } => format!("-s {}", net_text(&src)),
        FlowClass::Flow {
            src,
            dst,
            proto,
            dport,
            icmp_type,
        } => {
            let mut w = format!("-s {}", net_text(&src));
            if let Some(d) = dst {
                w.push_str(&format!(" -d {}", net_text(&d)));
            }
            if let Some(name) = netdrop_model::rules::proto_name(proto) {
                w.push_str(&format!(" -p {name}"));
                if let Some(port) = dport {
                    w.push_str(&format!(" --dport {port}"));
                }
                if let Some(t) = icmp_type {
                    let opt = if proto == 1 {
                        "--icmp-type"
                    } else {
                        "--icmpv6-type"
                    };
                    w.push_str(&format!(" {opt} {t}"));
                }
            }
            w
        }
    }
}

/// kube-proxy's nftables mode sent the packet to its drop or reject
/// through the no-endpoint maps.
fn via_no_endpoints(d: &Decision) -> bool {
    d.table.contains(' ') && d.path.iter().any(|s| s.text.contains("@no-endpoint-"))
}

/// The packet's flow in nft's words, for an accept rule: as narrow as
/// [`accept_words`].
fn nft_match_words(ctx: &Cluster, p: &Packet) -> String {
    let ip = if p.src.is_ipv6() { "ip6" } else { "ip" };
    match FlowClass::of(ctx, p) {
        FlowClass::Reply => "ct state established,related".to_owned(),
        FlowClass::Pods { src, dst } => format!(
            "{ip} saddr {} {ip} daddr {}",
            net_text(&src),
            net_text(&dst)
        ),
        FlowClass::Egress { src } => format!("{ip} saddr {}", net_text(&src)),
        FlowClass::Flow {
            src,
            dst,
            proto,
            dport,
            ..
        } => {
            let mut w = format!("{ip} saddr {}", net_text(&src));
            if let Some(d) = dst {
                w.push_str(&format!(" {ip} daddr {}", net_text(&d)));
            }
            match (netdrop_model::rules::proto_name(proto), dport) {
                (Some(name), Some(port)) => w.push_str(&format!(" {name} dport {port}")),
                (Some(name), None) => w.push_str(&format!(" meta l4proto {name}")),
                _ => {}
            }
            w
        }
    }
}

/// A packet of a connection conntrack already knows (a reply, or one it
/// relates to another): a fix accepts the connection, not its port.
fn is_reply(p: &Packet) -> bool {
    matches!(
        p.ct,
        netdrop_model::rules::CtState::Established | netdrop_model::rules::CtState::Related
    )
}

fn accept_rule(ctx: &Cluster, p: &Packet, table: &str, chain: &str, rule_no: usize) -> FixText {
    if is_reply(p) {
        // At the top of the hook's own chain: the dropping chain may be
        // shared (a LOGGING chain every path jumps to).
        insert(
            "filter",
            p.hook.as_str(),
            Some(1),
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        )
        .say(" (the packet is part of a connection already accepted: accept those, not its port, which would open the port to new connections too)")
    } else {
        let peers = if !ctx.is_pod(p.src) && port_role(ctx, p).is_some() {
            " (to let every node in, its network in `-s`, and no wider)"
        } else {
            ""
        };
        insert(
            table,
            chain,
            Some(rule_no),
            &format!("{} -j ACCEPT", accept_words(ctx, p)),
        )
        .say(peers)
    }
}

fn has_chain(rs: &Ruleset, table: &str, chain: &str) -> bool {
    rs.tables.get(table).and_then(|t| t.chain(chain)).is_some()
}

/// A drop attributed to a rule, when the packet was bridged: why iptables
/// saw a bridged packet at all.
pub fn bridged(
    explanation: &str,
    bridge: Option<&str>,
    ports: &netdrop_model::BridgePorts,
) -> String {
    format!(
        "{explanation} The packet was bridged by {} from port {} to {}: iptables sees it only because br_netfilter is on (net.bridge.bridge-nf-call-iptables=1, as kube-proxy requires).",
        bridge.unwrap_or("the bridge"),
        ports.physdev_in.as_deref().unwrap_or("?"),
        ports.physdev_out.as_deref().unwrap_or("?"),
    )
}

/// A netfilter drop no rule of the model could be matched to.
/// `engine`: what the drop location says about the engine that dropped it.
pub fn unattributed(
    node: &str,
    hook: Option<Hook>,
    location: &str,
    engine: Option<netdrop_model::rules::Engine>,
    sampled: bool,
) -> String {
    let by = match engine {
        Some(e) => format!(", freed by {}", e.as_str()),
        None => String::new(),
    };
    format!(
        "Dropped by netfilter at {} ({location}{by}), but no rule of {node}'s ruleset could be matched to it{}.",
        hook.map(Hook::as_str).unwrap_or("an unknown hook"),
        if sampled {
            ""
        } else {
            " (no packet sample yet)"
        }
    )
}

/// Pod egress seen leaving the node un-NATed: why, and the fix.
/// `finding`: the node's masquerade-cidr-mismatch finding exists.
pub fn egress(
    underlay: Option<&str>,
    flow: &crate::decode::flow::Flow,
    pod: Option<ipnet::IpNet>,
    finding: bool,
) -> (String, String) {
    let pod = pod.map(|n| n.to_string()).unwrap_or_default();
    let why = format!(
        "Pod egress leaves {} with pod source address {} un-masqueraded (to {}): no MASQUERADE/SNAT in nat/POSTROUTING covers the pod CIDR {pod}{}, so replies from outside cannot find their way back.",
        underlay.unwrap_or("the node"),
        flow.src,
        flow.dst,
        if finding {
            " (see finding masquerade-cidr-mismatch)"
        } else {
            ""
        },
    );
    let fix = if flow.src.is_ipv6() {
        format!(
            "Make the CNI masquerade the IPv6 pod CIDR: for flannel set \"IPv6Network\": \"{pod}\" (with \"EnableIPv6\": true) in net-conf.json (kube-flannel-cfg) to match the cluster's IPv6 pod CIDR, then restart flannel. Stop-gap: `ip6tables -t nat -A POSTROUTING -s {pod} ! -d {pod} -j MASQUERADE`."
        )
    } else {
        format!(
            "Make the CNI masquerade the pod CIDR: for flannel set \"Network\": \"{pod}\" in net-conf.json (kube-flannel-cfg) to match kubeadm's --pod-network-cidr, then restart flannel. Stop-gap: `iptables -t nat -A POSTROUTING -s {pod} ! -d {pod} -j MASQUERADE`."
        )
    };
    (why, fix)
}

/// The node dropped at more sites than `--max-site-series` allows series
/// for: why the metrics now hold an `other` series, and what to do.
pub fn sites_capped(limit: usize) -> (String, String) {
    (
        format!(
            "This node dropped pod packets at more than {limit} distinct rules: to keep Prometheus' series bounded, drops at any further rule are counted in series with table, chain and owner \"other\" (per hook, reason and verdict). Every drop is still counted, and each new site still gets its own record here and in /explanations."
        ),
        format!(
            "Look at the records or /explanations for the rules behind the \"other\" series. So many dropping rules usually means one cause repeated per Service (kube-proxy REJECTs for Services without endpoints): fix that cause. To keep a series per rule anyway, raise `--max-site-series` above {limit} (each series costs Prometheus memory)."
        ),
    )
}

/// A status line of what the kernel side lost so far: `[drops uncounted
/// (site map full), samples lost, samples held back, program errors,
/// egress samples lost, egress samples held back, VXLAN packets uncounted
/// per peer]`.
pub fn losses(n: [u64; 7]) -> String {
    let said: Vec<String> = [
        "drops not counted at any site (the site map is full: counts are no longer exact)",
        "drop samples lost (ring buffer full: some drops are reported without their flow)",
        "drop samples held back by --sample-rate (counts stay exact)",
        "drops the kernel program could not handle",
        "un-NATed egress samples lost (ring buffer full)",
        "un-NATed egress samples held back (rate limit; counts stay exact)",
        "VXLAN packets not counted per peer (peer map full)",
    ]
    .iter()
    .zip(n)
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{n} {what}"))
    .collect();
    format!(
        "netdrop: kernel-side losses since start: {}",
        if said.is_empty() {
            "none".to_owned()
        } else {
            said.join("; ")
        }
    )
}

/// The firewalld zone whose chain this is: `filter_IN_public` (nftables
/// backend) or `IN_public` (iptables backend) → `public`.
/// The firewalld policy a chain belongs to (`filter_FWD_policy_int-to-ext_allow`).
fn firewalld_policy(chain: &str) -> Option<&str> {
    let (_, rest) = chain.split_once("_policy_")?;
    let name = ["_allow", "_deny", "_pre", "_post", "_log"]
        .iter()
        .find_map(|s| rest.strip_suffix(s))
        .unwrap_or(rest);
    (!name.is_empty()).then_some(name)
}

fn firewalld_zone(chain: &str) -> Option<&str> {
    let c = chain.strip_prefix("filter_").unwrap_or(chain);
    let rest = ["IN_", "FWD_", "FWDI_", "FWDO_"]
        .iter()
        .find_map(|p| c.strip_prefix(p))?;
    let zone = ["_allow", "_deny", "_pre", "_post", "_log"]
        .iter()
        .find_map(|s| rest.strip_suffix(s))
        .unwrap_or(rest);
    (!zone.is_empty() && !zone.starts_with("policy")).then_some(zone)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fix is walked before it is printed: a narrow one is kept and
    /// said so; one that would let a stranger into the pods is withheld,
    /// with what it would have let through and what is needed instead.
    #[test]
    fn a_fix_that_opens_more_is_withheld() {
        let rs = netdrop_model::parse_ruleset(
            "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n",
        )
        .unwrap();
        let owners = OwnerContext::new(&rs, None);
        let ctx = Cluster::new(vec!["10.224.0.0/16".parse().unwrap()]);
        let p = netdrop_model::packet::parse_packet(
            "FORWARD tcp 10.224.1.2:40000 -> 10.224.2.2:80 in flannel.1 out cni0",
        )
        .unwrap();
        let o = netdrop_model::simulate(&rs, &p).remove(0);
        let d = Decision::of(&rs, &owners, &o);
        let place = "the DROP policy of filter/FORWARD";
        let check = |fix: FixText| checked(&rs, &ctx, &p, &d, place, fix, "iptables");
        let top = |spec: &str| insert("filter", "FORWARD", None, spec);
        let (fix, status) = check(top("-s 10.224.0.0/16 -d 10.224.0.0/16 -j ACCEPT"));
        assert_eq!(status, FixStatus::Proven, "{fix}");
        assert!(
            fix.starts_with("`iptables -I FORWARD -s 10.224.0.0/16 -d 10.224.0.0/16 -j ACCEPT`"),
            "{fix}"
        );
        assert!(
            fix.contains("new connections from other sources keep their verdicts"),
            "{fix}"
        );
        let (fix, status) = check(
            top("-s 10.224.0.0/16 -j ACCEPT")
                .say("; ")
                .and(top("-d 10.224.0.0/16 -j ACCEPT")),
        );
        assert_eq!(status, FixStatus::Withheld, "{fix}");
        assert!(!fix.contains("`iptables"), "nothing to paste: {fix}");
        assert!(
            fix.contains(
                "tcp 203.0.113.99:40000 -> 10.224.2.2:80 in flannel.1 out cni0 (another source)"
            ),
            "{fix}"
        );
        assert!(fix.contains("`-s 10.224.0.0/16 -d 10.224.0.0/16`"), "{fix}");
        // One that does not let the packet through is no fix either.
        let (fix, status) = check(top("-s 10.225.0.0/16 -j ACCEPT"));
        assert_eq!(status, FixStatus::Withheld, "{fix}");
        assert!(fix.contains("does not get this packet past"), "{fix}");
        // Not an iptables rule: not the model's to walk.
        let (_, status) = check(FixText::words("`firewall-cmd --reload`"));
        assert_eq!(status, FixStatus::NotModelled);
    }

    #[test]
    fn firewalld_chains_name_their_zone_or_policy() {
        assert_eq!(firewalld_zone("filter_IN_public_allow"), Some("public"));
        assert_eq!(firewalld_zone("filter_FWD_trusted"), Some("trusted"));
        assert_eq!(firewalld_zone("filter_IN_policy_allow-host-ipv6"), None);
        assert_eq!(
            firewalld_policy("filter_FWD_policy_int-to-ext_deny"),
            Some("int-to-ext")
        );
        assert_eq!(
            firewalld_policy("filter_IN_policy_allow-host-ipv6"),
            Some("allow-host-ipv6")
        );
        assert_eq!(firewalld_policy("filter_IN_public_allow"), None);
    }

    #[test]
    fn site_words_name_no_address_of_the_flow() {
        let a = "10.0.0.2".parse().unwrap();
        assert_eq!(
            without_addr(
                "`-s 10.0.0.2 -d 10.0.0.23`, 10.0.0.2/32 and 110.0.0.2.",
                a,
                "<source>"
            ),
            "`-s <source> -d 10.0.0.23`, <source>/32 and 110.0.0.2."
        );
    }

    #[test]
    fn fixes_name_the_command_that_edits_the_tables() {
        let fix = "Delete it: `iptables -t filter -D INPUT 1`; then `iptables-save | grep -v -e 'CALI' | iptables-restore`. Make it permanent (`service iptables save`): iptables rules are lost at reboot.";
        assert_eq!(with_tool(fix, "iptables"), fix);
        assert_eq!(
            with_tool(fix, "iptables-legacy"),
            "Delete it: `iptables-legacy -t filter -D INPUT 1`; then `iptables-legacy-save | grep -v -e 'CALI' | iptables-legacy-restore`. Make it permanent (`service iptables save`): iptables rules are lost at reboot."
        );
        assert_eq!(
            with_tool("`ip6tables -I FORWARD 1 -j ACCEPT`", "ip6tables-nft"),
            "`ip6tables-nft -I FORWARD 1 -j ACCEPT`"
        );
        assert_eq!(
            with_tool(
                "`iptables -I FORWARD -s x -j ACCEPT; iptables -I FORWARD -d x -j ACCEPT`, or `systemctl disable --now iptables`",
                "iptables-legacy"
            ),
            "`iptables-legacy -I FORWARD -s x -j ACCEPT; iptables-legacy -I FORWARD -d x -j ACCEPT`, or `systemctl disable --now iptables`"
        );
        let mut rs = Ruleset {
            family: netdrop_model::Family::Ipv6,
            ..Ruleset::default()
        };
        assert_eq!(iptables_tool(&rs), "ip6tables");
        rs.backend_suffix = Some("legacy".into());
        assert_eq!(iptables_tool(&rs), "ip6tables-legacy");
    }
}
