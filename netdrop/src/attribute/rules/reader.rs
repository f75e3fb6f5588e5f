//! Reading a node's live ruleset: `iptables-save -c` in its namespace, both
//! backends when a node has rules in both (legacy and nft side by side is a
//! classic source of "my rule is there but nothing happens").

use std::{
    path::Path,
    process::{Command, Stdio},
};

use netdrop_model::{ParseError, Ruleset, parse::parse_reader, rules::Match};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot run {0}: {1} (install Debian's iptables package)")]
    Spawn(String, std::io::Error),
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("cannot parse the output of {cmd}: {source}")]
    Parse {
        cmd: String,
        #[source]
        source: ParseError,
    },
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which iptables backend a ruleset came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Whatever `iptables-save` is on this machine.
    Default,
    Legacy,
    Nft,
    /// Read from a file.
    File,
}

/// Everything in force in one namespace.
#[derive(Clone, Debug, Default)]
pub struct NodeRules {
    /// IPv4 rulesets, one per backend that holds rules.
    pub v4: Vec<(Backend, Ruleset)>,
    pub v6: Vec<(Backend, Ruleset)>,
    /// What could not be read (e.g. the legacy backend without
    /// CAP_NET_RAW): its rules are missing from the model.
    pub problems: Vec<String>,
}

impl NodeRules {
    /// Both backends hold rules: the kernel runs both sets.
    /// Every ruleset, IPv4 first, with its backend.
    pub fn all(&self) -> impl Iterator<Item = &(Backend, Ruleset)> {
        self.v4.iter().chain(self.v6.iter())
    }

    pub fn split_backends(&self) -> bool {
        self.v4.iter().any(|(b, _)| *b == Backend::Legacy)
            && self.v4.iter().any(|(b, _)| *b == Backend::Nft)
    }
}

/// Reads a ruleset file: an `iptables-save` dump, `nft -j list ruleset`
/// JSON, or nft text (`nft list ruleset`, an `nft -f` script; read by nft
/// itself): native tables, for IPv4 packets.
pub fn read_file(path: &Path) -> Result<Ruleset, ReadError> {
    let file = std::fs::File::open(path).map_err(|source| ReadError::File {
        path: path.display().to_string(),
        source,
    })?;
    let mut head = [0u8; 4096];
    let n = std::io::Read::read(&mut &file, &mut head).unwrap_or(0);
    let is_json = head[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if is_json || is_nft_text(&String::from_utf8_lossy(&head[..n])) {
        let json = if is_json {
            std::fs::read_to_string(path).map_err(|source| ReadError::File {
                path: path.display().to_string(),
                source,
            })?
        } else {
            nft_text_as_json(path)?
        };
        let native = netdrop_model::nft::parse_nft_json(&json, &Default::default(), |_, _| false)
            .map_err(|e| ReadError::Failed {
            cmd: path.display().to_string(),
            stderr: e.to_string(),
        })?;
        let mut rs = Ruleset::default();
        for t in native.v4 {
            rs.tables.insert(t.name.clone(), t);
        }
        return Ok(rs);
    }
    let file = std::fs::File::open(path).map_err(|source| ReadError::File {
        path: path.display().to_string(),
        source,
    })?;
    parse_reader(std::io::BufReader::new(file)).map_err(|source| ReadError::Parse {
        cmd: path.display().to_string(),
        source,
    })
}

/// `nft list ruleset` text (or an `nft -f` script): its first statement is
/// nft's, not iptables-save's (`*filter`, `:CHAIN`, `-A`).
fn is_nft_text(head: &str) -> bool {
    head.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| {
            let word = l.split_whitespace().next().unwrap_or_default();
            matches!(
                word,
                "table" | "add" | "flush" | "define" | "include" | "create" | "destroy"
            )
        })
}

