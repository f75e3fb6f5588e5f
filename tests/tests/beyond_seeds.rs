//! SCENARIOS.md "beyond the seeds", on real packets through a node (the
//! router namespace): a Service with no endpoints, reverse-path filtering,
//! a path MTU too small, and a node that does not forward. Each must come
//! with what happened and the command that fixes it.

use std::net::SocketAddr;

use netdrop_tests::{Routed, field, last_drop, require_root, routed, traffic};
use serde_json::Value;

/// Runs `send` under `netdrop watch` on the router until `count` drops with
/// kernel reason `reason` are reported; returns the last such record.
fn drop_record(r: &Routed, reason: &str, count: u64, send: impl FnOnce()) -> Value {
    last_drop(
        &["--netns", &r.router, "--pod-cidr", "10.224.0.0/16"],
        send,
        |rec| field(rec, "reason") == reason,
        count,
    )
}

#[test]
fn service_without_endpoints_is_named_with_its_service() {
    require_root!();
    let r = routed();
    // kube-proxy's rules for a Service whose pods are all gone.
    let rules: &[&[&str]] = &[
        &["-N", "KUBE-SERVICES"],
        &[
            "-A",
            "FORWARD",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
        &[
            "-A",
            "KUBE-SERVICES",
            "-d",
            "10.96.0.20/32",
            "-p",
            "udp",
            "-m",
            "comment",
            "--comment",
            "default/web:dns has no endpoints",
            "-m",
            "udp",
            "--dport",
            "53",
            "-j",
            "REJECT",
            "--reject-with",
            "icmp-port-unreachable",
        ],
    ];
    r.lab.iptables_all(&r.router, rules).unwrap();
    r.lab
        .ip(&r.router, &["route", "add", "10.96.0.0/12", "dev", "eth1"])
        .unwrap();
    let rec = drop_record(&r, "NETFILTER_DROP", 3, || {
        traffic::send_udp(&r.client, "10.96.0.20:53".parse().unwrap(), 3, 20).unwrap()
    });
    assert_eq!(field(&rec, "hook"), "FORWARD", "{rec}");
    assert_eq!(field(&rec, "chain"), "KUBE-SERVICES", "{rec}");
    assert_eq!(field(&rec, "verdict"), "REJECT", "{rec}");
    assert_eq!(field(&rec, "owner"), "kube-proxy", "{rec}");
    assert_eq!(field(&rec, "service"), "default/web:dns", "{rec}");
    assert!(field(&rec, "fix").contains("endpointslices"), "{rec}");
}

#[test]
fn reverse_path_filter_names_interface_source_and_sysctl() {
    require_root!();
    let r = routed();
    // The client spoofs an "internet" source; the router's way back to it
    // is eth1, not cni0 where it came in.
    r.lab
        .ip(&r.client, &["addr", "add", "203.0.113.9/32", "dev", "lo"])
        .unwrap();
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.cni0.rp_filter",
    ] {
        r.lab.sysctl(&r.router, key, "1").unwrap();
    }
    // The router's MAC first, from the client's real address: an ARP request
    // from the spoofed one fails the same check and is never answered.
    r.lab
        .exec(&r.client, &["ping", "-c", "1", "-W", "2", "10.224.9.1"])
        .unwrap();
    let rec = drop_record(&r, "IP_RPFILTER", 3, || {
        let from: SocketAddr = "203.0.113.9:0".parse().unwrap();
        traffic::send_udp_from(&r.client, from, "10.224.9.1:7000".parse().unwrap(), 3, 20).unwrap()
    });
    assert_eq!(field(&rec, "in_iface"), "cni0", "{rec}");
    assert_eq!(field(&rec, "src"), "203.0.113.9", "{rec}");
    assert!(
        field(&rec, "explanation").contains("source 203.0.113.9 on cni0"),
        "{rec}"
    );
    assert!(
        field(&rec, "fix").contains("net.ipv4.conf.cni0.rp_filter=2"),
        "{rec}"
    );
}

#[test]
fn packet_larger_than_the_path_mtu_is_named_with_the_vxlan_overhead() {
    require_root!();
    let r = routed();
    // The way out is 1400 bytes; the pod sends 1478 with DF (the default
    // path MTU discovery of a UDP socket).
    r.lab
        .ip(&r.router, &["link", "set", "eth1", "mtu", "1400"])
        .unwrap();
    let rec = drop_record(&r, "PKT_TOO_BIG", 1, || {
        traffic::send_udp(&r.client, "203.0.113.2:7000".parse().unwrap(), 1, 1450).unwrap()
    });
    assert_eq!(field(&rec, "in_iface"), "cni0", "{rec}");
    assert!(field(&rec, "explanation").contains("50 bytes"), "{rec}");
    assert!(field(&rec, "fix").contains("FLANNEL_MTU"), "{rec}");
}

#[test]
fn node_that_does_not_forward_says_ip_forward() {
    require_root!();
    let r = routed();
    r.lab.sysctl(&r.router, "net.ipv4.ip_forward", "0").unwrap();
    let rec = drop_record(&r, "IP_INADDRERRORS", 4, || {
        traffic::send_udp(&r.client, "203.0.113.2:7000".parse().unwrap(), 4, 20).unwrap()
    });
    assert!(field(&rec, "explanation").contains("ip_forward=0"), "{rec}");
    assert!(
        field(&rec, "fix").contains("sysctl -w net.ipv4.ip_forward=1"),
        "{rec}"
    );
}

/// Conntrack INVALID drops in kube-proxy's KUBE-FORWARD: the kernel sample
/// has no conntrack state, so the simulation cannot reach the rule; its
/// counter, grown by exactly these drops, names it.
#[test]
fn conntrack_invalid_drop_is_found_by_the_rule_counter() {
    require_root!();
    let r = routed();
    let rules: &[&[&str]] = &[
        &["-N", "KUBE-FORWARD"],
        &["-A", "FORWARD", "-j", "KUBE-FORWARD"],
        &[
            "-A",
            "KUBE-FORWARD",
            "-m",
            "conntrack",
            "--ctstate",
            "INVALID",
            "-j",
            "DROP",
        ],
    ];
    r.lab.iptables_all(&r.router, rules).unwrap();
    let rec = drop_record(&r, "NETFILTER_DROP", 3, || {
        traffic::send_stray_tcp_acks(&r.client, "203.0.113.2:8080".parse().unwrap(), 3).unwrap()
    });
    assert_eq!(field(&rec, "chain"), "KUBE-FORWARD", "{rec}");
    assert!(field(&rec, "rule").contains("INVALID"), "{rec}");
    assert_eq!(field(&rec, "owner"), "kube-proxy", "{rec}");
    assert_eq!(field(&rec, "evidence"), "counters", "{rec}");
    // Said, not guessed: the walk did not reach the rule (a sample has no
    // conntrack state), the counter did; nothing unmodelled in the rule.
    assert_eq!(
        rec["assumptions"],
        serde_json::json!(["found by rule counters; the simulation did not reach this rule"]),
        "{rec}"
    );
    assert_eq!(rec["unmodelled"], false, "{rec}");
    assert!(field(&rec, "explanation").contains("INVALID"), "{rec}");
    assert!(
        field(&rec, "fix").contains("nf_conntrack_tcp_be_liberal"),
        "{rec}"
    );
}
