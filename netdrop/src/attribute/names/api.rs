//! Cluster-wide names, from the Kubernetes API (`--kubernetes`): a watch on
//! pods and Services, so the far end of a flow (a pod on another node) and
//! a ClusterIP are named too. The node's own runtime ([`super::cri`])
//! stays the first source: it needs no credentials and knows this node's
//! pods first.
//!
//! Memory stays bounded: of each object only what names it is kept (its
//! namespace, name and workload by address), never the object. The watch
//! resumes from its resource version when its stream ends, and lists again
//! only when the API server says that version is gone.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock},
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Api, Client, Resource as _,
    runtime::{WatchStreamExt as _, watcher},
};

use super::PodRef;

/// Where `--kubernetes auto` finds the API: `--kubeconfig`, else the
/// in-cluster service account (a DaemonSet with the RBAC enabled).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("reading kubeconfig {path}: {why}")]
    Kubeconfig { path: String, why: String },
    #[error("the Kubernetes API client: {0}")]
    Client(String),
}

/// A Service by its namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

/// The cluster's pods and Services by address, as the watch has them.
#[derive(Debug, Default)]
pub struct ClusterIndex {
    pods: Keyed<PodRef>,
    services: Keyed<ServiceRef>,
}

/// Values by address, with each object's addresses (an update or delete
/// takes back exactly what the object held).
#[derive(Debug)]
struct Keyed<V> {
    by_ip: HashMap<IpAddr, V>,
    of: HashMap<(String, String), Vec<IpAddr>>,
    /// Objects listed since the watch (re)started, swapped in when the
    /// list is done: a relist never leaves a half index.
    staged: Option<Box<Keyed<V>>>,
    /// The watch has listed once (until then a miss means nothing).
    listed: bool,
}

impl<V> Default for Keyed<V> {
    fn default() -> Self {
        Self {
            by_ip: HashMap::new(),
            of: HashMap::new(),
            staged: None,
            listed: false,
        }
    }
}

impl<V: Clone> Keyed<V> {
    fn apply(&mut self, key: (String, String), ips: Vec<IpAddr>, v: Option<V>) {
        self.delete(&key);
        if let Some(v) = v
            && !ips.is_empty()
        {
            for ip in &ips {
                self.by_ip.insert(*ip, v.clone());
            }
            self.of.insert(key, ips);
        }
    }

    fn delete(&mut self, key: &(String, String)) {
        if let Some(ips) = self.of.remove(key) {
            for ip in ips {
                self.by_ip.remove(&ip);
            }
        }
    }

    fn event(&mut self, e: Change<V>) {
        match e {
            Change::Apply(k, ips, v) => match &mut self.staged {
                Some(s) => s.apply(k, ips, v),
                None => self.apply(k, ips, v),
            },
            Change::Delete(k) => self.delete(&k),
            Change::Init => self.staged = Some(Box::default()),
            Change::InitDone => {
                if let Some(s) = self.staged.take() {
                    self.by_ip = s.by_ip;
                    self.of = s.of;
                }
                self.listed = true;
            }
        }
    }
}

/// An object's key (namespace, name), its addresses, and what they name
/// (`None`: nothing, though the object is there).
pub type Entry<V> = ((String, String), Vec<IpAddr>, Option<V>);

/// One watch event, reduced to what names.
enum Change<V> {
    Apply((String, String), Vec<IpAddr>, Option<V>),
    Delete((String, String)),
    Init,
    InitDone,
}

impl ClusterIndex {
    pub fn pod(&self, ip: IpAddr) -> Option<&PodRef> {
        self.pods.by_ip.get(&ip)
    }

    pub fn service(&self, ip: IpAddr) -> Option<&ServiceRef> {
        self.services.by_ip.get(&ip)
    }

    pub fn pods_len(&self) -> usize {
        self.pods.by_ip.len()
    }
}

/// What names a pod: its addresses and who it is. Pods on the host's
/// network (the node's address, not theirs) and pods that are done (their
/// address goes to the next pod) name nothing.
pub fn pod_entry(p: &Pod) -> Entry<PodRef> {
    let meta = p.meta();
    let key = (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    let host_network = p
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let status = p.status.as_ref();
    let done = status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
    if host_network || done {
        return (key, Vec::new(), None);
    }
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|x| x.ip.parse().ok())
        .collect();
    if let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|x| x.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let owner = meta
        .owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|r| r.controller == Some(true)));
    let labels = meta.labels.clone().unwrap_or_default();
    let workload = owner.map(|o| owner_workload(&o.kind, &o.name, &labels));
    let pod = PodRef {
        namespace: key.0.clone(),
        name: key.1.clone(),
        uid: meta.uid.clone().unwrap_or_default(),
        workload,
    };
    (key, ips, Some(pod))
}

