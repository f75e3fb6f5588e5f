//! nf_tables rules as the kernel holds them (a list of register-machine
//! expressions: load a field into a register, compare it, look it up in a
//! set, set a verdict) turned back into nft's statements, in the JSON
//! `nft -j` prints, so the model's nftables frontend reads them unchanged.
//! This is what nft itself does when it lists a ruleset
//! (`netlink_delinearize`): registers are followed from load to use, a
//! protocol match that only guards a header load is folded into it (`meta
//! l4proto tcp` + transport bytes 2-3 = `tcp dport`), masks become
//! prefixes. What has no reading here is kept as an `unmodelled`
//! statement, never guessed.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::attr::{self, attrs};
use super::types::{Kind, bit_names, prefix_len};

/// A set or map of the table, as rules and the model need it.
#[derive(Clone, Debug, Default)]
pub struct SetInfo {
    pub name: String,
    pub anonymous: bool,
    pub map: bool,
    pub interval: bool,
    pub key_kinds: Vec<Kind>,
    pub key_len: usize,
    pub data_kind: Option<Kind>,
    pub elems: Vec<Elem>,
}

#[derive(Clone, Debug, Default)]
pub struct Elem {
    pub key: Vec<u8>,
    pub key_end: Option<Vec<u8>>,
    pub interval_end: bool,
    pub data: Option<Value>,
    pub data_bytes: Option<Vec<u8>>,
    pub comment: Option<String>,
}

/// What a register holds.
#[derive(Clone, Debug)]
enum Reg {
    /// A loaded field: its nft expression, kind and length.
    Expr { expr: Value, kind: Kind, len: usize },
    /// A field after `bitwise`: `(expr & mask) ^ xor`.
    Masked {
        expr: Value,
        kind: Kind,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// An immediate value.
    Imm(Vec<u8>),
}

/// Register number → index of its first 32-bit register (the 16-byte
/// registers 1-4 are 32-bit registers 0-15 four at a time).
fn reg32(r: u32) -> Option<usize> {
    match r {
        1..=4 => Some((r as usize - 1) * 4),
        8..=23 => Some(r as usize - 8),
        _ => None,
    }
}

fn unmodelled(what: &str) -> Value {
    json!({ "unmodelled": what })
}

/// A dependency match waiting to be folded into the header load it guards.
#[derive(Clone, Copy)]
struct Dep {
    stmt: usize,
    value: u8,
}

struct Rule<'a> {
    family: &'a str,
    sets: &'a HashMap<String, SetInfo>,
    regs: HashMap<usize, Reg>,
    out: Vec<Value>,
    killed: Vec<usize>,
    /// `meta l4proto X` / `ip protocol X` / `ip6 nexthdr X`.
    l4: Option<Dep>,
    /// `meta nfproto ipv4|ipv6` (inet tables).
    nf: Option<Dep>,
}

/// The statements of one rule (`NFTA_RULE_EXPRESSIONS`) of a table of
/// `family` (`ip`, `ip6`, `inet`).
pub fn statements(family: &str, exprs: &[u8], sets: &HashMap<String, SetInfo>) -> Vec<Value> {
    let mut r = Rule {
        family,
        sets,
        regs: HashMap::new(),
        out: Vec::new(),
        killed: Vec::new(),
        l4: None,
        nf: None,
    };
    for (kind, elem) in attrs(exprs) {
        if kind != 1 {
            continue; // NFTA_LIST_ELEM
        }
        let name = attr::string(elem, 1).unwrap_or_default();
        let data = attr::get(elem, 2).unwrap_or(&[]);
        r.expr(&name, data);
    }
    let killed = r.killed;
    r.out
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !killed.contains(i))
        .map(|(_, v)| v)
        .collect()
}

/// The first `counter` of one rule's expressions (`NFTA_RULE_EXPRESSIONS`),
/// nothing else decoded.
pub fn counter(exprs: &[u8]) -> Option<netdrop_model::rules::Counters> {
    attrs(exprs)
        .filter(|(kind, _)| *kind == 1) // NFTA_LIST_ELEM
        .find(|(_, elem)| attr::string(elem, 1).as_deref() == Some("counter"))
        .map(|(_, elem)| {
            let d = attr::get(elem, 2).unwrap_or(&[]);
            netdrop_model::rules::Counters {
                packets: attr::be64(d, 2).unwrap_or(0),
                bytes: attr::be64(d, 1).unwrap_or(0),
            }
        })
}

fn data_value(nested: &[u8]) -> Option<Vec<u8>> {
    attr::get(nested, 1).map(<[u8]>::to_vec) // NFTA_DATA_VALUE
}

