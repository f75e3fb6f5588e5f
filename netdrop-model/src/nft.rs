//! Native nftables tables (`nft -j list ruleset`) into the same model as
//! iptables': tables (named `<family> <name>`, e.g. `inet firewalld`),
//! base chains with their hook, priority, type and policy, rules with
//! typed matches and a verdict. What nftables can say and the model cannot
//! evaluate is kept as an unmodelled match (the walk branches on it and
//! says so), never guessed.
//!
//! Tables that `iptables-nft` manages are left to `iptables-save`, which
//! prints them as iptables rules: the caller names them.

use std::collections::HashMap;

use ipnet::IpNet;
use serde_json::Value;

use crate::{
    rules::{
        BaseChain, Chain, Counters, CtState, IfacePattern, MarkOp, Match, Policy, PortSide, Rule,
        Table, Target, proto_number,
    },
    words::{Family, Hook},
};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("not nft JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no `nftables` array in the JSON")]
    Shape,
}

/// The native tables of a ruleset, for IPv4 packets and for IPv6 ones
/// (an `inet` table is in both).
#[derive(Clone, Debug, Default)]
pub struct NativeTables {
    pub v4: Vec<Table>,
    pub v6: Vec<Table>,
}

/// Rule texts as `nft -a list ruleset` prints them, by (table key, chain,
/// handle).
pub type RuleTexts = HashMap<(String, String, u64), String>;

/// Reads `nft -a list ruleset` output: each rule's text by its handle.
pub fn rule_texts(listing: &str) -> RuleTexts {
    let mut out = HashMap::new();
    // The open blocks: `table inet firewalld {`, `chain x {`, `set s {`...
    let mut open: Vec<(&str, String)> = Vec::new();
    for line in listing.lines() {
        let t = line.trim();
        let body = t.split(" # handle ").next().unwrap_or(t).trim();
        if let Some(head) = body.strip_suffix('{') {
            let mut words = head.split_whitespace();
            match words.next() {
                Some("table") => {
                    let name: Vec<&str> = words.take(2).collect();
                    open.push(("table", name.join(" ")));
                }
                Some(kind) => open.push((
                    if kind == "chain" { "chain" } else { "other" },
                    words.next().unwrap_or("").trim_matches('"').to_owned(),
                )),
                None => open.push(("other", String::new())),
            }
            continue;
        }
        if t == "}" {
            open.pop();
            continue;
        }
        let (Some(("table", tb)), Some(("chain", ch))) = (
            open.first().map(|(k, n)| (*k, n)),
            open.get(1).map(|(k, n)| (*k, n)),
        ) else {
            continue;
        };
        if open.len() != 2 {
            continue;
        }
        if let Some((text, handle)) = t.rsplit_once(" # handle ")
            && let Ok(h) = handle.trim().parse::<u64>()
        {
            out.insert((tb.clone(), ch.clone(), h), without_counts(text.trim()));
        }
    }
    out
}

/// A rule's text without its counter's values (`counter packets 3 bytes
/// 252 drop` → `counter drop`): the text names the rule from one read to
/// the next.
fn without_counts(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut words = text.split(' ').peekable();
    while let Some(w) = words.next() {
        out.push(w);
        if w == "counter" {
            for field in ["packets", "bytes"] {
                if words.peek() == Some(&field) {
                    words.next();
                    words.next();
                }
            }
        }
    }
    out.join(" ")
}

/// Parses `nft -j list ruleset`. `skip(family, table)` names the tables to
/// leave out (those iptables-nft manages); `texts` gives rule texts (else
/// a rule is shown by its handle and JSON).
pub fn parse_nft_json(
    json: &str,
    texts: &RuleTexts,
    skip: impl Fn(&str, &str) -> bool + Sync,
) -> Result<NativeTables, NftError> {
    let mut b = Builder {
        texts,
        skip: &skip,
        tables: Vec::new(),
        sets: HashMap::new(),
        seen_list: false,
    };
    // Item by item, never the whole document as a tree: a 10k-Service
    // kube-proxy table is ~33 MB of JSON.
    let mut de = serde_json::Deserializer::from_str(json);
    serde::de::Deserializer::deserialize_map(&mut de, Top(&mut b))?;
    de.end()?;
    if !b.seen_list {
        return Err(NftError::Shape);
    }
    Ok(b.finish())
}

