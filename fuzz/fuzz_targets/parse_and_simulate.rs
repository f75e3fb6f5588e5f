//! Any text given as an iptables-save dump: the parser returns a ruleset or
//! an error with a line number, and simulating a packet through whatever it
//! parsed, then checking it, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netdrop::explain::check::check_node;
use netdrop_model::{Hook, Packet, check::{Cluster, NodeFacts}, parse_ruleset, simulate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(rs) = parse_ruleset(text) else { return };
    for hook in [Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output, Hook::Postrouting] {
        let mut p = Packet::new(hook, 6, "10.224.1.2".parse().unwrap(), "10.224.2.2".parse().unwrap());
        p.dport = Some(80);
        let _ = simulate(&rs, &p);
    }
    let _ = check_node([&rs], &Cluster::new(vec!["10.224.0.0/16".parse().unwrap()]), &NodeFacts::default());
});
