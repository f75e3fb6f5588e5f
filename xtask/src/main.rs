//! `cargo xtask`: the project's own commands.
//!
//! - `setup`: install what the build and tests need (idempotent).
//! - `test`: fmt, clippy (host and eBPF), unit tests, privileged tests.
//! - `demo`: the main job on an embedded default.
//! - `bench`: benchmarks (not tests), written to BENCHMARKS.md.
//! - `image`: the DaemonSet's image, built here, as an OCI archive.

mod image;
mod programs;
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
    /// Build the image users build from deploy/kubernetes/Containerfile
    /// (its runtime stage, on a Debian base made here) and write it as an
    /// OCI archive, target/image/netdrop.oci.tar.
    Image,
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
        Cmd::Image => {
            require_root("cargo xtask image")?;
            image::run().map(|_| ())
        }
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
    // From here on every step runs even when one before it failed, so one
    // failure does not hide the rest; all of them are listed at the end.
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
    );
    if let Err(e) = fuzz() {
        tally.steps.push(format!("{e:#}"));
    }
    // ...privileged tests share the kernel (programs, namespaces): serially,
    // and none may skip: they fail if not root.
    sh("cargo", &["build", "--package", "netdrop"])?;
    // The DaemonSet's pod runs the image (tests/tests/daemonset.rs).
    if let Err(e) = image::run() {
        tally.steps.push(format!("cargo xtask image: {e:#}"));
    }
    // SAFETY: single-threaded here; the variable is read by the test processes.
    unsafe { std::env::set_var("NETDROP_PRIVILEGED", "1") };
    cargo_test(
        &["--package", "netdrop-tests", "--tests"],
        &["--test-threads=1"],
        &mut tally,
    );
    tally.finish()
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

/// What every test step added up to.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    /// `(test binary, test)` of each failed test.
    tests: Vec<(String, String)>,
    /// Steps that failed beyond their tests: a binary that crashed or did
    /// not build, the fuzzer.
    steps: Vec<String>,
}

impl Tally {
    /// One summary of every failure, then the closing count line.
    fn finish(&self) -> anyhow::Result<()> {
        if !self.tests.is_empty() || !self.steps.is_empty() {
            println!("\nxtask: failures, all steps run:");
            for (binary, test) in &self.tests {
                println!("  {test}  ({binary})");
            }
            for step in &self.steps {
                println!("  {step}");
            }
        }
        let failed = self.failed + self.steps.len() as u64;
        println!("{} passed, {} failed", self.passed, failed);
        if failed > 0 {
            bail!("{failed} failed (listed above)");
        }
        Ok(())
    }
}

/// `cargo test --no-fail-fast ARGS -- TEST_ARGS`, echoing its output and
/// adding up its results: every test binary runs even when one fails.
fn cargo_test(args: &[&str], test_args: &[&str], tally: &mut Tally) {
    if let Err(e) = cargo_test_inner(args, test_args, tally) {
        tally.steps.push(format!("{e:#}"));
    }
}

fn cargo_test_inner(args: &[&str], test_args: &[&str], tally: &mut Tally) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    eprintln!(
        "xtask: cargo test --no-fail-fast {} -- {}",
        args.join(" "),
        test_args.join(" ")
    );
    // cargo says which binary runs on stderr, the tests say how they went
    // on stdout: one pipe for both keeps them in order.
    let (reader, writer) = std::io::pipe().context("pipe")?;
    let mut child = Command::new("cargo")
        .args(["test", "--no-fail-fast"])
        .args(args)
        .arg("--")
        .args(test_args)
        .current_dir(workspace_root())
        .stdout(writer.try_clone().context("pipe")?)
        .stderr(writer)
        .spawn()
        .context("cannot run cargo test")?;
    let before = (tally.tests.len(), tally.steps.len());
    let mut reading = Reading::default();
    for line in BufReader::new(reader).lines() {
        let line = line?;
        println!("{line}");
        reading.line(&line, tally);
    }
    let status = child.wait()?;
    reading.end(tally);
    if !status.success() && (tally.tests.len(), tally.steps.len()) == before {
        bail!("cargo test {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// One `cargo test` run's output, read line by line into a [`Tally`].
#[derive(Default)]
struct Reading {
    /// The test binary running (`tests/engines.rs`), as cargo names it.
    binary: String,
    /// `(binary, cargo's rerun words)` of each binary that failed.
    failed: Vec<(String, String)>,
    /// Tests that failed in this run.
    tests: Vec<(String, String)>,
}

impl Reading {
    fn line(&mut self, line: &str, tally: &mut Tally) {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("Running ") {
            self.binary = rest.split(" (").next().unwrap_or(rest).to_owned();
        } else if trimmed.starts_with("Doc-tests ") {
            self.binary = trimmed.to_owned();
        } else if let Some(rest) = line.strip_prefix("test result: ") {
            tally.passed += count(rest, "passed");
            tally.failed += count(rest, "failed");
        } else if let Some(test) = line
            .strip_prefix("test ")
            .and_then(|t| t.strip_suffix(" ... FAILED"))
        {
            self.tests.push((self.binary.clone(), test.to_owned()));
        } else if let Some(rerun) = trimmed.strip_prefix("error: test failed, to rerun pass ") {
            self.failed.push((self.binary.clone(), rerun.to_owned()));
        }
    }

    /// A binary that failed without a failed test crashed, timed out or
    /// did not start: a step of its own.
    fn end(self, tally: &mut Tally) {
        for (binary, rerun) in &self.failed {
            if !self.tests.iter().any(|(b, _)| b == binary) {
                tally.steps.push(format!(
                    "{binary} failed without a test result (to rerun: {rerun})"
                ));
            }
        }
        tally.tests.extend(self.tests);
    }
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
    // Section 10 runs the DaemonSet's image.
    image::run()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// cargo's output with one failed test in one binary and a crash in
    /// another: both in the summary, the count over every binary.
    #[test]
    fn every_failure_of_a_run_is_listed() {
        let out = "\
     Running tests/cli_errors.rs (target/debug/deps/cli_errors-1)
running 2 tests
test a ... ok
test b ... ok
test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out
     Running tests/engines.rs (target/debug/deps/engines-2)
running 1 test
test the_engine_that_freed_a_drop_names_its_rule ... FAILED
test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out
error: test failed, to rerun pass `-p netdrop-tests --test engines`
     Running tests/soak.rs (target/debug/deps/soak-3)
running 1 test
error: test failed, to rerun pass `-p netdrop-tests --test soak`
     Running tests/sweep.rs (target/debug/deps/sweep-4)
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out
error: 2 targets failed:
";
        let mut tally = Tally::default();
        let mut reading = Reading::default();
        for line in out.lines() {
            reading.line(line, &mut tally);
        }
        reading.end(&mut tally);
        assert_eq!((tally.passed, tally.failed), (5, 1));
        assert_eq!(
            tally.tests,
            [(
                "tests/engines.rs".to_owned(),
                "the_engine_that_freed_a_drop_names_its_rule".to_owned()
            )]
        );
        assert_eq!(tally.steps.len(), 1, "{:?}", tally.steps);
        assert!(tally.steps[0].starts_with("tests/soak.rs failed"));
        assert!(tally.finish().is_err());
    }
}
