//! A two-node flannel cluster in network namespaces, for the demo and the
//! end-to-end tests. Its pods are real: each node runs Debian's containerd
//! with its CRI plugin, and the pods are sandboxes it makes, wired by the
//! CNI `bridge` (on `cni0`) and `host-local` plugins as flannel's CNI
//! configuration has them — the path a real node's pods take.
//!
//! ```text
//!   pod1 10.224.1.2  pod1b 10.224.1.3          pod2 10.224.2.2
//!   client-0         web-…-k2x4p               web-…-q8z7m
//!        \ cni0 10.224.1.1 /                        | cni0 10.224.2.1
//!        node1 ── flannel.1 (VXLAN 1, UDP 8472) ── node2
//!          eth0 192.0.2.1 ─── switch (br0) ─── eth0 192.0.2.2
//!                               │
//!                    internet 192.0.2.254, 203.0.113.10
//! ```
//!
//! Each node gets kube-proxy-shaped rules (a Service `default/web` with two
//! endpoints), flannel's and Docker's rules, installed with the real
//! `iptables-restore`; a [`Scenario`] breaks them the way the seeds did.

use std::net::{SocketAddr, TcpListener};

use anyhow::Context as _;

use super::{
    Lab,
    containerd::{Containerd, PodSpec},
};
use crate::netns::Netns;

pub const POD_CIDR: &str = "10.224.0.0/16";
pub const SERVICE_IP: &str = "10.96.0.10";
pub const INTERNET_HOST: &str = "203.0.113.10";

/// How the cluster is broken (see shared/SCENARIOS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Everything works.
    Healthy,
    /// S0: leftover Calico chains on node2 still drop forwarded traffic.
    S0,
    /// S1: node2's FORWARD policy DROP (Docker), flannel accepts the wrong CIDR.
    S1,
    /// S2: node2's FORWARD ends in the distribution's REJECT before flannel's accept.
    S2,
    /// S3: node2's INPUT rejects everything but ssh/icmp: VXLAN and kubelet die.
    S3,
    /// S4: node1 masquerades 10.244.0.0/16 but pods live in 10.224.0.0/16.
    S4,
}

pub struct Cluster {
    /// Each node's container runtime (stopped before the lab's namespaces
    /// go: see `Drop`).
    pub runtimes: Vec<Containerd>,
    pub lab: Lab,
    pub node1: String,
    pub node2: String,
    pub pod1: String,
    pub pod1b: String,
    pub pod2: String,
    pub internet: String,
    pub switch: String,
}

struct NodeSpec {
    n: u8,
    underlay: &'static str,
    mac: &'static str,
}

const NODES: [NodeSpec; 2] = [
    NodeSpec {
        n: 1,
        underlay: "192.0.2.1",
        mac: "0e:6e:64:00:00:01",
    },
    NodeSpec {
        n: 2,
        underlay: "192.0.2.2",
        mac: "0e:6e:64:00:00:02",
    },
];

/// A pod of the cluster.
pub struct LabPod {
    /// Index of its node in [`NODES`].
    pub node: usize,
    /// Its field in [`Cluster`] (`pod1`, `pod1b`, `pod2`).
    pub role: &'static str,
    /// The address host-local gives it.
    pub ip: &'static str,
    pub name: &'static str,
    /// The labels its controller sets.
    pub labels: &'static [(&'static str, &'static str)],
}

/// The cluster's pods (all in namespace `default`). The Service
/// `default/web`'s endpoints are Deployment `web`'s two replicas, one on
/// each node; StatefulSet `client`'s pod sits beside the first.
pub const PODS: [LabPod; 3] = [
    LabPod {
        node: 0,
        role: "pod1",
        ip: "10.224.1.2",
        name: "client-0",
        labels: &[
            ("app", "client"),
            ("controller-revision-hash", "client-7f9d6c5b8"),
            ("statefulset.kubernetes.io/pod-name", "client-0"),
        ],
    },
    LabPod {
        node: 0,
        role: "pod1b",
        ip: "10.224.1.3",
        name: "web-5c6f8d7b9-k2x4p",
        labels: &[("app", "web"), ("pod-template-hash", "5c6f8d7b9")],
    },
    LabPod {
        node: 1,
        role: "pod2",
        ip: "10.224.2.2",
        name: "web-5c6f8d7b9-q8z7m",
        labels: &[("app", "web"), ("pod-template-hash", "5c6f8d7b9")],
    },
];

impl Drop for Cluster {
    /// The runtimes stop their pods first (before the lab deletes the
    /// namespaces), the last started first.
    fn drop(&mut self) {
        while let Some(r) = self.runtimes.pop() {
            drop(r);
        }
    }
}

