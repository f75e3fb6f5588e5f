//! `cargo xtask`: the project's own commands.
//!
//! - `setup`: install what the build and tests need (idempotent).
//! - `test`: fmt, clippy (host and eBPF), unit tests, privileged tests.
//! - `demo`: the main job on an embedded default.
//! - `bench`: benchmarks (not tests), written to BENCHMARKS.md.

mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything the build and the tests need (apt packages,
    /// nightly rust-src, bpf-linker). A second run changes nothing.
    Setup,
    /// fmt check, clippy on host and eBPF crates, unit tests, then the
    /// privileged tests as root, serially.
    Test,
    /// Benchmarks (not tests): drop and forwarding floods, per-event kernel
    /// cost, model scale, time to answer; writes BENCHMARKS.md.
    Bench,
    /// Run `netdrop demo` (needs root).
    Demo {
        /// Passed to `netdrop demo --duration`.
        #[arg(long, default_value = "20s")]
        duration: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::Test => test(),
        Cmd::Demo { duration } => demo(&duration),
        Cmd::Bench => bench(),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing if it fails.
fn sh(prog: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: {prog} {}", args.join(" "));
    let status = Command::new(prog)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {prog}"))?;
    if !status.success() {
        bail!("`{prog} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "{what} loads eBPF programs and creates network namespaces: run it as root (sudo -E cargo xtask ...)"
        );
    }
    Ok(())
}

fn test() -> anyhow::Result<()> {
    require_root("cargo xtask test")?;
    setup::run()?;
    sh("cargo", &["fmt", "--all", "--", "--check"])?;
    sh(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "netdrop-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The node agent alone (no lab, no demo) must build too.
    sh(
        "cargo",
        &[
            "clippy",
            "--package",
            "netdrop",
            "--no-default-features",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    let toolchain = format!("+{}", setup::nightly());
    sh(
        "cargo",
        &[
            &toolchain,
            "clippy",
            "--package",
            "netdrop-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    let mut tally = Tally::default();
    // Unit tests (no kernel state) run in parallel...
    cargo_test(
        &[
            "--workspace",
            "--exclude",
            "netdrop-ebpf",
            "--exclude",
            "netdrop-tests",
        ],
        &[],
        &mut tally,
    )?;
    fuzz()?;
    // ...privileged tests share the kernel (programs, namespaces): serially,
    // and none may skip: they fail if not root.
    sh("cargo", &["build", "--package", "netdrop"])?;
    // SAFETY: single-threaded here; the variable is read by the test processes.
    unsafe { std::env::set_var("NETDROP_PRIVILEGED", "1") };
    cargo_test(
        &["--package", "netdrop-tests", "--tests"],
        &["--test-threads=1"],
        &mut tally,
    )?;
    // One closing line over every test binary.
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(())
}

/// The parser and the packet walk under libFuzzer for a bounded time
/// (`NETDROP_FUZZ_SECONDS`, default 60), seeded with the public dumps and
/// the regression cases; a crash fails the run and names its input.
fn fuzz() -> anyhow::Result<()> {
    let seconds = std::env::var("NETDROP_FUZZ_SECONDS").unwrap_or_else(|_| "60".into());
    let corpus = workspace_root().join("target/fuzz-corpus");
    std::fs::create_dir_all(&corpus).context("creating target/fuzz-corpus")?;
    let corpus = corpus.to_str().context("target path is not UTF-8")?;
    let toolchain = format!("+{}", setup::nightly());
    let status = Command::new("cargo")
        .current_dir(workspace_root().join("fuzz"))
        .args([
            toolchain.as_str(),
            "fuzz",
            "run",
            "parse_and_simulate",
            corpus,
            "../netdrop-model/tests/fixtures/iptables",
            "../netdrop-model/tests/fixtures/nft",
            "../netdrop-model/tests/fixtures/fuzz",
            "--",
            &format!("-max_total_time={seconds}"),
            "-max_len=65536",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ])
        .status()
        .context("cannot run cargo fuzz")?;
    if !status.success() {
        bail!(
            "fuzzing found a crash (its input is under fuzz/artifacts/): fix it and keep the input in netdrop-model/tests/fixtures/fuzz/ as a regression case"
        );
    }
    eprintln!("xtask: fuzzed parse_and_simulate for {seconds} s without a crash");
    Ok(())
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

/// `cargo test ARGS -- TEST_ARGS`, echoing its output and adding up its
/// "test result" lines.
fn cargo_test(args: &[&str], test_args: &[&str], tally: &mut Tally) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    eprintln!(
        "xtask: cargo test {} -- {}",
        args.join(" "),
        test_args.join(" ")
    );
    let mut child = Command::new("cargo")
        .arg("test")
        .args(args)
        .arg("--")
        .args(test_args)
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let out = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            tally.passed += count(rest, "passed");
            tally.failed += count(rest, "failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        println!("{} passed, {} failed", tally.passed, tally.failed.max(1));
        bail!("cargo test {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `ok. 7 passed; 0 failed; ...` → the number before `word`.
fn count(summary: &str, word: &str) -> u64 {
    summary
        .split(';')
        .filter_map(|part| part.trim().strip_suffix(word))
        .filter_map(|n| {
            n.rsplit(' ')
                .find(|t| !t.is_empty())
                .and_then(|t| t.parse::<u64>().ok())
        })
        .sum()
}

fn bench() -> anyhow::Result<()> {
    require_root("cargo xtask bench")?;
    setup::run()?;
    sh(
        "cargo",
        &[
            "build",
            "--release",
            "--package",
            "netdrop",
            "--package",
            "netdrop-tests",
            "--bin",
            "netdrop",
            "--bin",
            "netdrop-bench",
        ],
    )?;
    let release = workspace_root().join("target/release");
    let out = workspace_root().join("BENCHMARKS.md");
    eprintln!("xtask: netdrop-bench {}", out.display());
    // The bench drives the release netdrop, not a debug one.
    let status = Command::new(release.join("netdrop-bench"))
        .arg(&out)
        .env("NETDROP_BIN", release.join("netdrop"))
        .current_dir(workspace_root())
        .status()
        .context("cannot run netdrop-bench")?;
    if !status.success() {
        bail!("netdrop-bench failed ({status})");
    }
    Ok(())
}

fn demo(duration: &str) -> anyhow::Result<()> {
    require_root("cargo xtask demo")?;
    setup::run()?;
    sh("cargo", &["build", "--release", "--package", "netdrop"])?;
    let bin = workspace_root().join("target/release/netdrop");
    let bin = bin.to_str().context("target path is not UTF-8")?;
    sh(bin, &["demo", "--duration", duration])
}
