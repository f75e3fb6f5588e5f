//! `check` and `explain` on real dumps and on the seeds' scenarios: the
//! right finding, rule, owner and fix; healthy nodes give nothing.

use netdrop::explain::{
    check::{ExplainedFinding, check_node, is_failing},
    explain_packet,
};
use netdrop_model::{
    Owner, OwnerContext, Severity,
    check::{Cluster, NodeFacts},
    packet::parse_packet,
    parse_ruleset,
};

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../netdrop-model/tests/fixtures/iptables")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

fn findings(rules: &str, pod: &str, facts: &NodeFacts) -> Vec<ExplainedFinding> {
    let rs = parse_ruleset(rules).unwrap();
    check_node([&rs], &Cluster::new(vec![pod.parse().unwrap()]), facts)
        .into_iter()
        .filter(|f| !f.id.is_node_setting())
        .collect()
}

fn ids(f: &[ExplainedFinding]) -> Vec<&str> {
    f.iter().map(|f| f.id.as_str()).collect()
}

#[test]
fn healthy_nodes_have_no_findings() {
    for (name, pod) in [
        (
            "helowd-centos7-flannel-docker-after-flush.rules",
            "10.1.0.0/16",
        ),
        (
            "minik8s-se3356-ubuntu-docker-flannel-forward-drop.rules",
            "10.244.0.0/16",
        ),
        (
            "ericpuwang-kind-v1.23-kindnet-traefik.rules",
            "10.244.0.0/16",
        ),
    ] {
        let f = findings(&fixture(name), pod, &NodeFacts::default());
        assert!(f.is_empty(), "{name}: {:#?}", f);
    }
}

#[test]
fn distro_reject_in_forward_and_input_s2_s3() {
    let f = findings(
        &fixture("helowd-centos7-flannel-docker-reject-host-prohibited.rules"),
        "10.1.0.0/16",
        &NodeFacts::default(),
    );
    assert!(is_failing(&f));
    let fwd = f
        .iter()
        .find(|f| f.id.as_str() == "forward-rule-drops-pod-traffic")
        .expect("FORWARD reject found");
    assert_eq!(fwd.owner, Some(Owner::DistroFirewall));
    assert_eq!(
        fwd.rule.as_deref(),
        Some("-A FORWARD -j REJECT --reject-with icmp-host-prohibited")
    );
    assert_eq!(fwd.rule_no, Some(16));
    assert_eq!(fwd.reject_with.as_deref(), Some("icmp-host-prohibited"));
    assert!(
        fwd.explanation.contains("shadows rule #17"),
        "{}",
        fwd.explanation
    );
    assert!(
        fwd.fix
            .contains("iptables -I FORWARD 16 -s 10.1.0.0/16 -d 10.1.0.0/16 -j ACCEPT"),
        "{}",
        fwd.fix
    );
    assert_eq!(fwd.flows.len(), 3);
    let vx = f
        .iter()
        .find(|f| f.id.as_str() == "input-blocks-vxlan")
        .expect("VXLAN finding");
    assert_eq!(vx.severity, Severity::Critical);
    assert!(
        vx.fix.contains(
            "iptables -I INPUT 13 -s <other nodes' network> -p udp --dport 8472 -j ACCEPT"
        ),
        "{}",
        vx.fix
    );
    let kubelet = f
        .iter()
        .find(|f| f.id.as_str() == "input-blocks-kubelet")
        .expect("kubelet finding");
    assert!(kubelet.explanation.contains("kubelet"));
}

/// S1 (seed 001): Docker's FORWARD policy DROP, flannel accepts 10.244/16
/// while the pods live in 10.224/16.
const S1_NODE02: &str = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A FORWARD -s 10.244.0.0/16 -j ACCEPT
-A FORWARD -d 10.244.0.0/16 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN
-A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE
-A POSTROUTING ! -s 10.244.0.0/16 -d 10.224.2.0/24 -j RETURN
-A POSTROUTING ! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE
COMMIT
"#;

