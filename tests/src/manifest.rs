//! The DaemonSet's pod as `deploy/kubernetes/netdrop.yaml` says it, in the
//! CRI's terms, and `deploy/prometheus/scrape.yaml`'s job with a file of
//! targets in place of Kubernetes discovery: read from the files, never
//! restated, for the tests and the benchmark that run the pod.

use std::path::{Path, PathBuf};

use netdrop::lab::containerd::HostPodSpec;
use serde::Deserialize as _;
use serde_json::Value;

use crate::field;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The manifest's documents, as JSON values.
pub fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/netdrop.yaml")).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("netdrop.yaml parses"))
        .collect()
}

/// `256Mi` → bytes.
pub fn quantity(q: &str) -> i64 {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: i64 = n.parse().expect("a memory quantity");
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unit {other} not read by this test"),
    }
}

/// What the pod needs from the DaemonSet: its CRI spec, the port the
/// probes name, its probes' paths, and its grace period.
pub struct FromManifest {
    pub spec: HostPodSpec,
    /// The port the probes name.
    pub port: u16,
    /// The probes' paths (liveness, readiness).
    pub probes: Vec<String>,
    /// `terminationGracePeriodSeconds` (Kubernetes' default 30).
    pub grace: i64,
}

pub fn from_manifest(node: &str, containerd_dir: &Path) -> FromManifest {
    let docs = manifest();
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostNetwork"], true,
        "the pod runs on the node's network"
    );
    let c = &pod["containers"][0];
    let s = &c["securityContext"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let env = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                // kubelet's part: the node the pod runs on.
                Some("spec.nodeName") => node.to_owned(),
                Some(other) => panic!("fieldRef {other} not resolved by this test"),
                None => e["value"].as_str().unwrap_or_default().to_owned(),
            };
            (field(e, "name").to_owned(), value)
        })
        .collect();
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mounts = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            let v = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .expect("a volume for each mount");
            let host = field(&v["hostPath"], "path");
            // The lab node's containerd keeps its socket in its own
            // directory: that is this node's /run/containerd.
            let host = if host == "/run/containerd" {
                containerd_dir.display().to_string()
            } else {
                host.to_owned()
            };
            (
                field(m, "mountPath").to_owned(),
                host,
                m["readOnly"] == true,
            )
        })
        .collect();
    let port_name = &c["readinessProbe"]["httpGet"]["port"];
    let port = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| &p["name"] == port_name)
        .and_then(|p| p["containerPort"].as_u64())
        .expect("the probes' port") as u16;
    FromManifest {
        spec: HostPodSpec {
            namespace: ds["metadata"]["namespace"].as_str().unwrap().to_owned(),
            name: format!("netdrop-{node}"),
            container: field(c, "name").to_owned(),
            image: field(c, "image").to_owned(),
            args: strings(&c["args"]),
            env,
            mounts,
            cap_add: strings(&s["capabilities"]["add"]),
            cap_drop: strings(&s["capabilities"]["drop"]),
            privileged: s["privileged"] == true,
            no_new_privs: s["allowPrivilegeEscalation"] == false,
            readonly_rootfs: s["readOnlyRootFilesystem"] == true,
            run_as_user: s["runAsUser"].as_i64(),
            seccomp_unconfined: s["seccompProfile"]["type"] == "Unconfined",
            memory_limit: quantity(field(&c["resources"]["limits"], "memory")),
        },
        port,
        probes: ["livenessProbe", "readinessProbe"]
            .iter()
            .map(|p| field(&c[*p]["httpGet"], "path").to_owned())
            .collect(),
        grace: pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30),
    }
}

/// A Prometheus configuration with `deploy/prometheus/scrape.yaml`'s job
/// and relabelling, its Kubernetes discovery replaced by a file of targets
/// (and that file): the pod at `addr` on `node`, with the labels discovery
/// gives it. JSON, which Prometheus reads as YAML.
pub fn scrape_config(node: &str, addr: &str) -> (String, String) {
    let text = std::fs::read_to_string(root().join("deploy/prometheus/scrape.yaml")).unwrap();
    let v = Value::deserialize(serde_yaml_ng::Deserializer::from_str(&text)).unwrap();
    let job = &v["scrape_configs"][0];
    assert!(job["kubernetes_sd_configs"].is_array(), "{job}");
    let config = serde_json::json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": job["job_name"],
            "file_sd_configs": [{"files": ["targets.json"], "refresh_interval": "1s"}],
            "relabel_configs": job["relabel_configs"],
        }],
    });
    let targets = serde_json::json!([{
        "targets": [addr],
        "labels": {
            "__meta_kubernetes_pod_container_port_name": "metrics",
            "__meta_kubernetes_pod_node_name": node,
        },
    }]);
    (config.to_string(), targets.to_string())
}
