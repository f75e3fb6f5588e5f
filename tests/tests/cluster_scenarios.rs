//! End to end, one test per scenario of shared/SCENARIOS.md: a two-node
//! flannel cluster in namespaces, broken the way the seeds were, real
//! traffic, and `netdrop watch --output json` must name the node, hook,
//! table, chain, rule or policy, owner and fix — and change no rule.

use std::{net::SocketAddr, time::Duration};

use netdrop::lab::cluster::{Cluster, INTERNET_HOST, POD_CIDR, SERVICE_IP, Scenario};
use netdrop_tests::{
    Watch, field, fix_commands, ping, require_root, rule_packets, run_in, total_packets, traffic,
};
use serde_json::Value;

/// `watch` on both nodes, each node's containerd naming pods (as the
/// demo runs it).
fn watch(c: &Cluster) -> Watch {
    let mut args = vec![
        "--netns",
        &c.node1,
        "--netns",
        &c.node2,
        "--pod-cidr",
        POD_CIDR,
        "--summary-interval",
        "1s",
    ];
    for r in &c.runtimes {
        args.extend(["--cri-socket", r.socket.as_str()]);
    }
    Watch::start(&args).unwrap()
}

/// The pods a record names at its ends: `namespace/name (workload)`.
fn pods(r: &Value) -> (Option<String>, Option<String>) {
    let named = |p: &Value| {
        p.is_object().then(|| {
            format!(
                "{}/{} ({})",
                field(p, "namespace"),
                field(p, "name"),
                field(p, "workload")
            )
        })
    };
    (named(&r["src_pod"]), named(&r["dst_pod"]))
}

const CLIENT: &str = "default/client-0 (statefulset/client)";
const WEB_ON_NODE2: &str = "default/web-5c6f8d7b9-q8z7m (deployment/web)";

fn tcp(ns: &str, dst: &str) -> bool {
    traffic::tcp_connect(ns, dst.parse().unwrap(), Duration::from_millis(800)).unwrap()
}

fn drops_at(records: &[Value], node: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| {
            field(r, "kind") == "drop"
                && field(r, "node") == node
                && field(r, "reason") == "NETFILTER_DROP"
        })
        .cloned()
        .collect()
}

/// A host outside the cluster (the "internet" namespace, 192.0.2.254 on
/// the underlay) given a route to node2's pods: a source a fix must not
/// let in.
fn stranger_routes_to_pods(c: &Cluster) {
    c.lab
        .ip(
            &c.internet,
            &["route", "add", "10.224.2.0/24", "via", "192.0.2.2"],
        )
        .unwrap();
}

fn finding<'a>(records: &'a [Value], node: &str, id: &str) -> Option<&'a Value> {
    records.iter().find(|r| {
        field(r, "kind") == "finding" && field(r, "node") == node && field(r, "finding") == id
    })
}

/// Runs the scenario's traffic under netdrop; returns the records and
/// checks that no table of any node changed.
fn observe(c: &Cluster, traffic: impl FnOnce(), settle: impl Fn(&Watch) -> bool) -> Vec<Value> {
    let before = c.rules_snapshot().unwrap();
    let mut w = watch(c);
    traffic();
    if let Err(e) = w.wait_for(Duration::from_secs(15), |w| settle(w)) {
        let recs: Vec<String> = w
            .records()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {}",
                    field(r, "kind"),
                    field(r, "node"),
                    field(r, "reason"),
                    field(r, "hook"),
                    r["dst"],
                    r["dport"]
                )
            })
            .collect();
        panic!("{e}\nrecords so far:\n{}", recs.join("\n"));
    }
    let records = w.stop().unwrap();
    assert!(
        c.rules_snapshot().unwrap() == before,
        "netdrop changed a node's rules"
    );
    records
}

