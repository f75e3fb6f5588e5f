//! What `watch` says of a drop, field by field, against what the kernel
//! and iptables' own counters say: the JSON record (`bytes`,
//! `new_packets`, `location`, `assumptions`, `unmodelled`, `evidence`), the
//! metrics (`netdrop_drop_bytes_total`, `netdrop_drops_filtered_total`),
//! and the readable text lines with their `[counters]` / `[simulated]`.

use std::{net::SocketAddr, time::Duration};

use netdrop_tests::{Lab, Watch, field, require_root, rule_packets, total_packets, traffic};
use serde_json::Value;

/// UDP payload of every datagram sent here: 20 (IPv4) + 8 (UDP) + 100 =
/// 128 bytes per packet as the kernel counts them at INPUT (`skb->len`
/// from the IP header on).
const PAYLOAD: usize = 100;
const IP_LEN: u64 = 128;

/// client (10.224.7.2 and 192.0.2.2) — server (10.224.7.1 and 192.0.2.1),
/// on one veth: pod addresses and, beside them, non-pod ones.
fn pair(lab: &mut Lab) -> (String, String) {
    let client = lab.netns("cli").unwrap();
    let server = lab.netns("srv").unwrap();
    lab.veth(
        (&client, "eth0", Some("10.224.7.2/24")),
        (&server, "eth0", Some("10.224.7.1/24")),
    )
    .unwrap();
    lab.ip(&client, &["addr", "add", "192.0.2.2/24", "dev", "eth0"])
        .unwrap();
    lab.ip(&server, &["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .unwrap();
    (client, server)
}

fn filtered_total(w: &Watch) -> u64 {
    netdrop_tests::prom::try_get(&w.metrics_addr().unwrap(), "/metrics")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("netdrop_drops_filtered_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("netdrop_drops_filtered_total")
}

/// The records of the drop site whose rule is `rule`, in order.
fn site<'a>(records: &'a [Value], rule: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| field(r, "kind") == "drop" && field(r, "rule") == rule)
        .collect()
}

#[test]
fn a_drop_record_carries_every_field_and_the_metrics_agree() {
    require_root!();
    const N: u64 = 37; // pod packets to the plain rule
    const M: u64 = 5; // pod packets to the rule with a match netdrop does not model
    const K: u64 = 11; // non-pod packets to the plain rule: filtered in kernel
    let mut lab = Lab::new("rec");
    let (client, server) = pair(&mut lab);
    const PLAIN: &str = "-A INPUT -p udp -m udp --dport 9001 -j DROP";
    const LENGTH: &str = "-A INPUT -p udp -m udp --dport 9002 -m length --length 100:200 -j DROP";
    lab.iptables_all(
        &server,
        &[
            &["-A", "INPUT", "-p", "udp", "--dport", "9001", "-j", "DROP"],
            &[
                "-A", "INPUT", "-p", "udp", "--dport", "9002", "-m", "length", "--length",
                "100:200", "-j", "DROP",
            ],
        ],
    )
    .unwrap();

    let mut w = Watch::start(&[
        "--netns",
        &server,
        "--pod-cidr",
        "10.224.0.0/16",
        "--no-observers",
    ])
    .unwrap();
    let filtered_before = filtered_total(&w);
    let pod_src: SocketAddr = "10.224.7.2:40001".parse().unwrap();
    // Two batches to the plain rule, so that the site has a second record
    // with new packets.
    traffic::send_udp_from(
        &client,
        pod_src,
        "10.224.7.1:9001".parse().unwrap(),
        20,
        PAYLOAD,
    )
    .unwrap();
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), |r| field(r, "rule") == PLAIN) >= 20
    })
    .unwrap();
    traffic::send_udp_from(
        &client,
        pod_src,
        "10.224.7.1:9001".parse().unwrap(),
        N - 20,
        PAYLOAD,
    )
    .unwrap();
    traffic::send_udp(&client, "10.224.7.1:9002".parse().unwrap(), M, PAYLOAD).unwrap();
    traffic::send_udp(&client, "192.0.2.1:9001".parse().unwrap(), K, PAYLOAD).unwrap();
    w.wait_for(Duration::from_secs(10), |w| {
        let r = w.records();
        total_packets(&r, |r| field(r, "rule") == PLAIN) >= N
            && total_packets(&r, |r| field(r, "rule") == LENGTH) >= M
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    std::thread::sleep(Duration::from_millis(600));
    let filtered = filtered_total(&w) - filtered_before;
    let node_series = [("node", server.as_str()), ("chain", "INPUT")];
    let drops_metric = w.metric("netdrop_drops_total", &node_series);
    let bytes_metric = w.metric("netdrop_drop_bytes_total", &node_series);
    let records = w.stop().unwrap();

    // The plain rule: every field, and iptables' own counter.
    let plain = site(&records, PLAIN);
    assert!(plain.len() >= 2, "two batches, two records: {plain:#?}");
    let last = *plain.last().unwrap();
    assert_eq!(last["packets"], N, "{last}");
    assert_eq!(last["bytes"], N * IP_LEN, "{last}");
    let new: u64 = plain
        .iter()
        .map(|r| r["new_packets"].as_u64().unwrap())
        .sum();
    assert_eq!(
        new, N,
        "new_packets of the site's records add up to its count"
    );
    assert_eq!(plain[0]["new_packets"], plain[0]["packets"]);
    for (k, v) in [
        ("node", server.as_str()),
        ("hook", "INPUT"),
        ("table", "filter"),
        ("chain", "INPUT"),
        ("verdict", "DROP"),
        ("owner", "custom"),
        ("reason", "NETFILTER_DROP"),
        ("in_iface", "eth0"),
        ("src", "10.224.7.2"),
        ("dst", "10.224.7.1"),
        ("proto", "udp"),
        ("evidence", "counters"),
    ] {
        assert_eq!(field(last, k), v, "{k} of {last}");
    }
    assert_eq!(
        (last["sport"].as_u64(), last["dport"].as_u64()),
        (Some(40001), Some(9001))
    );
    // The kernel function that freed the packet: nf_tables' rule
    // evaluation, as `iptables` here is its nft backend.
    let version = std::process::Command::new("iptables")
        .arg("-V")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("nf_tables"));
    assert!(
        field(last, "location").starts_with("nft_do_chain+0x"),
        "{last}"
    );
    assert_eq!(last["rule_no"], 1);
    assert_eq!(last["policy"], false);
    assert_eq!(last["assumptions"], serde_json::json!([]), "{last}");
    assert_eq!(last["unmodelled"], false, "{last}");
    // The kernel's counter of that rule: the pod drops and the filtered ones.
    assert_eq!(rule_packets(&server, "filter", "INPUT", Some(PLAIN)), N + K);

    // The rule netdrop cannot model fully: found all the same, by its
    // counter, and it says what it had to assume.
    let length = site(&records, LENGTH);
    let last = *length.last().expect("a record of the length rule");
    assert_eq!(last["packets"], M, "{last}");
    assert_eq!(last["bytes"], M * IP_LEN, "{last}");
    assert_eq!(last["rule_no"], 2);
    assert_eq!(field(last, "evidence"), "counters", "{last}");
    assert_eq!(last["unmodelled"], true, "{last}");
    let assumed: Vec<&str> = last["assumptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        assumed
            .iter()
            .any(|a| a.contains("INPUT #2") && a.contains("--length 100:200")),
        "{assumed:?}"
    );
    assert_eq!(rule_packets(&server, "filter", "INPUT", Some(LENGTH)), M);

    // Non-pod drops: never a record, counted as filtered (the counter is
    // the whole machine's: at least these).
    assert!(
        records.iter().all(|r| field(r, "src") != "192.0.2.2"),
        "{records:#?}"
    );
    assert!(
        filtered >= K,
        "drops_filtered_total grew by {filtered} < {K}"
    );

    // Both rules share one metric series (labels carry no rule).
    assert_eq!(drops_metric, Some(N + M));
    assert_eq!(bytes_metric, Some((N + M) * IP_LEN));
}

