//! A lab of network namespaces for the demo and the tests: real namespaces,
//! veth pairs, bridges and iptables rules, all removed when the [`Lab`] is
//! dropped (also when a test panics).
//!
//! Everything is built with the real `ip` and `iptables` binaries, the same
//! way an operator's node is.

pub mod cluster;
pub mod containerd;
pub mod traffic;

use std::{
    path::Path,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Owner of a set of namespaces with a unique name prefix.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

impl Lab {
    /// `tag` should be short: namespace names are
    /// `nd<tag>.<pid>x<n>-<name>` (the pid of the process that owns them).
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            prefix: format!("nd{tag}.{}x{n}", std::process::id()),
            namespaces: Vec::new(),
        }
    }

    /// Removes the namespaces of labs whose process is gone (a run killed
    /// before its cleanup), with the processes still running in them and
    /// what a node's containerd left (its mounts and files).
    /// Only this lab's own names are touched. Returns what it removed.
    pub fn sweep_leftovers() -> Vec<String> {
        let Ok(out) = run("ip", &["netns", "list"]) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for name in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
        {
            let Some(pid) = owner_pid(name) else { continue };
            if Path::new("/proc").join(pid.to_string()).exists() {
                continue;
            }
            if let Ok(pids) = run("ip", &["netns", "pids", name]) {
                for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    if let Ok(p) = p.parse::<i32>() {
                        // SAFETY: kill(2) on a pid found in the leftover namespace.
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                }
            }
            if run("ip", &["netns", "del", name]).is_ok() {
                // A node's containerd leaves mounts and files of its own.
                containerd::sweep(name);
                removed.push(name.to_owned());
            }
        }
        removed
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Creates namespace `<prefix>-<name>` with loopback up; returns its full name.
    pub fn netns(&mut self, name: &str) -> anyhow::Result<String> {
        let full = format!("{}-{name}", self.prefix);
        run("ip", &["netns", "add", &full])?;
        self.namespaces.push(full.clone());
        self.ip(&full, &["link", "set", "lo", "up"])?;
        Ok(full)
    }

    /// Names network namespace `netns` (a runtime's pod, say) `<prefix>-<name>`
    /// under /run/netns, as `ip netns add` would have made it; removed
    /// with the lab's own (the namespace itself is its owner's).
    pub fn adopt_netns(&mut self, name: &str, netns: &Path) -> anyhow::Result<String> {
        let full = format!("{}-{name}", self.prefix);
        let at = Path::new("/run/netns").join(&full);
        std::fs::File::create(&at).with_context(|| format!("creating {}", at.display()))?;
        let at_s = at.display().to_string();
        let netns_s = netns.display().to_string();
        if let Err(e) = run("mount", &["--bind", &netns_s, &at_s]) {
            let _ = std::fs::remove_file(&at);
            return Err(e);
        }
        self.namespaces.push(full.clone());
        Ok(full)
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, ns: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut v = vec!["-n", ns];
        v.extend_from_slice(args);
        run("ip", &v).map(drop)
    }

    /// Runs a program inside a namespace and returns its output (fails on a
    /// non-zero exit).
    pub fn exec(&self, ns: &str, argv: &[&str]) -> anyhow::Result<Output> {
        let mut v = vec!["netns", "exec", ns];
        v.extend_from_slice(argv);
        run("ip", &v)
    }

    /// Runs a program inside a namespace; returns its output whatever the exit.
    pub fn exec_any(&self, ns: &str, argv: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(argv);
        cmd.output()
            .with_context(|| format!("running {argv:?} in {ns}"))
    }

    /// `iptables ARGS...` inside a namespace (Debian's real binary).
    pub fn iptables(&self, ns: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut v = vec!["iptables", "-w"];
        v.extend_from_slice(args);
        self.exec(ns, &v).map(drop)
    }

    /// Several `iptables` commands in order (`-N`, `-A`, `-t nat -A`...).
    pub fn iptables_all(&self, ns: &str, commands: &[&[&str]]) -> anyhow::Result<()> {
        commands.iter().try_for_each(|args| self.iptables(ns, args))
    }

    /// `iptables-save` of a namespace without counters: what netdrop must
    /// never change.
    pub fn iptables_save(&self, ns: &str) -> anyhow::Result<String> {
        let out = self.exec(ns, &["iptables-save"])?;
        // Drop the "# Generated/Completed" lines (timestamps) and the chain
        // policy counters (traffic moves them; rules are what must not change).
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
                (true, Some(i)) => &l[..i],
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// A veth pair between two namespaces, with addresses (CIDR notation),
    /// both ends up.
    pub fn veth(
        &self,
        (ns_a, if_a, addr_a): (&str, &str, Option<&str>),
        (ns_b, if_b, addr_b): (&str, &str, Option<&str>),
    ) -> anyhow::Result<()> {
        // Create in the first namespace so no interface ever exists on the host.
        self.ip(
            ns_a,
            &[
                "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b,
            ],
        )?;
        for (ns, ifname, addr) in [(ns_a, if_a, addr_a), (ns_b, if_b, addr_b)] {
            if let Some(addr) = addr {
                self.ip(ns, &["addr", "add", addr, "dev", ifname])?;
            }
            self.ip(ns, &["link", "set", ifname, "up"])?;
        }
        Ok(())
    }

    /// A Linux bridge in `ns`, up, with `addr` (a node's `cni0`).
    pub fn bridge(&self, ns: &str, name: &str, addr: Option<&str>) -> anyhow::Result<()> {
        self.ip(ns, &["link", "add", name, "type", "bridge"])?;
        if let Some(addr) = addr {
            self.ip(ns, &["addr", "add", addr, "dev", name])?;
        }
        self.ip(ns, &["link", "set", name, "up"])
    }

    /// `flannel.1` in `ns` as flannel's VXLAN backend makes it: VNI 1, UDP
    /// 8472, no learning, over `eth0` from address `local`, up; `mac` when
    /// given (peers' FDB entries name it).
    pub fn flannel_vxlan(&self, ns: &str, local: &str, mac: Option<&str>) -> anyhow::Result<()> {
        let mut args = vec!["link", "add", "flannel.1"];
        if let Some(mac) = mac {
            args.extend(["address", mac]);
        }
        args.extend([
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            local,
            "dev",
            "eth0",
            "dstport",
            "8472",
            "nolearning",
        ]);
        self.ip(ns, &args)?;
        self.ip(ns, &["link", "set", "flannel.1", "up"])
    }

    /// A pod on a bridge: `pod`'s `eth0` (with `addr`) paired with `port`,
    /// a port of `bridge` in `node` (what the bridge CNI plugin builds).
    pub fn bridge_port(
        &self,
        (node, bridge, port): (&str, &str, &str),
        (pod, addr): (&str, &str),
    ) -> anyhow::Result<()> {
        self.veth((pod, "eth0", Some(addr)), (node, port, None))?;
        self.ip(node, &["link", "set", port, "master", bridge, "up"])
    }

    pub fn sysctl(&self, ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec(ns, &["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            // Daemons started in it (firewalld, dockerd) outlive `ip netns
            // del`: stopped first, politely, then not.
            stop_processes_in(&ns);
            // Deleting the namespace destroys its veths, bridges and rules.
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}

/// SIGTERM to every process in namespace `ns`, SIGKILL to those left after 5 s.
fn stop_processes_in(ns: &str) {
    let pids = || -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = pids();
    if first.is_empty() {
        return;
    }
    for p in &first {
        // SAFETY: kill(2) on a pid found in the lab's own namespace.
        unsafe { libc::kill(*p, libc::SIGTERM) };
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !pids().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for p in pids() {
        // SAFETY: as above.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}

/// The pid in a lab namespace's name (`nd<tag>.<pid>x<n>-<name>`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("nd")?;
    let (tag, rest) = rest.split_once('.')?;
    let (pid, rest) = rest.split_once('x')?;
    let (n, _) = rest.split_once('-')?;
    let ok = tag.chars().all(|c| c.is_ascii_alphanumeric()) && n.parse::<u32>().is_ok();
    ok.then(|| pid.parse().ok()).flatten()
}

/// Runs a command, failing with its stderr on a non-zero exit.
pub fn run(prog: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {prog} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_lab_names_have_an_owner() {
        assert_eq!(super::owner_pid("ndv6.4242x3-node1"), Some(4242));
        assert_eq!(super::owner_pid("ndchk.17x0-node"), Some(17));
        for other in [
            "nd4242x3-node",
            "myns",
            "ndv6.x3-a",
            "ndv6.12x-a",
            "nd.12x3",
        ] {
            assert_eq!(super::owner_pid(other), None, "{other}");
        }
    }
}
