//! A real firewalld (Debian's, iptables backend, configuration in a temp
//! dir) guarding a node namespace: VXLAN from another node dies in its
//! public zone. netdrop names firewalld's rule and owner, and its fix —
//! run by the test as an operator would — lets the next packets through.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netdrop_tests::{Lab, Watch, field, require_root, rule_packets, total_packets, traffic};

/// The system D-Bus firewalld registers on: started if none runs, and
/// stopped again by the test that started it.
struct SystemBus(Option<i32>);

impl SystemBus {
    fn ensure() -> Self {
        const SOCKET: &str = "/run/dbus/system_bus_socket";
        if std::os::unix::net::UnixStream::connect(SOCKET).is_ok() {
            return Self(None);
        }
        // A socket file nobody listens on (a bus that died) is in the way.
        let _ = std::fs::remove_file(SOCKET);
        let _ = std::fs::remove_file("/run/dbus/pid");
        std::fs::create_dir_all("/run/dbus").unwrap();
        let out = Command::new("dbus-daemon")
            .args(["--system", "--fork", "--print-pid"])
            .output()
            .expect("dbus-daemon (installed with firewalld by cargo xtask setup)");
        assert!(out.status.success(), "{out:?}");
        Self(String::from_utf8_lossy(&out.stdout).trim().parse().ok())
    }
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) on the dbus-daemon this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = std::fs::remove_file("/run/dbus/pid");
        }
    }
}

/// A child reaped on drop (declared before the lab, whose drop stops it).
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn firewalld_rejecting_vxlan_is_named_and_its_fix_works() {
    require_root!();
    let _bus = SystemBus::ensure();
    let mut firewalld = Reaped(None);
    let mut lab = Lab::new("fwd");
    let peer = lab.netns("peer").unwrap();
    let node = lab.netns("node").unwrap();
    lab.veth(
        (&peer, "eth0", Some("192.0.2.2/24")),
        (&node, "eth0", Some("192.0.2.1/24")),
    )
    .unwrap();

    // firewalld's own configuration, iptables backend, in a temp dir (its
    // --permanent changes land there, not in /etc/firewalld).
    let conf =
        TempDir(std::env::temp_dir().join(format!("netdrop-firewalld-{}", std::process::id())));
    std::fs::create_dir_all(&conf.0).unwrap();
    let system = std::fs::read_to_string("/etc/firewalld/firewalld.conf").unwrap();
    std::fs::write(
        conf.0.join("firewalld.conf"),
        system.replace("FirewallBackend=nftables", "FirewallBackend=iptables"),
    )
    .unwrap();
    // Stopped (by pid, in the namespace) when the lab is dropped.
    firewalld.0 = Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &node,
                "firewalld",
                "--nofork",
                "--nopid",
                "--system-config",
            ])
            .arg(&conf.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("firewalld (installed by cargo xtask setup)"),
    );
    let firewall_cmd = |args: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &node,
                "sh",
                "-c",
                &format!("firewall-cmd {args}"),
            ])
            .output()
            .unwrap()
    };
    let t = Instant::now();
    while !firewall_cmd("--state").status.success() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "firewalld did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    const REJECT: &str = "-A IN_public -j REJECT --reject-with icmp-port-unreachable";
    let mut w = Watch::start(&["--netns", &node, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    let vxlan = "192.0.2.1:8472".parse().unwrap();
    let rejected = |r: &serde_json::Value| field(r, "rule") == REJECT;
    traffic::send_udp(&peer, vxlan, 4, 50).unwrap();
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), rejected) >= 4
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    std::thread::sleep(Duration::from_millis(600));
    let rec = w.records().into_iter().rfind(|r| rejected(r)).unwrap();
    for (k, v) in [
        ("hook", "INPUT"),
        ("table", "filter"),
        ("chain", "IN_public"),
        ("verdict", "REJECT"),
        ("reject_with", "icmp-port-unreachable"),
        ("owner", "firewalld"),
        ("evidence", "counters"),
        ("src", "192.0.2.2"),
    ] {
        assert_eq!(field(&rec, k), v, "{k}: {rec}");
    }
    assert_eq!(rec["packets"], 4, "{rec}");
    assert_eq!(rec["vxlan"], true, "{rec}");
    assert_eq!(rule_packets(&node, "filter", "IN_public", Some(REJECT)), 4);
    let fix = field(&rec, "fix");
    let command = "firewall-cmd --permanent --add-port=8472/udp && firewall-cmd --reload";
    assert!(fix.contains(&format!("`{command}`")), "{fix}");

    // The operator runs the fix: VXLAN gets through, nothing more dies.
    let applied = firewall_cmd(command.trim_start_matches("firewall-cmd "));
    assert!(applied.status.success(), "{applied:?}");
    let before = total_packets(&w.records(), |r| field(r, "reason") == "NETFILTER_DROP");
    traffic::send_udp(&peer, vxlan, 4, 50).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let records = w.stop().unwrap();
    assert_eq!(
        total_packets(&records, |r| field(r, "reason") == "NETFILTER_DROP"),
        before,
        "drops after the fix: {records:#?}"
    );
    // The reload rebuilt the rules (counters from zero): the new ACCEPT
    // took the packets, the REJECT none.
    assert_eq!(
        rule_packets(
            &node,
            "filter",
            "IN_public_allow",
            Some("-A IN_public_allow -p udp -m udp --dport 8472 -j ACCEPT")
        ),
        4
    );
    assert_eq!(rule_packets(&node, "filter", "IN_public", Some(REJECT)), 0);
}
