//! `netdrop demo`: a throw-away node and pod in network namespaces, a rule
//! that kills the pod's traffic, real packets, and `watch` explaining them.
//! Everything is removed on Ctrl-C or after `--duration`.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;

use crate::{
    capture::DropProbe,
    cli::{DemoArgs, WatchArgs},
    lab::{Lab, traffic},
    preflight,
};

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    preflight::require_capabilities("demo")?;
    let mut lab = Lab::new("demo");
    let node = lab
        .netns("node")
        .context("creating the demo node namespace")?;
    let pod = lab
        .netns("pod")
        .context("creating the demo pod namespace")?;
    lab.veth(
        (&node, "veth0pod", Some("10.224.1.1/24")),
        (&pod, "eth0", Some("10.224.1.2/24")),
    )?;
    // The seeds' S3 in miniature: the node's INPUT refuses VXLAN (UDP 8472).
    lab.iptables(
        &node,
        &["-A", "INPUT", "-p", "udp", "--dport", "8472", "-j", "DROP"],
    )?;
    println!(
        "demo: node {node} drops UDP 8472 from pod {pod} (10.224.1.2 -> 10.224.1.1); sending 5 packets/s"
    );

    let sender = {
        let pod = pod.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let dst: SocketAddr = "10.224.1.1:8472".parse()?;
            loop {
                traffic::send_udp(&pod, dst, 5, 64)?;
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let watch = crate::watch::run(WatchArgs {
        pod_cidrs: vec!["10.224.0.0/16".parse()?],
        netns: vec![node.clone()],
        all: false,
        vxlan_port: 8472,
        sample_rate: 200,
        duration: args.duration,
        interval: Duration::from_millis(250),
        output: args.output,
        drop_probe: DropProbe::Auto,
        btf: "/sys/kernel/btf/vmlinux".into(),
        metrics_addr: args.metrics_addr,
        summary_interval: Duration::from_secs(5),
        overlay_iface: None,
        bridge_iface: None,
        underlay_iface: None,
        no_observers: false,
    });
    let result = watch.await;
    sender.abort();
    drop(lab);
    println!("demo: namespaces removed");
    result
}
