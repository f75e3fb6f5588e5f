//! The data flows one way (ARCHITECTURE.md): every module of `netdrop`
//! imports only from the stages before it and from the shared helpers.
//! This reads the sources and fails on an import against the flow.

use std::{collections::BTreeSet, path::Path};

/// Stages in the order data flows through them; a module may import from
/// an earlier stage (or its own), never from a later one.
const STAGES: &[&[&str]] = &[
    &["capture"],
    &["decode"],
    &["attribute"],
    &["explain"],
    &["export"],
    &["watch", "config"],
    &["cli", "commands", "demo"],
];
/// Where `lab` may be used: the commands (`demo`).
const LAB_USERS: usize = 6;
/// Serve every stage; import no stage themselves.
const SHARED: &[&str] = &["netns", "preflight"];
/// The test and demo clusters: shared helpers only.
const LAB: &str = "lab";

fn stage_of(module: &str) -> Option<usize> {
    STAGES.iter().position(|s| s.contains(&module))
}

/// Top-level modules named after `crate::` in `src` (`crate::a::b`,
/// `crate::{a::x, b}`), comments left out.
fn crate_imports(src: &str) -> BTreeSet<String> {
    let code: String = src
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the brace group.
            let mut depth = 1;
            let mut name = String::new();
            let mut at_top_name = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        at_top_name = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 && at_top_name {
                    if c.is_alphanumeric() || c == '_' {
                        name.push(c);
                    } else if !name.is_empty() {
                        out.insert(std::mem::take(&mut name));
                        at_top_name = false;
                    }
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Which top-level module a source file belongs to (`src/watch/node.rs` →
/// `watch`); `None` for the crate root and `main.rs`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

fn violations(module: &str, imports: &BTreeSet<String>) -> Vec<String> {
    let mut bad = Vec::new();
    for i in imports {
        if i == module || i.chars().next().is_some_and(char::is_uppercase) {
            continue; // itself, or a constant of the crate root
        }
        let allowed = if SHARED.contains(&module) {
            false
        } else if i == LAB {
            stage_of(module) == Some(LAB_USERS)
        } else if module == LAB {
            SHARED.contains(&i.as_str())
        } else if SHARED.contains(&i.as_str()) {
            true
        } else {
            match (stage_of(module), stage_of(i)) {
                (Some(m), Some(t)) => t <= m,
                _ => false,
            }
        };
        if !allowed {
            bad.push(format!("{module} imports crate::{i}"));
        }
    }
    bad
}

#[test]
fn every_module_imports_along_the_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let Some(module) = module_of(&src, f) else {
            continue;
        };
        assert!(
            stage_of(&module).is_some() || SHARED.contains(&module.as_str()) || module == LAB,
            "module {module} ({}) has no place in the flow: add it to ARCHITECTURE.md and to STAGES here",
            f.display()
        );
        seen.insert(module.clone());
        let text = std::fs::read_to_string(f).unwrap();
        bad.extend(
            violations(&module, &crate_imports(&text))
                .into_iter()
                .map(|v| format!("{v} ({})", f.display())),
        );
    }
    assert!(
        seen.len() >= 10,
        "sources not found under {}",
        src.display()
    );
    assert!(
        bad.is_empty(),
        "imports against the flow:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_sees_what_it_must() {
    let imports = crate_imports(
        "use crate::{\n    decode::{flow::Flow, Hook},\n    explain::check,\n};\nlet x = crate::watch::run; // crate::lab",
    );
    assert_eq!(
        imports.into_iter().collect::<Vec<_>>(),
        ["decode", "explain", "watch"]
    );
    assert_eq!(
        violations("capture", &["decode".to_owned()].into()),
        ["capture imports crate::decode"]
    );
    assert!(violations("explain", &["decode".to_owned(), "netns".to_owned()].into()).is_empty());
    assert_eq!(
        violations("netns", &["capture".to_owned()].into()),
        ["netns imports crate::capture"]
    );
    assert_eq!(
        violations("lab", &["watch".to_owned()].into()),
        ["lab imports crate::watch"]
    );
}

/// A source file's module path: `src/watch/node.rs` → `watch::node`,
/// `src/watch/mod.rs` → `watch`, `src/lib.rs` → the root (empty).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut v: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(v.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        v.pop();
    }
    v
}

