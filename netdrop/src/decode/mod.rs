//! Decode: turn the kernel's compact drop keys into names an operator knows
//! (reason, hook, drop location, node, interface, protocol).

pub mod flow;

use std::collections::HashMap;

use netdrop_common::{DropKey, DropSample, hook};
use netdrop_model::{
    Hook,
    rules::{Engine, proto_name},
};
use serde::Serialize;

use crate::capture::KernelInfo;
use crate::netns::Netns;

/// The hook the kernel program classified a drop at.
pub fn hook_from_kernel(h: u8) -> Option<Hook> {
    match h {
        hook::PREROUTING => Some(Hook::Prerouting),
        hook::INPUT => Some(Hook::Input),
        hook::FORWARD => Some(Hook::Forward),
        hook::OUTPUT => Some(Hook::Output),
        hook::POSTROUTING => Some(Hook::Postrouting),
        _ => None,
    }
}

/// The engine that freed a netfilter drop at kernel function `location`
/// (`function+0xoff`). `nf_tables_frees_own`: the running kernel is 6.7 or
/// newer, so a drop freed by `nf_hook_slow` is not nf_tables'. `None`: the
/// location does not tell.
pub fn engine_of(location: &str, nf_tables_frees_own: bool) -> Option<Engine> {
    let function = location.split('+').next().unwrap_or(location);
    if function.starts_with("nft_") || function.starts_with("nf_tables_") {
        Some(Engine::NfTables)
    } else if function.starts_with("ipt_")
        || function.starts_with("ip6t_")
        || (function == "nf_hook_slow" && nf_tables_frees_own)
    {
        Some(Engine::XTables)
    } else {
        None
    }
}

/// A drop site with names instead of numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DropSite {
    pub node: String,
    pub netns: u64,
    pub reason: String,
    /// Netfilter dropped it (`SKB_DROP_REASON_NETFILTER_DROP`): a rule or
    /// policy did, and attribution looks for it.
    pub netfilter: bool,
    pub hook: Option<Hook>,
    /// Kernel function that dropped the packet, `function+0xoff`.
    pub location: String,
    /// The packet filter engine that location belongs to (iptables-legacy
    /// or nf_tables), for a netfilter drop where it tells.
    pub engine: Option<Engine>,
    pub in_iface: Option<String>,
    pub out_iface: Option<String>,
    pub family: Option<&'static str>,
    pub proto: Option<String>,
    /// The outer packet was VXLAN (UDP to the overlay port).
    pub vxlan: bool,
    /// Bridged, seen by iptables through br_netfilter (in = out = the bridge).
    pub bridged: bool,
}

/// Names drop keys, caching what it learns per namespace.
pub struct Decoder {
    kernel: KernelInfo,
    nodes: Vec<Netns>,
    ifaces: HashMap<u64, HashMap<u32, String>>,
}

impl Decoder {
    pub fn new(kernel: KernelInfo, nodes: Vec<Netns>) -> Self {
        Self {
            kernel,
            nodes,
            ifaces: HashMap::new(),
        }
    }

    /// The nodes now (a namespace that appeared, or was re-created with a
    /// new inode).
    pub fn set_nodes(&mut self, nodes: Vec<Netns>) {
        self.ifaces
            .retain(|inode, _| nodes.iter().any(|n| n.inode == *inode));
        self.nodes = nodes;
    }

    /// The observed node a namespace inode belongs to, if any.
    pub fn node(&self, netns: u32) -> Option<&Netns> {
        self.nodes.iter().find(|n| n.inode == u64::from(netns))
    }

    pub fn reason_name(&self, reason: u32) -> String {
        self.kernel
            .drop_reasons
            .get(&reason)
            .cloned()
            .unwrap_or_else(|| format!("reason_{reason}"))
    }

    pub fn decode(&mut self, key: &DropKey) -> DropSite {
        let node = self.node(key.netns).cloned();
        let in_iface = node
            .as_ref()
            .and_then(|n| self.iface_name(n, key.in_ifindex));
        let out_iface = node
            .as_ref()
            .and_then(|n| self.iface_name(n, key.out_ifindex));
        let reason = self.reason_name(key.reason);
        let netfilter = reason == "NETFILTER_DROP";
        let location = self
            .kernel
            .kallsyms
            .symbolize(key.location)
            .unwrap_or_else(|| format!("0x{:x}", key.location));
        DropSite {
            netfilter,
            engine: netfilter
                .then(|| engine_of(&location, self.kernel.nf_tables_frees_own))
                .flatten(),
            node: node
                .as_ref()
                .map(Netns::label)
                .unwrap_or_else(|| format!("netns:{}", key.netns)),
            netns: u64::from(key.netns),
            reason,
            hook: hook_from_kernel(key.hook),
            location,
            in_iface,
            out_iface,
            family: match key.family {
                4 => Some("ipv4"),
                6 => Some("ipv6"),
                _ => None,
            },
            proto: match key.l4proto {
                0 => None,
                p => Some(
                    proto_name(p)
                        .map(str::to_owned)
                        .unwrap_or_else(|| p.to_string()),
                ),
            },
            vxlan: key.flags & netdrop_common::flags::VXLAN != 0,
            bridged: key.flags & netdrop_common::flags::BRIDGED != 0,
        }
    }

    /// Bridge ports of a bridged drop's sample, by name.
    pub fn bridge_ports(
        &mut self,
        netns: u32,
        sample: &DropSample,
    ) -> (Option<String>, Option<String>) {
        let Some(node) = self.node(netns).cloned() else {
            return (None, None);
        };
        (
            self.iface_name(&node, sample.phys_in),
            self.iface_name(&node, sample.phys_out),
        )
    }

    fn iface_name(&mut self, node: &Netns, ifindex: u32) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        let lookup = |ns: &Netns| ns.interfaces().unwrap_or_default();
        let cached = self
            .ifaces
            .entry(node.inode)
            .or_insert_with(|| lookup(node));
        if !cached.contains_key(&ifindex) {
            // Interfaces come and go (pods start): refresh once on a miss.
            *cached = lookup(node);
        }
        cached.get(&ifindex).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_locations_name_their_engine() {
        use Engine::*;
        assert_eq!(engine_of("nft_do_chain+0x3c4", false), Some(NfTables));
        assert_eq!(engine_of("nft_reject_inet_eval+0x90", true), Some(NfTables));
        assert_eq!(engine_of("nf_hook_slow+0x42", true), Some(XTables));
        // Before 6.7 nf_tables left its drops to nf_hook_slow as well.
        assert_eq!(engine_of("nf_hook_slow+0x42", false), None);
        assert_eq!(engine_of("ip_forward+0x10", true), None);
    }
}
