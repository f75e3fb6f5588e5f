//! Helpers for netdrop's privileged tests: run the real `netdrop` binary,
//! read its JSON records, and clean up whatever happens.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

pub mod docker;
pub mod kube_api;
pub mod manifest;
pub mod prom;

pub use netdrop::lab::{Lab, traffic};

/// The `netdrop` binary built next to this test (`target/<profile>/netdrop`).
pub fn netdrop_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETDROP_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug/netdrop
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("netdrop"))
        .expect("target directory")
}

/// `netdrop check --netns NS --pod-cidr 10.224.0.0/16 --output json EXTRA`:
/// its exit code, its findings (every line must be JSON) and its output.
pub fn check_json(ns: &str, extra: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let out = Command::new(netdrop_bin())
        .args([
            "check",
            "--netns",
            ns,
            "--pod-cidr",
            "10.224.0.0/16",
            "--output",
            "json",
        ])
        .args(extra)
        .output()
        .expect("netdrop runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let findings = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (out.status.code(), findings, text)
}

/// The kernel's own packet counter of a rule (its text as iptables-save
/// prints it, `-A CHAIN ...`) or, for `None`, of the chain's policy, in
/// `table` of namespace `ns`: read with `iptables-save -c`, the operator's
/// tool, not through netdrop.
pub fn rule_packets(ns: &str, table: &str, chain: &str, rule: Option<&str>) -> u64 {
    rule_packets_of("iptables-save", ns, table, chain, rule)
}

/// [`rule_packets`] as `save` (`iptables-legacy-save`, ...) reads them.
pub fn rule_packets_of(save: &str, ns: &str, table: &str, chain: &str, rule: Option<&str>) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, save, "-c", "-t", table])
        .output()
        .expect("iptables-save runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let packets = |counter: &str| -> u64 {
        counter
            .trim_start_matches('[')
            .split(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad counter {counter:?}"))
    };
    let found = text.lines().find_map(|l| match rule {
        // `:FORWARD DROP [7:420]`
        None => {
            let rest = l
                .strip_prefix(':')?
                .strip_prefix(chain)?
                .strip_prefix(' ')?;
            Some(packets(rest.rsplit_once(' ')?.1))
        }
        // `[7:420] -A FORWARD -j REJECT ...`
        Some(rule) => {
            let (counter, text) = l.split_once("] ")?;
            (text == rule).then(|| packets(counter))
        }
    });
    found.unwrap_or_else(|| panic!("no {table}/{chain} {rule:?} in {ns}:\n{text}"))
}

/// Two namespaces joined by a veth (client 10.224.7.2, server 10.224.7.1,
/// both on eth0); the server drops UDP to `port` in INPUT.
pub fn drop_pair(lab: &mut Lab, port: u16) -> (String, String) {
    let client = lab.netns("cli").unwrap();
    let server = lab.netns("srv").unwrap();
    lab.veth(
        (&client, "eth0", Some("10.224.7.2/24")),
        (&server, "eth0", Some("10.224.7.1/24")),
    )
    .unwrap();
    let port = port.to_string();
    lab.iptables(
        &server,
        &["-A", "INPUT", "-p", "udp", "--dport", &port, "-j", "DROP"],
    )
    .unwrap();
    (client, server)
}

/// The memory of a process's cgroup, bytes: `(limit, peak, times the
/// limit was hit)` — cgroup v1's memory controller (this machine's hybrid
/// hierarchy) or v2's `memory.max`/`memory.peak`/`memory.events`.
pub fn cgroup_memory(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let v1 = cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path.to_owned())
    });
    // A number from a cgroup file; v2's `max` (no limit) is u64::MAX.
    let num = |p: String| -> anyhow::Result<u64> {
        let text = std::fs::read_to_string(&p).with_context(|| p.clone())?;
        match text.trim() {
            "max" => Ok(u64::MAX),
            n => n.parse().with_context(|| format!("{p}: {n:?}")),
        }
    };
    Ok(match v1 {
        Some(path) => {
            let d = format!("/sys/fs/cgroup/memory{path}");
            (
                num(format!("{d}/memory.limit_in_bytes"))?,
                num(format!("{d}/memory.max_usage_in_bytes"))?,
                num(format!("{d}/memory.failcnt"))?,
            )
        }
        None => {
            let path = cgroup
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .context("no cgroup path")?;
            let d = format!("/sys/fs/cgroup{path}");
            let events = format!("{d}/memory.events");
            let max_hits = std::fs::read_to_string(&events)
                .with_context(|| events.clone())?
                .lines()
                .find_map(|l| l.strip_prefix("max "))
                .with_context(|| format!("{events}: no `max` line"))?
                .trim()
                .parse()
                .with_context(|| format!("{events}: `max`"))?;
            (
                num(format!("{d}/memory.max"))?,
                num(format!("{d}/memory.peak"))?,
                max_hits,
            )
        }
    })
}

