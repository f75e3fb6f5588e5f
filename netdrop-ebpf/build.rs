use which::which;

/// Cargo does not rebuild the eBPF object when only bpf-linker changes, so
/// point it at the linker binary (as aya-template does).
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found on PATH"),
    }
}
