//! The DaemonSet's pod, run as kubelet runs it: the image `cargo xtask
//! image` built from `deploy/kubernetes/Containerfile`, imported into a lab
//! node's containerd, and started through the CRI (`RunPodSandbox` with the
//! node's network, `CreateContainer`, `StartContainer`) with what
//! `deploy/kubernetes/netdrop.yaml` says — read from it, not restated.
//!
//! Stand-ins, for what cannot run here: kubelet (this test makes the CRI
//! calls kubelet makes, and resolves `fieldRef: spec.nodeName` to the
//! node's name) and the host paths of a lab node, whose containerd keeps its
//! socket in a directory of its own: that directory is what is mounted where
//! the manifest mounts the node's `/run/containerd`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use netdrop::{
    lab::{
        cluster::{Cluster, Scenario},
        containerd::HostPod,
        traffic,
    },
    netns::Netns,
};
use netdrop_tests::{
    docker::{DockerDirs, start_dockerd},
    field, held_programs,
    manifest::{from_manifest, scrape_config},
    prom, require_root, rule_packets, wait_unloaded,
};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The records the container wrote to its log, read as `kubectl logs`
/// reads the CRI log file (`<time> <stream> <F|P> <line>`), and the lines
/// that were not records (its stderr).
fn log_records(log: &Path) -> (Vec<Value>, String) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut records = Vec::new();
    let mut other = String::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, stream, _, body) = (parts.next(), parts.next(), parts.next(), parts.next());
        let body = body.unwrap_or_default();
        match (stream, serde_json::from_str::<Value>(body)) {
            (Some("stdout"), Ok(v)) => records.push(v),
            _ => {
                other.push_str(body);
                other.push('\n');
            }
        }
    }
    (records, other)
}

fn wait<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An HTTP status from inside the node's namespace, at the node's address.
fn status_at(node: &str, addr: &str, path: &str) -> Option<u16> {
    let (addr, path) = (addr.to_owned(), path.to_owned());
    Netns::named(node)
        .ok()?
        .run_in(move || prom::status(&addr, &path))
        .ok()
        .flatten()
}

fn get_at(node: &str, addr: &str, path: &str) -> Option<String> {
    let (addr, path) = (addr.to_owned(), path.to_owned());
    Netns::named(node)
        .ok()?
        .run_in(move || prom::try_get(&addr, &path))
        .ok()
        .flatten()
}

