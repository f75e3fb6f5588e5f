//! A real firewalld (Debian's, iptables backend, configuration in a temp
//! dir) guarding a node namespace: VXLAN from another node dies in its
//! public zone. netdrop names firewalld's rule and owner, and its fix —
//! run by the test as an operator would — lets the next packets through.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netdrop_tests::{
    Lab, TempPath, UdpSink, Watch, field, peer_and_node, require_root, rule_packets, total_packets,
    traffic,
};

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
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(SOCKET).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the system bus did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(String::from_utf8_lossy(&out.stdout).trim().parse().ok())
    }
}

/// Whether `pid` has exited (gone, or a zombie nobody reaps: the forked
/// bus's parent is PID 1, which here does not reap).
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) on the dbus-daemon this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            // Waited for: the next test must not find this bus still
            // answering and then lose it under its firewalld.
            let t = Instant::now();
            while !exited(pid) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
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

/// Starts Debian's firewalld in namespace `node` with `backend`
/// (`iptables` or `nftables`), its configuration in a temp dir (so its
/// --permanent changes land there, not in /etc/firewalld); returns that dir
/// and a runner of `firewall-cmd ARGS` in the namespace, once it answers.
/// It is stopped (by pid, in the namespace) when the lab is dropped, and
/// reaped by `reaped`.
fn start_firewalld(
    node: &str,
    backend: &str,
    reaped: &mut Reaped,
) -> (TempPath, impl Fn(&str) -> std::process::Output + use<>) {
    let conf = TempPath::dir(&format!("firewalld-{backend}"));
    let system = std::fs::read_to_string("/etc/firewalld/firewalld.conf").unwrap();
    let config: String = system
        .lines()
        .map(|l| {
            if l.starts_with("FirewallBackend=") {
                format!("FirewallBackend={backend}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(conf.0.join("firewalld.conf"), config).unwrap();
    reaped.0 = Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                node,
                "firewalld",
                "--nofork",
                "--nopid",
                "--system-config",
            ])
            .arg(&conf.0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(conf.0.join("stderr")).unwrap())
            .spawn()
            .expect("firewalld (installed by cargo xtask setup)"),
    );
    let node = node.to_owned();
    let firewall_cmd = move |args: &str| {
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
        let exited = reaped.0.as_mut().and_then(|c| c.try_wait().ok().flatten());
        assert!(
            t.elapsed() < Duration::from_secs(30) && exited.is_none(),
            "firewalld did not start (exit: {exited:?}): {}",
            std::fs::read_to_string(conf.0.join("stderr")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (conf, firewall_cmd)
}

#[test]
fn firewalld_rejecting_vxlan_is_named_and_its_fix_works() {
    require_root!();
    let _bus = SystemBus::ensure();
    let mut firewalld = Reaped(None);
    let mut lab = Lab::new("fwd");
    let (peer, node) = peer_and_node(&mut lab);

    let (_conf, firewall_cmd) = start_firewalld(&node, "iptables", &mut firewalld);

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
    let command =
        "firewall-cmd --permanent --zone=public --add-port=8472/udp && firewall-cmd --reload";
    assert!(fix.contains(&format!("`{command}`")), "{fix}");

    // The operator runs the fix: VXLAN gets through, nothing more dies.
    let applied = firewall_cmd(command.trim_start_matches("firewall-cmd "));
    assert!(applied.status.success(), "{applied:?}");
    let (dropped, records) = w
        .stop_after(
            |r| field(r, "reason") == "NETFILTER_DROP",
            || traffic::send_udp(&peer, vxlan, 4, 50).unwrap(),
        )
        .unwrap();
    assert_eq!(dropped, 0, "drops after the fix: {records:#?}");
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

/// firewalld as RHEL-family nodes run it: its nftables backend (`table
/// inet firewalld`, rules without counters). VXLAN from the peer node dies
/// in the public zone's INPUT reject; once the fix opens 8472, pod traffic
/// forwarded to a local pod dies in the zone's FORWARD reject; that fix
/// too is run, and the pod gets its packets. netdrop names each rule as
/// `nft -a list` prints it, its table and owner, and says the evidence is
/// the model's (`simulated`): firewalld's rules count nothing.
#[test]
fn firewalld_on_nftables_is_named_in_input_and_forward_and_its_fixes_work() {
    require_root!();
    let _bus = SystemBus::ensure();
    let mut firewalld = Reaped(None);
    let mut lab = Lab::new("fwn");
    let (peer, node) = peer_and_node(&mut lab);
    let pod = lab.netns("pod").unwrap();
    lab.veth(
        (&node, "cni0", Some("10.224.2.1/24")),
        (&pod, "eth0", Some("10.224.2.2/24")),
    )
    .unwrap();
    // The peer node's pod network, and the routes between the two.
    lab.ip(&peer, &["addr", "add", "10.224.1.1/24", "dev", "lo"])
        .unwrap();
    lab.ip(
        &peer,
        &["route", "add", "10.224.2.0/24", "via", "192.0.2.1"],
    )
    .unwrap();
    lab.ip(
        &node,
        &["route", "add", "10.224.1.0/24", "via", "192.0.2.2"],
    )
    .unwrap();
    lab.ip(&pod, &["route", "add", "default", "via", "10.224.2.1"])
        .unwrap();
    lab.sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
    let (_conf, firewall_cmd) = start_firewalld(&node, "nftables", &mut firewalld);

    let mut w = Watch::start(&["--netns", &node, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    // Netfilter's drops only: once 8472 is open, the VXLAN packets reach a
    // node without a VXLAN device here, and the kernel drops them for want
    // of a socket (NO_SOCKET), as it should.
    let netfilter =
        |r: &serde_json::Value| field(r, "node") == node && field(r, "reason") == "NETFILTER_DROP";
    let drops = |w: &Watch| total_packets(&w.records(), netfilter);
    let last = |w: &Watch, chain: &str| {
        w.records()
            .into_iter()
            .rfind(|r| field(r, "chain") == chain)
            .unwrap_or_else(|| panic!("no drop in {chain}: {:#?}", w.records()))
    };
    let run_fix = |rec: &serde_json::Value, command: &str| {
        let fix = field(rec, "fix");
        assert!(fix.contains(&format!("`{command}`")), "{fix}");
        let out = firewall_cmd(command.trim_start_matches("firewall-cmd "));
        assert!(out.status.success(), "{out:?}");
    };
    const REJECT: &str = "reject with icmpx admin-prohibited";

    // VXLAN from the peer: INPUT, the public zone's reject.
    traffic::send_udp(&peer, "192.0.2.1:8472".parse().unwrap(), 3, 50).unwrap();
    w.wait_for(Duration::from_secs(10), |w| drops(w) >= 3)
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let rec = last(&w, "filter_IN_public");
    for (k, v) in [
        ("hook", "INPUT"),
        ("table", "inet firewalld"),
        ("rule", REJECT),
        ("verdict", "REJECT"),
        ("reject_with", "icmpx admin-prohibited"),
        ("owner", "firewalld"),
        ("evidence", "simulated"),
    ] {
        assert_eq!(field(&rec, k), v, "{k}: {rec}");
    }
    assert_eq!(
        (rec["packets"].as_u64(), rec["vxlan"].as_bool()),
        (Some(3), Some(true))
    );
    assert!(field(&rec, "explanation").contains("zone public"), "{rec}");
    // The handle is the one `nft -a list` shows for that rule.
    let listing = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node,
            "nft",
            "-a",
            "list",
            "chain",
            "inet",
            "firewalld",
            "filter_IN_public",
        ])
        .output()
        .unwrap();
    let handle: u64 = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{REJECT} # handle "))?
                .parse()
                .ok()
        })
        .expect("the reject in nft's listing");
    assert_eq!(rec["rule_handle"], handle, "{rec}");
    run_fix(
        &rec,
        "firewall-cmd --permanent --zone=public --add-port=8472/udp && firewall-cmd --reload",
    );
    // The node receives them now (its own socket says so, not netdrop).
    let vxlan_sink = UdpSink::bind(&node, "192.0.2.1:8472".parse().unwrap()).unwrap();
    traffic::send_udp(&peer, "192.0.2.1:8472".parse().unwrap(), 3, 50).unwrap();
    assert_eq!(vxlan_sink.received(3, Duration::from_secs(5)).unwrap(), 3);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(drops(&w), 3, "VXLAN after the fix: {:#?}", w.records());

    // Pod traffic from the peer node's pod to a pod here: FORWARD.
    let from_pod = "10.224.1.1:40000".parse().unwrap();
    traffic::send_udp_from(&peer, from_pod, "10.224.2.2:5000".parse().unwrap(), 4, 20).unwrap();
    w.wait_for(Duration::from_secs(10), |w| drops(w) >= 7)
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let rec = last(&w, "filter_FWD_public");
    for (k, v) in [
        ("hook", "FORWARD"),
        ("table", "inet firewalld"),
        ("rule", REJECT),
        ("owner", "firewalld"),
        ("in_iface", "eth0"),
        ("out_iface", "cni0"),
        ("src", "10.224.1.1"),
        ("dst", "10.224.2.2"),
    ] {
        assert_eq!(field(&rec, k), v, "{k}: {rec}");
    }
    assert_eq!(rec["packets"], 4);
    run_fix(
        &rec,
        "firewall-cmd --permanent --zone=trusted --add-source=10.224.0.0/16 && firewall-cmd --reload",
    );
    let pod_sink = UdpSink::bind(&pod, "10.224.2.2:5000".parse().unwrap()).unwrap();
    traffic::send_udp_from(&peer, from_pod, "10.224.2.2:5000".parse().unwrap(), 4, 20).unwrap();
    assert_eq!(
        pod_sink.received(4, Duration::from_secs(5)).unwrap(),
        4,
        "the pod gets them"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        drops(&w),
        7,
        "pod traffic after the fix: {:#?}",
        w.records()
    );

    // From outside the cluster to a pod (a NodePort's DNATed packets look
    // so): not a trusted source, so zone public by eth0, whose forwarding
    // does not reach cni0 (in no zone): the same reject.
    lab.ip(&peer, &["addr", "add", "203.0.113.9/32", "dev", "lo"])
        .unwrap();
    lab.ip(
        &node,
        &["route", "add", "203.0.113.9/32", "via", "192.0.2.2"],
    )
    .unwrap();
    let outside = "203.0.113.9:40000".parse().unwrap();
    traffic::send_udp_from(&peer, outside, "10.224.2.2:5000".parse().unwrap(), 2, 20).unwrap();
    w.wait_for(Duration::from_secs(10), |w| drops(w) >= 9)
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let rec = w
        .records()
        .into_iter()
        .rfind(|r| field(r, "src") == "203.0.113.9")
        .unwrap();
    assert_eq!(field(&rec, "chain"), "filter_FWD_public", "{rec}");
    run_fix(
        &rec,
        "firewall-cmd --permanent --zone=public --add-interface=cni0 && firewall-cmd --permanent --zone=public --add-forward && firewall-cmd --reload",
    );
    traffic::send_udp_from(&peer, outside, "10.224.2.2:5000".parse().unwrap(), 2, 20).unwrap();
    assert_eq!(
        pod_sink.received(2, Duration::from_secs(5)).unwrap(),
        2,
        "the pod gets them"
    );
    std::thread::sleep(Duration::from_secs(1));
    let records = w.stop().unwrap();
    assert_eq!(
        total_packets(&records, netfilter),
        9,
        "traffic from outside after the fix: {records:#?}"
    );
}

/// A firewalld policy (traffic from zone public to the host, target
/// REJECT, ahead of the zones) rejects VXLAN: netdrop names the policy and
/// fixes it in the policy's own terms; the test runs that fix.
#[test]
fn a_firewalld_policy_rejecting_vxlan_is_named_and_its_fix_works() {
    require_root!();
    let _bus = SystemBus::ensure();
    let mut firewalld = Reaped(None);
    let mut lab = Lab::new("fwp");
    let (peer, node) = peer_and_node(&mut lab);
    let (_conf, firewall_cmd) = start_firewalld(&node, "nftables", &mut firewalld);
    for args in [
        "--permanent --zone=public --add-port=8472/udp",
        // A policy applies once its ingress zone is active (has an interface).
        "--permanent --zone=public --add-interface=eth0",
        "--permanent --new-policy=public-to-host",
        "--permanent --policy=public-to-host --add-ingress-zone=public",
        "--permanent --policy=public-to-host --add-egress-zone=HOST",
        "--permanent --policy=public-to-host --set-target=REJECT",
        "--permanent --policy=public-to-host --set-priority=-100",
        "--reload",
    ] {
        let out = firewall_cmd(args);
        assert!(out.status.success(), "{args}: {out:?}");
    }

    let mut w = Watch::start(&["--netns", &node, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    let netfilter = |r: &serde_json::Value| field(r, "reason") == "NETFILTER_DROP";
    let vxlan = "192.0.2.1:8472".parse().unwrap();
    traffic::send_udp(&peer, vxlan, 3, 50).unwrap();
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), netfilter) >= 3
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let rec = w.records().into_iter().rfind(|r| netfilter(r)).unwrap();
    assert_eq!(field(&rec, "table"), "inet firewalld", "{rec}");
    assert!(
        field(&rec, "chain").contains("_policy_public-to-host"),
        "{rec}"
    );
    assert_eq!(field(&rec, "owner"), "firewalld", "{rec}");
    assert!(
        field(&rec, "explanation").contains("firewalld's policy public-to-host"),
        "{rec}"
    );
    let command = "firewall-cmd --permanent --policy=public-to-host --add-port=8472/udp && firewall-cmd --reload";
    let fix = field(&rec, "fix");
    assert!(fix.contains(&format!("`{command}`")), "{fix}");
    let out = firewall_cmd(command.trim_start_matches("firewall-cmd "));
    assert!(out.status.success(), "{out:?}");
    let sink = UdpSink::bind(&node, vxlan).unwrap();
    traffic::send_udp(&peer, vxlan, 3, 50).unwrap();
    assert_eq!(
        sink.received(3, Duration::from_secs(5)).unwrap(),
        3,
        "the node gets them"
    );
    std::thread::sleep(Duration::from_secs(1));
    let records = w.stop().unwrap();
    assert_eq!(
        total_packets(&records, netfilter),
        3,
        "VXLAN after the fix: {records:#?}"
    );
}
