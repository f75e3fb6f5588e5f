//! A fix checked before it is printed: applied to copies of the chains it
//! edits, the dropped packet walked again (it must no longer die where it
//! died), and a few probes walked with and without it — new connections
//! from another source, to another port, and the other way. A fix that
//! lets one of them through where it did not pass before opens more than
//! the flow it is for.
//!
//! What a fix may open is the dropped packet's *class*: forwarded between
//! two pods, any pod-to-pod traffic of those pod CIDRs; a packet of a connection
//! already accepted (a reply), that connection's packets; forwarded pod
//! egress, the pods' traffic to anywhere; anything else, its own source,
//! destination, protocol and port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::{
    check::Cluster,
    edit::{Edit, EditError, apply},
    rules::{CtState, Ruleset},
    simulate::{Outcome, Packet, Step, simulate, simulate_with},
    words::Hook,
};

/// What a fix for a dropped packet may open: the packet's flow, as
/// narrow as it is (see the module's words). The one place the class is
/// decided: the probes go by it, and `explain` words its rules by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowClass {
    /// A packet of a connection already accepted: that connection's.
    Reply,
    /// Forwarded between pods: any traffic of the two pod CIDRs.
    Pods { src: IpNet, dst: IpNet },
    /// Forwarded pod egress: the pods' traffic to anywhere.
    Egress { src: IpNet },
    /// Anything else: its source, its destination (`None` in INPUT: the
    /// node itself, whichever its address), protocol and port. A pod end
    /// is its pod CIDR (pod addresses change).
    Flow {
        src: IpNet,
        dst: Option<IpNet>,
        proto: u8,
        dport: Option<u16>,
        icmp_type: Option<String>,
    },
}

impl FlowClass {
    pub fn of(cluster: &Cluster, pkt: &Packet) -> Self {
        let net = |a: IpAddr| cluster.pod_cidr_of(a).unwrap_or_else(|| IpNet::from(a));
        let forward = pkt.hook == Hook::Forward;
        if matches!(pkt.ct, CtState::Established | CtState::Related) {
            Self::Reply
        } else if forward && cluster.is_pod(pkt.src) && cluster.is_pod(pkt.dst) {
            Self::Pods {
                src: net(pkt.src),
                dst: net(pkt.dst),
            }
        } else if forward && cluster.is_pod(pkt.src) {
            Self::Egress { src: net(pkt.src) }
        } else {
            Self::Flow {
                src: net(pkt.src),
                dst: (pkt.hook != Hook::Input).then(|| net(pkt.dst)),
                proto: pkt.proto,
                dport: pkt.dport.filter(|_| matches!(pkt.proto, 6 | 17 | 132)),
                icmp_type: pkt
                    .icmp_type
                    .clone()
                    .filter(|_| matches!(pkt.proto, 1 | 58)),
            }
        }
    }
}

/// What a probe varies of the dropped packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// A new connection from a source outside the cluster and the flow.
    OtherSource,
    /// A new connection from the same source to another port.
    OtherPort,
    /// A new connection the other way (forwarded traffic).
    OtherWay,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub pkt: Packet,
}

/// How a fix fared on the model.
#[derive(Clone, Debug, PartialEq)]
pub struct FixCheck {
    /// The dropped packet no longer dies at the rule (or policy) that
    /// dropped it.
    pub passes: bool,
    /// Where it dies next, if something else on the way drops it too.
    pub then_dropped_at: Option<Step>,
    /// Probes the fix lets through that did not pass before.
    pub opened: Vec<Probe>,
    /// The probes walked.
    pub probed: Vec<ProbeKind>,
    /// A forwarded packet's replies, the fix applied: where they die, if
    /// they do.
    pub replies_dropped_at: Option<Step>,
}

impl FixCheck {
    /// The fix does what it is for, and nothing more.
    pub fn holds(&self) -> bool {
        self.passes && self.opened.is_empty()
    }
}

/// Walks `pkt` — dropped at `site`, as it was at that hook — and the
/// probes, with and without `edits`.
pub fn check_fix(
    rs: &Ruleset,
    cluster: &Cluster,
    pkt: &Packet,
    site: &Step,
    edits: &[Edit],
) -> Result<FixCheck, EditError> {
    let over = apply(rs, edits)?;
    let after = simulate_with(rs, pkt, &over);
    let at_site = |o: &Outcome| {
        o.verdict.is_drop()
            && o.decider().is_some_and(|d| {
                d.table == site.table && d.chain == site.chain && d.text == site.text
            })
    };
    let passes = !after.iter().any(at_site);
    let then_dropped_at = after
        .iter()
        .filter(|o| o.verdict.is_drop() && !at_site(o))
        .find_map(|o| o.decider().cloned());
    let mut opened = Vec::new();
    let mut probed = Vec::new();
    for probe in probes(cluster, pkt) {
        probed.push(probe.kind);
        let before = openness(&simulate(rs, &probe.pkt));
        let after = openness(&simulate_with(rs, &probe.pkt, &over));
        if after > before {
            opened.push(probe);
        }
    }
    let replies_dropped_at = (pkt.hook == Hook::Forward && pkt.ct == CtState::New)
        .then(|| {
            let reply = Packet {
                ct: CtState::Established,
                icmp_type: reply_icmp(pkt),
                ..swapped(pkt)
            };
            simulate_with(rs, &reply, &over)
                .iter()
                .filter(|o| o.verdict.is_drop())
                .find_map(|o| o.decider().cloned())
        })
        .flatten();
    Ok(FixCheck {
        passes,
        then_dropped_at,
        opened,
        probed,
        replies_dropped_at,
    })
}

