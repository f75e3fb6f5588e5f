//! Debian's real Docker beside Kubernetes on a node: dockerd, started in
//! the node's namespace, enables IP forwarding itself and so sets
//! FORWARD's policy to DROP. Pod traffic from another node to a pod here
//! then dies at that policy; netdrop names Docker, and the fix it prints
//! (in DOCKER-USER, the chain Docker keeps for its users) is run: the pod
//! answers again, both ways.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netdrop_tests::{Lab, Watch, field, peer_and_node, require_root, total_packets};

/// dockerd's own directories, removed on drop (after the lab, which stops
/// dockerd, is dropped: declare it first).
struct DockerDirs(PathBuf);

impl Drop for DockerDirs {
    fn drop(&mut self) {
        // dockerd makes its data root a mount point of its own: unmount
        // whatever is under the directory (deepest first), then remove it.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&*self.0.to_string_lossy()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let Ok(c) = std::ffi::CString::new(p) else {
                continue;
            };
            // SAFETY: umount2 of a path this test's dockerd mounted.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// dockerd, stopped politely (SIGTERM, as systemd would) when dropped.
struct Dockerd(std::process::Child);

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the dockerd this test started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts dockerd in namespace `node` (through `nsenter --net`, which
/// keeps the host's /sys and cgroups that `ip netns exec` would hide),
/// with its own root, state, socket and pid file, and `docker0` on a
/// TEST-NET range. Waits until it has set up its iptables rules.
fn start_dockerd(lab: &Lab, node: &str, dirs: &DockerDirs) -> Dockerd {
    let d = |p: &str| dirs.0.join(p).to_string_lossy().into_owned();
    std::fs::create_dir_all(&dirs.0).unwrap();
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{node}"))
        .args([
            "dockerd",
            "--data-root",
            &d("data"),
            "--exec-root",
            &d("exec"),
            "--pidfile",
            &d("docker.pid"),
            "-H",
            &format!("unix://{}", d("docker.sock")),
            "--bip",
            "198.51.100.1/24",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dockerd (installed by cargo xtask setup)");
    // Stopped if it never gets ready, too.
    let child = Dockerd(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rules = lab.iptables_save(node).unwrap_or_default();
        if rules.contains(":FORWARD DROP") && rules.contains("-A FORWARD -j DOCKER-USER") {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "dockerd did not set up its rules:\n{rules}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn dockers_forward_drop_is_named_and_its_fix_works_both_ways() {
    require_root!();
    let dirs =
        DockerDirs(std::env::temp_dir().join(format!("netdrop-docker-{}", std::process::id())));
    let mut lab = Lab::new("dkr");
    let (peer, node) = peer_and_node(&mut lab);
    let pod = lab.netns("pod").unwrap();
    lab.veth(
        (&node, "cni0", Some("10.224.2.1/24")),
        (&pod, "eth0", Some("10.224.2.2/24")),
    )
    .unwrap();
    // The other node's pod network (on the peer), routed both ways.
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
    // A listener in the pod.
    let listener = netdrop::netns::Netns::named(&pod)
        .unwrap()
        .run_in(|| std::net::TcpListener::bind("0.0.0.0:5000"))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || for _ in listener.incoming() {});
    // net.ipv4.ip_forward stays 0: dockerd turns it on, and FORWARD to DROP.
    let dockerd = start_dockerd(&lab, &node, &dirs);

    let mut w = Watch::start(&["--netns", &node, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    let connect = || {
        netdrop::netns::Netns::named(&peer)
            .unwrap()
            .run_in(|| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                s.bind(
                    &"10.224.1.1:0"
                        .parse::<std::net::SocketAddr>()
                        .unwrap()
                        .into(),
                )
                .unwrap();
                s.connect_timeout(
                    &"10.224.2.2:5000"
                        .parse::<std::net::SocketAddr>()
                        .unwrap()
                        .into(),
                    Duration::from_secs(2),
                )
                .is_ok()
            })
            .unwrap()
    };
    assert!(!connect(), "the pod answered through FORWARD's policy DROP");
    let policy = |r: &serde_json::Value| r["policy"] == true && field(r, "chain") == "FORWARD";
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), policy) >= 1
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let rec = w.records().into_iter().rfind(|r| policy(r)).unwrap();
    for (k, v) in [
        ("hook", "FORWARD"),
        ("table", "filter"),
        ("verdict", "DROP"),
        ("owner", "docker"),
        ("in_iface", "eth0"),
        ("out_iface", "cni0"),
        ("src", "10.224.1.1"),
        ("dst", "10.224.2.2"),
    ] {
        assert_eq!(field(&rec, k), v, "{k}: {rec}");
    }
    assert!(
        field(&rec, "explanation").contains("which Docker sets when it enables IP forwarding"),
        "{rec}"
    );
    // The fix as printed: every command in its first backticks.
    let fix = field(&rec, "fix");
    let command = fix.split('`').nth(1).unwrap_or_default();
    assert!(command.starts_with("iptables -I DOCKER-USER"), "{fix}");
    for part in command.split("&&") {
        let argv: Vec<&str> = part.split_whitespace().collect();
        let out = lab.exec(&node, &argv).unwrap();
        assert!(out.status.success(), "{part}: {out:?}");
    }
    assert!(connect(), "the pod does not answer after the fix: {fix}");
    w.stop().unwrap();
    drop(dockerd);
}
