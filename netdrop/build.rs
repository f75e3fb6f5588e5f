//! Builds `netdrop-ebpf` for the BPF target with aya-build; the binary embeds
//! the object. A missing prerequisite stops the build with one sentence that
//! names it and the command that installs it.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

/// The one pinned nightly for the eBPF crate (`rust-nightly` at the
/// repository root; `cargo xtask setup`, CI and the Containerfile read it too).
const NIGHTLY: &str = include_str!("../rust-nightly");

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../rust-nightly");
    let nightly = NIGHTLY.trim();
    check_prerequisites(nightly)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("netdrop/ has no parent directory")?
        .join("netdrop-ebpf");
    let root = root.to_str().context("netdrop-ebpf path is not UTF-8")?;
    // aya-build watches netdrop-ebpf only; the kernel programs share their
    // types with userspace through netdrop-common, so a change there must
    // rebuild them too (else the object and the loader disagree on layouts).
    println!(
        "cargo:rerun-if-changed={}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../netdrop-common")
            .display()
    );
    let package = aya_build::Package {
        name: "netdrop-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(nightly))
        .context("building the eBPF programs (netdrop-ebpf) failed")
}

fn check_prerequisites(nightly: &str) -> anyhow::Result<()> {
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        return Ok(());
    }
    let sysroot = Command::new("rustup")
        .args(["run", nightly, "rustc", "--print", "sysroot"])
        .output();
    let sysroot = match sysroot {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => bail!(
            "netdrop needs the Rust toolchain {nightly} to build its eBPF programs: run `cargo xtask setup` (or `rustup toolchain install {nightly} --component rust-src`)"
        ),
    };
    if !Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        bail!(
            "netdrop needs rust-src for {nightly} to build its eBPF programs: run `cargo xtask setup` (or `rustup component add rust-src --toolchain {nightly}`)"
        );
    }
    let linker_found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("bpf-linker").is_file()))
        .unwrap_or(false);
    if !linker_found {
        bail!(
            "netdrop needs bpf-linker to link its eBPF programs: run `cargo xtask setup` (or `apt-get install llvm-22-dev && LLVM_PREFIX=/usr/lib/llvm-22 cargo +{nightly} install bpf-linker --version 0.13.0 --no-default-features --features llvm-22`)"
        );
    }
    Ok(())
}