/// 0: every branch drops; 1: some do; 2: none does.
fn openness(outcomes: &[Outcome]) -> u8 {
    let drops = outcomes.iter().filter(|o| o.verdict.is_drop()).count();
    match drops {
        0 => 2,
        n if n == outcomes.len() => 0,
        _ => 1,
    }
}

/// The probes for a packet dropped at its hook: new connections outside
/// its class (see the module's words).
pub fn probes(cluster: &Cluster, pkt: &Packet) -> Vec<Probe> {
    // Between pods, or the pods' egress: other ports are the same flow.
    let (any_port, any_way) = match FlowClass::of(cluster, pkt) {
        FlowClass::Pods { .. } => (true, true),
        FlowClass::Egress { .. } => (true, false),
        FlowClass::Reply | FlowClass::Flow { .. } => (false, false),
    };
    let new = Packet {
        ct: CtState::New,
        icmp_type: pkt.icmp_type.as_ref().map(|_| "echo-request".to_owned()),
        ..pkt.clone()
    };
    let mut out = Vec::new();
    if matches!(pkt.hook, Hook::Prerouting | Hook::Input | Hook::Forward) {
        out.push(Probe {
            kind: ProbeKind::OtherSource,
            pkt: Packet {
                src: outsider(pkt.src, pkt.dst),
                ..new.clone()
            },
        });
    }
    if let (false, 6 | 17 | 132, Some(port)) = (any_port, pkt.proto, pkt.dport) {
        out.push(Probe {
            kind: ProbeKind::OtherPort,
            pkt: Packet {
                dport: Some(if port == 65000 { 64999 } else { 65000 }),
                ..new.clone()
            },
        });
    }
    if pkt.hook == Hook::Forward && !any_way {
        out.push(Probe {
            kind: ProbeKind::OtherWay,
            pkt: Packet {
                ct: CtState::New,
                ..swapped(&new)
            },
        });
    }
    out
}

/// The packet going the other way: addresses, ports and devices swapped.
fn swapped(p: &Packet) -> Packet {
    Packet {
        src: p.dst,
        dst: p.src,
        sport: p.dport,
        dport: p.sport,
        in_iface: p.out_iface.clone(),
        out_iface: p.in_iface.clone(),
        bridged: p.bridged.as_ref().map(|b| crate::simulate::BridgePorts {
            physdev_in: b.physdev_out.clone(),
            physdev_out: b.physdev_in.clone(),
        }),
        ..p.clone()
    }
}

fn reply_icmp(p: &Packet) -> Option<String> {
    p.icmp_type.as_ref().map(|_| "echo-reply".to_owned())
}