#[test]
fn healthy_cluster_has_no_drops_and_no_findings() {
    require_root!();
    let c = Cluster::build("h", Scenario::Healthy).unwrap();
    c.serve_tcp(&c.pod2, 80).unwrap();
    c.serve_tcp(&c.pod1b, 80).unwrap();
    let records = observe(
        &c,
        || {
            assert!(ping(&c.pod1, "10.224.2.2"), "pod1 -> pod2 across VXLAN");
            assert!(tcp(&c.pod1, "10.224.2.2:80"), "TCP pod1 -> pod2");
            for _ in 0..4 {
                assert!(
                    tcp(&c.pod1, &format!("{SERVICE_IP}:80")),
                    "Service default/web"
                );
            }
            assert!(ping(&c.pod1, INTERNET_HOST), "pod egress is masqueraded");
        },
        // netdrop saw the traffic: its observers counted pod packets on
        // flannel.1 (so an empty answer below is not a watch that missed it).
        |w| {
            w.metric("netdrop_iface_pod_packets_total", &[("iface", "flannel.1")])
                .is_some_and(|n| n > 0)
        },
    );
    // Nothing at all: no drop, kernel reasons included, no finding, no
    // un-NATed egress.
    assert!(records.is_empty(), "healthy cluster: {records:#?}");
}

#[test]
fn s1_forward_policy_drop_on_node2() {
    require_root!();
    let c = Cluster::build("s1", Scenario::S1).unwrap();
    let dst: SocketAddr = "10.224.2.2:9000".parse().unwrap();
    let policy = || rule_packets(&c.node2, "filter", "FORWARD", None);
    let before = policy();
    let records = observe(
        &c,
        || traffic::send_udp(&c.pod1, dst, 7, 64).unwrap(),
        |w| total_packets(&drops_at(&w.records(), &c.node2), |_| true) >= 7,
    );
    let drops = drops_at(&records, &c.node2);
    assert_eq!(total_packets(&drops, |_| true), 7, "{drops:#?}");
    assert_eq!(policy() - before, 7, "the policy's own counter agrees");
    let r = drops.last().unwrap();
    assert_eq!(field(r, "hook"), "FORWARD");
    assert_eq!(
        (field(r, "table"), field(r, "chain")),
        ("filter", "FORWARD")
    );
    assert_eq!(r["policy"], true);
    assert!(r["rule"].is_null());
    assert_eq!(field(r, "verdict"), "DROP");
    assert_eq!(field(r, "owner"), "docker");
    assert_eq!(
        (field(r, "in_iface"), field(r, "out_iface")),
        ("flannel.1", "cni0"),
        "{r}"
    );
    assert_eq!(
        (field(r, "src"), field(r, "dst")),
        ("10.224.1.2", "10.224.2.2")
    );
    // Both ends named by their nodes' runtimes: the pod on node1 that
    // sent, the one on node2 it was for.
    assert_eq!(
        pods(r),
        (Some(CLIENT.into()), Some(WEB_ON_NODE2.into())),
        "{r}"
    );
    assert!(
        field(r, "explanation").starts_with("udp default/client-0 (10.224.1.2:")
            && field(r, "explanation").contains("-> default/web-5c6f8d7b9-q8z7m (10.224.2.2:9000)"),
        "{r}"
    );
    assert_eq!(field(r, "evidence"), "counters", "{r}");
    let fix = field(r, "fix");
    assert!(
        fix.contains("`iptables -I DOCKER-USER -s 10.224.0.0/16 -d 10.224.0.0/16 -j ACCEPT`"),
        "{r}"
    );
    assert!(fix.contains("permanent"), "{r}");
    assert_eq!(field(r, "fix_check"), "proven", "{r}");
    assert!(
        finding(&records, &c.node2, "forward-policy-drop").is_some(),
        "static finding too"
    );
    assert!(
        drops_at(&records, &c.node1).is_empty(),
        "node1 forwards fine"
    );

    // The printed fix, applied as an operator would paste it: the pods
    // talk, and a host outside the cluster still cannot reach them.
    c.serve_tcp(&c.pod2, 80).unwrap();
    stranger_routes_to_pods(&c);
    assert!(!tcp(&c.pod1, "10.224.2.2:80"), "broken before the fix");
    let commands = fix_commands(fix);
    assert_eq!(commands.len(), 1, "{commands:?}");
    run_in(&c.node2, &commands);
    assert!(tcp(&c.pod1, "10.224.2.2:80"), "pod1 -> pod2 after the fix");
    let dropped = policy();
    assert!(
        !tcp(&c.internet, "10.224.2.2:80"),
        "the fix let a stranger in"
    );
    assert!(policy() > dropped, "the stranger met the policy DROP");
}

