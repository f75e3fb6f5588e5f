//! A fix as `explain` builds it: words, and the rule commands it runs,
//! typed ([`RuleCommand`]) until they are printed. The walk
//! (`explain::checked`) takes the rules a fix adds as they are — never read
//! back from the printed text — and the text is made once, by
//! [`FixText::render`], with the node's own tool (`iptables-legacy`,
//! `ip6tables`, …).

use netdrop_model::edit::{
    Edit, FirewalldChange, FirewalldCommand, FirewalldScope, NftCommand, NftPosition, RuleCommand,
};

/// A fix: words and commands, in the order they are said.
#[derive(Clone, Debug, Default)]
pub struct FixText {
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug)]
enum Piece {
    /// Prose, with any command it holds (`iptables-save | …`,
    /// `firewall-cmd …`) still as text.
    Words(String),
    /// Commands pasted as one (`a && b`), each typed.
    Commands(Vec<Command>),
    /// An nft command on a native table, typed.
    Nft(NftCommand),
    /// firewalld changes through firewall-cmd, typed.
    Firewalld(FirewalldCommand),
}

/// A typed command and how it is worded.
#[derive(Clone, Debug)]
struct Command {
    command: RuleCommand,
    /// An insert at the top printed without its position (`-I CHAIN …`).
    bare_insert: bool,
}

impl From<String> for FixText {
    fn from(words: String) -> Self {
        Self::words(words)
    }
}

impl FixText {
    pub fn words(words: impl Into<String>) -> Self {
        Self {
            pieces: vec![Piece::Words(words.into())],
        }
    }

    /// Words after what is there.
    pub fn say(mut self, words: impl Into<String>) -> Self {
        self.pieces.push(Piece::Words(words.into()));
        self
    }

    /// A command after what is there, printed in backticks.
    pub fn run(mut self, command: RuleCommand) -> Self {
        self.pieces.push(Piece::Commands(vec![Command {
            command,
            bare_insert: false,
        }]));
        self
    }

    /// firewall-cmd's changes after what is there, printed in backticks
    /// as one command ending in `--reload`.
    pub fn firewalld(mut self, command: FirewalldCommand) -> Self {
        self.pieces.push(Piece::Firewalld(command));
        self
    }

    /// An nft command after what is there, printed in backticks.
    pub fn nft(mut self, command: NftCommand) -> Self {
        self.pieces.push(Piece::Nft(command));
        self
    }

    /// Rules added, pasted as one command (`a && b`); `bare`: inserts at
    /// the top of their chains, printed without their position.
    pub fn run_adds(mut self, edits: Vec<Edit>, bare: bool) -> Self {
        self.pieces.push(Piece::Commands(
            edits
                .into_iter()
                .map(|e| Command {
                    command: RuleCommand::Add(e),
                    bare_insert: bare,
                })
                .collect(),
        ));
        self
    }

    /// Another fix's words and commands after these.
    pub fn and(mut self, more: FixText) -> Self {
        self.pieces.extend(more.pieces);
        self
    }

