//! iptables-legacy tables have no generation: netdrop tells their changes
//! by each table's entry count and size (every check) and a hash of their
//! entries without counters (every 10 s; tables over 8 MiB every 60 s). Real `iptables-legacy` and
//! `ip6tables-legacy` tables in a test namespace, real packets moving
//! their counters.

use std::time::{Duration, Instant};

use netdrop::{attribute::rules::nf_tables::GenerationWatch, lab::traffic};
use netdrop_tests::{Lab, Watch, peer_and_node, require_root};

fn legacy(lab: &Lab, ns: &str, prog: &str, args: &[&str]) {
    let mut argv = vec![prog];
    argv.extend(args);
    let out = lab.exec(ns, &argv).unwrap();
    assert!(out.status.success(), "{prog} {args:?}: {out:?}");
}

/// A legacy rule's packet counter, as `iptables-legacy -L -v -x` says.
fn first_rule_packets(lab: &Lab, ns: &str, prog: &str) -> u64 {
    let out = lab
        .exec(ns, &[prog, "-L", "INPUT", "-v", "-x", "-n"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .nth(2)
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no rule counter in {text}"))
}

#[test]
fn legacy_tables_change_is_told_from_their_counters_moving() {
    require_root!();
    let mut lab = Lab::new("lgt");
    let (peer, node) = peer_and_node(&mut lab);
    for (ns, addr) in [(&peer, "2001:db8:7::2/64"), (&node, "2001:db8:7::1/64")] {
        lab.ip(ns, &["addr", "add", addr, "dev", "eth0", "nodad"])
            .unwrap();
    }

    // A namespace without legacy tables says so.
    let watch = GenerationWatch::open(Some(&node)).unwrap();
    assert!(!watch.read().unwrap().legacy_tables);

    legacy(
        &lab,
        &node,
        "iptables-legacy",
        &["-A", "INPUT", "-p", "udp", "--dport", "9000", "-j", "DROP"],
    );
    legacy(
        &lab,
        &node,
        "ip6tables-legacy",
        &["-A", "INPUT", "-p", "udp", "--dport", "9000", "-j", "DROP"],
    );
    // Opened after the tables exist (watch opens it anew with each read).
    let watch = GenerationWatch::open(Some(&node)).unwrap();
    let g0 = watch.read().unwrap();
    let c0 = watch.legacy_content(false).unwrap();
    // Nothing here is a large table (compared apart, less often).
    let large = watch.legacy_content(true).unwrap();
    assert!(g0.legacy_tables);

    // Packets move both families' counters, and nothing netdrop compares.
    traffic::send_udp(&peer, "192.0.2.1:9000".parse().unwrap(), 7, 32).unwrap();
    traffic::send_udp(&peer, "[2001:db8:7::1]:9000".parse().unwrap(), 5, 32).unwrap();
    assert_eq!(first_rule_packets(&lab, &node, "iptables-legacy"), 7);
    assert_eq!(first_rule_packets(&lab, &node, "ip6tables-legacy"), 5);
    assert_eq!(watch.read().unwrap(), g0);
    assert_eq!(watch.legacy_content(false).unwrap(), c0);

    // A rule replaced by one of the same size: same shape, new content.
    legacy(
        &lab,
        &node,
        "iptables-legacy",
        &[
            "-R", "INPUT", "1", "-p", "udp", "--dport", "9001", "-j", "DROP",
        ],
    );
    assert_eq!(watch.read().unwrap(), g0);
    let c1 = watch.legacy_content(false).unwrap();
    assert_ne!(c1, c0);
    legacy(
        &lab,
        &node,
        "ip6tables-legacy",
        &[
            "-R", "INPUT", "1", "-p", "udp", "--dport", "9001", "-j", "DROP",
        ],
    );
    assert_ne!(watch.legacy_content(false).unwrap(), c1);
    assert_eq!(watch.legacy_content(true).unwrap(), large);

    // A rule added: the shape moves (seen at the next check).
    legacy(
        &lab,
        &node,
        "iptables-legacy",
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    );
    let g2 = watch.read().unwrap();
    assert_ne!(g2.legacy_shape, g0.legacy_shape);
    assert_eq!(
        g2.nf_tables, g0.nf_tables,
        "legacy changes do not move nf_tables"
    );
}

#[test]
fn an_idle_legacy_node_is_not_read_again_and_a_change_is() {
    require_root!();
    let mut lab = Lab::new("lgw");
    let node = lab.netns("node").unwrap();
    legacy(
        &lab,
        &node,
        "iptables-legacy",
        &["-A", "INPUT", "-p", "udp", "--dport", "9000", "-j", "DROP"],
    );
    let w = Watch::start(&[
        "--netns",
        &node,
        "--pod-cidr",
        "10.224.0.0/16",
        "--no-observers",
    ])
    .unwrap();
    let reads = |w: &Watch| {
        w.metric("netdrop_ruleset_reads_total", &[("node", &node)])
            .unwrap_or(0)
    };
    let reloads = |w: &Watch| {
        w.metric("netdrop_ruleset_reloads_total", &[("node", &node)])
            .unwrap_or(0)
    };
    let mut w = w;
    w.wait_for(Duration::from_secs(10), |w| reads(w) >= 1)
        .unwrap();
    let r0 = reads(&w);
    // Longer than the 10 s content check: nothing changed, nothing read
    // (netdrop used to read legacy nodes every 10 s).
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(reads(&w), r0, "an unchanged legacy ruleset was read again");

    // A rule of another size: seen at the next check (about a second).
    let t = Instant::now();
    legacy(
        &lab,
        &node,
        "iptables-legacy",
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP"],
    );
    w.wait_for(Duration::from_secs(5), |w| reloads(w) >= 1)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", w.stderr()));
    let shape_seen = t.elapsed();
    // Replaced by one of the same size: seen by the content check.
    let r1 = reloads(&w);
    legacy(
        &lab,
        &node,
        "iptables-legacy",
        &[
            "-R", "INPUT", "2", "-p", "tcp", "--dport", "23", "-j", "DROP",
        ],
    );
    w.wait_for(Duration::from_secs(15), |w| reloads(w) > r1)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", w.stderr()));
    println!("legacy change seen in {shape_seen:?} (count/size), same-size edit within 10 s");
    w.stop().unwrap();
}