/// A verdict (`NFTA_DATA_VERDICT`) as nft's statement.
pub fn verdict(nested: &[u8]) -> Option<Value> {
    let v = attr::get(nested, 2)?;
    let code = attr::be32(v, 1)? as i32;
    let chain = attr::string(v, 2);
    Some(match code {
        0 => json!({"drop": null}),
        1 => json!({"accept": null}),
        -1 => json!({"continue": null}),
        -3 => json!({"jump": {"target": chain?}}),
        -4 => json!({"goto": {"target": chain?}}),
        -5 => json!({"return": null}),
        3 => json!({"queue": null}),
        _ => unmodelled("verdict"),
    })
}

impl Rule<'_> {
    fn push(&mut self, v: Value) -> usize {
        self.out.push(v);
        self.out.len() - 1
    }

    fn set_reg(&mut self, dreg: Option<u32>, reg: Reg) {
        if let Some(i) = dreg.and_then(reg32) {
            self.regs.insert(i, reg);
        }
    }

    fn reg(&self, sreg: Option<u32>) -> Option<&Reg> {
        self.regs.get(&reg32(sreg?)?)
    }

    fn expr(&mut self, name: &str, d: &[u8]) {
        match name {
            "payload" => self.payload(d),
            "meta" => self.meta(d),
            "ct" => self.ct(d),
            "cmp" => self.cmp(d),
            "bitwise" => self.bitwise(d),
            "immediate" => self.immediate(d),
            "lookup" => self.lookup(d),
            "range" => self.range(d),
            "counter" => {
                self.push(json!({"counter": {
                    "packets": attr::be64(d, 2).unwrap_or(0),
                    "bytes": attr::be64(d, 1).unwrap_or(0),
                }}));
            }
            "numgen" => {
                let mode = match attr::be32(d, 3) {
                    Some(0) => "inc",
                    _ => "random",
                };
                let expr = json!({"numgen": {
                    "mode": mode,
                    "mod": attr::be32(d, 2).unwrap_or(0),
                    "offset": attr::be32(d, 4).unwrap_or(0),
                }});
                self.set_reg(
                    attr::be32(d, 1),
                    Reg::Expr {
                        expr,
                        kind: Kind::Integer,
                        len: 4,
                    },
                );
            }
            "fib" => self.fib(d),
            "reject" => self.reject(d),
            "nat" => self.nat(d),
            "masq" => {
                let flags = nat_flags(attr::be32(d, 1).unwrap_or(0));
                self.push(match flags {
                    Some(f) => json!({"masquerade": {"flags": f}}),
                    None => json!({"masquerade": null}),
                });
            }
            "dynset" => {
                let op = match attr::be32(d, 3) {
                    Some(0) => "add",
                    Some(2) => "delete",
                    _ => "update",
                };
                let set = attr::string(d, 1).unwrap_or_default();
                let key = self.reg(attr::be32(d, 4)).map(reg_expr);
                self.push(match key {
                    Some(elem) => {
                        json!({"set": {"op": op, "elem": elem, "set": format!("@{set}")}})
                    }
                    None => unmodelled("dynset"),
                });
            }
            "log" => {
                let mut log = serde_json::Map::new();
                if let Some(p) = attr::string(d, 2) {
                    log.insert("prefix".into(), json!(p));
                }
                if let Some(g) = attr::get(d, 1)
                    .and_then(|g| Some(u16::from_be_bytes(g.get(..2)?.try_into().ok()?)))
                {
                    log.insert("group".into(), json!(g));
                }
                self.push(if log.is_empty() {
                    json!({"log": null})
                } else {
                    json!({ "log": log })
                });
            }
            "limit" => {
                let per = match attr::be64(d, 2).unwrap_or(1) {
                    60 => "minute",
                    3600 => "hour",
                    86400 => "day",
                    604800 => "week",
                    _ => "second",
                };
                self.push(json!({"limit": {
                    "rate": attr::be64(d, 1).unwrap_or(0),
                    "burst": attr::be32(d, 3).unwrap_or(0),
                    "per": per,
                }}));
            }
            "notrack" => {
                self.push(json!({"notrack": null}));
            }
            other => {
                self.push(unmodelled(other));
            }
        }
    }

    fn payload(&mut self, d: &[u8]) {
        let (base, offset, len) = (
            attr::be32(d, 2).unwrap_or(9),
            attr::be32(d, 3).unwrap_or(0) as usize,
            attr::be32(d, 4).unwrap_or(0) as usize,
        );
        if attr::get(d, 5).is_some() {
            // A payload write (`ip dscp set …`).
            self.push(unmodelled("payload set"));
            return;
        }
        let (expr, kind) = match base {
            1 => self.network_field(offset, len),
            2 => self.transport_field(offset, len),
            _ => (None, Kind::Raw),
        };
        let expr = expr.unwrap_or_else(|| {
            let b = match base {
                0 => "ll",
                1 => "nh",
                2 => "th",
                _ => "ih",
            };
            json!({"payload": {"base": b, "offset": offset * 8, "len": len * 8}})
        });
        self.set_reg(attr::be32(d, 1), Reg::Expr { expr, kind, len });
    }

    /// The network header's protocol: the table's, or in an inet table the
    /// one a `meta nfproto` match before it guards (then folded in).
    fn network_proto(&mut self) -> Option<&'static str> {
        match self.family {
            "ip" => Some("ip"),
            "ip6" => Some("ip6"),
            _ => {
                let dep = self.nf?;
                self.killed.push(dep.stmt);
                Some(if dep.value == 10 { "ip6" } else { "ip" })
            }
        }
    }

    fn network_field(&mut self, offset: usize, len: usize) -> (Option<Value>, Kind) {
        let fields: &[(&str, usize, usize, &str, Kind)] = &[
            ("ip", 9, 1, "protocol", Kind::Proto),
            ("ip", 12, 4, "saddr", Kind::Ipv4),
            ("ip", 16, 4, "daddr", Kind::Ipv4),
            ("ip", 8, 1, "ttl", Kind::Raw),
            ("ip", 2, 2, "length", Kind::Raw),
            ("ip6", 6, 1, "nexthdr", Kind::Proto),
            ("ip6", 7, 1, "hoplimit", Kind::Raw),
            ("ip6", 8, 16, "saddr", Kind::Ipv6),
            ("ip6", 24, 16, "daddr", Kind::Ipv6),
        ];
        let nf = self.nf;
        let Some(proto) = self.network_proto() else {
            return (None, Kind::Raw);
        };
        // A byte-aligned prefix loads only its bytes (`ip6 daddr fe80::/64`:
        // 8 bytes at 24): the address field still.
        let partial = |(p, o, l, _, k): &&(&str, usize, usize, &str, Kind)| {
            *p == proto
                && *o == offset
                && matches!(k, Kind::Ipv4 | Kind::Ipv6)
                && len > 0
                && len < *l
        };
        match fields
            .iter()
            .find(|(p, o, l, _, _)| *p == proto && *o == offset && *l == len)
            .or_else(|| fields.iter().find(|f| partial(f)))
        {
            Some((p, _, _, f, k)) => (Some(json!({"payload": {"protocol": p, "field": f}})), *k),
            None => {
                // Not a field nft names: the guard stays a statement.
                if let Some(dep) = nf {
                    self.killed.retain(|&s| s != dep.stmt);
                }
                (None, Kind::Raw)
            }
        }
    }

    fn transport_field(&mut self, offset: usize, len: usize) -> (Option<Value>, Kind) {
        let proto = self.l4.map(|d| d.value);
        let name = match proto {
            Some(6) => "tcp",
            Some(17) => "udp",
            Some(132) => "sctp",
            Some(33) => "dccp",
            Some(136) => "udplite",
            Some(1) => "icmp",
            Some(58) => "icmpv6",
            _ => "th",
        };
        let field = match (name, offset, len) {
            ("icmp" | "icmpv6", 0, 1) => Some((
                "type",
                if name == "icmp" {
                    Kind::IcmpType
                } else {
                    Kind::Icmpv6Type
                },
            )),
            ("icmp" | "icmpv6", 1, 1) => Some(("code", Kind::Raw)),
            ("icmp" | "icmpv6", ..) => None,
            ("tcp", 13, 1) => Some(("flags", Kind::Raw)),
            (_, 0, 2) => Some(("sport", Kind::Port)),
            (_, 2, 2) => Some(("dport", Kind::Port)),
            _ => None,
        };
        match field {
            Some((f, kind)) => {
                if name != "th"
                    && let Some(dep) = self.l4
                {
                    self.killed.push(dep.stmt);
                }
                // icmp and icmpv6 also carry their network protocol's guard
                // in an inet table.
                let implied = match name {
                    "icmp" => Some(2),
                    "icmpv6" => Some(10),
                    _ => None,
                };
                if let (Some(v), Some(dep)) = (implied, self.nf)
                    && dep.value == v
                {
                    self.killed.push(dep.stmt);
                }
                (
                    Some(json!({"payload": {"protocol": name, "field": f}})),
                    kind,
                )
            }
            None => (None, Kind::Raw),
        }
    }

    fn meta(&mut self, d: &[u8]) {
        let key = attr::be32(d, 2).unwrap_or(u32::MAX);
        let (name, kind) = match key {
            0 => ("length", Kind::Integer),
            1 => ("protocol", Kind::Raw),
            2 => ("priority", Kind::Integer),
            3 => ("mark", Kind::Mark),
            4 => ("iif", Kind::Integer),
            5 => ("oif", Kind::Integer),
            6 => ("iifname", Kind::Ifname),
            7 => ("oifname", Kind::Ifname),
            8 => ("iiftype", Kind::Integer),
            9 => ("oiftype", Kind::Integer),
            10 => ("skuid", Kind::Integer),
            11 => ("skgid", Kind::Integer),
            12 => ("nftrace", Kind::Integer),
            15 => ("nfproto", Kind::NfProto),
            16 => ("l4proto", Kind::Proto),
            17 => ("ibrname", Kind::Ifname),
            18 => ("obrname", Kind::Ifname),
            19 => ("pkttype", Kind::Integer),
            20 => ("cpu", Kind::Integer),
            21 => ("iifgroup", Kind::Integer),
            22 => ("oifgroup", Kind::Integer),
            23 => ("cgroup", Kind::Integer),
            24 => ("random", Kind::Integer),
            _ => {
                self.push(unmodelled("meta"));
                return;
            }
        };
        let expr = json!({"meta": {"key": name}});
        if let Some(sreg) = attr::be32(d, 3) {
            let value = self.reg(Some(sreg)).map(|r| set_value(r, kind));
            self.push(match value {
                Some(v) => json!({"mangle": {"key": expr, "value": v}}),
                None => unmodelled("meta set"),
            });
            return;
        }
        let len = kind.len();
        self.set_reg(attr::be32(d, 1), Reg::Expr { expr, kind, len });
    }

    fn ct(&mut self, d: &[u8]) {
        let key = attr::be32(d, 2).unwrap_or(u32::MAX);
        let (name, kind) = match key {
            0 => ("state", Kind::CtState),
            1 => ("direction", Kind::Integer),
            2 => ("status", Kind::CtStatus),
            3 => ("mark", Kind::Mark),
            5 => ("expiration", Kind::Integer),
            9 => ("l3proto", Kind::NfProto),
            10 => ("protocol", Kind::Proto),
            _ => {
                self.push(unmodelled("ct"));
                return;
            }
        };
        let mut ct = serde_json::Map::new();
        ct.insert("key".into(), json!(name));
        if let Some(dir) = attr::u8_of(d, 3) {
            ct.insert(
                "dir".into(),
                json!(if dir == 0 { "original" } else { "reply" }),
            );
        }
        let expr = json!({ "ct": ct });
        if let Some(sreg) = attr::be32(d, 4) {
            let value = self.reg(Some(sreg)).map(|r| set_value(r, kind));
            self.push(match value {
                Some(v) => json!({"mangle": {"key": expr, "value": v}}),
                None => unmodelled("ct set"),
            });
            return;
        }
        let len = kind.len();
        self.set_reg(attr::be32(d, 1), Reg::Expr { expr, kind, len });
    }

    fn fib(&mut self, d: &[u8]) {
        let (result, kind) = match attr::be32(d, 2) {
            Some(1) => ("oif", Kind::Integer),
            Some(2) => ("oifname", Kind::Ifname),
            Some(3) => ("type", Kind::FibType),
            _ => {
                self.push(unmodelled("fib"));
                return;
            }
        };
        let f = attr::be32(d, 3).unwrap_or(0);
        let flags: Vec<&str> = [
            (1, "saddr"),
            (2, "daddr"),
            (4, "mark"),
            (8, "iif"),
            (16, "oif"),
        ]
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
        let expr = json!({"fib": {"result": result, "flags": flags}});
        self.set_reg(attr::be32(d, 1), Reg::Expr { expr, kind, len: 4 });
    }

    fn cmp(&mut self, d: &[u8]) {
        let op = attr::be32(d, 2).unwrap_or(0);
        let data = attr::get(d, 3).and_then(data_value).unwrap_or_default();
        let Some(reg) = self.reg(attr::be32(d, 1)).cloned() else {
            self.push(unmodelled("cmp"));
            return;
        };
        let op_s = match op {
            0 => "==",
            1 => "!=",
            2 => "<",
            3 => "<=",
            4 => ">",
            5 => ">=",
            _ => {
                self.push(unmodelled("cmp"));
                return;
            }
        };
        let stmt = match reg {
            Reg::Expr { expr, kind, .. } => {
                // `fib … oif missing|exists`.
                if expr.get("fib").is_some_and(|f| f["result"] == "oif")
                    && data.iter().all(|&b| b == 0)
                {
                    json!({"match": {"op": "==", "left": expr, "right": op != 0}})
                } else if matches!(kind, Kind::Ipv4 | Kind::Ipv6)
                    && !data.is_empty()
                    && data.len() < kind.len()
                {
                    let mut addr = data.clone();
                    addr.resize(kind.len(), 0);
                    let prefix =
                        json!({"prefix": {"addr": kind.value(&addr), "len": data.len() * 8}});
                    json!({"match": {"op": op_s, "left": expr, "right": prefix}})
                } else {
                    let right = kind.value(&data);
                    let idx = self.out.len();
                    // A protocol match may be the guard of a header load.
                    if op == 0 && data.len() == 1 {
                        let is = |p: &str, f: &str| {
                            expr["payload"]["protocol"] == p && expr["payload"]["field"] == f
                        };
                        let l4 = expr["meta"]["key"] == "l4proto"
                            || is("ip", "protocol")
                            || is("ip6", "nexthdr");
                        if l4 {
                            self.l4 = Some(Dep {
                                stmt: idx,
                                value: data[0],
                            });
                        } else if expr["meta"]["key"] == "nfproto" && self.family == "inet" {
                            self.nf = Some(Dep {
                                stmt: idx,
                                value: data[0],
                            });
                        }
                    }
                    json!({"match": {"op": op_s, "left": expr, "right": right}})
                }
            }
            Reg::Masked {
                expr,
                kind,
                mask,
                xor,
            } => {
                let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
                if matches!(kind, Kind::Ipv4 | Kind::Ipv6)
                    && zero(&xor)
                    && let Some(len) = prefix_len(&mask)
                {
                    let addr = kind.value(&data);
                    json!({"match": {"op": op_s, "left": expr, "right": {"prefix": {"addr": addr, "len": len}}}})
                } else if matches!(kind, Kind::CtState | Kind::CtStatus)
                    && zero(&xor)
                    && zero(&data)
                {
                    // `ct state established,related`: some bit of the mask set.
                    let (op, names) = (if op == 1 { "in" } else { "!=" }, bit_names(kind, &mask));
                    json!({"match": {"op": op, "left": expr, "right": names}})
                } else if zero(&xor) {
                    let m = Kind::Integer.value(&mask);
                    json!({"match": {"op": op_s, "left": {"&": [expr, m]}, "right": kind.value(&data)}})
                } else {
                    unmodelled("cmp of a mangled field")
                }
            }
            Reg::Imm(_) => unmodelled("cmp of an immediate"),
        };
        // `>= a` then `<= b` on one field: nft's `a-b`.
        if stmt["match"]["op"] == "<="
            && let Some(prev) = self.out.last_mut()
            && prev["match"]["op"] == ">="
            && prev["match"]["left"] == stmt["match"]["left"]
        {
            let from = prev["match"]["right"].clone();
            prev["match"]["op"] = json!("==");
            prev["match"]["right"] = json!({"range": [from, stmt["match"]["right"]]});
            return;
        }
        self.push(stmt);
    }

    fn bitwise(&mut self, d: &[u8]) {
        let (sreg, dreg) = (attr::be32(d, 1), attr::be32(d, 2));
        if attr::be32(d, 6).unwrap_or(0) != 0 {
            self.push(unmodelled("bitwise shift"));
            return;
        }
        let mask = attr::get(d, 4).and_then(data_value).unwrap_or_default();
        let xor = attr::get(d, 5).and_then(data_value).unwrap_or_default();
        let masked = match self.reg(sreg).cloned() {
            Some(Reg::Expr { expr, kind, .. }) => Reg::Masked {
                expr,
                kind,
                mask,
                xor,
            },
            _ => {
                self.push(unmodelled("bitwise"));
                return;
            }
        };
        self.set_reg(dreg, masked);
    }

    fn immediate(&mut self, d: &[u8]) {
        let dreg = attr::be32(d, 1).unwrap_or(0);
        let Some(data) = attr::get(d, 2) else { return };
        if dreg == 0 {
            let v = verdict(data).unwrap_or_else(|| unmodelled("immediate"));
            self.push(v);
        } else if let Some(v) = data_value(data) {
            self.set_reg(Some(dreg), Reg::Imm(v));
        }
    }

    /// The key a lookup of `len` bytes reads from `sreg`: one field, or the
    /// concatenation of the fields loaded into the registers that follow.
    fn key(&self, sreg: Option<u32>, len: usize) -> Option<(Value, Vec<Kind>)> {
        let mut at = reg32(sreg?)?;
        let (mut parts, mut kinds, mut covered) = (Vec::new(), Vec::new(), 0);
        while covered < len.max(1) {
            let (expr, kind, l) = match self.regs.get(&at)? {
                Reg::Expr { expr, kind, len } => (expr.clone(), *kind, *len),
                _ => return None,
            };
            parts.push(expr);
            kinds.push(kind);
            // At least one register: a zero-length load must not stall.
            let padded = l.div_ceil(4).max(1) * 4;
            covered += padded;
            at += padded / 4;
        }
        Some(if parts.len() == 1 {
            (parts.remove(0), kinds)
        } else {
            (json!({ "concat": parts }), kinds)
        })
    }

    fn lookup(&mut self, d: &[u8]) {
        let name = attr::string(d, 1).unwrap_or_default();
        let Some(set) = self.sets.get(&name) else {
            self.push(unmodelled("lookup of an unknown set"));
            return;
        };
        let Some((key, kinds)) = self.key(attr::be32(d, 2), set.key_len) else {
            self.push(unmodelled("lookup"));
            return;
        };
        let right = if set.anonymous {
            json!({ "set": elements(set, &kinds) })
        } else {
            json!(format!("@{name}"))
        };
        let inverted = attr::be32(d, 5).unwrap_or(0) & 1 != 0;
        match attr::be32(d, 3) {
            Some(0) => {
                self.push(json!({"vmap": {"key": key, "data": right}}));
            }
            Some(dreg) => {
                let kind = set.data_kind.unwrap_or(Kind::Raw);
                let expr = json!({"map": {"key": key, "data": right}});
                self.set_reg(
                    Some(dreg),
                    Reg::Expr {
                        expr,
                        kind,
                        len: kind.len(),
                    },
                );
            }
            None => {
                let op = if inverted { "!=" } else { "==" };
                self.push(json!({"match": {"op": op, "left": key, "right": right}}));
            }
        }
    }

    fn range(&mut self, d: &[u8]) {
        let Some(Reg::Expr { expr, kind, .. }) = self.reg(attr::be32(d, 1)).cloned() else {
            self.push(unmodelled("range"));
            return;
        };
        let from = attr::get(d, 3).and_then(data_value).unwrap_or_default();
        let to = attr::get(d, 4).and_then(data_value).unwrap_or_default();
        let op = if attr::be32(d, 2) == Some(1) {
            "!="
        } else {
            "=="
        };
        self.push(json!({"match": {"op": op, "left": expr, "right": {"range": [kind.value(&from), kind.value(&to)]}}}));
    }

    fn reject(&mut self, d: &[u8]) {
        let code = attr::u8_of(d, 2).unwrap_or(0);
        // In an inet table, the rule's network protocol (its `meta nfproto`
        // guard or an ip6 header match) says which ICMP it answers with.
        let v6 = self.family == "ip6" || self.nf.is_some_and(|d| d.value == 10);
        let stmt = match attr::be32(d, 1) {
            Some(1) => json!({"reject": {"type": "tcp reset"}}),
            Some(2) => {
                let name = [
                    "no-route",
                    "port-unreachable",
                    "host-unreachable",
                    "admin-prohibited",
                ]
                .get(code as usize)
                .copied();
                json!({"reject": {"type": "icmpx", "expr": name.map_or_else(|| json!(code), |n| json!(n))}})
            }
            _ => {
                let name = if v6 {
                    match code {
                        0 => Some("no-route"),
                        1 => Some("admin-prohibited"),
                        3 => Some("addr-unreachable"),
                        4 => Some("port-unreachable"),
                        5 => Some("policy-fail"),
                        6 => Some("reject-route"),
                        _ => None,
                    }
                } else {
                    match code {
                        0 => Some("net-unreachable"),
                        1 => Some("host-unreachable"),
                        2 => Some("prot-unreachable"),
                        3 => Some("port-unreachable"),
                        9 => Some("net-prohibited"),
                        10 => Some("host-prohibited"),
                        13 => Some("admin-prohibited"),
                        _ => None,
                    }
                };
                let t = if v6 { "icmpv6" } else { "icmp" };
                // `reject with icmp …` in an inet table carries its own
                // `meta nfproto` guard.
                if let Some(dep) = self.nf
                    && self.family == "inet"
                {
                    self.killed.push(dep.stmt);
                }
                json!({"reject": {"type": t, "expr": name.map_or_else(|| json!(code), |n| json!(n))}})
            }
        };
        self.push(stmt);
    }

    fn nat(&mut self, d: &[u8]) {
        let kind = if attr::be32(d, 1) == Some(0) {
            "snat"
        } else {
            "dnat"
        };
        let v6 = attr::be32(d, 2) == Some(10);
        let mut nat = serde_json::Map::new();
        if self.family == "inet" {
            nat.insert("family".into(), json!(if v6 { "ip6" } else { "ip" }));
        }
        if let Some(r) = self.reg(attr::be32(d, 3)) {
            let addr = match r {
                Reg::Imm(b) => (if v6 { Kind::Ipv6 } else { Kind::Ipv4 }).value(b),
                other => reg_expr(other),
            };
            nat.insert("addr".into(), addr);
        }
        if let Some(r) = self.reg(attr::be32(d, 5)) {
            let port = match r {
                Reg::Imm(b) => Kind::Port.value(b),
                other => reg_expr(other),
            };
            nat.insert("port".into(), port);
        }
        if let Some(f) = nat_flags(attr::be32(d, 7).unwrap_or(0)) {
            nat.insert("flags".into(), f);
        }
        self.push(json!({ kind: nat }));
    }
}

