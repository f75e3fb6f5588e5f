//! Any text given as an iptables-save dump, or as `nft -j list ruleset`
//! JSON: the parsers return a ruleset or an error, and walking packets
//! through whatever they parsed, resolving their drops and checking the
//! ruleset never panics (nor runs away: the walk's budgets cut
//! pathological rulesets short). A fix for each drop (an accept before
//! its rule) is read, applied and walked too, as `explain` does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netdrop_model::{
    Decision, Hook, OwnerContext, Packet, Ruleset,
    check::{Cluster, NodeShape, check},
    edit::parse_command,
    fix::check_fix,
    nft::{parse_nft_json, rule_texts},
    parse_ruleset, simulate, simulate_path,
};

fn walk(rs: &Ruleset) {
    let owners = OwnerContext::new(rs, Some(vec!["eth0".into(), "cni0".into()]));
    for hook in Hook::ALL {
        for (proto, dport) in [(6, Some(80)), (17, Some(8472)), (1, None)] {
            let mut p = Packet::new(hook, proto, "10.224.1.2".parse().unwrap(), "10.224.2.2".parse().unwrap());
            p.dport = dport;
            p.in_iface = Some("cni0".into());
            for o in simulate(rs, &p).iter().filter(|o| o.verdict.is_drop()) {
                let _ = Decision::of(rs, &owners, o);
            }
            let cluster = Cluster::new(vec!["10.224.0.0/16".parse().unwrap()]);
            let outcomes = simulate_path(rs, &p);
            // Which questions change the verdict: over any walk's forks.
            let _ = netdrop_model::simulate::depends(&outcomes);
            for o in outcomes.iter().filter(|o| o.verdict.is_drop()) {
                let d = Decision::of(rs, &owners, o);
                let (Some(site), Some(n)) = (o.decider(), d.rule_no) else {
                    continue;
                };
                let cmd = format!("iptables -t {} -I {} {n} -s 10.224.0.0/16 -j ACCEPT", site.table, site.chain);
                if let Ok(e) = parse_command(&cmd) {
                    let _ = check_fix(rs, &cluster, &o.packet, site, &[e]);
                }
            }
        }
    }
    let cluster = Cluster::new(vec!["10.224.0.0/16".parse().unwrap()]);
    let _ = check(rs, &owners, &cluster, &NodeShape::flannel_default(8472));
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(rs) = parse_ruleset(text) {
        walk(&rs);
    }
    let _ = rule_texts(text);
    if let Ok(native) = parse_nft_json(text, &Default::default(), |_, _| false) {
        let mut rs = Ruleset::default();
        for t in native.v4 {
            rs.tables.insert(t.name.clone(), t);
        }
        walk(&rs);
    }
});
