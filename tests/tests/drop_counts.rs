//! The first kernel path end to end: real programs in this kernel, real
//! packets between namespaces, a real iptables DROP; netdrop must count
//! exactly the packets the rule dropped, in the right namespace and hook.

use std::{net::SocketAddr, time::Duration};

use netdrop_tests::{Lab, Watch, drop_pair, field, require_root, total_packets, traffic};

/// Counts N drops through `netdrop watch ARGS`; returns what it said on
/// stderr (which drop probe it attached).
fn counts_exactly_n(args: &[&str]) -> String {
    const N: u64 = 37;
    let mut lab = Lab::new("cnt");
    let (client, server) = drop_pair(&mut lab, 9999);
    let rules_before = lab.iptables_save(&server).unwrap();

    let mut watch = Watch::start(&[&["--netns", &server], args].concat()).unwrap();
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
    let said = watch.stderr();
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
    said
}

#[test]
fn tp_btf_counts_exactly_the_dropped_packets() {
    require_root!();
    let said = counts_exactly_n(&[]);
    assert!(said.contains("(drop probe tp_btf)"), "{said}");
}

/// The build for kernels that cannot cast to `void` (probe reads of the
/// route and packet), forced here so that it is tested on this kernel.
#[test]
fn tp_btf_probe_read_counts_exactly_the_dropped_packets() {
    require_root!();
    let said = counts_exactly_n(&["--drop-probe", "tp-btf-probe-read"]);
    assert!(said.contains("(drop probe tp_btf_probe_read)"), "{said}");
}

/// The plain tracepoint is the fallback where tp_btf cannot attach; forced
/// here so that the path is tested on this kernel.
#[test]
fn tracepoint_fallback_counts_exactly_the_dropped_packets() {
    require_root!();
    let said = counts_exactly_n(&["--drop-probe", "tracepoint"]);
    assert!(said.contains("(drop probe tracepoint)"), "{said}");
}

