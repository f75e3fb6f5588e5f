//! `cargo xtask setup`: idempotent install of the build and test
//! prerequisites on a fresh Debian 12 machine. Each step checks first, so a
//! second run takes seconds and changes nothing.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::sh;

/// Debian packages: the eBPF linker's LLVM, and the real tools tests use
/// (each program they bring is listed in `programs::PROGRAMS`, which holds
/// this list complete).
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iptables",
    "nftables",
    "ipset",
    "firewalld",
    // firewalld's tests start its system bus themselves.
    "dbus-daemon",
    "docker.io",
    "containernetworking-plugins",
    // Real pods: containerd's CRI plugin runs them (pods.rs); the CRI
    // client is generated from its protobuf at build time; the lab's pause
    // image is a static binary built from C.
    "containerd",
    "runc",
    "protobuf-compiler",
    "gcc",
    "libc6-dev",
    // The image (`cargo xtask image`): a Debian base from Debian's
    // packages, the Containerfile's runtime stage built without a daemon.
    "mmdebstrap",
    "buildah",
    // Firewall generators, run in test namespaces (generators.rs).
    "shorewall",
    "ferm",
    "iproute2",
    "iputils-ping",
    "prometheus",
    "bpftrace",
    "bpftool",
    "time",
];

/// `(program, Debian package)`: programs the project's machine image
/// brings (Node.js's npm, a Python with venv), installed from Debian only
/// where the program is missing.
pub const IF_MISSING: &[(&str, &str)] = &[("npm", "npm"), ("python3", "python3-venv")];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The dashboard is checked against a JSON schema made from Grafana's own
/// TypeScript types; ajv validates it.
const NPM_PACKAGES: &[&str] = &[
    "@grafana/schema@13.2.3",
    "ts-json-schema-generator@2.10.0",
    "ajv-cli@5.0.0",
];
/// Ships the Kubernetes OpenAPI schemas (strict), so manifests are
/// validated offline.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// The one pinned nightly for the eBPF crate, shared with `netdrop/build.rs`
/// and the Containerfile.
pub const NIGHTLY_FILE: &str = include_str!("../../rust-nightly");

pub fn nightly() -> &'static str {
    NIGHTLY_FILE.trim()
}