/// `netdrop ARGS` (the binary under test), its output.
pub fn netdrop(args: &[&str]) -> std::process::Output {
    Command::new(netdrop_bin()).args(args).output().unwrap()
}

/// One ping from namespace `ns` to `dst` (1 s): answered or not.
pub fn ping(ns: &str, dst: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", dst])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A file or directory under the temp dir (`netdrop-NAME-PID`), removed on
/// drop, even when a test fails.
pub struct TempPath(pub PathBuf);

impl TempPath {
    pub fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("netdrop-{name}-{}", std::process::id())))
    }

    /// A file holding `text`.
    pub fn file(name: &str, text: &str) -> Self {
        let t = Self::new(name);
        std::fs::write(&t.0, text).unwrap();
        t
    }

    /// A file holding `bytes`.
    pub fn bytes(name: &str, bytes: &[u8]) -> Self {
        let t = Self::new(name);
        std::fs::write(&t.0, bytes).unwrap();
        t
    }

    /// A directory, empty.
    pub fn dir(name: &str) -> Self {
        let t = Self::new(name);
        std::fs::create_dir_all(&t.0).unwrap();
        t
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The commands of a printed fix, as an operator would paste them, in
/// order: each backticked command (those joined by `&&` or `;` one by one)
/// that runs iptables or ip6tables — not the persistence advice
/// (`netfilter-persistent save`, `service iptables save`) nor `systemctl`.
pub fn fix_commands(fix: &str) -> Vec<String> {
    fix.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|code| code.split("&&").flat_map(|c| c.split(';')))
        .map(str::trim)
        .filter(|c| c.starts_with("iptables") || c.starts_with("ip6tables"))
        .filter(|c| !c.starts_with("iptables save"))
        .map(str::to_owned)
        .collect()
}

