//! Whose rule is it? Every chain and rule gets an owner from the names,
//! comments and shapes each agent writes, and a CNI's chains on a node where
//! that CNI is not running are flagged leftover.

use ipnet::IpNet;
use serde::Serialize;

use super::rules::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Owner {
    #[serde(rename = "kube-proxy")]
    KubeProxy,
    #[serde(rename = "kubelet")]
    Kubelet,
    #[serde(rename = "docker")]
    Docker,
    #[serde(rename = "flannel")]
    Flannel,
    #[serde(rename = "calico")]
    Calico,
    #[serde(rename = "cilium")]
    Cilium,
    #[serde(rename = "kube-router")]
    KubeRouter,
    #[serde(rename = "kindnet")]
    Kindnet,
    #[serde(rename = "cni-plugin")]
    CniPlugin,
    #[serde(rename = "firewalld")]
    Firewalld,
    #[serde(rename = "distro-firewall")]
    DistroFirewall,
    /// Weave Net's router (`WEAVE`, `WEAVE-EXPOSE`, ...).
    #[serde(rename = "weave")]
    Weave,
    /// Weave Net's NetworkPolicy controller (`WEAVE-NPC*`).
    #[serde(rename = "weave-npc")]
    WeaveNpc,
    /// Ubuntu's ufw (`ufw-*` chains; it also sets the default policies).
    #[serde(rename = "ufw")]
    Ufw,
    /// Shorewall, which compiles /etc/shorewall into the whole ruleset
    /// (its marker: a chain named `shorewall`).
    #[serde(rename = "shorewall")]
    Shorewall,
    /// ConfigServer Firewall (csf), which also writes the whole ruleset
    /// (`LOGDROPIN`, `ALLOWIN`, `DENYIN`, ...).
    #[serde(rename = "csf")]
    Csf,
    /// ferm, which writes the tables its configuration names and leaves
    /// no mark in them: known from the node (its configuration in force
    /// for the namespace read), not from the rules.
    #[serde(rename = "ferm")]
    Ferm,
    #[serde(rename = "custom")]
    Custom,
}

/// A name an owner's chains or native tables carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Prefix(&'static str),
    Exact(&'static str),
}

impl Name {
    pub fn matches(self, name: &str) -> bool {
        match self {
            Self::Prefix(p) => name.starts_with(p),
            Self::Exact(e) => name == e,
        }
    }
}

/// Where an owner's drops are fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixesThrough {
    /// A rule on the node, beside or in the owner's (it does not rewrite
    /// what the fix adds).
    Rules,
    /// A generator's configuration: it writes the whole ruleset (or, ufw,
    /// its chains and the policies) and would undo a rule edit at its next
    /// reload.
    Generator,
    /// The firewall's own tool (firewalld's `firewall-cmd`), which keeps
    /// its rules across its reloads.
    OwnTool,
    /// The cluster's NetworkPolicies, which the owner enforces.
    NetworkPolicy,
}

/// One owner, in one row: how its chains and native tables are known, the
/// devices that exist where it runs, how its leftovers are removed and
/// where its fixes go. Its words are `explain`'s (`owner_name`, and an arm
/// of `sentences` when its fixes have their own words). Adding an owner
/// is a row here, a variant of [`Owner`], and its words.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub owner: Owner,
    /// Stable label (metrics, JSON).
    pub label: &'static str,
    /// Its chains' names. [`PROFILES`] is in the order names are tried
    /// (`WEAVE-NPC` before `WEAVE`, `KUBE-ROUTER` before `KUBE-`).
    pub chains: &'static [Name],
    /// Its native nftables tables' names (without the family).
    pub tables: &'static [Name],
    /// Interfaces that exist on a node where it runs; its chains on a
    /// node with none of them are leftovers of an uninstalled agent.
    pub signature_interfaces: &'static [&'static str],
    /// What its chains' names share, to remove its leftovers
    /// (`iptables-save | grep -v -e PREFIX | iptables-restore`).
    pub leftover_prefix: &'static str,
    pub fixes: FixesThrough,
    /// For a CNI: the devices its nodes have, which `check`'s probes
    /// cross (`NodeShape::from_names` tries the profiles that have them,
    /// in [`Devices::rank`] order).
    pub devices: Option<Devices>,
}

