//! `cargo xtask image`: the image users build from
//! `deploy/kubernetes/Containerfile`, built here without a registry.
//!
//! The Containerfile has two stages. The build stage installs the toolchain
//! `cargo xtask setup` installs and runs `cargo build --release --package
//! netdrop`; here that is the host's own release build (this machine cannot
//! download a rustup toolchain inside a build). The runtime stage is built
//! as written — its text read from the Containerfile, with only the one
//! `COPY --from=build …/netdrop` taking the host's binary instead — by
//! buildah (daemonless, host network for its `apt-get`), on the base image
//! the stage names (`debian:12-slim`), made locally from Debian's packages
//! with mmdebstrap when containers-storage does not hold it yet (the
//! registry's is not reachable). The image is tagged as the DaemonSet names
//! it and written as an OCI archive, `target/image/netdrop.oci.tar`, which
//! containerd imports (`ctr images import`), and as a Docker archive,
//! `target/image/netdrop.docker.tar`, which `docker load` reads.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{sh, workspace_root};

/// The archive `cargo xtask image` writes, relative to the workspace.
pub const ARCHIVE: &str = "target/image/netdrop.oci.tar";

/// The same image for `docker load`.
pub const DOCKER_ARCHIVE: &str = "target/image/netdrop.docker.tar";

/// The runtime stage's line that copies the build stage's binary.
const COPY_FROM_BUILD: &str = "COPY --from=build /src/target/release/netdrop ";

pub fn run() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let containerfile = std::fs::read_to_string(root.join("deploy/kubernetes/Containerfile"))
        .context("reading deploy/kubernetes/Containerfile")?;
    let manifest = std::fs::read_to_string(root.join("deploy/kubernetes/netdrop.yaml"))
        .context("reading deploy/kubernetes/netdrop.yaml")?;
    let tag = manifest_image(&manifest)?;
    let (base, stage) = runtime_stage(&containerfile)?;
    sh(
        "cargo",
        &["build", "--release", "--locked", "--package", "netdrop"],
    )?;
    let dir = root.join("target/image");
    std::fs::create_dir_all(&dir).context("creating target/image")?;
    ensure_base(&base, &dir)?;
    // The build context: the runtime stage and the binary.
    let ctx = dir.join("context");
    let _ = std::fs::remove_dir_all(&ctx);
    std::fs::create_dir_all(&ctx).context("creating the build context")?;
    std::fs::copy(root.join("target/release/netdrop"), ctx.join("netdrop"))
        .context("copying target/release/netdrop into the build context")?;
    std::fs::write(ctx.join("Containerfile"), stage).context("writing the runtime stage")?;
    let ctx_s = ctx.to_str().context("target path is not UTF-8")?;
    sh(
        "buildah",
        &[
            "build",
            "--quiet",
            "--pull=never",
            "--isolation=chroot",
            "--network=host",
            "--file",
            &format!("{ctx_s}/Containerfile"),
            "--tag",
            &tag,
            ctx_s,
        ],
    )?;
    let archive = root.join(ARCHIVE);
    let _ = std::fs::remove_file(&archive);
    sh(
        "buildah",
        &[
            "push",
            "--quiet",
            &tag,
            &format!("oci-archive:{}:{tag}", archive.display()),
        ],
    )?;
    // Docker 20.10 (Debian 12's) loads only its own archive format.
    let docker = root.join(DOCKER_ARCHIVE);
    let _ = std::fs::remove_file(&docker);
    sh(
        "buildah",
        &[
            "push",
            "--quiet",
            &tag,
            &format!("docker-archive:{}:{tag}", docker.display()),
        ],
    )?;
    report(&tag, &archive)?;
    Ok(archive)
}

/// The image the DaemonSet runs: its container's `image:`.
fn manifest_image(manifest: &str) -> anyhow::Result<String> {
    manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("image:"))
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .context("deploy/kubernetes/netdrop.yaml names no image")
}

