//! `netdrop demo`: the seeds' broken clusters, live. One two-node flannel
//! cluster in network namespaces per scenario (S0–S4, see
//! shared/SCENARIOS.md), broken the way the operators' were, with traffic
//! that the breakage kills — and `watch` explaining every drop, serving
//! metrics and `/explanations`. Everything is removed on Ctrl-C or after
//! `--duration`.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;

use crate::{
    cli::{DemoArgs, WatchArgs},
    lab::{
        cluster::{Cluster, INTERNET_HOST, POD_CIDR, Scenario},
        traffic,
    },
    preflight,
};

fn describe(s: Scenario) -> &'static str {
    match s {
        Scenario::Healthy => "healthy reference: nothing may be reported",
        Scenario::S0 => "S0: leftover Calico chains still hooked into FORWARD/INPUT",
        Scenario::S1 => "S1: Docker's FORWARD policy DROP, flannel accepts the wrong CIDR",
        Scenario::S2 => "S2: the distribution's REJECT icmp-host-prohibited ends FORWARD",
        Scenario::S3 => {
            "S3: `systemctl start iptables`: INPUT rejects VXLAN (UDP 8472) and kubelet"
        }
        Scenario::S4 => "S4: flannel masquerades 10.244.0.0/16, pods live in 10.224.0.0/16",
    }
}

/// The traffic each scenario kills, from pod1 (sent every couple of seconds).
fn send(pod1: &str, s: Scenario) -> anyhow::Result<()> {
    match s {
        // Pod egress to the "internet".
        Scenario::S4 => traffic::send_udp(pod1, SocketAddr::new(INTERNET_HOST.parse()?, 53), 2, 48),
        // Pod to the pod on the other node, across VXLAN.
        _ => traffic::send_udp(pod1, "10.224.2.2:9000".parse()?, 3, 64),
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    preflight::require_capabilities("demo")?;
    let scenarios = if args.scenario.is_empty() {
        vec![
            Scenario::S0,
            Scenario::S1,
            Scenario::S2,
            Scenario::S3,
            Scenario::S4,
        ]
    } else {
        args.scenario.clone()
    };
    // Ctrl-C while the clusters are built (a few seconds) must still remove
    // them: listen from the start (this also replaces the default action,
    // which would kill the process with its namespaces in place).
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut clusters = Vec::new();
    for s in &scenarios {
        let tag = format!("{s:?}").to_lowercase();
        let c = Cluster::build(&tag, *s).with_context(|| format!("building the {s:?} cluster"))?;
        eprintln!("demo: {} — nodes {} and {}", describe(*s), c.node1, c.node2);
        clusters.push((*s, c));
        let signalled = tokio::select! {
            biased;
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            () = tokio::task::yield_now() => false,
        };
        if signalled {
            drop(clusters);
            eprintln!("demo: interrupted; all namespaces removed");
            return Ok(());
        }
    }
    let netns: Vec<String> = clusters
        .iter()
        .flat_map(|(_, c)| [c.node1.clone(), c.node2.clone()])
        .collect();

    // A blocking task cannot be aborted: it stops at this flag, before the
    // namespaces it sends into are removed (and before the runtime, which
    // waits for it, shuts down).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        // The clusters stay owned here; the sender only needs their names.
        let plan: Vec<(Scenario, String)> =
            clusters.iter().map(|(s, c)| (*s, c.pod1.clone())).collect();
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
            while !stopped() {
                for (s, pod1) in &plan {
                    if let Err(e) = send(pod1, *s) {
                        log::warn!("demo traffic ({s:?}): {e:#}");
                    }
                }
                for _ in 0..20 {
                    if stopped() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };
    // A signal that came during the build and was not seen above is still
    // pending in these streams (the watch's own start listening later).
    let interrupted = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    // Every node's runtime names pods: the demo's watch sees both ends.
    let sockets: Vec<String> = clusters
        .iter()
        .flat_map(|(_, c)| c.runtimes.iter().map(|r| r.socket.clone()))
        .collect();
    let watch = crate::watch::run_until(demo_watch_args(&args, &netns, &sockets)?, interrupted);

    let result = watch.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.await;
    drop(clusters);
    eprintln!("demo: all namespaces removed");
    result
}

/// The watch the demo runs: `netdrop watch` on the demo's nodes, with the
/// command line's own defaults for everything the demo does not set.
fn demo_watch_args(
    args: &DemoArgs,
    netns: &[String],
    cri_sockets: &[String],
) -> anyhow::Result<WatchArgs> {
    #[derive(clap::Parser)]
    struct Watch {
        #[command(flatten)]
        args: WatchArgs,
    }
    // Workload labels on: the dashboard's workload table has the demo's.
    let mut argv: Vec<String> = [
        "watch",
        "--pod-cidr",
        POD_CIDR,
        "--summary-interval",
        "10s",
        "--metrics-workload-labels",
    ]
    .map(str::to_owned)
    .to_vec();
    argv.extend(["--metrics-addr".into(), args.metrics_addr.to_string()]);
    if let Some(d) = args.duration {
        argv.extend(["--duration".into(), format!("{}ms", d.as_millis())]);
    }
    for n in netns {
        argv.extend(["--netns".into(), n.clone()]);
    }
    for s in cri_sockets {
        argv.extend(["--cri-socket".into(), s.clone()]);
    }
    let mut w = <Watch as clap::Parser>::try_parse_from(argv)
        .context("building the demo's watch arguments")?
        .args;
    w.output = args.output;
    // The demo names its nodes by namespace, whatever NODE_NAME says.
    w.node_name = None;
    Ok(w)
}