/// The devices a CNI's node has, as `check`'s probes need them.
#[derive(Clone, Copy, Debug)]
pub struct Devices {
    /// Tried in this order (lower first): a node with Cilium's and a
    /// bridge is Cilium's.
    pub rank: u8,
    /// A device name that says the CNI runs (`Prefix`: any longer name
    /// starting so).
    pub marks: &'static [Name],
    /// Where pods hang off.
    pub pods: PodDevices,
    /// Its overlay devices, the first present wins, each with its port.
    pub overlays: &'static [(Name, OverlayPort)],
}

/// Where a CNI's pods hang off the node.
#[derive(Clone, Copy, Debug)]
pub enum PodDevices {
    /// One device per pod, named with this prefix (a sample name when the
    /// node has none yet).
    PerPod {
        prefix: &'static str,
        sample: &'static str,
    },
    /// A bridge: the first of the bridges the node has (`cni0`, `cbr0`,
    /// `kube-bridge`), `cni0` if none.
    Bridge,
    /// This one device.
    Named(&'static str),
}

/// The UDP port of an overlay device.
#[derive(Clone, Copy, Debug)]
pub enum OverlayPort {
    /// Not UDP (IP-in-IP, WireGuard's own), or none.
    None,
    Fixed(u16),
    /// The VXLAN port `check` is given (`--vxlan-port`, flannel's 8472).
    Configured,
}

const fn row(owner: Owner, label: &'static str, fixes: FixesThrough) -> Profile {
    Profile {
        owner,
        label,
        chains: &[],
        tables: &[],
        signature_interfaces: &[],
        leftover_prefix: "",
        fixes,
        devices: None,
    }
}

use FixesThrough::{Generator, NetworkPolicy, OwnTool, Rules};
use Name::{Exact, Prefix};

/// Every owner's row, in the order chain names are tried.
pub const PROFILES: &[Profile] = &[
    Profile {
        chains: &[Prefix("WEAVE-NPC")],
        signature_interfaces: &["weave", "vethwe-+", "datapath", "vxlan-6784"],
        leftover_prefix: "WEAVE",
        ..row(Owner::WeaveNpc, "weave-npc", NetworkPolicy)
    },
    Profile {
        chains: &[Prefix("WEAVE")],
        signature_interfaces: &["weave", "vethwe-+", "datapath", "vxlan-6784"],
        leftover_prefix: "WEAVE",
        devices: Some(Devices {
            rank: 2,
            marks: &[Exact("weave")],
            pods: PodDevices::Named("weave"),
            overlays: &[(Exact("weave"), OverlayPort::Fixed(6784))],
        }),
        ..row(Owner::Weave, "weave", Rules)
    },
    Profile {
        chains: &[Prefix("ufw-"), Prefix("ufw6-")],
        ..row(Owner::Ufw, "ufw", Generator)
    },
    Profile {
        chains: &[
            Prefix("KUBE-ROUTER"),
            Prefix("KUBE-POD-FW-"),
            Prefix("KUBE-NWPLCY-"),
        ],
        signature_interfaces: &["kube-bridge", "kube-dummy-if"],
        leftover_prefix: "KUBE-ROUTER",
        devices: Some(Devices {
            rank: 4,
            marks: &[Exact("kube-bridge")],
            pods: PodDevices::Bridge,
            overlays: &[(Prefix("tun-"), OverlayPort::None)],
        }),
        ..row(Owner::KubeRouter, "kube-router", NetworkPolicy)
    },
    Profile {
        chains: &[Exact("KUBE-FIREWALL"), Exact("KUBE-KUBELET-CANARY")],
        ..row(Owner::Kubelet, "kubelet", Rules)
    },
    Profile {
        chains: &[Prefix("KUBE-")],
        tables: &[Exact("kube-proxy")],
        ..row(Owner::KubeProxy, "kube-proxy", Rules)
    },
    Profile {
        chains: &[Prefix("DOCKER")],
        tables: &[Prefix("docker")],
        signature_interfaces: &["docker0"],
        leftover_prefix: "DOCKER",
        devices: Some(Devices {
            rank: 6,
            marks: &[Exact("docker0")],
            pods: PodDevices::Named("docker0"),
            overlays: &[],
        }),
        ..row(Owner::Docker, "docker", Rules)
    },
    Profile {
        chains: &[Prefix("FLANNEL")],
        tables: &[Prefix("flannel")],
        signature_interfaces: &["flannel.+", "flannel-wg", "flannel-v6.+"],
        leftover_prefix: "FLANNEL",
        devices: Some(Devices {
            rank: 3,
            marks: &[Prefix("flannel")],
            pods: PodDevices::Bridge,
            overlays: &[
                (Prefix("flannel."), OverlayPort::Configured),
                (Prefix("flannel-v6."), OverlayPort::Configured),
                (Prefix("flannel"), OverlayPort::None),
            ],
        }),
        ..row(Owner::Flannel, "flannel", Rules)
    },
    Profile {
        chains: &[Prefix("cali-")],
        tables: &[Prefix("calico")],
        signature_interfaces: &[
            "cali+",
            "tunl0",
            "vxlan.calico",
            "vxlan-v6.calico",
            "wireguard.cali",
        ],
        leftover_prefix: "cali-",
        devices: Some(Devices {
            rank: 1,
            marks: &[Prefix("cali")],
            pods: PodDevices::PerPod {
                prefix: "cali",
                sample: "cali0a1b2c3d4e5",
            },
            overlays: &[
                (Exact("vxlan.calico"), OverlayPort::Fixed(4789)),
                (Exact("tunl0"), OverlayPort::None),
            ],
        }),
        ..row(Owner::Calico, "calico", NetworkPolicy)
    },
    Profile {
        chains: &[Prefix("CILIUM"), Prefix("cilium")],
        tables: &[Prefix("cilium")],
        signature_interfaces: &["cilium_host", "cilium_net", "cilium_vxlan", "lxc+"],
        leftover_prefix: "CILIUM",
        devices: Some(Devices {
            rank: 0,
            marks: &[Prefix("cilium_")],
            pods: PodDevices::PerPod {
                prefix: "lxc",
                sample: "lxc0a1b2c3d4e5",
            },
            overlays: &[(Exact("cilium_vxlan"), OverlayPort::Fixed(8472))],
        }),
        ..row(Owner::Cilium, "cilium", NetworkPolicy)
    },
    Profile {
        chains: &[Prefix("KIND-")],
        ..row(Owner::Kindnet, "kindnet", Rules)
    },
    Profile {
        chains: &[Prefix("CNI-")],
        // The plain bridge plugin.
        devices: Some(Devices {
            rank: 5,
            marks: &[Exact("cni0"), Exact("cbr0")],
            pods: PodDevices::Bridge,
            overlays: &[],
        }),
        ..row(Owner::CniPlugin, "cni-plugin", Rules)
    },
    Profile {
        chains: &[
            Exact("INPUT_direct"),
            Exact("FORWARD_direct"),
            Exact("OUTPUT_direct"),
            Exact("PREROUTING_direct"),
            Exact("POSTROUTING_direct"),
            Exact("INPUT_ZONES"),
            Exact("FORWARD_IN_ZONES"),
            Exact("FORWARD_OUT_ZONES"),
            Exact("PREROUTING_ZONES"),
            Exact("POSTROUTING_ZONES"),
            Exact("OUTPUT_POLICIES"),
            Prefix("IN_"),
            Prefix("FWDI_"),
            Prefix("FWDO_"),
            Prefix("FWD_"),
            Prefix("PRE_"),
            Prefix("POST_"),
            Prefix("OUT_"),
        ],
        tables: &[Exact("firewalld"), Exact("firewalld_policy_drop")],
        ..row(Owner::Firewalld, "firewalld", OwnTool)
    },
    // Known from the whole ruleset or the node, not from a chain's name.
    row(Owner::DistroFirewall, "distro-firewall", Rules),
    row(Owner::Shorewall, "shorewall", Generator),
    row(Owner::Csf, "csf", Generator),
    row(Owner::Ferm, "ferm", Generator),
    row(Owner::Custom, "custom", Rules),
];

impl Owner {
    /// This owner's row of [`PROFILES`] (a unit test holds that every
    /// owner has one).
    pub fn profile(self) -> &'static Profile {
        PROFILES
            .iter()
            .find(|p| p.owner == self)
            .unwrap_or(&PROFILES[PROFILES.len() - 1])
    }

