//! The node's pods (and the cluster's, with the API) by name, to name a
//! drop's ends: what a pod is called ([`PodRef`]), the node's pods by
//! address ([`PodIndex`]), and the small interface the drop pipeline names
//! them through ([`PodLookup`]). Where the names come from, each a module
//! that imports only from this one and from those before it:
//! [`cri`] (the node's runtime over CRI), [`containerd_events`]
//! (containerd's events: when pods changed), [`api`] (the Kubernetes
//! API), and [`lookup`] (the naming thread `watch` asks, runtime first,
//! then the API).

pub mod api;
pub mod containerd_events;
pub mod cri;
pub mod lookup;

use std::{collections::HashMap, net::IpAddr};

use serde::Serialize;

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
    pub(crate) by_ip: HashMap<IpAddr, PodRef>,
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

impl PodLookup for PodIndex {
    fn lookup(&self, ips: &[IpAddr]) -> Vec<Option<PodRef>> {
        ips.iter().map(|ip| self.get(*ip).cloned()).collect()
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