/// The tables of items as `nft -j` lists them (`{"table": …}`,
/// `{"chain": …}`, `{"set"|"map": …}`, `{"rule": …}`), from wherever
/// they were read (the kernel over netlink, here).
pub fn parse_nft_items(items: impl IntoIterator<Item = Value>) -> NativeTables {
    let mut b = NftItems::new();
    for item in items {
        b.push(item);
    }
    b.finish()
}

/// [`parse_nft_items`] an item at a time, as a reader produces them: no
/// list of items is ever held.
pub struct NftItems(Builder<'static>);

fn never(_: &str, _: &str) -> bool {
    false
}

static NO_TEXTS: std::sync::LazyLock<RuleTexts> = std::sync::LazyLock::new(RuleTexts::new);

impl Default for NftItems {
    fn default() -> Self {
        Self::new()
    }
}

impl NftItems {
    pub fn new() -> Self {
        Self(Builder {
            texts: &NO_TEXTS,
            skip: &never,
            tables: Vec::new(),
            sets: HashMap::new(),
            seen_list: true,
        })
    }

    pub fn push(&mut self, item: Value) {
        self.0.item(item);
    }

    pub fn finish(self) -> NativeTables {
        self.0.finish()
    }
}

impl Builder<'_> {
    fn finish(self) -> NativeTables {
        let b = self;
        let mut out = NativeTables::default();
        for mut t in b.tables {
            for c in &mut t.chains {
                c.seal();
            }
            match t.nft_family.as_deref() {
                Some("ip") => out.v4.push(t),
                Some("ip6") => {
                    out.v6.push(t);
                }
                _ => {
                    let mut v6 = t.clone();
                    v6.family = Family::Ipv6;
                    out.v4.push(t);
                    out.v6.push(v6);
                }
            }
        }
        out
    }
}

/// The model being built from nft's items, in the order nft lists them
/// (tables, sets and maps, chains, rules).
struct Builder<'a> {
    texts: &'a RuleTexts,
    skip: &'a (dyn Fn(&str, &str) -> bool + Sync),
    tables: Vec<Table>,
    sets: HashMap<(String, String), Vec<Value>>,
    seen_list: bool,
}

fn table_key(o: &Value) -> Option<String> {
    Some(format!(
        "{} {}",
        o["family"].as_str()?,
        o["table"].as_str()?
    ))
}

impl Builder<'_> {
    fn item(&mut self, item: Value) {
        if let Some(t) = item.get("table") {
            let (Some(fam), Some(name)) = (t["family"].as_str(), t["name"].as_str()) else {
                return;
            };
            if (self.skip)(fam, name) || !matches!(fam, "ip" | "ip6" | "inet") {
                return;
            }
            let mut table = Table::new(&format!("{fam} {name}"));
            table.nft_family = Some(fam.to_owned());
            table.family = if fam == "ip6" {
                Family::Ipv6
            } else {
                Family::Ipv4
            };
            self.tables.push(table);
        } else if let Some(c) = item.get("chain") {
            let (Some(tkey), Some(name)) = (table_key(c), c["name"].as_str()) else {
                return;
            };
            let Some(table) = self.tables.iter_mut().find(|t| t.name == tkey) else {
                return;
            };
            let base = c["hook"].as_str().and_then(hook_of).map(|hook| BaseChain {
                hook,
                priority: c["prio"].as_i64().unwrap_or(0) as i32,
                nat: c["type"] == "nat",
            });
            let policy = base.map(|_| match c["policy"].as_str() {
                Some("drop") => Policy::Drop,
                _ => Policy::Accept,
            });
            if table.chain(name).is_none() {
                table.push_chain(Chain {
                    name: name.to_owned(),
                    policy,
                    declared: true,
                    base,
                    ..Chain::default()
                });
            }
        } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
            let (Some(tkey), Some(name)) = (table_key(s), s["name"].as_str()) else {
                return;
            };
            let elems = s["elem"].as_array().cloned().unwrap_or_default();
            self.sets.insert((tkey, name.to_owned()), elems);
        } else if let Some(r) = item.get("rule") {
            self.rule(r);
        }
    }

    fn rule(&mut self, r: &Value) {
        let Some(tkey) = table_key(r) else { return };
        let (Some(chain_name), Some(exprs)) = (r["chain"].as_str(), r["expr"].as_array()) else {
            return;
        };
        let Some(table) = self.tables.iter_mut().find(|t| t.name == tkey) else {
            return;
        };
        let handle = r["handle"].as_u64();
        let text = handle
            .and_then(|h| {
                self.texts
                    .get(&(tkey.clone(), chain_name.to_owned(), h))
                    .cloned()
            })
            .unwrap_or_else(|| match r["comment"].as_str() {
                Some(c) => format!("{} comment \"{c}\"", render(exprs)),
                None => render(exprs),
            });
        let sets = &self.sets;
        let set_of = |name: &str| sets.get(&(tkey.clone(), name.to_owned()));
        let mut rules = rules_of(exprs, &set_of);
        for rule in &mut rules {
            rule.handle = handle;
            if rule.text.is_empty() {
                rule.text = text.clone();
            } else {
                rule.text = format!("{text} ({})", rule.text);
            }
            if let Some(c) = r["comment"].as_str() {
                rule.matches.push(Match::Comment(c.to_owned()));
            }
        }
        if table.chain(chain_name).is_none() {
            table.push_chain(Chain {
                name: chain_name.to_owned(),
                ..Chain::default()
            });
        }
        if let Some(chain) = table.chain_mut(chain_name) {
            chain.rules.extend(rules);
        }
    }
}

