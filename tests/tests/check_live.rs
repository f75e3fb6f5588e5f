//! `netdrop check --netns` on live rulesets installed with Debian's real
//! iptables binaries (nft and legacy backends side by side).

use std::process::Command;

use netdrop_tests::{Lab, check_json, netdrop_bin, require_root};

#[test]
fn live_findings_across_both_backends() {
    require_root!();
    let mut lab = Lab::new("chk");
    let node = lab.netns("node").unwrap();
    // Legacy: INPUT drops VXLAN; nft: FORWARD policy DROP. ip_forward stays 0.
    lab.exec(
        &node,
        &[
            "iptables-legacy",
            "-w",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            "8472",
            "-j",
            "DROP",
        ],
    )
    .unwrap();
    lab.exec(&node, &["iptables-nft", "-w", "-P", "FORWARD", "DROP"])
        .unwrap();
    // Native nftables: the kubelet's port dropped in INPUT.
    lab.exec(
        &node,
        &[
            "nft",
            "add table ip edge; add chain ip edge screen { type filter hook input priority 10; }; add rule ip edge screen tcp dport 10250 drop",
        ],
    )
    .unwrap();
    let before = (
        lab.exec(&node, &["iptables-legacy-save"]).unwrap().stdout,
        lab.exec(&node, &["iptables-nft-save"]).unwrap().stdout,
    );

    let (code, findings, _) = check_json(&node, &[]);
    assert_eq!(
        code,
        Some(3),
        "warning-or-worse findings give exit code 3: {findings:#?}"
    );
    let ids: Vec<&str> = findings.iter().map(|f| f["id"].as_str().unwrap()).collect();
    for want in [
        "input-blocks-vxlan",
        "input-blocks-kubelet",
        "forward-policy-drop",
        "sysctl-ip-forward",
        "iptables-legacy-nft-split",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    // In text, rule findings name the rule's owner; node settings name none.
    let text = Command::new(netdrop_bin())
        .args(["check", "--netns", &node, "--pod-cidr", "10.224.0.0/16"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines().any(|l| l == "CRITICAL sysctl-ip-forward"),
        "{text}"
    );
    // What was read, every backend side by side, and each finding's.
    assert_eq!(
        text.lines().next().unwrap_or_default(),
        "rules read: iptables-legacy: filter (1) · iptables-nft: filter (0) · nftables: ip edge (1)",
        "{text}"
    );
    let backend = |id: &str| {
        let f = findings.iter().find(|f| f["id"] == id).unwrap();
        f["backend"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(backend("input-blocks-vxlan"), "iptables-legacy");
    assert_eq!(backend("forward-policy-drop"), "iptables-nft");
    assert_eq!(backend("input-blocks-kubelet"), "nftables");
    assert!(
        text.contains("rule: ip edge/screen tcp dport 10250 drop [nftables]"),
        "{text}"
    );
    assert!(
        text.lines()
            // A node with no overlay device is only assumed to run
            // flannel's: its VXLAN finding is a warning.
            .any(|l| l.starts_with("WARNING input-blocks-vxlan [custom")),
        "{text}"
    );
    let vx = findings
        .iter()
        .find(|f| f["id"] == "input-blocks-vxlan")
        .unwrap();
    assert_eq!(vx["rule"], "-A INPUT -p udp -m udp --dport 8472 -j DROP");
    assert_eq!(vx["chain"], "INPUT");
    assert!(
        vx["fix"]
            .as_str()
            .unwrap()
            // The legacy backend's rule, on a node with both: plain
            // `iptables` would edit the nft one.
            .contains("`iptables-legacy -I INPUT 1 -s <other nodes' network> -p udp --dport 8472 -j ACCEPT`")
    );

    let strip = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let after = (
        lab.exec(&node, &["iptables-legacy-save"]).unwrap().stdout,
        lab.exec(&node, &["iptables-nft-save"]).unwrap().stdout,
    );
    assert_eq!(
        strip(&before.0),
        strip(&after.0),
        "check changed the legacy ruleset"
    );
    assert_eq!(
        strip(&before.1),
        strip(&after.1),
        "check changed the nft ruleset"
    );
}

#[test]
fn healthy_live_node_has_no_findings() {
    require_root!();
    let mut lab = Lab::new("chk");
    let node = lab.netns("ok").unwrap();
    lab.sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
    lab.iptables(
        &node,
        &["-A", "FORWARD", "-s", "10.224.0.0/16", "-j", "ACCEPT"],
    )
    .unwrap();
    let (code, findings, _) = check_json(&node, &[]);
    assert_eq!(code, Some(0), "{findings:#?}");
    assert!(findings.is_empty(), "{findings:#?}");
}

/// A native table of a CNI that is gone (here Calico's name, none of its
/// interfaces) drops pod traffic: `check` says leftover, its fix removes
/// the table, and the node is clean after it.
#[test]
fn a_leftover_native_cni_table_is_found_and_its_fix_works() {
    require_root!();
    let mut lab = Lab::new("chk");
    let node = lab.netns("lo").unwrap();
    lab.sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
    lab.exec(
        &node,
        &[
            "nft",
            "add table ip calico-filter; add chain ip calico-filter forwarding { type filter hook forward priority 0; }; add rule ip calico-filter forwarding ip daddr 10.224.0.0/16 drop",
        ],
    )
    .unwrap();
    let (code, findings, _) = check_json(&node, &[]);
    assert_eq!(code, Some(3), "{findings:#?}");
    let f = findings
        .iter()
        .find(|f| f["id"] == "leftover-cni-drops-pod-traffic")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(
        (&f["owner"], &f["leftover"], &f["table"], &f["backend"]),
        (
            &serde_json::json!("calico"),
            &serde_json::json!(true),
            &serde_json::json!("ip calico-filter"),
            &serde_json::json!("nftables")
        ),
        "{f}"
    );
    let fix = f["fix"].as_str().unwrap();
    let command = "nft delete table ip calico-filter";
    assert!(fix.contains(&format!("`{command}`")), "{fix}");
    let ran = lab
        .exec(&node, &command.split(' ').collect::<Vec<_>>())
        .unwrap();
    assert!(ran.status.success(), "{ran:?}");
    let (code, findings, _) = check_json(&node, &[]);
    assert_eq!(code, Some(0), "after the fix: {findings:#?}");
}

/// `check` probes the node it is given, not flannel's on every node: a
/// node with weave's bridge is probed through it and weave's overlay port;
/// flannel's port is none of its business. Without devices that name a
/// CNI, flannel's defaults, said as assumed.
#[test]
fn live_probes_follow_the_nodes_devices() {
    require_root!();
    let mut lab = Lab::new("shape");
    let node = lab.netns("node").unwrap();
    let check = |node: &str| {
        let out = Command::new(netdrop_bin())
            .args(["check", "--netns", node, "--pod-cidr", "10.32.0.0/12"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = check(&node);
    assert!(
        text.contains("probes: flannel node (assumed: flannel's defaults"),
        "{text}"
    );
    lab.bridge(&node, "weave", Some("10.32.0.1/12")).unwrap();
    let peer = lab.netns("peer").unwrap();
    lab.veth((&peer, "eth0", None), (&node, "ens3", None))
        .unwrap();
    for port in ["8472", "6784"] {
        lab.iptables(
            &node,
            &["-A", "INPUT", "-p", "udp", "--dport", port, "-j", "DROP"],
        )
        .unwrap();
    }
    let text = check(&node);
    assert!(
        text.contains("probes: Weave Net node (from the node's devices): pods on weave, other nodes' pods via weave, egress by ens3, overlay udp 6784 from other nodes"),
        "{text}"
    );
    assert!(
        text.contains("blocks: udp 192.0.2.2:51000 -> 192.0.2.1:6784 in ens3"),
        "{text}"
    );
    assert!(
        !text.contains(":8472"),
        "flannel's port is not this node's: {text}"
    );
}

/// What `netdrop check --netns NS ARGS` prints.
fn check_text(ns: &str, args: &[&str]) -> String {
    let out = Command::new(netdrop_bin())
        .args(["check", "--netns", ns])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Node `n` (1 or 2) of a two-node flannel cluster as its routes show it,
/// with no rule naming the pod CIDR: address 192.0.2.n on eth0 (the other
/// node beside it), its own pods' subnet 10.224.n.0/24 on cni0, the other
/// node's over flannel.1.
fn flannel_node(lab: &mut Lab, n: u8) -> String {
    let other = 3 - n;
    let node = lab.netns(&format!("node{n}")).unwrap();
    let peer = lab.netns(&format!("node{other}")).unwrap();
    lab.veth(
        (&peer, "eth0", Some(&format!("192.0.2.{other}/24"))),
        (&node, "eth0", Some(&format!("192.0.2.{n}/24"))),
    )
    .unwrap();
    let (gw, own) = (format!("192.0.2.{other}"), format!("192.0.2.{n}"));
    lab.ip(&node, &["route", "add", "default", "via", &gw])
        .unwrap();
    lab.flannel_vxlan(&node, &own, None).unwrap();
    lab.ip(
        &node,
        &[
            "addr",
            "add",
            &format!("10.224.{n}.0/32"),
            "dev",
            "flannel.1",
        ],
    )
    .unwrap();
    lab.bridge(&node, "cni0", Some(&format!("10.224.{n}.1/24")))
        .unwrap();
    let (subnet, via) = (format!("10.224.{other}.0/24"), format!("10.224.{other}.0"));
    lab.ip(
        &node,
        &[
            "route",
            "add",
            &subnet,
            "via",
            &via,
            "dev",
            "flannel.1",
            "onlink",
        ],
    )
    .unwrap();
    node
}

/// [`flannel_node`] 1 with FORWARD's policy DROP.
fn routed_flannel_node(lab: &mut Lab) -> String {
    let node = flannel_node(lab, 1);
    lab.iptables(&node, &["-P", "FORWARD", "DROP"]).unwrap();
    node
}

/// Without `--pod-cidr`, a live node's routes say where pods are: flannel
/// routes each other node's pod subnet over flannel.1 and its own on cni0;
/// `check` probes the network that holds them, and says so.
#[test]
fn live_pod_cidr_from_the_nodes_routes() {
    require_root!();
    let mut lab = Lab::new("rts");
    let node = routed_flannel_node(&mut lab);
    let text = check_text(&node, &[]);
    assert!(
        text.contains("pod CIDR 10.224.0.0/22 (holds the pod subnets the node routes on its overlay and pod devices"),
        "{text}"
    );
    assert!(
        text.contains("probes: flannel node (from the node's devices): pods on cni0, other nodes' pods via flannel.1, egress by eth0"),
        "{text}"
    );
    assert!(text.contains("CRITICAL forward-policy-drop"), "{text}");
    assert!(
        text.contains("blocks: tcp 10.224.2.2:40000 -> 10.224.1.2:80 in flannel.1 out cni0"),
        "{text}"
    );
}

/// `watch` without `--pod-cidr` infers the pod CIDR as `check` does (one
/// function) and reports the same findings of the node (it once skipped
/// them all). Positive control: `check` finds them first.
#[test]
fn watch_without_a_pod_cidr_finds_what_check_finds() {
    require_root!();
    let mut lab = Lab::new("wpc");
    let node = routed_flannel_node(&mut lab);
    let out = Command::new(netdrop_bin())
        .args(["check", "--netns", &node, "--output", "json"])
        .output()
        .unwrap();
    let ids = |records: &[serde_json::Value], id: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = records
            .iter()
            .filter(|r| matches!(r["severity"].as_str(), Some("warning" | "critical")))
            .map(|r| {
                (
                    r[id].as_str().unwrap_or_default().to_owned(),
                    r["chain"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let checked: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let from_check = ids(&checked, "id");
    assert!(
        from_check.contains(&("forward-policy-drop".into(), "FORWARD".into())),
        "{checked:#?}"
    );
    let mut w = netdrop_tests::Watch::start(&["--netns", &node, "--no-observers"]).unwrap();
    let findings = |w: &netdrop_tests::Watch| {
        let r: Vec<_> = w
            .records()
            .into_iter()
            .filter(|r| r["kind"] == "finding")
            .collect();
        ids(&r, "finding")
    };
    w.wait_for(std::time::Duration::from_secs(10), |w| {
        findings(w).len() >= from_check.len()
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let said = w.stderr();
    assert_eq!(findings(&w), from_check, "{said}");
    assert!(said.contains("pod CIDR 10.224.0.0/22"), "{said}");
    w.stop().unwrap();
}

/// On a cluster's second node (192.0.2.2; its pods 10.224.2.0/24 on cni0,
/// the first node's 10.224.1.0/24 over flannel.1) the probes run the way
/// its traffic does: VXLAN from the peer to this node, the other node's
/// pods in over flannel.1 to this node's. Rules that match those addresses
/// find them. (The probes once ran from this node to the first and from
/// this node's own subnet in over flannel.1: neither rule matched, and
/// `check` said nothing.)
#[test]
fn live_probes_run_between_the_nodes_own_addresses_and_its_peers() {
    require_root!();
    let mut lab = Lab::new("n2");
    let node = flannel_node(&mut lab, 2);
    lab.sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
    let vxlan_from_node1 = [
        "-A",
        "INPUT",
        "-s",
        "192.0.2.1",
        "-p",
        "udp",
        "--dport",
        "8472",
        "-j",
        "DROP",
    ];
    let node1s_pods = [
        "-A",
        "FORWARD",
        "-i",
        "flannel.1",
        "-s",
        "10.224.1.0/24",
        "-d",
        "10.224.2.0/24",
        "-j",
        "DROP",
    ];
    lab.iptables(&node, &vxlan_from_node1).unwrap();
    lab.iptables(&node, &node1s_pods).unwrap();
    let text = check_text(&node, &["--pod-cidr", "10.224.0.0/16"]);
    assert!(
        text.contains("blocks: udp 192.0.2.1:51000 -> 192.0.2.2:8472 in eth0"),
        "{text}"
    );
    assert!(
        text.contains("blocks: tcp 10.224.1.2:40000 -> 10.224.2.2:80 in flannel.1 out cni0"),
        "{text}"
    );
    assert!(!text.contains("-> 192.0.2.1:8472"), "{text}");
}

/// A rule nft adds to iptables-nft's own `filter` table with a set
/// (`ip saddr { 192.0.2.7, 192.0.2.8 } drop`) is printed by
/// iptables-nft-save 1.8.9 as `-A INPUT -j DROP`: a drop of everything.
/// netdrop reads the table over netlink too and marks that rule
/// unmodelled with the match the kernel runs: `explain` says the packet's
/// end depends on it, and `check`'s findings on it are warnings that say
/// unmodelled, never a confident critical drop. (Read as printed before:
/// DROP, and the VXLAN probe critical.)
#[test]
fn a_rule_iptables_nft_save_prints_without_its_set_is_not_read_as_printed() {
    require_root!();
    let mut lab = Lab::new("lossy");
    let node = lab.netns("n").unwrap();
    lab.iptables(
        &node,
        &["-A", "INPUT", "-p", "udp", "--dport", "9000", "-j", "DROP"],
    )
    .unwrap();
    lab.exec(
        &node,
        &[
            "nft",
            "add rule ip filter INPUT ip saddr { 192.0.2.7, 192.0.2.8 } drop",
        ],
    )
    .unwrap();
    // Positive control: the trap is there.
    let saved = lab
        .exec(&node, &["iptables-nft-save", "-t", "filter"])
        .unwrap();
    let saved = String::from_utf8_lossy(&saved.stdout);
    assert!(saved.lines().any(|l| l == "-A INPUT -j DROP"), "{saved}");

    let out = Command::new(netdrop_bin())
        .args([
            "explain",
            "--netns",
            &node,
            "--pod-cidr",
            "10.224.0.0/16",
            "--output",
            "json",
        ])
        .args(["--packet", "INPUT udp 10.224.1.2:1000 -> 10.224.0.1:9001"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["verdict"], "DEPENDS", "{v}");
    assert!(
        v["depends_on"]
            .to_string()
            .contains("ip saddr { 192.0.2.7, 192.0.2.8 }"),
        "{v}"
    );
    let (_, findings, text) = check_json(&node, &[]);
    let vxlan = findings
        .iter()
        .find(|f| f["id"] == "input-blocks-vxlan")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(vxlan["severity"], "warning", "{vxlan}");
    assert_eq!(vxlan["unmodelled"], true, "{vxlan}");
}

/// A table iptables-nft-save cannot print whole (a base chain nft added
/// at another priority: what a newer iptables-nft or nft itself leaves in
/// iptables' tables) is read over netlink as nftables, not taken from the
/// partial print: a drop by the chain the print leaves out is named, with
/// an nft fix. (Before: the print alone, a confident ACCEPT, and silence.)
#[test]
fn a_table_iptables_nft_save_cannot_print_whole_is_read_over_netlink() {
    require_root!();
    let mut lab = Lab::new("skew");
    let (peer, node) = netdrop_tests::peer_and_node(&mut lab);
    lab.iptables(
        &node,
        &[
            "-A", "INPUT", "-p", "udp", "--dport", "8472", "-j", "ACCEPT",
        ],
    )
    .unwrap();
    for cmd in [
        "add chain ip filter extra { type filter hook input priority 5; }",
        "add rule ip filter extra udp dport 9999 counter drop",
    ] {
        lab.exec(&node, &["nft", cmd]).unwrap();
    }
    // Positive controls: iptables-nft-save leaves the chain out, saying
    // so in a comment; and the kernel drops a real packet there.
    let saved = lab.exec(&node, &["iptables-nft-save"]).unwrap();
    let saved = String::from_utf8_lossy(&saved.stdout);
    assert!(
        saved.contains("incompatible") && !saved.contains("9999"),
        "{saved}"
    );
    netdrop::lab::traffic::send_udp(&peer, "192.0.2.1:9999".parse().unwrap(), 3, 8).unwrap();
    let listed = lab
        .exec(&node, &["nft", "list", "chain", "ip", "filter", "extra"])
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("counter packets 3 "),
        "the kernel dropped them there: {listed}"
    );

    let out = Command::new(netdrop_bin())
        .args(["explain", "--netns", &node, "--output", "json"])
        .args(["--packet", "INPUT udp 192.0.2.2:1000 -> 192.0.2.1:9999"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["verdict"], "DROP", "{v}");
    let d = &v["drops"][0];
    assert_eq!(
        (d["table"].as_str(), d["chain"].as_str()),
        (Some("ip filter"), Some("extra")),
        "{d}"
    );
    assert!(
        d["fix"].as_str().unwrap_or_default().contains("`nft "),
        "{d}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot print table ip filter whole"),
        "said once: {stderr}"
    );
    // What iptables-nft-save did print still holds: VXLAN passes.
    let out = Command::new(netdrop_bin())
        .args(["explain", "--netns", &node, "--output", "json"])
        .args(["--packet", "INPUT udp 192.0.2.2:1000 -> 192.0.2.1:8472"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "ACCEPT", "{v}");
}

/// `check`'s probes on a Cilium node, a plain bridge CNI's and a Docker
/// host's, by their devices (made here with the names each gives them): the device
/// pods hang off, how other nodes' pods arrive, and no overlay port where
/// there is no UDP overlay.
#[test]
fn live_probes_for_cilium_a_plain_bridge_and_docker0() {
    require_root!();
    let mut lab = Lab::new("shp");
    // Bridges all (this kernel has no dummy links): only the names count.
    // (namespace, its devices and their kinds, the probes line).
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
    );
    let cases: [Case; 3] = [
        (
            "cil",
            &[
                ("ens3", "bridge"),
                ("cilium_host", "bridge"),
                ("cilium_vxlan", "bridge"),
                ("lxc1a2b3c", "bridge"),
            ],
            "probes: Cilium node (from the node's devices): pods on lxc1a2b3c, other nodes' pods via cilium_vxlan, egress by ens3, overlay udp 8472 from other nodes",
        ),
        (
            "cbr",
            &[("eth0", "bridge"), ("cbr0", "bridge")],
            "probes: a CNI plugin (bridge, portmap or firewall) node (from the node's devices): pods on cbr0, other nodes' pods routed over eth0, egress by eth0, no UDP overlay port",
        ),
        (
            "dkr",
            &[("eth0", "bridge"), ("docker0", "bridge")],
            "probes: Docker node (from the node's devices): pods on docker0, other nodes' pods routed over eth0, egress by eth0, no UDP overlay port",
        ),
    ];
    for (name, links, want) in cases {
        let node = lab.netns(name).unwrap();
        for (link, kind) in links {
            lab.ip(&node, &["link", "add", link, "type", kind]).unwrap();
        }
        let text = check_text(&node, &["--pod-cidr", "10.224.0.0/16"]);
        assert!(text.contains(want), "{name}: {text}");
    }
}