/// The Containerfile's last stage, its base image and its text with the
/// build stage's binary taken from the build context instead.
fn runtime_stage(containerfile: &str) -> anyhow::Result<(String, String)> {
    let start = containerfile
        .rfind("\nFROM ")
        .context("the Containerfile has no stage")?
        + 1;
    let stage = &containerfile[start..];
    let base = stage
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("the runtime stage names no base")?
        .to_owned();
    if !stage.contains(COPY_FROM_BUILD) {
        bail!(
            "the Containerfile's runtime stage no longer copies the binary with `{COPY_FROM_BUILD}…`: update xtask/src/image.rs with it"
        );
    }
    Ok((base, stage.replace(COPY_FROM_BUILD, "COPY netdrop ")))
}

/// `base` in containers-storage: made from Debian's packages when absent
/// (what debian:12-slim is: minbase, without documentation and locales).
fn ensure_base(base: &str, dir: &Path) -> anyhow::Result<()> {
    let have = Command::new("buildah")
        .args(["images", "--quiet", base])
        .output()
        .context("running buildah (Debian package buildah)")?;
    if have.status.success() && !have.stdout.is_empty() {
        return Ok(());
    }
    let tar = dir.join("base.tar");
    let tar_s = tar.to_str().context("target path is not UTF-8")?;
    sh(
        "mmdebstrap",
        &[
            "--quiet",
            "--variant=minbase",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "bookworm",
            tar_s,
        ],
    )?;
    let ctr = output("buildah", &["from", "scratch"])?;
    let result = (|| {
        let mount = output("buildah", &["mount", &ctr])?;
        sh("tar", &["-C", &mount, "-xf", tar_s])?;
        sh("buildah", &["umount", &ctr])?;
        sh("buildah", &["commit", "--quiet", &ctr, base])
    })();
    let _ = Command::new("buildah").args(["rm", &ctr]).output();
    let _ = std::fs::remove_file(&tar);
    result
}

/// A command's trimmed stdout, failing if it fails.
fn output(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {prog}"))?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What the image is: its size, and the Debian packages in it.
fn report(tag: &str, archive: &Path) -> anyhow::Result<()> {
    let ctr = output("buildah", &["from", "--pull=never", tag])?;
    let result = (|| {
        let mount = output("buildah", &["mount", &ctr])?;
        let status = std::fs::read_to_string(Path::new(&mount).join("var/lib/dpkg/status"))
            .context("reading the image's dpkg status")?;
        let packages: Vec<&str> = status
            .lines()
            .filter_map(|l| l.strip_prefix("Package: "))
            .collect();
        let size = output("du", &["-sm", &mount])?;
        let archive_mb = std::fs::metadata(archive)?.len() / (1 << 20);
        let binary_mb =
            std::fs::metadata(Path::new(&mount).join("usr/local/bin/netdrop"))?.len() / (1 << 20);
        eprintln!(
            "xtask: image {tag}: {} MiB unpacked ({archive_mb} MiB archive, {}), netdrop {binary_mb} MiB, {} Debian packages: {}",
            size.split_whitespace().next().unwrap_or("?"),
            archive.display(),
            packages.len(),
            packages.join(" ")
        );
        Ok(())
    })();
    let _ = Command::new("buildah").args(["rm", &ctr]).output();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_stage_is_the_containerfiles_own() {
        let text =
            std::fs::read_to_string(workspace_root().join("deploy/kubernetes/Containerfile"))
                .unwrap();
        let (base, stage) = runtime_stage(&text).unwrap();
        assert_eq!(base, "docker.io/library/debian:12-slim");
        assert!(stage.starts_with("FROM docker.io/library/debian:12-slim"));
        assert!(stage.contains("COPY netdrop /usr/local/bin/netdrop"));
        assert!(!stage.contains("--from=build"));
        let manifest =
            std::fs::read_to_string(workspace_root().join("deploy/kubernetes/netdrop.yaml"))
                .unwrap();
        assert_eq!(
            manifest_image(&manifest).unwrap(),
            "registry.example.com/netdrop:0.1.0"
        );
    }
}