    /// Stable label value (metrics, JSON).
    pub fn as_str(self) -> &'static str {
        self.profile().label
    }

    /// Interfaces that exist on a node where this agent runs; its chains on a
    /// node with none of them are leftovers of an uninstalled agent.
    pub fn signature_interfaces(self) -> &'static [&'static str] {
        self.profile().signature_interfaces
    }

    /// Agents whose leftovers netdrop recognises.
    fn can_be_leftover(self) -> bool {
        !self.signature_interfaces().is_empty()
    }
}

/// Owner of a chain from its name alone (`None` for built-ins and unknown names).
pub fn chain_owner(name: &str) -> Option<Owner> {
    PROFILES
        .iter()
        .find(|p| p.chains.iter().any(|c| c.matches(name)))
        .map(|p| p.owner)
}

/// The owner of a native nftables table (`inet firewalld`), by its name.
pub fn table_owner(table: &str) -> Option<Owner> {
    let (_, name) = table.split_once(' ')?;
    PROFILES
        .iter()
        .find(|p| p.tables.iter().any(|t| t.matches(name)))
        .map(|p| p.owner)
}

/// Chains csf writes (ConfigServer Firewall's `csf.pl`); generic names
/// such as `INVALID` are csf's only beside its marker chains.
const CSF_CHAINS: &[&str] = &[
    "ALLOWIN",
    "ALLOWOUT",
    "DENYIN",
    "DENYOUT",
    "LOCALINPUT",
    "LOCALOUTPUT",
    "LOGDROPIN",
    "LOGDROPOUT",
    "INVALID",
    "INVDROP",
    "CC_ALLOW",
    "CC_ALLOWF",
    "CC_ALLOWP",
    "CC_ALLOWPORTS",
    "CC_DENY",
    "CC_DENYP",
    "CC_DENYPORTS",
    "GALLOWIN",
    "GALLOWOUT",
    "GDENYIN",
    "GDENYOUT",
    "SYNFLOOD",
    "PORTFLOOD",
    "UDPFLOOD",
    "SMTPOUTPUT",
    "BLOCKDROP",
];

