//! Network namespaces by inode: the kernel reports a drop's namespace as the
//! inode number of its `net` ns; operators know them by name.

use std::{
    collections::HashMap,
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use netdrop_model::check::NodeFacts;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {0:?} does not exist (not in /run/netns)")]
    Unknown(String),
    #[error("cannot open {0}: {1}")]
    Open(PathBuf, std::io::Error),
    #[error("cannot enter network namespace {0}: {1}")]
    Enter(String, std::io::Error),
}

/// A namespace netdrop reports on, as a "node".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    /// Name as the operator gave it; `None` for the namespace netdrop runs in.
    pub name: Option<String>,
    /// How reports name this node (`--node-name`); else the netns name or
    /// the hostname.
    pub node_name: Option<String>,
    pub inode: u64,
    pub path: PathBuf,
}

impl Netns {
    /// The namespace netdrop itself runs in.
    pub fn own() -> Result<Self, NetnsError> {
        let path = PathBuf::from("/proc/self/ns/net");
        let inode = inode_of(&path)?;
        Ok(Self {
            name: None,
            // Read once: labels are built per drop site.
            node_name: Some(hostname()),
            inode,
            path,
        })
    }

    /// A named namespace that does not exist (yet): inode 0, which no
    /// namespace has. `watch` attaches to it once it appears.
    pub fn pending(name: &str) -> Self {
        Self {
            name: Some(name.to_owned()),
            node_name: None,
            inode: 0,
            path: Path::new("/run/netns").join(name),
        }
    }

    /// Whether the namespace existed when this was made (not [`pending`]).
    ///
    /// [`pending`]: Netns::pending
    pub fn exists(&self) -> bool {
        self.inode != 0
    }

    /// A namespace created with `ip netns add NAME`.
    pub fn named(name: &str) -> Result<Self, NetnsError> {
        if name.is_empty() || name.contains('/') {
            return Err(NetnsError::Unknown(name.to_owned()));
        }
        let path = Path::new("/run/netns").join(name);
        if !path.exists() {
            return Err(NetnsError::Unknown(name.to_owned()));
        }
        let inode = inode_of(&path)?;
        Ok(Self {
            name: Some(name.to_owned()),
            node_name: None,
            inode,
            path,
        })
    }

    /// Runs `f` on a thread that has entered this namespace (a scoped one:
    /// `f` may borrow).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        // netdrop's own namespace needs no setns (nor CAP_SYS_ADMIN, which
        // a DaemonSet does not grant).
        if self.name.is_none() {
            return Ok(f());
        }
        let file = File::open(&self.path).map_err(|e| NetnsError::Open(self.path.clone(), e))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a valid fd changes only this thread's namespace.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetnsError::Enter(
                        self.label(),
                        std::io::Error::last_os_error(),
                    ));
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetnsError::Enter(
                    self.label(),
                    std::io::Error::other("thread panicked"),
                ))
            })
        })
    }

    pub fn label(&self) -> String {
        self.node_name
            .clone()
            .or_else(|| self.name.clone())
            .unwrap_or_else(hostname)
    }

    /// Interface names by index, read inside the namespace.
    /// `net.ipv4.ip_forward` of the namespace.
    pub fn ip_forward(&self) -> Option<bool> {
        self.run_in(|| read_flag("/proc/sys/net/ipv4/ip_forward"))
            .ok()
            .flatten()
    }

    /// What `check` needs to know of the node beyond its rules: interfaces
    /// and forwarding sysctls (the one place they are read).
    pub fn facts(&self, split_backends: bool) -> Result<NodeFacts, NetnsError> {
        let interfaces: Vec<String> = self.interfaces()?.into_values().collect();
        let (ip_forward, bridge_nf_call_iptables) = self.run_in(|| {
            (
                read_flag("/proc/sys/net/ipv4/ip_forward"),
                // Missing file: br_netfilter is not loaded, bridged traffic skips iptables.
                Some(read_flag("/proc/sys/net/bridge/bridge-nf-call-iptables").unwrap_or(false)),
            )
        })?;
        let (underlay, routes) = self.routes();
        Ok(NodeFacts {
            interfaces: Some(interfaces),
            ip_forward,
            bridge_nf_call_iptables,
            split_backends,
            underlay,
            routes,
            addresses: self.addresses(),
        })
    }

    /// The namespace's own addresses with their prefix, by device (`ip -j
    /// addr`), loopback's and IPv6 link-local ones left out; empty when
    /// `ip` cannot say.
    fn addresses(&self) -> Vec<(ipnet::IpNet, String)> {
        let Some(serde_json::Value::Array(links)) =
            ip_json(self.name.as_deref(), &["addr", "show"])
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for link in &links {
            let Some(dev) = link["ifname"].as_str().filter(|d| *d != "lo") else {
                continue;
            };
            for a in link["addr_info"].as_array().into_iter().flatten() {
                let (Some(local), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64())
                else {
                    continue;
                };
                if a["scope"].as_str() == Some("link") {
                    continue;
                }
                if let Ok(net) = format!("{local}/{len}").parse::<ipnet::IpNet>() {
                    out.push((net, dev.to_owned()));
                }
            }
        }
        out
    }

    /// The first default route's device, and every other route's subnet
    /// with its device (`ip -j route`, IPv4 and IPv6); empty when `ip`
    /// cannot say.
    fn routes(&self) -> (Option<String>, Vec<(ipnet::IpNet, String)>) {
        let mut underlay = None;
        let mut routes = Vec::new();
        for family in ["-4", "-6"] {
            let Some(serde_json::Value::Array(list)) =
                ip_json(self.name.as_deref(), &[family, "route", "show"])
            else {
                continue;
            };
            for r in list {
                let (Some(dst), Some(dev)) = (r["dst"].as_str(), r["dev"].as_str()) else {
                    continue;
                };
                if dst == "default" {
                    underlay.get_or_insert_with(|| dev.to_owned());
                } else if let Ok(net) = dst.parse::<ipnet::IpNet>() {
                    routes.push((net, dev.to_owned()));
                }
            }
        }
        (underlay, routes)
    }

    pub fn interfaces(&self) -> Result<HashMap<u32, String>, NetnsError> {
        self.run_in(|| {
            let mut out = HashMap::new();
            // SAFETY: if_nameindex returns an array ended by a zero entry,
            // freed below with if_freenameindex.
            unsafe {
                let list = libc::if_nameindex();
                if list.is_null() {
                    return out;
                }
                let mut p = list;
                while (*p).if_index != 0 && !(*p).if_name.is_null() {
                    let name = std::ffi::CStr::from_ptr((*p).if_name);
                    out.insert((*p).if_index, name.to_string_lossy().into_owned());
                    p = p.add(1);
                }
                libc::if_freenameindex(list);
            }
            out
        })
    }
}

