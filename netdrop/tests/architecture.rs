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