impl Cluster {
    pub fn build(tag: &str, scenario: Scenario) -> anyhow::Result<Self> {
        let mut lab = Lab::new(tag);
        let switch = lab.netns("sw")?;
        let internet = lab.netns("inet")?;
        let node1 = lab.netns("node1")?;
        let node2 = lab.netns("node2")?;
        let mut c = Self {
            runtimes: Vec::new(),
            lab,
            node1,
            node2,
            pod1: String::new(),
            pod1b: String::new(),
            pod2: String::new(),
            internet,
            switch,
        };
        c.wire().context("wiring the cluster")?;
        c.run_pods().context("running the cluster's pods")?;
        for (i, spec) in NODES.iter().enumerate() {
            let node = c.node(i);
            let rules = node_rules(spec.n, scenario);
            let mut child = std::process::Command::new("ip")
                .args(["netns", "exec", node, "iptables-restore"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .context("running iptables-restore")?;
            use std::io::Write as _;
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(rules.as_bytes())?;
            anyhow::ensure!(child.wait()?.success(), "iptables-restore failed on {node}");
        }
        Ok(c)
    }

    fn node(&self, i: usize) -> &str {
        if i == 0 { &self.node1 } else { &self.node2 }
    }

    fn wire(&self) -> anyhow::Result<()> {
        let l = &self.lab;
        l.ip(&self.switch, &["link", "add", "br0", "type", "bridge"])?;
        l.ip(&self.switch, &["link", "set", "br0", "up"])?;
        for (ns, port, addr) in [
            (&self.node1, "n1", "192.0.2.1/24"),
            (&self.node2, "n2", "192.0.2.2/24"),
            (&self.internet, "inet", "192.0.2.254/24"),
        ] {
            l.veth((&self.switch, port, None), (ns, "eth0", Some(addr)))?;
            l.ip(&self.switch, &["link", "set", port, "master", "br0"])?;
        }
        l.ip(
            &self.internet,
            &["addr", "add", &format!("{INTERNET_HOST}/32"), "dev", "lo"],
        )?;
        for (i, spec) in NODES.iter().enumerate() {
            let node = self.node(i);
            let n = spec.n;
            l.sysctl(node, "net.ipv4.ip_forward", "1")?;
            l.ip(node, &["route", "add", "default", "via", "192.0.2.254"])?;
            // Docker beside Kubernetes, as on the seeds' nodes.
            l.ip(node, &["link", "add", "docker0", "type", "bridge"])?;
            l.ip(node, &["addr", "add", "172.17.0.1/16", "dev", "docker0"])?;
            l.ip(node, &["link", "add", "cni0", "type", "bridge"])?;
            l.ip(
                node,
                &["addr", "add", &format!("10.224.{n}.1/24"), "dev", "cni0"],
            )?;
            l.ip(node, &["link", "set", "cni0", "up"])?;
            l.flannel_vxlan(node, spec.underlay, Some(spec.mac))?;
            l.ip(
                node,
                &[
                    "addr",
                    "add",
                    &format!("10.224.{n}.0/32"),
                    "dev",
                    "flannel.1",
                ],
            )?;
            let peer = &NODES[1 - i];
            let pn = peer.n;
            l.ip(
                node,
                &[
                    "route",
                    "add",
                    &format!("10.224.{pn}.0/24"),
                    "via",
                    &format!("10.224.{pn}.0"),
                    "dev",
                    "flannel.1",
                    "onlink",
                ],
            )?;
            l.ip(
                node,
                &[
                    "neigh",
                    "add",
                    &format!("10.224.{pn}.0"),
                    "lladdr",
                    peer.mac,
                    "dev",
                    "flannel.1",
                    "nud",
                    "permanent",
                ],
            )?;
            l.exec(
                node,
                &[
                    "bridge",
                    "fdb",
                    "append",
                    peer.mac,
                    "dev",
                    "flannel.1",
                    "dst",
                    peer.underlay,
                ],
            )?;
        }
        Ok(())
    }

    /// Starts containerd on each node and runs the [`PODS`] as kubelet
    /// would, with the labels their controllers set. host-local gives them
    /// the first addresses of their node's subnet in this order; each
    /// pod's namespace gets a lab name.
    fn run_pods(&mut self) -> anyhow::Result<()> {
        for (i, spec) in NODES.iter().enumerate() {
            let subnet = format!("10.224.{}.0/24", spec.n);
            let node = self.node(i).to_owned();
            self.runtimes.push(
                Containerd::start(&node, &subnet)
                    .with_context(|| format!("starting containerd on {node}"))?,
            );
        }
        for p in &PODS {
            let pod = self.runtimes[p.node].run_pod(&PodSpec {
                namespace: "default",
                name: p.name,
                labels: p.labels,
            })?;
            anyhow::ensure!(
                pod.ip == p.ip,
                "pod {} got {} from host-local, not {}",
                p.name,
                pod.ip,
                p.ip
            );
            let ns = self.lab.adopt_netns(p.role, &pod.netns)?;
            match p.role {
                "pod1" => self.pod1 = ns,
                "pod1b" => self.pod1b = ns,
                _ => self.pod2 = ns,
            }
        }
        Ok(())
    }

    /// Every namespace with its role, for printing.
    pub fn describe(&self) -> String {
        format!(
            "node1={} node2={} pod1={} (default/{} 10.224.1.2) pod1b={} (default/{} 10.224.1.3) pod2={} (default/{} 10.224.2.2) internet={} ({INTERNET_HOST})",
            self.node1,
            self.node2,
            self.pod1,
            PODS[0].name,
            self.pod1b,
            PODS[1].name,
            self.pod2,
            PODS[2].name,
            self.internet
        )
    }

    /// A TCP server in a pod that accepts (and closes) connections until
    /// the cluster is gone.
    pub fn serve_tcp(&self, pod: &str, port: u16) -> anyhow::Result<()> {
        let ns = Netns::named(pod)?;
        let listener =
            ns.run_in(move || TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))))??;
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        });
        Ok(())
    }

    /// Rules of both nodes without counters: what netdrop must never change.
    pub fn rules_snapshot(&self) -> anyhow::Result<(String, String)> {
        Ok((
            self.lab.iptables_save(&self.node1)?,
            self.lab.iptables_save(&self.node2)?,
        ))
    }
}

