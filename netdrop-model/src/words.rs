//! The domain's own words, one enum each, shared by the model, the
//! explanations and the records: a hook is a `Hook`, never a string that
//! someone compares.

use serde::Serialize;

/// A netfilter hook, named as iptables names its built-in chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub const ALL: [Hook; 5] = [
        Self::Prerouting,
        Self::Input,
        Self::Forward,
        Self::Output,
        Self::Postrouting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prerouting => "PREROUTING",
            Self::Input => "INPUT",
            Self::Forward => "FORWARD",
            Self::Output => "OUTPUT",
            Self::Postrouting => "POSTROUTING",
        }
    }

    /// The hook whose built-in chain has this name (`INPUT` → Input).
    pub fn of_chain(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == name)
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Hook {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::of_chain(&s.to_ascii_uppercase()).ok_or_else(|| {
            format!("unknown hook {s:?} (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING)")
        })
    }
}

/// The address family of a table: iptables' tables are `ip` (iptables) or
/// `ip6` (ip6tables); native nftables adds `inet`, which sees both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[default]
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: std::net::IpAddr) -> Self {
        if addr.is_ipv4() {
            Self::Ipv4
        } else {
            Self::Ipv6
        }
    }

    /// The iptables command of this family.
    pub fn iptables(self) -> &'static str {
        match self {
            Self::Ipv4 => "iptables",
            Self::Ipv6 => "ip6tables",
        }
    }
}

/// How a packet's walk through a hook ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "ACCEPT",
            Self::Drop => "DROP",
            Self::Reject => "REJECT",
        }
    }

    pub fn is_drop(self) -> bool {
        self != Self::Accept
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why netdrop believes what it says about a drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Evidence {
    /// The rule's (or policy's) own counter grew by at least the drops seen.
    Counters,
    /// Only the model's walk says so.
    Simulated,
    /// No rule involved: the kernel's drop reason says it all.
    Kernel,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counters => "counters",
            Self::Simulated => "simulated",
            Self::Kernel => "kernel",
        }
    }
}

/// How bad a static finding is (`check` exits 3 from `Warning` up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// A static finding's stable id (records, metrics, alerts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingId {
    /// FORWARD's policy drops pod traffic.
    ForwardPolicyDrop,
    /// A FORWARD rule drops pod traffic.
    ForwardRuleDropsPodTraffic,
    /// A leftover CNI's chain drops pod traffic.
    LeftoverCniDropsPodTraffic,
    /// INPUT drops the overlay's VXLAN between nodes.
    InputBlocksVxlan,
    /// INPUT drops the kubelet API.
    InputBlocksKubelet,
    /// The MASQUERADE rules cover another CIDR than the pod CIDR.
    MasqueradeCidrMismatch,
    /// Chains of a CNI that does not run here are still hooked in.
    LeftoverCniChains,
    /// kube-proxy rejects a Service that has no endpoints.
    ServiceWithoutEndpoints,
    /// `net.ipv4.ip_forward` is 0.
    SysctlIpForward,
    /// Pods share a bridge that iptables does not see.
    SysctlBridgeNfCallIptables,
    /// Rules in both iptables backends.
    IptablesLegacyNftSplit,
    /// netdrop itself: the node dropped at more sites than
    /// `--max-site-series`; the rest are counted in `other` series.
    DropSitesCapped,
}

impl FindingId {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForwardPolicyDrop => "forward-policy-drop",
            Self::ForwardRuleDropsPodTraffic => "forward-rule-drops-pod-traffic",
            Self::LeftoverCniDropsPodTraffic => "leftover-cni-drops-pod-traffic",
            Self::InputBlocksVxlan => "input-blocks-vxlan",
            Self::InputBlocksKubelet => "input-blocks-kubelet",
            Self::MasqueradeCidrMismatch => "masquerade-cidr-mismatch",
            Self::LeftoverCniChains => "leftover-cni-chains",
            Self::ServiceWithoutEndpoints => "service-without-endpoints",
            Self::SysctlIpForward => "sysctl-ip-forward",
            Self::SysctlBridgeNfCallIptables => "sysctl-bridge-nf-call-iptables",
            Self::IptablesLegacyNftSplit => "iptables-legacy-nft-split",
            Self::DropSitesCapped => "drop-sites-capped",
        }
    }

    /// About a node setting, not about anyone's rule.
    pub fn is_node_setting(self) -> bool {
        matches!(
            self,
            Self::SysctlIpForward | Self::SysctlBridgeNfCallIptables | Self::IptablesLegacyNftSplit
        )
    }
}

impl std::fmt::Display for FindingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialised_names_are_the_label_values() {
        for id in [
            FindingId::ForwardPolicyDrop,
            FindingId::MasqueradeCidrMismatch,
            FindingId::SysctlBridgeNfCallIptables,
            FindingId::IptablesLegacyNftSplit,
        ] {
            assert_eq!(
                serde_json::to_value(id).unwrap(),
                serde_json::Value::from(id.as_str())
            );
        }
        for h in Hook::ALL {
            assert_eq!(h.as_str().parse::<Hook>(), Ok(h));
            assert_eq!(serde_json::to_value(h).unwrap(), h.as_str());
        }
        assert_eq!(
            serde_json::to_value(Evidence::Counters).unwrap(),
            "counters"
        );
        assert_eq!(serde_json::to_value(Severity::Warning).unwrap(), "warning");
    }
}
