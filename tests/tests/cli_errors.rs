//! Bad input and missing privileges: one clear sentence, the right exit
//! code, never a panic.

use std::process::{Command, Output};

use netdrop_tests::{netdrop, netdrop_bin, require_root};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn not_root_is_one_clear_sentence_and_exit_1() {
    require_root!();
    // Drop every privilege the way an unprivileged user runs it.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(netdrop_bin())
        .args(["watch", "--duration", "1s"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("must run as root"), "{err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_NET_ADMIN"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A kubeconfig that is not there is said in one sentence, before any
/// program is loaded.
#[test]
fn missing_kubeconfig_is_named() {
    require_root!();
    let out = netdrop(&[
        "watch",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
        "--duration",
        "1s",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("reading kubeconfig /nonexistent/kubeconfig"),
        "{err}"
    );
    assert!(!err.contains("watching drops"), "{err}");
}

#[test]
fn missing_btf_is_named() {
    require_root!();
    let out = netdrop(&["watch", "--btf", "/nonexistent/vmlinux", "--duration", "1s"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no BTF at /nonexistent/vmlinux"), "{err}");
    assert!(err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
}

#[test]
fn bad_flag_values_are_usage_errors() {
    for args in [
        &["watch", "--pod-cidr", "10.224.0.0/33"][..],
        &["watch", "--pod-cidr", "banana"],
        &["watch", "--duration", "soon"],
        &["watch", "--drop-probe", "kprobe"],
        // A packet netdrop cannot read is bad input too, whatever is wrong
        // in it (and so are the other flags of check and explain).
        &["explain", "--rules", "/dev/null", "--packet", "garbage"],
        &[
            "explain",
            "--rules",
            "/dev/null",
            "--packet",
            "SIDEWAYS udp 10.224.1.2 -> 10.224.2.2",
        ],
        &[
            "explain",
            "--rules",
            "/dev/null",
            "--packet",
            "INPUT udp 10.224.1.2:1 -> 10.224.300.2:2",
        ],
        &[
            "explain",
            "--rules",
            "/dev/null",
            "--packet",
            "INPUT udp 10.224.1.2:99999 -> 10.224.2.2:2",
        ],
        &[
            "explain",
            "--rules",
            "/dev/null",
            "--packet",
            "INPUT udp 10.224.1.2 -> 10.224.2.2 ct SIDEWAYS",
        ],
        &[
            "explain",
            "--rules",
            "/dev/null",
            "--packet",
            "INPUT udp 10.224.1.2 -> 10.224.2.2",
            "--pod-cidr",
            "banana",
        ],
        &[
            "check",
            "--rules",
            "/dev/null",
            "--pod-cidr",
            "10.224.0.0/99",
        ],
        &["check", "--rules", "/dev/null", "--vxlan-port", "70000"],
    ] {
        let out = netdrop(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error: invalid value"), "{args:?}: {err}");
    }
}

/// `check` and `explain` need the namespace now: an error naming it.
/// `watch` waits for it (a node namespace may appear after netdrop starts)
/// and says so.
#[test]
fn unknown_namespace_is_named() {
    require_root!();
    for cmd in ["check", "explain"] {
        let mut args = vec![
            cmd,
            "--netns",
            "no-such-ns-netdrop",
            "--pod-cidr",
            "10.224.0.0/16",
        ];
        if cmd == "explain" {
            args.extend(["--packet", "INPUT udp 10.224.1.2:1 -> 10.224.2.2:2"]);
        }
        let out = netdrop(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(
            err.contains("\"no-such-ns-netdrop\" does not exist"),
            "{cmd}: {err}"
        );
    }
    let out = netdrop(&["watch", "--netns", "no-such-ns-netdrop", "--duration", "1s"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "\"no-such-ns-netdrop\" does not exist (not in /run/netns): watching for it to appear"
        ),
        "{err}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["watch", "check", "explain", "demo"] {
        let out = netdrop(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: netdrop"),
            "{sub}"
        );
    }
    let out = netdrop(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("netdrop "));
}
