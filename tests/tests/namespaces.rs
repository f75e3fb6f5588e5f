//! Node namespaces given with `--netns` that do not exist yet when watch
//! starts, that go away, and that come back: watch attaches when one
//! appears, detaches when it goes (says so each time), and counts the drops
//! of the namespace that came back under the same node name.

use std::time::Duration;

use netdrop_tests::{Lab, Watch, field, require_root, rule_packets, total_packets, traffic};

/// (Re-)creates node namespace `node` as a node whose INPUT drops UDP 9000
/// from its pod-side peer `peer` (10.224.5.2 → 10.224.5.1).
fn make_node(lab: &mut Lab, node: &str, peer: &str) {
    netdrop::lab::run("ip", &["netns", "add", node]).unwrap();
    lab.ip(node, &["link", "set", "lo", "up"]).unwrap();
    lab.veth(
        (peer, "eth0", Some("10.224.5.2/24")),
        (node, "eth0", Some("10.224.5.1/24")),
    )
    .unwrap();
    lab.iptables(
        node,
        &["-A", "INPUT", "-p", "udp", "--dport", "9000", "-j", "DROP"],
    )
    .unwrap();
}

const RULE: &str = "-A INPUT -p udp -m udp --dport 9000 -j DROP";

#[test]
fn a_node_namespace_that_appears_goes_and_comes_back_is_followed() {
    require_root!();
    let mut lab = Lab::new("nsf");
    // The lab owns the name (and removes it at the end), but the namespace
    // does not exist when watch starts.
    let node = lab.netns("node").unwrap();
    netdrop::lab::run("ip", &["netns", "del", &node]).unwrap();
    let mut w = Watch::start(&["--netns", &node, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    assert!(
        w.stderr().contains(&format!(
            "network namespace {node:?} does not exist (not in /run/netns): watching for it to appear"
        )),
        "{}",
        w.stderr()
    );
    let dst = "10.224.5.1:9000".parse().unwrap();
    let dropped = |r: &serde_json::Value| {
        field(r, "node") == node && field(r, "kind") == "drop" && field(r, "chain") == "INPUT"
    };

    for (round, count) in [3u64, 4].into_iter().enumerate() {
        let peer = lab.netns(&format!("peer{round}")).unwrap();
        make_node(&mut lab, &node, &peer);
        w.wait_for(Duration::from_secs(5), |w| {
            w.stderr().matches("namespace appeared: attaching").count() > round
        })
        .unwrap_or_else(|e| panic!("round {round}: {e:#}\n{}", w.stderr()));
        // This namespace's drops are a site of their own (a namespace made
        // anew may even get the old one's inode).
        let seen = w.records().len();
        let this_round = |w: &Watch| total_packets(&w.records()[seen..], dropped);
        traffic::send_udp(&peer, dst, count, 40).unwrap();
        w.wait_for(Duration::from_secs(10), |w| this_round(w) >= count)
            .unwrap_or_else(|e| panic!("round {round}: {e:#}\n{:#?}", w.records()));
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(this_round(&w), count, "round {round}: {:#?}", w.records());
        // The kernel's own counter of this namespace's rule agrees.
        assert_eq!(
            rule_packets(&node, "filter", "INPUT", Some(RULE)),
            count,
            "round {round}"
        );
        assert_eq!(
            w.metric("netdrop_node", &[("node", &node)]),
            Some(1),
            "round {round}"
        );

        // The namespace goes (its peer too): watch detaches and says so.
        netdrop::lab::run("ip", &["netns", "del", &node]).unwrap();
        w.wait_for(Duration::from_secs(5), |w| {
            w.stderr().matches("namespace gone").count() > round
        })
        .unwrap_or_else(|e| panic!("round {round}: {e:#}\n{}", w.stderr()));
        assert_eq!(
            w.metric("netdrop_node", &[("node", &node)]),
            None,
            "round {round}: a node not observed now"
        );
    }
    let records = w.stop().unwrap();
    let last = records.iter().rev().find(|r| dropped(r)).unwrap();
    assert_eq!(field(last, "rule"), RULE, "{last}");
}
