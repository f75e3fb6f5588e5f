//! Reading a node's live ruleset: `iptables-save -c` in its namespace, both
//! backends when a node has rules in both (legacy and nft side by side is a
//! classic source of "my rule is there but nothing happens").

use std::{path::Path, process::Command};

use netdrop_model::{
    ParseError, Ruleset,
    parse::{parse_reader, parse_ruleset},
};

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

pub fn read_file(path: &Path) -> Result<Ruleset, ReadError> {
    let file = std::fs::File::open(path).map_err(|source| ReadError::File {
        path: path.display().to_string(),
        source,
    })?;
    parse_reader(std::io::BufReader::new(file)).map_err(|source| ReadError::Parse {
        cmd: path.display().to_string(),
        source,
    })
}

fn save(netns: Option<&str>, prog: &str) -> Result<Ruleset, ReadError> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, prog, "-c"]);
            c
        }
        None => {
            let mut c = Command::new(prog);
            c.arg("-c");
            c
        }
    };
    let label = match netns {
        Some(ns) => format!("{prog} -c (netns {ns})"),
        None => format!("{prog} -c"),
    };
    let out = cmd
        .output()
        .map_err(|e| ReadError::Spawn(prog.to_owned(), e))?;
    if !out.status.success() {
        return Err(ReadError::Failed {
            cmd: label,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    parse_ruleset(&String::from_utf8_lossy(&out.stdout))
        .map_err(|source| ReadError::Parse { cmd: label, source })
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
    for (family, default, legacy, nft) in [
        (
            4,
            "iptables-save",
            "iptables-legacy-save",
            "iptables-nft-save",
        ),
        (
            6,
            "ip6tables-save",
            "ip6tables-legacy-save",
            "ip6tables-nft-save",
        ),
    ] {
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
    Ok(node)
}