/// The paths a source names through `crate::`, `super::` and `self::`
/// (use trees expanded: `super::{a, b::{c}}` → `super::a`, `super::b::c`),
/// comments left out; each as its first word and the segments after it.
fn named_paths(src: &str) -> Vec<(String, Vec<String>)> {
    fn ident(s: &str) -> (&str, &str) {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        s.split_at(end)
    }
    /// One use tree at `s`: its paths, and what follows it.
    fn tree(mut s: &str) -> (Vec<Vec<String>>, &str) {
        let mut segs = Vec::new();
        loop {
            s = s.trim_start();
            if let Some(group) = s.strip_prefix('{') {
                let mut out = Vec::new();
                let mut rest = group;
                loop {
                    rest = rest.trim_start();
                    if let Some(r) = rest.strip_prefix('}') {
                        rest = r;
                        break;
                    }
                    if let Some(r) = rest.strip_prefix(',') {
                        rest = r;
                        continue;
                    }
                    let (paths, r) = tree(rest);
                    if r.len() == rest.len() {
                        // Not a tree (`*`, `as`): step over a character.
                        rest = &rest[rest.chars().next().map_or(0, char::len_utf8)..];
                        continue;
                    }
                    for p in paths {
                        let mut full = segs.clone();
                        full.extend(p.into_iter().filter(|x| x != "self"));
                        out.push(full);
                    }
                    rest = r;
                }
                return (out, rest);
            }
            let (name, rest) = ident(s);
            if name.is_empty() {
                return (vec![segs], s);
            }
            segs.push(name.to_owned());
            match rest.strip_prefix("::") {
                Some(r) => s = r,
                None => return (vec![segs], rest),
            }
        }
    }
    // A file's inline test module is a module of its own (its `super` is
    // the file): left out.
    let lines: Vec<&str> = src.lines().collect();
    let end = (1..lines.len())
        .find(|&i| {
            lines[i].starts_with("mod tests")
                && lines[i - 1].starts_with("#[cfg(")
                && lines[i - 1].contains("test")
        })
        .unwrap_or(lines.len());
    let code: String = lines[..end]
        .iter()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // `super::super::x` is read from its first `super`
            }
            let first = start.trim_end_matches("::").to_owned();
            let (paths, _) = tree(rest);
            out.extend(paths.into_iter().map(|p| (first.clone(), p)));
        }
    }
    out
}

/// Which files (modules) each file imports from, by the paths it names.
fn file_graph(
    files: &[(Vec<String>, String)],
) -> std::collections::BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let modules: BTreeSet<&Vec<String>> = files.iter().map(|(m, _)| m).collect();
    let mut graph = std::collections::BTreeMap::new();
    for (module, text) in files {
        let mut to = BTreeSet::new();
        for (first, mut segs) in named_paths(text) {
            let mut base: Vec<String> = match first.as_str() {
                "crate" => Vec::new(),
                "self" => module.clone(),
                _ => module[..module.len().saturating_sub(1)].to_vec(),
            };
            while segs.first().map(String::as_str) == Some("super") {
                segs.remove(0);
                base.pop();
            }
            base.extend(segs);
            // The longest prefix that is a file of the crate.
            let target = (1..=base.len())
                .rev()
                .map(|n| base[..n].to_vec())
                .find(|p| modules.contains(p));
            if let Some(t) = target.filter(|t| t != module) {
                to.insert(t);
            }
        }
        graph.insert(module.clone(), to);
    }
    graph
}

/// The import cycles of `graph`, each as the files on it.
fn cycles(
    graph: &std::collections::BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> Vec<Vec<String>> {
    let reaches = |from: &Vec<String>, to: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for next in graph.get(&n).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        false
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    for m in graph.keys() {
        if reaches(m, m) {
            let mut on: Vec<String> = graph
                .keys()
                .filter(|o| reaches(m, o) && reaches(o, m))
                .map(|o| o.join("::"))
                .collect();
            on.sort();
            if !out.contains(&on) {
                out.push(on);
            }
        }
    }
    out
}

/// No two files of `netdrop` import each other, however far round (the
/// pod-naming files once did: `api → pods → containerd_events → pods`).
#[test]
fn no_file_imports_from_a_file_that_imports_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let files: Vec<(Vec<String>, String)> = paths
        .iter()
        .map(|f| (module_path(&src, f), std::fs::read_to_string(f).unwrap()))
        .collect();
    let found = cycles(&file_graph(&files));
    assert!(found.is_empty(), "import cycles between files: {found:#?}");
}

#[test]
fn the_cycle_checker_sees_one() {
    let m = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
    let files = vec![
        (
            m("attribute::pods"),
            "use super::{api::ClusterNames, x};".to_owned(),
        ),
        (
            m("attribute::api"),
            "use super::pods::PodRef;\nuse crate::decode::Flow;".to_owned(),
        ),
        (m("attribute"), String::new()),
        (m("decode"), "// crate::attribute::api".to_owned()),
    ];
    let g = file_graph(&files);
    assert_eq!(g[&m("decode")], BTreeSet::new());
    assert_eq!(cycles(&g), [vec!["attribute::api", "attribute::pods"]]);
}

/// Every `unsafe` in the kernel programs says why it is sound: a
/// `SAFETY:` comment within the four lines above it (or on it), or a
/// `# Safety` section for an `unsafe fn`.
#[test]
fn every_unsafe_in_the_kernel_programs_says_why() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../netdrop-ebpf/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(
        files.len() >= 10,
        "eBPF sources not found under {}",
        src.display()
    );
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let code = l.split("//").next().unwrap_or("");
            let words: Vec<&str> = code
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .collect();
            if !words.contains(&"unsafe") || code.contains("#[unsafe(") {
                continue;
            }
            let above = lines[i.saturating_sub(4)..=i].join("\n");
            let documented = above.contains("# Safety") && code.contains("unsafe fn");
            if !(above.contains("SAFETY") || documented) {
                bad.push(format!("{}:{}: {}", f.display(), i + 1, l.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unsafe without a SAFETY line:\n{}",
        bad.join("\n")
    );
}
