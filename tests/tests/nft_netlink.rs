//! Native nftables tables read straight from the kernel over netlink read
//! exactly as nft lists them: every fixture (real firewalld, kube-proxy's
//! own test ruleset, flannel's table, a generated kube-proxy table) loaded
//! with Debian's `nft -f` into a namespace, then read both ways; every
//! rule's statements, every named set's elements and every model rule
//! must be the same.

use std::collections::BTreeMap;
use std::process::Command;

use netdrop_tests::{Lab, TempPath, require_root};
use serde_json::Value;

const FIXTURES: [&str; 4] = [
    "debian12-firewalld-1.3.3-default.json",
    "k8s-nftables-proxier-test-overall.nft",
    "flannel-nftables-mode.nft",
    "netdrop-coverage.nft",
];

fn key(item: &Value, kind: &str) -> Option<String> {
    let o = item.get(kind)?;
    Some(format!(
        "{} {} {} {}",
        o["family"].as_str()?,
        o["table"].as_str()?,
        o.get("chain")
            .and_then(Value::as_str)
            .or(o["name"].as_str())?,
        o.get("handle").map(Value::to_string).unwrap_or_default()
    ))
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| a.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn tables_read_over_netlink_are_the_ones_nft_lists() {
    require_root!();
    let mut lab = Lab::new("nfl");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../netdrop-model/tests/fixtures/nft");
    // Removed even when an assertion fails.
    let generated = TempPath::file(
        "nfl",
        &netdrop_model::generate::kube_proxy_nft_ruleset(50, 3),
    );
    let mut files: Vec<std::path::PathBuf> = FIXTURES.iter().map(|f| dir.join(f)).collect();
    files.push(generated.0.clone());
    for (i, file) in files.iter().enumerate() {
        let ns = lab.netns(&format!("t{i}")).unwrap();
        let json = file.extension().is_some_and(|e| e == "json");
        let mut load = vec!["nft"];
        if json {
            load.push("-j");
        }
        load.extend(["-f", file.to_str().unwrap()]);
        let out = lab.exec(&ns, &load).unwrap();
        assert!(out.status.success(), "{out:?}");

        let tables = netdrop::attribute::rules::nf_tables::tables(Some(&ns)).unwrap();
        let ours = netdrop::attribute::rules::nf_tables::read_items(Some(&ns), &tables).unwrap();
        let listed = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-j", "list", "ruleset"])
            .output()
            .unwrap();
        let nft: Value = serde_json::from_slice(&listed.stdout).unwrap();
        let nft = nft["nftables"].as_array().unwrap().clone();

        // Every rule's statements, by table, chain and handle.
        let rules = |items: &[Value]| -> BTreeMap<String, Value> {
            items
                .iter()
                .filter_map(|it| Some((key(it, "rule")?, it["rule"]["expr"].clone())))
                .collect()
        };
        let (a, b) = (rules(&ours), rules(&nft));
        // Positive control: nft listed rules to compare (two empty maps
        // would agree on nothing).
        assert!(!b.is_empty(), "{file:?}: nft listed no rules");
        assert_eq!(a.len(), b.len(), "{file:?}: rule count");
        let differ: Vec<_> = b
            .iter()
            .filter(|(k, v)| a.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}\n  nft:     {v}\n  netlink: {}",
                    a.get(k).unwrap_or(&Value::Null)
                )
            })
            .collect();
        assert!(differ.is_empty(), "{file:?}:\n{}", differ.join("\n"));
        // Comments too.
        let comments = |items: &[Value]| -> BTreeMap<String, Value> {
            items
                .iter()
                .filter_map(|it| Some((key(it, "rule")?, it["rule"]["comment"].clone())))
                .collect()
        };
        assert_eq!(comments(&ours), comments(&nft), "{file:?}: rule comments");
        // Every named set's and map's elements.
        let sets = |items: &[Value]| -> BTreeMap<String, Vec<String>> {
            items
                .iter()
                .filter_map(|it| {
                    let s = it.get("set").or_else(|| it.get("map"))?;
                    Some((format!("{} {}", s["table"], s["name"]), sorted(&s["elem"])))
                })
                .collect()
        };
        assert_eq!(sets(&ours), sets(&nft), "{file:?}: set elements");
        // Chains: base chains with hook, priority and policy.
        let chains = |items: &[Value]| -> BTreeMap<String, Value> {
            items
                .iter()
                .filter_map(|it| {
                    let c = it.get("chain")?;
                    Some((
                        format!("{} {}", c["table"], c["name"]),
                        serde_json::json!([c["hook"], c["prio"], c["policy"], c["type"]]),
                    ))
                })
                .collect()
        };
        assert_eq!(chains(&ours), chains(&nft), "{file:?}: chains");
        // And so the model: every chain's rules, texts and matches.
        let model = |t: netdrop_model::nft::NativeTables| -> BTreeMap<String, Vec<String>> {
            t.v4.iter()
                .chain(t.v6.iter())
                .flat_map(|t| {
                    t.chains.iter().map(move |c| {
                        let mut rules: Vec<String> = c
                            .rules
                            .iter()
                            .map(|r| format!("{} {:?} {:?}", r.text, r.matches, r.target))
                            .collect();
                        rules.sort();
                        (format!("{:?} {} {}", t.family, t.name, c.name), rules)
                    })
                })
                .collect()
        };
        let from_nft = netdrop_model::nft::parse_nft_json(
            &String::from_utf8_lossy(&listed.stdout),
            &Default::default(),
            |_, _| false,
        )
        .unwrap();
        assert_eq!(
            model(netdrop_model::nft::parse_nft_items(ours)),
            model(from_nft),
            "{file:?}: model"
        );
    }
}
