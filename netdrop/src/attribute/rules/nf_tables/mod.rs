//! nf_tables straight from the kernel, over netlink: the tables of a
//! namespace (one `NFT_MSG_GETTABLE` dump; `nft list tables` builds nft's
//! whole cache first, 28 s on a node whose iptables-nft holds a 10k-Service
//! kube-proxy ruleset), and a native table's sets, chains and rules,
//! decoded as nft would list them (`expr.rs`).

mod attr;
mod expr;
mod types;

use std::{collections::HashMap, io};

use serde_json::{Value, json};

use super::xtables::LegacyTables;
use crate::netns::Netns;
use expr::{Elem, SetInfo};
use types::Kind;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// nftables' name of a netfilter protocol family.
fn family_name(f: u8) -> Option<&'static str> {
    Some(match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => return None,
    })
}

/// (family, name) of every table in namespace `netns` (netdrop's own for
/// `None`).
pub fn tables(netns: Option<&str>) -> io::Result<Vec<(String, String)>> {
    in_netns(netns, dump_tables)
}

fn dump_tables() -> io::Result<Vec<(String, String)>> {
    let sock = Socket::open()?;
    let mut out = Vec::new();
    for body in sock.dump(0, NFT_MSG_GETTABLE, &[])? {
        if let (Some(&family), Some(attrs)) = (body.first(), body.get(4..))
            && let (Some(fam), Some(name)) =
                (family_name(family), attr::string(attrs, NFTA_TABLE_NAME))
        {
            out.push((fam.to_owned(), name));
        }
    }
    Ok(out)
}

/// What tells whether a namespace's rules changed, cheaply: the nf_tables
/// generation (one `NFT_MSG_GETGEN` request: it moves with every change of
/// an iptables-nft or native table, not with counters), whether any
/// iptables-legacy table exists, and their shape (x_tables has no
/// generation: [`xtables::LegacyTables::shape`], each table's entry count
/// and size; a same-size edit shows only in
/// [`GenerationWatch::legacy_content`]).
///
/// [`xtables::LegacyTables::shape`]: super::xtables::LegacyTables::shape
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation {
    pub nf_tables: u32,
    pub legacy_tables: bool,
    pub legacy_shape: u64,
}

const NFT_MSG_GETGEN: u16 = 16;

/// The [`Generation`] of namespace `netns` (`None`: netdrop's own).
pub fn generation(netns: Option<&str>) -> io::Result<Generation> {
    GenerationWatch::open(netns)?.read()
}

/// What [`generation`] reads, kept open in the namespace: asking again
/// needs no thread entering it and no new socket (watch asks every second).
pub struct GenerationWatch {
    sock: Socket,
    /// The namespace's legacy tables (sockets and proc files opened inside
    /// it stay the namespace's).
    legacy: LegacyTables,
}

impl GenerationWatch {
    pub fn open(netns: Option<&str>) -> io::Result<Self> {
        in_netns(netns, || {
            Ok(Self {
                sock: Socket::open()?,
                legacy: LegacyTables::open_here(),
            })
        })
    }

    /// A hash of the legacy tables' rules without counters, of the tables
    /// smaller than [`super::xtables::LARGE_TABLE`] or (`large`) the others (a
    /// copy of the tables: asked seldom).
    pub fn legacy_content(&self, large: bool) -> io::Result<u64> {
        self.legacy.content(large)
    }

    pub fn read(&self) -> io::Result<Generation> {
        let nf_tables = self
            .sock
            .request(0, NFT_MSG_GETGEN)?
            .iter()
            .find_map(|body| attr::be32(body.get(4..)?, 1))
            .ok_or_else(|| io::Error::other("no NFTA_GEN_ID in the answer"))?;
        let shape = self.legacy.shape()?;
        Ok(Generation {
            nf_tables,
            legacy_tables: shape.is_some(),
            legacy_shape: shape.unwrap_or_default(),
        })
    }
}

/// `family`'s number (`ip` 2, `ip6` 10, `inet` 1).
fn family_number(f: &str) -> Option<u8> {
    Some(match f {
        "inet" => 1,
        "ip" => 2,
        "ip6" => 10,
        _ => return None,
    })
}