/// `ip [-n NS] -j ARGS...` parsed as JSON (None on any failure).
pub fn ip_json(netns: Option<&str>, args: &[&str]) -> Option<serde_json::Value> {
    let mut cmd = std::process::Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.arg("-j").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Whether netdrop runs in the host's own network namespace (init's).
pub fn in_host_netns() -> bool {
    let own = inode_of(Path::new("/proc/self/ns/net"));
    own.is_ok() && own.ok() == inode_of(Path::new("/proc/1/ns/net")).ok()
}

fn inode_of(path: &Path) -> Result<u64, NetnsError> {
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| NetnsError::Open(path.to_path_buf(), e))
}

/// A 0/1 sysctl.
fn read_flag(path: &str) -> Option<bool> {
    std::fs::read_to_string(path).ok().map(|s| s.trim() == "1")
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Changes to one namespace's links, addresses and routes, from rtnetlink's
/// multicast groups: a socket made inside the namespace hears only its
/// events, so `watch` learns of a recreated `flannel.1`, a new `cni0` or a
/// moved default route without polling `ip`. Reading never blocks.
pub struct RouteEvents {
    fd: std::os::fd::OwnedFd,
}

impl RouteEvents {
    /// Subscribes, in `netns`, to link, IPv4/IPv6 address and route events.
    pub fn open(netns: &Netns) -> Result<Self, NetnsError> {
        let label = netns.label();
        netns
            .run_in(|| {
                // SAFETY: a plain socket(2) call; the descriptor is owned below.
                let fd = unsafe {
                    libc::socket(
                        libc::AF_NETLINK,
                        libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        libc::NETLINK_ROUTE,
                    )
                };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: fd is a fresh descriptor nothing else owns.
                let fd =
                    unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                // SAFETY: sockaddr_nl is plain data; all-zero is valid.
                let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
                addr.nl_family = libc::AF_NETLINK as u16;
                addr.nl_groups = (libc::RTMGRP_LINK
                    | libc::RTMGRP_IPV4_IFADDR
                    | libc::RTMGRP_IPV4_ROUTE
                    | libc::RTMGRP_IPV6_IFADDR
                    | libc::RTMGRP_IPV6_ROUTE) as u32;
                // SAFETY: addr is a valid sockaddr_nl of the size given.
                let r = unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        (&raw const addr).cast(),
                        std::mem::size_of::<libc::sockaddr_nl>() as u32,
                    )
                };
                if r != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(Self { fd })
            })?
            .map_err(|e| NetnsError::Enter(label, e))
    }

    /// Whether anything changed since the last call: every queued event is
    /// read (and dropped). A socket that overflowed lost events: that is a
    /// change too.
    pub fn changed(&self) -> bool {
        let mut buf = [0u8; 8192];
        let mut changed = false;
        loop {
            // SAFETY: buf is valid for its length; MSG_DONTWAIT never blocks.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                changed = true;
                continue;
            }
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                changed = true;
                continue;
            }
            return changed;
        }
    }
}