/// nft text read by nft itself: loaded into a private, throwaway network
/// namespace (never the node's) and listed back as JSON. Needs root, as
/// any nft does.
fn nft_text_as_json(path: &Path) -> Result<String, ReadError> {
    let label = format!("nft -f {} (in a private network namespace)", path.display());
    let out = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "nft -f \"$1\" && nft -j list ruleset",
            "sh",
        ])
        .arg(path)
        .output()
        .map_err(|e| ReadError::Spawn("unshare".into(), e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let stderr = if stderr.contains("Operation not permitted") {
            format!(
                "{stderr}: reading nft text needs root (nft itself parses it, in a private network namespace); without root, give `nft -j list ruleset` output"
            )
        } else {
            stderr
        };
        return Err(ReadError::Failed { cmd: label, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `prog` run in namespace `netns` (`ip netns exec`), or in netdrop's own.
fn command_in(netns: Option<&str>, prog: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, prog]);
            c
        }
        None => Command::new(prog),
    }
}

fn save(netns: Option<&str>, prog: &str) -> Result<Ruleset, ReadError> {
    save_with(netns, prog, &[])
}

/// `prog -c ARGS` (an `iptables-save`) in `netns`, parsed.
fn save_with(netns: Option<&str>, prog: &str, args: &[&str]) -> Result<Ruleset, ReadError> {
    let mut cmd = command_in(netns, prog);
    cmd.arg("-c").args(args);
    let what = [&["-c"], args].concat().join(" ");
    let label = match netns {
        Some(ns) => format!("{prog} {what} (netns {ns})"),
        None => format!("{prog} {what}"),
    };
    // Parsed as it streams: a kube-proxy node's dump is tens of MiB of
    // text that need not exist beside its model.
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ReadError::Spawn(prog.to_owned(), e))?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ReadError::Failed {
            cmd: label,
            stderr: "no pipe to read".into(),
        });
    };
    let (parsed, err) = std::thread::scope(|s| {
        let err = s.spawn(move || {
            let mut e = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stderr, &mut e);
            e
        });
        let parsed = parse_reader(std::io::BufReader::with_capacity(1 << 16, stdout));
        if parsed.is_err() {
            // Stop it rather than wait for the rest of a dump we refuse.
            let _ = child.kill();
        }
        (parsed, err.join().unwrap_or_default())
    });
    let status = child
        .wait()
        .map_err(|e| ReadError::Spawn(prog.to_owned(), e))?;
    match parsed {
        Err(source) => Err(ReadError::Parse { cmd: label, source }),
        Ok(_) if !status.success() => Err(ReadError::Failed {
            cmd: label,
            stderr: String::from_utf8_lossy(&err).trim().to_owned(),
        }),
        Ok(rs) => Ok(rs),
    }
}

fn has_rules(rs: &Ruleset) -> bool {
    rs.tables.values().any(|t| {
        t.chains
            .iter()
            .any(|c| !c.rules.is_empty() || c.policy == Some(netdrop_model::rules::Policy::Drop))
    })
}

