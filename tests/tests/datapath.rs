//! The kernel datapath on real packets: the hook of every netfilter drop,
//! the inner pod flow of a dropped VXLAN packet, and the in-kernel pod filter.

use std::{net::SocketAddr, time::Duration};

use netdrop_tests::{Lab, Watch, field, last_drop, require_root, routed, total_packets, traffic};

#[test]
fn every_netfilter_hook_is_named() {
    require_root!();
    // (hook, table, rule): each DROP sits in a different hook of the router
    // or, for OUTPUT, of the sender itself.
    let cases: [(&str, &str, &str); 5] = [
        ("PREROUTING", "raw", "PREROUTING"),
        ("INPUT", "filter", "INPUT"),
        ("FORWARD", "filter", "FORWARD"),
        ("POSTROUTING", "mangle", "POSTROUTING"),
        ("OUTPUT", "filter", "OUTPUT"),
    ];
    // Both tp_btf builds: route read through a cast, and probe-read.
    for ((hook, table, chain), probe) in cases
        .into_iter()
        .flat_map(|c| ["tp-btf", "tp-btf-probe-read"].map(|p| (c, p)))
    {
        let r = routed();
        // OUTPUT: the router itself sends; others: the client sends through it.
        let (sender, dst): (&str, SocketAddr) = match hook {
            "INPUT" => (&r.client, "10.224.9.1:7000".parse().unwrap()),
            "OUTPUT" => (&r.router, "203.0.113.2:7000".parse().unwrap()),
            _ => (&r.client, "203.0.113.2:7000".parse().unwrap()),
        };
        r.lab
            .iptables(
                &r.router,
                &[
                    "-t", table, "-A", chain, "-p", "udp", "--dport", "7000", "-j", "DROP",
                ],
            )
            .unwrap();
        let mut w = Watch::start(&[
            "--netns",
            &r.router,
            "--pod-cidr",
            "10.224.0.0/16",
            "--all",
            "--drop-probe",
            probe,
        ])
        .unwrap();
        traffic::send_udp(sender, dst, 4, 32).unwrap();
        let ours = |rec: &serde_json::Value| {
            field(rec, "reason") == "NETFILTER_DROP" && field(rec, "proto") == "udp"
        };
        w.wait_for(Duration::from_secs(10), |w| {
            total_packets(&w.records(), ours) >= 4
        })
        .unwrap_or_else(|e| panic!("{hook} ({probe}): {e}"));
        let recs = w.stop().unwrap();
        assert_eq!(total_packets(&recs, ours), 4, "{hook} ({probe}): {recs:#?}");
        for rec in recs.iter().filter(|r| ours(r)) {
            assert_eq!(field(rec, "hook"), hook, "{probe}: {rec}");
            assert_eq!(field(rec, "node"), r.router);
            match hook {
                "FORWARD" => {
                    assert_eq!(field(rec, "in_iface"), "cni0", "{rec}");
                    assert_eq!(field(rec, "out_iface"), "eth1", "{rec}");
                }
                "PREROUTING" | "INPUT" => assert_eq!(field(rec, "in_iface"), "cni0", "{rec}"),
                _ => assert_eq!(field(rec, "out_iface"), "eth1", "{rec}"),
            }
            assert_eq!(rec["dport"], 7000, "{rec}");
        }
    }
}

#[test]
fn pod_filter_keeps_pod_drops_only() {
    require_root!();
    let r = routed();
    // The router drops everything to port 7000 in INPUT, from pods (cni0
    // side) and from the "internet" (eth1 side).
    r.lab
        .iptables(
            &r.router,
            &["-A", "INPUT", "-p", "udp", "--dport", "7000", "-j", "DROP"],
        )
        .unwrap();
    let mut w = Watch::start(&["--netns", &r.router, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    traffic::send_udp(&r.server, "203.0.113.1:7000".parse().unwrap(), 6, 32).unwrap();
    traffic::send_udp(&r.client, "10.224.9.1:7000".parse().unwrap(), 3, 32).unwrap();
    let nf = |rec: &serde_json::Value| field(rec, "reason") == "NETFILTER_DROP";
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), nf) >= 3
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let recs = w.stop().unwrap();
    // Only the 3 pod packets are counted; the 6 from 203.0.113.2 are not.
    assert_eq!(total_packets(&recs, nf), 3, "{recs:#?}");
    assert!(
        recs.iter()
            .filter(|r| nf(r))
            .all(|r| field(r, "src") == "10.224.9.2"),
        "{recs:#?}"
    );
}

