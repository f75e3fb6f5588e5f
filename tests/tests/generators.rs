//! Firewall generators write the whole ruleset and rewrite it at each
//! reload: a drop in their chains is theirs, and its fix goes into their
//! configuration, not into iptables. Debian's real Shorewall compiles a
//! one-interface configuration (its own example's policy: everything from
//! the net zone dropped) into a node namespace's ruleset; its state goes to
//! a tmpfs of a private mount namespace, so nothing of it stays on this
//! machine.

use std::{process::Command, time::Duration};

use netdrop::lab::traffic;
use netdrop_tests::{
    Lab, TempPath, Watch, field, peer_and_node, require_root, rule_packets, total_packets,
};

/// `shorewall ARGS` in namespace `ns`, its state on a tmpfs that goes with
/// the command's own mount namespace.
fn shorewall(ns: &str, args: &str) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns, "unshare", "-m", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs netdrop-test /var/lib/shorewall && exec shorewall {args}"
        ))
        .output()
        .unwrap()
}

#[test]
fn shorewalls_drop_is_named_and_its_fix_in_shorewalls_rules_works() {
    require_root!();
    assert!(
        Command::new("shorewall").arg("version").output().is_ok(),
        "shorewall is not installed (cargo xtask setup installs it)"
    );
    let mut lab = Lab::new("swl");
    let (peer, node) = peer_and_node(&mut lab);

    let conf = TempPath::dir("shorewall");
    let write = |name: &str, text: &str| std::fs::write(conf.0.join(name), text).unwrap();
    std::fs::copy(
        "/etc/shorewall/shorewall.conf",
        conf.0.join("shorewall.conf"),
    )
    .unwrap();
    write("zones", "fw firewall\nnet ipv4\n");
    write("interfaces", "?FORMAT 2\nnet eth0 tcpflags,nosmurfs\n");
    write("policy", "$FW net ACCEPT\nnet all DROP\nall all REJECT\n");
    write("rules", "?SECTION NEW\n");
    let dir = conf.path().to_owned();
    let started = shorewall(&node, &format!("start {dir}"));
    assert!(started.status.success(), "{started:?}");

    let mut w = Watch::start(&["--netns", &node, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    let vxlan = "192.0.2.1:8472".parse().unwrap();
    traffic::send_udp(&peer, vxlan, 4, 50).unwrap();
    let by_shorewall = |r: &serde_json::Value| field(r, "owner") == "shorewall";
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), by_shorewall) >= 4
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let rec = w.records().into_iter().rfind(|r| by_shorewall(r)).unwrap();
    for (k, v) in [
        ("hook", "INPUT"),
        ("table", "filter"),
        ("chain", "net-fw"),
        ("rule", "-A net-fw -j DROP"),
        ("verdict", "DROP"),
        ("evidence", "counters"),
    ] {
        assert_eq!(field(&rec, k), v, "{k}: {rec}");
    }
    assert_eq!(
        rule_packets(&node, "filter", "net-fw", Some("-A net-fw -j DROP")),
        4
    );
    assert!(
        field(&rec, "explanation").contains("from zone net to zone fw"),
        "{rec}"
    );
    // The fix is a line of Shorewall's rules file, not an iptables command.
    let fix = field(&rec, "fix");
    let line = fix
        .split('`')
        .find(|s| s.starts_with("ACCEPT "))
        .unwrap_or_else(|| panic!("no Shorewall rule in the fix: {fix}"));
    assert_eq!(line, "ACCEPT net:192.0.2.2 fw udp 8472", "{fix}");
    assert!(fix.contains("/etc/shorewall/rules"), "{fix}");
    assert!(!fix.contains("iptables -I"), "{fix}");

    // The operator adds it and has Shorewall rebuild its ruleset: VXLAN
    // from that peer gets through, nothing more dies.
    write("rules", &format!("?SECTION NEW\n{line}\n"));
    let checked = shorewall(&node, &format!("check {dir}"));
    assert!(checked.status.success(), "{checked:?}");
    let restarted = shorewall(&node, &format!("restart {dir}"));
    assert!(restarted.status.success(), "{restarted:?}");
    let (dropped, records) = w
        .stop_after(
            |r| field(r, "reason") == "NETFILTER_DROP",
            || traffic::send_udp(&peer, vxlan, 4, 50).unwrap(),
        )
        .unwrap();
    assert_eq!(dropped, 0, "drops after the fix: {records:#?}");
    let accept = "-A net-fw -s 192.0.2.2/32 -p udp -m udp --dport 8472 -j ACCEPT";
    assert_eq!(rule_packets(&node, "filter", "net-fw", Some(accept)), 4);
}
