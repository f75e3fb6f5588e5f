//! The names `watch` asks for: the node's runtime first, then the
//! cluster's API ([`Names`]); the runtime through a thread of its own
//! ([`PodNames`]), since CRI calls block.

use std::{net::IpAddr, time::Duration};

use super::{PodIndex, PodLookup, PodRef, api::ClusterNames, containerd_events, cri::Cri};

/// The node's runtime first (it knows this node's pods first and needs no
/// credentials), then the cluster's API (pods on other nodes, Services).
pub struct Names {
    pub runtime: Option<PodNames>,
    pub cluster: Option<ClusterNames>,
}

impl PodLookup for Names {
    fn lookup(&self, ips: &[IpAddr]) -> Vec<Option<PodRef>> {
        let mut names = match &self.runtime {
            Some(r) => r.lookup(ips),
            None => vec![None; ips.len()],
        };
        if let Some(c) = &self.cluster {
            for (n, ip) in names.iter_mut().zip(ips) {
                if n.is_none() {
                    *n = c.pod(*ip);
                }
            }
        }
        names
    }

    fn service(&self, ip: IpAddr) -> Option<String> {
        let s = self.cluster.as_ref()?.service(ip)?;
        Some(format!("{}/{}", s.namespace, s.name))
    }
}

/// The node's pods by name for `watch`, from a thread that owns the CRI
/// client (its calls block; `watch` runs on an async runtime). The runtime
/// is asked only when a drop needs a name — never on a clock while nothing
/// drops — and again when its answer is older than [`PodNames::FRESH`], so
/// a new pod that got an old one's address is named within that.
pub struct PodNames {
    ask: std::sync::mpsc::Sender<Question>,
    /// The thread is stuck on a runtime that does not answer: drops are
    /// named by address until it is done, without waiting.
    busy: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Addresses to name, and where the names go.
type Question = (Vec<IpAddr>, std::sync::mpsc::Sender<Vec<Option<PodRef>>>);

impl PodNames {
    /// How long an answer of the runtime stands.
    pub const FRESH: Duration = Duration::from_secs(2);
    /// After the runtime could not be reached, how long before netdrop
    /// tries again (drops meanwhile are named by address).
    pub const RETRY: Duration = Duration::from_secs(10);

    /// How long a drop's record waits for its names before it goes out
    /// with addresses only (a runtime that hangs must not hold `watch`).
    pub const WAIT: Duration = Duration::from_millis(500);

    /// `sockets`: the runtimes' CRI sockets (an address is named by the
    /// first that has it); none: the node's is found ([`CRI_SOCKETS`](super::cri::CRI_SOCKETS)).
    /// What goes wrong is said once per runtime, as a warning.
    pub fn start(sockets: Vec<String>) -> Self {
        Self::start_with(sockets, Self::FRESH)
    }