    /// The rules the fix adds, as the walk applies them.
    pub fn added(&self) -> Vec<&Edit> {
        self.commands()
            .filter_map(|c| match &c.command {
                RuleCommand::Add(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// The commands that add rules, as printed with `tool`, joined by `; `
    /// (a withheld fix names what it would have said).
    pub fn added_text(&self, tool: &str) -> String {
        self.commands()
            .filter(|c| matches!(c.command, RuleCommand::Add(_)))
            .map(|c| c.text(tool))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn commands(&self) -> impl Iterator<Item = &Command> {
        self.pieces.iter().flat_map(|p| match p {
            Piece::Commands(c) => c.as_slice(),
            Piece::Words(_) | Piece::Nft(_) | Piece::Firewalld(_) => &[],
        })
    }

    /// The fix in words: commands with `tool` (`iptables`, `ip6tables`,
    /// `iptables-legacy`, …), and the commands still inside its words run
    /// with it too.
    pub fn render(&self, tool: &str) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Words(w) => out.push_str(&with_tool(w, tool)),
                Piece::Commands(c) => {
                    out.push('`');
                    out.push_str(
                        &c.iter()
                            .map(|c| c.text(tool))
                            .collect::<Vec<_>>()
                            .join(" && "),
                    );
                    out.push('`');
                }
                Piece::Nft(c) => {
                    out.push('`');
                    out.push_str(&nft_text(c));
                    out.push('`');
                }
                Piece::Firewalld(c) => {
                    out.push('`');
                    out.push_str(&firewalld_text(c));
                    out.push('`');
                }
            }
        }
        out
    }
}

impl Command {
    /// `iptables [-t T] -I CHAIN [N] SPEC`: an insert names its table
    /// unless it is `filter`; a removal always does.
    fn text(&self, tool: &str) -> String {
        let t = |table: &str| {
            if table == "filter" {
                String::new()
            } else {
                format!("-t {table} ")
            }
        };
        match &self.command {
            RuleCommand::Add(e) => match e.at {
                Some(1) if self.bare_insert => {
                    format!("{tool} {}-I {} {}", t(&e.table), e.chain, e.spec())
                }
                Some(n) => format!("{tool} {}-I {} {n} {}", t(&e.table), e.chain, e.spec()),
                None => format!("{tool} {}-A {} {}", t(&e.table), e.chain, e.spec()),
            },
            RuleCommand::Delete {
                table,
                chain,
                rule_no,
            } => format!("{tool} -t {table} -D {chain} {rule_no}"),
            RuleCommand::DeleteRule { table, chain, spec } => {
                format!("{tool} -t {table} -D {chain} {spec}")
                    .trim_end()
                    .to_owned()
            }
            RuleCommand::RemoveChain { table, chain } => {
                format!("{tool} -t {table} -F {chain} && {tool} -t {table} -X {chain}")
            }
        }
    }
}

/// firewall-cmd's changes, permanent, then `--reload`.
fn firewalld_text(c: &FirewalldCommand) -> String {
    let scope = |s: &FirewalldScope| match s {
        FirewalldScope::Default => String::new(),
        FirewalldScope::Zone(z) => format!(" --zone={z}"),
        FirewalldScope::Policy(p) => format!(" --policy={p}"),
    };
    c.changes
        .iter()
        .map(|ch| match ch {
            FirewalldChange::AddPort { scope: s, port, proto } => {
                format!("firewall-cmd --permanent{} --add-port={port}/{proto}", scope(s))
            }
            FirewalldChange::AcceptSource {
                scope: s,
                ipv6,
                source,
            } => format!(
                "firewall-cmd --permanent{} --add-rich-rule='rule family=\"{}\" source address=\"{source}\" accept'",
                scope(s),
                if *ipv6 { "ipv6" } else { "ipv4" }
            ),
            FirewalldChange::AddSource { zone, source } => {
                format!("firewall-cmd --permanent --zone={zone} --add-source={source}")
            }
            FirewalldChange::AddInterface { zone, iface } => {
                format!("firewall-cmd --permanent --zone={zone} --add-interface={iface}")
            }
            FirewalldChange::AddForward { zone } => {
                format!("firewall-cmd --permanent --zone={zone} --add-forward")
            }
        })
        .chain(["firewall-cmd --reload".to_owned()])
        .collect::<Vec<_>>()
        .join(" && ")
}

/// An nft command as nft takes it.
fn nft_text(c: &NftCommand) -> String {
    let t = |t: &netdrop_model::edit::NftTable| format!("{} {}", t.family, t.name);
    match c {
        NftCommand::DeleteRule {
            table,
            chain,
            handle,
        } => format!("nft delete rule {} {chain} handle {handle}", t(table)),
        NftCommand::InsertRule {
            table,
            chain,
            position,
            statement,
        } => {
            let at = match position {
                NftPosition::Handle(h) => h.to_string(),
                NftPosition::Unknown => "H".to_owned(),
            };
            format!(
                "nft insert rule {} {chain} position {at} {statement}",
                t(table)
            )
        }
        NftCommand::AddRule {
            table,
            chain,
            statement,
        } => format!("nft add rule {} {chain} {statement}", t(table)),
        NftCommand::DeleteTable { table } => format!("nft delete table {}", t(table)),
        NftCommand::ListTable { table } => format!("nft list table {}", t(table)),
        NftCommand::ListChain { table, chain } => {
            format!("nft -a list chain {} {chain}", t(table))
        }
    }
}

/// `fix` with its iptables commands (inside backticks: `iptables`,
/// `iptables-save`, `iptables-restore`) run as `tool` instead. Prose and
/// `service iptables save` stay.
pub(crate) fn with_tool(fix: &str, tool: &str) -> String {
    if tool == "iptables" {
        return fix.to_owned();
    }
    let mut out = String::with_capacity(fix.len() + 32);
    for (i, part) in fix.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 0 || part.starts_with("service ") {
            out.push_str(part);
            continue;
        }
        // Only a command is renamed (`systemctl … iptables` is a unit).
        let mut command = true;
        let mut first = true;
        for word in part.split(' ') {
            if !first {
                out.push(' ');
            }
            first = false;
            let at_command = std::mem::replace(
                &mut command,
                matches!(word, "&&" | "||" | "|" | ";") || word.ends_with(';'),
            );
            if !at_command {
                out.push_str(word);
                continue;
            }
            match word {
                "iptables" | "ip6tables" => out.push_str(tool),
                "iptables-save" | "ip6tables-save" => out.push_str(&format!("{tool}-save")),
                "iptables-restore" | "ip6tables-restore" => {
                    out.push_str(&format!("{tool}-restore"))
                }
                w => out.push_str(w),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// firewalld's changes print as one firewall-cmd command line,
    /// permanent, then reloaded.
    #[test]
    fn firewalld_changes_print_as_firewall_cmd_takes_them() {
        let fix = FixText::default().firewalld(FirewalldCommand {
            changes: vec![
                FirewalldChange::AddInterface {
                    zone: "public".into(),
                    iface: "cni0".into(),
                },
                FirewalldChange::AddForward {
                    zone: "public".into(),
                },
            ],
        });
        assert_eq!(
            fix.render("iptables"),
            "`firewall-cmd --permanent --zone=public --add-interface=cni0 && firewall-cmd --permanent --zone=public --add-forward && firewall-cmd --reload`"
        );
        let rich = FixText::default().firewalld(FirewalldCommand {
            changes: vec![FirewalldChange::AcceptSource {
                scope: FirewalldScope::Policy("allow-host-ipv6".into()),
                ipv6: false,
                source: "10.224.0.0/16".into(),
            }],
        });
        assert_eq!(
            rich.render("iptables"),
            "`firewall-cmd --permanent --policy=allow-host-ipv6 --add-rich-rule='rule family=\"ipv4\" source address=\"10.224.0.0/16\" accept' && firewall-cmd --reload`"
        );
        assert!(fix.added().is_empty());
    }

    /// nft's commands print as nft takes them, whatever the node's
    /// iptables tool, and add nothing the walk applies.
    #[test]
    fn nft_commands_print_as_nft_takes_them() {
        let t = netdrop_model::edit::NftTable::of("inet firewalld").unwrap();
        let fix = FixText::words("Delete it: ")
            .nft(NftCommand::DeleteRule {
                table: t.clone(),
                chain: "filter_INPUT".into(),
                handle: 7,
            })
            .say("; or: ")
            .nft(NftCommand::InsertRule {
                table: t.clone(),
                chain: "filter_INPUT".into(),
                position: NftPosition::Unknown,
                statement: "udp dport 8472 accept".into(),
            })
            .say(", ")
            .nft(NftCommand::DeleteTable { table: t });
        assert_eq!(
            fix.render("iptables-legacy"),
            "Delete it: `nft delete rule inet firewalld filter_INPUT handle 7`; or: `nft insert rule inet firewalld filter_INPUT position H udp dport 8472 accept`, `nft delete table inet firewalld`"
        );
        assert!(fix.added().is_empty());
        assert_eq!(netdrop_model::edit::NftTable::of("filter"), None);
    }

    /// The commands print as iptables takes them, with the node's tool;
    /// the rules the walk gets are the typed ones.
    #[test]
    fn commands_print_with_the_nodes_tool_and_walk_as_typed() {
        let add = Edit::new("filter", "FORWARD", Some(3), "-s 10.224.0.0/16 -j ACCEPT").unwrap();
        let top = Edit::new("nat", "POSTROUTING", Some(1), "-s 10.224.0.0/16 -j RETURN").unwrap();
        let fix = FixText::words("Delete it: ")
            .run(RuleCommand::Delete {
                table: "filter".into(),
                chain: "FORWARD".into(),
                rule_no: 3,
            })
            .say("; or accept before it: ")
            .run(RuleCommand::Add(add))
            .say(", and ")
            .run_adds(vec![top], true)
            .say(". Then `iptables-save > /etc/iptables/rules.v4`.");
        assert_eq!(
            fix.render("iptables-legacy"),
            "Delete it: `iptables-legacy -t filter -D FORWARD 3`; or accept before it: `iptables-legacy -I FORWARD 3 -s 10.224.0.0/16 -j ACCEPT`, and `iptables-legacy -t nat -I POSTROUTING -s 10.224.0.0/16 -j RETURN`. Then `iptables-legacy-save > /etc/iptables/rules.v4`."
        );
        let added: Vec<_> = fix
            .added()
            .iter()
            .map(|e| (e.chain.as_str(), e.at))
            .collect();
        assert_eq!(added, [("FORWARD", Some(3)), ("POSTROUTING", Some(1))]);
        assert_eq!(
            fix.added_text("ip6tables"),
            "ip6tables -I FORWARD 3 -s 10.224.0.0/16 -j ACCEPT; ip6tables -t nat -I POSTROUTING -s 10.224.0.0/16 -j RETURN"
        );
    }
}