#[test]
fn s1_forward_policy_drop_by_docker() {
    let f = findings(S1_NODE02, "10.224.0.0/16", &NodeFacts::default());
    let p = f
        .iter()
        .find(|f| f.id.as_str() == "forward-policy-drop")
        .unwrap_or_else(|| panic!("{:#?}", ids(&f)));
    assert!(p.policy && p.rule.is_none());
    assert_eq!(
        (p.table.as_deref(), p.chain.as_deref()),
        (Some("filter"), Some("FORWARD"))
    );
    assert_eq!(p.owner, Some(Owner::Docker));
    assert!(
        p.fix
            .contains("iptables -I DOCKER-USER -s 10.224.0.0/16 -d 10.224.0.0/16 -j ACCEPT"),
        "{}",
        p.fix
    );
    assert!(p.fix.contains("permanent"), "{}", p.fix);
    assert!(
        p.explanation
            .contains("10.244.0.0/16, not the pod CIDR 10.224.0.0/16"),
        "{}",
        p.explanation
    );
    // S4 on the same node: egress of 10.224 pods is not masqueraded.
    let m = f
        .iter()
        .find(|f| f.id.as_str() == "masquerade-cidr-mismatch")
        .expect("S4 finding");
    assert_eq!(m.owner, Some(Owner::Flannel));
    assert!(
        m.explanation.contains("masquerades 10.244.0.0/16"),
        "{}",
        m.explanation
    );
    assert!(
        m.fix.contains("\"Network\": \"10.224.0.0/16\""),
        "{}",
        m.fix
    );
}

#[test]
fn s0_leftover_calico_chains() {
    let rules = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:cali-INPUT - [0:0]
:cali-FORWARD - [0:0]
:cali-wl-to-host - [0:0]
-A INPUT -m comment --comment "cali:Cz_u1IQiXIMmKD4c" -j cali-INPUT
-A FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD
-A cali-INPUT -p udp -m comment --comment "cali:drop-vxlan" -m udp --dport 8472 -j DROP
-A cali-FORWARD -m comment --comment "cali:Drop-unknown" -j DROP
COMMIT
"#;
    let facts = NodeFacts {
        interfaces: Some(vec![
            "lo".into(),
            "eth0".into(),
            "flannel.1".into(),
            "cni0".into(),
        ]),
        ..Default::default()
    };
    let f = findings(rules, "10.224.0.0/16", &facts);
    let fwd = f
        .iter()
        .find(|f| f.id.as_str() == "leftover-cni-drops-pod-traffic")
        .unwrap_or_else(|| panic!("{:#?}", ids(&f)));
    assert_eq!(fwd.owner, Some(Owner::Calico));
    assert!(fwd.leftover);
    assert_eq!(fwd.chain.as_deref(), Some("cali-FORWARD"));
    assert!(fwd.fix.contains("iptables -t filter -D FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD"), "{}", fwd.fix);
    let vx = f
        .iter()
        .find(|f| f.id.as_str() == "input-blocks-vxlan")
        .expect("vxlan");
    assert!(vx.leftover && vx.owner == Some(Owner::Calico));
    assert!(f.iter().any(|f| f.id.as_str() == "leftover-cni-chains"));
    // The same rules where Calico runs: not leftover, a NetworkPolicy drop.
    let facts = NodeFacts {
        interfaces: Some(vec!["cali12345".into(), "tunl0".into()]),
        ..Default::default()
    };
    let f = findings(rules, "10.224.0.0/16", &facts);
    assert!(f.iter().all(|f| !f.leftover), "{:#?}", f);
    assert!(!f.iter().any(|f| f.id.as_str() == "leftover-cni-chains"));
}