/// One netlink attribute, for a request.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + value.len() + 3);
    b.extend(((4 + value.len()) as u16).to_ne_bytes());
    b.extend(kind.to_ne_bytes());
    b.extend(value);
    while b.len() % 4 != 0 {
        b.push(0);
    }
    b
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Tables `wanted` ((family, name)) of namespace `netns`, read over netlink
/// and decoded into the items `nft -j list table` prints (tables, sets
/// and maps with their elements, chains, rules), for the model's nftables
/// frontend. nft is not run: its listing of a 10k-Service kube-proxy table
/// peaks at 630 MiB.
pub fn read_tables(
    netns: Option<&str>,
    wanted: &[(String, String)],
) -> io::Result<netdrop_model::nft::NativeTables> {
    let mut items = netdrop_model::nft::NftItems::new();
    read_each(netns, wanted, &mut |v| items.push(v))?;
    Ok(items.finish())
}

/// Like [`read_tables`], the items themselves (tests compare them with
/// `nft -j`'s).
pub fn read_items(netns: Option<&str>, wanted: &[(String, String)]) -> io::Result<Vec<Value>> {
    let mut items = Vec::new();
    read_each(netns, wanted, &mut |v| items.push(v))?;
    Ok(items)
}

/// The counters of the rules of tables `wanted` ((family, name)) that
/// hold a `counter` statement, by (family, table) and rule handle: what a
/// new drop site needs of native tables when their rules did not change.
/// Only each rule's handle and counter are decoded (a kube-proxy nftables
/// table has 80k rules; decoding them all into a model takes seconds).
pub fn read_counters(
    netns: Option<&str>,
    wanted: &[(String, String)],
) -> io::Result<HashMap<(String, String), HashMap<u64, netdrop_model::rules::Counters>>> {
    in_netns(netns, || {
        let sock = Socket::open()?;
        let mut out = HashMap::new();
        for (fam, table) in wanted {
            let Some(family) = family_number(fam) else {
                continue;
            };
            let mut by_handle = HashMap::new();
            sock.rules_of(family, table, &mut |a| {
                let (Some(handle), Some(exprs)) = (attr::be64(a, 3), attr::get(a, 4)) else {
                    return;
                };
                if let Some(c) = expr::counter(exprs) {
                    by_handle.insert(handle, c);
                }
            })?;
            out.insert((fam.clone(), table.clone()), by_handle);
        }
        Ok(out)
    })
}

/// Each item of tables `wanted`, handed to `emit` as it is decoded.
fn read_each(
    netns: Option<&str>,
    wanted: &[(String, String)],
    emit: &mut (dyn FnMut(Value) + Send),
) -> io::Result<()> {
    in_netns(netns, || {
        let sock = Socket::open()?;
        for (fam, name) in wanted {
            read_table(&sock, fam, name, emit)?;
        }
        Ok(())
    })
}

/// `f` run in namespace `netns` (netdrop's own for `None`).
fn in_netns<T: Send>(
    netns: Option<&str>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    match netns {
        Some(name) => Netns::named(name)
            .map_err(io::Error::other)?
            .run_in(f)
            .map_err(io::Error::other)?,
        None => f(),
    }
}

const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_GETSETELEM: u16 = 13;

