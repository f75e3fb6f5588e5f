//! Any text given as an iptables-save dump, or as `nft -j list ruleset`
//! JSON: the parsers return a ruleset or an error, and walking packets
//! through whatever they parsed, resolving their drops and checking the
//! ruleset never panics (nor runs away: the walk's budgets cut
//! pathological rulesets short).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netdrop_model::{
    Decision, Hook, OwnerContext, Packet, Ruleset,
    check::{Cluster, check},
    nft::{parse_nft_json, rule_texts},
    parse_ruleset, simulate,
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
        }
    }
    let _ = check(rs, &owners, &Cluster::new(vec!["10.224.0.0/16".parse().unwrap()]));
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