/// An "internet" source (TEST-NET-3; 2001:db8:ffff::/48) that is neither
/// end of the flow.
fn outsider(src: IpAddr, dst: IpAddr) -> IpAddr {
    let pick = |a: IpAddr, b: IpAddr| if src == a || dst == a { b } else { a };
    match src {
        IpAddr::V4(_) => pick(
            Ipv4Addr::new(203, 0, 113, 99).into(),
            Ipv4Addr::new(203, 0, 113, 98).into(),
        ),
        IpAddr::V6(_) => pick(
            Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x99).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x98).into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{edit::parse_command, parse_ruleset};

    fn dropped(rs: &Ruleset, p: &Packet) -> Step {
        simulate(rs, p)[0].decider().unwrap().clone()
    }

    fn cluster() -> Cluster {
        Cluster::new(vec!["10.224.0.0/16".parse().unwrap()])
    }

    fn fwd(src: &str, dst: &str, dport: u16) -> Packet {
        let mut p = Packet::new(Hook::Forward, 6, src.parse().unwrap(), dst.parse().unwrap());
        (p.sport, p.dport) = (Some(40000), Some(dport));
        p.in_iface = Some("flannel.1".into());
        p.out_iface = Some("cni0".into());
        p
    }

    /// Docker's FORWARD policy DROP on a flannel node.
    const DOCKER: &str = "*filter\n:FORWARD DROP [0:0]\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n";

    #[test]
    fn the_flow_class_is_as_narrow_as_the_drop() {
        let c = cluster();
        let pods: IpNet = "10.224.0.0/16".parse().unwrap();
        assert_eq!(
            FlowClass::of(&c, &fwd("10.224.1.2", "10.224.2.2", 80)),
            FlowClass::Pods {
                src: pods,
                dst: pods
            }
        );
        assert_eq!(
            FlowClass::of(&c, &fwd("10.224.1.2", "203.0.113.7", 443)),
            FlowClass::Egress { src: pods }
        );
        let mut input = fwd("192.0.2.2", "192.0.2.1", 8472);
        (input.hook, input.proto) = (Hook::Input, 17);
        assert_eq!(
            FlowClass::of(&c, &input),
            FlowClass::Flow {
                src: "192.0.2.2/32".parse().unwrap(),
                dst: None,
                proto: 17,
                dport: Some(8472),
                icmp_type: None,
            }
        );
        input.ct = CtState::Established;
        assert_eq!(FlowClass::of(&c, &input), FlowClass::Reply);
    }

    #[test]
    fn a_pod_to_pod_accept_holds_and_a_whole_cidr_one_opens_the_pods() {
        let rs = parse_ruleset(DOCKER).unwrap();
        let p = fwd("10.224.1.2", "10.224.2.2", 80);
        let site = dropped(&rs, &p);
        let check = |cmds: &[&str]| {
            let edits: Vec<_> = cmds.iter().map(|c| parse_command(c).unwrap()).collect();
            check_fix(&rs, &cluster(), &p, &site, &edits).unwrap()
        };
        let narrow =
            check(&["iptables -I DOCKER-USER -s 10.224.0.0/16 -d 10.224.0.0/16 -j ACCEPT"]);
        assert!(narrow.holds(), "{narrow:#?}");
        assert_eq!(narrow.probed, [ProbeKind::OtherSource]);
        assert_eq!(
            narrow.replies_dropped_at, None,
            "replies are pod traffic too"
        );
        // flannel's own pair of rules: anyone may now reach the pods.
        let wide = check(&[
            "iptables -I FORWARD -s 10.224.0.0/16 -j ACCEPT",
            "iptables -I FORWARD -d 10.224.0.0/16 -j ACCEPT",
        ]);
        assert!(wide.passes && !wide.holds());
        assert_eq!(wide.opened[0].kind, ProbeKind::OtherSource);
        assert_eq!(wide.opened[0].pkt.src.to_string(), "203.0.113.99");
        // A fix for another flow does not let this one through.
        let other = check(&["iptables -I FORWARD -s 10.225.0.0/16 -j ACCEPT"]);
        assert!(!other.passes);
    }

    #[test]
    fn a_port_accept_for_a_reply_opens_the_port_and_established_does_not() {
        // The shared LOGGING chain of issue 17: a reply dies there.
        let rs = parse_ruleset("*filter\n:INPUT ACCEPT [0:0]\n:LOGGING - [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -j LOGGING\n-A LOGGING -j LOG\n-A LOGGING -j DROP\nCOMMIT\n").unwrap();
        let mut p = Packet::new(
            Hook::Input,
            6,
            "192.0.2.2".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
        );
        (p.sport, p.dport, p.ct) = (Some(443), Some(40000), CtState::Established);
        p.in_iface = Some("eth0".into());
        let site = dropped(&rs, &p);
        let port = [parse_command("iptables -I LOGGING 2 -p tcp --dport 40000 -j ACCEPT").unwrap()];
        let c = check_fix(&rs, &cluster(), &p, &site, &port).unwrap();
        assert!(c.passes);
        assert_eq!(
            c.opened.iter().map(|p| p.kind).collect::<Vec<_>>(),
            [ProbeKind::OtherSource]
        );
        let est = [parse_command(
            "iptables -I INPUT 1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        )
        .unwrap()];
        let c = check_fix(&rs, &cluster(), &p, &site, &est).unwrap();
        assert!(c.holds(), "{c:#?}");
        assert_eq!(c.probed, [ProbeKind::OtherSource, ProbeKind::OtherPort]);
    }

    #[test]
    fn replies_that_would_still_die_are_found() {
        let rs = parse_ruleset(DOCKER).unwrap();
        let p = fwd("203.0.113.7", "10.224.2.2", 80);
        let site = dropped(&rs, &p);
        let edits = [parse_command(
            "iptables -I DOCKER-USER -s 203.0.113.7 -d 10.224.2.2 -p tcp --dport 80 -j ACCEPT",
        )
        .unwrap()];
        let c = check_fix(&rs, &cluster(), &p, &site, &edits).unwrap();
        assert!(c.holds(), "{c:#?}");
        assert_eq!(c.probed.len(), 3);
        assert!(
            c.replies_dropped_at.as_ref().is_some_and(|s| s.is_policy()),
            "{c:#?}"
        );
    }
}
