//! Static findings about a node's rules: the pod flows a Kubernetes node
//! must let through are walked, and every one that dies becomes a finding
//! with the rule that kills it; so do MASQUERADE rules that miss the pod
//! CIDR, leftovers of CNIs that are gone, and risky node settings. Typed
//! data only: `netdrop`'s `explain` words them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::{
    decision::{Decision, service_of},
    owner::{OverlayPort, Owner, OwnerContext, PodDevices, chain_owner},
    rules::{Match, Rule, Ruleset, Target},
    simulate::{Packet, simulate, simulate_path},
    words::{Family, FindingId, Hook, Severity, Verdict},
};

/// What the cluster is, as the operator configured netdrop: the facts
/// every stage needs alike (the kernel filter, `check`'s probes, the
/// explanations).
#[derive(Clone, Debug)]
pub struct Cluster {
    pub pod_cidrs: Vec<IpNet>,
    /// The overlay's VXLAN port (flannel: 8472).
    pub vxlan_port: u16,
}

/// flannel's VXLAN port (the Linux default is 4789; flannel chose 8472).
pub const FLANNEL_VXLAN_PORT: u16 = 8472;

impl Cluster {
    pub fn new(pod_cidrs: Vec<IpNet>) -> Self {
        Self {
            pod_cidrs,
            vxlan_port: FLANNEL_VXLAN_PORT,
        }
    }

    pub fn with_vxlan_port(mut self, port: u16) -> Self {
        self.vxlan_port = port;
        self
    }

    pub fn is_pod(&self, a: IpAddr) -> bool {
        self.pod_cidrs.iter().any(|n| n.contains(&a))
    }

    /// The pod CIDR containing `a`.
    pub fn pod_cidr_of(&self, a: IpAddr) -> Option<IpNet> {
        self.pod_cidrs.iter().find(|n| n.contains(&a)).copied()
    }
}

/// What carries pod traffic on a node — the devices `check`'s probes
/// cross and the overlay port they knock on — taken from the node itself:
/// its devices on a live node, the interfaces and chains its rules name in
/// a dump; flannel's defaults only when neither says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeShape {
    /// The CNI the devices belong to.
    pub cni: Owner,
    /// The device traffic from other nodes' pods arrives by (`None`:
    /// routed over the underlay, no overlay device).
    pub overlay: Option<String>,
    /// The overlay's UDP port (`None`: no UDP overlay: routed, IPIP).
    pub overlay_port: Option<u16>,
    /// The device this node's pods hang off (a bridge; for CNIs with a
    /// device per pod, one of them).
    pub pod_iface: String,
    /// The node's uplink.
    pub underlay: String,
    pub learned: ShapeSource,
    /// The node's own addresses (with their prefix) by device, and the
    /// subnets it routes by device: what its probes' ends are taken from
    /// ([`ProbeEnds`]). Empty offline.
    pub addresses: Vec<(IpNet, String)>,
    pub routes: Vec<(IpNet, String)>,
}

/// How [`NodeShape`] was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeSource {
    /// The node's own network devices.
    Devices,
    /// The interfaces and chains the ruleset names.
    Rules,
    /// Nothing said: flannel's VXLAN defaults.
    Assumed,
}

impl ShapeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Devices => "from the node's devices",
            Self::Rules => "from the interfaces and chains its rules name",
            Self::Assumed => "assumed: flannel's defaults (nothing on the node said otherwise)",
        }
    }
}

