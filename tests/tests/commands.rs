//! `netdrop check --rules` and `netdrop explain` as an operator runs them:
//! exit codes, text and JSON, on public dumps (no privileges needed).

use std::process::Command;

use netdrop_tests::{TempPath, netdrop};
use serde_json::Value;

fn fixture(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../netdrop-model/tests/fixtures/iptables")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

const REJECTING: &str = "helowd-centos7-flannel-docker-reject-host-prohibited.rules";
const HEALTHY: &str = "helowd-centos7-flannel-docker-after-flush.rules";

#[test]
fn check_exits_3_on_findings_and_0_without() {
    let bad = netdrop(&[
        "check",
        "--rules",
        &fixture(REJECTING),
        "--pod-cidr",
        "10.1.0.0/16",
    ]);
    assert_eq!(bad.status.code(), Some(3));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.lines()
            .any(|l| l == "CRITICAL forward-rule-drops-pod-traffic [distro-firewall]"),
        "{text}"
    );
    assert!(
        text.contains(
            "  rule: filter/FORWARD -A FORWARD -j REJECT --reject-with icmp-host-prohibited"
        ),
        "{text}"
    );
    assert!(text.contains("  fix: "), "{text}");

    let json = netdrop(&[
        "check",
        "--rules",
        &fixture(REJECTING),
        "--pod-cidr",
        "10.1.0.0/16",
        "--output",
        "json",
    ]);
    assert_eq!(json.status.code(), Some(3));
    let findings: Vec<Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let vx = findings
        .iter()
        .find(|f| f["id"] == "input-blocks-vxlan")
        .expect("VXLAN finding");
    assert_eq!(vx["severity"], "critical");
    assert_eq!(vx["hook"], "INPUT");
    assert_eq!(vx["rule_no"], 13);
    assert_eq!(vx["verdict"], "REJECT");
    assert_eq!(vx["owner"], "distro-firewall");
    assert_eq!(
        vx["flows"][0],
        "udp 192.0.2.2:51000 -> 192.0.2.1:8472 in eth0"
    );

    let ok = netdrop(&[
        "check",
        "--rules",
        &fixture(HEALTHY),
        "--pod-cidr",
        "10.1.0.0/16",
    ]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "rules read: iptables-legacy: filter (18), mangle (1), nat (78)\nprobes: flannel node (from the interfaces and chains its rules name): pods on cni0, other nodes' pods via flannel.1, egress by eth0, overlay udp 8472 from other nodes, kubelet tcp 10250\nno findings: nothing in these rules blocks pod traffic",
        "an iptables-save dump without (nf_tables) in its header is iptables-legacy's"
    );
}

#[test]
fn explain_walks_one_packet_in_text_and_json() {
    let packet = "FORWARD tcp 10.1.1.2:40000 -> 10.1.2.2:80 in flannel.1 out cni0";
    let text = netdrop(&[
        "explain",
        "--rules",
        &fixture(REJECTING),
        "--pod-cidr",
        "10.1.0.0/16",
        "--packet",
        packet,
    ]);
    assert_eq!(text.status.code(), Some(0));
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.starts_with("FORWARD tcp 10.1.1.2:40000 -> 10.1.2.2:80 in flannel.1 out cni0: REJECT"),
        "{out}"
    );
    assert!(out.contains("  owner: distro-firewall"), "{out}");
    assert!(out.contains("  fix: "), "{out}");

    let json = netdrop(&[
        "explain",
        "--rules",
        &fixture(REJECTING),
        "--pod-cidr",
        "10.1.0.0/16",
        "--packet",
        packet,
        "--output",
        "json",
    ]);
    assert_eq!(json.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["verdict"], "REJECT");
    assert_eq!(v["hook"], "FORWARD");
    let d = &v["drops"][0];
    assert_eq!(
        d["rule"],
        "-A FORWARD -j REJECT --reject-with icmp-host-prohibited"
    );
    assert_eq!(
        (d["rule_no"].as_u64(), d["reject_with"].as_str()),
        (Some(16), Some("icmp-host-prohibited"))
    );
    assert_eq!(d["owner"], "distro-firewall");

    // Accepted: said so, exit 0.
    let accepted = netdrop(&[
        "explain",
        "--rules",
        &fixture(HEALTHY),
        "--packet",
        packet,
        "--output",
        "json",
    ]);
    assert_eq!(accepted.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&accepted.stdout).unwrap();
    assert_eq!(v["verdict"], "ACCEPT");
    assert_eq!(v["drops"].as_array().map(Vec::len), Some(0));
}

