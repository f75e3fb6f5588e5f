//! kube-proxy in its nftables mode: the ruleset its own proxier test has
//! it write for six Services (netdrop-model/tests/fixtures/nft/INDEX.md),
//! loaded with Debian's `nft -f` into a node namespace. A pod connects to
//! a Service without endpoints; the kernel rejects it in kube-proxy's
//! table; netdrop names the Service, the rule and the owner.

use std::time::Duration;

use netdrop_tests::{Lab, Watch, field, require_root, total_packets, traffic};

#[test]
fn a_service_without_endpoints_in_nftables_mode_is_named() {
    require_root!();
    let mut lab = Lab::new("kpn");
    let node = lab.netns("node").unwrap();
    let pod = lab.netns("pod").unwrap();
    lab.veth(
        (&node, "cni0", Some("10.0.0.1/24")),
        (&pod, "eth0", Some("10.0.0.2/24")),
    )
    .unwrap();
    lab.ip(&pod, &["route", "add", "default", "via", "10.0.0.1"])
        .unwrap();
    // ClusterIPs are routed off the node, towards its next hop (as by its
    // default route): only kube-proxy's rules stop them.
    let upstream = lab.netns("up").unwrap();
    lab.veth(
        (&node, "eth0", Some("192.0.2.1/24")),
        (&upstream, "eth0", Some("192.0.2.2/24")),
    )
    .unwrap();
    lab.ip(
        &node,
        &["route", "add", "172.30.0.0/16", "via", "192.0.2.2"],
    )
    .unwrap();
    lab.sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../netdrop-model/tests/fixtures/nft/k8s-nftables-proxier-test-overall.nft");
    let loaded = lab
        .exec(&node, &["nft", "-f", rules.to_str().unwrap()])
        .unwrap();
    assert!(loaded.status.success(), "{loaded:?}");

    let mut w = Watch::start(&["--netns", &node, "--pod-cidr", "10.0.0.0/8"]).unwrap();
    let svc6 = "172.30.0.46:80".parse().unwrap();
    for _ in 0..3 {
        let connected = traffic::tcp_connect(&pod, svc6, Duration::from_secs(2)).unwrap();
        assert!(
            !connected,
            "a Service without endpoints accepted a connection"
        );
    }
    let rejected = |r: &serde_json::Value| field(r, "chain") == "reject-chain";
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), rejected) >= 3
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    std::thread::sleep(Duration::from_millis(600));
    let records = w.stop().unwrap();
    assert_eq!(total_packets(&records, rejected), 3, "{records:#?}");
    let rec = records.iter().rfind(|r| rejected(r)).unwrap();
    for (k, v) in [
        ("hook", "FORWARD"),
        ("table", "ip kube-proxy"),
        ("rule", "reject"),
        ("reject_with", "icmp port-unreachable"),
        ("verdict", "REJECT"),
        ("owner", "kube-proxy"),
        ("service", "ns6/svc6:p80"),
        ("in_iface", "cni0"),
        ("dst", "172.30.0.46"),
        ("evidence", "simulated"),
    ] {
        assert_eq!(field(rec, k), v, "{k}: {rec}");
    }
    let why = field(rec, "explanation");
    assert!(
        why.contains("Service ns6/svc6:p80 has no ready endpoints"),
        "{why}"
    );
    assert!(
        field(rec, "fix")
            .contains("kubectl -n ns6 get endpointslices -l kubernetes.io/service-name=svc6"),
        "{rec}"
    );

    // `explain` on the node's live rules says the same of that packet.
    let out = std::process::Command::new(netdrop_tests::netdrop_bin())
        .args([
            "explain",
            "--netns",
            &node,
            "--pod-cidr",
            "10.0.0.0/8",
            "--packet",
            "FORWARD tcp 10.0.0.2:40000 -> 172.30.0.46:80 in cni0 out eth0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.starts_with("FORWARD tcp 10.0.0.2:40000 -> 172.30.0.46:80 in cni0 out eth0: REJECT\n"),
        "{text}"
    );
    assert!(
        text.contains("  FORWARD ip kube-proxy/reject-chain #1: reject\n"),
        "{text}"
    );
    assert!(
        text.contains("Service ns6/svc6:p80 has no ready endpoints"),
        "{text}"
    );
}

/// The proxier test's addresses outside the ranges these tests may use,
/// moved into TEST-NET ones; the rest of the file is loaded verbatim.
const TEST_NET: [(&str, &str); 5] = [
    ("192.168.0.2", "192.0.2.1"),       // the node IP (@nodeport-ips)
    ("5.6.7.8", "198.51.100.8"),        // svc5's LoadBalancer IP
    ("1.2.3.4", "198.51.100.4"),        // svc2's LoadBalancer IP
    ("192.168.99.22", "198.51.100.22"), // svc2's external IP
    ("192.168.99.33", "198.51.100.33"), // svc4's external IP
];

