//! Rules are read when the kernel says they changed, not on a clock: an
//! idle watch on a node with iptables-nft rules does not re-read them; a
//! rule added under it (as kube-proxy would) is in the model within
//! seconds: its finding appears without a single drop.

use std::time::{Duration, Instant};

use netdrop_tests::{Lab, Watch, field, require_root};

#[test]
fn an_idle_watch_reads_rules_only_when_they_change() {
    require_root!();
    let mut lab = Lab::new("rc");
    let node = lab.netns("node").unwrap();
    lab.sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
    lab.iptables(
        &node,
        &["-A", "FORWARD", "-s", "10.224.0.0/16", "-j", "ACCEPT"],
    )
    .unwrap();
    let w = Watch::start(&["--netns", &node, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    let reads = |w: &Watch| w.metric("netdrop_ruleset_reads_total", &[("node", &node)]);
    // Settled after start; then idle for longer than a clock-driven
    // re-read would wait (10 s, kept for iptables-legacy nodes only).
    std::thread::sleep(Duration::from_secs(2));
    let idle_from = reads(&w).expect("netdrop_ruleset_reads_total");
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(reads(&w), Some(idle_from), "re-read while nothing changed");

    // A rule that blocks VXLAN, added under the running watch.
    let added = Instant::now();
    lab.iptables(
        &node,
        &["-I", "INPUT", "-p", "udp", "--dport", "8472", "-j", "DROP"],
    )
    .unwrap();
    let mut w = w;
    w.wait_for(Duration::from_secs(3), |w| {
        w.records()
            .iter()
            .any(|r| field(r, "finding") == "input-blocks-vxlan")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let took = added.elapsed();
    assert!(reads(&w).unwrap_or(0) > idle_from, "the change was read");
    assert_eq!(
        w.metric("netdrop_ruleset_reloads_total", &[("node", &node)]),
        Some(1)
    );
    eprintln!("rule change to finding: {took:?}");
    w.stop().unwrap();
}