/// What the owner rules need to know about the whole ruleset and node.
#[derive(Clone, Debug, Default)]
pub struct OwnerContext {
    /// Networks flannel masquerades (`-s NET ! -d 224.0.0.0/4 -j MASQUERADE`).
    pub flannel_networks: Vec<IpNet>,
    pub has_docker_chains: bool,
    pub has_firewalld_chains: bool,
    pub has_ufw_chains: bool,
    /// A firewall generator that writes the whole ruleset (Shorewall,
    /// csf), told by its marker chains: it owns what no agent claims, and
    /// the built-in chains' policies.
    pub generator: Option<Owner>,
    /// Interface names of the node; `None` when unknown (offline dump).
    pub interfaces: Option<Vec<String>>,
}

impl OwnerContext {
    pub fn new(rs: &Ruleset, interfaces: Option<Vec<String>>) -> Self {
        let mut ctx = Self {
            interfaces,
            ..Self::default()
        };
        let multicast: IpNet = "224.0.0.0/4".parse().expect("valid CIDR");
        let has = |name: &str| rs.tables.values().any(|t| t.chain(name).is_some());
        ctx.generator = if has("shorewall") || has("shorewall6") {
            Some(Owner::Shorewall)
        } else if has("LOGDROPIN") && has("ALLOWIN") && has("DENYIN") {
            Some(Owner::Csf)
        } else if rs.ferm_conf.is_some() {
            Some(Owner::Ferm)
        } else {
            None
        };
        for t in rs.tables.values() {
            for c in &t.chains {
                ctx.has_docker_chains |= c.name.starts_with("DOCKER");
                ctx.has_ufw_chains |= chain_owner(&c.name) == Some(Owner::Ufw);
                ctx.has_firewalld_chains |= chain_owner(&c.name) == Some(Owner::Firewalld);
                for r in &c.rules {
                    let multicast_excluded = r
                        .matches
                        .iter()
                        .any(|m| matches!(m, Match::Dst { neg: true, net } if *net == multicast));
                    let flannel_comment = r.comment().is_some_and(|c| c.contains("flanneld"));
                    if r.target == Target::Masquerade && (multicast_excluded || flannel_comment) {
                        for m in &r.matches {
                            if let Match::Src { neg: false, net } = m
                                && !ctx.flannel_networks.contains(net)
                            {
                                ctx.flannel_networks.push(*net);
                            }
                        }
                    }
                }
            }
        }
        ctx
    }

