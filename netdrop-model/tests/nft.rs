//! Native nftables rulesets of real daemons (tests/fixtures/nft/INDEX.md)
//! in the model: parsed, walked with iptables' tables by priority, the
//! dropping rule named as `nft -a list` prints it, with its owner.

use std::path::PathBuf;

use netdrop_model::{
    Evidence, Hook, Owner, OwnerContext, Packet, Ruleset, Verdict, attribute,
    nft::{NativeTables, parse_nft_json, rule_texts},
    parse_ruleset,
};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/nft")
            .join(name),
    )
    .unwrap()
}

fn firewalld() -> NativeTables {
    parse_nft_json(
        &fixture("debian12-firewalld-1.3.3-default.json"),
        &rule_texts(&fixture("debian12-firewalld-1.3.3-default.txt")),
        |_, _| false,
    )
    .unwrap()
}

/// An iptables ruleset (here: empty filter) with the native tables beside it.
fn with_native(iptables: &str, native: Vec<netdrop_model::rules::Table>) -> Ruleset {
    let mut rs = parse_ruleset(iptables).unwrap();
    for t in native {
        rs.tables.insert(t.name.clone(), t);
    }
    rs
}

fn packet(hook: Hook, src: &str, dst: &str, dport: u16) -> Packet {
    let mut p = Packet::new(hook, 17, src.parse().unwrap(), dst.parse().unwrap());
    p.sport = Some(40000);
    p.dport = Some(dport);
    p.in_iface = Some("eth0".into());
    if hook == Hook::Forward {
        p.out_iface = Some("cni0".into());
    }
    p
}

#[test]
fn firewallds_tables_parse_with_their_base_chains_and_rules() {
    let t = firewalld();
    assert_eq!(t.v4.len(), 1, "inet firewalld, for IPv4 and IPv6");
    assert_eq!(t.v6.len(), 1);
    let fw = &t.v4[0];
    assert_eq!(fw.name, "inet firewalld");
    let text = fixture("debian12-firewalld-1.3.3-default.txt");
    assert_eq!(fw.chains.len(), text.matches("\tchain ").count());
    let rules: usize = fw.chains.iter().map(|c| c.rules.len()).sum();
    assert_eq!(
        rules,
        text.matches("# handle").count() - 1 - fw.chains.len()
    );
    let input = fw.base_chain("filter_INPUT").unwrap();
    assert_eq!(
        (input.hook, input.priority, input.nat),
        (Hook::Input, 10, false)
    );
    assert!(fw.base_chain("nat_POSTROUTING").unwrap().nat);
    assert_eq!(fw.base_chain("filter_IN_public"), None);
}

#[test]
fn vxlan_to_a_firewalld_node_dies_in_the_public_zones_reject() {
    let t = firewalld();
    let rs = with_native("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", t.v4);
    let owners = OwnerContext::new(&rs, None);
    let p = packet(Hook::Input, "192.0.2.2", "192.0.2.1", 8472);
    let a = attribute(None, &rs, &owners, &p, 1, None).unwrap();
    let d = a.decision;
    assert_eq!(
        a.evidence,
        Evidence::Simulated,
        "firewalld's rules have no counters"
    );
    assert_eq!(
        (
            d.table.as_str(),
            d.chain.as_str(),
            d.rule.as_deref(),
            d.verdict,
            d.owner
        ),
        (
            "inet firewalld",
            "filter_IN_public",
            Some("reject with icmpx admin-prohibited"),
            Verdict::Reject,
            Owner::Firewalld
        )
    );
    assert_eq!(d.reject_with.as_deref(), Some("icmpx admin-prohibited"));
    assert!(!d.unmodelled, "{:?}", d.assumptions);
    // ssh is let in by the zone's allow chain: accepted.
    let ssh = Packet {
        proto: 6,
        dport: Some(22),
        ..p.clone()
    };
    assert_eq!(attribute(None, &rs, &owners, &ssh, 1, None), None);
}

#[test]
fn forwarded_pod_traffic_dies_in_firewallds_forward_zone() {
    let t = firewalld();
    let rs = with_native("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n", t.v4);
    let owners = OwnerContext::new(&rs, None);
    let p = packet(Hook::Forward, "10.224.1.2", "10.224.2.2", 80);
    let d = attribute(None, &rs, &owners, &p, 1, None).unwrap().decision;
    assert_eq!(
        (d.table.as_str(), d.chain.as_str(), d.verdict, d.owner),
        (
            "inet firewalld",
            "filter_FWD_public",
            Verdict::Reject,
            Owner::Firewalld
        )
    );
}

