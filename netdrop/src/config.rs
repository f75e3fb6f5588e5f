//! What the operator asked for: the flags `watch`, `check` and `explain`
//! share, parsed once (clap) into the values every stage takes — the
//! cluster's pod CIDRs and VXLAN port reach the kernel filter, `check`'s
//! probes and the explanations from here alike.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;
use ipnet::IpNet;
use netdrop_model::check::{Cluster, FLANNEL_VXLAN_PORT};

use crate::capture::{DropProbe, observe::TcAttach};

/// Whether `watch` follows the Kubernetes API for names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KubernetesApi {
    Auto,
    Off,
}
pub use crate::export::stdout::Output;

/// What the cluster is: the one place its facts come from, for the kernel
/// filter, `check`'s probes and every explanation alike.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Pod CIDR of the cluster (repeatable; IPv4 or IPv6).
    #[arg(long = "pod-cidr", value_name = "CIDR")]
    pub pod_cidrs: Vec<IpNet>,
    /// UDP port of the VXLAN overlay (flannel: 8472; the Linux default is 4789).
    #[arg(long, value_name = "PORT", default_value_t = FLANNEL_VXLAN_PORT)]
    pub vxlan_port: u16,
}

impl ClusterArgs {
    pub fn cluster(&self) -> Cluster {
        Cluster::new(self.pod_cidrs.clone()).with_vxlan_port(self.vxlan_port)
    }
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Observe this named network namespace (`ip netns`) as a node (repeatable).
    /// Default: the namespace netdrop runs in.
    #[arg(long = "netns", value_name = "NAME")]
    pub netns: Vec<String>,
    /// Keep drops that involve no pod address too.
    #[arg(long)]
    pub all: bool,
    /// Detailed drop samples per second for the whole node (each new drop
    /// site is always sampled once; counts are exact regardless).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub sample_rate: u32,
    /// Drop-site series per node at most in the metrics; sites beyond are
    /// counted in one series per hook and reason with table, chain and
    /// owner `other` (records and /explanations still name every site).
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub max_site_series: usize,
    /// Stop after this long (e.g. 30s, 5m); default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How often the kernel counters are read.
    #[arg(long, value_parser = parse_duration, default_value = "250ms")]
    pub interval: Duration,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Kernel hook that feeds the drop counters.
    #[arg(long, value_enum, default_value_t = DropProbe::Auto)]
    pub drop_probe: DropProbe,
    /// Kernel BTF to read struct layouts and drop reason names from.
    #[arg(long, value_name = "PATH", default_value = "/sys/kernel/btf/vmlinux")]
    pub btf: PathBuf,
    /// Prometheus metrics listen address (`0.0.0.0:9595` in a DaemonSet).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9595")]
    pub metrics_addr: SocketAddr,
    /// How often an ongoing drop site is summarised (its first drop is
    /// reported at once).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub summary_interval: Duration,
    /// Overlay (VXLAN) device to observe.
    #[arg(long, value_name = "IFACE")]
    pub overlay_iface: Option<String>,
    /// Pod bridge to observe.
    #[arg(long, value_name = "IFACE")]
    pub bridge_iface: Option<String>,
    /// Underlay NIC to observe (default: the VXLAN device's, or the default route's).
    #[arg(long, visible_alias = "iface", value_name = "IFACE")]
    pub underlay_iface: Option<String>,
    /// Do not attach the TC interface observers.
    #[arg(long)]
    pub no_observers: bool,
    /// The container runtime's CRI socket, to name pods (default: the
    /// first of containerd's, CRI-O's and cri-dockerd's that exists).
    /// Repeat it to name the pods of several runtimes (a lab watching
    /// several nodes): an address is named by the first that has it.
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Vec<String>,
    /// Name no pods (addresses only; neither the runtime nor the API is
    /// asked).
    #[arg(long, conflicts_with_all = ["cri_socket", "kubeconfig"])]
    pub no_pod_names: bool,
    /// Names from the Kubernetes API too (pods on other nodes, Services):
    /// auto follows it when `--kubeconfig` is given or netdrop runs with a
    /// service account in the cluster; off never asks it.
    #[arg(long, value_enum, default_value_t = KubernetesApi::Auto)]
    pub kubernetes: KubernetesApi,
    /// Count drops by the namespace and workload at either end too
    /// (`netdrop_workload_drops_total`; never by pod or address).
    #[arg(long)]
    pub metrics_workload_labels: bool,
    /// The kubeconfig to reach the Kubernetes API with (`--kubernetes auto`).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<String>,
    /// How the observers attach: tcx links (kernel ≥ 6.6), netlink clsact
    /// filters (older kernels), or auto (tcx, else netlink).
    #[arg(long, value_enum, default_value_t = TcAttach::Auto)]
    pub tc_attach: TcAttach,
    /// Name of this node in reports and metrics (a DaemonSet passes
    /// spec.nodeName); default: the hostname. Ignored with --netns.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
}

/// `250ms`, `10s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 500ms, 10s, 5m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit {unit:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("duration must be positive, got {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}