fn exists(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// Reads the live rules of a namespace (`None`: netdrop's own). Only reads:
/// netdrop never changes a ruleset.
pub fn read_live(netns: Option<&str>) -> Result<NodeRules, ReadError> {
    let mut node = NodeRules::default();
    for family in [4, 6] {
        let fam = if family == 4 {
            netdrop_model::Family::Ipv4
        } else {
            netdrop_model::Family::Ipv6
        };
        let program = |b| save_program(b, fam).unwrap_or_default();
        let (default, legacy, nft) = (
            program(Backend::Default),
            program(Backend::Legacy),
            program(Backend::Nft),
        );
        if exists(legacy) && exists(nft) {
            let l = save(netns, legacy);
            let n = save(netns, nft)?;
            if let Err(e) = &l {
                node.problems.push(format!(
                    "the legacy iptables backend could not be read, so drops by its rules cannot be attributed: {e}"
                ));
            }
            let list = if family == 4 {
                &mut node.v4
            } else {
                &mut node.v6
            };
            match l {
                Ok(l) if has_rules(&l) => {
                    list.push((Backend::Legacy, l));
                    if has_rules(&n) {
                        list.push((Backend::Nft, n));
                    }
                }
                // No legacy rules (or no legacy module): nft alone.
                _ => list.push((Backend::Nft, n)),
            }
        } else if family == 4 || exists(default) {
            let rs = save(netns, default)?;
            if family == 4 {
                node.v4.push((Backend::Default, rs));
            } else {
                node.v6.push((Backend::Default, rs));
            }
        }
    }
    name_commands(&mut node);
    let ferm = ferm_conf(netns);
    for (_, rs) in node.v4.iter_mut().chain(node.v6.iter_mut()) {
        rs.ferm_conf.clone_from(&ferm);
    }
    read_incompatible(netns, &mut node);
    read_native(netns, &mut node);
    mark_lossy_rules(netns, &mut node);
    Ok(node)
}

/// iptables-nft's tables that iptables-nft-save could not print whole (a
/// base chain or rule only nft can say; iptables-nft of another version
/// than the node's wrote it, or nft did): read over netlink and walked as
/// nftables tables in place of the partial print, and said once. Never
/// the print alone: it misses what drops.
fn read_incompatible(netns: Option<&str>, node: &mut NodeRules) {
    let mut problems = Vec::new();
    for (fam, list) in [("ip", &mut node.v4), ("ip6", &mut node.v6)] {
        for (backend, rs) in list.iter_mut() {
            if rs.incompatible.is_empty() || !read_through_nft(*backend, rs) {
                continue;
            }
            let wanted: Vec<(String, String)> = rs
                .incompatible
                .iter()
                .map(|t| (fam.to_owned(), t.clone()))
                .collect();
            let names = wanted
                .iter()
                .map(|(f, t)| format!("{f} {t}"))
                .collect::<Vec<_>>()
                .join(", ");
            match super::nf_tables::read_tables(netns, &wanted) {
                Ok(native) => {
                    for t in &rs.incompatible {
                        rs.tables.remove(t);
                    }
                    for t in native.v4.into_iter().chain(native.v6) {
                        rs.tables.insert(t.name.clone(), t);
                    }
                    rs.incompatible.clear();
                    problems.push(format!(
                        "iptables-nft-save cannot print table {names} whole (chains or rules only nft can say): read over netlink as nftables instead, its fixes in nft's syntax"
                    ));
                }
                Err(e) => problems.push(format!(
                    "iptables-nft-save cannot print table {names} whole, and reading it over netlink failed: drops by what it left out cannot be attributed: {e}"
                )),
            }
        }
    }
    node.problems.extend(problems);
}

/// What a lossy-printed rule is marked with (its unmodelled match's text
/// starts so): kept across re-reads of the same rules.
const LOSSY: &str = "nft:";

/// Whether `rs` was read through iptables-nft (its tables are nf_tables').
fn read_through_nft(backend: Backend, rs: &Ruleset) -> bool {
    backend == Backend::Nft
        || backend == Backend::Default
            && rs
                .generator
                .as_deref()
                .is_some_and(|g| g.contains("nf_tables"))
}

/// iptables-nft's tables that can drop, read over netlink too: a rule nft
/// added to them that iptables-nft-save cannot say is printed without
/// what it cannot say (1.8.9: `ip saddr { 192.0.2.7, 192.0.2.8 } drop`
/// prints as `-A INPUT -j DROP`, a drop of everything). Such a rule is
/// marked unmodelled, with the match the kernel runs, so the walk branches
/// on it instead of reading a confident drop (or accept) it is not.
fn mark_lossy_rules(netns: Option<&str>, node: &mut NodeRules) {
    let mut problems = Vec::new();
    for (fam, list) in [("ip", &mut node.v4), ("ip6", &mut node.v6)] {
        for (backend, rs) in list.iter_mut() {
            if !read_through_nft(*backend, rs) {
                continue;
            }
            let wanted: Vec<(String, String)> = DROPPING_TABLES
                .iter()
                .filter(|t| rs.tables.get(**t).is_some_and(|t| t.nft_family.is_none()))
                .map(|t| (fam.to_owned(), (*t).to_owned()))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let items = match super::nf_tables::read_items(netns, &wanted) {
                Ok(i) => i,
                Err(e) => {
                    problems.push(format!(
                        "iptables-nft's tables could not be read over netlink, so a rule nft added that iptables-nft-save prints without its set or concatenation is read as printed: {e}"
                    ));
                    continue;
                }
            };
            // Each chain's rules, in order, as the kernel holds them.
            let mut chains: Vec<((String, String), Vec<&serde_json::Value>)> = Vec::new();
            for r in items.iter().filter_map(|i| i.get("rule")) {
                let (Some(t), Some(c)) = (r["table"].as_str(), r["chain"].as_str()) else {
                    continue;
                };
                let key = (t.to_owned(), c.to_owned());
                match chains.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(&r["expr"]),
                    None => chains.push((key, vec![&r["expr"]])),
                }
            }
            for ((table, chain), exprs) in chains {
                let Some(c) = rs.tables.get_mut(&table).and_then(|t| t.chain_mut(&chain)) else {
                    continue;
                };
                if c.rules.len() != exprs.len() {
                    problems.push(format!(
                        "{table}/{chain} changed between its two reads: rules nft added that iptables-nft-save cannot print are not looked for"
                    ));
                    continue;
                }
                for (rule, expr) in c.rules.iter_mut().zip(exprs) {
                    if let Some(what) = beyond_iptables(expr) {
                        rule.matches.push(Match::Unmodelled {
                            text: format!(
                                "{LOSSY} {what} (added with nft; iptables-nft-save does not print it)"
                            ),
                        });
                    }
                }
                c.seal();
            }
        }
    }
    node.problems.extend(problems);
}

