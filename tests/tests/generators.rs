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
    Lab, TempPath, Watch, field, netdrop_bin, peer_and_node, require_root, rule_packets,
    rule_packets_of, total_packets,
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

/// ferm writes the tables its configuration names and leaves no mark in
/// them: netdrop knows it from the node (`NETDROP_FERM_CONF` here: the
/// namespace ferm ran in is not the host's), and its fix is a line of the
/// configuration. Debian's real ferm writes a node namespace's rules; the
/// test adds the printed line and runs ferm again: VXLAN from the peer
/// passes, and from elsewhere does not.
#[test]
fn ferms_drop_is_named_and_its_fix_in_ferms_configuration_works() {
    require_root!();
    assert!(
        Command::new("ferm").arg("--version").output().is_ok(),
        "ferm is not installed (cargo xtask setup installs it)"
    );
    let mut lab = Lab::new("ferm");
    let (peer, node) = peer_and_node(&mut lab);
    lab.ip(&peer, &["addr", "add", "192.0.2.3/24", "dev", "eth0"])
        .unwrap();
    let conf = TempPath::file(
        "ferm.conf",
        "domain ip table filter {\n    chain INPUT {\n        policy DROP;\n        interface lo ACCEPT;\n        mod conntrack ctstate (ESTABLISHED RELATED) ACCEPT;\n        proto tcp dport 22 ACCEPT;\n    }\n}\n",
    );
    let ferm = |conf: &TempPath| {
        let out = Command::new("ip")
            .args(["netns", "exec", &node, "ferm", conf.path()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    ferm(&conf);

    let explain = Command::new(netdrop_bin())
        .env("NETDROP_FERM_CONF", conf.path())
        .args([
            "explain",
            "--netns",
            &node,
            "--pod-cidr",
            "10.224.0.0/16",
            "--packet",
            "INPUT udp 192.0.2.2:40000 -> 192.0.2.1:8472 in eth0",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(explain.status.success(), "{explain:?}");
    let v: serde_json::Value = serde_json::from_slice(&explain.stdout).unwrap();
    let d = &v["drops"][0];
    assert_eq!(d["owner"], "ferm", "{v}");
    assert_eq!(d["policy"], true, "{v}");
    let fix = d["fix"].as_str().unwrap_or_default();
    assert!(fix.contains(conf.path()), "{fix}");
    assert!(!fix.contains("iptables -I"), "{fix}");
    let line = fix
        .split('`')
        .find(|s| s.ends_with("ACCEPT;"))
        .unwrap_or_else(|| panic!("no ferm line in the fix: {fix}"));
    assert_eq!(
        line, "saddr 192.0.2.2 proto udp dport 8472 ACCEPT;",
        "{fix}"
    );

    // The operator adds the line in chain INPUT and runs ferm again.
    let text = std::fs::read_to_string(&conf.0).unwrap().replace(
        "        proto tcp dport 22 ACCEPT;\n",
        &format!("        proto tcp dport 22 ACCEPT;\n        {line}\n"),
    );
    std::fs::write(&conf.0, text).unwrap();
    ferm(&conf);
    // ferm writes with iptables-legacy.
    let count = |rule| rule_packets_of("iptables-legacy-save", &node, "filter", "INPUT", rule);
    let policy = || count(None);
    let accept = "-A INPUT -s 192.0.2.2/32 -p udp -m udp --dport 8472 -j ACCEPT";
    let (p0, a0) = (policy(), count(Some(accept)));
    let vxlan = "192.0.2.1:8472".parse().unwrap();
    traffic::send_udp(&peer, vxlan, 3, 50).unwrap();
    assert_eq!(count(Some(accept)) - a0, 3);
    assert_eq!(policy(), p0, "nothing from the peer dropped after the fix");
    traffic::send_udp_from(&peer, "192.0.2.3:0".parse().unwrap(), vxlan, 2, 50).unwrap();
    assert_eq!(policy() - p0, 2, "another source is still dropped");
}
