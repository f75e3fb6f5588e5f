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
        text.contains("  ip kube-proxy/reject-chain #1: reject\n"),
        "{text}"
    );
    assert!(
        text.contains("Service ns6/svc6:p80 has no ready endpoints"),
        "{text}"
    );
}
