//! Pods by name, from the node's own container runtime over CRI (the
//! socket a DaemonSet mounts read-only; no Kubernetes credentials): each
//! pod sandbox with its addresses → namespace, name, uid, and the workload
//! that owns it, told by the labels its controller sets.

use std::{collections::HashMap, net::IpAddr, path::Path, time::Duration};

use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandboxState, PodSandboxStatusRequest, VersionRequest,
    runtime_service_client::RuntimeServiceClient,
};
use serde::Serialize;

/// Where runtimes listen, in the order netdrop tries them.
pub const CRI_SOCKETS: [&str; 3] = [
    "/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/var/run/cri-dockerd.sock",
];

/// A pod as the operator names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(skip)]
    pub uid: String,
    /// `deployment/web`, `statefulset/db`, `daemonset/agent`, `job/x`;
    /// `None` for a bare pod (or a controller netdrop does not know).
    pub workload: Option<String>,
}

/// The node's pods by address.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodIndex {
    by_ip: HashMap<IpAddr, PodRef>,
}

impl FromIterator<(IpAddr, PodRef)> for PodIndex {
    fn from_iter<T: IntoIterator<Item = (IpAddr, PodRef)>>(iter: T) -> Self {
        Self {
            by_ip: iter.into_iter().collect(),
        }
    }
}

impl PodIndex {
    pub fn get(&self, ip: IpAddr) -> Option<&PodRef> {
        self.by_ip.get(&ip)
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("no container runtime socket (tried {}; --cri-socket to name one)", CRI_SOCKETS.join(", "))]
    NoSocket,
    #[error("cannot reach the container runtime at {path}: {why}")]
    Connect { path: String, why: String },
    #[error("the container runtime at {path} refused {call}: {why}")]
    Call {
        path: String,
        call: &'static str,
        why: String,
    },
}

/// A gRPC channel to the CRI socket at `path`.
pub(crate) async fn channel(
    path: &str,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let socket = path.to_owned();
    // The URI is required and unused: the connector dials the socket.
    tonic::transport::Endpoint::from_static("http://cri.invalid")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let s = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
}

/// A CRI client on a runtime's socket. Its calls block (on a runtime of
/// their own): call them from a thread that is not async.
pub struct Cri {
    path: String,
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<tonic::transport::Channel>,
    /// `containerd 1.6.20`.
    pub runtime: String,
}

impl Cri {
    /// The first socket of [`CRI_SOCKETS`] that exists.
    pub fn find() -> Result<Self, CriError> {
        let path = CRI_SOCKETS
            .iter()
            .find(|p| Path::new(p).exists())
            .ok_or(CriError::NoSocket)?;
        Self::connect(path)
    }

    pub fn connect(path: &str) -> Result<Self, CriError> {
        let connect_err = |why: String| CriError::Connect {
            path: path.to_owned(),
            why,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| connect_err(e.to_string()))?;
        let channel = rt
            .block_on(channel(path))
            .map_err(|e| connect_err(format!("{e:?}")))?;
        let mut client = RuntimeServiceClient::new(channel);
        let version = rt
            .block_on(client.version(VersionRequest {
                version: "v1".into(),
            }))
            .map_err(|e| CriError::Call {
                path: path.to_owned(),
                call: "Version",
                why: e.message().to_owned(),
            })?
            .into_inner();
        Ok(Self {
            path: path.to_owned(),
            runtime: format!("{} {}", version.runtime_name, version.runtime_version),
            rt,
            client,
        })
    }

    /// Every ready pod sandbox with its addresses. A connection the
    /// runtime dropped (it restarted) is made again, once.
    pub fn pods(&mut self) -> Result<PodIndex, CriError> {
        match self.read_pods() {
            Err(CriError::Call { .. }) => {
                *self = Self::connect(&self.path)?;
                self.read_pods()
            }
            r => r,
        }
    }

