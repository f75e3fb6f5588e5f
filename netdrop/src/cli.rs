//! The command line (clap). Values are validated here, so a bad flag is a
//! clap error (exit code 2) before anything touches the kernel.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::capture::{DropProbe, observe::TcAttach};

#[derive(Parser, Debug)]
#[command(
    name = "netdrop",
    version,
    about = "Where did my pod packet die? Finds the iptables rule that dropped it, whose it is, and how to fix it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Watch this node's kernel for dropped pod packets and explain each drop.
    Watch(WatchArgs),
    /// Check a ruleset for rules that break pod networking (static findings).
    Check(CheckArgs),
    /// Walk one packet through a ruleset offline and explain its fate.
    Explain(ExplainArgs),
    /// Build a throw-away two-node cluster in network namespaces, break it, and watch.
    Demo(DemoArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Pod CIDR of the cluster (repeatable; IPv4 or IPv6).
    #[arg(long = "pod-cidr", value_name = "CIDR")]
    pub pod_cidrs: Vec<IpNet>,
    /// Observe this named network namespace (`ip netns`) as a node (repeatable).
    /// Default: the namespace netdrop runs in.
    #[arg(long = "netns", value_name = "NAME")]
    pub netns: Vec<String>,
    /// Keep drops that involve no pod address too.
    #[arg(long)]
    pub all: bool,
    /// UDP port of the VXLAN overlay (flannel: 8472).
    #[arg(long, value_name = "PORT", default_value_t = 8472)]
    pub vxlan_port: u16,
    /// Detailed drop samples per second for the whole node (each new drop
    /// site is always sampled once; counts are exact regardless).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub sample_rate: u32,
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
    /// How the observers attach: tcx links (kernel ≥ 6.6), netlink clsact
    /// filters (older kernels), or auto (tcx, else netlink).
    #[arg(long, value_enum, default_value_t = TcAttach::Auto)]
    pub tc_attach: TcAttach,
    /// Name of this node in reports and metrics (a DaemonSet passes
    /// spec.nodeName); default: the hostname. Ignored with --netns.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read rules from an iptables-save dump instead of the live ruleset.
    #[arg(long, value_name = "FILE", conflicts_with = "netns")]
    pub rules: Option<PathBuf>,
    /// Check the live ruleset of this named network namespace.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Pod CIDR of the cluster (repeatable).
    #[arg(long = "pod-cidr", value_name = "CIDR", required = true)]
    pub pod_cidrs: Vec<IpNet>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// iptables-save dump to walk the packet through.
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,
    /// "<hook> <proto> <src>[:port] -> <dst>[:port] [in IF] [out IF] [mark M] [ct STATE]"
    #[arg(long)]
    pub packet: String,
    /// Pod CIDR of the cluster (repeatable), for the explanation.
    #[arg(long = "pod-cidr", value_name = "CIDR")]
    pub pod_cidrs: Vec<IpNet>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Scenarios to build (repeatable); default: S0, S1, S2, S3 and S4.
    #[arg(long, value_enum)]
    pub scenario: Vec<crate::lab::cluster::Scenario>,
    /// Stop after this long; default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Prometheus metrics listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9595")]
    pub metrics_addr: SocketAddr,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn bad_pod_cidr_is_a_usage_error() {
        let err =
            Cli::try_parse_from(["netdrop", "watch", "--pod-cidr", "10.224.0.0/33"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--pod-cidr"));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