pub fn run() -> anyhow::Result<()> {
    apt()?;
    nightly_toolchain()?;
    rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    grafana_schema()?;
    kubernetes_validate()?;
    tracefs()?;
    crate::programs::check()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .chain(
            IF_MISSING
                .iter()
                .filter(|(prog, _)| crate::programs::find(prog).is_none())
                .map(|(_, pkg)| *pkg),
        )
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    sh("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    // Package scripts must not wait for a terminal.
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("DEBIAN_FRONTEND", "noninteractive") };
    // Nor start their daemons (firewalld, dockerd) on this machine: tests
    // start them in their own namespaces. Debian's policy-rc.d says no to
    // every service start while the packages install.
    const POLICY: &str = "/usr/sbin/policy-rc.d";
    let ours = !Path::new(POLICY).exists();
    if ours {
        std::fs::write(
            POLICY,
            "#!/bin/sh\n# cargo xtask setup: no service starts\nexit 101\n",
        )?;
        std::fs::set_permissions(POLICY, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let installed = sh("apt-get", &args);
    if ours {
        let _ = std::fs::remove_file(POLICY);
    }
    installed
}

/// The pinned nightly under its own name. A machine whose `nightly` is that
/// very build (as this project's machines come, with no way to download
/// another) gets it under the pinned name as a symlink in rustup's
/// toolchains (`rustup toolchain link` refuses official names); any other
/// installs it.
fn nightly_toolchain() -> anyhow::Result<()> {
    let pinned = nightly();
    let listed = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("cannot run rustup")?;
    if String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|l| l.starts_with(pinned))
    {
        return Ok(());
    }
    let date = pinned.trim_start_matches("nightly-");
    let version = Command::new("rustc")
        .args(["+nightly", "-V"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // `nightly-D` is built from the commit of D or the day before.
    if version.contains(date) || day_before(date).is_some_and(|d| version.contains(&d)) {
        let sysroot = Command::new("rustc")
            .args(["+nightly", "--print", "sysroot"])
            .output()
            .context("cannot run rustc +nightly")?;
        let sysroot = std::path::PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
        let host = Command::new("rustc")
            .args(["+nightly", "-vV"])
            .output()
            .context("cannot run rustc +nightly")?;
        let host = String::from_utf8_lossy(&host.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
            .context("rustc -vV names no host")?;
        let dir = sysroot
            .parent()
            .context("nightly's sysroot has no parent")?;
        let link = dir.join(format!("{pinned}-{host}"));
        eprintln!("xtask: {} -> {}", link.display(), sysroot.display());
        return std::os::unix::fs::symlink(&sysroot, &link)
            .with_context(|| format!("linking {}", link.display()));
    }
    sh(
        "rustup",
        &["toolchain", "install", pinned, "--profile", "minimal"],
    )
}

/// `2026-05-20` → `2026-05-19` (not across a month's start: then `None`).
fn day_before(date: &str) -> Option<String> {
    let (ym, d) = date.rsplit_once('-')?;
    let d: u32 = d.parse().ok()?;
    (d > 1).then(|| format!("{ym}-{:02}", d - 1))
}

fn rust_src() -> anyhow::Result<()> {
    // Looked for in the sysroot (as build.rs does): `rustup component list`
    // does not work on a linked toolchain.
    let out = Command::new("rustc")
        .args([&format!("+{}", nightly()), "--print", "sysroot"])
        .output()
        .context("cannot run rustc")?;
    if !out.status.success() {
        bail!(
            "the toolchain {} is missing: rustup toolchain install {}",
            nightly(),
            nightly()
        );
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if std::path::Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        return Ok(());
    }
    sh(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", nightly()],
    )
}

fn bpf_linker() -> anyhow::Result<()> {
    let have = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false);
    if have {
        return Ok(());
    }
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
    let status = Command::new("cargo")
        .args([
            &format!("+{}", nightly()),
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("installing bpf-linker failed ({status})");
    }
    Ok(())
}

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz, for the bounded fuzzing run of `cargo xtask test`.
fn cargo_fuzz() -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION))
        .unwrap_or(false);
    if have {
        return Ok(());
    }
    sh(
        "cargo",
        &[
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ],
    )
}

fn tools_dir() -> std::path::PathBuf {
    crate::workspace_root().join("target/tools")
}

fn grafana_schema() -> anyhow::Result<()> {
    let dir = tools_dir().join("grafana");
    let schema = dir.join("dashboard.schema.json");
    if schema.exists() && dir.join("node_modules/.bin/ajv").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).context("creating target/tools/grafana")?;
    let dir_s = dir.to_str().context("target path is not UTF-8")?;
    let mut args = vec!["install", "--prefix", dir_s, "--no-audit", "--no-fund"];
    args.extend(NPM_PACKAGES);
    sh("npm", &args).context("npm is needed for the dashboard schema (apt-get install npm)")?;
    let types = dir.join("node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts");
    let gen_bin = dir.join("node_modules/.bin/ts-json-schema-generator");
    sh(
        gen_bin.to_str().context("target path is not UTF-8")?,
        &[
            "--path",
            types.to_str().context("target path is not UTF-8")?,
            "--type",
            "Dashboard",
            "--no-type-check",
            "-o",
            schema.to_str().context("target path is not UTF-8")?,
        ],
    )
}

fn kubernetes_validate() -> anyhow::Result<()> {
    let venv = tools_dir().join("kvenv");
    if venv.join("bin/kubernetes-validate").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(tools_dir()).context("creating target/tools")?;
    let venv_s = venv.to_str().context("target path is not UTF-8")?;
    sh("python3", &["-m", "venv", venv_s])?;
    let pip = venv.join("bin/pip");
    sh(
        pip.to_str().context("target path is not UTF-8")?,
        &["install", "-q", KUBERNETES_VALIDATE],
    )
}

/// tracefs, for the plain-tracepoint probe and bpftrace (fresh machines may
/// boot without it mounted).
fn tracefs() -> anyhow::Result<()> {
    if std::path::Path::new("/sys/kernel/tracing/events").exists() {
        return Ok(());
    }
    sh("mount", &["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
}
