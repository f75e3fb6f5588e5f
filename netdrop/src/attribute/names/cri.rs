//! The node's own container runtime over CRI (the socket a DaemonSet
//! mounts read-only; no Kubernetes credentials): each pod sandbox with its
//! addresses → namespace, name, uid, and the workload that owns it, told
//! by the labels its controller sets.

use std::{net::IpAddr, path::Path, time::Duration};

use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandboxState, PodSandboxStatusRequest, VersionRequest,
    runtime_service_client::RuntimeServiceClient,
};

use super::{PodIndex, PodRef, workload};

/// Where runtimes listen, in the order netdrop tries them.
pub const CRI_SOCKETS: [&str; 3] = [
    "/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/var/run/cri-dockerd.sock",
];

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
    /// The runtime's socket.
    pub path: String,
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
