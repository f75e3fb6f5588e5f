//! netdrop never changes what it observes, in any backend: a node whose
//! rules live in iptables-legacy (v4 and v6), iptables-nft (v4 and v6) and
//! a native nftables table, each dropping real packets while `watch`
//! reads, attributes and re-reads them. The oracles are the kernel's own:
//! the nf_tables generation (any nf_tables change moves it), and each
//! backend's listing without counters, before and after.

use std::{net::SocketAddr, time::Duration};

use netdrop::{attribute::rules::nf_tables::generation, lab::traffic};
use netdrop_tests::{Lab, Watch, field, peer_and_node, require_root, rule_packets_of};

/// Every backend's rules without counters (and without the save
/// programs' dated comment lines).
fn listing(lab: &Lab, ns: &str) -> Vec<(String, String)> {
    [
        &["iptables-legacy-save"][..],
        &["ip6tables-legacy-save"],
        &["iptables-nft-save"],
        &["ip6tables-nft-save"],
        &["nft", "--stateless", "list", "ruleset"],
    ]
    .iter()
    .map(|argv| {
        let out = lab.exec(ns, argv).unwrap();
        assert!(out.status.success(), "{argv:?}: {out:?}");
        let text: String = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            // A chain's policy counter (`:INPUT ACCEPT [3:108]`) is the
            // kernel's count, printed even without -c.
            .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
                (true, Some(at)) => format!("{}\n", &l[..at]),
                _ => format!("{l}\n"),
            })
            .collect();
        (argv.join(" "), text)
    })
    .collect()
}

#[test]
fn watch_never_changes_the_rules_of_any_backend() {
    require_root!();
    let mut lab = Lab::new("nvc");
    let (peer, node) = peer_and_node(&mut lab);
    for (ns, addr) in [(&peer, "2001:db8:9::2/64"), (&node, "2001:db8:9::1/64")] {
        lab.ip(ns, &["addr", "add", addr, "dev", "eth0", "nodad"])
            .unwrap();
    }
    let drop = |prog: &str, port: &str| {
        let out = lab
            .exec(
                &node,
                &[
                    prog, "-A", "INPUT", "-p", "udp", "--dport", port, "-j", "DROP",
                ],
            )
            .unwrap();
        assert!(out.status.success(), "{prog}: {out:?}");
    };
    drop("iptables-legacy", "9001");
    drop("ip6tables-legacy", "9002");
    drop("iptables-nft", "9003");
    drop("ip6tables-nft", "9004");
    for cmd in [
        "add table inet guard",
        "add set inet guard ports { type inet_service; elements = { 9005 } }",
        "add chain inet guard input { type filter hook input priority 10; }",
        "add rule inet guard input udp dport @ports drop",
    ] {
        let out = lab.exec(&node, &["nft", cmd]).unwrap();
        assert!(out.status.success(), "nft {cmd}: {out:?}");
    }
    let before = listing(&lab, &node);
    let gen_before = generation(Some(&node)).unwrap().nf_tables;

    let mut w = Watch::start(&["--netns", &node, "--all"]).unwrap();
    let targets: [(&str, u16); 5] = [
        ("192.0.2.1", 9001),
        ("2001:db8:9::1", 9002),
        ("192.0.2.1", 9003),
        ("2001:db8:9::1", 9004),
        ("192.0.2.1", 9005),
    ];
    let legacy_rule = Some("-A INPUT -p udp -m udp --dport 9001 -j DROP");
    let legacy_before = rule_packets_of(
        "iptables-legacy-save",
        &node,
        "filter",
        "INPUT",
        legacy_rule,
    );
    for (addr, port) in targets {
        let dst = SocketAddr::new(addr.parse().unwrap(), port);
        traffic::send_udp(&peer, dst, 3, 8).unwrap();
    }
    // Positive control: netdrop saw a drop of every backend (it read and
    // attributed them all), and the kernel's counters moved.
    w.wait_for(Duration::from_secs(20), |w| {
        let recs = w.records();
        targets.iter().all(|(_, port)| {
            recs.iter()
                .any(|r| field(r, "kind") == "drop" && r["dport"] == *port)
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:#?}", w.records()));
    assert_eq!(
        rule_packets_of(
            "iptables-legacy-save",
            &node,
            "filter",
            "INPUT",
            legacy_rule
        ) - legacy_before,
        3,
        "the kernel counted the legacy drops"
    );
    // A re-read on a change it did not make: a rule added and removed by
    // hand moves the generation; netdrop reads again, changes nothing.
    for op in ["-I", "-D"] {
        let argv = [
            "iptables-nft",
            op,
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "1",
            "-j",
            "DROP",
        ];
        let out = lab.exec(&node, &argv).unwrap();
        assert!(out.status.success(), "{argv:?}: {out:?}");
    }
    let gen_edited = generation(Some(&node)).unwrap().nf_tables;
    assert_eq!(
        gen_edited,
        gen_before.wrapping_add(2),
        "our two edits, and nothing else"
    );
    std::thread::sleep(Duration::from_secs(3));
    w.stop().unwrap();

    assert_eq!(
        generation(Some(&node)).unwrap().nf_tables,
        gen_edited,
        "nf_tables changed while netdrop watched"
    );
    let after = listing(&lab, &node);
    for ((what, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(b, a, "{what} changed while netdrop watched");
    }
}
