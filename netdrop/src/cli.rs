//! The command line (clap). Values are validated here, so a bad flag is a
//! clap error (exit code 2) before anything touches the kernel.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use netdrop_model::{Packet, packet::parse_packet};

pub use crate::config::{ClusterArgs, Output, WatchArgs, parse_duration};

/// `--packet`: a bad one is a usage error (exit code 2), like any flag.
fn packet_arg(s: &str) -> Result<Packet, String> {
    parse_packet(s).map_err(|e| e.to_string())
}

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
    /// Walk one packet through a ruleset (a file, or a node's live rules) and explain its fate.
    Explain(ExplainArgs),
    /// Build a throw-away two-node cluster in network namespaces, break it, and watch.
    #[cfg(feature = "lab")]
    Demo(DemoArgs),
}

/// Without `--pod-cidr`, `check` takes the pod CIDR the rules name
/// (flannel's), and says so.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read rules from an iptables-save dump instead of the live ruleset.
    #[arg(long, value_name = "FILE", conflicts_with = "netns")]
    pub rules: Option<PathBuf>,
    /// Check the live ruleset of this named network namespace.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// Ruleset file to walk the packet through: an iptables-save dump or
    /// `nft -j list ruleset` JSON. Without it: the live rules of `--netns`,
    /// or of this host (root).
    #[arg(long, value_name = "FILE", conflicts_with = "netns")]
    pub rules: Option<PathBuf>,
    /// Named network namespace (`ip netns`) whose live rules to use.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// "<hook> <proto> <src>[:port] -> <dst>[:port] [in IF] [out IF] [mark M] [ct STATE]"
    #[arg(long, value_parser = packet_arg)]
    pub packet: Packet,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[cfg(feature = "lab")]
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Scenarios to build (repeatable); default: S0, S1, S2, S3 and S4.
    #[arg(long, value_enum)]
    pub scenario: Vec<crate::lab::cluster::Scenario>,
    /// Stop after this long; default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Prometheus metrics listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9595")]
    pub metrics_addr: std::net::SocketAddr,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    fn check_takes_a_pod_cidr_or_the_rules_and_the_vxlan_port() {
        assert!(Cli::try_parse_from(["netdrop", "check", "--rules", "f"]).is_ok());
        let cli = Cli::try_parse_from([
            "netdrop",
            "check",
            "--rules",
            "f",
            "--pod-cidr",
            "10.224.0.0/16",
            "--vxlan-port",
            "4789",
        ])
        .unwrap();
        let Command::Check(c) = cli.command else {
            panic!("not check")
        };
        assert_eq!(c.cluster.cluster().vxlan_port, 4789);
        let Command::Explain(e) = Cli::try_parse_from([
            "netdrop",
            "explain",
            "--rules",
            "f",
            "--packet",
            "INPUT udp 10.224.1.2 -> 192.0.2.1:8472",
        ])
        .unwrap()
        .command
        else {
            panic!("not explain")
        };
        assert_eq!(e.cluster.cluster().vxlan_port, 8472);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