/// A kernel without `BPF_FEAT_RDONLY_CAST_TO_VOID` (older kernels), shown
/// to netdrop as this kernel's BTF with that enumerator renamed: `auto`
/// picks the probe-read build and counts right; `tp-btf` says what to use.
#[test]
fn a_kernel_that_cannot_cast_gets_the_probe_read_build() {
    require_root!();
    let mut btf = std::fs::read("/sys/kernel/btf/vmlinux").unwrap();
    let name = b"BPF_FEAT_RDONLY_CAST_TO_VOID\0";
    let at = btf
        .windows(name.len())
        .position(|w| w == name)
        .expect("this kernel's BTF names BPF_FEAT_RDONLY_CAST_TO_VOID");
    btf[at + name.len() - 2] = b'X';
    let file = netdrop_tests::TempPath::bytes("vmlinux-no-cast", &btf);
    let path = file.path();

    let said = counts_exactly_n(&["--btf", path]);
    assert!(said.contains("(drop probe tp_btf_probe_read)"), "{said}");

    let out = std::process::Command::new(netdrop_tests::netdrop_bin())
        .args([
            "watch",
            "--btf",
            path,
            "--drop-probe",
            "tp-btf",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot cast") && err.contains("--drop-probe tp-btf-probe-read"),
        "{err}"
    );
}

/// A kernel where `tp_btf` cannot attach (no BTF type for the kfree_skb
/// tracepoint, shown to netdrop as this kernel's BTF with that type
/// renamed): `auto` tries both tp_btf builds, says why each failed, and
/// counts right through the plain tracepoint.
#[test]
fn a_kernel_without_tp_btf_falls_back_to_the_tracepoint() {
    require_root!();
    let mut btf = std::fs::read("/sys/kernel/btf/vmlinux").unwrap();
    let name = b"btf_trace_kfree_skb\0";
    let at = btf
        .windows(name.len())
        .position(|w| w == name)
        .expect("this kernel's BTF names btf_trace_kfree_skb");
    btf[at] = b'x';
    let file = netdrop_tests::TempPath::bytes("vmlinux-no-tp", &btf);
    let said = counts_exactly_n(&["--btf", file.path()]);
    assert!(said.contains("(drop probe tracepoint)"), "{said}");
    for (tried, next) in [
        ("tp_btf", "tp_btf_probe_read"),
        ("tp_btf_probe_read", "tracepoint"),
    ] {
        assert!(
            said.contains(&format!("drop probe {tried} unavailable ("))
                && said.contains(&format!("; trying {next}")),
            "{said}"
        );
    }
}

#[test]
fn sigkill_leaves_no_program_behind() {
    require_root!();
    // A node with an underlay device, so the TC observers attach too
    // (tcx links on eth0) beside the drop probe.
    let mut lab = Lab::new("kill");
    let (_client, node) = drop_pair(&mut lab, 9997);
    let mut watch = Watch::start(&[
        "--netns",
        &node,
        "--pod-cidr",
        "10.224.0.0/16",
        "--underlay-iface",
        "eth0",
    ])
    .unwrap();
    const PROGRAMS: [&str; 3] = [
        "netdrop_kfree_skb_btf",
        "netdrop_tc_ingress",
        "netdrop_tc_egress",
    ];
    // Positive control: this watch's own links, by the kernel's record.
    let linked = watch.linked().unwrap();
    for p in PROGRAMS {
        assert!(
            linked.iter().any(|n| n == p),
            "{p} is attached through a link while watching: {linked:?}"
        );
    }
    let held = watch.held().unwrap();
    watch.kill(); // SIGKILL: no chance to detach by hand.
    // A link left behind would keep its program loaded.
    netdrop_tests::wait_unloaded(&held, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("after SIGKILL: {e:#}"));
}

/// Ctrl-C stops a watch whenever it comes, also in the middle of a poll
/// (here polls run back to back, so most signals land inside one). A
/// handler made afresh per loop turn missed about one in five.
#[test]
fn every_ctrl_c_stops_a_busy_watch() {
    require_root!();
    for round in 0..10 {
        let w = Watch::start(&["--all", "--interval", "1ms"]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let status = w
            .interrupt(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        assert!(status.success(), "round {round}: {status}");
    }
}

/// `--sample-rate 1` under a burst: the token bucket holds samples back.
/// Counts stay exact all the same, and watch says what it held back, in
/// its status line and in `netdrop_samples_suppressed_total`.
#[test]
fn samples_held_back_leave_counts_exact_and_are_said() {
    require_root!();
    const N: u64 = 300;
    let mut lab = Lab::new("sup");
    let (client, server) = drop_pair(&mut lab, 9998);
    let mut watch = Watch::start(&[
        "--netns",
        &server,
        "--pod-cidr",
        "10.224.0.0/16",
        "--sample-rate",
        "1",
        "--no-observers",
    ])
    .unwrap();
    traffic::send_udp(&client, "10.224.7.1:9998".parse().unwrap(), N, 100).unwrap();
    let is_ours = |r: &serde_json::Value| {
        field(r, "node") == server && field(r, "reason") == "NETFILTER_DROP"
    };
    watch
        .wait_for(Duration::from_secs(10), |w| {
            total_packets(&w.records(), is_ours) >= N
        })
        .unwrap();
    let addr = watch.metrics_addr().unwrap();
    let suppressed: u64 = netdrop_tests::prom::try_get(&addr, "/metrics")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("netdrop_samples_suppressed_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("netdrop_samples_suppressed_total");
    std::thread::sleep(Duration::from_millis(600));
    let said = watch.stderr();
    let records = watch.stop().unwrap();
    assert_eq!(total_packets(&records, is_ours), N, "{records:#?}");
    assert!(
        suppressed > 0 && suppressed < N,
        "samples held back: {suppressed}"
    );
    assert!(
        said.contains("drop samples held back by --sample-rate (counts stay exact)"),
        "{said}"
    );
}

/// `--max-site-series 1` on a node dropping at two rules: the first keeps
/// its own series, the second is counted (exactly) in the node's `other`
/// series, and watch says so once, as a `drop-sites-capped` finding; both
/// sites still get their own records.
#[test]
fn drop_sites_beyond_the_series_cap_are_counted_in_other_and_said() {
    require_root!();
    let mut lab = Lab::new("cap");
    let (client, server) = drop_pair(&mut lab, 9000);
    // The second site in a chain of its own (series are per chain, not
    // per rule).
    lab.iptables_all(
        &server,
        &[
            &["-N", "BLOCK"],
            &["-A", "BLOCK", "-j", "DROP"],
            &["-A", "INPUT", "-p", "udp", "--dport", "9001", "-j", "BLOCK"],
        ],
    )
    .unwrap();
    let mut w = Watch::start(&[
        "--netns",
        &server,
        "--pod-cidr",
        "10.224.0.0/16",
        "--max-site-series",
        "1",
    ])
    .unwrap();
    traffic::send_udp(&client, "10.224.7.1:9000".parse().unwrap(), 3, 40).unwrap();
    let first = |w: &Watch| {
        w.metric(
            "netdrop_drops_total",
            &[("node", &server), ("chain", "INPUT")],
        )
    };
    w.wait_for(Duration::from_secs(10), |w| first(w) == Some(3))
        .unwrap_or_else(|e| panic!("{e:#}"));
    traffic::send_udp(&client, "10.224.7.1:9001".parse().unwrap(), 5, 40).unwrap();
    let other = |w: &Watch| {
        w.metric(
            "netdrop_drops_total",
            &[("node", &server), ("chain", "other"), ("owner", "other")],
        )
    };
    w.wait_for(Duration::from_secs(10), |w| other(w) == Some(5))
        .unwrap_or_else(|e| panic!("{e:#}: {:?}", other(&w)));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(first(&w), Some(3));
    assert_eq!(other(&w), Some(5));
    assert_eq!(
        w.metric("netdrop_drop_sites_capped", &[("node", &server)]),
        Some(1)
    );
    // /explanations still names every site, the capped one too.
    let explained: Vec<serde_json::Value> = serde_json::from_str(&netdrop_tests::prom::http_get(
        &w.metrics_addr().unwrap(),
        "/explanations",
    ))
    .unwrap();
    for (rule, packets) in [
        ("-A INPUT -p udp -m udp --dport 9000 -j DROP", 3),
        ("-A BLOCK -j DROP", 5),
    ] {
        let site = explained
            .iter()
            .find(|r| field(r, "rule") == rule)
            .unwrap_or_else(|| panic!("{rule} not in /explanations: {explained:#?}"));
        assert_eq!(site["packets"], packets, "{site}");
        assert!(!field(site, "fix").is_empty(), "{site}");
    }
    let records = w.stop().unwrap();
    let capped: Vec<_> = records
        .iter()
        .filter(|r| field(r, "finding") == "drop-sites-capped")
        .collect();
    assert_eq!(capped.len(), 1, "{records:#?}");
    assert!(
        field(capped[0], "fix").contains("--max-site-series"),
        "{}",
        capped[0]
    );
    for rule in [
        "-A INPUT -p udp -m udp --dport 9000 -j DROP",
        "-A BLOCK -j DROP",
    ] {
        assert!(
            records.iter().any(|r| field(r, "rule") == rule),
            "{rule}: {records:#?}"
        );
    }
}

/// The kernel's drop-site map full (the lab shrinks it to one site with
/// `NETDROP_LAB_DROP_SITES`; a hundred sites overflow the per-CPU cache in
/// front of it): drops of sites that find no room cannot be counted at a
/// site. They are counted as such — `netdrop_drops_uncounted_total` and the
/// status line — and what was counted plus what was not is exactly what
/// the rule's own counter says (the kernel's, read with iptables-save).
#[test]
fn drops_beyond_a_full_site_map_are_counted_as_uncounted_and_said() {
    require_root!();
    let mut lab = Lab::new("full");
    let (client, server) = drop_pair(&mut lab, 9997);
    let rule = "-A INPUT -s 10.224.7.2/32 -j DROP";
    lab.iptables(&server, &["-I", "INPUT", "-s", "10.224.7.2", "-j", "DROP"])
        .unwrap();
    let mut watch = Watch::start_env(
        &[("NETDROP_LAB_DROP_SITES", "1")],
        &[
            "--netns",
            &server,
            "--pod-cidr",
            "10.224.0.0/16",
            "--no-observers",
            // Each poll drains the map: the three sites must meet in one.
            "--interval",
            "8s",
        ],
    )
    .unwrap();
    // A drop site per IP protocol: 100 of them, far more than the
    // per-CPU site cache holds without collisions, and the map holds one.
    traffic::send_ip_protocols(&client, "10.224.7.1".parse().unwrap(), 143..=242).unwrap();
    let dropped = netdrop_tests::rule_packets(&server, "filter", "INPUT", Some(rule));
    assert_eq!(dropped, 100, "the kernel dropped them");
    let uncounted = |w: &Watch| w.metric("netdrop_drops_uncounted_total", &[]).unwrap_or(0);
    let is_ours = |r: &serde_json::Value| field(r, "node") == server;
    watch
        .wait_for(Duration::from_secs(30), |w| {
            total_packets(&w.records(), is_ours) + uncounted(w) >= dropped
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", watch.records()));
    let lost = uncounted(&watch);
    let records = watch.stop_with_stderr().unwrap();
    let counted = total_packets(&records.0, is_ours);
    assert!(lost > 0, "the third site found the map full: {records:#?}");
    assert_eq!(counted + lost, dropped, "{records:#?}");
    assert!(
        records
            .1
            .contains("drops not counted at any site (the site map is full"),
        "{}",
        records.1
    );
}

/// Samples lost in the kernel (the lab shrinks the sample ring buffer to
/// one page with `NETDROP_LAB_SAMPLE_RING`, ~26 samples; `--sample-rate`
/// lets a burst sample nearly every drop, and the drain waits 8 s): lost
/// samples are counted (`netdrop_samples_lost_total`) and said in the
/// status line, and the drops themselves stay counted exactly — the rule's
/// own counter says how many.
#[test]
fn samples_lost_in_a_full_ring_buffer_are_counted_and_the_drops_stay_exact() {
    require_root!();
    let mut lab = Lab::new("ring");
    let (client, server) = drop_pair(&mut lab, 9996);
    let mut watch = Watch::start_env(
        &[("NETDROP_LAB_SAMPLE_RING", "4096")],
        &[
            "--netns",
            &server,
            "--pod-cidr",
            "10.224.0.0/16",
            "--no-observers",
            "--sample-rate",
            "1000000",
            "--interval",
            "8s",
        ],
    )
    .unwrap();
    let rule = "-A INPUT -p udp -m udp --dport 9996 -j DROP";
    let before = netdrop_tests::rule_packets(&server, "filter", "INPUT", Some(rule));
    traffic::send_udp(&client, "10.224.7.1:9996".parse().unwrap(), 2000, 8).unwrap();
    let dropped = netdrop_tests::rule_packets(&server, "filter", "INPUT", Some(rule)) - before;
    assert_eq!(dropped, 2000, "the kernel dropped them");
    let lost = |w: &Watch| w.metric("netdrop_samples_lost_total", &[]).unwrap_or(0);
    let is_ours = |r: &serde_json::Value| field(r, "node") == server;
    watch
        .wait_for(Duration::from_secs(30), |w| {
            total_packets(&w.records(), is_ours) >= dropped && lost(w) > 0
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}\n{}", watch.records(), watch.stderr()));
    let lost_now = lost(&watch);
    let (records, stderr) = watch.stop_with_stderr().unwrap();
    assert_eq!(
        total_packets(&records, is_ours),
        dropped,
        "counts stay exact: {records:#?}"
    );
    // Most of the burst could not fit one page.
    assert!(lost_now > 1000, "{lost_now} lost");
    assert!(
        stderr.contains("drop samples lost (ring buffer full"),
        "{stderr}"
    );
}