#[test]
fn an_iptables_accept_does_not_end_the_hook_for_a_later_native_chain() {
    // iptables' filter (priority 0) accepts; firewalld's (10) still rejects.
    let t = firewalld();
    let rs = with_native(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp -m udp --dport 8472 -j ACCEPT\nCOMMIT\n",
        t.v4,
    );
    let owners = OwnerContext::new(&rs, None);
    let p = packet(Hook::Input, "192.0.2.2", "192.0.2.1", 8472);
    let d = attribute(None, &rs, &owners, &p, 1, None).unwrap().decision;
    assert_eq!(d.table, "inet firewalld");
    let path: Vec<&str> = d.path.iter().map(|s| s.table.as_str()).collect();
    assert_eq!(path.first(), Some(&"filter"), "{path:?}");
}

/// kube-proxy's nftables mode, as its own proxier test has it write six
/// Services (fixtures/nft/k8s-nftables-proxier-test-overall.nft), loaded
/// into a kernel and listed back with `nft -j` / `nft -a`.
fn kube_proxy() -> Ruleset {
    let t = parse_nft_json(
        &fixture("k8s-nftables-proxier-test-overall.json"),
        &rule_texts(&fixture("k8s-nftables-proxier-test-overall.txt")),
        |_, _| false,
    )
    .unwrap();
    assert!(t.v6.is_empty(), "ip kube-proxy is IPv4 only");
    with_native("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n", t.v4)
}

fn tcp(hook: Hook, src: &str, dst: &str, dport: u16) -> Packet {
    let mut p = Packet::new(hook, 6, src.parse().unwrap(), dst.parse().unwrap());
    p.sport = Some(40000);
    p.dport = Some(dport);
    p.in_iface = Some("cni0".into());
    p.out_iface = (hook == Hook::Forward).then(|| "eth0".into());
    p
}

#[test]
fn a_service_without_endpoints_is_rejected_and_named_through_the_map_element() {
    let rs = kube_proxy();
    let owners = OwnerContext::new(&rs, None);
    let d = attribute(
        None,
        &rs,
        &owners,
        &tcp(Hook::Forward, "10.0.0.2", "172.30.0.46", 80),
        1,
        None,
    )
    .unwrap()
    .decision;
    assert_eq!(
        (
            d.table.as_str(),
            d.chain.as_str(),
            d.rule.as_deref(),
            d.verdict,
            d.owner
        ),
        (
            "ip kube-proxy",
            "reject-chain",
            Some("reject"),
            Verdict::Reject,
            Owner::KubeProxy
        )
    );
    assert_eq!(d.service.as_deref(), Some("ns6/svc6:p80"));
    assert!(!d.unmodelled, "{:?}", d.assumptions);
    // The element that sent it there is on the path.
    assert!(
        d.path.iter().any(|s| s.chain == "service-endpoints-check"
            && s.text.contains("@no-endpoint-services")
            && s.text.contains("172.30.0.46")),
        "{:#?}",
        d.path
    );
    // A Service with an endpoint is DNATed in PREROUTING, not dropped
    // (at FORWARD its ClusterIP would already be the endpoint's address);
    // its port 81 is no Service port: cluster-ips-check rejects it.
    let mut p = tcp(Hook::Prerouting, "10.0.0.2", "172.30.0.41", 80);
    p.out_iface = None;
    assert_eq!(attribute(None, &rs, &owners, &p, 1, None), None);
    let d = attribute(
        None,
        &rs,
        &owners,
        &tcp(Hook::Forward, "10.0.0.2", "172.30.0.41", 81),
        1,
        None,
    )
    .unwrap()
    .decision;
    assert_eq!(
        (d.chain.as_str(), d.verdict),
        ("cluster-ips-check", Verdict::Reject)
    );
}

#[test]
fn a_load_balancer_source_outside_its_ranges_is_dropped_by_the_firewall_chain() {
    let rs = kube_proxy();
    let owners = OwnerContext::new(&rs, None);
    let mut p = tcp(Hook::Prerouting, "203.0.113.200", "5.6.7.8", 80);
    p.in_iface = Some("eth0".into());
    let d = attribute(None, &rs, &owners, &p, 1, None).unwrap().decision;
    assert_eq!(
        (d.chain.as_str(), d.verdict, d.owner),
        (
            "firewall-HVFWP5L3-ns5/svc5/tcp/p80",
            Verdict::Drop,
            Owner::KubeProxy
        )
    );
    // From inside the range: let through.
    p.src = "203.0.113.7".parse().unwrap();
    assert_eq!(attribute(None, &rs, &owners, &p, 1, None), None);
}