    /// The owner of chain `name`: by its name, or a generator's chain.
    pub fn chain_owner(&self, name: &str) -> Option<Owner> {
        chain_owner(name).or(match self.generator {
            // Shorewall names its chains after zones (`net2fw`, `loc-net`)
            // and actions: every non-built-in chain no agent claims.
            Some(Owner::Shorewall) if !is_builtin_chain(name) => Some(Owner::Shorewall),
            Some(Owner::Csf) if CSF_CHAINS.contains(&name) => Some(Owner::Csf),
            // ferm writes the user chains its configuration declares.
            Some(Owner::Ferm) if !is_builtin_chain(name) => Some(Owner::Ferm),
            _ => None,
        })
    }

    /// The owner of rule `rule` in `chain`.
    pub fn rule_owner(&self, chain: &str, rule: &Rule) -> Owner {
        let owner = self.claimed_rule_owner(chain, rule);
        match (owner, self.generator) {
            // A generator writes the built-in chains too.
            (Owner::Custom, Some(g)) => g,
            (o, _) => o,
        }
    }

    fn claimed_rule_owner(&self, chain: &str, rule: &Rule) -> Owner {
        if let Some(o) = self.chain_owner(chain) {
            return o;
        }
        if let Target::Jump(t) | Target::Goto(t) = &rule.target
            && let Some(o) = self.chain_owner(t)
        {
            return o;
        }
        if let Some(c) = rule.comment() {
            let c = c.to_ascii_lowercase();
            if c.contains("flanneld") {
                return Owner::Flannel;
            }
            if c.starts_with("cali:") {
                return Owner::Calico;
            }
            if c.contains("cilium") {
                return Owner::Cilium;
            }
            if c.contains("kube-router") {
                return Owner::KubeRouter;
            }
            if c.contains("kubernetes") {
                return Owner::KubeProxy;
            }
        }
        let on_docker0 = rule.matches.iter().any(|m| matches!(m, Match::InIface { pat, .. } | Match::OutIface { pat, .. } if pat.0 == "docker0"));
        if on_docker0 {
            return Owner::Docker;
        }
        if let Target::Reject { with: Some(w) } = &rule.target
            && w == "icmp-host-prohibited"
        {
            // firewalld's iptables backend ends INPUT and FORWARD so too.
            return if self.has_firewalld_chains {
                Owner::Firewalld
            } else {
                Owner::DistroFirewall
            };
        }
        let on_flannel_net = rule.matches.iter().any(|m| match m {
            Match::Src { net, .. } | Match::Dst { net, .. } => self.flannel_networks.contains(net),
            _ => false,
        });
        if on_flannel_net
            && matches!(
                rule.target,
                Target::Masquerade | Target::Return | Target::Accept
            )
        {
            return Owner::Flannel;
        }
        Owner::Custom
    }