#[test]
fn bad_input_to_check_and_explain() {
    // A bad packet is a usage error (2), like any bad flag value.
    let out = netdrop(&[
        "explain",
        "--rules",
        &fixture(HEALTHY),
        "--packet",
        "FORWARD tcp 10.1.1.2 => nowhere",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid value") && err.contains("--packet"),
        "{err}"
    );
    // A missing file: one sentence naming it, exit 1.
    let out = netdrop(&[
        "check",
        "--rules",
        "/nonexistent/node.rules",
        "--pod-cidr",
        "10.1.0.0/16",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/node.rules"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // check without a pod CIDR takes flannel's from the rules, and says so;
    // with neither, it says what it could not probe.
    let out = netdrop(&["check", "--rules", &fixture(HEALTHY)]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pod CIDR 10.1.0.0/16 (from flannel's rules"),
        "{text}"
    );
    let none = TempPath::file("no-pods", "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n");
    let out = netdrop(&["check", "--rules", none.path()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no --pod-cidr given and none in the rules or routes: pod flows not probed"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(0));
}

/// A native nftables ruleset given as `nft -j list ruleset` JSON (real
/// firewalld, stock config): `check` finds what it blocks, `explain` walks
/// a VXLAN packet to firewalld's reject, in nft's words.
#[test]
fn check_and_explain_read_nft_json() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../netdrop-model/tests/fixtures/nft/debian12-firewalld-1.3.3-default.json")
        .to_string_lossy()
        .into_owned();
    let out = netdrop(&[
        "check",
        "--rules",
        &file,
        "--pod-cidr",
        "10.224.0.0/16",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let findings: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let vxlan = findings
        .iter()
        .find(|f| f["id"] == "input-blocks-vxlan")
        .expect("input-blocks-vxlan");
    assert_eq!(
        (
            &vxlan["table"],
            &vxlan["chain"],
            &vxlan["rule"],
            &vxlan["owner"]
        ),
        (
            &Value::from("inet firewalld"),
            &Value::from("filter_IN_public"),
            &Value::from("reject with icmpx admin-prohibited"),
            &Value::from("firewalld")
        ),
        "{vxlan}"
    );
    let out = netdrop(&[
        "explain",
        "--rules",
        &file,
        "--pod-cidr",
        "10.224.0.0/16",
        "--packet",
        "INPUT udp 192.0.2.2:40000 -> 192.0.2.1:8472 in eth0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("INPUT udp 192.0.2.2:40000 -> 192.0.2.1:8472 in eth0: REJECT\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  INPUT inet firewalld/filter_IN_public #9: reject with icmpx admin-prohibited\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "`firewall-cmd --permanent --zone=public --add-port=8472/udp && firewall-cmd --reload`"
        ),
        "{text}"
    );
}

/// nft text (`nft list ruleset` output, or an `nft -f` script) is read by
/// nft itself, in a private network namespace: the same findings as from
/// the JSON, kube-proxy's Services without endpoints named from its maps.
/// Without root, one sentence that says what to give instead.
#[test]
fn check_reads_nft_text_like_its_json() {
    netdrop_tests::require_root!();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../netdrop-model/tests/fixtures/nft/k8s-nftables-proxier-test-overall");
    let check = |ext: &str| {
        let file = format!("{}.{ext}", dir.display());
        let out = netdrop(&["check", "--rules", &file, "--pod-cidr", "10.0.0.0/8"]);
        assert_eq!(out.status.code(), Some(0), "{ext}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json = check("json");
    assert!(
        json.contains(
            "Service ns6/svc6:p80 has no endpoints: kube-proxy rejects connections to it."
        ),
        "{json}"
    );
    assert!(
        json.contains("Service ns2/svc2:p80 has no endpoints: kube-proxy drops connections to it."),
        "{json}"
    );
    assert_eq!(check("txt"), json, "nft -a list output");
    assert_eq!(
        check("nft"),
        json,
        "the nft -f script kube-proxy's test writes"
    );

    let file = format!("{}.txt", dir.display());
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(netdrop_tests::netdrop_bin())
        .args(["check", "--rules", &file, "--pod-cidr", "10.0.0.0/8"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("reading nft text needs root"), "{err}");
    assert!(err.contains("nft -j list ruleset"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Where the walk hangs on what netdrop cannot see (ipsets here), `explain`
/// says what it depends on and gives one answer per way the packet can end,
/// however many branches lead there.
#[test]
fn explain_summarises_branches_by_how_they_end() {
    let file = TempPath::file(
        "branches",
        "*filter\n:INPUT DROP [0:0]\n:A - [0:0]\n-A INPUT -m set --match-set ONE src -j A\n-A INPUT -m set --match-set TWO src -j A\n-A A -m set --match-set TWO src -j ACCEPT\n-A A -m set --match-set ONE src -j ACCEPT\nCOMMIT\n",
    );
    let rules = file.path();
    let packet = "INPUT udp 192.0.2.2:1000 -> 192.0.2.1:8472";
    let text = netdrop(&["explain", "--rules", rules, "--packet", packet]);
    assert_eq!(text.status.code(), Some(0));
    let out = String::from_utf8_lossy(&text.stdout);
    let first = out.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "INPUT udp 192.0.2.2:1000 -> 192.0.2.1:8472: DROP or ACCEPT, depending on: in ipset ONE; in ipset TWO",
        "{out}"
    );
    // The ways by verdict, each with the answers it takes, before each is
    // told in full.
    let summary: Vec<&str> = out.lines().skip(1).take(3).collect();
    assert_eq!(
        summary,
        [
            "  DROP at filter/INPUT policy DROP, when INPUT #1: not in ipset ONE; INPUT #2: not in ipset TWO",
            "  ACCEPT (passed, last in INPUT), when INPUT #1: in ipset ONE",
            "  ACCEPT (passed, last in INPUT), when INPUT #1: not in ipset ONE; INPUT #2: in ipset TWO",
        ],
        "{out}"
    );
    // One answer per way: the policy drop once, with its explanation once.
    assert_eq!(out.matches(": DROP\n").count(), 1, "{out}");
    assert_eq!(out.matches("  why: ").count(), 1, "{out}");
    assert!(out.contains("(and 1 more branch ending so)"), "{out}");

    let json = netdrop(&[
        "explain", "--rules", rules, "--packet", packet, "--output", "json",
    ]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["verdict"], "DEPENDS");
    assert_eq!(
        v["depends_on"],
        serde_json::json!(["in ipset ONE", "in ipset TWO"])
    );
    assert_eq!(v["varies_with"], serde_json::json!([]));
    assert_eq!(v["branches"], 4);
    assert_eq!(v["drops"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        v["drops"][0]["when"],
        serde_json::json!(["INPUT #1: not in ipset ONE", "INPUT #2: not in ipset TWO"])
    );
    assert_eq!(v["accepts"].as_array().map(Vec::len), Some(2));
}

/// When every way the walk can take ends in the same verdict, `explain`
/// says it first, as certain; the questions that change only NAT or the
/// rule that decides come after it, and not in `depends_on` (issue #32's
/// Calico/IPVS node: four ways, all ACCEPT, differing in MASQUERADE).
#[test]
fn explain_leads_with_the_verdict_every_way_agrees_on() {
    let rules = fixture("indexdoc-calico-ipvs-nat-leftover-kube-sep-chains.rules");
    let packet = "FORWARD tcp 10.224.1.2:40000 -> 10.224.2.2:80 in flannel.1 out cni0";
    let args = [
        "explain",
        "--rules",
        &rules,
        "--pod-cidr",
        "10.224.0.0/16",
        "--packet",
        packet,
    ];
    let text = netdrop(&args);
    assert_eq!(text.status.code(), Some(0));
    let out = String::from_utf8_lossy(&text.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("{packet}: ACCEPT").as_str()),
        "{out}"
    );
    assert_eq!(
        lines.get(1).copied(),
        Some(
            "  certain: every way the walk can take ends so; what netdrop cannot see changes only the rule that decides and source NAT"
        ),
        "{out}"
    );
    assert!(
        lines[2].starts_with("  varies with: ") && lines[2].contains("in ipset KUBE-LOOP-BACK"),
        "{out}"
    );
    // One line per way, not a block each.
    let ways: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("  - ACCEPT "))
        .collect();
    assert_eq!(ways.len(), 4, "{out}");
    assert_eq!(lines.len(), 3 + 4, "{out}");
    assert!(!out.contains("DROP"), "{out}");

    let json = netdrop(&[&args[..], &["--output", "json"]].concat());
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["verdict"], "ACCEPT", "{v}");
    assert_eq!(v["depends_on"], serde_json::json!([]), "{v}");
    let varies = v["varies_with"].as_array().cloned().unwrap_or_default();
    assert!(
        varies.contains(&serde_json::json!("in ipset KUBE-LOOP-BACK")),
        "{v}"
    );
    assert!(v["branches"].as_u64().unwrap_or(0) > 4, "{v}");
    let accepts = v["accepts"].as_array().cloned().unwrap_or_default();
    assert_eq!(accepts.len(), 4, "{v}");
    // Each accept keeps every assumption it took; none hangs its verdict
    // on one.
    assert!(
        accepts.iter().all(|a| a["when"] == serde_json::json!([])),
        "{v}"
    );
    assert!(
        accepts
            .iter()
            .all(|a| !a["assumptions"].as_array().unwrap().is_empty()),
        "{v}"
    );
}

/// A walk with one way and nothing unknown: the verdict alone, no
/// "certain" line, and empty `depends_on` and `varies_with`.
#[test]
fn explain_of_a_single_way_is_its_verdict() {
    let file = TempPath::file(
        "single",
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp --dport 8472 -j DROP\nCOMMIT\n",
    );
    let packet = "INPUT udp 192.0.2.2:1000 -> 192.0.2.1:8472";
    let text = netdrop(&["explain", "--rules", file.path(), "--packet", packet]);
    let out = String::from_utf8_lossy(&text.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("{packet}: DROP").as_str()),
        "{out}"
    );
    assert!(
        lines[1].starts_with("  way: PREROUTING → INPUT (dropped in INPUT)"),
        "{out}"
    );
    assert!(
        !out.contains("certain") && !out.contains("depending on"),
        "{out}"
    );
    let json = netdrop(&[
        "explain",
        "--rules",
        file.path(),
        "--packet",
        packet,
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["verdict"], "DROP");
    assert_eq!(v["depends_on"], serde_json::json!([]));
    assert_eq!(v["varies_with"], serde_json::json!([]));
    assert_eq!(v["branches"], 1);
}

/// A dropped reply is fixed by accepting the connections already accepted,
/// at the top of the hook's chain: not by opening its port (which would let
/// new connections in), and not inside a chain other paths share.
#[test]
fn a_dropped_reply_is_fixed_by_accepting_established_connections() {
    let file = TempPath::file(
        "reply",
        "*filter\n:INPUT ACCEPT [0:0]\n:LOGGING - [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -j LOGGING\n-A LOGGING -j LOG --log-prefix dropped\n-A LOGGING -j DROP\nCOMMIT\n",
    );
    let rules = file.path();
    let fix = |ct: &str| {
        let packet = format!("INPUT tcp 203.0.113.5:443 -> 192.0.2.1:40000 ct {ct}");
        let out = netdrop(&[
            "explain", "--rules", rules, "--packet", &packet, "--output", "json",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["drops"][0]["fix"].as_str().unwrap_or_default().to_owned()
    };
    let reply = fix("ESTABLISHED");
    assert!(
        reply
            .contains("`iptables -I INPUT 1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`"),
        "{reply}"
    );
    assert!(!reply.contains("--dport 40000"), "{reply}");
    // A new connection to that port is another matter: its port.
    let new = fix("NEW");
    assert!(new.contains("--dport 40000"), "{new}");
}

/// A NetworkPolicy drop is fixed in the policy, never by an iptables rule
/// that would bypass it: kube-router's pod firewall names its pod, and the
/// fix speaks of the policies selecting that pod. (The public kube-router
/// dump, with the rule that marks every packet as allowed taken out: as a
/// node where a policy isolates the pod.)
#[test]
fn a_network_policy_drop_names_the_pod_and_is_fixed_in_its_policy() {
    let dump = std::fs::read_to_string(fixture("ytdl-k3s-pi-nft-kuberouter-netpol-flannel.rules"))
        .unwrap();
    let isolated: String = dump
        .lines()
        .filter(|l| !l.contains("rule to mark traffic matching a network policy"))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = TempPath::file("netpol", &isolated);
    let out = netdrop(&[
        "explain",
        "--rules",
        file.path(),
        "--pod-cidr",
        "10.42.0.0/16",
        "--packet",
        "FORWARD tcp 203.0.113.7:40000 -> 10.42.0.11:6379 in eth0 out cni0",
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v["drops"][0];
    assert_eq!(d["owner"], "kube-router", "{v}");
    assert_eq!(d["verdict"], "REJECT", "{v}");
    let why = d["explanation"].as_str().unwrap_or_default();
    assert!(
        why.contains("NetworkPolicy for pod default/redis-84f85f9cdc-nfbl2"),
        "{why}"
    );
    let fix = d["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("`kubectl -n default get networkpolicy`"),
        "{fix}"
    );
    assert!(
        fix.contains(
            "`from:` `ipBlock: {cidr: 203.0.113.7/32}`, `ports: [{protocol: TCP, port: 6379}]`"
        ),
        "{fix}"
    );
    assert!(!fix.contains("iptables -I"), "{fix}");
}

/// The other NetworkPolicy engines: weave-npc's and Calico's chains say
/// the policy's direction, so the fix names the pod that policy selects
/// (by its address: `kubectl` finds its name) and the rule to add there —
/// never an `iptables` rule before their chains.
#[test]
fn weave_npc_and_calico_drops_are_fixed_in_the_selected_pods_policy() {
    // weave-npc as its design lays out: new connections to a weave pod go
    // through WEAVE-NPC's default and per-policy chains, then its DROP.
    let weave = TempPath::file(
        "weave-npc",
        "*filter\n:FORWARD DROP [0:0]\n:WEAVE-NPC - [0:0]\n:WEAVE-NPC-DEFAULT - [0:0]\n:WEAVE-NPC-INGRESS - [0:0]\n:WEAVE-NPC-EGRESS - [0:0]\n-A FORWARD -o weave -m comment --comment \"NOTE: this must go before '-j KUBE-FORWARD'\" -j WEAVE-NPC\n-A WEAVE-NPC -m state --state RELATED,ESTABLISHED -j ACCEPT\n-A WEAVE-NPC -m state --state NEW -j WEAVE-NPC-DEFAULT\n-A WEAVE-NPC -m state --state NEW -j WEAVE-NPC-INGRESS\n-A WEAVE-NPC -j DROP\n-A WEAVE-NPC-DEFAULT -m set --match-set weave-iuZcey(5DeXbzgRFs8Szo]+@p dst -m comment --comment \"DefaultAllow ingress isolation for namespace: kube-system\" -j ACCEPT\n-A WEAVE-NPC-INGRESS -p tcp -m set --match-set weave-k?Z;25^M}|1s7P3|H9i;*;MhG dst -m tcp --dport 80 -m comment --comment \"pods: namespace: shop, selector: app=web -> allow tcp/80\" -j ACCEPT\nCOMMIT\n",
    );
    let explain = |file: &TempPath, cidr: &str, packet: &str| {
        let out = netdrop(&[
            "explain",
            "--rules",
            file.path(),
            "--pod-cidr",
            cidr,
            "--packet",
            packet,
            "--output",
            "json",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["drops"][0].clone()
    };
    // Port 6379 is allowed by no policy: dropped unless the namespace's
    // default-allow set holds the pod.
    let d = explain(
        &weave,
        "10.32.0.0/12",
        "FORWARD tcp 10.32.0.4:40000 -> 10.32.0.5:6379 in weave out weave",
    );
    assert_eq!(d["owner"], "weave-npc", "{d}");
    let why = d["explanation"].as_str().unwrap_or_default();
    assert!(why.contains("for the pod at 10.32.0.5"), "{why}");
    assert!(why.contains("this ingress traffic"), "{why}");
    let fix = d["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("--field-selector status.podIP=10.32.0.5"),
        "{fix}"
    );
    assert!(
        fix.contains("an ingress rule `from:` a podSelector (or namespaceSelector) matching the pod at 10.32.0.4, `ports: [{protocol: TCP, port: 6379}]`"),
        "{fix}"
    );
    assert!(!fix.contains("iptables -I"), "{fix}");
    assert_eq!(d["fix_check"], "not_modelled", "{d}");

    // Calico's to-workload chain of the destination pod's interface.
    let calico = TempPath::file(
        "calico",
        "*filter\n:FORWARD ACCEPT [0:0]\n:cali-FORWARD - [0:0]\n:cali-to-wl-dispatch - [0:0]\n:cali-tw-cali1a2b3c4d5e6 - [0:0]\n-A FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD\n-A cali-FORWARD -m comment --comment \"cali:vjrMJCRpqwy5oRoX\" -j cali-to-wl-dispatch\n-A cali-to-wl-dispatch -o cali1a2b3c4d5e6 -m comment --comment \"cali:x1\" -g cali-tw-cali1a2b3c4d5e6\n-A cali-tw-cali1a2b3c4d5e6 -m comment --comment \"cali:x2\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A cali-tw-cali1a2b3c4d5e6 -m comment --comment \"cali:x3\" -m comment --comment \"Drop if no policies passed packet\" -j DROP\nCOMMIT\n",
    );
    let d = explain(
        &calico,
        "192.168.0.0/16",
        "FORWARD tcp 203.0.113.7:40000 -> 192.168.1.9:443 in eth0 out cali1a2b3c4d5e6",
    );
    assert_eq!(d["owner"], "calico", "{d}");
    assert_eq!(d["chain"], "cali-tw-cali1a2b3c4d5e6", "{d}");
    let fix = d["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("--field-selector status.podIP=192.168.1.9"),
        "{fix}"
    );
    assert!(
        fix.contains(
            "`from:` `ipBlock: {cidr: 203.0.113.7/32}`, `ports: [{protocol: TCP, port: 443}]`"
        ),
        "{fix}"
    );
    assert!(!fix.contains("iptables -I"), "{fix}");
}

/// ufw sets the default policies too: a packet its rules do not allow dies
/// at that policy, and the fix goes through ufw, not an `iptables` insert
/// its next reload would undo.
#[test]
fn a_ufw_policy_drop_is_fixed_through_ufw() {
    let file = TempPath::file(
        "ufw",
        "*filter\n:INPUT DROP [0:0]\n:ufw-user-input - [0:0]\n-A INPUT -j ufw-user-input\n-A ufw-user-input -p tcp --dport 22 -j ACCEPT\nCOMMIT\n",
    );
    let out = netdrop(&[
        "explain",
        "--rules",
        file.path(),
        "--packet",
        "INPUT udp 192.0.2.2:1000 -> 192.0.2.1:8472",
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v["drops"][0];
    assert_eq!(d["owner"], "ufw", "{v}");
    let fix = d["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("`ufw allow proto udp from 192.0.2.2 to any port 8472`"),
        "{fix}"
    );
    assert!(!fix.contains("iptables -I"), "{fix}");
}

/// A drop in a native nftables table of a known agent is fixed with nft's
/// own commands, never `iptables -t ip <table>` (a command that cannot
/// exist; once printed for Docker's nftables backend). Docker's tables
/// take a mark it accepts (`bridge-accept-fwmark`), as its nftables
/// backend asks; the printed nft commands are run here, and nft takes them.
#[test]
fn a_native_tables_drop_is_fixed_with_nft_whoever_owns_it() {
    netdrop_tests::require_root!();
    // Docker 29's nftables backend, as it lists its table for docker0
    // (trimmed to the forward path; the rules are Docker's own).
    let docker = TempPath::file(
        "docker-nft",
        r#"table ip docker-bridges {
	map filter-forward-in-jumps {
		type ifname : verdict
		elements = { "docker0" : jump filter-forward-in__docker0 }
	}
	chain filter-FORWARD {
		type filter hook forward priority filter; policy accept;
		oifname vmap @filter-forward-in-jumps
	}
	chain filter-forward-in__docker0 {
		ct state established,related counter accept
		iifname "docker0" counter accept comment "ICC"
		counter drop comment "UNPUBLISHED PORT DROP"
	}
}
"#,
    );
    let packet = "FORWARD tcp 203.0.113.5:40000 -> 172.17.0.2:80 in eth0 out docker0";
    let out = netdrop(&[
        "explain",
        "--rules",
        docker.path(),
        "--packet",
        packet,
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v["drops"][0];
    assert_eq!(
        (d["verdict"].as_str(), d["owner"].as_str()),
        (Some("DROP"), Some("docker")),
        "{v}"
    );
    let fix = d["fix"].as_str().unwrap();
    assert!(!fix.contains("iptables"), "{fix}");
    assert!(fix.contains("bridge-accept-fwmark"), "{fix}");
    // nft takes the printed commands (run in a namespace of this test's).
    let mut lab = netdrop_tests::Lab::new("nftfix");
    let ns = lab.netns("n").unwrap();
    // As pasted: the whole backticked command, run by a shell.
    let nft: Vec<String> = fix
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|c| c.starts_with("nft "))
        .map(str::to_owned)
        .collect();
    assert_eq!(nft.len(), 1, "{fix}");
    netdrop_tests::run_in(&ns, &nft);
    let listed = lab
        .exec(
            &ns,
            &["nft", "list", "table", "ip", "netdrop-docker-accept"],
        )
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("hook forward priority filter - 1"),
        "{listed}"
    );
    assert!(
        listed.contains("ip daddr 172.17.0.2 tcp dport 80 meta mark set meta mark | 0x01000000"),
        "{listed}"
    );

    // flannel's own table, its policy: nft words too, said to be flannel's.
    let flannel = TempPath::file(
        "flannel-nft",
        "table ip flannel-ipv4 {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n",
    );
    let packet = "FORWARD tcp 10.224.1.2:40000 -> 10.224.2.2:80 in flannel.1 out cni0";
    let out = netdrop(&[
        "explain",
        "--rules",
        flannel.path(),
        "--pod-cidr",
        "10.224.0.0/16",
        "--packet",
        packet,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("`nft add rule ip flannel-ipv4 forward ip saddr 10.224.0.0/16 ip daddr 10.224.0.0/16 accept`"),
        "{text}"
    );
    assert!(text.contains("set by flannel"), "{text}");
    assert!(!text.contains("iptables"), "{text}");
}
