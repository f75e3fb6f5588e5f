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
        Ok(NodeFacts {
            interfaces: Some(interfaces),
            ip_forward,
            bridge_nf_call_iptables,
            split_backends,
        })
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