    /// Who set a built-in chain's policy.
    pub fn policy_owner(&self, chain: &str, policy: Policy) -> Owner {
        if chain == "FORWARD" && policy == Policy::Drop && self.has_docker_chains {
            // Docker sets FORWARD to DROP when it enables IP forwarding.
            Owner::Docker
        } else if let Some(g) = self.generator {
            g
        } else if self.has_firewalld_chains {
            Owner::Firewalld
        } else if self.has_ufw_chains && chain != "OUTPUT" {
            // ufw's DEFAULT_INPUT_POLICY / DEFAULT_FORWARD_POLICY.
            Owner::Ufw
        } else {
            Owner::Custom
        }
    }

    /// Whether `owner` looks uninstalled on this node: a CNI whose chains
    /// are here but none of whose interfaces are. Unknown interfaces → false.
    pub fn is_leftover(&self, owner: Owner) -> bool {
        let Some(ifaces) = &self.interfaces else {
            return false;
        };
        owner.can_be_leftover()
            && !owner.signature_interfaces().iter().any(|sig| {
                ifaces
                    .iter()
                    .any(|i| IfacePattern((*sig).to_owned()).matches(i))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every owner has one row, its label is its JSON name, and no two
    /// rows share a label.
    #[test]
    fn every_owner_has_one_profile() {
        let all = [
            Owner::KubeProxy,
            Owner::Kubelet,
            Owner::Docker,
            Owner::Flannel,
            Owner::Calico,
            Owner::Cilium,
            Owner::KubeRouter,
            Owner::Kindnet,
            Owner::CniPlugin,
            Owner::Firewalld,
            Owner::DistroFirewall,
            Owner::Weave,
            Owner::WeaveNpc,
            Owner::Ufw,
            Owner::Shorewall,
            Owner::Csf,
            Owner::Ferm,
            Owner::Custom,
        ];
        assert_eq!(PROFILES.len(), all.len());
        for o in all {
            assert_eq!(PROFILES.iter().filter(|p| p.owner == o).count(), 1, "{o:?}");
            assert_eq!(
                serde_json::to_value(o).unwrap(),
                serde_json::json!(o.profile().label)
            );
        }
        // Names are tried in order: the longer names first.
        assert_eq!(chain_owner("WEAVE-NPC-INGRESS"), Some(Owner::WeaveNpc));
        assert_eq!(chain_owner("KUBE-ROUTER-INPUT"), Some(Owner::KubeRouter));
        assert_eq!(chain_owner("KUBE-FIREWALL"), Some(Owner::Kubelet));
        assert_eq!(chain_owner("KUBE-SERVICES"), Some(Owner::KubeProxy));
        assert_eq!(chain_owner("IN_public_allow"), Some(Owner::Firewalld));
        assert_eq!(chain_owner("INPUT"), None);
        assert_eq!(table_owner("ip docker-bridges"), Some(Owner::Docker));
        assert_eq!(table_owner("inet firewalld"), Some(Owner::Firewalld));
        assert_eq!(table_owner("inet filter"), None);
    }
    use crate::parse::parse_ruleset;

    #[test]
    fn owners_from_names_comments_and_shapes() {
        let rs = parse_ruleset(concat!(
            "*nat\n",
            "-A POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN\n",
            "-A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE\n",
            "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n",
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
            "COMMIT\n*filter\n",
            "-A FORWARD -j REJECT --reject-with icmp-host-prohibited\n",
            "-A INPUT -s 1.2.3.4/32 -j DROP\n",
            "COMMIT\n"
        ))
        .unwrap();
        let ctx = OwnerContext::new(&rs, None);
        assert_eq!(
            ctx.flannel_networks,
            vec!["10.244.0.0/16".parse::<IpNet>().unwrap()]
        );
        let post = &rs.tables["nat"].chain("POSTROUTING").unwrap().rules;
        let owners: Vec<Owner> = post
            .iter()
            .map(|r| ctx.rule_owner("POSTROUTING", r))
            .collect();
        assert_eq!(
            owners,
            [
                Owner::Flannel,
                Owner::Flannel,
                Owner::Docker,
                Owner::KubeProxy
            ]
        );
        let f = &rs.tables["filter"];
        assert_eq!(
            ctx.rule_owner("FORWARD", &f.chain("FORWARD").unwrap().rules[0]),
            Owner::DistroFirewall
        );
        assert_eq!(
            ctx.rule_owner("INPUT", &f.chain("INPUT").unwrap().rules[0]),
            Owner::Custom
        );
        assert_eq!(chain_owner("cali-INPUT"), Some(Owner::Calico));
        assert_eq!(chain_owner("KUBE-POD-FW-ABC"), Some(Owner::KubeRouter));
        assert_eq!(chain_owner("KUBE-SVC-X"), Some(Owner::KubeProxy));
    }

    #[test]
    fn weave_ufw_and_generators_are_named() {
        let owner_of = |dump: &str, chain: &str, rule: usize| {
            let rs = parse_ruleset(dump).unwrap();
            let ctx = OwnerContext::new(&rs, None);
            let r = &rs.tables["filter"].chain(chain).unwrap().rules[rule];
            ctx.rule_owner(chain, r)
        };
        let weave = "*filter\n:FORWARD DROP [0:0]\n:WEAVE-NPC - [0:0]\n:WEAVE-NPC-INGRESS - [0:0]\n:WEAVE-EXPOSE - [0:0]\n-A FORWARD -o weave -j WEAVE-NPC\n-A FORWARD -o weave -j WEAVE-EXPOSE\n-A WEAVE-NPC -m state --state NEW -j WEAVE-NPC-INGRESS\n-A WEAVE-NPC -j DROP\nCOMMIT\n";
        assert_eq!(owner_of(weave, "FORWARD", 0), Owner::WeaveNpc);
        assert_eq!(owner_of(weave, "FORWARD", 1), Owner::Weave);
        assert_eq!(owner_of(weave, "WEAVE-NPC", 1), Owner::WeaveNpc);

        let ufw = "*filter\n:INPUT DROP [0:0]\n:ufw-user-input - [0:0]\n-A INPUT -j ufw-user-input\n-A INPUT -s 192.0.2.9/32 -j DROP\nCOMMIT\n";
        assert_eq!(owner_of(ufw, "INPUT", 0), Owner::Ufw);
        // Beside ufw, a rule of its own is still someone else's.
        assert_eq!(owner_of(ufw, "INPUT", 1), Owner::Custom);
        let rs = parse_ruleset(ufw).unwrap();
        assert_eq!(
            OwnerContext::new(&rs, None).policy_owner("INPUT", Policy::Drop),
            Owner::Ufw
        );

        // Shorewall's marker chain makes its zone chains, and every rule
        // it wrote into the built-in chains, Shorewall's.
        let shorewall = "*filter\n:INPUT DROP [0:0]\n:net2fw - [0:0]\n:shorewall - [0:0]\n-A INPUT -i eth0 -j net2fw\n-A INPUT -j DROP\n-A net2fw -p udp --dport 8472 -j DROP\nCOMMIT\n";
        assert_eq!(owner_of(shorewall, "INPUT", 0), Owner::Shorewall);
        assert_eq!(owner_of(shorewall, "INPUT", 1), Owner::Shorewall);
        assert_eq!(owner_of(shorewall, "net2fw", 0), Owner::Shorewall);
        // Without the marker, a chain named net2fw is nobody's in particular.
        let no_marker = shorewall.replace(":shorewall - [0:0]\n", "");
        assert_eq!(owner_of(&no_marker, "net2fw", 0), Owner::Custom);

        let csf = "*filter\n:INPUT DROP [0:0]\n:ALLOWIN - [0:0]\n:DENYIN - [0:0]\n:LOGDROPIN - [0:0]\n:INVALID - [0:0]\n-A INPUT -j INVALID\n-A INPUT -j LOGDROPIN\n-A LOGDROPIN -j DROP\nCOMMIT\n";
        assert_eq!(owner_of(csf, "INPUT", 0), Owner::Csf);
        // ferm leaves no mark: its configuration in force says it.
        let plain = "*filter\n:INPUT DROP [0:0]\n:mychain - [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -j mychain\n-A INPUT -i docker0 -j ACCEPT\nCOMMIT\n";
        assert_eq!(owner_of(plain, "INPUT", 0), Owner::Custom);
        let mut rs = parse_ruleset(plain).unwrap();
        rs.ferm_conf = Some("/etc/ferm/ferm.conf".into());
        let ctx = OwnerContext::new(&rs, None);
        let input = rs.tables["filter"].chain("INPUT").unwrap();
        assert_eq!(ctx.rule_owner("INPUT", &input.rules[0]), Owner::Ferm);
        assert_eq!(ctx.chain_owner("mychain"), Some(Owner::Ferm));
        assert_eq!(
            ctx.rule_owner("INPUT", &input.rules[2]),
            Owner::Docker,
            "an agent's rule stays its own"
        );
        assert_eq!(ctx.policy_owner("INPUT", Policy::Drop), Owner::Ferm);
        assert_eq!(owner_of(csf, "LOGDROPIN", 0), Owner::Csf);
        // INVALID alone is a common name: csf's only beside its markers.
        let plain = "*filter\n:INPUT ACCEPT [0:0]\n:INVALID - [0:0]\n-A INPUT -j INVALID\nCOMMIT\n";
        assert_eq!(owner_of(plain, "INPUT", 0), Owner::Custom);
    }

    #[test]
    fn leftover_needs_known_interfaces() {
        let rs = Ruleset::default();
        assert!(!OwnerContext::new(&rs, None).is_leftover(Owner::Calico));
        let ctx = OwnerContext::new(
            &rs,
            Some(vec!["lo".into(), "eth0".into(), "flannel.1".into()]),
        );
        assert!(ctx.is_leftover(Owner::Calico));
        assert!(!ctx.is_leftover(Owner::Flannel));
        assert!(!ctx.is_leftover(Owner::KubeProxy));
        let ctx = OwnerContext::new(&rs, Some(vec!["cali1234abcd".into()]));
        assert!(!ctx.is_leftover(Owner::Calico));
    }

    #[test]
    fn a_host_prohibited_reject_beside_firewallds_chains_is_firewallds() {
        let rules = |extra: &str| {
            format!(
                "*filter\n:INPUT ACCEPT [0:0]\n{extra}-A INPUT -j REJECT --reject-with icmp-host-prohibited\nCOMMIT\n"
            )
        };
        for (extra, owner) in [
            ("", Owner::DistroFirewall),
            (
                ":INPUT_ZONES - [0:0]\n-A INPUT -j INPUT_ZONES\n",
                Owner::Firewalld,
            ),
        ] {
            let rs = crate::parse_ruleset(&rules(extra)).unwrap();
            let ctx = OwnerContext::new(&rs, None);
            let chain = rs.tables["filter"].chain("INPUT").unwrap();
            assert_eq!(ctx.rule_owner("INPUT", chain.rules.last().unwrap()), owner);
        }
    }
}