/// Runs `commands` in namespace `ns` with `sh -c`, as pasted; fails on the
/// first that fails.
pub fn run_in(ns: &str, commands: &[String]) {
    for c in commands {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", c])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{c}` in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A UDP socket bound inside namespace `ns`: what the receiving end got,
/// an oracle that is not netdrop's (a fix works when the packets arrive).
pub struct UdpSink(std::net::UdpSocket);

impl UdpSink {
    pub fn bind(ns: &str, addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let sock = netdrop::netns::Netns::named(ns)?
            .run_in(|| std::net::UdpSocket::bind(addr))?
            .with_context(|| format!("binding {addr} in {ns}"))?;
        Ok(Self(sock))
    }

    /// Datagrams received, waiting up to `within` for `want` of them.
    pub fn received(&self, want: u64, within: Duration) -> anyhow::Result<u64> {
        let end = Instant::now() + within;
        let mut got = 0;
        let mut buf = [0u8; 2048];
        while got < want {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.0.set_read_timeout(Some(left))?;
            match self.0.recv(&mut buf) {
                Ok(_) => got += 1,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(got)
    }
}

/// A node namespace and a peer node on the underlay, joined by a veth
/// (peer 192.0.2.2, node 192.0.2.1, both on eth0): (peer, node).
pub fn peer_and_node(lab: &mut Lab) -> (String, String) {
    let peer = lab.netns("peer").unwrap();
    let node = lab.netns("node").unwrap();
    lab.veth(
        (&peer, "eth0", Some("192.0.2.2/24")),
        (&node, "eth0", Some("192.0.2.1/24")),
    )
    .unwrap();
    (peer, node)
}

/// client (10.224.9.2, pod side) — router — server (203.0.113.2), with
/// forwarding on the router.
pub struct Routed {
    pub lab: Lab,
    pub client: String,
    pub router: String,
    pub server: String,
}

pub fn routed() -> Routed {
    let mut lab = Lab::new("hk");
    let client = lab.netns("c").unwrap();
    let router = lab.netns("r").unwrap();
    let server = lab.netns("s").unwrap();
    lab.veth(
        (&client, "eth0", Some("10.224.9.2/24")),
        (&router, "cni0", Some("10.224.9.1/24")),
    )
    .unwrap();
    lab.veth(
        (&router, "eth1", Some("203.0.113.1/24")),
        (&server, "eth0", Some("203.0.113.2/24")),
    )
    .unwrap();
    lab.ip(&client, &["route", "add", "default", "via", "10.224.9.1"])
        .unwrap();
    lab.ip(
        &server,
        &["route", "add", "10.224.0.0/16", "via", "203.0.113.1"],
    )
    .unwrap();
    lab.sysctl(&router, "net.ipv4.ip_forward", "1").unwrap();
    Routed {
        lab,
        client,
        router,
        server,
    }
}

/// A running `netdrop watch --output json`; killed when dropped. Every
/// stdout line must be a JSON record: a line that is not is kept as an
/// error and fails [`Watch::stop`] (and `records` of a test that reads on).
pub struct Watch {
    child: Child,
    records: Arc<Mutex<Vec<Value>>>,
    /// stdout lines that were not JSON records.
    bad_lines: Arc<Mutex<Vec<String>>>,
    /// Every stdout line, as printed (text output reads these).
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Watch {
    /// Starts `netdrop watch --output json ARGS...` and waits until its
    /// programs are attached.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        Self::start_via(&[], args)
    }

    /// Like [`Watch::start`], run through a wrapper command (e.g. `ip netns
    /// exec NS setpriv ...`) that ends with the program to run.
    pub fn start_via(wrapper: &[&str], args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(wrapper, &[], args, true)
    }

    /// Like [`Watch::start`], with environment variables set.
    pub fn start_env(env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(&[], env, args, true)
    }

    /// `netdrop watch ARGS...` with its readable text output: read it with
    /// [`Watch::lines`] and [`Watch::stop_text`].
    pub fn start_text(args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(&[], &[], args, false)
    }

    fn spawn(
        wrapper: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
        json: bool,
    ) -> anyhow::Result<Self> {
        let bin = netdrop_bin();
        let mut cmd = match wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("watch");
        if json {
            cmd.args(["--output", "json"]);
        }
        // Any free port unless the test picks one: tests run one at a time,
        // but a netdrop of the user's may hold the default.
        if !args.contains(&"--metrics-addr") {
            cmd.args(["--metrics-addr", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .envs(env.iter().copied())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting netdrop watch (built? cargo build -p netdrop)")?;
        let records = Arc::new(Mutex::new(Vec::new()));
        let bad_lines = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        let stdout_reader = {
            let (records, bad_lines, lines) = (records.clone(), bad_lines.clone(), lines.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    if let Ok(l) = &line {
                        lines.lock().unwrap().push(l.clone());
                        if !json {
                            continue;
                        }
                    }
                    match line.map(|l| (serde_json::from_str::<Value>(&l), l)) {
                        Ok((Ok(v), _)) if v.is_object() => records.lock().unwrap().push(v),
                        Ok((_, l)) => bad_lines.lock().unwrap().push(l),
                        Err(e) => bad_lines.lock().unwrap().push(format!("unreadable: {e}")),
                    }
                }
            })
        };
        let stderr_reader = {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = stderr.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            })
        };
        let mut w = Self {
            child,
            records,
            bad_lines,
            lines,
            stderr,
            readers: vec![stdout_reader, stderr_reader],
        };
        w.wait_for(Duration::from_secs(30), |w| w.stderr().contains("watching"))
            .context("netdrop watch did not start")?;
        Ok(w)
    }

    /// The address the metrics server listens on (from netdrop's banner).
    pub fn metrics_addr(&self) -> Option<String> {
        let e = self.stderr();
        let rest = e.split("http://").nth(1)?;
        Some(rest.split('/').next()?.to_owned())
    }

    /// The value of the first series of metric `name` (a counter's
    /// `..._total` included) whose labels include every `key="value"` of
    /// `labels`, from this watch's `/metrics`; `None` when no such series
    /// is there. A `/metrics` that does not answer fails the test: an
    /// absent series must not be read off a dead server.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let addr = self
            .metrics_addr()
            .unwrap_or_else(|| panic!("netdrop named no metrics address: {}", self.stderr()));
        let metrics = prom::try_get(&addr, "/metrics")
            .unwrap_or_else(|| panic!("GET http://{addr}/metrics failed: {}", self.stderr()));
        metrics
            .lines()
            .find(|l| {
                l.strip_prefix(name).is_some_and(|rest| {
                    rest.starts_with('{') || labels.is_empty() && rest.starts_with(' ')
                }) && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })?
            .rsplit(' ')
            .next()?
            .parse::<f64>()
            .ok()
            .map(|v| v as u64)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Every stdout line so far, as printed.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The records so far; panics (failing the test) if netdrop printed a
    /// line that is not a JSON record.
    pub fn records(&self) -> Vec<Value> {
        let bad = self.bad_lines.lock().unwrap();
        assert!(
            bad.is_empty(),
            "netdrop printed lines that are not JSON records: {bad:#?}"
        );
        self.records.lock().unwrap().clone()
    }

    /// Polls `cond` until it holds or `deadline` passes; fails with stderr
    /// if netdrop exited.
    pub fn wait_for(
        &mut self,
        deadline: Duration,
        cond: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if cond(self) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                // Let the reader threads catch up before reporting.
                std::thread::sleep(Duration::from_millis(100));
                if cond(self) {
                    return Ok(());
                }
                bail!("netdrop exited ({status}): {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("timed out; netdrop stderr: {}", self.stderr())
    }

    /// Sends SIGINT (Ctrl-C) and waits up to `within` for netdrop to exit;
    /// an error (after a SIGKILL) when it does not.
    pub fn interrupt(mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        bail!(
            "netdrop still ran {within:?} after SIGINT: {}",
            self.stderr()
        )
    }

    /// Like [`Watch::stop`], for a watch started with
    /// [`Watch::start_text`]: every stdout line, as printed.
    pub fn stop_text(self) -> anyhow::Result<Vec<String>> {
        let lines = self.lines.clone();
        self.stop()?;
        Ok(lines.lock().unwrap().clone())
    }

    /// Stops netdrop with SIGTERM (its final report is flushed), waits,
    /// and reads its output to the end: every line, or an error.
    pub fn stop(self) -> anyhow::Result<Vec<Value>> {
        Ok(self.stop_with_stderr()?.0)
    }

    /// [`Watch::stop`], with everything netdrop said on stderr, its last
    /// lines included (the closing status line).
    pub fn stop_with_stderr(mut self) -> anyhow::Result<(Vec<Value>, String)> {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        for r in self.readers.drain(..) {
            if r.join().is_err() {
                bail!("a reader of netdrop's output panicked");
            }
        }
        if !status.success() {
            bail!("netdrop exited with {status}: {}", self.stderr());
        }
        let bad = self.bad_lines.lock().unwrap().clone();
        if !bad.is_empty() {
            bail!("netdrop printed lines that are not JSON records: {bad:#?}");
        }
        Ok((self.records.lock().unwrap().clone(), self.stderr()))
    }

    /// Runs `send` (traffic after a fix, say), gives netdrop 2 s to see
    /// what it does, and stops it: how many packets the drop records
    /// matching `pred` gained meanwhile, and every record.
    pub fn stop_after(
        self,
        pred: impl Fn(&Value) -> bool,
        send: impl FnOnce(),
    ) -> anyhow::Result<(u64, Vec<Value>)> {
        let before = total_packets(&self.records(), &pred);
        send();
        std::thread::sleep(Duration::from_secs(2));
        let records = self.stop()?;
        Ok((total_packets(&records, &pred) - before, records))
    }

    /// A memory figure of netdrop from `/proc/PID/status`, in KiB
    /// (`VmRSS:` resident now, `VmHWM:` its peak).
    pub fn memory_kib(&self, field: &str) -> Option<u64> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The programs this netdrop has attached through links, by name
    /// (see [`linked_programs`]).
    pub fn linked(&self) -> anyhow::Result<Vec<String>> {
        Ok(linked_programs(self.pid())?
            .into_iter()
            .map(|(_, name)| name)
            .collect())
    }

    /// The programs this netdrop holds, by id (see [`held_programs`]).
    pub fn held(&self) -> anyhow::Result<Vec<u64>> {
        held_programs(self.pid())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Field `f` of a record as a string ("" when absent or null).
pub fn field<'a>(r: &'a Value, f: &str) -> &'a str {
    r.get(f).and_then(Value::as_str).unwrap_or("")
}

/// Total packets of the drop records matching `pred`: records carry
/// cumulative counts per drop site, so the last record of each site counts.
pub fn total_packets(records: &[Value], pred: impl Fn(&Value) -> bool) -> u64 {
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for r in records
        .iter()
        .filter(|r| field(r, "kind") == "drop" && pred(r))
    {
        // A site is where and by what its packets died; its records carry
        // cumulative counts and the flow (and words) of its latest sample.
        let site: Vec<String> = [
            "node",
            "kind",
            "hook",
            "reason",
            "location",
            "table",
            "chain",
            "rule",
            "rule_no",
            "policy",
            "verdict",
            "in_iface",
            "out_iface",
            "bridged",
            "vxlan",
            "proto",
        ]
        .iter()
        .map(|k| r.get(*k).map(Value::to_string).unwrap_or_default())
        .collect();
        last.insert(site.join("|"), r["packets"].as_u64().unwrap_or(0));
    }
    last.values().sum()
}

/// Watches with `args`, runs `send`, waits until `count` drops matching
/// `pred` are reported, checks that exactly `count` were (after a moment
/// for strays), and returns the last matching record.
pub fn last_drop(
    args: &[&str],
    send: impl FnOnce(),
    pred: impl Fn(&Value) -> bool,
    count: u64,
) -> Value {
    let mut w = Watch::start(args).unwrap();
    send();
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), &pred) >= count
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let recs = w.stop().unwrap();
    assert_eq!(total_packets(&recs, &pred), count, "{recs:#?}");
    recs.into_iter().rev().find(|r| pred(r)).unwrap()
}

/// The BPF programs process `pid` has descriptors of, by the kernel's own
/// record (`/proc/PID/fdinfo`): `(program id, through a link)` — a
/// `bpf-prog` descriptor names its `prog_id`, a `bpf_link` its `link_id`
/// and the `prog_id` it holds. A descriptor closed while they are read is
/// gone, not an error.
fn fd_programs(pid: u32) -> anyhow::Result<Vec<(u64, bool)>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(info) = std::fs::read_to_string(e?.path()) else {
            continue;
        };
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix("prog_id:")) {
            let link = info.lines().any(|l| l.starts_with("link_id:"));
            out.push((id.trim().parse::<u64>()?, link));
        }
    }
    Ok(out)
}

