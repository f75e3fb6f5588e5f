//! Edits: an `iptables -I`/`-A` command, as netdrop prints it in a fix,
//! read into the model and applied to copies of only the chains it
//! changes — the ruleset itself is never touched (nor is the node's), so
//! a fix can be walked before anyone runs it.

use crate::{
    parse::{parse_ruleset, tokenize},
    rules::{Chain, Match, Rule, Ruleset},
};

/// One rule added to a chain.
#[derive(Clone, Debug)]
pub struct Edit {
    pub table: String,
    pub chain: String,
    /// 1-based position (`-I CHAIN N`; `-I CHAIN` is 1); `None`: appended.
    pub at: Option<usize>,
    pub rule: Rule,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error("`{0}`: not an iptables command that inserts or appends a rule")]
    NotAnInsert(String),
    #[error("`{command}`: {why}")]
    Bad { command: String, why: String },
    #[error("chain {table}/{chain} does not exist")]
    NoChain { table: String, chain: String },
    #[error("{table}/{chain} has {len} rules: cannot insert at {at}")]
    TooFar {
        table: String,
        chain: String,
        at: usize,
        len: usize,
    },
}

/// Whether `word` runs iptables or ip6tables (either backend).
pub fn is_iptables_tool(word: &str) -> bool {
    matches!(
        word,
        "iptables"
            | "ip6tables"
            | "iptables-nft"
            | "ip6tables-nft"
            | "iptables-legacy"
            | "ip6tables-legacy"
    )
}

impl Edit {
    /// Rule `spec` (iptables-save's words after `-A CHAIN`) added to
    /// `chain` of `table` at `at` (`None`: appended), read once into the
    /// model: what a fix walks and what it prints are this one value.
    pub fn new(table: &str, chain: &str, at: Option<usize>, spec: &str) -> Result<Self, EditError> {
        let bad = |why: &str| EditError::Bad {
            command: format!("-A {chain} {spec}"),
            why: why.to_owned(),
        };
        if at == Some(0) {
            return Err(bad("rule positions start at 1"));
        }
        let dump = format!("*{table}\n:{chain} ACCEPT [0:0]\n-A {chain} {spec}\nCOMMIT\n");
        let rs = parse_ruleset(&dump).map_err(|e| bad(&e.to_string()))?;
        let mut rule = rs
            .tables
            .get(table)
            .and_then(|t| t.chain(chain))
            .and_then(|c| c.rules.first())
            .cloned()
            .ok_or_else(|| bad("no rule"))?;
        if rule
            .matches
            .iter()
            .any(|m| matches!(m, Match::Unmodelled { .. }))
        {
            return Err(bad("its rule uses a match netdrop does not model"));
        }
        rule.line = 0;
        Ok(Self {
            table: table.to_owned(),
            chain: chain.to_owned(),
            at,
            rule,
        })
    }

    /// The rule's words after `-A CHAIN`, as iptables takes them.
    pub fn spec(&self) -> &str {
        let text = self.rule.text.trim_start_matches("-A ");
        text.strip_prefix(self.chain.as_str())
            .map_or(text, str::trim_start)
    }
}

/// A command of a fix on an iptables table, typed: `explain` prints it
/// with the node's tool, and the walk applies the rules it adds as they
/// are (never read back from the printed text).
#[derive(Clone, Debug)]
pub enum RuleCommand {
    /// `-I CHAIN [N] SPEC` or `-A CHAIN SPEC`: walked before it is printed.
    Add(Edit),
    /// `-D CHAIN N`: rule `rule_no` removed (the other choice a fix offers).
    Delete {
        table: String,
        chain: String,
        rule_no: usize,
    },
    /// `-D CHAIN SPEC`: the rule of that spec removed (a leftover's jump).
    DeleteRule {
        table: String,
        chain: String,
        spec: String,
    },
    /// `-F CHAIN` then `-X CHAIN`: a chain emptied and removed.
    RemoveChain { table: String, chain: String },
}

/// A native nftables table by its identity: family and name (the model
/// names it `inet firewalld`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftTable {
    pub family: String,
    pub name: String,
}