impl NodeShape {
    /// flannel's VXLAN node: flannel.1, cni0, eth0.
    pub fn flannel_default(vxlan_port: u16) -> Self {
        Self {
            cni: Owner::Flannel,
            overlay: Some("flannel.1".into()),
            overlay_port: Some(vxlan_port),
            pod_iface: "cni0".into(),
            underlay: "eth0".into(),
            learned: ShapeSource::Assumed,
            addresses: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// The shape the device names (or rule interface names, `+`
    /// wildcards stripped) tell; `None` when they name no CNI.
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
        vxlan_port: u16,
        learned: ShapeSource,
    ) -> Option<Self> {
        let names: Vec<&str> = names.into_iter().collect();
        let has = |n: &str| names.contains(&n);
        let underlay = ["eth0", "ens", "enp", "eno", "eth", "bond", "br-ex"]
            .iter()
            .find_map(|p| names.iter().find(|n| n.starts_with(p)))
            .map_or_else(|| "eth0".to_owned(), |n| (*n).to_owned());
        let bridge = ["cni0", "cbr0", "kube-bridge"]
            .into_iter()
            .find(|b| has(b))
            .unwrap_or("cni0")
            .to_owned();
        // Each CNI's devices are its profile's (owner.rs): the first CNI,
        // by rank, whose mark the node has.
        let mut cnis: Vec<(&crate::owner::Profile, crate::owner::Devices)> = crate::owner::PROFILES
            .iter()
            .filter_map(|p| p.devices.map(|d| (p, d)))
            .collect();
        cnis.sort_by_key(|(_, d)| d.rank);
        let (profile, devices) = cnis
            .into_iter()
            .find(|(_, d)| d.marks.iter().any(|m| names.iter().any(|n| m.matches(n))))?;
        let overlay = devices.overlays.iter().find_map(|(name, port)| {
            let dev = names.iter().find(|n| name.matches(n))?;
            let port = match port {
                OverlayPort::None => None,
                OverlayPort::Fixed(p) => Some(*p),
                OverlayPort::Configured => Some(vxlan_port),
            };
            Some(((*dev).to_owned(), port))
        });
        let pod_iface = match devices.pods {
            PodDevices::PerPod { prefix, sample } => names
                .iter()
                .find(|n| n.starts_with(prefix) && n.len() > prefix.len())
                .map_or_else(|| sample.to_owned(), |n| (*n).to_owned()),
            PodDevices::Bridge => bridge,
            PodDevices::Named(n) => n.to_owned(),
        };
        Some(Self {
            cni: profile.owner,
            overlay_port: overlay.as_ref().and_then(|(_, p)| *p),
            overlay: overlay.map(|(d, _)| d),
            pod_iface,
            underlay,
            learned,
            addresses: Vec::new(),
            routes: Vec::new(),
        })
    }

    /// The shape a ruleset's interface names and chains tell.
    pub fn from_rules(rs: &Ruleset, vxlan_port: u16) -> Option<Self> {
        let mut names: Vec<String> = Vec::new();
        let mut add = |n: &str| {
            let n = n.trim_end_matches('+');
            if !n.is_empty() && !names.iter().any(|m| m == n) {
                names.push(n.to_owned());
            }
        };
        for t in rs.tables.values() {
            for c in &t.chains {
                // The agents' chains say which CNI even where no rule
                // names its devices.
                // (kube-router's chains are also its NetworkPolicy
                // alone, beside flannel: they say nothing of devices.)
                match chain_owner(&c.name) {
                    Some(Owner::Calico) => add("cali"),
                    Some(Owner::Cilium) => add("cilium_"),
                    Some(Owner::Weave | Owner::WeaveNpc) => add("weave"),
                    Some(Owner::Flannel) => add("flannel.1"),
                    _ => {}
                }
                for r in &c.rules {
                    for m in &r.matches {
                        if let Match::InIface { pat, .. } | Match::OutIface { pat, .. } = m {
                            add(&pat.0);
                        }
                    }
                }
            }
        }
        Self::from_names(
            names.iter().map(String::as_str),
            vxlan_port,
            ShapeSource::Rules,
        )
    }

    /// The device pods of other nodes arrive by: the overlay, else the
    /// underlay (routed).
    pub fn remote_iface(&self) -> &str {
        self.overlay.as_deref().unwrap_or(&self.underlay)
    }
}

/// The node's shape: its devices when known (a live node), else what its
/// rules name, else flannel's defaults.
pub fn shape_of(rs: Option<&Ruleset>, facts: &NodeFacts, vxlan_port: u16) -> NodeShape {
    let mut shape = facts
        .interfaces
        .as_ref()
        .and_then(|names| {
            NodeShape::from_names(
                names.iter().map(String::as_str),
                vxlan_port,
                ShapeSource::Devices,
            )
        })
        .or_else(|| rs.and_then(|rs| NodeShape::from_rules(rs, vxlan_port)))
        .unwrap_or_else(|| NodeShape::flannel_default(vxlan_port));
    if let Some(u) = &facts.underlay {
        shape.underlay.clone_from(u);
    }
    shape.addresses.clone_from(&facts.addresses);
    shape.routes.clone_from(&facts.routes);
    shape
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
    /// The device of the first default route; `None` offline.
    pub underlay: Option<String>,
    /// Subnets routed by device (`ip route`, default routes left out):
    /// where other nodes' pod subnets (overlay) and this node's (bridge)
    /// show.
    pub routes: Vec<(IpNet, String)>,
    /// The node's own addresses with their prefix, by device (`ip -j
    /// addr`; loopback and IPv6 link-local left out).
    pub addresses: Vec<(IpNet, String)>,
}

impl NodeFacts {
    /// The pod subnets the routes show on the shape's overlay and pod
    /// devices, as one network that holds them all (the routes name each
    /// node's subnet, not the cluster's CIDR): `None` without two.
    pub fn routed_pod_cidr(&self, shape: &NodeShape) -> Option<IpNet> {
        // IPv4's (IPv6 link-local routes sit on every device).
        let nets: Vec<IpNet> = self
            .routes
            .iter()
            .filter(|(net, dev)| {
                net.addr().is_ipv4()
                    && (Some(dev.as_str()) == shape.overlay.as_deref() || *dev == shape.pod_iface)
            })
            .map(|(n, _)| *n)
            .collect();
        if nets.len() < 2 {
            return None;
        }
        let mut common = nets[0];
        for n in &nets[1..] {
            while !common.contains(n) {
                common = common.supernet()?;
            }
        }
        Some(common)
    }
}

/// Where a node's pod CIDR came from when none was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodCidrs {
    /// The networks flannel's own rules name (`FLANNEL-FWD`, its
    /// masquerade rules).
    FlannelRules(Vec<IpNet>),
    /// The network that holds the pod subnets a live node routes on its
    /// overlay and pod devices (each node's subnet is routed, not the
    /// cluster's CIDR).
    Routed(IpNet),
    /// Neither said.
    Unknown,
}

impl PodCidrs {
    /// What the rules and the node's routes say, in that order: the one
    /// inference `check` and `watch` both make.
    pub fn infer<'a>(
        rulesets: impl IntoIterator<Item = &'a Ruleset>,
        facts: &NodeFacts,
        vxlan_port: u16,
    ) -> Self {
        let rulesets: Vec<&Ruleset> = rulesets.into_iter().collect();
        let mut nets: Vec<IpNet> = Vec::new();
        for rs in &rulesets {
            for n in OwnerContext::new(rs, None).flannel_networks {
                if !nets.contains(&n) {
                    nets.push(n);
                }
            }
        }
        if !nets.is_empty() {
            return Self::FlannelRules(nets);
        }
        let shape = shape_of(rulesets.first().copied(), facts, vxlan_port);
        facts
            .routed_pod_cidr(&shape)
            .map_or(Self::Unknown, Self::Routed)
    }

    pub fn nets(&self) -> Vec<IpNet> {
        match self {
            Self::FlannelRules(n) => n.clone(),
            Self::Routed(n) => vec![*n],
            Self::Unknown => Vec::new(),
        }
    }
}