/// From outside the cluster: a LoadBalancer whose source ranges
/// (203.0.113.0/25) let one client in and keep another out, a NodePort
/// with endpoints and one without. Real packets through kube-proxy's own
/// ruleset; netdrop names the Service and the reason for each drop and
/// nothing for what passes.
#[test]
fn nodeports_and_load_balancer_source_ranges_from_outside() {
    require_root!();
    let mut lab = Lab::new("kpx");
    let node = lab.netns("node").unwrap();
    let inside = lab.netns("in").unwrap(); // 203.0.113.10, inside the ranges
    let outside = lab.netns("out").unwrap(); // 203.0.113.200, outside
    let ep = lab.netns("ep").unwrap(); // the endpoint 10.180.0.3
    for (client, dev, addr) in [
        (&inside, "eth0", "203.0.113.10"),
        (&outside, "eth1", "203.0.113.200"),
    ] {
        lab.veth(
            (&node, dev, None),
            (client, "eth0", Some(&format!("{addr}/32"))),
        )
        .unwrap();
        lab.ip(&node, &["route", "add", &format!("{addr}/32"), "dev", dev])
            .unwrap();
        lab.ip(client, &["route", "add", "192.0.2.1/32", "dev", "eth0"])
            .unwrap();
        lab.ip(
            client,
            &[
                "route",
                "add",
                "198.51.100.0/24",
                "via",
                "192.0.2.1",
                "dev",
                "eth0",
            ],
        )
        .unwrap();
    }
    lab.ip(&node, &["addr", "add", "192.0.2.1/32", "dev", "eth0"])
        .unwrap();
    lab.veth(
        (&node, "cni0", Some("10.180.0.254/24")),
        (&ep, "eth0", Some("10.180.0.3/24")),
    )
    .unwrap();
    lab.ip(&ep, &["route", "add", "default", "via", "10.180.0.254"])
        .unwrap();
    lab.sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
    // The endpoint of svc3 and svc5 listens on port 80.
    let listener = netdrop::netns::Netns::named(&ep)
        .unwrap()
        .run_in(|| std::net::TcpListener::bind("0.0.0.0:80"))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || for _ in listener.incoming() {});

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../netdrop-model/tests/fixtures/nft/k8s-nftables-proxier-test-overall.nft");
    let mut rules = std::fs::read_to_string(fixture).unwrap();
    for (from, to) in TEST_NET {
        rules = rules.replace(from, to);
    }
    let file = std::env::temp_dir().join(format!("{node}.nft"));
    std::fs::write(&file, rules).unwrap();
    let loaded = lab
        .exec(&node, &["nft", "-f", file.to_str().unwrap()])
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(loaded.status.success(), "{loaded:?}");

    let mut w = Watch::start(&["--netns", &node, "--pod-cidr", "10.0.0.0/8", "--all"]).unwrap();
    let connect = |from: &str, to: &str| {
        traffic::tcp_connect(from, to.parse().unwrap(), Duration::from_millis(700)).unwrap()
    };
    // Passes: inside the source ranges, and a NodePort with an endpoint.
    assert!(
        connect(&inside, "198.51.100.8:80"),
        "LoadBalancer from inside its ranges"
    );
    assert!(
        connect(&inside, "192.0.2.1:3003"),
        "NodePort with an endpoint"
    );
    // Dropped: outside the ranges (3 SYNs), a NodePort without endpoints.
    assert!(!connect(&outside, "198.51.100.8:80"));
    assert!(!connect(&inside, "192.0.2.1:3001"));

    let chain_is = |c: &'static str| move |r: &serde_json::Value| field(r, "chain") == c;
    let firewall = chain_is("firewall-HVFWP5L3-ns5/svc5/tcp/p80");
    let nodeport = chain_is("nodeport-endpoints-check");
    w.wait_for(Duration::from_secs(10), |w| {
        let r = w.records();
        total_packets(&r, firewall) >= 1 && total_packets(&r, nodeport) >= 1
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    std::thread::sleep(Duration::from_millis(600));
    let records = w.stop().unwrap();

    let fw = records.iter().rfind(|r| firewall(r)).unwrap();
    for (k, v) in [
        ("hook", "PREROUTING"),
        ("table", "ip kube-proxy"),
        ("rule", "ip saddr != 203.0.113.0/25 drop"),
        ("verdict", "DROP"),
        ("owner", "kube-proxy"),
        ("service", "ns5/svc5:p80"),
        ("src", "203.0.113.200"),
        ("dst", "198.51.100.8"),
    ] {
        assert_eq!(field(fw, k), v, "{k}: {fw}");
    }
    let why = field(fw, "explanation");
    assert!(
        why.contains("outside the loadBalancerSourceRanges of Service ns5/svc5:p80"),
        "{why}"
    );
    assert!(
        field(fw, "fix").contains(r#"`kubectl -n ns5 patch service svc5 --type=json -p '[{"op":"add","path":"/spec/loadBalancerSourceRanges/-","value":"203.0.113.200/32"}]'`"#),
        "{fw}"
    );

    let np = records.iter().rfind(|r| nodeport(r)).unwrap();
    for (k, v) in [
        ("hook", "INPUT"),
        ("table", "ip kube-proxy"),
        ("verdict", "DROP"),
        ("owner", "kube-proxy"),
        ("service", "ns2/svc2:p80"),
        ("dst", "192.0.2.1"),
        (
            "rule",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports (element tcp . 3001)",
        ),
    ] {
        assert_eq!(field(np, k), v, "{k}: {np}");
    }
    assert_eq!(np["dport"], 3001, "{np}");
    assert!(
        field(np, "explanation").contains("has no ready endpoints"),
        "{np}"
    );
    // What passed left no netfilter drop: every one is of these two sites
    // (`--all` also shows the kernel's own, e.g. IPv6 multicast on veths).
    for r in records
        .iter()
        .filter(|r| field(r, "kind") == "drop" && field(r, "reason") == "NETFILTER_DROP")
    {
        assert!(firewall(r) || nodeport(r), "unexpected drop: {r}");
    }
}
