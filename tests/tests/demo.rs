//! `netdrop demo` (behind `cargo xtask demo`, one of the README's two
//! commands): it shows the seed's drop explained, ends at `--duration`, and
//! leaves no namespace behind.

use std::{
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use netdrop_tests::{field, netdrop_bin, prom::free_port, require_root};
use serde_json::Value;

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The child's exit status, or `None` (and the child killed) when it runs
/// longer than `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn demo_explains_s1_ends_on_time_and_cleans_up() {
    require_root!();
    let mut child = Command::new(netdrop_bin())
        .args([
            "demo",
            "--scenario",
            "s1",
            "--duration",
            "6s",
            "--output",
            "json",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(90))
        .unwrap_or_else(|| panic!("netdrop demo --duration 6s still running after 90 s"));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "{status}: {stderr}");
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let drop = records
        .iter()
        .find(|r| {
            field(r, "kind") == "drop"
                && field(r, "hook") == "FORWARD"
                && r["policy"] == true
                && field(r, "owner") == "docker"
        })
        .unwrap_or_else(|| panic!("{records:#?}"));
    // The demo's pods are containerd's, named on both ends.
    assert_eq!(
        (&drop["src_pod"]["name"], &drop["dst_pod"]["name"]),
        (
            &serde_json::json!("client-0"),
            &serde_json::json!("web-5c6f8d7b9-q8z7m")
        ),
        "{drop}"
    );
    // Cluster names are printed as "nodes <node1> and <node2>".
    let node1 = stderr
        .split("nodes ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("demo names its nodes");
    let prefix = node1.rsplit_once('-').map_or(node1, |(p, _)| p);
    assert!(
        !namespaces().contains(prefix),
        "namespaces of {prefix} left behind: {}",
        namespaces()
    );
    // Nor the runtimes' files and mounts.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(prefix),
        "mounts of {prefix} left: {mounts}"
    );
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Ctrl-C at any moment removes the demo's namespaces: while its clusters
/// are being built, and while it watches. (Before, a Ctrl-C during the
/// build either killed it with its namespaces in place or was lost, and the
/// demo ran on to `--duration`.)
#[test]
fn ctrl_c_during_build_or_watch_cleans_up() {
    require_root!();
    for after in [Duration::from_millis(700), Duration::from_secs(8)] {
        let said = netdrop_tests::TempPath::new("demo-ctrl-c-stderr");
        let mut child = Command::new(netdrop_bin())
            .args(["demo", "--duration", "300s", "--output", "json"])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&said.0).unwrap())
            .spawn()
            .unwrap();
        // Lab prefixes are "nd<tag>.<pid>x<n>".
        let ours = format!(".{}x", child.id());
        std::thread::sleep(after);
        if after >= Duration::from_secs(8) {
            // The clusters stand before the Ctrl-C, so the cleanup has work
            // to do. Their build can take longer than 8 s on a loaded
            // machine (once in CI): waited for, up to a bound that catches
            // a demo that never builds them.
            let end = std::time::Instant::now() + Duration::from_secs(60);
            while !namespaces().contains(&ours) {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "the demo exited ({status}) before its namespaces stood: {}",
                        std::fs::read_to_string(&said.0).unwrap_or_default()
                    );
                }
                assert!(
                    std::time::Instant::now() < end,
                    "no demo namespace 60 s in: {}",
                    std::fs::read_to_string(&said.0).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = exit_within(&mut child, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("demo still running 30 s after Ctrl-C ({after:?} in)"));
        assert!(
            status.success(),
            "{after:?}: {status}: {}",
            std::fs::read_to_string(&said.0).unwrap_or_default()
        );
        assert!(
            !namespaces().contains(&ours),
            "{after:?}: namespaces left behind: {}",
            namespaces()
        );
    }
}
