//! A real Prometheus (Debian's) scrapes netdrop during scenario S1; its HTTP
//! API must show the drop with the right labels and exactly the packets the
//! scenario lost. `promtool check metrics` must find nothing wrong.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netdrop::lab::cluster::{Cluster, POD_CIDR, Scenario};
use netdrop_tests::{
    Watch,
    prom::{Prometheus, free_port, http_get},
    require_root, traffic,
};

#[test]
fn prometheus_sees_the_drop_with_labels_and_exact_count() {
    require_root!();
    let c = Cluster::build("pr", Scenario::S1).unwrap();
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let w = Watch::start(&[
        "--netns",
        &c.node1,
        "--netns",
        &c.node2,
        "--pod-cidr",
        POD_CIDR,
        "--metrics-addr",
        &metrics_addr,
    ])
    .unwrap();
    let prom = Prometheus::start(&[&metrics_addr]);
    const LOST: u64 = 11;
    let dst: SocketAddr = "10.224.2.2:9000".parse().unwrap();
    traffic::send_udp(&c.pod1, dst, LOST, 64).unwrap();

    let promql = format!(
        "sum(netdrop_drops_total{{node=\"{}\",reason=\"NETFILTER_DROP\",hook=\"FORWARD\",table=\"filter\",chain=\"FORWARD\",verdict=\"DROP\",owner=\"docker\"}})",
        c.node2
    );
    // Prometheus scrapes every second; its first scrape lands a few seconds in.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = prom.value(&promql);
        if seen == Some(LOST as f64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(seen, Some(LOST as f64), "{promql}");
    // The explanation is in Prometheus too (info metric), with the fix.
    let info = format!(
        "count(netdrop_drop_site_info{{node=\"{}\",chain=\"FORWARD\",owner=\"docker\",fix=~\".*DOCKER-USER.*\"}})",
        c.node2
    );
    assert_eq!(prom.value(&info), Some(1.0), "{info}");

    // /explanations carries the same answer as JSON.
    let ex: serde_json::Value =
        serde_json::from_str(&http_get(&metrics_addr, "/explanations")).unwrap();
    assert!(
        ex.as_array()
            .unwrap()
            .iter()
            .any(|r| r["node"] == c.node2.as_str()
                && r["owner"] == "docker"
                && r["policy"] == true),
        "{ex}"
    );

    // promtool reads the classic format: the only complaint allowed is the
    // "no help text" it gives every OpenMetrics counter's _total series.
    let metrics = http_get(&metrics_addr, "/metrics");
    assert!(metrics.contains("# TYPE netdrop_drops counter"));
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        p.stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
    }
    let out = p.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.ends_with("_total no help text"))
        .collect();
    assert!(problems.is_empty(), "promtool: {problems:#?}");
    drop(w);
}

/// `/healthz` answers as soon as the process does; `/readyz` says
/// "starting" (503) until the kernel programs are attached, then "ready".
/// A node with a 10k-Service ruleset makes the start slow enough to see:
/// its rules are read before the programs attach.
#[test]
fn readyz_is_503_until_attached_and_healthz_answers_throughout() {
    require_root!();
    let mut lab = netdrop_tests::Lab::new("rdy");
    let node = lab.netns("node").unwrap();
    let rules = netdrop_model::generate::kube_proxy_ruleset(10_000, 3);
    let mut restore = Command::new("ip")
        .args(["netns", "exec", &node, "iptables-restore"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    restore
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(restore.wait().unwrap().success());

    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(netdrop_tests::netdrop_bin())
        .args(["watch", "--netns", &node, "--pod-cidr", POD_CIDR])
        .args(["--metrics-addr", &addr, "--duration", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = |path: &str| netdrop_tests::prom::status(&addr, path);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(ready) = status("/readyz") {
            let healthy = status("/healthz");
            if seen.last() != Some(&(ready, healthy)) {
                seen.push((ready, healthy));
            }
            if ready == 200 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen,
        [(503, Some(200)), (200, Some(200))],
        "readyz/healthz as the watch started"
    );
}

/// `GET path` at `addr` from inside namespace `ns`: (status, body).
fn get_in(ns: &str, addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let addr: SocketAddr = addr.parse()?;
    let mut s = netdrop::netns::Netns::named(ns)?
        .run_in(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)))??;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in {resp:?}"))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// As the DaemonSet deploys it (`--metrics-addr 0.0.0.0:9595` on the node's
/// own network), `/explanations` — pods, addresses, rules and the commands
/// that open them — answers clients on the node only: another host gets
/// 403 and nothing of it, while `/metrics`, `/healthz` and `/readyz`
/// answer it. Positive control: the node itself reads the drop there.
#[test]
fn explanations_answer_the_node_itself_only() {
    require_root!();
    let mut lab = netdrop_tests::Lab::new("exp");
    let (peer, node) = netdrop_tests::peer_and_node(&mut lab);
    lab.iptables(
        &node,
        &["-A", "INPUT", "-p", "udp", "--dport", "9000", "-j", "DROP"],
    )
    .unwrap();
    let w = Watch::start_via(
        &["ip", "netns", "exec", &node],
        &["--all", "--no-observers", "--metrics-addr", "0.0.0.0:9595"],
    )
    .unwrap();
    traffic::send_udp(&peer, "192.0.2.1:9000".parse().unwrap(), 2, 20).unwrap();
    let on_node = || get_in(&node, "127.0.0.1:9595", "/explanations").unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !on_node().1.contains("192.0.2.2") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, body) = on_node();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("192.0.2.2") && body.contains("--dport 9000"),
        "{body}"
    );

    let (status, body) = get_in(&peer, "192.0.2.1:9595", "/explanations").unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        !body.contains("192.0.2.2") && !body.contains("9000"),
        "nothing of it: {body}"
    );
    assert!(body.contains("clients on the node itself only"), "{body}");
    for path in ["/metrics", "/healthz", "/readyz"] {
        let (status, body) = get_in(&peer, "192.0.2.1:9595", path).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
    }
    w.stop().unwrap();
}