/// Rules read from JSON alone (as the live reader does: one listing, not
/// two) read as `nft -a list` prints them, for both real rulesets here.
#[test]
fn rendered_rule_texts_are_nfts_own() {
    for name in [
        "debian12-firewalld-1.3.3-default",
        "k8s-nftables-proxier-test-overall",
        "flannel-nftables-mode",
    ] {
        let texts = rule_texts(&fixture(&format!("{name}.txt")));
        let t = parse_nft_json(
            &fixture(&format!("{name}.json")),
            &Default::default(),
            |_, _| false,
        )
        .unwrap();
        let (mut same, mut differ) = (0, Vec::new());
        for table in &t.v4 {
            for chain in &table.chains {
                for r in &chain.rules {
                    let own = &texts[&(table.name.clone(), chain.name.clone(), r.handle.unwrap())];
                    // A verdict map's element rules add `(element …)`.
                    if r.text == *own || r.text.starts_with(&format!("{own} (element ")) {
                        same += 1;
                    } else {
                        differ.push((own.clone(), r.text.clone()));
                    }
                }
            }
        }
        assert!(
            differ.is_empty(),
            "{name}: {same} same, differing: {differ:#?}"
        );
    }
}

/// flannel in its nftables mode masquerades its Network from `ip
/// flannel-ipv4`: `check` finds a Network that is not the pod CIDR there as
/// it does in iptables' nat table (S4), and names flannel.
#[test]
fn flannels_nftables_masquerade_of_another_network_is_found() {
    let t = parse_nft_json(
        &fixture("flannel-nftables-mode.json"),
        &Default::default(),
        |_, _| false,
    )
    .unwrap();
    let rs = with_native("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", t.v4);
    let owners = OwnerContext::new(&rs, None);
    let findings = |pod: &str| {
        netdrop_model::check::check(
            &rs,
            &owners,
            &netdrop_model::check::Cluster::new(vec![pod.parse().unwrap()]),
            &netdrop_model::check::NodeShape::flannel_default(8472),
        )
    };
    let f = findings("10.224.0.0/16");
    let masq = f
        .iter()
        .find(|f| f.id == netdrop_model::FindingId::MasqueradeCidrMismatch)
        .unwrap_or_else(|| panic!("{f:#?}"));
    assert_eq!(masq.owner(), Some(Owner::Flannel));
    match &masq.subject {
        netdrop_model::check::Subject::Masquerade { at, covered, .. } => {
            assert_eq!(
                (at.table.as_str(), at.chain.as_str()),
                ("ip flannel-ipv4", "postrtg")
            );
            assert_eq!(covered.to_string(), "10.244.0.0/16");
        }
        other => panic!("{other:?}"),
    }
    // flannel's own Network: its pods are masqueraded, nothing to find.
    assert!(
        findings("10.244.0.0/16").is_empty(),
        "{:#?}",
        findings("10.244.0.0/16")
    );
}

/// A native table of a CNI that is gone (none of its interfaces exist)
/// still drops pod traffic: its drops and the finding say leftover.
#[test]
fn a_gone_cnis_native_table_is_a_leftover() {
    let json = r#"{"nftables": [
      {"table": {"family": "ip", "name": "calico-filter", "handle": 1}},
      {"chain": {"family": "ip", "table": "calico-filter", "name": "fwd", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "calico-filter", "chain": "fwd", "handle": 2, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.224.0.0", "len": 16}}}},
        {"drop": null}]}}
    ]}"#;
    let t = parse_nft_json(json, &Default::default(), |_, _| false).unwrap();
    let rs = with_native("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n", t.v4);
    let mut p = packet(Hook::Forward, "10.224.1.2", "10.224.2.2", 80);
    p.in_iface = Some("flannel.1".into());
    p.out_iface = Some("cni0".into());
    let decide = |ifaces: &[&str]| {
        let owners = OwnerContext::new(&rs, Some(ifaces.iter().map(|s| s.to_string()).collect()));
        attribute(None, &rs, &owners, &p, 1, None).unwrap().decision
    };
    let gone = decide(&["eth0", "cni0", "flannel.1"]);
    assert_eq!((gone.owner, gone.leftover), (Owner::Calico, true));
    let running = decide(&["eth0", "cali1234", "vxlan.calico"]);
    assert_eq!((running.owner, running.leftover), (Owner::Calico, false));
    let owners = OwnerContext::new(
        &rs,
        Some(vec!["eth0".into(), "cni0".into(), "flannel.1".into()]),
    );
    let f = netdrop_model::check::check(
        &rs,
        &owners,
        &netdrop_model::check::Cluster::new(vec!["10.224.0.0/16".parse().unwrap()]),
        &netdrop_model::check::NodeShape::flannel_default(8472),
    );
    assert!(
        f.iter()
            .any(|f| f.id == netdrop_model::FindingId::LeftoverCniDropsPodTraffic),
        "{f:#?}"
    );
}
