//! The TC observers on crafted frames through BPF_PROG_TEST_RUN (plain pod
//! traffic, VXLAN, IPv6, truncated, non-IP), and on real packets in
//! namespaces: pod counters, VXLAN per peer, and un-NATed pod egress (S4).

use std::time::Duration;

use netdrop::capture::observe::{NodeObservers, ObservedIfaces, ObserverOptions};
use netdrop_common::{direction, role};
use netdrop_tests::require_root;

/// -1: TC_ACT_UNSPEC / TCX_NEXT, "as if we were not here".
const PASS_THROUGH: i32 = -1;
/// The test runs on the loopback device of the test's namespace.
const LO: u32 = 1;

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(l4);
    h
}

fn ip6(src: &str, dst: &str, next: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    for a in [src, dst] {
        h.extend_from_slice(&a.parse::<std::net::Ipv6Addr>().unwrap().octets());
    }
    h.extend_from_slice(l4);
    h
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn observers(as_role: u32) -> NodeObservers {
    observers_on(as_role, LO)
}

fn observers_on(as_role: u32, ifindex: u32) -> NodeObservers {
    let lo = Some(("dev".to_owned(), ifindex));
    let mut ifaces = ObservedIfaces {
        node_net: Some("192.0.2.0/24".parse().unwrap()),
        node_net6: Some("2001:db8:1::/64".parse().unwrap()),
        ..Default::default()
    };
    match as_role {
        role::OVERLAY => ifaces.overlay = lo,
        role::BRIDGE => ifaces.bridge = lo,
        _ => ifaces.underlay = lo,
    }
    let opts = ObserverOptions {
        pod_cidrs: vec![
            "10.224.0.0/16".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ],
        vxlan_port: 8472,
        sample_rate: 1000,
        ..Default::default()
    };
    NodeObservers::load(ifaces, &opts).unwrap()
}

#[test]
fn crafted_frames_through_prog_test_run() {
    require_root!();
    let pod_to_world = eth(
        0x0800,
        &ipv4(
            [10, 224, 1, 2],
            [203, 0, 113, 10],
            17,
            &udp(40000, 53, b"q"),
        ),
    );
    let pod_to_node = eth(
        0x0800,
        &ipv4([10, 224, 1, 2], [192, 0, 2, 7], 17, &udp(40000, 53, b"q")),
    );
    let mut vx_payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    vx_payload.extend(eth(
        0x0800,
        &ipv4(
            [10, 224, 2, 5],
            [10, 224, 1, 2],
            1,
            &[8, 0, 0, 0, 0, 0, 0, 0],
        ),
    ));
    let vxlan_in = eth(
        0x0800,
        &ipv4(
            [192, 0, 2, 2],
            [192, 0, 2, 1],
            17,
            &udp(51000, 8472, &vx_payload),
        ),
    );
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    v6.extend_from_slice(&[0xfd; 32]);
    v6.extend(udp(1, 2, b""));
    let ipv6 = eth(0x86dd, &v6);
    // Dual stack: an IPv6 pod to the world and to a node, VXLAN over IPv6.
    let v6_pod_to_world = eth(
        0x86dd,
        &ip6(
            "fd00:224:1::2",
            "2001:db8:ff::10",
            17,
            &udp(40000, 53, b"q"),
        ),
    );
    let v6_pod_to_node = eth(
        0x86dd,
        &ip6("fd00:224:1::2", "2001:db8:1::7", 17, &udp(40000, 53, b"q")),
    );
    let v6_vxlan_in = eth(
        0x86dd,
        &ip6(
            "2001:db8:1::2",
            "2001:db8:1::1",
            17,
            &udp(51000, 8472, &vx_payload),
        ),
    );
    // A whole IPv4 header but only half a UDP header.
    let truncated = pod_to_world[..36].to_vec();
    let arp = eth(0x0806, &[0u8; 28]);

    // Underlay: egress un-NATed pod traffic, VXLAN in, and the rest.
    let obs = observers(role::UNDERLAY);
    for (egress, frame) in [
        (true, &pod_to_world),
        (true, &pod_to_node),
        (false, &vxlan_in),
        (true, &ipv6),
        (true, &v6_pod_to_world),
        (true, &v6_pod_to_node),
        (false, &v6_vxlan_in),
        (true, &truncated),
        (false, &arp),
    ] {
        assert_eq!(
            obs.test_run(egress, LO, frame).unwrap(),
            PASS_THROUGH,
            "observers never change a packet's fate"
        );
    }
    let c = obs.counters().unwrap();
    let eg = c[role::UNDERLAY as usize][direction::EGRESS as usize];
    let ing = c[role::UNDERLAY as usize][direction::INGRESS as usize];
    assert_eq!(
        eg.pod_packets, 5,
        "two pod-sourced IPv4 frames and three IPv6: {eg:?}"
    );
    assert_eq!(
        eg.unnat_packets, 2,
        "only the ones to the world are un-NATed egress: {eg:?}"
    );
    assert_eq!(
        eg.unnat_bytes,
        (pod_to_world.len() + v6_pod_to_world.len()) as u64
    );
    assert_eq!((ing.vxlan_packets, ing.pod_packets), (2, 0), "{ing:?}");
    let mut peers = obs.peers().unwrap();
    peers.sort_by_key(|p| p.0);
    let peers: Vec<_> = peers
        .iter()
        .map(|(a, d, c)| (a.to_string(), *d, c.packets))
        .collect();
    assert_eq!(
        peers,
        [
            ("192.0.2.2".to_owned(), direction::INGRESS, 1),
            ("2001:db8:1::2".to_owned(), direction::INGRESS, 1),
        ]
    );
    let mut obs = obs;
    let mut s = obs.egress_samples();
    s.sort_by_key(|s| s.flow.family);
    assert_eq!(s.len(), 2);
    assert_eq!(&s[0].flow.dst[..4], &[203, 0, 113, 10]);
    assert_eq!(s[0].flow.dport, 53);
    let v6 = netdrop::decode::flow::Flow::from_hdr(&s[1].flow).unwrap();
    assert_eq!(
        (v6.src.to_string(), v6.dst.to_string()),
        ("fd00:224:1::2".to_owned(), "2001:db8:ff::10".to_owned())
    );
    assert_eq!((s[1].flow.proto, s[1].flow.dport), (17, 53));

    // A frame on a device the observers were not told about (one that
    // exists: the kernel refuses a test run on a missing one) passes and
    // is counted nowhere.
    let unobserved: u32 = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("ifindex")).ok())
        .filter_map(|i| i.trim().parse().ok())
        .find(|&i| i != LO)
        .expect("a device besides lo in the test's namespace");
    let other = observers(role::UNDERLAY);
    assert_eq!(
        other.test_run(true, unobserved, &pod_to_world).unwrap(),
        PASS_THROUGH
    );
    let counted = other.counters().unwrap();
    assert!(
        counted.iter().flatten().all(|c| *c == Default::default()),
        "{counted:?}"
    );
    assert!(other.peers().unwrap().is_empty());

    // Bridge: pod counters only; no VXLAN or egress logic there.
    let obs = observers(role::BRIDGE);
    assert_eq!(obs.test_run(true, LO, &pod_to_world).unwrap(), PASS_THROUGH);
    let c = obs.counters().unwrap()[role::BRIDGE as usize][direction::EGRESS as usize];
    assert_eq!((c.pod_packets, c.unnat_packets), (1, 0));
}