/// A rule a finding is about (not a verdict: a MASQUERADE, a jump, a reject).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleAt {
    pub table: String,
    pub chain: String,
    /// 1-based position; `None` where the chain has several alike.
    pub rule_no: Option<usize>,
    pub rule: String,
    pub owner: Owner,
}

/// What a finding is about.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    /// The probe flows die here.
    Drop(Decision),
    /// POSTROUTING masquerades `covered`, not the pod CIDR `pod`.
    Masquerade {
        at: RuleAt,
        covered: IpNet,
        pod: IpNet,
        unmodelled: bool,
    },
    /// A built-in chain still jumps into chain `target` of a CNI that does
    /// not run here; `chains` of its chains are left.
    LeftoverChains {
        at: RuleAt,
        target: String,
        chains: usize,
    },
    /// kube-proxy rejects a Service that has no endpoints.
    ServiceWithoutEndpoints { at: RuleAt, service: Option<String> },
    /// A node setting, no rule.
    NodeSetting,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub id: FindingId,
    pub severity: Severity,
    /// The probe packets that die because of it.
    pub flows: Vec<Packet>,
    pub subject: Subject,
}

impl Finding {
    /// Whose rule or chain this finding is about; `None` for node settings
    /// (sysctls, iptables backends), which belong to no rule's owner.
    pub fn owner(&self) -> Option<Owner> {
        match &self.subject {
            Subject::Drop(d) => Some(d.owner),
            Subject::Masquerade { at, .. }
            | Subject::LeftoverChains { at, .. }
            | Subject::ServiceWithoutEndpoints { at, .. } => Some(at.owner),
            Subject::NodeSetting => None,
        }
    }

    pub fn leftover(&self) -> bool {
        match &self.subject {
            Subject::Drop(d) => d.leftover,
            Subject::LeftoverChains { .. } => true,
            _ => false,
        }
    }

    pub fn unmodelled(&self) -> bool {
        match &self.subject {
            Subject::Drop(d) => d.unmodelled,
            Subject::Masquerade { unmodelled, .. } => *unmodelled,
            _ => false,
        }
    }

    /// The chain it is about, if any.
    pub fn chain(&self) -> Option<&str> {
        match &self.subject {
            Subject::Drop(d) => Some(&d.chain),
            Subject::Masquerade { at, .. }
            | Subject::LeftoverChains { at, .. }
            | Subject::ServiceWithoutEndpoints { at, .. } => Some(&at.chain),
            Subject::NodeSetting => None,
        }
    }
}

/// A probe: a flow the node must carry, and what it means when it dies.
pub struct Probe {
    /// `None`: a FORWARD probe, named by how it dies.
    pub id: Option<FindingId>,
    pub severity: Severity,
    pub pkt: Packet,
}

fn nth(net: &IpNet, n: u32) -> IpAddr {
    match net {
        IpNet::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()).wrapping_add(n))),
        IpNet::V6(v6) => IpAddr::V6(Ipv6Addr::from(
            u128::from(v6.network()).wrapping_add(u128::from(n)),
        )),
    }
}

/// The probe packet of pod egress to the outside (masquerade check).
const EGRESS_PROBE: usize = 2;

/// The addresses a node's probes run between, from the node itself where
/// it says: its address on the underlay and a peer's on the same network,
/// a pod of its own subnet (the one routed on its pod device) and one of
/// another node's (routed on the overlay). A probe built from them runs
/// the way traffic does on *this* node, whichever node of the cluster it
/// is. What the node does not say (offline, a dump) stays TEST-NET and
/// the pod CIDR's first subnets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeEnds {
    /// The node's address on its underlay.
    pub node: IpAddr,
    /// Another node, on the underlay's network.
    pub peer: IpAddr,
    /// A pod of this node.
    pub local_pod: IpAddr,
    /// The node's address on its pod device (the pods' gateway).
    pub pod_gw: IpAddr,
    /// A pod of another node.
    pub remote_pod: IpAddr,
    /// An address outside the cluster.
    pub internet: IpAddr,
    /// Every address of the node known (what INPUT is for).
    pub locals: Vec<IpAddr>,
}

