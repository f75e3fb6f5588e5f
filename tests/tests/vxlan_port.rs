//! A cluster whose overlay runs on the Linux default VXLAN port 4789, not
//! flannel's 8472: `--vxlan-port` reaches `check`'s probes and the
//! explanations, not only the kernel filter.

use std::{net::SocketAddr, time::Duration};

use netdrop_tests::{Lab, Watch, check_json, drop_pair, field, require_root, traffic};

#[test]
fn check_probes_the_configured_vxlan_port() {
    require_root!();
    let mut lab = Lab::new("vxp");
    let node = lab.netns("node").unwrap();
    lab.iptables(
        &node,
        &["-A", "INPUT", "-p", "udp", "--dport", "4789", "-j", "DROP"],
    )
    .unwrap();
    lab.ip(&node, &["link", "set", "lo", "up"]).unwrap();
    lab.exec(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();

    let (code, findings, text) = check_json(&node, &["--vxlan-port", "4789"]);
    assert_eq!(code, Some(3), "{text}");
    let vx: Vec<_> = findings
        .iter()
        .filter(|f| f["id"] == "input-blocks-vxlan")
        .collect();
    assert_eq!(vx.len(), 1, "{text}");
    let vx = vx[0];
    assert_eq!(
        vx["rule"], "-A INPUT -p udp -m udp --dport 4789 -j DROP",
        "{vx}"
    );
    assert_eq!(
        vx["flows"][0],
        "udp 192.0.2.2:51000 -> 192.0.2.1:4789 in eth0"
    );
    assert!(
        field(vx, "fix").contains(
            "iptables -I INPUT 1 -s <other nodes' network> -p udp --dport 4789 -j ACCEPT"
        ),
        "{vx}"
    );
    assert!(
        field(vx, "explanation").contains("VXLAN traffic between nodes"),
        "{vx}"
    );
    assert!(
        !text.contains("8472"),
        "nothing speaks of flannel's port: {text}"
    );

    // Flannel's default port: the same rule blocks nothing the probes send.
    let (code, findings, text) = check_json(&node, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        findings.iter().all(|f| f["id"] != "input-blocks-vxlan"),
        "{text}"
    );
}

#[test]
fn watch_explains_drops_on_the_configured_vxlan_port() {
    require_root!();
    const N: u64 = 5;
    let mut lab = Lab::new("vxw");
    let (client, server) = drop_pair(&mut lab, 4789);
    let mut watch = Watch::start(&[
        "--netns",
        &server,
        "--pod-cidr",
        "10.224.0.0/16",
        "--vxlan-port",
        "4789",
        "--no-observers",
    ])
    .unwrap();
    let dst: SocketAddr = "10.224.7.1:4789".parse().unwrap();
    traffic::send_udp(&client, dst, N, 100).unwrap();
    let is_ours = |r: &serde_json::Value| {
        field(r, "node") == server && field(r, "reason") == "NETFILTER_DROP"
    };
    watch
        .wait_for(Duration::from_secs(10), |w| w.records().iter().any(is_ours))
        .unwrap();
    let records = watch.stop().unwrap();
    let r = records.iter().find(|r| is_ours(r)).unwrap();
    assert_eq!(r["vxlan"], true, "the kernel took 4789 as the overlay: {r}");
    assert_eq!(r["dport"], 4789, "{r}");
    assert_eq!(
        r["rule"], "-A INPUT -p udp -m udp --dport 4789 -j DROP",
        "{r}"
    );
    assert!(
        field(r, "explanation").contains("flannel's VXLAN traffic between nodes"),
        "{r}"
    );
    assert!(
        field(r, "fix").contains("-p udp --dport 4789 -j ACCEPT"),
        "{r}"
    );
    assert!(!r.to_string().contains("8472"), "{r}");
}