/// The programs process `pid` holds, by id: loaded or attached through a
/// link.
pub fn held_programs(pid: u32) -> anyhow::Result<Vec<u64>> {
    let mut ids: Vec<u64> = fd_programs(pid)?.into_iter().map(|(id, _)| id).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Waits up to `within` for programs `ids` to be unloaded (nothing left
/// attached keeps them); an error naming those still loaded, or when
/// bpftool cannot say.
pub fn wait_unloaded(ids: &[u64], within: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + within;
    loop {
        let left = still_loaded(ids)?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("programs {left:?} still loaded after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The BPF programs process `pid` has attached through a link (see
/// [`fd_programs`]), with their names from `bpftool`:
/// `(program id, name)`. Only what that process attached counts — another
/// netdrop on the machine (a user's, a demo) does not. An error when /proc
/// or bpftool cannot say, never an empty answer.
pub fn linked_programs(pid: u32) -> anyhow::Result<Vec<(u64, String)>> {
    let ids: Vec<u64> = fd_programs(pid)?
        .into_iter()
        .filter_map(|(id, link)| link.then_some(id))
        .collect();
    let names = programs()?;
    ids.iter()
        .map(|id| {
            names
                .iter()
                .find(|(i, _)| i == id)
                .cloned()
                .with_context(|| format!("program {id} is linked and bpftool does not list it"))
        })
        .collect()
}

/// Every loaded BPF program, `(id, name)`, as `bpftool` lists them; an
/// error when it cannot.
pub fn programs() -> anyhow::Result<Vec<(u64, String)>> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("bpftool (installed by cargo xtask setup)")?;
    if !out.status.success() {
        bail!(
            "bpftool prog show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list: Value = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    let list = list.as_array().context("bpftool listed no array")?;
    Ok(list
        .iter()
        .filter_map(|p| {
            Some((
                p["id"].as_u64()?,
                p["name"].as_str().unwrap_or("").to_owned(),
            ))
        })
        .collect())
}

/// Of the programs `ids`, those still loaded (a link left behind keeps
/// its program loaded); an error when bpftool cannot say.
pub fn still_loaded(ids: &[u64]) -> anyhow::Result<Vec<u64>> {
    Ok(programs()?
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| ids.contains(id))
        .collect())
}

/// Whether a privileged test may run. As root: yes. Otherwise the test
/// is skipped (a plain `cargo test` as a normal user passes, and the build
/// says once how to run these), unless `NETDROP_PRIVILEGED` is set, as
/// `cargo xtask test` sets it: then it fails loudly rather than pass
/// vacuously.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root || std::env::var_os("NETDROP_PRIVILEGED").is_none(),
        "privileged test: run as root (sudo -E cargo xtask test)"
    );
    if root {
        // Once per test binary: what an earlier run killed mid-test left
        // behind (its namespaces and the processes in them) goes first.
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| {
            let gone = Lab::sweep_leftovers();
            if !gone.is_empty() {
                eprintln!("swept namespaces an earlier run left behind: {gone:?}");
            }
        });
    }
    root
}

/// Returns from a privileged test early unless it may run ([`privileged`]).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::privileged() {
            eprintln!("skipped: privileged test, run it as root with `sudo -E cargo xtask test`");
            return;
        }
    };
}
