//! `cargo xtask setup`: idempotent install of the build and test
//! prerequisites on a fresh Debian 12 machine. Each step checks first, so a
//! second run takes seconds and changes nothing.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::sh;

/// Debian packages: the eBPF linker's LLVM, and the real tools tests use.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iptables",
    "iproute2",
    "iputils-ping",
    "prometheus",
    "bpftrace",
    "bpftool",
    "time",
];
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

pub fn run() -> anyhow::Result<()> {
    apt()?;
    rust_src()?;
    bpf_linker()?;
    grafana_schema()?;
    kubernetes_validate()?;
    tracefs()?;
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
    sh("apt-get", &args)
}

fn rust_src() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("cannot run rustup")?;
    if !out.status.success() {
        bail!("the nightly toolchain is missing: rustup toolchain install nightly");
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    sh(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
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
            "+nightly",
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
