//! `netdrop watch`: the live loop. Reads the kernel's per-site counters every
//! interval and reports sites whose counts grew; the kernel counts every
//! packet, so userspace never needs one event per packet.

use std::collections::HashMap;

use anyhow::Context as _;
use netdrop_common::{DropCounters, DropKey, DropSample};

use crate::{
    capture::{CaptureOptions, Datapath},
    cli::WatchArgs,
    decode::{Decoder, flow::Flow, netns::Netns},
    export::stdout::{DropReport, Printer},
    preflight,
};

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    preflight::require_capabilities("watch")?;
    let nodes = if args.netns.is_empty() {
        vec![Netns::own().context("reading netdrop's own network namespace")?]
    } else {
        args.netns
            .iter()
            .map(|n| Netns::named(n))
            .collect::<Result<Vec<_>, _>>()?
    };
    let (mut datapath, kernel) = Datapath::load(&CaptureOptions {
        btf_path: args.btf.clone(),
        probe: args.drop_probe,
        pod_cidrs: args.pod_cidrs.clone(),
        keep_all: args.all || args.pod_cidrs.is_empty(),
        vxlan_port: args.vxlan_port,
        sample_rate: args.sample_rate,
    })
    .context("starting the kernel datapath")?;
    let printer = Printer::new(args.output);
    printer.note(&format!(
        "netdrop: watching drops on {} ({:?} probe); Ctrl-C to stop",
        nodes
            .iter()
            .map(Netns::label)
            .collect::<Vec<_>>()
            .join(", "),
        datapath.probe()
    ));
    let mut watcher = Watcher {
        decoder: Decoder::new(kernel, nodes),
        seen: HashMap::new(),
        latest: HashMap::new(),
        printer,
    };

    let mut tick = tokio::time::interval(args.interval);
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = tick.tick() => watcher.poll(&mut datapath)?,
            () = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    // Report what arrived since the last tick before detaching.
    watcher.poll(&mut datapath)?;
    Ok(())
}

struct Watcher {
    decoder: Decoder,
    /// Last reported counters per drop site.
    seen: HashMap<DropKey, DropCounters>,
    /// The latest detailed sample of each drop site.
    latest: HashMap<DropKey, DropSample>,
    printer: Printer,
}

impl Watcher {
    fn poll(&mut self, datapath: &mut Datapath) -> anyhow::Result<()> {
        for s in datapath.samples() {
            self.latest.insert(s.key, s);
        }
        let drops = datapath.drops()?;
        log::trace!("{} drop sites in the kernel map", drops.len());
        for (key, now) in drops {
            // Drops in namespaces nobody asked about are not this watch's.
            if self.decoder.node(key.netns).is_none() {
                log::debug!("drop outside the observed namespaces: {key:?} {now:?}");
                continue;
            }
            let before = self.seen.get(&key).copied().unwrap_or_default();
            if now.packets == before.packets {
                continue;
            }
            let site = self.decoder.decode(&key);
            let sample = self.latest.get(&key);
            self.printer.drop(&DropReport {
                flow: sample.and_then(|s| Flow::from_hdr(&s.outer)),
                inner: sample.and_then(|s| Flow::from_hdr(&s.inner)),
                vni: sample.filter(|s| s.inner.family != 0).map(|s| s.vni),
                kind: "drop",
                site: &site,
                packets: now.packets,
                bytes: now.bytes,
                new_packets: now.packets - before.packets,
                evidence: "kernel",
            });
            self.seen.insert(key, now);
        }
        Ok(())
    }
}