#[test]
fn s2_distro_reject_in_forward() {
    require_root!();
    let c = Cluster::build("s2", Scenario::S2).unwrap();
    c.serve_tcp(&c.pod2, 80).unwrap();
    const REJECT: &str = "-A FORWARD -j REJECT --reject-with icmp-host-prohibited";
    let counter = || rule_packets(&c.node2, "filter", "FORWARD", Some(REJECT));
    let before = counter();
    let records = observe(
        &c,
        || assert!(!tcp(&c.pod1, "10.224.2.2:80")),
        |w| !drops_at(&w.records(), &c.node2).is_empty(),
    );
    // TCP retries make the number of packets unknowable in advance: the
    // rule's own counter is the truth netdrop's count must equal.
    let rejected = counter() - before;
    assert!(rejected >= 1);
    assert_eq!(
        total_packets(&drops_at(&records, &c.node2), |_| true),
        rejected,
        "netdrop's count against the REJECT rule's counter"
    );
    let r = drops_at(&records, &c.node2).pop().unwrap();
    assert_eq!(
        (field(&r, "hook"), field(&r, "chain")),
        ("FORWARD", "FORWARD")
    );
    assert_eq!(
        field(&r, "rule"),
        "-A FORWARD -j REJECT --reject-with icmp-host-prohibited"
    );
    assert_eq!(r["rule_no"], 10, "{r}");
    assert_eq!(field(&r, "verdict"), "REJECT");
    assert_eq!(field(&r, "reject_with"), "icmp-host-prohibited");
    assert_eq!(field(&r, "owner"), "distro-firewall");
    assert_eq!((field(&r, "proto"), r["dport"].as_u64()), ("tcp", Some(80)));
    let fix = field(&r, "fix");
    assert!(
        fix.contains("`iptables -I FORWARD 10 -s 10.224.0.0/16 -d 10.224.0.0/16 -j ACCEPT`"),
        "{r}"
    );
    assert_eq!(field(&r, "fix_check"), "proven", "{r}");
    assert!(field(&r, "explanation").contains("shadows rule #11"), "{r}");

    // The fix applied: pod traffic passes, a stranger is still rejected.
    stranger_routes_to_pods(&c);
    let commands = fix_commands(fix);
    assert_eq!(commands.len(), 1, "{commands:?}");
    run_in(&c.node2, &commands);
    assert!(tcp(&c.pod1, "10.224.2.2:80"), "pod1 -> pod2 after the fix");
    let rejected = counter();
    assert!(
        !tcp(&c.internet, "10.224.2.2:80"),
        "the fix let a stranger in"
    );
    assert!(counter() > rejected, "the stranger met the REJECT");
}