impl NftTable {
    /// The table the model names `FAMILY NAME`; `None` for an iptables
    /// table (`filter`).
    pub fn of(model_name: &str) -> Option<Self> {
        let (family, name) = model_name.split_once(' ')?;
        Some(Self {
            family: family.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// Where an `nft insert rule` goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NftPosition {
    /// Before the rule of this handle.
    Handle(u64),
    /// Before a rule whose handle the reader looks up (`position H`).
    Unknown,
}

/// A command of a fix on a native nftables table, typed until it is
/// printed (nft's syntax: an `iptables` command cannot reach such a
/// table). Not walked: the model walks iptables rules it can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NftCommand {
    /// `nft delete rule T C handle H`.
    DeleteRule {
        table: NftTable,
        chain: String,
        handle: u64,
    },
    /// `nft insert rule T C position P STATEMENT`.
    InsertRule {
        table: NftTable,
        chain: String,
        position: NftPosition,
        statement: String,
    },
    /// `nft add rule T C STATEMENT` (at the end: before the policy).
    AddRule {
        table: NftTable,
        chain: String,
        statement: String,
    },
    /// `nft delete table T`.
    DeleteTable { table: NftTable },
    /// `nft list table T` (to look before deleting).
    ListTable { table: NftTable },
    /// `nft -a list chain T C` (shows the handles).
    ListChain { table: NftTable, chain: String },
}

/// Where a firewalld change applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirewalldScope {
    /// The default zone.
    Default,
    Zone(String),
    Policy(String),
}

/// One firewalld change, typed (firewall-cmd's syntax when printed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirewalldChange {
    /// `--add-port=PORT/PROTO`.
    AddPort {
        scope: FirewalldScope,
        port: u16,
        proto: String,
    },
    /// A rich rule accepting `source` (an address or network).
    AcceptSource {
        scope: FirewalldScope,
        ipv6: bool,
        source: String,
    },
    /// `--zone=Z --add-source=SOURCE`.
    AddSource { zone: String, source: String },
    /// `--zone=Z --add-interface=IFACE`.
    AddInterface { zone: String, iface: String },
    /// `--zone=Z --add-forward` (intra-zone forwarding).
    AddForward { zone: String },
}

/// firewalld changes made permanent, then applied: what a fix through
/// firewalld runs (`firewall-cmd --permanent … && firewall-cmd --reload`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewalldCommand {
    pub changes: Vec<FirewalldChange>,
}