/// `{"nftables": [item, ...]}`, an item at a time.
struct Top<'b, 'a>(&'b mut Builder<'a>);

impl<'de> serde::de::Visitor<'de> for Top<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with an `nftables` array")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "nftables" {
                map.next_value_seed(Items(&mut *self.0))?;
                self.0.seen_list = true;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct Items<'b, 'a>(&'b mut Builder<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for Items<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Items<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the `nftables` array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Value>()? {
            self.0.item(item);
        }
        Ok(())
    }
}

fn hook_of(h: &str) -> Option<Hook> {
    Some(match h {
        "prerouting" => Hook::Prerouting,
        "input" => Hook::Input,
        "forward" => Hook::Forward,
        "output" => Hook::Output,
        "postrouting" => Hook::Postrouting,
        _ => return None,
    })
}

/// One nft rule as model rules: one, or for a verdict map one per element
/// (its match and verdict; the element in the text's suffix).
fn rules_of<'s>(exprs: &[Value], set_of: &dyn Fn(&str) -> Option<&'s Vec<Value>>) -> Vec<Rule> {
    let mut matches = Vec::new();
    let mut target = Target::None;
    let mut notrack = false;
    let mut counters = None;
    let mut vmap: Option<(Value, Vec<(Value, Value)>)> = None;
    for e in exprs {
        let Some((kind, body)) = e.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        match kind.as_str() {
            "match" => matches.extend(match_of(body, set_of)),
            "counter" => {
                counters = Some(Counters {
                    packets: body["packets"].as_u64().unwrap_or(0),
                    bytes: body["bytes"].as_u64().unwrap_or(0),
                })
            }
            "accept" => target = Target::Accept,
            "drop" => target = Target::Drop,
            "return" => target = Target::Return,
            "continue" => {}
            "jump" => target = Target::Jump(body["target"].as_str().unwrap_or("").to_owned()),
            "goto" => target = Target::Goto(body["target"].as_str().unwrap_or("").to_owned()),
            "reject" => {
                let with = match (body["type"].as_str(), body["expr"].as_str()) {
                    (Some(t), Some(x)) => Some(format!("{t} {x}")),
                    (Some("tcp reset"), None) => Some("tcp reset".into()),
                    (Some(t), None) => Some(t.to_owned()),
                    _ => None,
                };
                target = Target::Reject { with };
            }
            "masquerade" => target = Target::Masquerade,
            "snat" | "dnat" => {
                let to = match (body["addr"].as_str(), body["port"].as_u64()) {
                    (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
                    (Some(a), Some(p)) => format!("{a}:{p}"),
                    (Some(a), None) => a.to_owned(),
                    _ => body.to_string(),
                };
                target = if kind == "snat" {
                    Target::Snat { to }
                } else {
                    Target::Dnat { to }
                };
            }
            "log" => {
                if target == Target::None {
                    target = Target::Log;
                }
            }
            "limit" => matches.push(Match::Limit {
                rate: body.to_string(),
            }),
            "mangle" if body["key"]["meta"]["key"] == "mark" => {
                let v = &body["value"];
                let op = |k: &str| -> Option<u32> {
                    let a = v.get(k)?.as_array()?;
                    (a.first()?["meta"]["key"] == "mark").then_some(())?;
                    Some(a.get(1)?.as_u64()? as u32)
                };
                match (v.as_u64(), op("|"), op("^"), op("&")) {
                    (Some(x), ..) => {
                        target = Target::Mark(MarkOp::SetXmark {
                            value: x as u32,
                            mask: u32::MAX,
                        })
                    }
                    (_, Some(x), ..) => target = Target::Mark(MarkOp::Or(x)),
                    (_, _, Some(x), _) => target = Target::Mark(MarkOp::Xor(x)),
                    (_, _, _, Some(x)) => target = Target::Mark(MarkOp::And(x)),
                    _ => matches.push(unmodelled(e)),
                }
            }
            "vmap" => {
                let elems: Vec<(Value, Value)> = match &body["data"] {
                    Value::String(s) => s
                        .strip_prefix('@')
                        .and_then(set_of)
                        .map(|v| pairs(v))
                        .unwrap_or_default(),
                    d => pairs(d["set"].as_array().map(Vec::as_slice).unwrap_or(&[])),
                };
                vmap = Some((body["key"].clone(), elems));
            }
            "notrack" => notrack = true,
            // Statements that do not change the verdict.
            "ct helper" | "meter" | "set" => {}
            _ => matches.push(unmodelled(e)),
        }
    }
    // `notrack` alone: the packet goes on untracked (with a verdict in the
    // same rule, the verdict is what the model keeps).
    if notrack && target == Target::None {
        target = Target::NoTrack;
    }
    let Some((key, elems)) = vmap else {
        return vec![Rule {
            line: 0,
            handle: None,
            text: String::new(),
            counters,
            matches,
            target,
        }];
    };
    // A verdict map: one rule per element, its key == element.
    elems
        .into_iter()
        .filter_map(|(k, verdict)| {
            let target = match verdict.as_object()?.iter().next()? {
                (v, _) if v == "accept" => Target::Accept,
                (v, _) if v == "drop" => Target::Drop,
                (v, _) if v == "return" => Target::Return,
                (v, b) if v == "jump" => Target::Jump(b["target"].as_str()?.to_owned()),
                (v, b) if v == "goto" => Target::Goto(b["target"].as_str()?.to_owned()),
                _ => return None,
            };
            let comment = k["elem"]["comment"].as_str().map(str::to_owned);
            let val = element_value(&k);
            let mut m = matches.clone();
            match key.get("numgen") {
                // `numgen random mod N vmap { 0 : …, 1 : … }`: one element
                // in N, by chance (kube-proxy's endpoint choice).
                Some(ng) if ng["mode"] == "random" => m.push(Match::Statistic {
                    probability: ng["mod"]
                        .as_u64()
                        .filter(|n| *n > 0)
                        .map(|n| 1.0 / n as f64),
                    every: None,
                }),
                _ => m.extend(match_of(
                    &serde_json::json!({"op": "==", "left": key, "right": val}),
                    set_of,
                )),
            }
            if let Some(c) = comment {
                m.push(Match::Comment(c));
            }
            Some(Rule {
                line: 0,
                handle: None,
                text: format!("element {}", value_text(&val)),
                counters,
                matches: m,
                target,
            })
        })
        .collect()
}

/// A value as nft prints it: `10.0.0.0/8`, `1-1024`, `tcp . 3001`.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Object(o) if o.contains_key("prefix") => {
            format!("{}/{}", show(&o["prefix"]["addr"]), o["prefix"]["len"])
        }
        Value::Object(o) if o.contains_key("range") => {
            format!(
                "{}-{}",
                value_text(&o["range"][0]),
                value_text(&o["range"][1])
            )
        }
        Value::Object(o) if o.contains_key("concat") => o["concat"]
            .as_array()
            .map(|a| a.iter().map(value_text).collect::<Vec<_>>().join(" . "))
            .unwrap_or_default(),
        other => other.to_string(),
    }
}

