//! Drops no rule made: the kernel's own drop reasons (reverse-path filter,
//! no route, MTU, no listener, ARP, VXLAN mismatch), each with what it means
//! on a flannel node and, where one exists, the command that fixes it.

use crate::decode::{DropSite, flow::Flow};

/// What the node knows that changes the answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelFacts {
    /// `net.ipv4.ip_forward` of the node; `None` = unknown.
    pub ip_forward: Option<bool>,
}

/// The reasons whose explanation depends on `net.ipv4.ip_forward`.
pub fn needs_ip_forward(reason: &str) -> bool {
    matches!(
        reason,
        "IP_INADDRERRORS" | "IP_INNOROUTES" | "IP_OUTNOROUTES"
    )
}

const PERSIST_SYSCTL: &str = "persist it in a file under /etc/sysctl.d/";

/// Explanation and fix of a drop with kernel reason `reason`.
pub fn explain(
    reason: &str,
    site: &DropSite,
    flow: Option<&Flow>,
    facts: KernelFacts,
) -> (String, Option<String>) {
    let iface = site
        .in_iface
        .as_deref()
        .or(site.out_iface.as_deref())
        .unwrap_or("the interface");
    let src = flow.map_or_else(|| "the source".to_owned(), |f| f.src.to_string());
    let dst = flow.map_or_else(|| "the destination".to_owned(), |f| f.dst.to_string());
    let (what, fix): (String, Option<String>) = match reason {
        "IP_RPFILTER" => (
            format!(
                "reverse-path filtering (rp_filter) rejected source {src} on {iface}: the node's route back to {src} does not leave through {iface}"
            ),
            Some(format!(
                "Route {src} back through {iface}, or make the check loose: `sysctl -w net.ipv4.conf.{iface}.rp_filter=2 net.ipv4.conf.all.rp_filter=2` (the kernel applies the larger of the two); {PERSIST_SYSCTL}."
            )),
        ),
        "IP_INADDRERRORS" | "IP_INNOROUTES" | "IP_OUTNOROUTES"
            if facts.ip_forward == Some(false) =>
        (
            format!(
                "the node does not forward packets (net.ipv4.ip_forward=0), so {src} -> {dst} has nowhere to go"
            ),
            Some(format!(
                "`sysctl -w net.ipv4.ip_forward=1`; {PERSIST_SYSCTL} (e.g. 99-kubernetes.conf), as kubeadm's preflight expects."
            )),
        ),
        "IP_INADDRERRORS" | "IP_INNOROUTES" | "IP_OUTNOROUTES" => (
            format!("the node has no route to {dst}"),
            Some(format!(
                "`ip route get {dst}` on the node shows the gap. For another node's pod subnet, flanneld installs a route via flannel.1 per node: check `ip route | grep flannel.1` and flanneld's log."
            )),
        ),
        "PKT_TOO_BIG" => (
            "the packet is larger than the MTU of the way out and may not be fragmented; with VXLAN every packet carries 50 bytes more".to_owned(),
            Some(
                "Give pods an MTU that fits: the underlay MTU minus 50 for VXLAN (flannel writes it as FLANNEL_MTU to /run/flannel/subnet.env, which the CNI config uses); compare `ip link` MTUs of cni0, flannel.1 and the NIC, and let ICMP \"fragmentation needed\" through so path MTU discovery works.".to_owned(),
            ),
        ),
        "NO_SOCKET" => {
            let port = flow
                .and_then(|f| f.dport.map(|p| format!("{} port {p}", f.proto)))
                .unwrap_or_else(|| "the port".to_owned());
            (
                format!("nothing on the node listens on {dst} {port}"),
                Some(format!(
                    "Start (or fix the bind address of) the service meant to answer on {dst} {port}; `ss -lntu` on the node lists what listens."
                )),
            )
        }
        "NEIGH_FAILED" | "NEIGH_QUEUEFULL" => (
            "the next hop's MAC address could not be resolved (ARP)".to_owned(),
            Some(
                "Check `ip neigh` on the node: on flannel.1, flanneld installs a permanent entry per node, so a missing one means flanneld has not seen that node (its log, and the node's flannel annotations).".to_owned(),
            ),
        ),
        "OTHERHOST" => (
            "the frame was addressed to another host's MAC".to_owned(),
            None,
        ),
        "VXLAN_INVALID_HDR" | "VXLAN_VNI_NOT_FOUND" => (
            "the VXLAN packet did not match a local VXLAN device (VNI or port mismatch between nodes)".to_owned(),
            Some(
                "Make every node use the same VNI and port: flannel's Backend `VNI` and `Port` in net-conf.json; `ip -d link show flannel.1` on each node shows its id and dstport.".to_owned(),
            ),
        ),
        _ => ("see the kernel's enum skb_drop_reason".to_owned(), None),
    };
    (
        format!(
            "The kernel dropped it ({reason}) in {}: {what}.",
            site.location
        ),
        fix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(in_iface: Option<&str>) -> DropSite {
        DropSite {
            node: "n".into(),
            netns: 1,
            reason: String::new(),
            netfilter: false,
            hook: None,
            location: "ip_rcv_finish_core+0x25b".into(),
            engine: None,
            in_iface: in_iface.map(str::to_owned),
            out_iface: None,
            family: Some("ipv4"),
            proto: Some("udp".into()),
            vxlan: false,
            bridged: false,
        }
    }

    fn flow() -> Flow {
        Flow {
            src: "203.0.113.9".parse().unwrap(),
            dst: "10.224.9.1".parse().unwrap(),
            proto: "udp".into(),
            sport: Some(40000),
            dport: Some(7000),
            icmp_type: None,
        }
    }

    #[test]
    fn rp_filter_names_the_interface_and_the_source() {
        let (why, fix) = explain(
            "IP_RPFILTER",
            &site(Some("cni0")),
            Some(&flow()),
            KernelFacts::default(),
        );
        assert!(why.contains("source 203.0.113.9 on cni0"), "{why}");
        assert!(
            fix.unwrap()
                .contains("net.ipv4.conf.cni0.rp_filter=2 net.ipv4.conf.all.rp_filter=2")
        );
    }

    #[test]
    fn no_route_depends_on_ip_forward() {
        let off = KernelFacts {
            ip_forward: Some(false),
        };
        let (why, fix) = explain("IP_INADDRERRORS", &site(Some("cni0")), Some(&flow()), off);
        assert!(why.contains("ip_forward=0"), "{why}");
        assert!(fix.unwrap().contains("sysctl -w net.ipv4.ip_forward=1"));
        let on = KernelFacts {
            ip_forward: Some(true),
        };
        let (why, fix) = explain("IP_INADDRERRORS", &site(Some("cni0")), Some(&flow()), on);
        assert!(why.contains("no route to 10.224.9.1"), "{why}");
        assert!(fix.unwrap().contains("ip route get 10.224.9.1"));
    }

    #[test]
    fn unknown_reasons_have_no_fix() {
        let (why, fix) = explain("SOMETHING_NEW", &site(None), None, KernelFacts::default());
        assert!(why.contains("(SOMETHING_NEW)"));
        assert_eq!(fix, None);
    }
}