/// NAT flags nft prints (`random`, `fully-random`, `persistent`).
fn nat_flags(f: u32) -> Option<Value> {
    let names: Vec<&str> = [(4, "random"), (16, "fully-random"), (8, "persistent")]
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    match names.as_slice() {
        [] => None,
        [one] => Some(json!(one)),
        many => Some(json!(many)),
    }
}

fn reg_expr(r: &Reg) -> Value {
    match r {
        Reg::Expr { expr, .. } | Reg::Masked { expr, .. } => expr.clone(),
        Reg::Imm(b) => Kind::Integer.value(b),
    }
}

/// The value a `meta/ct … set` writes: a number, or the field changed by
/// a mask (`mark | 0x4000`, `mark ^ 0x4000`, `mark & 0xff`).
fn set_value(r: &Reg, kind: Kind) -> Value {
    match r {
        Reg::Imm(b) => kind.value(b),
        Reg::Expr { expr, .. } => expr.clone(),
        Reg::Masked {
            expr, mask, xor, ..
        } => {
            let m = u32::from_ne_bytes(pad4(mask));
            let x = u32::from_ne_bytes(pad4(xor));
            if x != 0 && m == !x {
                json!({"|": [expr, x]})
            } else if m == u32::MAX {
                json!({"^": [expr, x]})
            } else if x == 0 {
                json!({"&": [expr, m]})
            } else {
                json!({"^": [{"&": [expr, m]}, x]})
            }
        }
    }
}