    fn read_pods(&mut self) -> Result<PodIndex, CriError> {
        let call_err = |call, e: tonic::Status| CriError::Call {
            path: self.path.clone(),
            call,
            why: e.message().to_owned(),
        };
        let list = self
            .rt
            .block_on(
                self.client
                    .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
            )
            .map_err(|e| call_err("ListPodSandbox", e))?
            .into_inner();
        let mut index = PodIndex::default();
        for sandbox in list.items {
            if sandbox.state != PodSandboxState::SandboxReady as i32 {
                continue;
            }
            let Some(meta) = sandbox.metadata else {
                continue;
            };
            let status =
                match self
                    .rt
                    .block_on(self.client.pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: sandbox.id.clone(),
                        verbose: false,
                    })) {
                    Ok(s) => s.into_inner(),
                    // Gone between the list and the status: not a pod any more.
                    Err(e) if e.code() == tonic::Code::NotFound => continue,
                    Err(e) => return Err(call_err("PodSandboxStatus", e)),
                };
            let pod = PodRef {
                workload: workload(&meta.name, &sandbox.labels),
                namespace: meta.namespace,
                name: meta.name,
                uid: meta.uid,
            };
            let network = status.status.and_then(|s| s.network);
            let ips = network
                .iter()
                .flat_map(|n| {
                    std::iter::once(n.ip.as_str())
                        .chain(n.additional_ips.iter().map(|a| a.ip.as_str()))
                })
                .filter_map(|ip| ip.parse::<IpAddr>().ok());
            for ip in ips {
                index.by_ip.insert(ip, pod.clone());
            }
        }
        Ok(index)
    }
}

/// Names the pods at addresses (the drop pipeline asks; tests give it a
/// fixed index).
pub trait PodLookup: Send {
    /// The pods at `ips`, in order (`None`: no pod known there).
    fn lookup(&self, ips: &[IpAddr]) -> Vec<Option<PodRef>>;

    /// The Service whose cluster IP `ip` is (`namespace/name`).
    fn service(&self, _ip: IpAddr) -> Option<String> {
        None
    }
}

/// The node's runtime first (it knows this node's pods first and needs no
/// credentials), then the cluster's API (pods on other nodes, Services).
pub struct Names {
    pub runtime: Option<PodNames>,
    pub cluster: Option<super::api::ClusterNames>,
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

impl PodLookup for PodIndex {
    fn lookup(&self, ips: &[IpAddr]) -> Vec<Option<PodRef>> {
        ips.iter().map(|ip| self.get(*ip).cloned()).collect()
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
    /// first that has it); none: the node's is found ([`CRI_SOCKETS`]).
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
    changes: Option<std::sync::Arc<super::containerd_events::Changes>>,
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
                    self.changes = Some(super::containerd_events::follow(c.path.clone()));
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

/// The workload that owns pod `name`, from the labels its controller puts
/// on it (the runtime holds the pod's labels, not its owner references).
pub fn workload(name: &str, labels: &HashMap<String, String>) -> Option<String> {
    let label = |k: &str| labels.get(k).map(String::as_str);
    // `web-7d4b9c8f6d-x2x7q`: Deployment `web`, ReplicaSet `web-7d4b9c8f6d`.
    if let Some(hash) = label("pod-template-hash") {
        let rs = name.rsplit_once('-').map_or(name, |(rs, _)| rs);
        return Some(match rs.strip_suffix(&format!("-{hash}")) {
            Some(deployment) => format!("deployment/{deployment}"),
            None => format!("replicaset/{rs}"),
        });
    }
    if let Some(job) = label("batch.kubernetes.io/job-name").or(label("job-name")) {
        return Some(format!("job/{job}"));
    }
    if label("controller-revision-hash").is_some() {
        // `db-0` of StatefulSet `db`; `agent-x7k2p` of DaemonSet `agent`.
        let (base, tail) = name.rsplit_once('-')?;
        let kind = if label("statefulset.kubernetes.io/pod-name").is_some()
            || tail.chars().all(|c| c.is_ascii_digit())
        {
            "statefulset"
        } else {
            "daemonset"
        };
        return Some(format!("{kind}/{base}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

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

    #[test]
    fn workloads_from_their_controllers_labels() {
        let w = |name, kv: &[(&str, &str)]| workload(name, &labels(kv));
        assert_eq!(
            w(
                "web-7d4b9c8f6d-x2x7q",
                &[("pod-template-hash", "7d4b9c8f6d")]
            )
            .as_deref(),
            Some("deployment/web")
        );
        assert_eq!(
            w(
                "db-0",
                &[
                    ("controller-revision-hash", "db-5c9"),
                    ("statefulset.kubernetes.io/pod-name", "db-0")
                ]
            )
            .as_deref(),
            Some("statefulset/db")
        );
        assert_eq!(
            w(
                "kube-flannel-ds-x7k2p",
                &[
                    ("controller-revision-hash", "6b9"),
                    ("pod-template-generation", "1")
                ]
            )
            .as_deref(),
            Some("daemonset/kube-flannel-ds")
        );
        assert_eq!(
            w(
                "backup-28112-abcde",
                &[("batch.kubernetes.io/job-name", "backup-28112")]
            )
            .as_deref(),
            Some("job/backup-28112")
        );
        assert_eq!(w("static-web", &[("app", "web")]), None);
    }
}
