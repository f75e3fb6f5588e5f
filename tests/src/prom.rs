//! A real Prometheus server (Debian's `prometheus`) on 127.0.0.1 for tests,
//! and a minimal HTTP client for its API and netdrop's endpoints.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use serde_json::Value;

/// A Prometheus scraping given targets every second; killed and its data
/// directory removed when dropped.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    dir: PathBuf,
    /// The network namespace it runs in (its API is reached there).
    netns: Option<String>,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Plain HTTP/1.0 GET on loopback; `None` while the server is not up.
pub fn try_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

pub fn http_get(addr: &str, path: &str) -> String {
    try_get(addr, path).unwrap_or_else(|| panic!("GET http://{addr}{path} failed"))
}

/// HTTP status code of a GET, `None` while the server is not up.
pub fn status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_whitespace().nth(1)?.parse().ok()
}

/// Percent-encodes a URL query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` as job `netdrop` every second.
    pub fn start(targets: &[&str]) -> Self {
        Self::start_with_rules(targets, &[])
    }

    /// Like [`Prometheus::start`], evaluating the rule files `rules` every
    /// second (their alerts: [`Prometheus::alerts`]).
    pub fn start_with_rules(targets: &[&str], rules: &[&std::path::Path]) -> Self {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rule_files: Vec<String> = rules.iter().map(|r| format!("'{}'", r.display())).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{}]\nscrape_configs:\n  - job_name: netdrop\n    static_configs:\n      - targets: [{}]\n",
            rule_files.join(", "),
            targets.join(", ")
        );
        Self::start_config(&config, None, &[])
    }

    /// Prometheus with configuration `config` (YAML, or JSON, which YAML
    /// reads), with `files` (name, content) beside it (file-based
    /// discovery's targets), run in network namespace `netns` when given.
    pub fn start_config(config: &str, netns: Option<&str>, files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "netdrop-prom-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("creating Prometheus' directory");
        std::fs::write(dir.join("prometheus.yml"), config).expect("writing prometheus.yml");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("writing a file for Prometheus");
        }
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "prometheus"]);
                c
            }
            None => Command::new("prometheus"),
        };
        let child = cmd
            .current_dir(&dir)
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
        Self {
            child,
            addr,
            dir,
            netns: netns.map(str::to_owned),
        }
    }

    /// A GET of its API, in its namespace.
    fn get(&self, path: &str) -> Option<String> {
        match &self.netns {
            None => try_get(&self.addr, path),
            Some(ns) => {
                let (addr, path) = (self.addr.clone(), path.to_owned());
                netdrop::netns::Netns::named(ns)
                    .ok()?
                    .run_in(move || try_get(&addr, &path))
                    .ok()
                    .flatten()
            }
        }
    }

    /// The `data` of an API call, when its status is "success".
    pub fn api(&self, path: &str) -> Option<Value> {
        let body = self.get(path)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// Result of an instant query; `Err` carries Prometheus' error.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let body = self
            .get(&format!("/api/v1/query?query={}", urlencode(promql)))
            .ok_or("Prometheus is not answering")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts pending or firing now (`/api/v1/alerts`).
    pub fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")
            .and_then(|d| d["alerts"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The value of an instant query with one series, if any.
    pub fn value(&self, promql: &str) -> Option<f64> {
        self.query(promql).ok()?.first()?["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}