fn pad4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    let n = b.len().min(4);
    a[..n].copy_from_slice(&b[..n]);
    a
}

/// A key's bytes as nft prints it: one value, or a concatenation of the
/// parts (each padded to 4 bytes).
fn key_value(kinds: &[Kind], b: &[u8]) -> Value {
    if kinds.len() <= 1 {
        let k = kinds.first().copied().unwrap_or(Kind::Raw);
        return k.value(&b[..b.len().min(k.len())]);
    }
    let mut parts = Vec::new();
    let mut at = 0;
    for k in kinds {
        let l = k.len();
        let part = b.get(at..(at + l).min(b.len())).unwrap_or(&[]);
        parts.push(k.value(part));
        at += l.div_ceil(4).max(1) * 4;
    }
    json!({ "concat": parts })
}

/// `start..=end` as nft prints a set's interval: an address, a prefix, or
/// a range.
fn interval_value(kind: Kind, start: &[u8], end: &[u8]) -> Value {
    if start == end {
        return kind.value(start);
    }
    if matches!(kind, Kind::Ipv4 | Kind::Ipv6) {
        let n = |b: &[u8]| b.iter().fold(0u128, |n, &x| (n << 8) | u128::from(x));
        let (s, e) = (n(start), n(end));
        let size = e.wrapping_sub(s).wrapping_add(1);
        let bits = (start.len() * 8) as u32;
        if size.is_power_of_two() && s & (size - 1) == 0 {
            let len = bits - size.trailing_zeros();
            return json!({"prefix": {"addr": kind.value(start), "len": len}});
        }
        if size == 0 && s == 0 {
            return json!({"prefix": {"addr": kind.value(start), "len": 0}});
        }
    }
    json!({"range": [kind.value(start), kind.value(end)]})
}