impl ProbeEnds {
    pub fn of(pod: &IpNet, shape: &NodeShape) -> Self {
        let v4 = pod.addr().is_ipv4();
        let same_family = |n: &IpNet| n.addr().is_ipv4() == v4;
        // A host of `net` other than `not` (the network's first hosts).
        let host_besides = |net: &IpNet, not: Option<IpAddr>| {
            [1, 2, 3]
                .into_iter()
                .map(|i| nth(net, i))
                .find(|a| Some(*a) != not && net.contains(a))
        };
        let addr_on = |dev: &str, within: Option<&IpNet>| {
            shape.addresses.iter().find(|(a, d)| {
                d == dev && same_family(a) && within.is_none_or(|w| w.contains(&a.addr()))
            })
        };
        let routed_on = |dev: Option<&str>| {
            shape.routes.iter().find(|(n, d)| {
                Some(d.as_str()) == dev && same_family(n) && pod.contains(n) && n != pod
            })
        };
        // The underlay: the node's address there, a peer beside it.
        let (default_node, default_peer, internet): (IpAddr, IpAddr, IpAddr) = if v4 {
            (
                [192, 0, 2, 1].into(),
                [192, 0, 2, 2].into(),
                [203, 0, 113, 10].into(),
            )
        } else {
            (
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).into(),
                Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x10).into(),
            )
        };
        let (node, peer) = match addr_on(&shape.underlay, None) {
            Some((a, _)) => {
                let net = a.trunc();
                let peer =
                    host_besides(&net, Some(a.addr())).unwrap_or(if a.addr() == default_peer {
                        default_node
                    } else {
                        default_peer
                    });
                (a.addr(), peer)
            }
            None => (default_node, default_peer),
        };
        // This node's pod subnet: routed on its pod device, or the network
        // of its address there; else the pod CIDR's first.
        let local_net = routed_on(Some(&shape.pod_iface))
            .map(|(n, _)| *n)
            .or_else(|| addr_on(&shape.pod_iface, Some(pod)).map(|(a, _)| a.trunc()));
        let (default_local, default_remote, default_gw) =
            if pod.prefix_len() <= 16 || matches!(pod, IpNet::V6(_)) {
                (nth(pod, 0x0102), nth(pod, 0x0202), nth(pod, 0x0101))
            } else {
                (nth(pod, 2), nth(pod, 3), nth(pod, 1))
            };
        let (local_pod, pod_gw) = match local_net {
            Some(net) => {
                let gw = addr_on(&shape.pod_iface, Some(&net))
                    .map(|(a, _)| a.addr())
                    .or_else(|| host_besides(&net, None))
                    .unwrap_or(default_gw);
                (host_besides(&net, Some(gw)).unwrap_or(default_local), gw)
            }
            None => (default_local, default_gw),
        };
        // Another node's pods: a subnet routed on the overlay (or the
        // underlay, routed CNIs), never this node's own.
        let remote_pod = routed_on(shape.overlay.as_deref())
            .or_else(|| {
                routed_on(Some(&shape.underlay))
                    .filter(|(n, _)| local_net.is_none_or(|l| !l.contains(n)))
            })
            // Past the first host, which is the other node's gateway.
            .and_then(|(n, _)| host_besides(n, Some(nth(n, 1))))
            .or_else(|| {
                [default_remote, default_local, nth(pod, 0x0302)]
                    .into_iter()
                    .find(|a| local_net.is_none_or(|l| !l.contains(a)) && pod.contains(a))
            })
            .unwrap_or(default_remote);
        let mut locals: Vec<IpAddr> = shape.addresses.iter().map(|(a, _)| a.addr()).collect();
        for a in [node, pod_gw] {
            if !locals.contains(&a) {
                locals.push(a);
            }
        }
        Self {
            node,
            peer,
            local_pod,
            pod_gw,
            remote_pod,
            internet,
            locals,
        }
    }
}

/// The flows a node of `shape` must carry for pod CIDR `pod`.
pub fn probes(pod: &IpNet, shape: &NodeShape) -> Vec<Probe> {
    let ProbeEnds {
        node,
        peer,
        local_pod,
        remote_pod,
        internet,
        locals,
        ..
    } = ProbeEnds::of(pod, shape);
    let v4 = pod.addr().is_ipv4();
    let mk = |hook, proto, src, sport, dst, dport, i: Option<&str>, o: Option<&str>| {
        let mut p = Packet::new(hook, proto, src, dst);
        p.sport = Some(sport);
        p.dport = Some(dport);
        p.in_iface = i.map(str::to_owned);
        p.out_iface = o.map(str::to_owned);
        p.local_addrs = Some(locals.clone());
        p
    };
    let forward = |severity, pkt| Probe {
        id: None,
        severity,
        pkt,
    };
    let mut v = vec![
        forward(
            Severity::Critical,
            mk(
                Hook::Forward,
                6,
                remote_pod,
                40000,
                local_pod,
                80,
                Some(shape.remote_iface()),
                Some(&shape.pod_iface),
            ),
        ),
        forward(
            Severity::Critical,
            mk(
                Hook::Forward,
                6,
                local_pod,
                40000,
                remote_pod,
                80,
                Some(&shape.pod_iface),
                Some(shape.remote_iface()),
            ),
        ),
        forward(
            Severity::Warning,
            mk(
                Hook::Forward,
                6,
                local_pod,
                40000,
                internet,
                443,
                Some(&shape.pod_iface),
                Some(&shape.underlay),
            ),
        ),
    ];
    if let (true, Some(port)) = (v4, shape.overlay_port) {
        v.push(Probe {
            id: Some(FindingId::InputBlocksVxlan),
            severity: Severity::Critical,
            pkt: mk(
                Hook::Input,
                17,
                peer,
                51000,
                node,
                port,
                Some(&shape.underlay),
                None,
            ),
        });
    }
    if v4 {
        v.push(Probe {
            id: Some(FindingId::InputBlocksKubelet),
            severity: Severity::Warning,
            pkt: mk(
                Hook::Input,
                6,
                peer,
                51000,
                node,
                10250,
                Some(&shape.underlay),
                None,
            ),
        });
    }
    v
}

