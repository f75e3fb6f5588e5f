//! Says once, at build time, that the privileged tests will skip: a plain
//! `cargo test` as a normal user passes without them.

fn main() {
    println!("cargo:rerun-if-env-changed=NETDROP_PRIVILEGED");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        println!(
            "cargo:warning=netdrop's privileged tests (tests/) skip when not root: run them with `sudo -E cargo xtask test`"
        );
    }
}