/// A rule in nft's own words, as near as `nft list` prints it, for
/// rulesets read from JSON alone (a live read takes nft's own text).
pub fn render(exprs: &[Value]) -> String {
    let value = value_text;
    let verdict = |v: &Value| -> String {
        match v.as_object().and_then(|o| o.iter().next()) {
            Some((k, b)) if k == "jump" || k == "goto" => format!("{k} {}", show(&b["target"])),
            Some((k, _)) => k.clone(),
            None => v.to_string(),
        }
    };
    let right = |v: &Value| -> String {
        match v {
            Value::Object(o) if o.contains_key("set") => {
                let items: Vec<String> = o["set"]
                    .as_array()
                    .map(|a| a.iter().map(|e| value(&element_value(e))).collect())
                    .unwrap_or_default();
                format!("{{ {} }}", items.join(", "))
            }
            Value::Array(a) => a.iter().map(value).collect::<Vec<_>>().join(","),
            Value::String(s)
                if !s.starts_with('@') && s.chars().any(|c| c.is_ascii_alphabetic()) =>
            {
                s.clone()
            }
            v => value(v),
        }
    };
    fn left(v: &Value) -> String {
        if let Some(parts) = v.get("concat").and_then(Value::as_array) {
            return parts.iter().map(left).collect::<Vec<_>>().join(" . ");
        }
        if let Some(n) = v.get("numgen") {
            return format!("numgen {} mod {}", show(&n["mode"]), n["mod"]);
        }
        if let Some(f) = v.get("fib") {
            let flags: Vec<String> = f["flags"]
                .as_array()
                .map(|a| a.iter().map(show).collect())
                .unwrap_or_default();
            return format!("fib {} {}", flags.join(" . "), show(&f["result"]));
        }
        if let Some(a) = v.get("&").and_then(Value::as_array) {
            return format!(
                "{} & {:#010x}",
                a.first().map(left).unwrap_or_default(),
                a.get(1).and_then(Value::as_u64).unwrap_or(0)
            );
        }
        if let Some(m) = v.get("meta") {
            let k = show(&m["key"]);
            if matches!(k.as_str(), "iifname" | "oifname" | "iif" | "oif") {
                k
            } else {
                format!("meta {k}")
            }
        } else if let Some(p) = v.get("payload") {
            format!("{} {}", show(&p["protocol"]), show(&p["field"]))
        } else if let Some(c) = v.get("ct") {
            format!("ct {}", show(&c["key"]))
        } else {
            v.to_string()
        }
    }
    let mut words = Vec::new();
    for e in exprs {
        let Some((kind, body)) = e.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        words.push(match kind.as_str() {
            "match" => {
                let op = match body["op"].as_str() {
                    Some("!=") => "!= ",
                    _ => "",
                };
                if body["left"].get("&").is_some() {
                    let v = body["right"].as_u64().unwrap_or(0);
                    let op = if op.is_empty() { "== " } else { op };
                    words.push(format!("{} {op}{v:#010x}", left(&body["left"])));
                    continue;
                }
                let mut r = match (&body["right"], body["left"].get("fib")) {
                    (Value::Bool(false), Some(_)) => "missing".to_owned(),
                    (Value::Bool(true), Some(_)) => "exists".to_owned(),
                    // A one-element set reads as its element.
                    (Value::Object(o), _)
                        if o.get("set")
                            .and_then(Value::as_array)
                            .is_some_and(|a| a.len() == 1) =>
                    {
                        value(&element_value(&o["set"][0]))
                    }
                    (v, _) => right(v),
                };
                if body["left"]
                    .get("meta")
                    .is_some_and(|m| matches!(m["key"].as_str(), Some("iifname" | "oifname")))
                    && !r.starts_with('{')
                {
                    r = format!("\"{r}\"");
                }
                // Marks print as 32-bit hex (`meta mark 0x00004000`).
                let is_mark = |k: &str| body["left"].get(k).is_some_and(|m| m["key"] == "mark");
                if (is_mark("meta") || is_mark("ct"))
                    && let Some(n) = body["right"].as_u64()
                {
                    r = format!("{n:#010x}");
                }
                format!("{} {op}{r}", left(&body["left"]))
            }
            "masquerade" => match &body["flags"] {
                Value::String(f) => format!("masquerade {f}"),
                Value::Array(a) => format!(
                    "masquerade {}",
                    a.iter().map(show).collect::<Vec<_>>().join(",")
                ),
                _ => "masquerade".into(),
            },
            "accept" | "drop" | "return" | "continue" | "counter" | "log" => kind.clone(),
            "jump" | "goto" => format!("{kind} {}", show(&body["target"])),
            "vmap" => {
                let data = match &body["data"] {
                    Value::String(m) => m.clone(),
                    d => {
                        let items: Vec<String> = d["set"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|p| {
                                        let p = p.as_array()?;
                                        Some(format!(
                                            "{} : {}",
                                            value(&element_value(p.first()?)),
                                            verdict(p.get(1)?)
                                        ))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        format!("{{ {} }}", items.join(", "))
                    }
                };
                format!("{} vmap {data}", left(&body["key"]))
            }
            "dnat" | "snat" => match (body["addr"].as_str(), body["port"].as_u64()) {
                (Some(a), Some(p)) => format!("{kind} to {a}:{p}"),
                (Some(a), None) => format!("{kind} to {a}"),
                _ => e.to_string(),
            },
            "mangle" if body["key"]["meta"]["key"] == "mark" => {
                let v = &body["value"];
                match (v.as_u64(), v.get("|"), v.get("^")) {
                    (Some(x), ..) => format!("meta mark set {x:#010x}"),
                    (_, Some(a), _) => {
                        format!(
                            "meta mark set meta mark | {:#010x}",
                            a[1].as_u64().unwrap_or(0)
                        )
                    }
                    (_, _, Some(a)) => {
                        format!(
                            "meta mark set meta mark ^ {:#010x}",
                            a[1].as_u64().unwrap_or(0)
                        )
                    }
                    _ => e.to_string(),
                }
            }
            "reject" => match (body["type"].as_str(), body["expr"].as_str()) {
                // nft leaves the default unsaid.
                (Some("icmp" | "icmpx" | "icmpv6"), Some("port-unreachable")) => "reject".into(),
                (Some(t), Some(x)) => format!("reject with {t} {x}"),
                _ => "reject".into(),
            },
            "set" if body["op"] == "update" => {
                format!(
                    "update {} {{ {} }}",
                    show(&body["set"]),
                    left(&body["elem"])
                )
            }
            _ => e.to_string(),
        });
    }
    words.join(" ")
}

/// (key, verdict) pairs of a map's elements.
fn pairs(elems: &[Value]) -> Vec<(Value, Value)> {
    elems
        .iter()
        .filter_map(|e| {
            let a = e.as_array()?;
            Some((a.first()?.clone(), a.get(1)?.clone()))
        })
        .collect()
}

/// A set element's value (`{"elem": {"val": X, "comment": ..}}` → X).
fn element_value(v: &Value) -> Value {
    match v.get("elem") {
        Some(e) => e["val"].clone(),
        None => v.clone(),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn unmodelled(e: &Value) -> Match {
    Match::Unmodelled {
        text: e.to_string(),
    }
}

/// The typed match(es) of one nft `match` expression.
fn match_of<'s>(body: &Value, set_of: &dyn Fn(&str) -> Option<&'s Vec<Value>>) -> Vec<Match> {
    let neg = match body["op"].as_str() {
        Some("==" | "in") => false,
        Some("!=") => true,
        _ => return vec![unmodelled_match(body)],
    };
    let left = &body["left"];
    // The values on the right: one, an anonymous set, or a named one.
    let values: Vec<Value> = match &body["right"] {
        Value::String(s) if s.starts_with('@') => match set_of(&s[1..]) {
            Some(v) => v.iter().map(element_value).collect(),
            None => return vec![unmodelled_match(body)],
        },
        Value::Object(o) if o.contains_key("set") => o["set"]
            .as_array()
            .map(|a| a.iter().map(element_value).collect())
            .unwrap_or_default(),
        Value::Array(a) => a.clone(),
        v => vec![v.clone()],
    };
    let one_of = |neg: bool, options: Vec<Option<Match>>| -> Option<Match> {
        let options: Option<Vec<Match>> = options.into_iter().collect();
        let mut options = options?;
        Some(if options.len() == 1 && !neg {
            options.remove(0)
        } else {
            Match::OneOf { neg, options }
        })
    };
    // The values as IP protocols (`meta l4proto`, `ip protocol`, `ip6 nexthdr`).
    let protos = || -> Vec<Option<Match>> {
        values
            .iter()
            .map(|v| {
                Some(Match::Proto {
                    neg: false,
                    proto: proto_value(v)?,
                })
            })
            .collect()
    };
    let typed: Option<Vec<Match>> = if let Some(parts) =
        left.get("concat").and_then(Value::as_array)
    {
        // `a . b . c` equal to one of the elements: each element is the
        // conjunction of its parts' matches.
        let options: Option<Vec<Match>> = values
            .iter()
            .map(|v| {
                let vals = v.get("concat")?.as_array()?;
                if vals.len() != parts.len() {
                    return None;
                }
                let mut all = Vec::new();
                for (l, r) in parts.iter().zip(vals) {
                    let ms = match_of(
                        &serde_json::json!({"op": "==", "left": l, "right": r}),
                        set_of,
                    );
                    if ms.iter().any(|m| matches!(m, Match::Unmodelled { .. })) {
                        return None;
                    }
                    all.extend(ms);
                }
                Some(Match::AllOf { options: all })
            })
            .collect();
        options.map(|mut options| {
            vec![if options.len() == 1 && !neg {
                options.remove(0)
            } else {
                Match::OneOf { neg, options }
            }]
        })
    } else if let Some(fib) = left.get("fib") {
        // `fib saddr type local`: the source (or destination) is one of
        // the node's addresses.
        let flags: Vec<&str> = fib["flags"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match (fib["result"].as_str(), flags.as_slice(), values.as_slice()) {
            (Some("type"), [side @ ("saddr" | "daddr")], [Value::String(t)]) => {
                let cond = Some(Box::new(crate::rules::AddrTypeCond {
                    neg,
                    types: vec![t.to_ascii_uppercase()],
                }));
                let (src, dst) = if *side == "saddr" {
                    (cond, None)
                } else {
                    (None, cond)
                };
                Some(vec![Match::AddrType {
                    src,
                    dst,
                    limit_iface_in: false,
                    limit_iface_out: false,
                }])
            }
            _ => None,
        }
    } else if let Some(and) = left.get("&").and_then(Value::as_array) {
        // `mark and 0x4000 == 0`
        match (
            and.first(),
            and.get(1).and_then(Value::as_u64),
            values.as_slice(),
        ) {
            (Some(m), Some(mask), [Value::Number(v)]) if m["meta"]["key"] == "mark" => {
                Some(vec![Match::Mark {
                    neg,
                    value: v.as_u64().unwrap_or(0) as u32,
                    mask: mask as u32,
                }])
            }
            _ => None,
        }
    } else if let Some(meta) = left.get("meta") {
        match meta["key"].as_str() {
            Some(k @ ("iifname" | "oifname" | "iif" | "oif")) => {
                let inbound = k.starts_with('i');
                one_of(
                    neg,
                    values
                        .iter()
                        .map(|v| {
                            let pat = IfacePattern(v.as_str()?.replace('*', "+"));
                            Some(if inbound {
                                Match::InIface { neg: false, pat }
                            } else {
                                Match::OutIface { neg: false, pat }
                            })
                        })
                        .collect(),
                )
                .map(|m| vec![m])
            }
            Some("l4proto") => one_of(neg, protos()).map(|m| vec![m]),
            Some("nfproto") => match values.as_slice() {
                [Value::String(p)] if p == "ipv4" || p == "ipv6" => Some(vec![Match::NfProto {
                    neg,
                    v6: p == "ipv6",
                }]),
                _ => None,
            },
            Some("mark") => match values.as_slice() {
                [v] => v.as_u64().map(|m| {
                    vec![Match::Mark {
                        neg,
                        value: m as u32,
                        mask: u32::MAX,
                    }]
                }),
                _ => None,
            },
            _ => None,
        }
    } else if let Some(p) = left.get("payload") {
        let (proto, field) = (p["protocol"].as_str(), p["field"].as_str());
        match (proto, field) {
            (Some(fam @ ("ip" | "ip6")), Some(f @ ("saddr" | "daddr"))) => {
                let family = Match::NfProto {
                    neg: false,
                    v6: fam == "ip6",
                };
                one_of(
                    neg,
                    values
                        .iter()
                        .map(|v| {
                            let net = net_value(v)?;
                            Some(if f == "saddr" {
                                Match::Src { neg: false, net }
                            } else {
                                Match::Dst { neg: false, net }
                            })
                        })
                        .collect(),
                )
                .map(|m| vec![family, m])
            }
            (Some("ip"), Some("protocol")) | (Some("ip6"), Some("nexthdr")) => {
                one_of(neg, protos()).map(|m| vec![m])
            }
            (Some(l4 @ ("tcp" | "udp" | "sctp" | "th")), Some(f @ ("sport" | "dport"))) => {
                let ranges: Option<Vec<(u16, u16)>> = values.iter().map(port_range).collect();
                ranges.map(|ranges| {
                    let mut out = Vec::new();
                    if let Some(p) = proto_number(l4) {
                        out.push(Match::Proto {
                            neg: false,
                            proto: p,
                        });
                    }
                    out.push(Match::Port {
                        side: if f == "sport" {
                            PortSide::Src
                        } else {
                            PortSide::Dst
                        },
                        neg,
                        ranges,
                    });
                    out
                })
            }
            (Some(icmp @ ("icmp" | "icmpv6")), Some("type")) => one_of(
                neg,
                values
                    .iter()
                    .map(|v| {
                        Some(Match::IcmpType {
                            neg: false,
                            icmp_type: v.as_str()?.to_owned(),
                        })
                    })
                    .collect(),
            )
            .map(|m| {
                vec![
                    Match::Proto {
                        neg: false,
                        proto: if icmp == "icmp" { 1 } else { 58 },
                    },
                    m,
                ]
            }),
            _ => None,
        }
    } else if let Some(ct) = left.get("ct") {
        match ct["key"].as_str() {
            Some("state" | "status") => {
                let states: Option<Vec<CtState>> =
                    values.iter().map(|v| CtState::parse(v.as_str()?)).collect();
                states.map(|states| vec![Match::CtState { neg, states }])
            }
            _ => None,
        }
    } else {
        None
    };
    typed.unwrap_or_else(|| vec![unmodelled_match(body)])
}

fn unmodelled_match(body: &Value) -> Match {
    Match::Unmodelled {
        text: serde_json::json!({ "match": body }).to_string(),
    }
}

fn proto_value(v: &Value) -> Option<u8> {
    match v {
        Value::String(s) => proto_number(s),
        Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        _ => None,
    }
}

fn net_value(v: &Value) -> Option<IpNet> {
    match v {
        Value::String(s) => s
            .parse::<IpNet>()
            .ok()
            .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from)),
        Value::Object(o) => {
            let p = o.get("prefix")?;
            format!("{}/{}", p["addr"].as_str()?, p["len"].as_u64()?)
                .parse()
                .ok()
        }
        _ => None,
    }
}

fn port_range(v: &Value) -> Option<(u16, u16)> {
    match v {
        Value::Number(n) => {
            let p = u16::try_from(n.as_u64()?).ok()?;
            Some((p, p))
        }
        Value::Object(o) => {
            let r = o.get("range")?.as_array()?;
            Some((
                u16::try_from(r.first()?.as_u64()?).ok()?,
                u16::try_from(r.get(1)?.as_u64()?).ok()?,
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_values_are_not_part_of_a_rules_text() {
        let texts = rule_texts(
            "table ip t { # handle 4\n\tchain c { # handle 1\n\t\tudp dport 9 counter packets 3 bytes 252 drop # handle 2\n\t}\n}\n",
        );
        assert_eq!(
            texts[&("ip t".to_owned(), "c".to_owned(), 2)],
            "udp dport 9 counter drop"
        );
    }

    #[test]
    fn rules_read_from_json_alone_read_as_nft_prints_them() {
        let json = r#"[
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [22, 80]}}},
            {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}},
            {"counter": {"packets": 0, "bytes": 0}},
            {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}
        ]"#;
        let exprs: Vec<Value> = serde_json::from_str(json).unwrap();
        assert_eq!(
            render(&exprs),
            "iifname \"lo\" tcp dport { 22, 80 } ct state invalid counter reject with icmpx admin-prohibited"
        );
    }

    #[test]
    fn odd_shapes_render_and_parse_without_panicking() {
        let exprs: Vec<Value> = serde_json::from_str(
            r#"[{"match": {"op": "==", "left": {"&": []}, "right": 0}},
                {"match": {"op": "==", "left": {"concat": []}, "right": {"set": []}}},
                {"vmap": {"key": {"concat": []}, "data": {"set": [[], [1]]}}},
                {"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": []}}}]"#,
        )
        .unwrap();
        let _ = render(&exprs);
        let _ = rules_of(&exprs, &|_| None);
    }

    #[test]
    fn a_verdict_map_is_one_rule_per_element() {
        let json = r#"{"nftables": [
          {"table": {"family": "ip", "name": "kp", "handle": 1}},
          {"chain": {"family": "ip", "table": "kp", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
          {"rule": {"family": "ip", "table": "kp", "chain": "in", "handle": 3, "expr": [
            {"vmap": {"key": {"payload": {"protocol": "udp", "field": "dport"}},
                      "data": {"set": [[53, {"accept": null}], [9, {"drop": null}]]}}}]}}
        ]}"#;
        let t = parse_nft_json(json, &RuleTexts::new(), |_, _| false).unwrap();
        let rules = &t.v4[0].chain("in").unwrap().rules;
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].target, Target::Drop);
        assert!(rules[1].text.ends_with("(element 9)"), "{}", rules[1].text);
        assert!(t.v6.is_empty(), "an ip table is IPv4 only");
    }
}