/// The first dropping outcome of a packet's walk along its whole way
/// (one that needed no assumption if there is one), resolved; `None` if
/// every outcome accepts. Its assumptions are those its verdict hangs on:
/// a fork whose every way drops (one that picks a NAT rule or a mark)
/// leaves the drop certain.
pub fn first_drop(rs: &Ruleset, owners: &OwnerContext, pkt: &Packet) -> Option<Decision> {
    let outcomes = simulate_path(rs, pkt);
    let dep = crate::simulate::depends(&outcomes);
    let (i, drop) = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.verdict.is_drop())
        .min_by_key(|(i, o)| (o.unmodelled, dep.essential(*i, o).len()))?;
    let mut d = Decision::of(rs, owners, drop);
    d.assumptions = dep.essential(i, drop);
    if outcomes.iter().any(|o| o.verdict == Verdict::Accept) {
        d.assumptions
            .push(crate::question::Assumption::OtherBranchesAccept);
    }
    Some(d)
}

/// All findings for one ruleset (one family, one backend); `owners` is
/// `OwnerContext::new(rs, facts.interfaces)`.
pub fn check(
    rs: &Ruleset,
    owners: &OwnerContext,
    cluster: &Cluster,
    shape: &NodeShape,
) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    let family_pods = cluster
        .pod_cidrs
        .iter()
        .filter(|n| Family::of(n.addr()) == rs.family);
    for pod in family_pods {
        for probe in probes(pod, shape) {
            let Some(d) = first_drop(rs, owners, &probe.pkt) else {
                continue;
            };
            let id = probe.id.unwrap_or(if d.leftover {
                FindingId::LeftoverCniDropsPodTraffic
            } else if d.policy {
                FindingId::ForwardPolicyDrop
            } else {
                FindingId::ForwardRuleDropsPodTraffic
            });
            // One finding per deciding rule; every flow it kills listed.
            let same = |f: &&mut Finding| {
                f.id == id
                    && matches!(&f.subject, Subject::Drop(e) if e.rule == d.rule && e.chain == d.chain)
            };
            match out.iter_mut().find(same) {
                Some(f) => f.flows.push(probe.pkt),
                None => out.push(Finding {
                    id,
                    // Certain only when no unknown had to go one way: what
                    // might happen is said, at most as a warning.
                    // And a probe of an overlay the node was only assumed
                    // to run: a warning (an IPsec host is no flannel node).
                    severity: if d.assumptions.is_empty()
                        && !(shape.learned == ShapeSource::Assumed
                            && probe.id == Some(FindingId::InputBlocksVxlan))
                    {
                        probe.severity
                    } else {
                        probe.severity.min(Severity::Warning)
                    },
                    flows: vec![probe.pkt],
                    subject: Subject::Drop(d),
                }),
            }
        }
        out.extend(masquerade_mismatch(rs, owners, pod, shape));
    }
    out.extend(leftover_chains(rs, owners));
    out.extend(services_without_endpoints(rs, owners));
    out
}

/// Node-wide findings that are not about one ruleset.
pub fn node_findings(facts: &NodeFacts) -> Vec<Finding> {
    let setting = |id, severity| Finding {
        id,
        severity,
        flows: Vec::new(),
        subject: Subject::NodeSetting,
    };
    let mut out = Vec::new();
    if facts.ip_forward == Some(false) {
        out.push(setting(FindingId::SysctlIpForward, Severity::Critical));
    }
    let on_bridge = facts
        .interfaces
        .as_ref()
        .is_some_and(|i| i.iter().any(|n| n == "cni0"));
    if on_bridge && facts.bridge_nf_call_iptables == Some(false) {
        out.push(setting(
            FindingId::SysctlBridgeNfCallIptables,
            Severity::Warning,
        ));
    }
    if facts.split_backends {
        out.push(setting(
            FindingId::IptablesLegacyNftSplit,
            Severity::Warning,
        ));
    }
    out
}

/// S4: pod egress leaves un-NATed because the MASQUERADE rules cover
/// another CIDR than the pod CIDR.
fn masquerade_mismatch(
    rs: &Ruleset,
    owners: &OwnerContext,
    pod: &IpNet,
    shape: &NodeShape,
) -> Option<Finding> {
    let probe = probes(pod, shape).into_iter().nth(EGRESS_PROBE)?;
    let mut pkt = probe.pkt;
    pkt.hook = Hook::Postrouting;
    pkt.in_iface = None;
    let outcomes = simulate(rs, &pkt);
    if outcomes.iter().any(|o| o.snat.is_some()) {
        return None;
    }
    // Which MASQUERADE rules exist, and for which sources? In iptables'
    // nat table and in every native table with a nat POSTROUTING chain
    // (flannel's `ip flannel-ipv4` in its nftables mode).
    let owner_of = |t: &crate::rules::Table, c: &str, r: &Rule| {
        crate::owner::table_owner(&t.name).unwrap_or_else(|| owners.rule_owner(c, r))
    };
    let masq: Vec<(&crate::rules::Table, &str, &Rule)> = rs
        .tables
        .values()
        .filter(|t| t.name == "nat" || t.base_chains(Hook::Postrouting).iter().any(|(_, b)| b.nat))
        .flat_map(|t| {
            t.chains
                .iter()
                .flat_map(move |c| c.rules.iter().map(move |r| (t, c.name.as_str(), r)))
        })
        .filter(|(t, c, r)| r.target == Target::Masquerade && owner_of(t, c, r) != Owner::Docker)
        .collect();
    let other: Vec<IpNet> = masq
        .iter()
        .flat_map(|(_, _, r)| r.matches.iter())
        .filter_map(|m| match m {
            Match::Src { neg: false, net }
                if !net.contains(&pod.addr())
                    && net.addr().is_ipv4() == pod.addr().is_ipv4()
                    && net.prefix_len() < 24 =>
            {
                Some(*net)
            }
            _ => None,
        })
        .collect();
    let (table, chain, rule) = masq.iter().find(|(_, _, r)| {
        r.matches
            .iter()
            .any(|m| matches!(m, Match::Src { neg: false, net } if other.contains(net)))
    })?;
    Some(Finding {
        id: FindingId::MasqueradeCidrMismatch,
        severity: Severity::Critical,
        flows: vec![pkt],
        subject: Subject::Masquerade {
            at: RuleAt {
                table: table.name.clone(),
                chain: (*chain).to_owned(),
                rule_no: None,
                rule: rule.text.clone(),
                owner: owner_of(table, chain, rule),
            },
            covered: *other.first()?,
            pod: *pod,
            unmodelled: outcomes.iter().any(|o| o.unmodelled),
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
                let Some(owner) = chain_owner(to).filter(|o| owners.is_leftover(*o)) else {
                    continue;
                };
                let chains = rs
                    .tables
                    .values()
                    .flat_map(|t| &t.chains)
                    .filter(|c| chain_owner(&c.name) == Some(owner))
                    .count();
                out.push(Finding {
                    id: FindingId::LeftoverCniChains,
                    severity: Severity::Warning,
                    flows: Vec::new(),
                    subject: Subject::LeftoverChains {
                        at: RuleAt {
                            table: t.name.clone(),
                            chain: c.name.clone(),
                            rule_no: Some(i + 1),
                            rule: r.text.clone(),
                            owner,
                        },
                        target: to.clone(),
                        chains,
                    },
                });
            }
        }
    }
    out
}