    /// [`PodNames::start`], an answer standing for `fresh` when no events
    /// say otherwise (a test makes it long, so only events can rename).
    pub fn start_with(sockets: Vec<String>, fresh: Duration) -> Self {
        let (ask, asked) = std::sync::mpsc::channel::<Question>();
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = busy.clone();
        let sockets: Vec<Option<String>> = if sockets.is_empty() {
            vec![None]
        } else {
            sockets.into_iter().map(Some).collect()
        };
        let spawned = std::thread::Builder::new()
            .name("netdrop-cri".into())
            .spawn(move || {
                let mut runtimes: Vec<Runtime> = sockets
                    .into_iter()
                    .map(|socket| Runtime {
                        socket,
                        cri: None,
                        index: PodIndex::default(),
                        read_at: None,
                        failed_at: None,
                        said: None,
                        changes: None,
                    })
                    .collect();
                // Connected and read once at the start, so the first drop
                // does not wait for the connection.
                for r in &mut runtimes {
                    r.refresh();
                }
                for (ips, reply) in asked {
                    let miss = ips
                        .iter()
                        .any(|ip| runtimes.iter().all(|r| r.index.get(*ip).is_none()));
                    for r in &mut runtimes {
                        let old = r.read_at.is_none_or(|t| t.elapsed() > fresh);
                        // Followed by events: read again when a pod
                        // changed, else only for an address it does not
                        // know (a pod whose sandbox was not ready yet when
                        // it was last read), at most every FRESH.
                        let due = match &r.changes {
                            Some(c) if c.live.load(std::sync::atomic::Ordering::Relaxed) => {
                                c.dirty.swap(false, std::sync::atomic::Ordering::Relaxed)
                                    || (miss && old)
                            }
                            _ => old,
                        };
                        let waiting = r.failed_at.is_some_and(|t| t.elapsed() < Self::RETRY);
                        if due && !waiting {
                            r.refresh();
                        }
                    }
                    let names = ips
                        .iter()
                        .map(|ip| runtimes.iter().find_map(|r| r.index.get(*ip).cloned()))
                        .collect();
                    let _ = reply.send(names);
                    done.store(false, std::sync::atomic::Ordering::Relaxed);
                }
            });
        if let Err(e) = spawned {
            // `ask`'s receiver is gone with the closure: lookups answer None.
            log::warn!("cannot start the thread that names pods: {e}; pods named by address");
        }
        Self { ask, busy }
    }
}

/// The naming thread's hold on the runtime.
struct Runtime {
    socket: Option<String>,
    cri: Option<Cri>,
    index: PodIndex,
    read_at: Option<std::time::Instant>,
    failed_at: Option<std::time::Instant>,
    /// The last failure said (each is said once).
    said: Option<String>,
    /// containerd's events, once connected to one.
    changes: Option<std::sync::Arc<containerd_events::Changes>>,
}

impl Runtime {
    /// Reads the runtime's pods again (connecting first if need be).
    fn refresh(&mut self) {
        let read = match self.cri.as_mut() {
            Some(c) => c.pods(),
            None => match &self.socket {
                Some(p) => Cri::connect(p),
                None => Cri::find(),
            }
            .and_then(|mut c| {
                log::info!(
                    "pods named by the container runtime {} ({})",
                    c.runtime,
                    c.path
                );
                if self.changes.is_none() && c.runtime.starts_with("containerd ") {
                    self.changes = Some(containerd_events::follow(c.path.clone()));
                }
                let pods = c.pods();
                self.cri = Some(c);
                pods
            }),
        };
        match read {
            Ok(i) => {
                self.index = i;
                self.read_at = Some(std::time::Instant::now());
                self.failed_at = None;
                self.said = None;
            }
            Err(e) => {
                let e = e.to_string();
                if self.said.as_deref() != Some(e.as_str()) {
                    log::warn!("{e}: drops still counted and explained, pods named by address");
                    self.said = Some(e);
                }
                // Stale names are worse than none.
                self.index = PodIndex::default();
                self.cri = None;
                self.failed_at = Some(std::time::Instant::now());
            }
        }
    }
}

impl PodLookup for PodNames {
    fn lookup(&self, ips: &[IpAddr]) -> Vec<Option<PodRef>> {
        use std::sync::atomic::Ordering;
        let none = || vec![None; ips.len()];
        if self.busy.load(Ordering::Relaxed) {
            return none();
        }
        let (reply, answer) = std::sync::mpsc::channel();
        if self.ask.send((ips.to_vec(), reply)).is_err() {
            return none();
        }
        match answer.recv_timeout(Self::WAIT) {
            Ok(names) => names,
            Err(_) => {
                self.busy.store(true, Ordering::Relaxed);
                none()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime that takes connections and never answers holds no record
    /// back: names come back empty, and then without waiting at all.
    #[test]
    fn a_runtime_that_hangs_does_not_hold_watch() {
        let path =
            std::env::temp_dir().join(format!("netdrop-hung-cri-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in listener.incoming() {
                held.push(c);
            }
        });
        let names = PodNames::start(vec![path.display().to_string()]);
        let ip: IpAddr = "10.224.1.2".parse().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let first = names.lookup(&[ip]);
            let second = names.lookup(&[ip]);
            let _ = tx.send((first, second));
        });
        // Far beyond PodNames::WAIT twice; the runtime never answers.
        let (first, second) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("lookups returned while the runtime hangs");
        assert_eq!((first, second), (vec![None], vec![None]));
        let _ = std::fs::remove_file(&path);
    }
}
