//! `netdrop watch`: the live loop. Every interval it reads the kernel's
//! per-site counters (exact) and the rate-limited samples (flows), joins
//! each drop with the rules in force on its node, and reports: stdout
//! records, Prometheus metrics, `/explanations`.

mod node;
pub mod pipeline;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use netdrop_common::{ObsCounters, direction, drop_stat, obs_stat, role};

use netdrop_model::{Evidence, FindingId, Hook, Severity, check::PodCidrs};

use self::{node::Node, pipeline::DropPipeline};
use crate::{
    capture::{
        CaptureOptions, Datapath, DropProbe,
        observe::{ObserverOptions, role_name, role_of_slot},
    },
    config::WatchArgs,
    decode::{Decoder, flow::Flow},
    explain::{self, check::check_node},
    export::{
        metrics::{
            self, DeviceLabels, EgressLabels, FindingLabels, IfaceLabels, NodeInfoLabels,
            NodeLabels, ObserverLossLabels, PeerLabels, ProgramLabels, Shared,
        },
        record::{Kind, Record},
        stdout::Printer,
    },
    netns::{Netns, NetnsError},
    preflight,
};

/// How often the rules are checked for a change (one netlink request per
/// node: the nf_tables generation; with legacy tables, their entry counts
/// and sizes too: tens of microseconds); they are re-read only when
/// something moved, and whenever a new drop needs their counters.
const RULES_CHANGE_CHECK: Duration = Duration::from_millis(250);

/// How often node namespaces are looked for and their rtnetlink events
/// drained (devices looked at again only when there were some).
const DEVICES_CHECK: Duration = Duration::from_secs(1);

/// Legacy tables (x_tables has no generation) also have their content
/// compared: a rule replaced by one of the same size changes no count or
/// size. Each check is a copy of the tables (not a re-read): every 10 s for
/// tables below 8 MiB, every 60 s for larger ones (a 10k-Service `nat`
/// table: 65 MB, a fifth of a second).
const LEGACY_RULES_RECHECK: [Duration; 2] = [Duration::from_secs(10), Duration::from_secs(60)];

/// How often at most a status line says what the kernel lost.
const LOSS_STATUS_EVERY: Duration = Duration::from_secs(10);

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    run_until(args, std::future::pending()).await
}

/// Who names pods: the node's runtime, and the cluster's API when it is
/// reachable by the configuration (`--kubernetes auto`).
async fn pod_names(
    args: &WatchArgs,
) -> anyhow::Result<Option<Box<dyn crate::attribute::names::PodLookup>>> {
    use crate::{
        attribute::names::{
            api::ClusterNames,
            lookup::{Names, PodNames},
        },
        config::KubernetesApi,
    };
    if args.no_pod_names {
        return Ok(None);
    }
    let cluster = match args.kubernetes {
        KubernetesApi::Off => None,
        KubernetesApi::Auto => match ClusterNames::client(args.kubeconfig.as_deref())
            .await
            .context("--kubernetes")?
        {
            Some(client) => {
                log::info!("pods on other nodes and Services named by the Kubernetes API");
                Some(ClusterNames::start(client))
            }
            None => {
                log::debug!(
                    "no kubeconfig and no in-cluster service account: the Kubernetes API is not asked"
                );
                None
            }
        },
    };
    Ok(Some(Box::new(Names {
        runtime: Some(PodNames::start(args.cri_socket.clone())),
        cluster,
    })))
}

