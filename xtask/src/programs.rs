//! The programs netdrop's tests, lab, demo and agent run, each with the
//! Debian package that brings it — and the guard that keeps the list true.
//!
//! A test that runs a program nobody installs passes on the machine where it
//! was written and fails on a fresh one (it happened with `ipset`). So:
//!
//! - [`PROGRAMS`] names every such program that a minimal Debian 12 lacks;
//!   a unit test holds that setup installs each one's package;
//! - [`check`] (run by `cargo xtask setup`, so before any test or demo)
//!   fails when a listed program is missing, naming its package, and when
//!   the sources name an installed program the list does not know — the
//!   moment a developer writes a test around a program installed by hand.
//!
//! Packages of priority `required` or `important` are on every Debian
//! system and need no entry.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::setup::{APT_PACKAGES, IF_MISSING};

/// `(program, Debian package)`: every program run by the sources that a
/// minimal Debian 12 does not have.
pub const PROGRAMS: &[(&str, &str)] = &[
    // Rules, in both backends, and sets.
    ("iptables", "iptables"),
    ("iptables-save", "iptables"),
    ("iptables-restore", "iptables"),
    ("iptables-nft", "iptables"),
    ("iptables-nft-save", "iptables"),
    ("iptables-nft-restore", "iptables"),
    ("iptables-legacy", "iptables"),
    ("iptables-legacy-save", "iptables"),
    ("iptables-legacy-restore", "iptables"),
    ("ip6tables", "iptables"),
    ("ip6tables-save", "iptables"),
    ("ip6tables-restore", "iptables"),
    ("ip6tables-nft", "iptables"),
    ("ip6tables-nft-save", "iptables"),
    ("ip6tables-legacy", "iptables"),
    ("ip6tables-legacy-save", "iptables"),
    ("nft", "nftables"),
    ("ipset", "ipset"),
    // The agents whose rules netdrop names, run for real in test namespaces.
    ("firewalld", "firewalld"),
    ("firewall-cmd", "firewalld"),
    ("dbus-daemon", "dbus-daemon"),
    ("dockerd", "docker.io"),
    ("docker", "docker.io"),
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("mmdebstrap", "mmdebstrap"),
    ("buildah", "buildah"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/lib/cni/host-local", "containernetworking-plugins"),
    ("/usr/lib/cni/firewall", "containernetworking-plugins"),
    ("shorewall", "shorewall"),
    ("ferm", "ferm"),
    // Traffic and the kernel's own view of it.
    ("ping", "iputils-ping"),
    ("bpftool", "bpftool"),
    ("bpftrace", "bpftrace"),
    // Metrics and alerts, checked by the real Prometheus.
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    // The CRI client's protobuf, the lab's static pause binary.
    ("protoc", "protobuf-compiler"),
    ("cc", "gcc"),
    ("gcc", "gcc"),
    // Benchmarks' peak memory.
    ("/usr/bin/time", "time"),
    ("time", "time"),
    // Setup's own: the dashboard schema and the manifest validator.
    ("npm", "npm"),
    ("python3", "python3-venv"),
];

/// Words the sources use that happen to name an installed program they
/// never run (a lab node, a file, a size; `kubectl`, `curl` and `as` in
/// the words of an explanation; the service policy setup writes): the scan
/// passes over them.
const NOT_RUN: &[&str] = &[
    "node",
    "file",
    "size",
    "ssh",
    "as",
    "kubectl",
    "curl",
    "/usr/sbin/policy-rc.d",
];

/// Where the scan reads the sources (below the workspace root).
const SOURCE_DIRS: &[&str] = &[
    "netdrop",
    "netdrop-model",
    "netdrop-common",
    "tests",
    "xtask",
    "fuzz",
    "deploy",
    ".ci",
];

/// Fails unless every listed program is installed and every program the
/// sources name is listed (or comes with every Debian system).
pub fn check() -> anyhow::Result<()> {
    let mut problems = missing_programs();
    problems.extend(unlisted_programs()?);
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "the tests, the lab and the demo need programs this machine lacks or setup does not know:\n  {}",
        problems.join("\n  ")
    )
}

