//! A real Prometheus (Debian's) scrapes netdrop during scenario S1; its HTTP
//! API must show the drop with the right labels and exactly the packets the
//! scenario lost. `promtool check metrics` must find nothing wrong.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netdrop::lab::cluster::{Cluster, POD_CIDR, Scenario};
use netdrop_tests::{Watch, require_root, traffic};

struct Prometheus {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Plain HTTP GET on loopback (no client library needed for a test);
/// `None` while the server is not up.
fn try_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    use std::io::Write as _;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

fn http_get(addr: &str, path: &str) -> String {
    try_get(addr, path).unwrap_or_else(|| panic!("GET http://{addr}{path} failed"))
}

fn start_prometheus(target: &str) -> Prometheus {
    let dir = std::env::temp_dir().join(format!(
        "netdrop-prom-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: netdrop\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's prometheus (installed by cargo xtask setup)");
    Prometheus {
        child,
        addr,
        _dir: TempDir(dir),
    }
}

/// The value of a PromQL instant query with one series, if any.
fn query(prom: &str, promql: &str) -> Option<f64> {
    let q: String = promql
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let body = try_get(prom, &format!("/api/v1/query?query={q}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_sees_the_drop_with_labels_and_exact_count() {
    require_root();
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
    let prom = start_prometheus(&metrics_addr);
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
        seen = query(&prom.addr, &promql);
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
    assert_eq!(query(&prom.addr, &info), Some(1.0), "{info}");

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