/// `cni0 ingress` pod packets from netdrop's metrics.
fn bridge_ingress_pod_packets(w: &netdrop_tests::Watch) -> Option<u64> {
    w.metric(
        "netdrop_iface_pod_packets_total",
        &[("iface", "cni0"), ("direction", "ingress")],
    )
}

/// TC filters named `name` on `dev` in `ns` (`tc filter show`).
fn tc_filters(lab: &netdrop_tests::Lab, ns: &str, dev: &str, name: &str) -> usize {
    ["ingress", "egress"]
        .iter()
        .map(|dir| {
            let out = lab
                .exec(ns, &["tc", "filter", "show", "dev", dev, dir])
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(name))
                .count()
        })
        .sum()
}

/// Kernels before 6.6 have no tcx: the observers attach as netlink clsact
/// filters (forced here). They count like tcx links, are removed on exit,
/// and a SIGKILL's leftovers are removed by the next start.
#[test]
fn netlink_observers_count_and_leave_nothing_behind() {
    require_root!();
    let mut lab = netdrop_tests::Lab::new("nl");
    let node = lab.netns("n").unwrap();
    let pod = lab.netns("p").unwrap();
    lab.bridge(&node, "cni0", Some("10.224.9.1/24")).unwrap();
    lab.bridge_port((&node, "cni0", "veth-p"), (&pod, "10.224.9.2/24"))
        .unwrap();
    let args = [
        "--netns",
        &node,
        "--pod-cidr",
        "10.224.0.0/16",
        "--tc-attach",
        "netlink",
    ];
    let ours = "netdrop_tc_";

    let mut w = netdrop_tests::Watch::start(&args).unwrap();
    assert_eq!(tc_filters(&lab, &node, "cni0", ours), 2, "ingress + egress");
    netdrop_tests::traffic::send_udp(&pod, "10.224.9.1:7000".parse().unwrap(), 5, 32).unwrap();
    w.wait_for(std::time::Duration::from_secs(10), |w| {
        bridge_ingress_pod_packets(w) >= Some(5)
    })
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(bridge_ingress_pod_packets(&w), Some(5));
    w.stop().unwrap();
    assert_eq!(tc_filters(&lab, &node, "cni0", ours), 0, "removed on exit");

    let mut w = netdrop_tests::Watch::start(&args).unwrap();
    w.kill(); // SIGKILL: netlink filters outlive the process...
    assert_eq!(tc_filters(&lab, &node, "cni0", ours), 2);
    let w = netdrop_tests::Watch::start(&args).unwrap();
    // ...and the next start replaces them instead of adding two more.
    assert_eq!(tc_filters(&lab, &node, "cni0", ours), 2);
    assert!(
        w.stderr().contains("left by an earlier netdrop"),
        "{}",
        w.stderr()
    );
    w.stop().unwrap();
    assert_eq!(tc_filters(&lab, &node, "cni0", ours), 0);
}

