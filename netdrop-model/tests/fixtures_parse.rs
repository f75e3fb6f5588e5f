//! Every public iptables-save dump in tests/fixtures/iptables (copied from
//! shared/fixtures, see its INDEX.md) parses, with every rule and chain.

use std::path::PathBuf;

use netdrop_model::{parse_ruleset, rules::Match};

fn fixtures() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/iptables");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "rules"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 16, "fixtures missing from {}", dir.display());
    out
}

#[test]
fn every_fixture_parses_with_all_rules_and_chains() {
    for (name, text) in fixtures() {
        let rs = parse_ruleset(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want_rules = text
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                let l = if l.starts_with('[') {
                    l.split_once(']').map_or(l, |(_, r)| r.trim_start())
                } else {
                    l
                };
                l.starts_with("-A ")
            })
            .count();
        let got_rules: usize = rs
            .tables
            .values()
            .flat_map(|t| &t.chains)
            .map(|c| c.rules.len())
            .sum();
        assert_eq!(got_rules, want_rules, "{name}: rules");
        let declared = text.lines().filter(|l| l.starts_with(':')).count();
        let got_declared = rs
            .tables
            .values()
            .flat_map(|t| &t.chains)
            .filter(|c| c.declared)
            .count();
        assert_eq!(got_declared, declared, "{name}: declared chains");
    }
}

#[test]
fn fixture_quirks_are_understood() {
    let all: std::collections::HashMap<_, _> = fixtures().into_iter().collect();
    let parse = |n: &str| parse_ruleset(&all[n]).unwrap();

    // Counters on every rule (iptables-save -c).
    let k3s = parse("blogpost-iptables-introduction-k3s-counters.rules");
    assert!(
        k3s.tables["nat"]
            .chain("PREROUTING")
            .unwrap()
            .rules
            .iter()
            .all(|r| r.counters.is_some())
    );

    // Unquoted multi-word kube-proxy comments stay one comment.
    let overall = parse("k8s-cleanup-test-initial-state-with-foreign-rules.rules");
    let comments: Vec<String> = overall
        .tables
        .values()
        .flat_map(|t| &t.chains)
        .flat_map(|c| &c.rules)
        .filter_map(|r| r.comment())
        .collect();
    assert!(
        comments.iter().any(|c| c == "kubernetes service portals"),
        "{comments:?}"
    );

    // Backslash-escaped quote inside a quoted comment (kube-router).
    let ytdl = parse("ytdl-k3s-pi-nft-kuberouter-netpol-flannel.rules");
    assert!(
        ytdl.generator
            .as_deref()
            .unwrap_or("")
            .contains("nf_tables")
    );
    let c: Vec<String> = ytdl
        .tables
        .values()
        .flat_map(|t| &t.chains)
        .flat_map(|c| &c.rules)
        .filter_map(|r| r.comment())
        .collect();
    assert!(c.iter().any(|c| c.contains("pod's")), "escaped quote lost");

    // IPv6 dump.
    let v6 = parse("ytdl-k3s-pi-nft-kuberouter-netpol-flannel.ip6.rules");
    assert_eq!(v6.family, netdrop_model::Family::Ipv6);

    // Fragment with `...` elisions and no *filter: parsed as filter, with warnings.
    let arm = parse("kube-arm-issue62-forward-drop-no-cni0-partial.rules");
    assert!(arm.tables.contains_key("filter"));
    assert!(arm.warnings.iter().any(|w| w.message.contains("elided")));

    // Masked x.x.x.x addresses are kept unmodelled, not fatal.
    let jj = parse("jijisa-2017-kube-proxy-externalip-dns-bind.rules");
    let unmodelled = jj
        .tables
        .values()
        .flat_map(|t| &t.chains)
        .flat_map(|c| &c.rules)
        .flat_map(|r| &r.matches)
        .filter(|m| matches!(m, Match::Unmodelled { .. }))
        .count();
    assert!(unmodelled > 0);

    // Rule without a target, garbled DNAT arguments.
    let rke = parse("indexdoc-rke-cilium-ipvs-garbled-dnat.rules");
    assert!(rke.tables.contains_key("nat"));
}

/// Found by `cargo fuzz`: a garbled dump whose chains jump in loops. The walk
/// must end (with the branch flagged), not run for minutes.
#[test]
fn fuzz_found_jump_loop_is_cut_short_and_flagged() {
    use netdrop_model::{Hook, Packet, simulate};
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz/jump-loop-timeout.rules");
    let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
    let rs = parse_ruleset(&text).unwrap();
    let mut pkt = Packet::new(
        Hook::Input,
        6,
        "10.224.1.2".parse().unwrap(),
        "10.224.2.2".parse().unwrap(),
    );
    pkt.dport = Some(443);
    let out = simulate(&rs, &pkt);
    assert!(!out.is_empty());
    assert!(
        out.iter().any(|o| o.unmodelled),
        "a cut-short walk is flagged"
    );
    // Its chains jump into themselves: each loop is cut where it closes
    // and said (walking it until the step budget ran out took 70 ms a
    // walk, and timed the fuzzer out, once every unknown was decided once).
    assert!(
        out.iter()
            .flat_map(|o| &o.assumptions)
            .any(|a| matches!(a, netdrop_model::question::Assumption::JumpLoop { .. })),
        "{out:#?}"
    );
}