/// Listed programs that are not installed, each with its package.
fn missing_programs() -> Vec<String> {
    PROGRAMS
        .iter()
        .filter(|(prog, _)| find(prog).is_none())
        .map(|(prog, pkg)| {
            let known = APT_PACKAGES.contains(pkg)
                || IF_MISSING.iter().any(|(_, p)| p == pkg);
            if known {
                format!("`{prog}` is missing: Debian package `{pkg}` brings it (`cargo xtask setup` installs it; did it fail?)")
            } else {
                format!("`{prog}` is missing: Debian package `{pkg}` brings it, and setup does not install it (add it to APT_PACKAGES in xtask/src/setup.rs)")
            }
        })
        .collect()
}

/// Installed programs that the sources name, which are neither listed nor
/// from a package every Debian system has.
fn unlisted_programs() -> anyhow::Result<Vec<String>> {
    let root = crate::workspace_root();
    let mut words = BTreeSet::new();
    for dir in SOURCE_DIRS {
        for file in sources(&root.join(dir)) {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            words.extend(command_words(&text));
        }
    }
    let listed: BTreeSet<&str> = PROGRAMS.iter().map(|(p, _)| *p).collect();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let found: BTreeMap<String, PathBuf> = words
        .into_iter()
        .filter(|w| !listed.contains(w.as_str()) && !NOT_RUN.contains(&w.as_str()))
        .filter_map(|w| find(&w).map(|p| (w, p)))
        // The Rust toolchain's own (setup installs them with rustup or
        // cargo) and the machine's local programs are not Debian's.
        .filter(|(_, p)| {
            !p.starts_with("/usr/local") && !home.as_ref().is_some_and(|h| p.starts_with(h))
        })
        .collect();
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let owners = owners(found.values())?;
    let priorities = priorities(owners.values().flatten())?;
    let mut problems = Vec::new();
    for (word, path) in &found {
        match owners.get(path).and_then(Option::as_ref) {
            None => problems.push(format!(
                "`{word}` ({}) is named in the sources, and no Debian package owns it: installed by hand? Install it from a package and list it in PROGRAMS (xtask/src/programs.rs)",
                path.display()
            )),
            Some(pkg) => {
                let everywhere = priorities
                    .get(pkg)
                    .is_some_and(|p| p == "required" || p == "important");
                if !everywhere {
                    problems.push(format!(
                        "`{word}` ({}) is named in the sources and comes from Debian package `{pkg}`, which a fresh machine lacks: list it in PROGRAMS (xtask/src/programs.rs) and its package in APT_PACKAGES (xtask/src/setup.rs), or in NOT_RUN if the sources never run it",
                        path.display()
                    ))
                }
            }
        }
    }
    Ok(problems)
}

/// `.rs` and `.sh` files below `dir` (and CI's `run`), not under `target`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(
                name.as_ref(),
                "target" | "corpus" | "artifacts" | "fixtures"
            ) {
                out.extend(sources(&path));
            }
        } else if name.ends_with(".rs") || name.ends_with(".sh") || name == "run" {
            out.push(path);
        }
    }
    out
}

/// The words of a source's string literals that could be a program run:
/// a literal's first word, the first word after a shell separator, and the
/// word after `exec NAME` (`ip netns exec NODE ipset …`).
fn command_words(source: &str) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    for lit in string_literals(source) {
        for piece in lit.split([';', '|', '&', '`', '\n', '(', '$']) {
            let toks: Vec<&str> = piece.split_whitespace().collect();
            let mut take = |w: &str| {
                if plausible(w) {
                    words.insert(w.to_owned());
                }
            };
            if let Some(first) = toks.first() {
                take(first);
            }
            for pair in toks.windows(3) {
                if pair[0] == "exec" {
                    take(pair[2]);
                }
            }
        }
    }
    words
}

/// A name a program could have (`ip`, `iptables-nft-save`, `/usr/bin/time`).
fn plausible(w: &str) -> bool {
    (2..=60).contains(&w.len())
        && w.starts_with(|c: char| c.is_ascii_lowercase() || c == '/')
        && w.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._+-/".contains(c))
}