/// Reads `iptables [-w] [-t TABLE] -I CHAIN [N] <rule>` or `... -A CHAIN
/// <rule>`; the rule is parsed as iptables-save's own lines are.
pub fn parse_command(command: &str) -> Result<Edit, EditError> {
    let bad = |why: &str| EditError::Bad {
        command: command.to_owned(),
        why: why.to_owned(),
    };
    let toks = tokenize(command, 0).map_err(|e| bad(&e.to_string()))?;
    let toks: Vec<&str> = toks.iter().map(|t| t.as_ref()).collect();
    let [tool, rest @ ..] = toks.as_slice() else {
        return Err(EditError::NotAnInsert(command.to_owned()));
    };
    if !is_iptables_tool(tool) {
        return Err(EditError::NotAnInsert(command.to_owned()));
    }
    let mut table = "filter";
    let mut i = 0;
    let mut op = None;
    while i < rest.len() {
        match rest[i] {
            "-w" | "--wait" => {
                i += 1;
                if rest.get(i).is_some_and(|t| t.parse::<u32>().is_ok()) {
                    i += 1;
                }
            }
            "-t" | "--table" => {
                table = rest.get(i + 1).ok_or_else(|| bad("-t needs a table"))?;
                i += 2;
            }
            "-I" | "--insert" | "-A" | "--append" => {
                let chain = rest.get(i + 1).ok_or_else(|| bad("no chain"))?;
                let insert = matches!(rest[i], "-I" | "--insert");
                i += 2;
                let mut at = None;
                if insert {
                    at = Some(1);
                    if let Some(n) = rest.get(i).and_then(|t| t.parse::<usize>().ok()) {
                        if n == 0 {
                            return Err(bad("rule positions start at 1"));
                        }
                        at = Some(n);
                        i += 1;
                    }
                }
                op = Some((*chain, at));
                break;
            }
            _ => return Err(EditError::NotAnInsert(command.to_owned())),
        }
    }
    let Some((chain, at)) = op else {
        return Err(EditError::NotAnInsert(command.to_owned()));
    };
    let spec = rest[i..]
        .iter()
        .map(|t| {
            if t.contains(char::is_whitespace) {
                format!("\"{t}\"")
            } else {
                (*t).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    Edit::new(table, chain, at, &spec).map_err(|e| match e {
        EditError::Bad { why, .. } => bad(&why),
        e => e,
    })
}

/// The chains `edits` change, as copies with the edits applied in order
/// (what [`crate::simulate::simulate_with`] walks in place of `rs`'s):
/// (table, chain).
pub fn apply(rs: &Ruleset, edits: &[Edit]) -> Result<Vec<(String, Chain)>, EditError> {
    let mut over: Vec<(String, Chain)> = Vec::new();
    for e in edits {
        let pos = match over
            .iter()
            .position(|(t, c)| *t == e.table && c.name == e.chain)
        {
            Some(p) => p,
            None => {
                let chain = rs
                    .tables
                    .get(&e.table)
                    .and_then(|t| t.chain(&e.chain))
                    .ok_or_else(|| EditError::NoChain {
                        table: e.table.clone(),
                        chain: e.chain.clone(),
                    })?;
                over.push((e.table.clone(), chain.clone()));
                over.len() - 1
            }
        };
        let chain = &mut over[pos].1;
        let len = chain.rules.len();
        let index = match e.at {
            None => len,
            Some(at) if at <= len + 1 => at - 1,
            Some(at) => {
                return Err(EditError::TooFar {
                    table: e.table.clone(),
                    chain: e.chain.clone(),
                    at,
                    len,
                });
            }
        };
        chain.rules.insert(index, e.rule.clone());
        chain.seal();
    }
    Ok(over)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Target;

    #[test]
    fn reads_inserts_and_appends_as_printed_in_fixes() {
        let e = parse_command(
            "iptables -I FORWARD 16 -s 10.1.0.0/16 -d 10.1.0.0/16 -m comment --comment \"pod traffic\" -j ACCEPT",
        )
        .unwrap();
        assert_eq!(
            (e.table.as_str(), e.chain.as_str(), e.at),
            ("filter", "FORWARD", Some(16))
        );
        assert_eq!(e.rule.target, Target::Accept);
        assert_eq!(e.rule.matches.len(), 3);
        let e = parse_command(
            "ip6tables-legacy -w -t raw -A PREROUTING -p udp --dport 8472 -j NOTRACK",
        )
        .unwrap();
        assert_eq!((e.table.as_str(), e.at), ("raw", None));
        let e =
            parse_command("iptables -I INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
                .unwrap();
        assert_eq!(e.at, Some(1));
        for (cmd, want) in [
            ("iptables -t filter -D FORWARD 1", "not an iptables command"),
            ("firewall-cmd --reload", "not an iptables command"),
            ("iptables -I FORWARD 0 -j ACCEPT", "start at 1"),
            (
                "iptables -I INPUT -m string --string x --algo bm -j ACCEPT",
                "does not model",
            ),
        ] {
            let err = parse_command(cmd).unwrap_err().to_string();
            assert!(err.contains(want), "{cmd}: {err}");
        }
    }

    #[test]
    fn applies_to_copies_of_the_chains_it_changes() {
        let rs =
            parse_ruleset("*filter\n:FORWARD DROP [0:0]\n-A FORWARD -j REJECT\nCOMMIT\n").unwrap();
        let edits = [
            parse_command("iptables -I FORWARD -s 10.1.0.0/16 -j ACCEPT").unwrap(),
            parse_command("iptables -I FORWARD -d 10.1.0.0/16 -j ACCEPT").unwrap(),
            parse_command("iptables -A FORWARD -j DROP").unwrap(),
        ];
        let over = apply(&rs, &edits).unwrap();
        assert_eq!(over.len(), 1);
        let texts: Vec<_> = over[0].1.rules.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "-A FORWARD -d 10.1.0.0/16 -j ACCEPT",
                "-A FORWARD -s 10.1.0.0/16 -j ACCEPT",
                "-A FORWARD -j REJECT",
                "-A FORWARD -j DROP"
            ]
        );
        assert_eq!(rs.tables["filter"].chain("FORWARD").unwrap().rules.len(), 1);
        let far = parse_command("iptables -I FORWARD 3 -j ACCEPT").unwrap();
        assert!(matches!(apply(&rs, &[far]), Err(EditError::TooFar { .. })));
        let none = parse_command("iptables -I DOCKER-USER -j ACCEPT").unwrap();
        assert!(matches!(
            apply(&rs, &[none]),
            Err(EditError::NoChain { .. })
        ));
    }
}