fn read_table(
    sock: &Socket,
    fam: &str,
    table: &str,
    emit: &mut dyn FnMut(Value),
) -> io::Result<()> {
    let Some(family) = family_number(fam) else {
        return Ok(());
    };
    emit(json!({"table": {"family": fam, "name": table}}));
    // Sets and maps, named and anonymous, with their elements.
    let mut sets: HashMap<String, SetInfo> = HashMap::new();
    for body in sock.dump(family, NFT_MSG_GETSET, &nla(1, &cstr(table)))? {
        let a = body.get(4..).unwrap_or(&[]);
        if attr::string(a, 1).as_deref() != Some(table) {
            continue;
        }
        let Some(name) = attr::string(a, 2) else {
            continue;
        };
        let flags = attr::be32(a, 3).unwrap_or(0);
        let data_type = attr::be32(a, 6);
        let mut set = SetInfo {
            name: name.clone(),
            anonymous: flags & 1 != 0,
            interval: flags & 4 != 0,
            map: flags & 8 != 0,
            key_kinds: Kind::of_key_type(attr::be32(a, 4).unwrap_or(0)),
            key_len: attr::be32(a, 5).unwrap_or(0) as usize,
            data_kind: data_type
                .filter(|t| *t != 0xffff_ff00)
                .map(Kind::of_type_id),
            elems: Vec::new(),
        };
        let req = [nla(1, &cstr(table)), nla(2, &cstr(&name))].concat();
        for body in sock.dump(family, NFT_MSG_GETSETELEM, &req)? {
            let a = body.get(4..).unwrap_or(&[]);
            let Some(list) = attr::get(a, 3) else {
                continue;
            };
            for (_, e) in attr::attrs(list) {
                let value = |k: u16| {
                    attr::get(e, k)
                        .and_then(|d| attr::get(d, 1))
                        .map(<[u8]>::to_vec)
                };
                set.elems.push(Elem {
                    key: value(1).unwrap_or_default(),
                    key_end: value(10),
                    interval_end: attr::be32(e, 3).unwrap_or(0) & 1 != 0,
                    data: attr::get(e, 2).and_then(expr::verdict),
                    data_bytes: attr::get(e, 2)
                        .and_then(|d| attr::get(d, 1))
                        .map(<[u8]>::to_vec),
                    comment: attr::get(e, 6).and_then(|u| attr::udata_comment(u, 0)),
                });
            }
        }
        sets.insert(name, set);
    }
    let mut named: Vec<&SetInfo> = sets.values().filter(|s| !s.anonymous).collect();
    named.sort_by(|a, b| a.name.cmp(&b.name));
    for s in named {
        let kind = if s.map { "map" } else { "set" };
        emit(json!({ kind: {
            "family": fam,
            "table": table,
            "name": s.name,
            "elem": expr::elements(s, &[]),
        }}));
    }
    // Chains: their dump cannot be filtered by table.
    for body in sock.dump(family, NFT_MSG_GETCHAIN, &[])? {
        let a = body.get(4..).unwrap_or(&[]);
        if attr::string(a, 1).as_deref() != Some(table) {
            continue;
        }
        let Some(name) = attr::string(a, 3) else {
            continue;
        };
        let mut chain = serde_json::Map::new();
        chain.insert("family".into(), json!(fam));
        chain.insert("table".into(), json!(table));
        chain.insert("name".into(), json!(name));
        chain.insert("handle".into(), json!(attr::be64(a, 2).unwrap_or(0)));
        if let Some(hook) = attr::get(a, 4) {
            let num = attr::be32(hook, 1).unwrap_or(u32::MAX);
            let hook_name = [
                "prerouting",
                "input",
                "forward",
                "output",
                "postrouting",
                "ingress",
            ]
            .get(num as usize)
            .copied()
            .unwrap_or("unknown");
            chain.insert(
                "type".into(),
                json!(attr::string(a, 7).unwrap_or_else(|| "filter".into())),
            );
            chain.insert("hook".into(), json!(hook_name));
            chain.insert(
                "prio".into(),
                json!(attr::be32(hook, 2).unwrap_or(0) as i32),
            );
            let policy = if attr::be32(a, 5) == Some(0) {
                "drop"
            } else {
                "accept"
            };
            chain.insert("policy".into(), json!(policy));
        }
        emit(json!({ "chain": chain }));
    }
    // Rules, decoded as they arrive: a 10k-Service table has 80k.
    sock.rules_of(family, table, &mut |a| {
        let Some(chain) = attr::string(a, 2) else {
            return;
        };
        let exprs = attr::get(a, 4).unwrap_or(&[]);
        let mut rule = serde_json::Map::new();
        rule.insert("family".into(), json!(fam));
        rule.insert("table".into(), json!(table));
        rule.insert("chain".into(), json!(chain));
        rule.insert("handle".into(), json!(attr::be64(a, 3).unwrap_or(0)));
        if let Some(c) = attr::get(a, 7).and_then(|u| attr::udata_comment(u, 0)) {
            rule.insert("comment".into(), json!(c));
        }
        rule.insert(
            "expr".into(),
            Value::Array(expr::statements(fam, exprs, &sets)),
        );
        emit(json!({ "rule": rule }));
    })
}

