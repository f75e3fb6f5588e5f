//! A node whose packet filter runs in two engines: an iptables-legacy rule
//! that drops the sources of an ipset (whose members netdrop cannot know)
//! and a native nftables table that drops UDP to port 9000. The model
//! alone cannot tell which one dropped a packet; where the kernel freed it
//! can (`nf_hook_slow` for x_tables, `nft_do_chain` for nf_tables, since
//! Linux 6.7), and netdrop names the rule of that engine.

use std::time::Duration;

use netdrop_tests::{Watch, field, require_root, routed, total_packets};

#[test]
fn the_engine_that_freed_a_drop_names_its_rule() {
    require_root!();
    let routed = routed();
    let (lab, client, router) = (&routed.lab, &routed.client, &routed.router);
    let ok = |o: std::process::Output| assert!(o.status.success(), "{o:?}");
    ok(lab
        .exec(router, &["ipset", "create", "blocked", "hash:ip"])
        .unwrap());
    ok(lab
        .exec(
            router,
            &[
                "iptables-legacy",
                "-A",
                "FORWARD",
                "-m",
                "set",
                "--match-set",
                "blocked",
                "src",
                "-j",
                "DROP",
            ],
        )
        .unwrap());
    // No counter on the native rule: only the drop location can tell.
    ok(lab
        .exec(
            router,
            &[
                "nft",
                "add table inet edge; add chain inet edge screen { type filter hook forward priority 10; }; add rule inet edge screen udp dport 9000 drop",
            ],
        )
        .unwrap());

    let mut w = Watch::start(&["--netns", router, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    let dst = "203.0.113.2:9000".parse().unwrap();
    let native = |r: &serde_json::Value| field(r, "table") == "inet edge";
    let legacy = |r: &serde_json::Value| field(r, "table") == "filter";

    // Not in the set: iptables-legacy lets it pass, nf_tables drops it.
    netdrop::lab::traffic::send_udp(client, dst, 3, 64).unwrap();
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), native) >= 3
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let rec = w.records().into_iter().rfind(|r| native(r)).unwrap();
    assert!(field(&rec, "location").starts_with("nft_do_chain"), "{rec}");
    assert_eq!(field(&rec, "rule"), "udp dport 9000 drop", "{rec}");
    assert_eq!(field(&rec, "chain"), "screen", "{rec}");

    // In the set: iptables-legacy drops it first (nf_hook_slow).
    ok(lab
        .exec(router, &["ipset", "add", "blocked", "10.224.9.2"])
        .unwrap());
    netdrop::lab::traffic::send_udp(client, dst, 2, 64).unwrap();
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), legacy) >= 2
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let rec = w.records().into_iter().rfind(|r| legacy(r)).unwrap();
    assert!(field(&rec, "location").starts_with("nf_hook_slow"), "{rec}");
    assert_eq!(
        field(&rec, "rule"),
        "-A FORWARD -m set --match-set blocked src -j DROP",
        "{rec}"
    );
    // The fix edits the legacy backend: plain `iptables` on this node is
    // iptables-nft and would not find the rule. Run it as printed.
    let fix = field(&rec, "fix");
    let delete = "iptables-legacy -t filter -D FORWARD 1";
    assert!(fix.contains(&format!("`{delete}`")), "{fix}");
    ok(lab
        .exec(router, &delete.split(' ').collect::<Vec<_>>())
        .unwrap());
    // Past the legacy rule now, the packets die in the native table.
    netdrop::lab::traffic::send_udp(client, dst, 4, 64).unwrap();
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), native) >= 7
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    std::thread::sleep(Duration::from_millis(600));
    let records = w.stop().unwrap();
    assert_eq!(total_packets(&records, native), 7, "{records:#?}");
    assert_eq!(total_packets(&records, legacy), 2, "{records:#?}");
}