/// Observed devices that do not exist are warnings, not failures: netdrop
/// names each one it cannot find (a typo in `--iface` included) and goes on
/// counting drops.
#[test]
fn missing_interfaces_are_warnings_and_drops_still_count() {
    require_root!();
    let mut lab = netdrop_tests::Lab::new("noif");
    let (client, node) = netdrop_tests::drop_pair(&mut lab, 9);
    let mut w = netdrop_tests::Watch::start(&[
        "--netns",
        &node,
        "--pod-cidr",
        "10.224.0.0/16",
        "--iface",
        "nosuch0",
    ])
    .unwrap();
    netdrop_tests::traffic::send_udp(&client, "10.224.7.1:9".parse().unwrap(), 3, 32).unwrap();
    let dropped = |w: &netdrop_tests::Watch| {
        netdrop_tests::total_packets(&w.records(), |r| r["reason"] == "NETFILTER_DROP")
    };
    w.wait_for(std::time::Duration::from_secs(10), |w| dropped(w) >= 3)
        .unwrap();
    let err = w.stderr();
    for missing in [
        "no overlay device flannel.1 to observe",
        "no bridge device cni0 to observe",
        "no underlay device nosuch0 to observe",
    ] {
        assert!(err.contains(missing), "{missing}: {err}");
    }
    assert_eq!(dropped(&w), 3);
    w.stop().unwrap();
}

/// `pod_packets` metric of `iface` in `direction`, from a watch's metrics.
fn iface_pod_packets(w: &netdrop_tests::Watch, iface: &str, role: &str) -> Option<u64> {
    w.metric(
        "netdrop_iface_pod_packets_total",
        &[("iface", iface), ("role", role), ("direction", "ingress")],
    )
}

/// Links this watch holds to netdrop's observer programs (tcx), by the
/// kernel's record of its descriptors (never another netdrop's).
fn tc_programs_linked(w: &netdrop_tests::Watch) -> usize {
    w.linked()
        .unwrap()
        .iter()
        .filter(|n| n.starts_with("netdrop_tc_"))
        .count()
}

/// This watch attached its drop probe (the positive control: its links
/// are seen) and no observer.
fn assert_drop_probe_alone(w: &netdrop_tests::Watch) {
    let linked = w.linked().unwrap();
    assert!(
        linked.iter().any(|n| n == "netdrop_kfree_skb_btf"),
        "{linked:?}"
    );
    assert_eq!(tc_programs_linked(w), 0, "{linked:?}");
}