/// A netlink socket of the nf_tables subsystem.
struct Socket(Fd);

impl Socket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is closed by `Fd`'s drop.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(Fd(fd)))
    }

    /// A plain (not dump) request of message `msg`: the answers' bodies.
    fn request(&self, family: u8, msg: u16) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.exchange(family, msg, &[], false, &mut |b| out.push(b.to_vec()))?;
        Ok(out)
    }

    /// A dump request of message `msg` for `family` with `attrs`: every
    /// answer's body (the nfgenmsg header, then its attributes).
    fn dump(&self, family: u8, msg: u16, attrs: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.dump_each(family, msg, attrs, &mut |b| out.push(b.to_vec()))?;
        Ok(out)
    }

    /// The rules of `table` (family `family`), each rule's attributes
    /// (`NFTA_RULE_*`) handed to `each` as they arrive.
    fn rules_of(&self, family: u8, table: &str, each: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        self.dump_each(
            family,
            NFT_MSG_GETRULE,
            &nla(1, &cstr(table)),
            &mut |body| {
                let a = body.get(4..).unwrap_or(&[]);
                // The kernel filters by table; a rule of another is not ours.
                if attr::string(a, 1).as_deref() == Some(table) {
                    each(a);
                }
            },
        )
    }

    /// Like [`Socket::dump`], each answer's body handed to `each` as it
    /// arrives.
    fn dump_each(
        &self,
        family: u8,
        msg: u16,
        attrs: &[u8],
        each: &mut dyn FnMut(&[u8]),
    ) -> io::Result<()> {
        self.exchange(family, msg, attrs, true, each)
    }

    /// Sends one request and hands each answer to `each` until the kernel
    /// is done (a dump's `NLMSG_DONE`, or a plain request's acknowledgement).
    fn exchange(
        &self,
        family: u8,
        msg: u16,
        attrs: &[u8],
        dump: bool,
        each: &mut dyn FnMut(&[u8]),
    ) -> io::Result<()> {
        let len = NLMSG_HDRLEN + 4 + attrs.len();
        let mut req = Vec::with_capacity(len);
        req.extend((len as u32).to_ne_bytes());
        req.extend(((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        let flags = if dump {
            libc::NLM_F_REQUEST | libc::NLM_F_DUMP
        } else {
            // Ask for an acknowledgement: it ends the exchange.
            libc::NLM_F_REQUEST | libc::NLM_F_ACK
        };
        req.extend((flags as u16).to_ne_bytes());
        req.extend(1u32.to_ne_bytes()); // sequence
        req.extend(0u32.to_ne_bytes()); // port id: the kernel's
        req.extend([family, 0, 0, 0]); // nfgenmsg: family, version 0, res_id 0
        req.extend(attrs);
        // SAFETY: `req` is a valid buffer of `req.len()` bytes.
        let sent = unsafe { libc::send(self.0.0, req.as_ptr().cast(), req.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes.
            let n = unsafe { libc::recv(self.0.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut msgs = &buf[..n as usize];
            if msgs.is_empty() {
                return Ok(());
            }
            while msgs.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes(msgs[4..6].try_into().unwrap_or_default());
                if len < NLMSG_HDRLEN || len > msgs.len() {
                    return Err(io::Error::other("truncated netlink message"));
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = msgs
                            .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                            .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()))
                            .unwrap_or(0);
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                        // An acknowledgement: a plain request is answered.
                        if !dump {
                            return Ok(());
                        }
                    }
                    _ => each(&msgs[NLMSG_HDRLEN..len]),
                }
                let step = (len + 3) & !3;
                msgs = msgs.get(step..).unwrap_or(&[]);
            }
        }
    }
}

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}