/// kube-proxy's "has no endpoints" rejects: not a broken node, but worth knowing.
fn services_without_endpoints(rs: &Ruleset, owners: &OwnerContext) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    // iptables mode: `-m comment --comment "ns/svc:port has no endpoints"
    // -j REJECT` in filter; nftables mode: an element of the
    // no-endpoint-services / no-endpoint-nodeports verdict maps, whose
    // comment names the Service (one finding per Service).
    let tables = rs.tables.values().filter(|t| {
        t.name == "filter" || crate::owner::table_owner(&t.name) == Some(Owner::KubeProxy)
    });
    for t in tables {
        let native = t.nft_family.is_some();
        for c in &t.chains {
            for (i, r) in c.rules.iter().enumerate() {
                let Some(comment) = r.comment() else { continue };
                let iptables_mode = !native
                    && comment.contains("has no endpoints")
                    && matches!(r.target, Target::Reject { .. });
                let nft_mode = native && r.text.contains("@no-endpoint-");
                if !(iptables_mode || nft_mode) {
                    continue;
                }
                let service = service_of(&comment);
                let known = |f: &Finding| matches!(&f.subject, Subject::ServiceWithoutEndpoints { service: s, .. } if *s == service);
                if service.is_some() && out.iter().any(known) {
                    continue;
                }
                out.push(Finding {
                    id: FindingId::ServiceWithoutEndpoints,
                    severity: Severity::Info,
                    flows: Vec::new(),
                    subject: Subject::ServiceWithoutEndpoints {
                        at: RuleAt {
                            table: t.name.clone(),
                            chain: c.name.clone(),
                            rule_no: Some(i + 1),
                            rule: r.text.clone(),
                            owner: crate::owner::table_owner(&t.name)
                                .unwrap_or_else(|| owners.rule_owner(&c.name, r)),
                        },
                        service,
                    },
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_ruleset;

    #[test]
    fn each_cnis_devices_come_from_its_profile() {
        let shape = |names: &[&str]| {
            NodeShape::from_names(names.iter().copied(), 8472, ShapeSource::Devices)
                .map(|s| (s.cni, s.overlay, s.overlay_port, s.pod_iface, s.underlay))
        };
        let o = |s: &str| Some(s.to_owned());
        assert_eq!(
            shape(&["eth0", "cilium_host", "cilium_vxlan", "lxc12ab", "cni0"]),
            Some((
                Owner::Cilium,
                o("cilium_vxlan"),
                Some(8472),
                "lxc12ab".into(),
                "eth0".into()
            ))
        );
        assert_eq!(
            shape(&["ens3", "tunl0", "cali1234"]),
            Some((
                Owner::Calico,
                o("tunl0"),
                None,
                "cali1234".into(),
                "ens3".into()
            ))
        );
        assert_eq!(
            shape(&["eth0", "vxlan.calico", "tunl0", "calic0ffee"]),
            Some((
                Owner::Calico,
                o("vxlan.calico"),
                Some(4789),
                "calic0ffee".into(),
                "eth0".into()
            ))
        );
        assert_eq!(
            shape(&["eth0", "weave", "cni0"]),
            Some((
                Owner::Weave,
                o("weave"),
                Some(6784),
                "weave".into(),
                "eth0".into()
            ))
        );
        assert_eq!(
            shape(&["eth0", "cbr0", "flannel.1"]),
            Some((
                Owner::Flannel,
                o("flannel.1"),
                Some(8472),
                "cbr0".into(),
                "eth0".into()
            ))
        );
        assert_eq!(
            shape(&["eth0", "cni0", "flannel-wg"]),
            Some((
                Owner::Flannel,
                o("flannel-wg"),
                None,
                "cni0".into(),
                "eth0".into()
            ))
        );
        assert_eq!(
            shape(&["eth0", "kube-bridge", "tun-1a2b"]),
            Some((
                Owner::KubeRouter,
                o("tun-1a2b"),
                None,
                "kube-bridge".into(),
                "eth0".into()
            ))
        );
        assert_eq!(
            shape(&["bond0", "cbr0"]),
            Some((Owner::CniPlugin, None, None, "cbr0".into(), "bond0".into()))
        );
        assert_eq!(
            shape(&["eth0", "docker0"]),
            Some((Owner::Docker, None, None, "docker0".into(), "eth0".into()))
        );
        // A Calico overlay without a pod's device says nothing alone.
        assert_eq!(shape(&["eth0", "vxlan.calico"]), None);
        assert_eq!(shape(&["eth0", "lo"]), None);
    }

    #[test]
    fn the_vxlan_probe_uses_the_clusters_port() {
        let rs = parse_ruleset(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp -m udp --dport 4789 -j DROP\nCOMMIT\n",
        )
        .unwrap();
        let pods = vec!["10.224.0.0/16".parse().unwrap()];
        let owners = OwnerContext::new(&rs, None);
        let flannel = check(
            &rs,
            &owners,
            &Cluster::new(pods.clone()),
            &NodeShape::flannel_default(8472),
        );
        assert!(flannel.is_empty(), "{flannel:?}");
        let other = check(
            &rs,
            &owners,
            &Cluster::new(pods),
            &NodeShape::flannel_default(4789),
        );
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].id, FindingId::InputBlocksVxlan);
        assert_eq!(other[0].flows[0].dport, Some(4789));
    }

    #[test]
    fn a_drop_that_needs_an_unknown_is_a_warning_not_critical() {
        let pods = vec!["10.224.0.0/16".parse().unwrap()];
        let forward_drop = |rule: &str| {
            let rs = parse_ruleset(&format!(
                "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -i flannel.1 -o cni0 {rule}-j DROP\nCOMMIT\n"
            ))
            .unwrap();
            let owners = OwnerContext::new(&rs, None);
            let shape = shape_of(Some(&rs), &NodeFacts::default(), 8472);
            assert_eq!(shape.learned, ShapeSource::Rules, "{shape:?}");
            check(&rs, &owners, &Cluster::new(pods.clone()), &shape)
        };
        // Certain: every walk of the probe dies there.
        let certain = forward_drop("");
        assert_eq!(certain.len(), 1, "{certain:?}");
        assert_eq!(certain[0].severity, Severity::Critical);
        // Only if the source is in an ipset netdrop cannot read: possible.
        let possible = forward_drop("-m set --match-set BLOCKED src ");
        assert_eq!(possible.len(), 1, "{possible:?}");
        assert_eq!(possible[0].severity, Severity::Warning);
        let Subject::Drop(d) = &possible[0].subject else {
            panic!("{possible:?}")
        };
        assert!(
            d.assumptions
                .iter()
                .flat_map(|a| a.questions())
                .any(|q| matches!(
                    q,
                    crate::question::Question::InIpset { name, .. } if name == "BLOCKED"
                )),
            "{:?}",
            d.assumptions
        );
    }

    /// On the second node of a flannel cluster (192.0.2.2, pods
    /// 10.224.2.0/24 on cni0, node1's 10.224.1.0/24 over flannel.1) the
    /// probes run as its traffic does: VXLAN from the peer to this node,
    /// pods of the other node arriving over flannel.1 for this node's
    /// pods. (They once ran from this node to the first, and from this
    /// node's own subnet in over flannel.1.)
    #[test]
    fn probes_run_between_the_nodes_own_addresses_and_its_peers() {
        let facts = NodeFacts {
            interfaces: Some(
                ["lo", "eth0", "flannel.1", "cni0"]
                    .map(String::from)
                    .to_vec(),
            ),
            underlay: Some("eth0".into()),
            routes: vec![
                ("192.0.2.0/24".parse().unwrap(), "eth0".into()),
                ("10.224.2.0/24".parse().unwrap(), "cni0".into()),
                ("10.224.1.0/24".parse().unwrap(), "flannel.1".into()),
            ],
            addresses: vec![
                ("192.0.2.2/24".parse().unwrap(), "eth0".into()),
                ("10.224.2.0/32".parse().unwrap(), "flannel.1".into()),
                ("10.224.2.1/24".parse().unwrap(), "cni0".into()),
            ],
            ..NodeFacts::default()
        };
        let shape = shape_of(None, &facts, 8472);
        let pod: IpNet = "10.224.0.0/16".parse().unwrap();
        let ends = ProbeEnds::of(&pod, &shape);
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            (
                ends.node,
                ends.peer,
                ends.local_pod,
                ends.pod_gw,
                ends.remote_pod
            ),
            (
                a("192.0.2.2"),
                a("192.0.2.1"),
                a("10.224.2.2"),
                a("10.224.2.1"),
                a("10.224.1.2")
            )
        );
        let ps = probes(&pod, &shape);
        fn flow(p: &Probe) -> (IpAddr, IpAddr, Option<&str>) {
            (p.pkt.src, p.pkt.dst, p.pkt.in_iface.as_deref())
        }
        assert_eq!(
            flow(&ps[0]),
            (a("10.224.1.2"), a("10.224.2.2"), Some("flannel.1"))
        );
        assert_eq!(
            flow(&ps[1]),
            (a("10.224.2.2"), a("10.224.1.2"), Some("cni0"))
        );
        let vxlan = ps
            .iter()
            .find(|p| p.id == Some(FindingId::InputBlocksVxlan))
            .unwrap();
        assert_eq!(flow(vxlan), (a("192.0.2.1"), a("192.0.2.2"), Some("eth0")));
        // Every address of the node is its own (INPUT), no other.
        let locals = vxlan.pkt.local_addrs.as_ref().unwrap();
        assert!(locals.contains(&a("192.0.2.2")) && locals.contains(&a("10.224.2.1")));
        assert!(!locals.contains(&a("192.0.2.1")));
        // Offline, nothing said: TEST-NET and the CIDR's first subnets.
        let offline = ProbeEnds::of(&pod, &NodeShape::flannel_default(8472));
        assert_eq!(
            (
                offline.node,
                offline.peer,
                offline.local_pod,
                offline.remote_pod
            ),
            (
                a("192.0.2.1"),
                a("192.0.2.2"),
                a("10.224.1.2"),
                a("10.224.2.2")
            )
        );
    }

    /// The probes cross the devices the node has, not flannel's on every
    /// node: a weave node is probed through weave and its port 6784, a
    /// Calico one through its per-pod device and no overlay port unless
    /// it runs VXLAN; a node that says nothing gets flannel's, said so.
    #[test]
    fn probes_follow_the_nodes_own_devices() {
        let names = |v: &[&'static str]| {
            NodeShape::from_names(v.iter().copied(), 8472, ShapeSource::Devices)
        };
        let weave = names(&["lo", "ens3", "weave", "vethwe-bridge", "datapath"]).unwrap();
        assert_eq!(
            (weave.cni, weave.pod_iface.as_str()),
            (Owner::Weave, "weave")
        );
        assert_eq!(
            (weave.overlay_port, weave.underlay.as_str()),
            (Some(6784), "ens3")
        );
        let calico = names(&["lo", "eth0", "tunl0", "cali12ab34cd56e"]).unwrap();
        assert_eq!(calico.cni, Owner::Calico);
        assert_eq!(calico.pod_iface, "cali12ab34cd56e");
        assert_eq!(
            (calico.overlay.as_deref(), calico.overlay_port),
            (Some("tunl0"), None)
        );
        let flannel = names(&["lo", "eth0", "flannel.1", "cni0", "veth1"]).unwrap();
        assert_eq!(
            flannel,
            NodeShape {
                learned: ShapeSource::Devices,
                ..NodeShape::flannel_default(8472)
            }
        );
        assert_eq!(names(&["lo", "eth0"]), None);

        let pod: IpNet = "10.32.0.0/12".parse().unwrap();
        let ps = probes(&pod, &weave);
        assert_eq!(ps[0].pkt.in_iface.as_deref(), Some("weave"));
        assert!(
            ps.iter()
                .all(|p| p.pkt.in_iface.as_deref() != Some("flannel.1"))
        );
        assert!(
            ps.iter()
                .any(|p| p.id == Some(FindingId::InputBlocksVxlan) && p.pkt.dport == Some(6784))
        );
        // No UDP overlay (Calico over IPIP): nothing knocks on 8472.
        let ps = probes(&pod, &calico);
        assert!(!ps.iter().any(|p| p.id == Some(FindingId::InputBlocksVxlan)));
        assert_eq!(ps[1].pkt.out_iface.as_deref(), Some("tunl0"));

        // A dump: its rules name kube-router's bridge.
        let rs = parse_ruleset("*filter\n:FORWARD ACCEPT [0:0]\n:KUBE-ROUTER-FORWARD - [0:0]\n-A FORWARD -j KUBE-ROUTER-FORWARD\n-A KUBE-ROUTER-FORWARD -o kube-bridge -j ACCEPT\nCOMMIT\n").unwrap();
        // flannel's chains name no device, and are flannel's still.
        let fl = parse_ruleset("*filter\n:FORWARD ACCEPT [0:0]\n:FLANNEL-FWD - [0:0]\n-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT\n-A FORWARD -o docker0 -j DOCKER\nCOMMIT\n").unwrap();
        let fl = shape_of(Some(&fl), &NodeFacts::default(), 8472);
        assert_eq!(
            (fl.cni, fl.overlay.as_deref()),
            (Owner::Flannel, Some("flannel.1"))
        );
        let kr = shape_of(Some(&rs), &NodeFacts::default(), 8472);
        assert_eq!(
            (kr.cni, kr.learned),
            (Owner::KubeRouter, ShapeSource::Rules)
        );
        assert_eq!(
            (kr.pod_iface.as_str(), kr.overlay.as_deref()),
            ("kube-bridge", None)
        );
        // Routes on a live node: each node's pod subnet, on the overlay
        // and the bridge; the network holding them stands for the CIDR.
        let facts = NodeFacts {
            routes: vec![
                ("10.224.2.0/24".parse().unwrap(), "flannel.1".into()),
                ("10.224.1.0/24".parse().unwrap(), "cni0".into()),
                ("192.0.2.0/24".parse().unwrap(), "eth0".into()),
                ("fe80::/64".parse().unwrap(), "cni0".into()),
            ],
            ..NodeFacts::default()
        };
        assert_eq!(
            facts.routed_pod_cidr(&NodeShape::flannel_default(8472)),
            Some("10.224.0.0/22".parse().unwrap())
        );
        let empty = parse_ruleset("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n").unwrap();
        assert_eq!(
            shape_of(Some(&empty), &NodeFacts::default(), 8472).learned,
            ShapeSource::Assumed
        );
    }
}