/// The readable output: the first drop at a site with its rule, why and
/// fix; then summaries with the new packets; `[counters]` when the rule's
/// counter grew, `[simulated]` when only the model says so (a native
/// nftables rule without a counter). The native table runs before
/// iptables' filter (priority -10): its rule is named, not the iptables
/// rule behind it, whose counter stays at zero.
#[test]
fn text_output_names_the_rule_then_summarises_with_its_evidence() {
    require_root!();
    let mut lab = Lab::new("txt");
    let (client, server) = pair(&mut lab);
    lab.iptables_all(
        &server,
        &[
            &["-A", "INPUT", "-p", "udp", "--dport", "9003", "-j", "DROP"],
            &["-A", "INPUT", "-p", "udp", "--dport", "9004", "-j", "DROP"],
        ],
    )
    .unwrap();
    let nft = lab
        .exec(
            &server,
            &[
                "nft",
                "add table inet early; add chain inet early input { type filter hook input priority -10; }; add rule inet early input udp dport 9004 drop; add rule inet early input udp dport 9005 counter drop",
            ],
        )
        .unwrap();
    assert!(nft.status.success(), "{nft:?}");

    let mut w = Watch::start_text(&[
        "--netns",
        &server,
        "--pod-cidr",
        "10.224.0.0/16",
        "--no-observers",
        "--summary-interval",
        "1s",
    ])
    .unwrap();
    let src: SocketAddr = "10.224.7.2:40003".parse().unwrap();
    let to = |port: u16| -> SocketAddr { format!("10.224.7.1:{port}").parse().unwrap() };
    let head = format!(
        "[{server}] DROP (NETFILTER_DROP) at INPUT filter/INPUT #1 [custom] in eth0: udp 10.224.7.2:40003 -> 10.224.7.1:9003 — "
    );
    traffic::send_udp_from(&client, src, to(9003), 5, PAYLOAD).unwrap();
    w.wait_for(Duration::from_secs(10), |w| {
        w.lines().iter().any(|l| l.starts_with(&head))
    })
    .unwrap();
    traffic::send_udp_from(&client, src, to(9003), 4, PAYLOAD).unwrap();
    let summary = format!("{head}9 packets (+4) [counters]");
    w.wait_for(Duration::from_secs(10), |w| w.lines().contains(&summary))
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.lines()));
    traffic::send_udp_from(&client, src, to(9004), 3, PAYLOAD).unwrap();
    let simulated = format!(
        "[{server}] DROP (NETFILTER_DROP) at INPUT inet early/input #1 [custom] in eth0: udp 10.224.7.2:40003 -> 10.224.7.1:9004 — 3 packets [simulated]"
    );
    w.wait_for(Duration::from_secs(10), |w| w.lines().contains(&simulated))
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.lines()));
    traffic::send_udp_from(&client, src, to(9005), 2, PAYLOAD).unwrap();
    let native_counted = format!(
        "[{server}] DROP (NETFILTER_DROP) at INPUT inet early/input #2 [custom] in eth0: udp 10.224.7.2:40003 -> 10.224.7.1:9005 — 2 packets [counters]"
    );
    w.wait_for(Duration::from_secs(10), |w| {
        w.lines().contains(&native_counted)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.lines()));
    let lines = w.stop_text().unwrap();
    let at = lines.iter().position(|l| *l == native_counted).unwrap();
    assert_eq!(lines[at + 1], "    rule: udp dport 9005 counter drop");
    assert!(
        lines[at + 3].contains("`nft delete rule inet early input handle ")
            && lines[at + 3].contains("`nft insert rule inet early input position "),
        "{lines:#?}"
    );

    // The first line of the site: its count then, with the detail lines.
    let first = lines.iter().position(|l| l.starts_with(&head)).unwrap();
    assert_eq!(
        lines[first],
        format!("{head}5 packets [counters]"),
        "{lines:#?}"
    );
    assert_eq!(
        lines[first + 1],
        "    rule: -A INPUT -p udp -m udp --dport 9003 -j DROP"
    );
    assert!(lines[first + 2].starts_with("    why:  "), "{lines:#?}");
    assert!(
        lines[first + 3].starts_with("    fix:  ") && lines[first + 3].contains("9003"),
        "{lines:#?}"
    );
    // The summary carries no detail lines.
    let at = lines.iter().position(|l| *l == summary).unwrap();
    assert!(!lines[at + 1].starts_with("    rule:"), "{lines:#?}");
    // The kernel's counters: the first rule counted its drops, the second
    // none (nftables' table dropped them first).
    assert_eq!(
        rule_packets(
            &server,
            "filter",
            "INPUT",
            Some("-A INPUT -p udp -m udp --dport 9003 -j DROP")
        ),
        9
    );
    assert_eq!(
        rule_packets(
            &server,
            "filter",
            "INPUT",
            Some("-A INPUT -p udp -m udp --dport 9004 -j DROP")
        ),
        0
    );
}