#[test]
fn explain_names_the_rule_of_a_packet() {
    let rs = parse_ruleset(&fixture(
        "k8s-cleanup-test-initial-state-with-foreign-rules.rules",
    ))
    .unwrap();
    let owners = OwnerContext::new(&rs, None);
    let ctx = Cluster::new(vec!["10.0.0.0/8".parse().unwrap()]);
    let pkt = parse_packet("FORWARD tcp 10.0.0.5:1234 -> 172.30.0.46:80 in eth0 out eth1").unwrap();
    let e = explain_packet(&rs, &owners, &ctx, &pkt).expect("rejected");
    assert_eq!(e.decision.owner, Owner::KubeProxy);
    assert_eq!(e.decision.service.as_deref(), Some("ns6/svc6:p80"));
    assert_eq!(e.decision.chain, "KUBE-SERVICES");
    assert!(
        e.fix
            .contains("kubectl -n ns6 get endpointslices -l kubernetes.io/service-name=svc6")
    );
    // The foreign DROP of 1.2.3.4 is custom.
    let pkt = parse_packet("INPUT tcp 1.2.3.4:5 -> 10.0.0.1:22 in eth0").unwrap();
    let e = explain_packet(&rs, &owners, &ctx, &pkt).expect("dropped");
    assert_eq!(e.decision.owner, Owner::Custom);
    assert!(e.fix.contains("iptables -t filter -D INPUT 3"), "{}", e.fix);
    // Accepted packets have no explanation.
    let pkt = parse_packet("INPUT tcp 10.0.0.9:5 -> 10.0.0.1:22 in eth0").unwrap();
    assert!(explain_packet(&rs, &owners, &ctx, &pkt).is_none());
}

#[test]
fn sysctl_and_backend_findings() {
    let cluster = Cluster::new(vec!["10.224.0.0/16".parse().unwrap()]);
    let node_findings = |facts| check_node([], &cluster, facts);
    let facts = NodeFacts {
        interfaces: Some(vec!["cni0".into()]),
        ip_forward: Some(false),
        bridge_nf_call_iptables: Some(false),
        split_backends: true,
        ..NodeFacts::default()
    };
    let f = node_findings(&facts);
    assert_eq!(
        ids(&f),
        [
            "sysctl-ip-forward",
            "sysctl-bridge-nf-call-iptables",
            "iptables-legacy-nft-split"
        ]
    );
    let ok = NodeFacts {
        interfaces: Some(vec!["cni0".into()]),
        ip_forward: Some(true),
        bridge_nf_call_iptables: Some(true),
        split_backends: false,
        ..NodeFacts::default()
    };
    assert!(node_findings(&ok).is_empty());
}

/// firewalld on nftables (Debian's firewalld, its stock config, dumped
/// from a real daemon): `check` finds what it blocks, as for iptables —
/// VXLAN and the kubelet in INPUT, pod traffic in FORWARD — with owner
/// firewalld and firewalld's own fixes. (It said "no findings" before
/// native tables were read.)
#[test]
fn firewalld_on_nftables_blocks_vxlan_kubelet_and_pod_forwarding() {
    let nft = |ext: &str| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../netdrop-model/tests/fixtures/nft")
                .join(format!("debian12-firewalld-1.3.3-default.{ext}")),
        )
        .unwrap()
    };
    let native = netdrop_model::nft::parse_nft_json(
        &nft("json"),
        &netdrop_model::nft::rule_texts(&nft("txt")),
        |_, _| false,
    )
    .unwrap();
    let mut rs =
        parse_ruleset("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\nCOMMIT\n").unwrap();
    for t in native.v4 {
        rs.tables.insert(t.name.clone(), t);
    }
    let f: Vec<ExplainedFinding> = check_node(
        [&rs],
        &Cluster::new(vec!["10.224.0.0/16".parse().unwrap()]),
        &NodeFacts::default(),
    )
    .into_iter()
    .filter(|f| !f.id.is_node_setting())
    .collect();
    let mut found = ids(&f);
    found.sort();
    assert_eq!(
        found,
        [
            "forward-rule-drops-pod-traffic",
            "input-blocks-kubelet",
            "input-blocks-vxlan"
        ],
        "{f:#?}"
    );
    assert!(is_failing(&f));
    for x in &f {
        assert_eq!(x.owner, Some(Owner::Firewalld), "{x:#?}");
        assert!(x.fix.contains("firewall-cmd"), "{x:#?}");
    }
    let vxlan = f
        .iter()
        .find(|x| x.id.as_str() == "input-blocks-vxlan")
        .unwrap();
    assert!(
        vxlan
            .fix
            .contains("firewall-cmd --permanent --zone=public --add-port=8472/udp"),
        "{}",
        vxlan.fix
    );
}
