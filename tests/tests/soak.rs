//! A node that lives, for a while: a watch under everything at once — a
//! flood of pod packets dropped by a rule, kube-proxy-like churn (its KUBE-*
//! chains restored every 2 s), `flannel.1` and `cni0` deleted and made
//! again, a second node namespace removed and re-added, Prometheus scraping
//! throughout. At the end: netdrop's count of the dropping rule equals the
//! rule's own iptables counter, its memory stayed flat after warm-up, the
//! observers are back on every recreated device, and nothing of netdrop is
//! attached after SIGTERM (or SIGKILL).
//!
//! `NETDROP_SOAK_SECONDS` (default 45) and `NETDROP_SOAK_SERVICES` (default
//! 1000) size it; `cargo xtask bench` runs it for 10 minutes at 10,000
//! Services and reports its summary line (`soak:` on stdout).

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use netdrop_model::generate;
use netdrop_tests::{
    Lab, Watch, field, links_holding, prom::Prometheus, require_root, rule_packets, traffic,
};

const DROP_RULE: &str = "-A INPUT -p udp -m udp --dport 9000 -j DROP";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Only kube-proxy's own chains of a generated ruleset, for
/// `iptables-restore --noflush`: each KUBE-* chain is flushed and filled
/// again, as kube-proxy's syncs do; the rest of the tables is left alone.
fn kube_chains_only(full: &str) -> String {
    full.lines()
        .filter(|l| {
            l.starts_with('*')
                || *l == "COMMIT"
                || l.starts_with(":KUBE-")
                || l.starts_with("-A KUBE-")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn restore(ns: &str, text: &str, noflush: bool) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "iptables-nft-restore"]);
    if noflush {
        cmd.arg("--noflush");
    }
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "iptables-nft-restore");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// cni0 made again, with the pod's port and the node's pod gateway
/// address (what the bridge plugin does at the next pod).
fn make_bridge(lab: &Lab, node: &str) {
    lab.bridge(node, "cni0", Some("10.224.9.1/24")).unwrap();
    lab.ip(node, &["link", "set", "veth-pod", "master", "cni0"])
        .unwrap();
}

fn make_flannel(lab: &Lab, node: &str) {
    lab.ip(
        node,
        &[
            "link",
            "add",
            "flannel.1",
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            "192.0.2.1",
            "dev",
            "eth0",
            "dstport",
            "8472",
            "nolearning",
        ],
    )
    .unwrap();
    lab.ip(node, &["link", "set", "flannel.1", "up"]).unwrap();
}