/// `b - 1`, big-endian.
fn minus_one(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    for x in v.iter_mut().rev() {
        let (r, borrow) = x.overflowing_sub(1);
        *x = r;
        if !borrow {
            break;
        }
    }
    v
}

/// The elements of `set` as nft lists them (sorted; intervals joined;
/// map elements as `[key, data]`; comments kept), read with `kinds`.
pub fn elements(set: &SetInfo, kinds: &[Kind]) -> Vec<Value> {
    let kinds = if kinds.is_empty() {
        &set.key_kinds[..]
    } else {
        kinds
    };
    let sort_key = |e: &Elem| -> Vec<u8> {
        if kinds.len() == 1 {
            kinds[0].sort_key(&e.key)
        } else {
            e.key.clone()
        }
    };
    let mut elems: Vec<&Elem> = set.elems.iter().collect();
    elems.sort_by_key(|e| sort_key(e));
    let wrap = |key: Value, e: &Elem| -> Value {
        let key = match &e.comment {
            Some(c) => json!({"elem": {"val": key, "comment": c}}),
            None => key,
        };
        match (&e.data, &e.data_bytes) {
            (Some(v), _) => json!([key, v]),
            (None, Some(b)) => json!([key, set.data_kind.unwrap_or(Kind::Raw).value(b)]),
            _ => key,
        }
    };
    let mut out = Vec::new();
    if set.interval && kinds.len() == 1 {
        let k = kinds[0];
        for (i, e) in elems.iter().enumerate() {
            if e.interval_end {
                continue;
            }
            let end = match elems.get(i + 1) {
                Some(n) if n.interval_end => minus_one(&n.key),
                _ => vec![0xff; e.key.len()],
            };
            out.push(wrap(interval_value(k, &e.key, &end), e));
        }
        return out;
    }
    for e in elems {
        if e.interval_end {
            continue;
        }
        let key = match &e.key_end {
            Some(end) if end != &e.key && kinds.len() == 1 => interval_value(kinds[0], &e.key, end),
            _ => key_value(kinds, &e.key),
        };
        out.push(wrap(key, e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, v: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(((4 + v.len()) as u16).to_ne_bytes());
        b.extend(kind.to_ne_bytes());
        b.extend(v);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    fn expr(name: &str, body: Vec<u8>) -> Vec<u8> {
        let mut e = nla(1, format!("{name}\0").as_bytes());
        e.extend(nla(2, &body));
        nla(1, &e)
    }

    fn be(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    #[test]
    fn a_guarded_port_match_reads_as_nft_prints_it() {
        // meta l4proto tcp; tcp dport 22; accept  (inet)
        let mut list = expr("meta", [nla(2, &be(16)), nla(1, &be(1))].concat());
        list.extend(expr(
            "cmp",
            [nla(1, &be(1)), nla(2, &be(0)), nla(3, &nla(1, &[6]))].concat(),
        ));
        list.extend(expr(
            "payload",
            [
                nla(1, &be(1)),
                nla(2, &be(2)),
                nla(3, &be(2)),
                nla(4, &be(2)),
            ]
            .concat(),
        ));
        list.extend(expr(
            "cmp",
            [nla(1, &be(1)), nla(2, &be(0)), nla(3, &nla(1, &[0, 22]))].concat(),
        ));
        let verdict = [nla(1, &be(1))].concat();
        list.extend(expr(
            "immediate",
            [nla(1, &be(0)), nla(2, &nla(2, &verdict))].concat(),
        ));
        let s = statements("inet", &list, &HashMap::new());
        assert_eq!(
            Value::Array(s),
            json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}},
                {"accept": null}
            ])
        );
    }

    #[test]
    fn unknown_and_malformed_expressions_are_unmodelled_not_a_panic() {
        let mut list = expr("cmp", vec![]);
        list.extend(expr("tproxy", vec![]));
        list.extend(expr("payload", vec![1, 2, 3]));
        list.extend(expr("lookup", nla(1, b"nope\0")));
        let s = statements("ip", &list, &HashMap::new());
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|v| v.get("unmodelled").is_some()), "{s:?}");
    }

    #[test]
    fn a_lookup_keyed_by_a_zero_length_load_ends() {
        let mut sets = HashMap::new();
        sets.insert(
            "s".to_owned(),
            SetInfo {
                name: "s".into(),
                key_kinds: vec![Kind::Raw],
                key_len: 8,
                ..SetInfo::default()
            },
        );
        let mut list = expr(
            "payload",
            [
                nla(1, &be(1)),
                nla(2, &be(1)),
                nla(3, &be(0)),
                nla(4, &be(0)),
            ]
            .concat(),
        );
        list.extend(expr("lookup", [nla(1, b"s\0"), nla(2, &be(1))].concat()));
        let s = statements("ip", &list, &sets);
        assert_eq!(s.len(), 1, "{s:?}");
    }

    #[test]
    fn intervals_read_as_prefixes_ranges_and_addresses() {
        let e = |key: [u8; 4], end: bool| Elem {
            key: key.to_vec(),
            interval_end: end,
            ..Elem::default()
        };
        let set = SetInfo {
            interval: true,
            key_kinds: vec![Kind::Ipv4],
            key_len: 4,
            elems: vec![
                e([172, 31, 0, 0], true),
                e([172, 30, 0, 0], false),
                e([10, 0, 0, 5], false),
                e([10, 0, 0, 6], true),
                e([0, 0, 0, 0], true),
                e([192, 0, 2, 1], false),
                e([192, 0, 2, 10], true),
            ],
            ..SetInfo::default()
        };
        assert_eq!(
            Value::Array(elements(&set, &[])),
            json!([
                "10.0.0.5",
                {"prefix": {"addr": "172.30.0.0", "len": 16}},
                {"range": ["192.0.2.1", "192.0.2.9"]}
            ])
        );
    }
}
