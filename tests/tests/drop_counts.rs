//! The first kernel path end to end: real programs in this kernel, real
//! packets between namespaces, a real iptables DROP; netdrop must count
//! exactly the packets the rule dropped, in the right namespace and hook.

use std::{net::SocketAddr, time::Duration};

use netdrop_tests::{Lab, Watch, field, require_root, total_packets, traffic};

/// Two namespaces joined by a veth; `server` drops UDP to port 9999 in INPUT.
fn drop_pair(lab: &mut Lab) -> (String, String) {
    let client = lab.netns("cli").unwrap();
    let server = lab.netns("srv").unwrap();
    lab.veth(
        (&client, "eth0", Some("10.224.7.2/24")),
        (&server, "eth0", Some("10.224.7.1/24")),
    )
    .unwrap();
    lab.iptables(
        &server,
        &["-A", "INPUT", "-p", "udp", "--dport", "9999", "-j", "DROP"],
    )
    .unwrap();
    (client, server)
}

fn counts_exactly_n(probe: &str) {
    require_root();
    const N: u64 = 37;
    let mut lab = Lab::new("cnt");
    let (client, server) = drop_pair(&mut lab);
    let rules_before = lab.iptables_save(&server).unwrap();

    let mut watch = Watch::start(&["--netns", &server, "--drop-probe", probe]).unwrap();
    let dst: SocketAddr = "10.224.7.1:9999".parse().unwrap();
    traffic::send_udp(&client, dst, N, 100).unwrap();

    let is_ours = |r: &serde_json::Value| {
        field(r, "node") == server && field(r, "reason") == "NETFILTER_DROP"
    };
    watch
        .wait_for(Duration::from_secs(10), |w| {
            total_packets(&w.records(), is_ours) >= N
        })
        .unwrap();
    // Give a miscount the chance to show before stopping.
    std::thread::sleep(Duration::from_millis(600));
    let records = watch.stop().unwrap();

    assert_eq!(total_packets(&records, is_ours), N, "records: {records:#?}");
    for r in records.iter().filter(|r| is_ours(r)) {
        assert_eq!(field(r, "hook"), "INPUT", "{r}");
        assert_eq!(field(r, "proto"), "udp", "{r}");
        assert_eq!(field(r, "in_iface"), "eth0", "{r}");
    }
    assert!(
        records.iter().all(|r| field(r, "node") == server),
        "only the observed namespace is reported: {records:#?}"
    );
    assert_eq!(
        lab.iptables_save(&server).unwrap(),
        rules_before,
        "netdrop changed the ruleset"
    );
}

#[test]
fn tp_btf_counts_exactly_the_dropped_packets() {
    counts_exactly_n("tp-btf");
}

/// The plain tracepoint is the fallback where tp_btf cannot attach; forced
/// here so that the path is tested on this kernel.
#[test]
fn tracepoint_fallback_counts_exactly_the_dropped_packets() {
    counts_exactly_n("tracepoint");
}

#[test]
fn sigkill_leaves_no_program_behind() {
    require_root();
    let mut watch = Watch::start(&[]).unwrap();
    let listed = |name: &str| {
        let out = std::process::Command::new("bpftool")
            .args(["prog", "show", "name", name])
            .output()
            .expect("bpftool (installed by cargo xtask setup)");
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    };
    assert!(
        listed("netdrop_kfree_skb_btf"),
        "program is loaded while watching"
    );
    watch.kill(); // SIGKILL: no chance to detach by hand.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while listed("netdrop_kfree_skb_btf") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !listed("netdrop_kfree_skb_btf"),
        "program still loaded after SIGKILL"
    );
}