/// The first of a rule's nft expressions that iptables cannot say (a set
/// or a concatenation, a map or verdict map), as nft's JSON has it.
fn beyond_iptables(expr: &serde_json::Value) -> Option<String> {
    expr.as_array()?.iter().find_map(|stmt| {
        let lossy = match stmt.get("match") {
            Some(m) => {
                m["left"].get("concat").is_some()
                    || m["right"].get("set").is_some()
                    || m["right"].as_str().is_some_and(|r| r.starts_with('@'))
            }
            None => ["vmap", "map", "set", "numgen", "jhash"]
                .iter()
                .any(|k| stmt.get(*k).is_some()),
        };
        lossy.then(|| netdrop_model::nft::render(std::slice::from_ref(stmt)))
    })
}

/// The ferm configuration in force for the namespace read (ferm leaves no
/// mark in its rules): `NETDROP_FERM_CONF` when set (a node whose ferm
/// reads another file, or a namespace ferm was run in); else the host's
/// /etc/ferm/ferm.conf, for the host's own network namespace only — the
/// one ferm.service writes — when it exists.
fn ferm_conf(netns: Option<&str>) -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("NETDROP_FERM_CONF").filter(|p| !p.is_empty()) {
        let p = std::path::PathBuf::from(p);
        return p.exists().then_some(p);
    }
    let host = netns.is_none() && crate::netns::in_host_netns();
    let conf = Path::new("/etc/ferm/ferm.conf");
    (host && conf.exists()).then(|| conf.to_path_buf())
}

/// iptables' tables whose rules can drop a packet (`nat` cannot): the ones
/// whose counters are evidence.
const DROPPING_TABLES: [&str; 4] = ["raw", "mangle", "filter", "security"];