/// A netfilter drop of a VXLAN packet.
fn vxlan_dropped(rec: &serde_json::Value) -> bool {
    field(rec, "reason") == "NETFILTER_DROP" && rec["vxlan"] == true
}

/// One flannel VXLAN overlay between two nodes: an underlay (`eth0`), the
/// VXLAN device the way flannel builds it (id 1 on 8472, the node's pod
/// subnet address on the device), and node1's on-link route to node2's pod
/// subnet with static neighbour and FDB entries.
struct Overlay {
    /// The VXLAN device (`flannel.1`, or `flannel-v6.1`).
    dev: &'static str,
    /// Underlay addresses of node1 and node2, and their prefix length.
    underlay: [&'static str; 2],
    prefix: &'static str,
    /// The address flannel gives each node's VXLAN device (its pod subnet's
    /// network address) and node2's pod subnet.
    pod_addr: [&'static str; 2],
    peer_subnet: &'static str,
}

const FLANNEL_V4: Overlay = Overlay {
    dev: "flannel.1",
    underlay: ["192.0.2.1", "192.0.2.2"],
    prefix: "24",
    pod_addr: ["10.224.1.0", "10.224.2.0"],
    peer_subnet: "10.224.2.0/24",
};

const FLANNEL_V6: Overlay = Overlay {
    dev: "flannel-v6.1",
    underlay: ["2001:db8:1::1", "2001:db8:1::2"],
    prefix: "64",
    pod_addr: ["fd00:224:1::", "fd00:224:2::"],
    peer_subnet: "fd00:224:2::/64",
};

fn vxlan_nodes(o: &Overlay) -> (Lab, String, String) {
    let mut lab = Lab::new("vx");
    let n1 = lab.netns("n1").unwrap();
    let n2 = lab.netns("n2").unwrap();
    lab.veth((&n1, "eth0", None), (&n2, "eth0", None)).unwrap();
    let macs = ["0e:00:00:00:00:01", "0e:00:00:00:00:02"];
    let single = if o.prefix == "24" { "32" } else { "128" };
    for (i, ns) in [&n1, &n2].into_iter().enumerate() {
        let underlay = format!("{}/{}", o.underlay[i], o.prefix);
        let pod = format!("{}/{single}", o.pod_addr[i]);
        // nodad: IPv6 addresses usable at once (ignored for IPv4).
        for args in [
            &["addr", "add", &underlay, "dev", "eth0", "nodad"][..],
            &[
                "link",
                "add",
                o.dev,
                "address",
                macs[i],
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                o.underlay[i],
                "dev",
                "eth0",
                "dstport",
                "8472",
                "nolearning",
            ],
            &["addr", "add", &pod, "dev", o.dev, "nodad"],
            &["link", "set", o.dev, "up"],
        ] {
            lab.ip(ns, args).unwrap();
        }
    }
    for args in [
        &[
            "route",
            "add",
            o.peer_subnet,
            "via",
            o.pod_addr[1],
            "dev",
            o.dev,
            "onlink",
        ][..],
        &[
            "neigh",
            "add",
            o.pod_addr[1],
            "lladdr",
            macs[1],
            "dev",
            o.dev,
            "nud",
            "permanent",
        ],
    ] {
        lab.ip(&n1, args).unwrap();
    }
    lab.exec(
        &n1,
        &[
            "bridge",
            "fdb",
            "append",
            macs[1],
            "dev",
            o.dev,
            "dst",
            o.underlay[1],
        ],
    )
    .unwrap();
    (lab, n1, n2)
}

/// Scenario S3's kernel side: the receiving node's INPUT drops the VXLAN
/// packet; netdrop names the outer node-to-node packet and the pods inside.
#[test]
fn dropped_vxlan_packet_names_the_inner_pods() {
    require_root!();
    let (lab, n1, n2) = vxlan_nodes(&FLANNEL_V4);
    // S3: the receiving node's firewall rejects VXLAN.
    lab.iptables(
        &n2,
        &[
            "-A", "INPUT", "-p", "udp", "--dport", "8472", "-j", "REJECT",
        ],
    )
    .unwrap();

    // Both tp_btf builds: headers read in place through a cast, and probe-read.
    for probe in ["tp-btf", "tp-btf-probe-read"] {
        let rec = &last_drop(
            &[
                "--netns",
                &n2,
                "--pod-cidr",
                "10.224.0.0/16",
                "--drop-probe",
                probe,
            ],
            || traffic::send_udp(&n1, "10.224.2.7:5353".parse().unwrap(), 5, 40).unwrap(),
            vxlan_dropped,
            5,
        );
        assert_eq!(field(rec, "hook"), "INPUT");
        assert_eq!(
            (field(rec, "src"), field(rec, "dst")),
            ("192.0.2.1", "192.0.2.2"),
            "{probe}: {rec}"
        );
        assert_eq!(rec["dport"], 8472);
        let inner = &rec["inner"];
        assert_eq!(
            (field(inner, "src"), field(inner, "dst")),
            ("10.224.1.0", "10.224.2.7"),
            "{probe}: {rec}"
        );
        assert_eq!(
            (field(inner, "proto"), inner["dport"].as_u64()),
            ("udp", Some(5353)),
            "{probe}: {rec}"
        );
        assert_eq!(rec["vni"], 1);
    }
}

/// Two pods on one node's `cni0` with br_netfilter on (what kube-proxy asks
/// of every node): iptables sees their bridged packets in FORWARD and
/// POSTROUTING, where the routing state looks alike; netdrop names the hook,
/// the bridge and its ports, and the rule (a `-m physdev` one included).
#[test]
fn bridged_drops_name_hook_bridge_and_ports() {
    require_root!();
    let mut lab = Lab::new("br");
    let node = lab.netns("n").unwrap();
    let pod_a = lab.netns("a").unwrap();
    let pod_b = lab.netns("b").unwrap();
    lab.bridge(&node, "cni0", Some("10.224.9.1/24")).unwrap();
    for (pod, port, addr) in [
        (&pod_a, "veth-a", "10.224.9.2/24"),
        (&pod_b, "veth-b", "10.224.9.3/24"),
    ] {
        lab.bridge_port((&node, "cni0", port), (pod, addr)).unwrap();
        lab.ip(pod, &["route", "add", "default", "via", "10.224.9.1"])
            .unwrap();
    }
    lab.sysctl(&node, "net.bridge.bridge-nf-call-iptables", "1")
        .unwrap();
    lab.sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
    // Port 7001: FORWARD, by a physdev rule; 7002: mangle POSTROUTING;
    // 53 on a ClusterIP: DNATed to pod b's 7003, then dropped in FORWARD
    // (the Service-to-a-pod-on-the-same-node path).
    for rule in [
        "-A FORWARD -m physdev --physdev-in veth-a --physdev-is-bridged -p udp --dport 7001 -j DROP",
        "-t mangle -A POSTROUTING -p udp --dport 7002 -j DROP",
        "-t nat -A PREROUTING -d 10.96.0.10/32 -p udp --dport 53 -j DNAT --to-destination 10.224.9.3:7003",
        "-A FORWARD -d 10.224.9.3/32 -p udp --dport 7003 -j DROP",
    ] {
        let args: Vec<&str> = rule.split(' ').collect();
        lab.iptables(&node, &args).unwrap();
    }
    // One watch per case: 7001 and 7003 share a drop site (same hook,
    // devices and protocol), and a site's record carries one sample's ports.
    // Both probes: the stack is read in either.
    let cases = [
        (
            "10.224.9.3:7001",
            3,
            "FORWARD",
            "filter",
            "--physdev-in veth-a",
        ),
        (
            "10.224.9.3:7002",
            4,
            "POSTROUTING",
            "mangle",
            "--dport 7002",
        ),
        ("10.96.0.10:53", 5, "FORWARD", "filter", "--dport 7003"),
    ];
    for ((dst, count, hook, table, rule), probe) in cases
        .into_iter()
        .flat_map(|c| ["tp-btf", "tp-btf-probe-read", "tracepoint"].map(|p| (c, p)))
    {
        let mut w = Watch::start(&[
            "--netns",
            &node,
            "--pod-cidr",
            "10.224.0.0/16",
            "--drop-probe",
            probe,
        ])
        .unwrap();
        traffic::send_udp(&pod_a, dst.parse().unwrap(), count, 32).unwrap();
        let nf = |rec: &serde_json::Value| field(rec, "reason") == "NETFILTER_DROP";
        w.wait_for(Duration::from_secs(10), |w| {
            total_packets(&w.records(), nf) >= count
        })
        .unwrap_or_else(|e| panic!("{dst} ({probe}): {e}"));
        let recs = w.stop().unwrap();
        assert_eq!(
            total_packets(&recs, nf),
            count,
            "{dst} ({probe}): {recs:#?}"
        );
        let rec = recs.iter().rev().find(|r| nf(r)).unwrap();
        assert_eq!(field(rec, "hook"), hook, "{rec}");
        assert_eq!(rec["bridged"], true, "{rec}");
        assert_eq!(
            (field(rec, "in_iface"), field(rec, "out_iface")),
            ("cni0", "cni0"),
            "{rec}"
        );
        assert_eq!(
            (field(rec, "physdev_in"), field(rec, "physdev_out")),
            ("veth-a", "veth-b"),
            "{rec}"
        );
        assert_eq!(field(rec, "table"), table, "{rec}");
        assert!(field(rec, "rule").contains(rule), "{rec}");
        assert_eq!(field(rec, "src"), "10.224.9.2", "{rec}");
        assert!(
            field(rec, "explanation").contains("bridged by cni0 from port veth-a to veth-b"),
            "{rec}"
        );
    }

    // Bridged FORWARD and POSTROUTING drops share one kernel counter (the
    // stack walk that tells them apart is for samples only); one after the
    // other, each hook's site still gets exactly its own drops.
    hooks_in_one_watch(
        &node,
        &[
            (&pod_a, "10.224.9.3:7001", 3, "FORWARD"),
            (&pod_a, "10.224.9.3:7002", 4, "POSTROUTING"),
        ],
    );
}

/// IPv6 pods (dual-stack): drops in INPUT and FORWARD of an IPv6 router are
/// counted exactly, named with their hook and attributed to the ip6tables
/// rule.
#[test]
fn ipv6_drops_are_counted_and_attributed_to_ip6tables_rules() {
    require_root!();
    let mut lab = Lab::new("v6");
    let client = lab.netns("c").unwrap();
    let router = lab.netns("r").unwrap();
    let server = lab.netns("s").unwrap();
    lab.veth((&client, "eth0", None), (&router, "cni0", None))
        .unwrap();
    lab.veth((&router, "eth1", None), (&server, "eth0", None))
        .unwrap();
    // nodad: usable at once, no duplicate address detection wait.
    for (ns, addr, dev) in [
        (&client, "fd00:224:9::2/64", "eth0"),
        (&router, "fd00:224:9::1/64", "cni0"),
        (&router, "2001:db8:1::1/64", "eth1"),
        (&server, "2001:db8:1::2/64", "eth0"),
    ] {
        lab.ip(ns, &["-6", "addr", "add", addr, "dev", dev, "nodad"])
            .unwrap();
    }
    lab.ip(
        &client,
        &["-6", "route", "add", "default", "via", "fd00:224:9::1"],
    )
    .unwrap();
    lab.ip(
        &server,
        &[
            "-6",
            "route",
            "add",
            "fd00:224::/32",
            "via",
            "2001:db8:1::1",
        ],
    )
    .unwrap();
    lab.sysctl(&router, "net.ipv6.conf.all.forwarding", "1")
        .unwrap();
    for (chain, port) in [("INPUT", "7001"), ("FORWARD", "7000")] {
        lab.exec(
            &router,
            &[
                "ip6tables",
                "-A",
                chain,
                "-p",
                "udp",
                "--dport",
                port,
                "-j",
                "DROP",
            ],
        )
        .unwrap();
    }
    // Both tp_btf builds: IPv6 headers read in place and probe-read.
    for probe in ["tp-btf", "tp-btf-probe-read"] {
        let mut w = Watch::start(&[
            "--netns",
            &router,
            "--pod-cidr",
            "fd00:224::/32",
            "--drop-probe",
            probe,
        ])
        .unwrap();
        traffic::send_udp(&client, "[2001:db8:1::2]:7000".parse().unwrap(), 3, 32).unwrap();
        traffic::send_udp(&client, "[fd00:224:9::1]:7001".parse().unwrap(), 2, 32).unwrap();
        let at = |hook: &'static str| {
            move |rec: &serde_json::Value| {
                field(rec, "reason") == "NETFILTER_DROP" && field(rec, "hook") == hook
            }
        };
        w.wait_for(Duration::from_secs(10), |w| {
            let recs = w.records();
            total_packets(&recs, at("FORWARD")) >= 3 && total_packets(&recs, at("INPUT")) >= 2
        })
        .unwrap();
        let recs = w.stop().unwrap();
        for (hook, packets, dst, port) in [
            ("FORWARD", 3, "2001:db8:1::2", 7000),
            ("INPUT", 2, "fd00:224:9::1", 7001),
        ] {
            assert_eq!(
                total_packets(&recs, at(hook)),
                packets,
                "{probe}: {recs:#?}"
            );
            let rec = recs.iter().rev().find(|r| at(hook)(r)).unwrap();
            assert_eq!(
                (field(rec, "src"), field(rec, "dst")),
                ("fd00:224:9::2", dst),
                "{probe}: {rec}"
            );
            assert_eq!(rec["dport"], port, "{probe}: {rec}");
            assert_eq!(
                (field(rec, "table"), field(rec, "chain")),
                ("filter", hook),
                "{probe}: {rec}"
            );
            assert!(
                field(rec, "rule").contains(&format!("--dport {port}")),
                "{probe}: {rec}"
            );
            assert_eq!(field(rec, "evidence"), "counters", "{probe}: {rec}");
        }
    }
}

/// The sending side of S3: node1's own OUTPUT drops the VXLAN packets that
/// flannel.1 has just built, from a local process and from a pod it
/// forwards (the route is an output one while `skb->dev` is still
/// flannel.1): hook OUTPUT, out eth0, the pods inside named.
#[test]
fn vxlan_dropped_leaving_the_sending_node_is_output() {
    require_root!();
    let (mut lab, n1, _n2) = vxlan_nodes(&FLANNEL_V4);
    let pod = lab.netns("pod").unwrap();
    lab.veth(
        (&pod, "eth0", Some("10.224.1.2/24")),
        (&n1, "cni0", Some("10.224.1.1/24")),
    )
    .unwrap();
    lab.ip(&pod, &["route", "add", "default", "via", "10.224.1.1"])
        .unwrap();
    lab.sysctl(&n1, "net.ipv4.ip_forward", "1").unwrap();
    lab.iptables(
        &n1,
        &["-A", "OUTPUT", "-p", "udp", "--dport", "8472", "-j", "DROP"],
    )
    .unwrap();
    for (sender, inner_src, count) in [(&n1, "10.224.1.0", 3), (&pod, "10.224.1.2", 4)] {
        let rec = &last_drop(
            &["--netns", &n1, "--pod-cidr", "10.224.0.0/16"],
            || traffic::send_udp(sender, "10.224.2.7:5353".parse().unwrap(), count, 40).unwrap(),
            vxlan_dropped,
            count,
        );
        assert_eq!(field(rec, "hook"), "OUTPUT", "{rec}");
        assert_eq!(field(rec, "out_iface"), "eth0", "{rec}");
        assert_eq!(
            (field(rec, "table"), field(rec, "chain")),
            ("filter", "OUTPUT"),
            "{rec}"
        );
        assert_eq!(
            (field(&rec["inner"], "src"), field(&rec["inner"], "dst")),
            (inner_src, "10.224.2.7"),
            "{rec}"
        );
    }
}

/// Runs one watch on `node` (every drop kept), sends each case's packets in
/// turn, and checks that each hook's site has exactly its own drops: for
/// keys whose routing state is ambiguous, the hook comes from the samples.
fn hooks_in_one_watch(node: &str, cases: &[(&str, &str, u64, &str)]) {
    let mut w = Watch::start(&["--netns", node, "--all"]).unwrap();
    let at = |hook: String| {
        move |rec: &serde_json::Value| {
            field(rec, "reason") == "NETFILTER_DROP" && field(rec, "hook") == hook
        }
    };
    for (sender, dst, count, hook) in cases {
        traffic::send_udp(sender, dst.parse().unwrap(), *count, 20).unwrap();
        w.wait_for(Duration::from_secs(10), |w| {
            total_packets(&w.records(), at(hook.to_string())) >= *count
        })
        .unwrap_or_else(|e| panic!("{hook}: {e}"));
    }
    let recs = w.stop().unwrap();
    for (_, dst, count, hook) in cases {
        assert_eq!(
            total_packets(&recs, at(hook.to_string())),
            *count,
            "{hook} ({dst}): {recs:#?}"
        );
    }
}

/// The node talking to itself: on `lo`, PREROUTING and INPUT look alike
/// (the route is already set, input is local delivery); and a routed
/// hairpin (a Service DNATed back out of cni0 without br_netfilter), where
/// FORWARD and POSTROUTING look alike. Each drop gets its own hook.
#[test]
fn loopback_and_hairpin_drops_name_their_hook() {
    require_root!();
    let r = routed();
    let rules: &[&[&str]] = &[
        &[
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-p",
            "udp",
            "--dport",
            "7001",
            "-j",
            "DROP",
        ],
        &["-A", "INPUT", "-p", "udp", "--dport", "7000", "-j", "DROP"],
        &[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            "10.96.0.30/32",
            "-p",
            "udp",
            "-j",
            "DNAT",
            "--to-destination",
            "10.224.9.2",
        ],
        &[
            "-A", "FORWARD", "-p", "udp", "--dport", "7010", "-j", "DROP",
        ],
        &[
            "-t",
            "mangle",
            "-A",
            "POSTROUTING",
            "-p",
            "udp",
            "--dport",
            "7011",
            "-j",
            "DROP",
        ],
    ];
    r.lab.iptables_all(&r.router, rules).unwrap();
    hooks_in_one_watch(
        &r.router,
        &[
            (&r.router, "127.0.0.1:7000", 3, "INPUT"),
            (&r.router, "127.0.0.1:7001", 2, "PREROUTING"),
            (&r.client, "10.96.0.30:7010", 4, "FORWARD"),
            (&r.client, "10.96.0.30:7011", 5, "POSTROUTING"),
        ],
    );
}

/// flannel's IPv6 VXLAN (flannel-v6.1 over an IPv6 underlay): IPv6 output
/// routes carry `ip6_forward` as their input, so only "not received on
/// this device" tells the tunnel's OUTPUT from a FORWARD.
#[test]
fn ipv6_vxlan_dropped_leaving_the_sending_node_is_output() {
    require_root!();
    let (lab, n1, _n2) = vxlan_nodes(&FLANNEL_V6);
    lab.exec(
        &n1,
        &[
            "ip6tables",
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "--dport",
            "8472",
            "-j",
            "DROP",
        ],
    )
    .unwrap();
    let rec = &last_drop(
        &["--netns", &n1, "--pod-cidr", "fd00:224::/32"],
        || traffic::send_udp(&n1, "[fd00:224:2::7]:5353".parse().unwrap(), 3, 40).unwrap(),
        vxlan_dropped,
        3,
    );
    assert_eq!(field(rec, "hook"), "OUTPUT", "{rec}");
    assert_eq!(field(rec, "out_iface"), "eth0", "{rec}");
    assert_eq!(field(rec, "chain"), "OUTPUT", "{rec}");
    assert_eq!(field(&rec["inner"], "dst"), "fd00:224:2::7", "{rec}");
}

/// The observers on an IPv6 underlay (dual-stack flannel's `flannel-v6.1`):
/// node1's eth0, found as the VXLAN device's lower device, counts each
/// VXLAN packet it sends towards node2, per peer, in netdrop's metrics.
#[test]
fn ipv6_vxlan_is_counted_per_peer_by_the_observers() {
    require_root!();
    let (_lab, n1, _n2) = vxlan_nodes(&FLANNEL_V6);
    let w = Watch::start(&[
        "--netns",
        &n1,
        "--pod-cidr",
        "fd00:224::/32",
        "--overlay-iface",
        "flannel-v6.1",
    ])
    .unwrap();
    traffic::send_udp(&n1, "[fd00:224:2::7]:5353".parse().unwrap(), 6, 40).unwrap();
    let egress_to_node2 = || {
        w.metric(
            "netdrop_vxlan_packets_total",
            &[("peer", "2001:db8:1::2"), ("direction", "egress")],
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while egress_to_node2() < Some(6) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing else crosses this underlay: exactly the packets sent.
    assert_eq!(egress_to_node2(), Some(6), "{}", w.stderr());
    w.stop().unwrap();
}