/// The string literals of Rust or shell source, roughly: `"…"` with `\"`
/// escapes, raw strings `r#"…"#`, and char literals and `//` comments
/// passed over. A literal misread only adds or loses a candidate word.
fn string_literals(src: &str) -> Vec<String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'\''
                if b.get(i + 2) == Some(&b'\'')
                    || (b.get(i + 1) == Some(&b'\\') && b.get(i + 3) == Some(&b'\'')) =>
            {
                i += if b[i + 1] == b'\\' { 4 } else { 3 };
            }
            b'r' if matches!(b.get(i + 1), Some(b'#' | b'"'))
                && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                let start = i + 1 + hashes;
                if b.get(start) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let body = &src[start + 1..];
                let end = body
                    .find(std::str::from_utf8(&close).unwrap_or("\""))
                    .unwrap_or(body.len());
                out.push(body[..end].to_owned());
                i = start + 1 + end + close.len();
            }
            b'"' => {
                let mut j = i + 1;
                let mut lit = Vec::new();
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' {
                        j += 1;
                        lit.push(b' ');
                    } else {
                        lit.push(b[j]);
                    }
                    j += 1;
                }
                out.push(String::from_utf8_lossy(&lit).into_owned());
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// Where `prog` is: itself when a path, else the first executable of that
/// name on `PATH` (with the sbin directories, as root has them).
pub fn find(prog: &str) -> Option<PathBuf> {
    let exe = |p: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return exe(&p).then_some(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .find(|p| exe(p))
}

/// The Debian package owning each path (through its links and the
/// merged-/usr spellings dpkg may have recorded), or `None`.
fn owners<'a>(
    paths: impl Iterator<Item = &'a PathBuf>,
) -> anyhow::Result<BTreeMap<PathBuf, Option<String>>> {
    let spellings = |p: &Path| -> Vec<PathBuf> {
        let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let mut v = vec![p.to_path_buf(), real.clone()];
        for q in [p, real.as_path()] {
            if let Ok(rest) = q.strip_prefix("/usr") {
                v.push(Path::new("/").join(rest));
            }
        }
        v
    };
    let paths: Vec<PathBuf> = paths.cloned().collect();
    let all: BTreeSet<PathBuf> = paths.iter().flat_map(|p| spellings(p)).collect();
    // One dpkg call for all; it exits 1 when any path is unowned.
    let out = Command::new("dpkg-query")
        .arg("-S")
        .args(&all)
        .output()
        .context("cannot run dpkg-query -S")?;
    let mut owner_of = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("diversion ") {
            continue;
        }
        if let Some((pkgs, path)) = line.split_once(": ") {
            let pkg = pkgs.split(", ").next().unwrap_or(pkgs);
            let pkg = pkg.split(':').next().unwrap_or(pkg);
            owner_of.insert(PathBuf::from(path), pkg.to_owned());
        }
    }
    Ok(paths
        .iter()
        .map(|p| {
            let pkg = spellings(p).iter().find_map(|s| owner_of.get(s).cloned());
            (p.clone(), pkg)
        })
        .collect())
}

/// Each package's priority (`required`, `important`, `optional`, …).
fn priorities<'a>(
    pkgs: impl Iterator<Item = &'a String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let pkgs: BTreeSet<&String> = pkgs.collect();
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Priority}\n"])
        .args(&pkgs)
        .output()
        .context("cannot run dpkg-query -W")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(p, pr)| (p.to_owned(), pr.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What holds on any machine, with or without the programs: setup
    /// installs the package of every listed program. (Fails with `ipset`
    /// taken out of APT_PACKAGES.)
    #[test]
    fn setup_installs_every_listed_programs_package() {
        let unknown: Vec<_> = PROGRAMS
            .iter()
            .filter(|(_, pkg)| {
                !APT_PACKAGES.contains(pkg) && !IF_MISSING.iter().any(|(_, p)| p == pkg)
            })
            .collect();
        assert!(unknown.is_empty(), "setup does not install: {unknown:?}");
    }

    #[test]
    fn the_words_a_source_may_run_are_found() {
        let src = r##"
            lab.exec(router, &["ipset", "create", "blocked", "hash:ip"]);
            Command::new("ip").args(["netns", "exec", ns, "nft", "-f", p]);
            let c = "ip netns exec node1 conntrack -L | grep x && sleep 1";
            let q = '"'; // "commented"
            let raw = r#"echo "hi"; tc qdisc"#;
            let s = "A sentence, not a command";
        "##;
        let w = command_words(src);
        for want in [
            "ipset",
            "ip",
            "nft",
            "conntrack",
            "grep",
            "sleep",
            "echo",
            "tc",
        ] {
            assert!(w.contains(want), "{want} not in {w:?}");
        }
        assert!(!w.contains("commented"), "{w:?}");
        assert!(!w.contains("sentence"), "{w:?}");
    }
}