#[test]
fn a_living_node_under_load_churn_and_device_changes() {
    require_root!();
    let seconds = env_or("NETDROP_SOAK_SECONDS", 45);
    let services = env_or("NETDROP_SOAK_SERVICES", 1000) as usize;
    let mut lab = Lab::new("soak");
    let node = lab.netns("node").unwrap();
    let peer = lab.netns("peer").unwrap();
    let pod = lab.netns("pod").unwrap();
    let other = lab.netns("other").unwrap();
    lab.veth(
        (&node, "eth0", Some("192.0.2.1/24")),
        (&peer, "eth0", Some("192.0.2.2/24")),
    )
    .unwrap();
    make_flannel(&lab, &node);
    lab.bridge(&node, "cni0", Some("10.224.9.1/24")).unwrap();
    lab.bridge_port((&node, "cni0", "veth-pod"), (&pod, "10.224.9.2/24"))
        .unwrap();
    // kube-proxy's ruleset, then the rule that drops the flood.
    let full = generate::kube_proxy_ruleset(services, 3);
    let churn = [
        kube_chains_only(&full),
        kube_chains_only(&generate::kube_proxy_ruleset(services + 1, 3)),
    ];
    restore(&node, &full, false);
    lab.iptables(
        &node,
        &["-A", "INPUT", "-p", "udp", "--dport", "9000", "-j", "DROP"],
    )
    .unwrap();

    let w = Watch::start(&[
        "--netns",
        &node,
        "--netns",
        &other,
        "--pod-cidr",
        "10.224.0.0/16",
    ])
    .unwrap();
    let prom = Prometheus::start(&[&w.metrics_addr().unwrap()]);

    // The flood: batches of UDP from the pod to the node's port 9000, as
    // long as the soak runs (a batch sent while cni0 is being remade is
    // lost on the way, never counted as this rule's).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent, pod) = (stop.clone(), sent.clone(), pod.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if traffic::send_udp(&pod, "10.224.9.1:9000".parse().unwrap(), 200, 64).is_ok() {
                    sent.fetch_add(200, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    // Resident memory every half second: its median over the second
    // quarter (after warm-up) against its median over the last quarter. A
    // leak moves the median; one sample caught in the middle of a 2 s
    // restore's re-read does not.
    let mut rss_samples: Vec<(Duration, u64)> = Vec::new();
    let (mut restores, mut flannel_remade, mut cni0_remade) = (0, 0, 0);
    let (mut ns_removed, mut ns_readded) = (0, 0);
    let mut last_churn = Instant::now();
    let mut tick = 0u64;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500));
        tick += 1;
        if last_churn.elapsed() >= Duration::from_secs(2) {
            restore(&node, &churn[restores % 2], true);
            restores += 1;
            last_churn = Instant::now();
        }
        // Every 10 s one of: flannel.1 remade, cni0 remade, the other
        // node's namespace removed (and re-added 5 s later).
        match tick % 60 {
            20 => {
                lab.ip(&node, &["link", "del", "flannel.1"]).unwrap();
                make_flannel(&lab, &node);
                flannel_remade += 1;
            }
            40 => {
                lab.ip(&node, &["link", "del", "cni0"]).unwrap();
                make_bridge(&lab, &node);
                cni0_remade += 1;
            }
            50 => {
                netdrop::lab::run("ip", &["netns", "del", &other]).unwrap();
                ns_removed += 1;
            }
            0 if ns_removed > ns_readded => {
                netdrop::lab::run("ip", &["netns", "add", &other]).unwrap();
                ns_readded += 1;
            }
            _ => {}
        }
        rss_samples.push((start.elapsed(), rss_kib(w.pid())));
    }
    let quarter = Duration::from_secs(seconds) / 4;
    let median_in = |from: Duration, to: Duration| {
        let mut v: Vec<u64> = rss_samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, kib)| *kib)
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let warm_rss = median_in(quarter, 2 * quarter);
    let late_rss = median_in(3 * quarter, 4 * quarter + Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    // The last drops counted.
    std::thread::sleep(Duration::from_secs(2));
    let counter = rule_packets(&node, "filter", "INPUT", Some(DROP_RULE));
    let metric = w
        .metric(
            "netdrop_drops_total",
            &[("node", &node), ("chain", "INPUT"), ("verdict", "DROP")],
        )
        .unwrap_or(0);
    let observed: Vec<Option<u64>> = [
        ("flannel.1", "overlay"),
        ("cni0", "bridge"),
        ("eth0", "underlay"),
    ]
    .iter()
    .map(|(iface, role)| {
        w.metric(
            "netdrop_observed_devices",
            &[("iface", iface), ("role", role)],
        )
    })
    .collect();
    // Every scrape of the soak succeeded.
    let up = prom
        .value(&format!("min_over_time(up[{seconds}s])"))
        .unwrap_or_default();
    let said = w.stderr();
    // Stopped with SIGTERM: the last summaries are printed.
    let records = w.stop().unwrap();
    // Every record of the rule says how many drops it adds (a site made
    // anew with cni0, a new ifindex, starts its own count).
    let counted: u64 = records
        .iter()
        .filter(|r| {
            field(r, "kind") == "drop" && field(r, "node") == node && field(r, "rule") == DROP_RULE
        })
        .filter_map(|r| r["new_packets"].as_u64())
        .sum();
    let summary = format!(
        "soak: {seconds} s, {services} Services, {restores} restores, flannel.1 remade {flannel_remade}×, cni0 {cni0_remade}×, namespace removed {ns_removed}× and re-added {ns_readded}×; {} packets sent, rule counter {counter}, netdrop's records {counted} and metric {metric}; RSS (median) after warm-up {:.0} MiB, in the last quarter {:.0} MiB",
        sent.load(Ordering::Relaxed),
        warm_rss as f64 / 1024.0,
        late_rss as f64 / 1024.0
    );
    println!("{summary}");
    assert!(counter > 0, "{summary}");
    assert_eq!(metric, counter, "{summary}");
    assert_eq!(counted, counter, "{summary}\n{said}");
    assert!(
        late_rss <= warm_rss + warm_rss / 10,
        "memory grew: {summary}"
    );
    // Remade within a check: "recreated"; across two: "gone", then
    // "appeared".
    for (dev, n) in [("flannel.1", flannel_remade), ("cni0", cni0_remade)] {
        let followed = said.matches(&format!("{dev} recreated")).count()
            + said.matches(&format!("{dev} appeared")).count();
        assert_eq!(followed, n, "{dev}: {said}");
    }
    assert_eq!(said.matches("namespace gone").count(), ns_removed, "{said}");
    assert_eq!(
        said.matches("namespace appeared").count(),
        ns_readded,
        "{said}"
    );
    assert_eq!(
        observed,
        [Some(1); 3],
        "observers on flannel.1, cni0, eth0: {said}"
    );
    assert_eq!(up, 1.0, "a scrape failed");
    for prog in [
        "netdrop_tc_ingress",
        "netdrop_tc_egress",
        "netdrop_kfree_skb_btf",
    ] {
        assert_eq!(
            links_holding(prog),
            0,
            "{prog} still attached after SIGTERM"
        );
    }
    drop(prom);
}