/// The observer flags as an operator uses them, on a node whose pod
/// bridge is not called cni0: `--bridge-iface` names it; `--tc-attach
/// tcx` attaches links only; the default falls back to netlink filters
/// when tcx is refused (as on kernels before 6.6, forced here); a forced
/// `tcx` that is refused says so and drops still count; `--no-observers`
/// attaches nothing and counts no device.
#[test]
fn observer_flags_choose_the_devices_and_how_they_attach() {
    require_root!();
    let mut lab = netdrop_tests::Lab::new("obsf");
    let node = lab.netns("n").unwrap();
    let pod = lab.netns("p").unwrap();
    lab.bridge(&node, "br-pods", Some("10.224.9.1/24")).unwrap();
    lab.bridge_port((&node, "br-pods", "veth-p"), (&pod, "10.224.9.2/24"))
        .unwrap();
    lab.iptables(
        &node,
        &["-A", "INPUT", "-p", "udp", "--dport", "7000", "-j", "DROP"],
    )
    .unwrap();
    let base = [
        "--netns",
        &node,
        "--pod-cidr",
        "10.224.0.0/16",
        "--bridge-iface",
        "br-pods",
    ];
    let send = |n: u64| {
        netdrop_tests::traffic::send_udp(&pod, "10.224.9.1:7000".parse().unwrap(), n, 32).unwrap()
    };
    let counted = |w: &mut netdrop_tests::Watch, n: u64| {
        w.wait_for(Duration::from_secs(10), |w| {
            iface_pod_packets(w, "br-pods", "bridge") >= Some(n)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(iface_pod_packets(w, "br-pods", "bridge"), Some(n));
    };
    let ours = "netdrop_tc_";

    // tcx, asked for: two links, no netlink filter, the renamed bridge counted.
    let mut w =
        netdrop_tests::Watch::start(&[&base[..], &["--tc-attach", "tcx"]].concat()).unwrap();
    assert_eq!(tc_programs_linked(&w), 2, "ingress + egress links");
    assert_eq!(tc_filters(&lab, &node, "br-pods", ours), 0);
    send(4);
    counted(&mut w, 4);
    assert!(!w.stderr().contains("no bridge device"), "{}", w.stderr());
    let held = w.held().unwrap();
    w.stop().unwrap();
    netdrop_tests::wait_unloaded(&held, Duration::from_secs(5)).unwrap();

    // The default (auto) where tcx is refused: netlink filters instead.
    let refuse = [("NETDROP_LAB_REFUSE_TCX", "1")];
    let mut w = netdrop_tests::Watch::start_env(&refuse, &base).unwrap();
    assert_drop_probe_alone(&w);
    assert_eq!(tc_filters(&lab, &node, "br-pods", ours), 2);
    send(3);
    counted(&mut w, 3);
    w.stop().unwrap();
    assert_eq!(
        tc_filters(&lab, &node, "br-pods", ours),
        0,
        "removed on exit"
    );

    // tcx forced where it is refused: said, and drops still count.
    let mut w =
        netdrop_tests::Watch::start_env(&refuse, &[&base[..], &["--tc-attach", "tcx"]].concat())
            .unwrap();
    let err = w.stderr();
    assert!(
        err.contains("cannot observe br-pods (Ingress): tcx refused")
            && err.contains("cannot observe br-pods (Egress): tcx refused"),
        "{err}"
    );
    assert_eq!(tc_filters(&lab, &node, "br-pods", ours), 0);
    send(2);
    w.wait_for(Duration::from_secs(10), |w| {
        netdrop_tests::total_packets(&w.records(), |r| r["reason"] == "NETFILTER_DROP") >= 2
    })
    .unwrap();
    assert_eq!(iface_pod_packets(&w, "br-pods", "bridge"), None);
    w.stop().unwrap();

    // No observers: nothing attached, no device counted, none missed.
    let mut w = netdrop_tests::Watch::start(&[&base[..], &["--no-observers"]].concat()).unwrap();
    assert_drop_probe_alone(&w);
    assert_eq!(tc_filters(&lab, &node, "br-pods", ours), 0);
    send(2);
    w.wait_for(Duration::from_secs(10), |w| {
        netdrop_tests::total_packets(&w.records(), |r| r["reason"] == "NETFILTER_DROP") >= 2
    })
    .unwrap();
    let metrics = netdrop_tests::prom::try_get(&w.metrics_addr().unwrap(), "/metrics").unwrap();
    assert!(
        !metrics.contains("netdrop_iface_pod_packets_total{"),
        "{metrics}"
    );
    assert!(!w.stderr().contains("to observe"), "{}", w.stderr());
    w.stop().unwrap();
}

/// Devices that come and go under a running watch: `cni0` created after
/// netdrop started (the bridge plugin makes it with the first pod), then
/// deleted and created again (same name, new ifindex). Each time the
/// observers follow, say so, and the pod traffic keeps counting.
#[test]
fn observers_follow_a_bridge_that_appears_and_is_recreated() {
    require_root!();
    let mut lab = netdrop_tests::Lab::new("dev");
    let node = lab.netns("n").unwrap();
    let mut w =
        netdrop_tests::Watch::start(&["--netns", &node, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    assert!(
        w.stderr().contains("no bridge device cni0"),
        "{}",
        w.stderr()
    );
    let counted = |w: &netdrop_tests::Watch| bridge_ingress_pod_packets(w).unwrap_or(0);

    let mut total = 0;
    for (round, pod_name) in ["p1", "p2"].iter().enumerate() {
        if round == 1 {
            lab.ip(&node, &["link", "del", "cni0"]).unwrap();
        }
        let pod = lab.netns(pod_name).unwrap();
        lab.bridge(&node, "cni0", Some("10.224.9.1/24")).unwrap();
        lab.bridge_port(
            (&node, "cni0", &format!("veth-{pod_name}")),
            (&pod, "10.224.9.2/24"),
        )
        .unwrap();
        // The change is noticed within a second or so.
        w.wait_for(Duration::from_secs(5), |w| {
            w.stderr().matches("observers re-attached").count() > round
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        let said = if round == 0 {
            "cni0 appeared"
        } else {
            "cni0 recreated"
        };
        assert!(w.stderr().contains(said), "{}", w.stderr());
        netdrop_tests::traffic::send_udp(&pod, "10.224.9.1:7000".parse().unwrap(), 5, 32).unwrap();
        total += 5;
        w.wait_for(Duration::from_secs(10), |w| counted(w) >= total)
            .unwrap_or_else(|e| panic!("round {round}: {e:#}: {}", counted(&w)));
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(counted(&w), total, "every packet once");
    w.stop().unwrap();
}

/// A node with two NICs, as where flannel's `--iface` is a private NIC and
/// the default route leaves by another: `eth0` carries VXLAN (flannel.1's
/// lower device), the default route first leaves by it too, then moves to
/// `eth1` under a running watch. The observers follow the route (rtnetlink
/// tells watch of it), and pod egress leaving un-NATed by `eth1` is
/// recorded on `eth1` and counted in its metric — before, it went unseen.
#[test]
fn unnated_egress_is_seen_on_the_nic_holding_the_default_route() {
    require_root!();
    let mut lab = netdrop_tests::Lab::new("nic");
    let node = lab.netns("n").unwrap();
    let peer = lab.netns("peer").unwrap();
    let gw = lab.netns("gw").unwrap();
    let pod = lab.netns("pod").unwrap();
    lab.veth(
        (&node, "eth0", Some("192.0.2.1/25")),
        (&peer, "eth0", Some("192.0.2.2/25")),
    )
    .unwrap();
    lab.veth(
        (&node, "eth1", Some("192.0.2.129/25")),
        (&gw, "eth0", Some("192.0.2.130/25")),
    )
    .unwrap();
    // The "internet" host, reachable only through the default route.
    lab.ip(&gw, &["addr", "add", "203.0.113.2/32", "dev", "lo"])
        .unwrap();
    lab.flannel_vxlan(&node, "192.0.2.1", None).unwrap();
    lab.bridge(&node, "cni0", Some("10.224.9.1/24")).unwrap();
    lab.bridge_port((&node, "cni0", "veth-pod"), (&pod, "10.224.9.2/24"))
        .unwrap();
    lab.ip(&pod, &["route", "add", "default", "via", "10.224.9.1"])
        .unwrap();
    lab.sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
    lab.ip(&node, &["route", "add", "default", "via", "192.0.2.2"])
        .unwrap();

    let mut w = netdrop_tests::Watch::start(&[
        "--netns",
        &node,
        "--pod-cidr",
        "10.224.0.0/16",
        "--summary-interval",
        "1s",
    ])
    .unwrap();
    assert!(!w.stderr().contains("to observe"), "{}", w.stderr());
    let internet = "203.0.113.2:9000".parse().unwrap();
    let egress_on = |w: &netdrop_tests::Watch, iface: &str| {
        w.metric("netdrop_unnat_egress_packets_total", &[("iface", iface)])
            .unwrap_or(0)
    };
    // First out of eth0, the default route's device and VXLAN's.
    netdrop_tests::traffic::send_udp(&pod, internet, 3, 32).unwrap();
    w.wait_for(Duration::from_secs(10), |w| egress_on(w, "eth0") >= 3)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", w.stderr()));

    // The default route moves to the second NIC.
    lab.ip(
        &node,
        &["route", "replace", "default", "via", "192.0.2.130"],
    )
    .unwrap();
    w.wait_for(Duration::from_secs(5), |w| {
        w.stderr().contains("observers re-attached")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", w.stderr()));
    let said = w.stderr();
    assert!(said.contains("eth1 appeared"), "{said}");
    assert!(
        said.contains("observing flannel.1, cni0, eth0, eth1"),
        "{said}"
    );
    for (iface, role) in [
        ("eth0", "underlay"),
        ("eth1", "underlay"),
        ("cni0", "bridge"),
    ] {
        assert_eq!(
            w.metric(
                "netdrop_observed_devices",
                &[("iface", iface), ("role", role)]
            ),
            Some(1),
            "{iface}"
        );
    }
    netdrop_tests::traffic::send_udp(&pod, internet, 4, 32).unwrap();
    w.wait_for(Duration::from_secs(10), |w| egress_on(w, "eth1") >= 4)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", w.stderr()));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(egress_on(&w, "eth1"), 4, "every packet once");
    // The flow goes on: its summary record, a second later, carries what
    // the first one does (it once was an empty shell: no flow, no words).
    std::thread::sleep(Duration::from_millis(1100));
    netdrop_tests::traffic::send_udp(&pod, internet, 2, 32).unwrap();
    let summaries = |w: &netdrop_tests::Watch| {
        w.records()
            .into_iter()
            .filter(|r| netdrop_tests::field(r, "kind") == "egress" && r["new_packets"] == 2)
            .count()
    };
    w.wait_for(Duration::from_secs(10), |w| summaries(w) >= 1)
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let records = w.stop().unwrap();
    let summary = records
        .iter()
        .find(|r| netdrop_tests::field(r, "kind") == "egress" && r["new_packets"] == 2)
        .unwrap();
    // eth1's six packets (eth0's went with its observer when the route
    // moved), each 32 bytes of payload in UDP, IPv4 and Ethernet as TC
    // sees the frame.
    assert_eq!(summary["packets"], 6, "{summary}");
    assert_eq!(summary["bytes"], 6 * (32 + 8 + 20 + 14), "{summary}");
    for (f, want) in [
        ("src", "10.224.9.2"),
        ("dst", "203.0.113.2"),
        ("proto", "udp"),
        ("hook", "POSTROUTING"),
        ("out_iface", "eth1"),
    ] {
        assert_eq!(netdrop_tests::field(summary, f), want, "{f}: {summary}");
    }
    for f in ["explanation", "fix"] {
        assert!(
            !netdrop_tests::field(summary, f).is_empty(),
            "{f}: {summary}"
        );
    }
    let on_eth1: Vec<_> = records
        .iter()
        .filter(|r| {
            netdrop_tests::field(r, "kind") == "egress"
                && netdrop_tests::field(r, "out_iface") == "eth1"
        })
        .collect();
    let first = on_eth1.first().unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(netdrop_tests::field(first, "src"), "10.224.9.2", "{first}");
    assert_eq!(netdrop_tests::field(first, "dst"), "203.0.113.2", "{first}");
    assert!(
        netdrop_tests::field(first, "explanation").contains("leaves eth1"),
        "{first}"
    );
}