/// The pod of the manifest on node2 of scenario S1 (its FORWARD policy
/// drops pod traffic): the drop is in the container's log with the pod
/// named through the mounted containerd socket, the probes answer at the
/// node's address, the memory limit is the cgroup's; then a rolling update
/// as kubelet does one: the old container gets SIGTERM and leaves nothing
/// attached, the new one is ready and counts the next drops.
#[test]
fn the_daemonset_pod_runs_through_the_cri_as_kubelet_runs_it() {
    require_root!();
    let archive = root().join("target/image/netdrop.oci.tar");
    assert!(
        archive.exists(),
        "{} is missing: `cargo xtask image` builds it (cargo xtask test does, before these tests)",
        archive.display()
    );
    let mut c = Cluster::build("ds", Scenario::S1).unwrap();
    let node = c.node2.clone();
    let runtime = &mut c.runtimes[1];
    let m = from_manifest(&node, runtime.socket_dir());
    runtime.import_image(&archive, &m.spec.image).unwrap();
    let pod = runtime.run_host_pod(&m.spec).unwrap();
    let addr = format!("192.0.2.2:{}", m.port);
    let ready = |pod: &HostPod| {
        let end = Instant::now() + Duration::from_secs(60);
        while status_at(&node, &addr, "/readyz") != Some(200) {
            assert!(
                Instant::now() < end,
                "not ready within 60 s: {}",
                log_records(&pod.log).1
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let log_tail = |pod: &HostPod| log_records(&pod.log).1;
    ready(&pod);
    // The probes' paths answer at the port they name.
    for path in &m.probes {
        assert_eq!(
            status_at(&node, &addr, path),
            Some(200),
            "{path}: {}",
            log_tail(&pod)
        );
    }
    let pid = c.runtimes[1].container_pid(&pod.container).unwrap();
    // The manifest's seccomp profile is in force: the runtime's default
    // profile is a filter (mode 2), Unconfined none (0).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let seccomp = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim)
        .unwrap_or_default();
    assert_eq!(
        seccomp,
        if m.spec.seccomp_unconfined { "0" } else { "2" },
        "{status}"
    );
    assert_eq!(
        netdrop_tests::cgroup_memory(pid).unwrap().0,
        m.spec.memory_limit as u64,
        "the manifest's memory limit is the container's cgroup's"
    );

    // Positive control: the kernel's own counter of the policy grows by
    // what was sent, and the container's log has the drop.
    let dst: SocketAddr = "10.224.2.2:9000".parse().unwrap();
    let policy = || rule_packets(&c.node2, "filter", "FORWARD", None);
    let before = policy();
    traffic::send_udp(&c.pod1, dst, 5, 64).unwrap();
    let drop = wait(Duration::from_secs(30), "the drop in the pod's log", || {
        log_records(&pod.log)
            .0
            .into_iter()
            .find(|r| field(r, "kind") == "drop" && field(r, "dst") == "10.224.2.2")
    });
    assert_eq!(policy() - before, 5, "the policy's counter agrees");
    assert_eq!(field(&drop, "node"), node, "{drop}");
    assert_eq!(
        (field(&drop, "chain"), field(&drop, "owner")),
        ("FORWARD", "docker"),
        "{drop}"
    );
    assert_eq!(
        field(&drop["dst_pod"], "name"),
        "web-5c6f8d7b9-q8z7m",
        "named through the mounted containerd socket: {drop}"
    );
    let metrics = get_at(&node, &addr, "/metrics").unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("netdrop_drops_total{") && l.contains("chain=\"FORWARD\"")),
        "{metrics}"
    );

    // Real Prometheus scrapes the pod at the node's address with
    // scrape.yaml's relabelling. Kubernetes discovery cannot run here: a
    // file-based target stands in for it, carrying the labels discovery
    // gives the pod (its container port's name, its node).
    let scrape = scrape_config(&node, &addr);
    let prom =
        prom::Prometheus::start_config(&scrape.0, Some(&c.node1), &[("targets.json", &scrape.1)]);
    let series = wait(
        Duration::from_secs(30),
        "Prometheus has the drop's series",
        || {
            prom.query(&format!(
                "netdrop_drops_total{{job=\"netdrop\",instance=\"{node}\",chain=\"FORWARD\"}}"
            ))
            .ok()
            .filter(|r| !r.is_empty())
        },
    );
    assert_eq!(series[0]["metric"]["instance"], node.as_str(), "{series:?}");
    std::mem::drop(prom);

    // Rolling update: the old pod deleted as kubelet deletes it.
    let held = held_programs(pid).unwrap();
    assert!(!held.is_empty(), "the container holds its programs");
    c.runtimes[1].delete_host_pod(&pod, m.grace).unwrap();
    wait_unloaded(&held, Duration::from_secs(20)).unwrap();
    let (_, stderr) = log_records(&pod.log);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut next = m.spec.clone();
    next.name.push_str("-2");
    let pod2 = c.runtimes[1].run_host_pod(&next).unwrap();
    ready(&pod2);
    let before = policy();
    traffic::send_udp(&c.pod1, dst, 3, 64).unwrap();
    wait(
        Duration::from_secs(30),
        "the new pod counts the next drops",
        || {
            log_records(&pod2.log)
                .0
                .into_iter()
                .find(|r| field(r, "kind") == "drop" && field(r, "dst") == "10.224.2.2")
        },
    );
    assert_eq!(policy() - before, 3);
    c.runtimes[1].delete_host_pod(&pod2, m.grace).unwrap();
}

/// The same image as Docker users run it (also on nodes without
/// Kubernetes): `docker load`, then `docker run --network host` with the
/// manifest's securityContext in Docker's flags (read from the manifest),
/// its host paths but the containerd socket (no pods here to name), on a
/// node whose INPUT drops a pod's UDP. The same checks as the CRI's pod: the
/// drop in the container's log, the probes, the metric, and `docker stop`
/// (SIGTERM) leaving nothing loaded.
///
/// Debian 12's dockerd (20.10) does not know `CAP_BPF` or `CAP_PERFMON`
/// and refuses to create such a container; where it does, the test runs
/// the fallback the README gives for it (`SYS_ADMIN` in their place) and
/// says which one ran.
#[test]
fn the_image_runs_under_docker_as_docker_users_run_it() {
    require_root!();
    let archive = root().join("target/image/netdrop.docker.tar");
    assert!(
        archive.exists(),
        "{} is missing: `cargo xtask image` builds it",
        archive.display()
    );
    let dirs =
        DockerDirs(std::env::temp_dir().join(format!("netdrop-dkr-img-{}", std::process::id())));
    let mut lab = netdrop_tests::Lab::new("dimg");
    let (client, node) = netdrop_tests::drop_pair(&mut lab, 9999);
    let dockerd = start_dockerd(&lab, &node, &dirs);
    let load = dockerd
        .cli(&["load", "-i", archive.to_str().unwrap()])
        .unwrap();
    assert!(load.status.success(), "docker load: {load:?}");

    let m = from_manifest(&node, Path::new("/nonexistent"));
    let mut base: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        "--network=host".into(),
        format!("--memory={}", m.spec.memory_limit),
        "--env".into(),
        format!("NODE_NAME={node}"),
    ];
    if m.spec.readonly_rootfs {
        base.push("--read-only".into());
    }
    if m.spec.no_new_privs {
        base.push("--security-opt=no-new-privileges".into());
    }
    if m.spec.seccomp_unconfined {
        base.push("--security-opt=seccomp=unconfined".into());
    }
    if let Some(u) = m.spec.run_as_user {
        base.push(format!("--user={u}"));
    }
    for (container, host, ro) in &m.spec.mounts {
        if container == "/run/containerd" {
            continue;
        }
        base.push(format!(
            "--volume={host}:{container}{}",
            if *ro { ":ro" } else { "" }
        ));
    }
    for cap in &m.spec.cap_drop {
        base.push(format!("--cap-drop={cap}"));
    }
    let run = |caps: &[String]| {
        let mut args = base.clone();
        args.extend(caps.iter().map(|c| format!("--cap-add={c}")));
        args.push(m.spec.image.clone());
        args.extend(m.spec.args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dockerd.cli(&args).unwrap()
    };
    let mut out = run(&m.spec.cap_add);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let fallback = !out.status.success() && stderr.contains("CAP_BPF");
    if fallback {
        // Debian 12's dockerd: "unknown capability: CAP_BPF". The README's
        // fallback: SYS_ADMIN grants what BPF and PERFMON do.
        let caps: Vec<String> = m
            .spec
            .cap_add
            .iter()
            .filter(|c| !matches!(c.as_str(), "BPF" | "PERFMON"))
            .cloned()
            .chain(["SYS_ADMIN".to_owned()])
            .collect();
        eprintln!(
            "dockerd refused CAP_BPF ({}); running the README's fallback: {caps:?}",
            stderr.trim()
        );
        out = run(&caps);
    }
    assert!(out.status.success(), "docker run: {out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let logs = || {
        let o = dockerd.cli(&["logs", &id]).unwrap();
        let records: Vec<Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (records, String::from_utf8_lossy(&o.stderr).to_string())
    };
    let addr = format!("10.224.7.1:{}", m.port);
    let end = Instant::now() + Duration::from_secs(60);
    while status_at(&node, &addr, "/readyz") != Some(200) {
        assert!(Instant::now() < end, "not ready within 60 s: {}", logs().1);
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in &m.probes {
        assert_eq!(status_at(&node, &addr, path), Some(200), "{path}");
    }
    // Positive control: the rule's own counter.
    let rule = Some("-A INPUT -p udp -m udp --dport 9999 -j DROP");
    let before = rule_packets(&node, "filter", "INPUT", rule);
    traffic::send_udp(&client, "10.224.7.1:9999".parse().unwrap(), 4, 16).unwrap();
    let drop = wait(Duration::from_secs(30), "the drop in docker logs", || {
        logs()
            .0
            .into_iter()
            .find(|r| field(r, "kind") == "drop" && r["dport"] == 9999)
    });
    assert_eq!(rule_packets(&node, "filter", "INPUT", rule) - before, 4);
    assert_eq!(
        (field(&drop, "chain"), field(&drop, "node")),
        ("INPUT", node.as_str()),
        "{drop}"
    );
    let metrics = get_at(&node, &addr, "/metrics").unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("netdrop_drops_total{") && l.contains("chain=\"INPUT\"")),
        "{metrics}"
    );
    let pid: u32 = String::from_utf8_lossy(
        &dockerd
            .cli(&["inspect", "--format", "{{.State.Pid}}", &id])
            .unwrap()
            .stdout,
    )
    .trim()
    .parse()
    .unwrap();
    let held = held_programs(pid).unwrap();
    assert!(!held.is_empty(), "the container holds its programs");
    let stop = dockerd
        .cli(&["stop", "--time", &m.grace.to_string(), &id])
        .unwrap();
    assert!(stop.status.success(), "{stop:?}");
    wait_unloaded(&held, Duration::from_secs(20)).unwrap();
    let code = dockerd
        .cli(&["inspect", "--format", "{{.State.ExitCode}}", &id])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&code.stdout).trim(),
        "0",
        "SIGTERM is a clean stop: {}",
        logs().1
    );
    let _ = dockerd.cli(&["rm", &id]);
    std::mem::drop(dockerd);
}