/// The iptables-restore input of node `n` in `scenario`.
pub fn node_rules(n: u8, scenario: Scenario) -> String {
    let broken = n == 2;
    // S4: flannel configured with 10.244.0.0/16 while kubeadm gave the
    // nodes 10.224.x.0/24 (seed 004).
    let flannel_net = if scenario == Scenario::S4 && n == 1 {
        "10.244.0.0/16"
    } else {
        POD_CIDR
    };
    let node_subnet = format!("10.224.{n}.0/24");
    let s1 = scenario == Scenario::S1 && broken;
    let mut filter = String::from("*filter\n");
    let policy = if scenario == Scenario::S4 {
        "ACCEPT"
    } else {
        "DROP"
    };
    filter.push_str(&format!(
        ":INPUT ACCEPT [0:0]\n:FORWARD {policy} [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    ));
    for c in [
        "DOCKER",
        "DOCKER-ISOLATION-STAGE-1",
        "DOCKER-ISOLATION-STAGE-2",
        "DOCKER-USER",
        "FLANNEL-FWD",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FIREWALL",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-SERVICES",
    ] {
        filter.push_str(&format!(":{c} - [0:0]\n"));
    }
    if scenario == Scenario::S0 && broken {
        for c in [
            "cali-FORWARD",
            "cali-INPUT",
            "cali-from-hep-forward",
            "cali-to-hep-forward",
        ] {
            filter.push_str(&format!(":{c} - [0:0]\n"));
        }
        filter.push_str("-A INPUT -m comment --comment \"cali:Cz_u1IQiXIMmKD4c\" -j cali-INPUT\n");
        filter.push_str(
            "-A FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD\n",
        );
        filter.push_str("-A cali-FORWARD -m comment --comment \"cali:vjrMJCRpqwy5oRoX\" -j cali-from-hep-forward\n");
        filter.push_str("-A cali-FORWARD -m comment --comment \"cali:A_sPAO0mcxbT9mOV\" -j cali-to-hep-forward\n");
        filter.push_str("-A cali-to-hep-forward -m comment --comment \"cali:Drop if no policies passed packet\" -j DROP\n");
        filter.push_str("-A cali-INPUT -p udp -m comment --comment \"cali:rzbYtuuRqRY1LyHL\" -m udp --dport 4789 -j DROP\n");
    }
    if scenario == Scenario::S3 && broken {
        // The CentOS iptables-services defaults (seed 003).
        filter.push_str("-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n");
        filter.push_str("-A INPUT -p icmp -j ACCEPT\n");
        filter.push_str("-A INPUT -i lo -j ACCEPT\n");
        filter.push_str("-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT\n");
    }
    filter.push_str("-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n");
    filter.push_str("-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n");
    filter.push_str("-A INPUT -j KUBE-FIREWALL\n");
    if scenario == Scenario::S3 && broken {
        filter.push_str("-A INPUT -j REJECT --reject-with icmp-host-prohibited\n");
    }
    filter.push_str(
        "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n",
    );
    filter.push_str("-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    filter.push_str("-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n");
    filter.push_str("-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n");
    filter.push_str("-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A FORWARD -o docker0 -j DOCKER\n");
    filter.push_str("-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n-A FORWARD -i docker0 -o docker0 -j ACCEPT\n");
    if scenario == Scenario::S2 && broken {
        filter.push_str("-A FORWARD -j REJECT --reject-with icmp-host-prohibited\n");
    }
    if s1 {
        // Seed 001: flannel's accepts for 10.244.0.0/16, the pods in 10.224.
        filter.push_str(
            "-A FORWARD -s 10.244.0.0/16 -j ACCEPT\n-A FORWARD -d 10.244.0.0/16 -j ACCEPT\n",
        );
    } else {
        filter.push_str("-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n");
    }
    filter.push_str("-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A OUTPUT -j KUBE-FIREWALL\n");
    filter.push_str("-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2\n-A DOCKER-ISOLATION-STAGE-1 -j RETURN\n");
    filter.push_str("-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP\n-A DOCKER-ISOLATION-STAGE-2 -j RETURN\n-A DOCKER-USER -j RETURN\n");
    filter.push_str(&format!("-A FLANNEL-FWD -s {flannel_net} -m comment --comment \"flanneld forward\" -j ACCEPT\n-A FLANNEL-FWD -d {flannel_net} -m comment --comment \"flanneld forward\" -j ACCEPT\n"));
    filter.push_str("-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n");
    filter.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    filter.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n");
    filter.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    filter.push_str("COMMIT\n");

    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
    );
    for c in [
        "DOCKER",
        "FLANNEL-POSTRTG",
        "KUBE-MARK-MASQ",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-SEP-6E7XQMQ4RAYOWTTM",
        "KUBE-SEP-ZXMNUKOKXUTL2MK2",
        "KUBE-SERVICES",
        "KUBE-SVC-LOLE4ISW44XBNF3G",
    ] {
        nat.push_str(&format!(":{c} - [0:0]\n"));
    }
    nat.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    nat.push_str("-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n");
    nat.push_str(
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    nat.push_str("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
    nat.push_str("-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n");
    nat.push_str("-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n");
    let flannel_subnet = if flannel_net == POD_CIDR {
        node_subnet.clone()
    } else {
        format!("10.244.{}.0/24", n - 1)
    };
    nat.push_str("-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN\n");
    nat.push_str(&format!("-A FLANNEL-POSTRTG -s {flannel_subnet} -d {flannel_net} -m comment --comment \"flanneld masq\" -j RETURN\n"));
    nat.push_str(&format!("-A FLANNEL-POSTRTG -s {flannel_net} -d {flannel_subnet} -m comment --comment \"flanneld masq\" -j RETURN\n"));
    nat.push_str(&format!("-A FLANNEL-POSTRTG ! -s {flannel_net} -d {flannel_subnet} -m comment --comment \"flanneld masq\" -j RETURN\n"));
    nat.push_str(&format!("-A FLANNEL-POSTRTG -s {flannel_net} ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully\n"));
    nat.push_str(&format!("-A FLANNEL-POSTRTG ! -s {flannel_net} -d {flannel_net} -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully\n"));
    nat.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
    nat.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    nat.push_str("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n");
    nat.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    nat.push_str(&format!("-A KUBE-SERVICES -d {SERVICE_IP}/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-LOLE4ISW44XBNF3G\n"));
    nat.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
    nat.push_str(&format!("-A KUBE-SVC-LOLE4ISW44XBNF3G ! -s {POD_CIDR} -d {SERVICE_IP}/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ\n"));
    nat.push_str("-A KUBE-SVC-LOLE4ISW44XBNF3G -m comment --comment \"default/web:http -> 10.224.1.3:80\" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-6E7XQMQ4RAYOWTTM\n");
    nat.push_str("-A KUBE-SVC-LOLE4ISW44XBNF3G -m comment --comment \"default/web:http -> 10.224.2.2:80\" -j KUBE-SEP-ZXMNUKOKXUTL2MK2\n");
    nat.push_str("-A KUBE-SEP-6E7XQMQ4RAYOWTTM -s 10.224.1.3/32 -m comment --comment \"default/web:http\" -j KUBE-MARK-MASQ\n");
    nat.push_str("-A KUBE-SEP-6E7XQMQ4RAYOWTTM -p tcp -m comment --comment \"default/web:http\" -m tcp -j DNAT --to-destination 10.224.1.3:80\n");
    nat.push_str("-A KUBE-SEP-ZXMNUKOKXUTL2MK2 -s 10.224.2.2/32 -m comment --comment \"default/web:http\" -j KUBE-MARK-MASQ\n");
    nat.push_str("-A KUBE-SEP-ZXMNUKOKXUTL2MK2 -p tcp -m comment --comment \"default/web:http\" -m tcp -j DNAT --to-destination 10.224.2.2:80\n");
    nat.push_str("COMMIT\n");
    filter + &nat
}