/// `run`, which also stops when `stop` completes (`demo` passes the
/// signals it has listened to since before the watch existed).
pub async fn run_until(
    args: WatchArgs,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    preflight::require_capabilities("watch")?;
    // Signal streams made once, first: a `ctrl_c()` future made per loop
    // turn missed a Ctrl-C that arrived during a poll (tokio keeps no
    // signal for listeners that do not exist yet), and one that arrives
    // while the programs load now stops the watch as soon as it starts,
    // detaching cleanly (netlink filters included).
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let netns = if args.netns.is_empty() {
        let mut own = Netns::own().context("reading netdrop's own network namespace")?;
        if args.node_name.is_some() {
            own.node_name = args.node_name.clone();
        }
        vec![own]
    } else {
        // A namespace that does not exist yet (a node's pod started
        // before its sandbox) is attached to when it appears.
        args.netns
            .iter()
            .map(|n| match Netns::named(n) {
                Ok(ns) => Ok(ns),
                Err(NetnsError::Unknown(name)) => {
                    log::warn!(
                        "network namespace {name:?} does not exist (not in /run/netns): watching for it to appear"
                    );
                    Ok(Netns::pending(&name))
                }
                Err(e) => Err(e),
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let names = pod_names(&args).await?;
    let shared = metrics::new_shared();
    shared
        .site_limit
        .store(args.max_site_series, std::sync::atomic::Ordering::Relaxed);
    shared.workload_labels.store(
        args.metrics_workload_labels,
        std::sync::atomic::Ordering::Relaxed,
    );
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {}", args.metrics_addr))?;
    let metrics_addr = listener.local_addr().unwrap_or(args.metrics_addr);
    tokio::spawn(metrics::serve(shared.clone(), listener));

    let obs_opts = ObserverOptions {
        overlay: args.overlay_iface.clone(),
        bridge: args.bridge_iface.clone(),
        underlay: args.underlay_iface.clone(),
        pod_cidrs: args.cluster.pod_cidrs.clone(),
        vxlan_port: args.cluster.vxlan_port,
        sample_rate: 20,
        tc_attach: args.tc_attach,
    };
    let cluster = args.cluster.cluster();
    let with_observers = !args.no_observers && !cluster.pod_cidrs.is_empty();
    let obs_opts = with_observers.then_some(obs_opts);
    let mut nodes: Vec<Node> = netns
        .iter()
        .cloned()
        .map(|n| Node::new(n, obs_opts.as_ref()))
        .collect();
    let (loaded, kernel) = Datapath::load(&CaptureOptions {
        btf_path: args.btf.clone(),
        probe: args.drop_probe,
        pod_cidrs: cluster.pod_cidrs.clone(),
        keep_all: args.all || cluster.pod_cidrs.is_empty(),
        vxlan_port: cluster.vxlan_port,
        sample_rate: args.sample_rate,
    })
    .context("starting the kernel datapath")?;
    // The kernel BTF and object files parsed to load the programs are freed
    // (before the rules are read: a 100k-rule model need not sit on top).
    crate::preflight::release_freed_memory();
    // The first rules snapshot is taken before the drop probe attaches, so
    // rule counters grow by at least every drop the kernel then counts.
    for n in nodes.iter_mut().filter(|n| n.netns.exists()) {
        n.refresh_rules();
    }
    let mut datapath = loaded.attach().context("starting the kernel datapath")?;

    let printer = Printer::new(args.output);
    let mut w = Watcher {
        pipeline: DropPipeline::new(
            Decoder::new(kernel, netns),
            cluster,
            shared.clone(),
            args.summary_interval,
        )
        .with_pods(names),
        printer,
        shared,
        nodes,
        summary_every: args.summary_interval,
        stats_prev: [0; drop_stat::COUNT as usize],
        obs_stats_prev: HashMap::new(),
        losses_said: (None, [0; 7]),
        programs_prev: HashMap::new(),
        obs_prev: HashMap::new(),
        devices_published: HashMap::new(),
        capped_said: HashSet::new(),
        peers_prev: HashMap::new(),
        egress_seen: HashSet::new(),
        egress_printed: HashMap::new(),
        findings: HashMap::new(),
        last_recheck: Instant::now(),
        last_rules_check: Instant::now(),
        obs_opts,
        probe: datapath.probe(),
    };
    for i in 0..w.nodes.len() {
        w.node_series(i, datapath.probe());
        w.publish_devices(i);
        w.findings(i);
    }
    w.shared
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    w.printer.note(&format!(
        "netdrop: watching drops on {} (drop probe {}); metrics on http://{}/metrics; Ctrl-C to stop",
        w.nodes
            .iter()
            .map(|n| n.label.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        datapath.probe().as_str(),
        metrics_addr
    ));

    let mut tick = tokio::time::interval(args.interval);
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            // A poll may run iptables-save (a new drop site, changed
            // rules): blocking work, moved off the runtime's worker so that
            // /metrics keeps answering.
            _ = tick.tick() => tokio::task::block_in_place(|| w.poll(&mut datapath))?,
            () = &mut deadline => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut stop => break,
        }
    }
    // Report what arrived since the last tick before detaching, and the
    // final counts of sites whose last summary is behind.
    w.pipeline.closing();
    w.poll(&mut datapath)?;
    for r in w.pipeline.flush() {
        w.printer.record(&r.record, r.detail);
    }
    w.losses_status(true);
    Ok(())
}

/// The live loop's state: the drop pipeline, and per node what the
/// observers and findings reported last.
struct Watcher {
    pipeline: DropPipeline,
    printer: Printer,
    shared: Arc<Shared>,
    nodes: Vec<Node>,
    /// Pods by name from the node's container runtime (`--no-pod-names`: none).
    /// How observers attach (`None`: no observers), for nodes that appear.
    obs_opts: Option<ObserverOptions>,
    probe: DropProbe,
    summary_every: Duration,
    stats_prev: [u64; drop_stat::COUNT as usize],
    obs_stats_prev: HashMap<String, [u64; obs_stat::COUNT as usize]>,
    /// When the last loss status line was printed, and the losses it said.
    losses_said: (Option<Instant>, [u64; 7]),
    /// Program name → (run time ns, runs) as of the last poll.
    programs_prev: HashMap<String, (u64, u64)>,
    /// Observer counters last read, per (node, slot, direction).
    obs_prev: HashMap<(usize, u32, u32), ObsCounters>,
    /// Nodes whose capped drop sites were reported.
    capped_said: HashSet<String>,
    /// The observed-device series each node has now.
    devices_published: HashMap<usize, Vec<DeviceLabels>>,
    peers_prev: HashMap<(usize, std::net::IpAddr, u32), u64>,
    /// (node, pod, destination, device) pairs already printed in full.
    egress_seen: HashSet<(usize, IpAddr, IpAddr, String)>,
    /// Each node's last un-NATed egress record, when and at what count it
    /// was printed: its summaries carry everything it does.
    egress_printed: HashMap<usize, (Instant, u64, Record)>,
    /// Active findings per node (their metric labels).
    findings: HashMap<usize, Vec<FindingLabels>>,
    last_recheck: Instant,
    last_rules_check: Instant,
}

impl Watcher {
    fn poll(&mut self, datapath: &mut Datapath) -> anyhow::Result<()> {
        for r in self.pipeline.poll(datapath, &mut self.nodes)? {
            self.printer.record(&r.record, r.detail);
        }
        self.kernel_stats(datapath);
        self.losses_status(false);
        self.sites_capped();
        for ni in 0..self.nodes.len() {
            self.observers(ni);
        }
        let devices_due = self.last_recheck.elapsed() >= DEVICES_CHECK;
        let rules_due = self.last_rules_check.elapsed() >= RULES_CHANGE_CHECK;
        if devices_due {
            self.last_recheck = Instant::now();
        }
        if rules_due {
            self.last_rules_check = Instant::now();
        }
        if devices_due || rules_due {
            for ni in 0..self.nodes.len() {
                if devices_due {
                    self.follow_namespace(ni);
                }
                if !self.nodes[ni].netns.exists() {
                    continue;
                }
                if let Some(what) = devices_due
                    .then(|| self.nodes[ni].refresh_observers())
                    .flatten()
                {
                    // New programs count from zero.
                    self.obs_prev.retain(|(n, _, _), _| *n != ni);
                    self.peers_prev.retain(|(n, _, _), _| *n != ni);
                    self.obs_stats_prev.remove(&self.nodes[ni].label);
                    let attached: Vec<String> = self.nodes[ni]
                        .observers
                        .as_ref()
                        .map(|o| o.ifaces.names())
                        .unwrap_or_default();
                    self.publish_devices(ni);
                    log::warn!(
                        "{}: {what}: observers re-attached ({})",
                        self.nodes[ni].label,
                        if attached.is_empty() {
                            "no device observed".to_owned()
                        } else {
                            format!("observing {}", attached.join(", "))
                        }
                    );
                }
                if !rules_due || !self.nodes[ni].rules_may_have_changed(LEGACY_RULES_RECHECK) {
                    continue;
                }
                let changed = self.nodes[ni].refresh_rules();
                self.publish_reads();
                if changed {
                    self.shared
                        .metrics
                        .ruleset_reloads
                        .get_or_create(&NodeLabels {
                            node: self.nodes[ni].label.clone(),
                        })
                        .inc();
                    self.findings(ni);
                }
            }
        }
        // Reads the pipeline made for counters.
        self.publish_reads();
        Ok(())
    }

    /// Adds the nodes' new ruleset reads to their metric.
    fn publish_reads(&mut self) {
        for n in &mut self.nodes {
            if n.reads > n.reads_published {
                self.shared
                    .metrics
                    .ruleset_reads
                    .get_or_create(&NodeLabels {
                        node: n.label.clone(),
                    })
                    .inc_by(n.reads - n.reads_published);
                n.reads_published = n.reads;
            }
        }
    }

    /// Series every node has from the start, so dashboards and alerts see
    /// a 0 rather than nothing.
    /// A finding record, once per node, when its drop sites outgrew
    /// `--max-site-series` (the exporter counts the rest in `other`).
    fn sites_capped(&mut self) {
        let limit = self
            .shared
            .site_limit
            .load(std::sync::atomic::Ordering::Relaxed);
        for ni in 0..self.nodes.len() {
            let node = self.nodes[ni].label.clone();
            if self.capped_said.contains(&node) {
                continue;
            }
            let capped = self
                .shared
                .metrics
                .drop_sites_capped
                .get_or_create(&NodeLabels { node: node.clone() })
                .get();
            if capped == 0 {
                continue;
            }
            let (explanation, fix) = explain::sites_capped(limit);
            self.printer.record(
                &Record {
                    kind: Kind::Finding,
                    node: node.clone(),
                    finding: Some(FindingId::DropSitesCapped),
                    severity: Some(Severity::Warning),
                    explanation: Some(explanation),
                    fix: Some(fix),
                    ..Record::default()
                },
                true,
            );
            self.capped_said.insert(node);
        }
    }

    /// A named node's namespace that appeared, went, or came back (a new
    /// inode): the node is attached anew, or detached, and this is said.
    fn follow_namespace(&mut self, ni: usize) {
        let Some(name) = self.nodes[ni].netns.name.clone() else {
            return;
        };
        let was = self.nodes[ni].netns.inode;
        let now = Netns::named(&name).ok();
        if now.as_ref().map_or(0, |n| n.inode) == was {
            return;
        }
        let label = self.nodes[ni].label.clone();
        let node = match now {
            Some(netns) => {
                log::warn!(
                    "{label}: namespace {}: attaching",
                    if was == 0 { "appeared" } else { "re-created" }
                );
                let mut node = Node::new(netns, self.obs_opts.as_ref());
                node.refresh_rules();
                node
            }
            None => {
                log::warn!(
                    "{label}: namespace gone: observers detached; watching for it to come back"
                );
                // Not observed now: `netdrop_node` says so until it is back.
                self.shared.metrics.node_info.remove(&NodeInfoLabels {
                    node: label.clone(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    probe: self.probe.as_str().into(),
                });
                Node::new(Netns::pending(&name), None)
            }
        };
        // The old node (its programs, links and sockets) is dropped here.
        self.nodes[ni] = node;
        self.obs_prev.retain(|(n, _, _), _| *n != ni);
        self.peers_prev.retain(|(n, _, _), _| *n != ni);
        self.obs_stats_prev.remove(&label);
        self.egress_printed.remove(&ni);
        self.pipeline.set_nodes(
            self.nodes.iter().map(|n| n.netns.clone()).collect(),
            (was != 0).then_some(was),
        );
        self.publish_devices(ni);
        if self.nodes[ni].netns.exists() {
            self.node_series(ni, self.probe);
            self.publish_reads();
        }
        self.findings(ni);
    }

    /// `netdrop_observed_devices` follows what node `ni`'s observers are
    /// attached to now.
    fn publish_devices(&mut self, ni: usize) {
        let m = &self.shared.metrics;
        for old in self.devices_published.remove(&ni).unwrap_or_default() {
            m.observed_devices.remove(&old);
        }
        let node = &self.nodes[ni];
        let Some(obs) = &node.observers else { return };
        let now: Vec<DeviceLabels> = obs
            .ifaces
            .slots()
            .filter(|(_, (n, _))| obs.attached(n, true) || obs.attached(n, false))
            .map(|(slot, (n, _))| DeviceLabels {
                node: node.label.clone(),
                iface: n.clone(),
                role: role_name(role_of_slot(slot)).into(),
            })
            .collect();
        for l in &now {
            m.observed_devices.get_or_create(l).set(1);
        }
        self.devices_published.insert(ni, now);
    }

    fn node_series(&self, ni: usize, probe: DropProbe) {
        let node = self.nodes[ni].label.clone();
        let m = &self.shared.metrics;
        m.node_info
            .get_or_create(&NodeInfoLabels {
                node: node.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                probe: probe.as_str().into(),
            })
            .set(1);
        let labels = NodeLabels { node };
        m.ruleset_reloads.get_or_create(&labels).inc_by(0);
        m.ruleset_reads.get_or_create(&labels).inc_by(0);
        m.attribution_failures.get_or_create(&labels).inc_by(0);
    }

    fn kernel_stats(&mut self, datapath: &Datapath) {
        let m = &self.shared.metrics;
        match datapath.stats() {
            Ok(stats) => {
                for (i, c) in [
                    (drop_stat::LOST, &m.samples_lost),
                    (drop_stat::SUPPRESSED, &m.samples_suppressed),
                    (drop_stat::FILTERED, &m.drops_filtered),
                    (drop_stat::MAP_FULL, &m.drops_uncounted),
                    (drop_stat::ERRORS, &m.program_errors),
                ] {
                    let i = i as usize;
                    c.inc_by(stats[i].saturating_sub(self.stats_prev[i]));
                }
                self.stats_prev = stats;
            }
            Err(e) => log::warn!("cannot read the drop program's counters: {e}"),
        }
        for n in &self.nodes {
            let Some(Ok(stats)) = n.observers.as_ref().map(|o| o.stats()) else {
                continue;
            };
            let prev = self.obs_stats_prev.entry(n.label.clone()).or_default();
            for (i, loss) in [
                (obs_stat::SAMPLES_LOST, "egress_samples_lost"),
                (obs_stat::SAMPLES_SUPPRESSED, "egress_samples_suppressed"),
                (obs_stat::PEERS_MAP_FULL, "vxlan_peers_uncounted"),
            ] {
                let i = i as usize;
                m.observer_losses
                    .get_or_create(&ObserverLossLabels {
                        node: n.label.clone(),
                        loss: loss.into(),
                    })
                    .inc_by(stats[i].saturating_sub(prev[i]));
            }
            *prev = stats;
        }

        // Program cost, summed over the instances of each program (one
        // observer set per node). Zero unless kernel.bpf_stats_enabled=1.
        let mut totals: HashMap<String, (u64, u64)> = HashMap::new();
        let all = datapath.program_stats().into_iter().chain(
            self.nodes
                .iter()
                .filter_map(|n| n.observers.as_ref())
                .flat_map(|o| o.program_stats()),
        );
        for p in all {
            let t = totals.entry(p.name).or_default();
            t.0 += p.run_time_ns;
            t.1 += p.runs;
        }
        for (name, (ns, runs)) in totals {
            let (ns0, runs0) = self
                .programs_prev
                .insert(name.clone(), (ns, runs))
                .unwrap_or_default();
            let labels = ProgramLabels { program: name };
            m.program_run_seconds
                .get_or_create(&labels)
                .inc_by(ns.saturating_sub(ns0) as f64 / 1e9);
            m.program_runs
                .get_or_create(&labels)
                .inc_by(runs.saturating_sub(runs0));
        }
    }

    /// A status line on stderr when anything was lost in the kernel since
    /// the last one (at most every `LOSS_STATUS_EVERY`), and at the end if
    /// anything was lost at all.
    fn losses_status(&mut self, last: bool) {
        let k = &self.stats_prev;
        let obs = |i: u32| -> u64 { self.obs_stats_prev.values().map(|s| s[i as usize]).sum() };
        let now = [
            k[drop_stat::MAP_FULL as usize],
            k[drop_stat::LOST as usize],
            k[drop_stat::SUPPRESSED as usize],
            k[drop_stat::ERRORS as usize],
            obs(obs_stat::SAMPLES_LOST),
            obs(obs_stat::SAMPLES_SUPPRESSED),
            obs(obs_stat::PEERS_MAP_FULL),
        ];
        let grew = now != self.losses_said.1;
        let due = self
            .losses_said
            .0
            .is_none_or(|t| t.elapsed() >= LOSS_STATUS_EVERY);
        if !(grew && due || last && now.iter().any(|&n| n > 0)) {
            return;
        }
        self.printer.note(&explain::losses(now));
        self.losses_said = (Some(Instant::now()), now);
    }

    fn observers(&mut self, ni: usize) {
        let node = self.nodes[ni].label.clone();
        let Some(obs) = self.nodes[ni].observers.as_mut() else {
            return;
        };
        let m = &self.shared.metrics;
        if let Ok(c) = obs.counters() {
            let slots: Vec<(u32, String)> = obs
                .ifaces
                .slots()
                .map(|(slot, (name, _))| (slot, name.clone()))
                .collect();
            for (slot, iface) in slots {
                for d in [direction::INGRESS, direction::EGRESS] {
                    if !obs.attached(&iface, d == direction::INGRESS) {
                        continue;
                    }
                    let now = c[slot as usize][d as usize];
                    let prev = self.obs_prev.insert((ni, slot, d), now).unwrap_or_default();
                    let labels = IfaceLabels {
                        node: node.clone(),
                        iface: iface.clone(),
                        role: role_name(role_of_slot(slot)).into(),
                        direction: if d == direction::INGRESS {
                            "ingress"
                        } else {
                            "egress"
                        }
                        .into(),
                    };
                    m.iface_pod_packets
                        .get_or_create(&labels)
                        .inc_by(now.pod_packets - prev.pod_packets);
                    m.iface_pod_bytes
                        .get_or_create(&labels)
                        .inc_by(now.pod_bytes - prev.pod_bytes);
                    if now.unnat_packets > prev.unnat_packets {
                        let l = EgressLabels {
                            node: node.clone(),
                            iface: iface.clone(),
                        };
                        m.unnat_egress
                            .get_or_create(&l)
                            .inc_by(now.unnat_packets - prev.unnat_packets);
                        m.unnat_egress_bytes
                            .get_or_create(&l)
                            .inc_by(now.unnat_bytes - prev.unnat_bytes);
                    }
                }
            }
        }
        if let Ok(peers) = obs.peers() {
            for (peer, d, c) in peers {
                let prev = self
                    .peers_prev
                    .insert((ni, peer, d), c.packets)
                    .unwrap_or(0);
                m.vxlan_packets
                    .get_or_create(&PeerLabels {
                        node: node.clone(),
                        peer: peer.to_string(),
                        direction: if d == direction::INGRESS {
                            "ingress"
                        } else {
                            "egress"
                        }
                        .into(),
                    })
                    .inc_by(c.packets.saturating_sub(prev));
            }
        }
        // Un-NATed pod egress leaves by any underlay (a second NIC holding
        // the default route, too).
        let (total, total_bytes) = self
            .obs_prev
            .iter()
            .filter(|((n, slot, d), _)| {
                *n == ni && role_of_slot(*slot) == role::UNDERLAY && *d == direction::EGRESS
            })
            .fold((0u64, 0u64), |(p, b), (_, c)| {
                (p + c.unnat_packets, b + c.unnat_bytes)
            });
        let samples = obs.egress_samples();
        let names: Vec<(u32, String)> = samples
            .iter()
            .map(|s| {
                let name = obs
                    .ifaces
                    .name_of(s.ifindex)
                    .map_or_else(|| format!("ifindex {}", s.ifindex), str::to_owned);
                (s.ifindex, name)
            })
            .collect();
        for (s, (_, device)) in samples.iter().zip(names) {
            let Some(flow) = Flow::from_hdr(&s.flow) else {
                continue;
            };
            // Each pod→destination pair once in full per device it leaves
            // by; the count goes on in metrics.
            if !self
                .egress_seen
                .insert((ni, flow.src, flow.dst, device.clone()))
            {
                continue;
            }
            let mut r = self.egress_record(ni, &node, Some(&device), &flow, total);
            r.new_packets = total;
            r.bytes = total_bytes;
            self.printer.record(&r, true);
            self.egress_printed.insert(ni, (Instant::now(), total, r));
        }
        // Summaries of ongoing un-NATed egress: the latest full record with
        // its counts brought up to date (and its pods named again), as a
        // drop site's summaries are.
        if let Some((t, printed, last)) = self.egress_printed.get(&ni)
            && total > *printed
            && t.elapsed() >= self.summary_every
        {
            let mut r = last.clone();
            r.new_packets = total - printed;
            r.packets = total;
            r.bytes = total_bytes;
            self.pipeline.name_pods(&mut r);
            self.printer.record(&r, false);
            self.egress_printed.insert(ni, (Instant::now(), total, r));
        }
    }

    fn egress_record(
        &self,
        ni: usize,
        node: &str,
        underlay: Option<&str>,
        flow: &Flow,
        total: u64,
    ) -> Record {
        let pod = self.pipeline.cluster().pod_cidr_of(flow.src);
        // The MASQUERADE finding of this node says why, when there is one.
        let finding = self
            .findings
            .get(&ni)
            .and_then(|f| {
                f.iter()
                    .find(|l| l.finding == FindingId::MasqueradeCidrMismatch.as_str())
            })
            .map(|_| FindingId::MasqueradeCidrMismatch);
        let (explanation, fix) = explain::egress(underlay, flow, pod, finding.is_some());
        let mut r = Record {
            kind: Kind::Egress,
            node: node.to_owned(),
            out_iface: underlay.map(str::to_owned),
            hook: Some(Hook::Postrouting),
            table: Some("nat".into()),
            chain: Some("POSTROUTING".into()),
            packets: total,
            evidence: Some(Evidence::Kernel),
            explanation: Some(explanation),
            fix: Some(fix),
            finding,
            ..Record::default()
        };
        r.set_flow(flow);
        self.pipeline.name_pods(&mut r);
        r
    }

    /// Static findings of a node's current rules: new ones are printed, and
    /// the gauge follows the current set.
    fn findings(&mut self, ni: usize) {
        let node = &self.nodes[ni];
        let Some(rules) = &node.rules else {
            // A node whose namespace went: its findings went with it.
            for l in self.findings.remove(&ni).unwrap_or_default() {
                self.shared.metrics.findings.remove(&l);
            }
            return;
        };
        let facts = node.facts();
        // No --pod-cidr: the node's own rules or routes say, as `check`
        // infers it (one function); neither: no pod flows to probe, and
        // the node's findings go.
        let mut cluster = self.pipeline.cluster().clone();
        let inferred = cluster.pod_cidrs.is_empty().then(|| {
            PodCidrs::infer(
                rules.current.all().map(|(_, rs)| rs),
                &facts,
                cluster.vxlan_port,
            )
        });
        if let Some(i) = &inferred {
            cluster.pod_cidrs = i.nets();
        }
        let all = if cluster.pod_cidrs.is_empty() {
            Vec::new()
        } else {
            check_node(rules.current.all().map(|(_, rs)| rs), &cluster, &facts)
        };
        let label = node.label.clone();
        if let Some(i) = inferred
            && self.nodes[ni].pod_cidrs.as_ref() != Some(&i)
        {
            log::warn!("{label}: findings: {}", explain::check::pod_cidrs_note(&i));
            self.nodes[ni].pod_cidrs = Some(i);
        }
        let labels: Vec<FindingLabels> = all
            .iter()
            .map(|f| FindingLabels {
                node: label.clone(),
                finding: f.id.as_str().to_owned(),
                severity: f.severity.as_str().to_owned(),
                owner: f.owner.map(|o| o.as_str()).unwrap_or_default().to_owned(),
                chain: f.chain.clone().unwrap_or_default(),
            })
            .collect();
        let old = self.findings.insert(ni, labels.clone()).unwrap_or_default();
        for l in old.iter().filter(|l| !labels.contains(l)) {
            self.shared.metrics.findings.remove(l);
        }
        for (f, l) in all.into_iter().zip(&labels) {
            self.shared.metrics.findings.get_or_create(l).set(1);
            if old.contains(l) || f.severity < Severity::Warning {
                continue;
            }
            let r = Record {
                kind: Kind::Finding,
                node: label.clone(),
                hook: f.hook,
                table: f.table,
                chain: f.chain,
                rule: f.rule,
                rule_no: f.rule_no,
                policy: f.policy,
                verdict: f.verdict,
                reject_with: f.reject_with,
                owner: f.owner,
                leftover: f.leftover,
                service: f.service,
                finding: Some(f.id),
                severity: Some(f.severity),
                explanation: Some(f.explanation),
                fix: Some(f.fix),
                fix_check: f.fix_check,
                assumptions: f.assumptions,
                unmodelled: f.unmodelled,
                ..Record::default()
            };
            self.printer.record(&r, true);
        }
    }
}
