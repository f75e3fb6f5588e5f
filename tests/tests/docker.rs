//! Debian's real Docker beside Kubernetes on a node: dockerd, started in
//! the node's namespace, enables IP forwarding itself and so sets
//! FORWARD's policy to DROP. Pod traffic from another node to a pod here
//! then dies at that policy; netdrop names Docker, and the fix it prints
//! (in DOCKER-USER, the chain Docker keeps for its users) is run: the pod
//! answers again, both ways.

use std::time::Duration;

use netdrop_tests::{
    Lab, Watch,
    docker::{DockerDirs, start_dockerd},
    field, peer_and_node, require_root, total_packets,
};

#[test]
fn dockers_forward_drop_is_named_and_its_fix_works_both_ways() {
    require_root!();
    let dirs =
        DockerDirs(std::env::temp_dir().join(format!("netdrop-docker-{}", std::process::id())));
    let mut lab = Lab::new("dkr");
    let (peer, node) = peer_and_node(&mut lab);
    let pod = lab.netns("pod").unwrap();
    lab.veth(
        (&node, "cni0", Some("10.224.2.1/24")),
        (&pod, "eth0", Some("10.224.2.2/24")),
    )
    .unwrap();
    // The other node's pod network (on the peer), routed both ways.
    lab.ip(&peer, &["addr", "add", "10.224.1.1/24", "dev", "lo"])
        .unwrap();
    lab.ip(
        &peer,
        &["route", "add", "10.224.2.0/24", "via", "192.0.2.1"],
    )
    .unwrap();
    lab.ip(
        &node,
        &["route", "add", "10.224.1.0/24", "via", "192.0.2.2"],
    )
    .unwrap();
    lab.ip(&pod, &["route", "add", "default", "via", "10.224.2.1"])
        .unwrap();
    // A listener in the pod.
    let listener = netdrop::netns::Netns::named(&pod)
        .unwrap()
        .run_in(|| std::net::TcpListener::bind("0.0.0.0:5000"))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || for _ in listener.incoming() {});
    // net.ipv4.ip_forward stays 0: dockerd turns it on, and FORWARD to DROP.
    let dockerd = start_dockerd(&lab, &node, &dirs);

    let mut w = Watch::start(&["--netns", &node, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    let connect = || {
        netdrop::netns::Netns::named(&peer)
            .unwrap()
            .run_in(|| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                s.bind(
                    &"10.224.1.1:0"
                        .parse::<std::net::SocketAddr>()
                        .unwrap()
                        .into(),
                )
                .unwrap();
                s.connect_timeout(
                    &"10.224.2.2:5000"
                        .parse::<std::net::SocketAddr>()
                        .unwrap()
                        .into(),
                    Duration::from_secs(2),
                )
                .is_ok()
            })
            .unwrap()
    };
    assert!(!connect(), "the pod answered through FORWARD's policy DROP");
    let policy = |r: &serde_json::Value| r["policy"] == true && field(r, "chain") == "FORWARD";
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), policy) >= 1
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let rec = w.records().into_iter().rfind(|r| policy(r)).unwrap();
    for (k, v) in [
        ("hook", "FORWARD"),
        ("table", "filter"),
        ("verdict", "DROP"),
        ("owner", "docker"),
        ("in_iface", "eth0"),
        ("out_iface", "cni0"),
        ("src", "10.224.1.1"),
        ("dst", "10.224.2.2"),
    ] {
        assert_eq!(field(&rec, k), v, "{k}: {rec}");
    }
    assert!(
        field(&rec, "explanation").contains("which Docker sets when it enables IP forwarding"),
        "{rec}"
    );
    // The fix as printed: every command in its first backticks.
    let fix = field(&rec, "fix");
    let command = fix.split('`').nth(1).unwrap_or_default();
    assert!(command.starts_with("iptables -I DOCKER-USER"), "{fix}");
    for part in command.split("&&") {
        let argv: Vec<&str> = part.split_whitespace().collect();
        let out = lab.exec(&node, &argv).unwrap();
        assert!(out.status.success(), "{part}: {out:?}");
    }
    assert!(connect(), "the pod does not answer after the fix: {fix}");
    w.stop().unwrap();
    drop(dockerd);
}
