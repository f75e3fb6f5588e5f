//! Owners as netdrop names them, on the public dumps of real nodes (see
//! tests/fixtures/iptables/INDEX.md): a packet walked to its drop names
//! the agent that wrote the rule; every rule of an agent's chains, and the
//! rule that feeds a packet into them, is that agent's.

use std::path::PathBuf;

use netdrop_model::{
    Hook, Owner, OwnerContext, Packet, Ruleset, Verdict, attribute, parse_ruleset,
};

fn dump(name: &str) -> Ruleset {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/iptables")
        .join(name);
    parse_ruleset(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The owner of every rule of `table` whose chain, or jump target, starts
/// with `prefix`; and how many there are.
fn owners_of(rs: &Ruleset, table: &str, prefix: &str) -> (Vec<Owner>, usize) {
    let ctx = OwnerContext::new(rs, None);
    let t = &rs.tables[table];
    let mut out = Vec::new();
    for c in &t.chains {
        for r in &c.rules {
            if c.name.starts_with(prefix) || r.text.contains(&format!("-j {prefix}")) {
                out.push(ctx.rule_owner(&c.name, r));
            }
        }
    }
    let n = out.len();
    out.sort_by_key(|o| o.as_str());
    out.dedup();
    (out, n)
}

#[test]
fn kubelets_firewall_drops_marked_packets_on_a_kind_node() {
    let rs = dump("ericpuwang-kind-v1.23-kindnet-traefik.rules");
    let owners = OwnerContext::new(&rs, None);
    // A packet kube-proxy marked for dropping (KUBE-MARK-DROP, 0x8000).
    let mut p = Packet::new(
        Hook::Input,
        6,
        "10.244.1.5".parse().unwrap(),
        "172.18.0.2".parse().unwrap(),
    );
    p.mark = 0x8000;
    p.dport = Some(80);
    p.sport = Some(40000);
    p.in_iface = Some("eth0".into());
    let d = attribute(None, &rs, &owners, &p, 1, None).unwrap().decision;
    assert_eq!(
        (d.chain.as_str(), d.rule.as_deref(), d.verdict, d.owner),
        (
            "KUBE-FIREWALL",
            Some(
                "-A KUBE-FIREWALL -m comment --comment \"kubernetes firewall for dropping marked packets\" -m mark --mark 0x8000/0x8000 -j DROP"
            ),
            Verdict::Drop,
            Owner::Kubelet
        )
    );
}

#[test]
fn kindnets_masquerade_chain_is_kindnets() {
    let rs = dump("ericpuwang-kind-v1.23-kindnet-traefik.rules");
    let (owners, n) = owners_of(&rs, "nat", "KIND-");
    assert_eq!(n, 3, "the feeder rule and KIND-MASQ-AGENT's two");
    assert_eq!(owners, [Owner::Kindnet]);
}

#[test]
fn ciliums_chains_and_feeders_are_ciliums() {
    let rs = dump("indexdoc-rke-cilium-ipvs-garbled-dnat.rules");
    for table in ["filter", "nat"] {
        let (owners, n) = owners_of(&rs, table, "CILIUM_");
        assert!(n >= 3, "{table}: {n} rules");
        assert_eq!(owners, [Owner::Cilium], "{table}");
    }
}

#[test]
fn kube_routers_pod_firewalls_and_the_cni_hostport_chains_on_a_k3s_node() {
    let rs = dump("ytdl-k3s-pi-nft-kuberouter-netpol-flannel.rules");
    for prefix in ["KUBE-POD-FW-", "KUBE-NWPLCY-", "KUBE-ROUTER-"] {
        let (owners, n) = owners_of(&rs, "filter", prefix);
        assert!(n > 0, "{prefix}");
        assert_eq!(owners, [Owner::KubeRouter], "{prefix}");
    }
    let (owners, n) = owners_of(&rs, "nat", "CNI-");
    assert!(n > 0);
    assert_eq!(owners, [Owner::CniPlugin]);
}

#[test]
fn calicos_chains_are_calicos() {
    let rs = dump("indexdoc-calico-ipvs-nat-leftover-kube-sep-chains.rules");
    let (owners, n) = owners_of(&rs, "nat", "cali-");
    assert!(n > 0);
    assert_eq!(owners, [Owner::Calico]);
}