/// The workload a controller reference names: a ReplicaSet made by a
/// Deployment (its name is the Deployment's plus the pod template's hash)
/// is named by its Deployment.
pub fn owner_workload(
    kind: &str,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> String {
    if kind == "ReplicaSet"
        && let Some(hash) = labels.get("pod-template-hash")
        && let Some(deployment) = name.strip_suffix(&format!("-{hash}"))
    {
        return format!("deployment/{deployment}");
    }
    format!("{}/{name}", kind.to_lowercase())
}

/// What names a Service: its cluster IPs (none for a headless one).
pub fn service_entry(s: &Service) -> Entry<ServiceRef> {
    let meta = s.meta();
    let key = (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    let spec = s.spec.as_ref();
    let mut ips: Vec<IpAddr> = spec
        .and_then(|s| s.cluster_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|x| x.parse().ok())
        .collect();
    if let Some(ip) = spec
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|x| x.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let svc = ServiceRef {
        namespace: key.0.clone(),
        name: key.1.clone(),
    };
    (key, ips, Some(svc))
}

/// The cluster's names, kept current by two watches running on the
/// caller's tokio runtime.
#[derive(Clone)]
pub struct ClusterNames {
    index: Arc<RwLock<ClusterIndex>>,
}

impl ClusterNames {
    /// A client from `kubeconfig`, else the in-cluster service account;
    /// `Ok(None)` when neither is there (`--kubernetes auto` on a node
    /// without them: the runtime names this node's pods alone).
    pub async fn client(kubeconfig: Option<&str>) -> Result<Option<Client>, ApiError> {
        let config = match kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    ApiError::Kubeconfig {
                        path: path.into(),
                        why: e.to_string(),
                    }
                })?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| ApiError::Kubeconfig {
                        path: path.into(),
                        why: e.to_string(),
                    })?
            }
            None => match kube::Config::incluster() {
                Ok(c) => c,
                Err(_) => return Ok(None),
            },
        };
        Client::try_from(config)
            .map(Some)
            .map_err(|e| ApiError::Client(e.to_string()))
    }

    /// Starts the watches (on the current tokio runtime). Failures are
    /// said once each, as warnings, and retried with the watcher's backoff.
    pub fn start(client: Client) -> Self {
        let index = Arc::new(RwLock::new(ClusterIndex::default()));
        let pods = follow(
            Api::<Pod>::all(client.clone()),
            "pods",
            index.clone(),
            |i| &mut i.pods,
            pod_entry,
        );
        let services = follow(
            Api::<Service>::all(client),
            "services",
            index.clone(),
            |i| &mut i.services,
            service_entry,
        );
        tokio::spawn(pods);
        tokio::spawn(services);
        Self { index }
    }

    pub fn pod(&self, ip: IpAddr) -> Option<PodRef> {
        self.index.read().ok()?.pod(ip).cloned()
    }

    pub fn service(&self, ip: IpAddr) -> Option<ServiceRef> {
        self.index.read().ok()?.service(ip).cloned()
    }

    /// Whether both watches have listed once.
    pub fn synced(&self) -> bool {
        self.index
            .read()
            .is_ok_and(|i| i.pods.listed && i.services.listed)
    }

    pub fn pods_len(&self) -> usize {
        self.index.read().map_or(0, |i| i.pods_len())
    }
}

/// Follows `api`'s objects for as long as the process runs, each reduced
/// by `entry` into its part (`keyed`) of `index`.
async fn follow<K, V>(
    api: Api<K>,
    what: &'static str,
    index: Arc<RwLock<ClusterIndex>>,
    keyed: fn(&mut ClusterIndex) -> &mut Keyed<V>,
    entry: fn(&K) -> Entry<V>,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    let apply = |e: Change<V>| {
        if let Ok(mut i) = index.write() {
            keyed(&mut i).event(e);
        }
    };
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut said: Option<String> = None;
    while let Some(e) = stream.next().await {
        match e {
            Ok(watcher::Event::Init) => apply(Change::Init),
            Ok(watcher::Event::InitDone) => {
                if said.take().is_some() {
                    log::info!("the Kubernetes API's {what} are followed again");
                }
                apply(Change::InitDone);
            }
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let (k, ips, v) = entry(&o);
                apply(Change::Apply(k, ips, v));
            }
            Ok(watcher::Event::Delete(o)) => apply(Change::Delete(entry(&o).0)),
            Err(e) => {
                let e = e.to_string();
                if said.as_deref() != Some(e.as_str()) {
                    log::warn!(
                        "watching the Kubernetes API's {what}: {e}; pods on other nodes named by address until it answers"
                    );
                    said = Some(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_from_controller_references() {
        let hash = |h: &str| [("pod-template-hash".to_owned(), h.to_owned())].into();
        assert_eq!(
            owner_workload("ReplicaSet", "web-7d4b9c8f6d", &hash("7d4b9c8f6d")),
            "deployment/web"
        );
        // A ReplicaSet of its own (no template hash of a Deployment).
        assert_eq!(
            owner_workload("ReplicaSet", "legacy", &Default::default()),
            "replicaset/legacy"
        );
        assert_eq!(
            owner_workload("DaemonSet", "kube-flannel-ds", &Default::default()),
            "daemonset/kube-flannel-ds"
        );
    }
}