/// The `-save` program of a backend and family (`None`: not read live).
fn save_program(backend: Backend, family: netdrop_model::Family) -> Option<&'static str> {
    let v6 = family == netdrop_model::Family::Ipv6;
    Some(match (backend, v6) {
        (Backend::Default, false) => "iptables-save",
        (Backend::Default, true) => "ip6tables-save",
        (Backend::Legacy, false) => "iptables-legacy-save",
        (Backend::Legacy, true) => "ip6tables-legacy-save",
        (Backend::Nft, false) => "iptables-nft-save",
        (Backend::Nft, true) => "ip6tables-nft-save",
        (Backend::File, _) => return None,
    })
}

/// Reads again, in place, the counters that are evidence for a drop:
/// iptables' tables that can drop (`iptables-save -c -t TABLE` for each: a
/// kube-proxy node's big `nat` table is not read) and, of native nftables
/// tables, the counters of rules that have one (over netlink, nothing else
/// decoded; a table without counters is not read). What a new drop site
/// needs when the rules did not change; the caller checks they did not.
pub fn reread_dropping_tables(netns: Option<&str>, node: &mut NodeRules) -> Result<(), ReadError> {
    let mut native: Vec<(String, String)> = Vec::new();
    for (backend, rs) in node.v4.iter_mut().chain(node.v6.iter_mut()) {
        for t in rs.tables.values() {
            let counted = || {
                t.chains
                    .iter()
                    .flat_map(|c| &c.rules)
                    .any(|r| r.counters.is_some())
            };
            if let Some(fam) = &t.nft_family
                && counted()
            {
                let short = native_name(t);
                if !native.iter().any(|(f, n)| f == fam && *n == short) {
                    native.push((fam.clone(), short.to_owned()));
                }
            }
        }
        let Some(prog) = save_program(*backend, rs.family) else {
            continue;
        };
        let names: Vec<String> = rs
            .tables
            .values()
            .filter(|t| t.nft_family.is_none() && DROPPING_TABLES.contains(&t.name.as_str()))
            .map(|t| t.name.clone())
            .collect();
        for name in names {
            let mut fresh = save_with(netns, prog, &["-t", &name])?;
            if let Some(mut t) = fresh.tables.remove(&name) {
                // The same rules (the caller checked): their lossy marks too.
                if let Some(old) = rs.tables.get(&name) {
                    keep_lossy_marks(old, &mut t);
                }
                rs.tables.insert(name, t);
            }
        }
    }
    if native.is_empty() {
        return Ok(());
    }
    let fresh = super::nf_tables::read_counters(netns, &native).map_err(|e| ReadError::Failed {
        cmd: "reading the nftables rule counters over netlink".into(),
        stderr: e.to_string(),
    })?;
    for (_, rs) in node.v4.iter_mut().chain(node.v6.iter_mut()) {
        for t in rs.tables.values_mut() {
            let Some(fam) = t.nft_family.clone() else {
                continue;
            };
            let Some(counters) = fresh.get(&(fam, native_name(t).to_owned())) else {
                continue;
            };
            for r in t.chains.iter_mut().flat_map(|c| c.rules.iter_mut()) {
                if let Some(c) = r.handle.and_then(|h| counters.get(&h)) {
                    r.counters = Some(*c);
                }
            }
        }
    }
    Ok(())
}

/// `fresh`'s rules get the lossy-print marks `old`'s had, by position.
fn keep_lossy_marks(old: &netdrop_model::rules::Table, fresh: &mut netdrop_model::rules::Table) {
    for c in &old.chains {
        let Some(f) = fresh.chain_mut(&c.name) else {
            continue;
        };
        if f.rules.len() != c.rules.len() {
            continue;
        }
        let mut changed = false;
        for (o, n) in c.rules.iter().zip(f.rules.iter_mut()) {
            for m in &o.matches {
                if matches!(m, Match::Unmodelled { text } if text.starts_with(LOSSY)) {
                    n.matches.push(m.clone());
                    changed = true;
                }
            }
        }
        if changed {
            f.seal();
        }
    }
}

/// A native table's own name (the model names it with its family: `inet
/// firewalld`).
fn native_name(t: &netdrop_model::rules::Table) -> &str {
    t.name.rsplit(' ').next().unwrap_or(&t.name)
}

