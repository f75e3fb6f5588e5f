//! Checks made before anything is loaded, so a user gets one clear sentence
//! instead of a verifier or permission error from deep inside the loader.

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "netdrop {cmd} must run as root: it needs {missing} to load and attach its kernel programs (try: sudo netdrop {cmd} ...)"
    )]
    MissingCapabilities { cmd: &'static str, missing: String },
    #[error("cannot read this process's capabilities from /proc/self/status: {0}")]
    Status(std::io::Error),
}

/// Effective capability mask of this process.
fn effective_caps() -> Result<u64, PreflightError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(PreflightError::Status)?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .unwrap_or("0");
    Ok(u64::from_str_radix(hex, 16).unwrap_or(0))
}

/// CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, or CAP_SYS_ADMIN in place of the
/// first two (kernels before 5.8 and many container runtimes grant that).
pub fn require_capabilities(cmd: &'static str) -> Result<(), PreflightError> {
    let caps = effective_caps()?;
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingCapabilities {
            cmd,
            missing: missing.join(", "),
        })
    }
}

/// Returns memory freed to the allocator to the system (glibc keeps freed
/// heap pages otherwise: a large ruleset read's peak, the kernel BTF parsed
/// at start, would stay resident for the life of a DaemonSet pod).
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}