#[test]
fn s3_input_rejects_vxlan_and_kubelet() {
    require_root!();
    let c = Cluster::build("s3", Scenario::S3).unwrap();
    c.serve_tcp(&c.node2, 10250).unwrap();
    // Node-to-node TCP is rejected by the same rule, but it is no pod
    // traffic: sent first, so the rule's counter below counts VXLAN only.
    assert!(
        !tcp(&c.node1, "192.0.2.2:10250"),
        "kubelet port is rejected"
    );
    const REJECT: &str = "-A INPUT -j REJECT --reject-with icmp-host-prohibited";
    let counter = || rule_packets(&c.node2, "filter", "INPUT", Some(REJECT));
    let before = counter();
    let dst: SocketAddr = "10.224.2.2:9000".parse().unwrap();
    let records = observe(
        &c,
        || traffic::send_udp(&c.pod1, dst, 5, 64).unwrap(),
        |w| total_packets(&drops_at(&w.records(), &c.node2), |r| r["vxlan"] == true) >= 5,
    );
    let drops = drops_at(&records, &c.node2);
    let vx = drops.iter().rev().find(|r| r["vxlan"] == true).unwrap();
    assert_eq!(total_packets(&drops, |r| r["vxlan"] == true), 5);
    assert_eq!(
        counter() - before,
        5,
        "the REJECT rule's own counter agrees"
    );
    assert_eq!((field(vx, "hook"), field(vx, "chain")), ("INPUT", "INPUT"));
    assert_eq!(
        field(vx, "rule"),
        "-A INPUT -j REJECT --reject-with icmp-host-prohibited"
    );
    assert_eq!(field(vx, "owner"), "distro-firewall");
    assert_eq!(
        (field(vx, "src"), field(vx, "dst"), vx["dport"].as_u64()),
        ("192.0.2.1", "192.0.2.2", Some(8472))
    );
    let inner = &vx["inner"];
    assert_eq!(
        (
            field(inner, "src"),
            field(inner, "dst"),
            inner["dport"].as_u64()
        ),
        ("10.224.1.2", "10.224.2.2", Some(9000)),
        "{vx}"
    );
    // The VXLAN datagram is the nodes'; the pods are its inner flow's.
    assert_eq!(
        pods(vx),
        (Some(CLIENT.into()), Some(WEB_ON_NODE2.into())),
        "{vx}"
    );
    let vx_fix = field(vx, "fix").to_owned();
    assert!(
        vx_fix.contains("`iptables -I INPUT 8 -s 192.0.2.1 -p udp --dport 8472 -j ACCEPT`"),
        "{vx}"
    );
    assert_eq!(field(vx, "fix_check"), "proven", "{vx}");
    assert!(finding(&records, &c.node2, "input-blocks-vxlan").is_some());
    // Node-to-node TCP is no pod traffic, so the kernel filter does not
    // count it; the static finding names the kubelet rule instead.
    let kubelet = finding(&records, &c.node2, "input-blocks-kubelet").expect("kubelet finding");
    assert!(
        field(kubelet, "explanation").contains("kubelet"),
        "{kubelet}"
    );
    let kubelet_fix = field(kubelet, "fix").to_owned();
    assert!(
        kubelet_fix.contains("-s <other nodes' network> -p tcp --dport 10250 -j ACCEPT"),
        "{kubelet}"
    );

    // Both fixes applied (the finding's with this cluster's other node for
    // its placeholder, as the operator fills it in): pods talk across the
    // overlay and node1 reaches the kubelet; a stranger on the underlay
    // reaches neither.
    c.serve_tcp(&c.pod2, 80).unwrap();
    let mut commands = fix_commands(&vx_fix);
    commands.extend(
        fix_commands(&kubelet_fix)
            .iter()
            .map(|c| c.replace("<other nodes' network>", "192.0.2.1")),
    );
    assert_eq!(commands.len(), 2, "{commands:?}");
    run_in(&c.node2, &commands);
    assert!(
        tcp(&c.pod1, "10.224.2.2:80"),
        "pod1 -> pod2 over VXLAN after the fix"
    );
    assert!(
        tcp(&c.node1, "192.0.2.2:10250"),
        "node1 -> kubelet after the fix"
    );
    let rejected = counter();
    assert!(
        !tcp(&c.internet, "192.0.2.2:10250"),
        "the fix let a stranger in"
    );
    traffic::send_udp(&c.internet, "192.0.2.2:8472".parse().unwrap(), 2, 64).unwrap();
    assert_eq!(
        counter() - rejected,
        2 + 1,
        "the stranger's SYN and VXLAN datagrams are rejected"
    );
}