/// Which backend plain `iptables` edits on this machine (`iptables -V`:
/// `(nf_tables)` or `(legacy)`), if it says.
fn default_backend() -> Option<&'static str> {
    let out = Command::new("iptables").arg("-V").output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    if v.contains("nf_tables") {
        Some("nft")
    } else if v.contains("legacy") {
        Some("legacy")
    } else {
        None
    }
}

/// Fixes say `iptables-legacy`/`iptables-nft` where plain `iptables` would
/// edit the other backend: on a node whose rules are in both, or in the
/// one that is not the default.
fn name_commands(node: &mut NodeRules) {
    let split = node.split_backends();
    let default = default_backend();
    for (backend, rs) in node.v4.iter_mut().chain(node.v6.iter_mut()) {
        let suffix = match backend {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
            _ => continue,
        };
        if split || default != Some(suffix) {
            rs.backend_suffix = Some(suffix.to_owned());
        }
    }
}

/// iptables' table names: in families `ip`/`ip6` on an nft-backend
/// iptables, such a table is iptables-nft's, read through iptables-save.
const IPTABLES_TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

/// Adds the namespace's native nftables tables (firewalld, kube-proxy's
/// nftables mode, ...) to its rulesets: `inet` tables to both families.
/// Tables iptables-nft manages are left to iptables-save. Without `nft`
/// installed there is nothing to add (and nothing native can be read: said
/// once, as a problem, if native tables may exist).
fn read_native(netns: Option<&str>, node: &mut NodeRules) {
    let nft_backend =
        |rules: &[(Backend, Ruleset)]| rules.iter().any(|(b, rs)| read_through_nft(*b, rs));
    let (v4_nft, v6_nft) = (nft_backend(&node.v4), nft_backend(&node.v6));
    let iptables_nft = |fam: &str, name: &str| {
        IPTABLES_TABLES.contains(&name) && ((fam == "ip" && v4_nft) || (fam == "ip6" && v6_nft))
    };
    // The tables, straight from the kernel (cheap); nft only for native
    // ones, if any: nft builds its whole cache for any listing, which on
    // an iptables-nft node with a 10k-Service ruleset takes tens of seconds.
    let listed = match super::nf_tables::tables(netns) {
        Ok(t) => t,
        Err(e) => {
            node.problems.push(format!(
                "the nf_tables tables could not be listed, so drops by native nftables rules cannot be attributed: {e}"
            ));
            return;
        }
    };
    let native_tables: Vec<(String, String)> = listed
        .into_iter()
        .filter(|(fam, name)| {
            matches!(fam.as_str(), "ip" | "ip6" | "inet") && !iptables_nft(fam, name)
        })
        .collect();
    if native_tables.is_empty() {
        return;
    }
    // Read over netlink and decoded as nft lists them; nft itself is not
    // run (its listing of a 10k-Service kube-proxy table peaks at 630 MiB).
    let native = match super::nf_tables::read_tables(netns, &native_tables) {
        Ok(tables) => tables,
        Err(e) => {
            node.problems.push(format!(
                "the nftables tables {} could not be read, so drops by their rules cannot be attributed: {e}",
                native_tables
                    .iter()
                    .map(|(f, n)| format!("{f} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return;
        }
    };
    for (tables, list) in [(native.v4, &mut node.v4), (native.v6, &mut node.v6)] {
        if tables.is_empty() {
            continue;
        }
        // Beside iptables-nft's tables (the kernel runs them all, by
        // priority), or the first ruleset.
        let at = list
            .iter()
            .position(|(b, _)| *b != Backend::Legacy)
            .unwrap_or(0);
        if list.is_empty() {
            let family = tables[0].family;
            list.push((
                Backend::Nft,
                Ruleset {
                    family,
                    ..Ruleset::default()
                },
            ));
        }
        let rs = &mut list[at].1;
        for t in tables {
            rs.tables.insert(t.name.clone(), t);
        }
    }
}