#[test]
fn s4_unnated_egress_and_masquerade_finding() {
    require_root!();
    let c = Cluster::build("s4", Scenario::S4).unwrap();
    let records = observe(
        &c,
        || assert!(!ping(&c.pod1, INTERNET_HOST), "replies cannot come back"),
        |w| w.records().iter().any(|r| field(r, "kind") == "egress"),
    );
    let e = records
        .iter()
        .find(|r| field(r, "kind") == "egress")
        .unwrap();
    assert_eq!(field(e, "node"), c.node1);
    assert_eq!(field(e, "out_iface"), "eth0");
    assert_eq!(
        (field(e, "src"), field(e, "dst")),
        ("10.224.1.2", INTERNET_HOST)
    );
    assert!(field(e, "explanation").contains("un-masqueraded"), "{e}");
    assert_eq!(pods(e), (Some(CLIENT.into()), None), "node1's pod: {e}");
    // One echo request left un-NATed (ping -c 1): the observers' count.
    let leaving = records
        .iter()
        .filter(|r| field(r, "kind") == "egress")
        .filter_map(|r| r["packets"].as_u64())
        .max();
    assert_eq!(leaving, Some(1), "{records:#?}");
    assert!(
        field(e, "fix").contains("\"Network\": \"10.224.0.0/16\""),
        "{e}"
    );
    let f = finding(&records, &c.node1, "masquerade-cidr-mismatch").expect("S4 finding");
    assert_eq!(
        field(f, "owner"),
        "flannel",
        "flannel's masquerade rules: {f}"
    );
    assert!(
        field(f, "explanation").contains("masquerades 10.244.0.0/16")
            && field(f, "explanation").contains("10.224.0.0/16"),
        "{f}"
    );
    assert!(
        drops_at(&records, &c.node1).is_empty(),
        "S4 is not a drop on the node: {records:#?}"
    );
}

#[test]
fn s0_leftover_calico_chain() {
    require_root!();
    let c = Cluster::build("s0", Scenario::S0).unwrap();
    const LEFTOVER: &str = "-A cali-to-hep-forward -m comment --comment \"cali:Drop if no policies passed packet\" -j DROP";
    let counter = || rule_packets(&c.node2, "filter", "cali-to-hep-forward", Some(LEFTOVER));
    let before = counter();
    let dst: SocketAddr = "10.224.2.2:9000".parse().unwrap();
    let records = observe(
        &c,
        || traffic::send_udp(&c.pod1, dst, 3, 64).unwrap(),
        |w| total_packets(&drops_at(&w.records(), &c.node2), |_| true) >= 3,
    );
    let drops = drops_at(&records, &c.node2);
    assert_eq!(total_packets(&drops, |_| true), 3, "{drops:#?}");
    assert_eq!(
        counter() - before,
        3,
        "the leftover rule's own counter agrees"
    );
    let r = drops.last().unwrap().clone();
    assert_eq!(field(&r, "rule"), LEFTOVER);
    assert_eq!(
        (field(&r, "hook"), field(&r, "chain")),
        ("FORWARD", "cali-to-hep-forward")
    );
    assert_eq!(field(&r, "owner"), "calico");
    assert_eq!(r["leftover"], true);
    assert!(field(&r, "fix").contains("iptables -t filter -D FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD"), "{r}");
    assert_eq!(field(&r, "fix_check"), "not_modelled", "a removal: {r}");
    assert!(finding(&records, &c.node2, "leftover-cni-chains").is_some());

    // The fix applied (unhook, then every cali- line gone): pod traffic
    // passes and no Calico chain is left.
    c.serve_tcp(&c.pod2, 80).unwrap();
    let commands = fix_commands(field(&r, "fix"));
    assert_eq!(commands.len(), 2, "{commands:?}");
    run_in(&c.node2, &commands);
    assert!(tcp(&c.pod1, "10.224.2.2:80"), "pod1 -> pod2 after the fix");
    let left = c.lab.iptables_save(&c.node2).unwrap();
    assert!(!left.contains("cali-"), "{left}");
}
