//! `netdrop watch`: the live loop. Every interval it reads the kernel's
//! per-site counters (exact) and the rate-limited samples (flows), joins
//! each drop with the rules in force on its node, and reports: stdout
//! records, Prometheus metrics, `/explanations`.

mod node;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use netdrop_common::{DropCounters, DropKey, DropSample, ObsCounters, direction, drop_stat, role};

use netdrop_model::{
    BridgePorts, Evidence, Family, FindingId, Hook, Packet, Severity, Verdict, attribute,
    check::Cluster, rules::CtState,
};

use self::node::Node;
use crate::{
    capture::{
        CaptureOptions, Datapath, DropProbe,
        observe::{ObserverOptions, role_name},
    },
    config::WatchArgs,
    decode::{Decoder, DropSite, flow::Flow, hook_from_kernel},
    explain::{self, Explanation, check::check_node},
    export::{
        metrics::{
            self, DropLabels, EgressLabels, FindingLabels, IfaceLabels, NodeInfoLabels, NodeLabels,
            PeerLabels, ProgramLabels, Shared, SiteInfoLabels, VxlanDropLabels,
        },
        record::{Kind, Record},
        stdout::Printer,
    },
    netns::Netns,
    preflight,
};

/// Rules are re-read at least this often to notice changes (kube-proxy
/// rewrites them), and whenever a new flow needs attribution.
const RULES_RECHECK: Duration = Duration::from_secs(10);

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    run_until(args, std::future::pending()).await
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
        args.netns
            .iter()
            .map(|n| Netns::named(n))
            .collect::<Result<Vec<_>, _>>()?
    };
    let shared = metrics::new_shared();
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
    let mut nodes: Vec<Node> = netns
        .iter()
        .cloned()
        .map(|n| Node::new(n, with_observers.then_some(&obs_opts)))
        .collect();
    // The first rules snapshot is taken before the drop probe attaches, so
    // rule counters grow by at least every drop the kernel then counts.
    for n in &mut nodes {
        n.refresh_rules(Duration::ZERO);
    }
    let (mut datapath, kernel) = Datapath::load(&CaptureOptions {
        btf_path: args.btf.clone(),
        probe: args.drop_probe,
        pod_cidrs: cluster.pod_cidrs.clone(),
        keep_all: args.all || cluster.pod_cidrs.is_empty(),
        vxlan_port: cluster.vxlan_port,
        sample_rate: args.sample_rate,
    })
    .context("starting the kernel datapath")?;

    let printer = Printer::new(args.output);
    let mut w = Watcher {
        decoder: Decoder::new(kernel, netns),
        printer,
        shared,
        nodes,
        cluster,
        summary_every: args.summary_interval,
        sites: HashMap::new(),
        latest: HashMap::new(),
        awaiting_sample: HashMap::new(),
        closing: false,
        stats_prev: [0; drop_stat::COUNT as usize],
        programs_prev: HashMap::new(),
        obs_prev: HashMap::new(),
        peers_prev: HashMap::new(),
        egress_seen: HashSet::new(),
        egress_printed: HashMap::new(),
        findings: HashMap::new(),
        last_recheck: Instant::now(),
        last_poll: None,
        drops_since: Instant::now(),
    };
    for i in 0..w.nodes.len() {
        w.node_series(i, datapath.probe());
        w.findings(i);
    }
    w.drops_since = Instant::now();
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
            _ = tick.tick() => w.poll(&mut datapath)?,
            () = &mut deadline => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut stop => break,
        }
    }
    // Report what arrived since the last tick before detaching, and the
    // final counts of sites whose last summary is behind.
    w.closing = true;
    w.poll(&mut datapath)?;
    w.flush();
    Ok(())
}

/// An attribution (or the knowledge that none was found).
type Attributed = Option<(Explanation, Evidence)>;

/// How long a new drop site waits for its first sample before it is
/// reported without one.
const SAMPLE_GRACE: Duration = Duration::from_secs(1);

/// What the watcher remembers about one drop site.
#[derive(Default)]
struct Site {
    /// The kernel's counters of this key, as of the last poll.
    counters: DropCounters,
    /// What this site's records report: the drops credited to it. The
    /// kernel's counts, except for a key with an ambiguous hook (bridged,
    /// loopback, hairpin), whose drops are split between its two hooks'
    /// sites by the samples' hook.
    total: DropCounters,
    printed: Option<Instant>,
    /// Packets as of the last printed record (summaries report the growth).
    printed_packets: u64,
    /// The latest record of the site.
    last: Option<Record>,
    /// (rules generation, flow) → attribution, so a flow seen before costs
    /// a lookup, not a simulation.
    attribution: Option<(u64, Flow, Attributed)>,
    labels: Option<DropLabels>,
}

struct Watcher {
    decoder: Decoder,
    printer: Printer,
    shared: Arc<Shared>,
    nodes: Vec<Node>,
    cluster: Cluster,
    summary_every: Duration,
    sites: HashMap<DropKey, Site>,
    latest: HashMap<DropKey, DropSample>,
    /// New sites counted before their first sample was read (the kernel
    /// counts, then samples), since when: reported once it arrives.
    awaiting_sample: HashMap<DropKey, Instant>,
    /// The last poll before exit: report every site, sample or not.
    closing: bool,
    stats_prev: [u64; drop_stat::COUNT as usize],
    /// Program name → (run time ns, runs) as of the last poll.
    programs_prev: HashMap<String, (u64, u64)>,
    obs_prev: HashMap<(usize, u32, u32), ObsCounters>,
    peers_prev: HashMap<(usize, std::net::IpAddr, u32), u64>,
    egress_seen: HashSet<(usize, IpAddr, IpAddr)>,
    egress_printed: HashMap<usize, (Instant, u64)>,
    /// Active findings per node (their metric labels).
    findings: HashMap<usize, Vec<FindingLabels>>,
    last_recheck: Instant,
    /// Start of the previous poll, and the earliest time the drops of the
    /// current poll can have happened.
    last_poll: Option<Instant>,
    drops_since: Instant,
}

fn icmp_name(t: u8) -> String {
    match t {
        0 => "echo-reply".into(),
        8 => "echo-request".into(),
        3 => "destination-unreachable".into(),
        11 => "time-exceeded".into(),
        n => n.to_string(),
    }
}

impl Watcher {
    fn node_index(&self, netns: u32) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.netns.inode == u64::from(netns))
    }

    fn poll(&mut self, datapath: &mut Datapath) -> anyhow::Result<()> {
        // Drops counted in this poll happened after the previous one began.
        self.drops_since = self
            .last_poll
            .replace(Instant::now())
            .unwrap_or(self.drops_since);
        for s in datapath.samples() {
            self.latest.insert(s.key, s);
        }
        for (key, now) in datapath.drops()? {
            let Some(ni) = self.node_index(key.netns) else {
                continue;
            };
            let before = self.sites.get(&key).map(|s| s.counters).unwrap_or_default();
            if now.packets == before.packets {
                continue;
            }
            // The first drop of a site is always sampled, right after it is
            // counted: a read between the two sees the count alone. Wait for
            // the sample (its flow, and the hook of ambiguous keys) rather
            // than report a site without it; not forever (a full ring buffer
            // loses samples).
            if !self.closing && !self.sites.contains_key(&key) && !self.latest.contains_key(&key) {
                let since = *self.awaiting_sample.entry(key).or_insert_with(Instant::now);
                if since.elapsed() < SAMPLE_GRACE {
                    continue;
                }
            }
            self.awaiting_sample.remove(&key);
            self.drop_site(ni, key, now, before);
        }
        self.kernel_stats(datapath);
        for ni in 0..self.nodes.len() {
            self.observers(ni);
        }
        if self.last_recheck.elapsed() >= RULES_RECHECK {
            self.last_recheck = Instant::now();
            for ni in 0..self.nodes.len() {
                if self.nodes[ni].refresh_rules(Duration::ZERO) {
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
        Ok(())
    }

    fn packet_for(
        &self,
        ni: usize,
        site: &DropSite,
        flow: &Flow,
        sample: &DropSample,
        bridged: Option<BridgePorts>,
    ) -> Option<Packet> {
        let hook = site.hook?;
        let mut p = Packet::new(hook, flow.proto_number(), flow.src, flow.dst);
        p.sport = flow.sport;
        p.dport = flow.dport;
        p.in_iface = site.in_iface.clone();
        p.out_iface = site.out_iface.clone();
        p.mark = sample.mark;
        // The kernel sample carries no conntrack state: a drop is most often
        // the first packet of a flow that never got through.
        p.ct = CtState::New;
        p.icmp_type = flow.icmp_type.map(icmp_name);
        p.local_addrs = Some(self.nodes[ni].local_addrs.clone());
        p.bridged = bridged;
        Some(p)
    }

    fn attribute(
        &mut self,
        ni: usize,
        key: DropKey,
        flow: &Flow,
        pkt: Packet,
        delta: u64,
    ) -> Attributed {
        let generation = self.nodes[ni].rules.as_ref().map_or(0, |r| r.generation);
        if let Some(Some((g, f, cached))) = self.sites.get(&key).map(|s| s.attribution.as_ref())
            && *g == generation
            && f == flow
        {
            return cached.clone();
        }
        // The rules in force now, read after these drops (so their counters
        // include them), unless a read since the last poll already is.
        self.nodes[ni].refresh_rules_since(self.drops_since);
        let node = &self.nodes[ni];
        let mut found = None;
        for (after, before, owners) in node.rulesets(Family::of(flow.src)) {
            if let Some(a) = attribute(before, after, owners, &pkt, delta) {
                let better = matches!(
                    (&found, a.evidence),
                    (None, _) | (Some((_, Evidence::Simulated)), Evidence::Counters)
                );
                if better {
                    let x = explain::explain(after, owners, &self.cluster, &pkt, a.decision);
                    found = Some((x, a.evidence));
                }
            }
        }
        let generation = node.rules.as_ref().map_or(0, |r| r.generation);
        self.sites.entry(key).or_default().attribution =
            Some((generation, flow.clone(), found.clone()));
        found
    }

    fn drop_site(&mut self, ni: usize, key: DropKey, now: DropCounters, before: DropCounters) {
        let delta = now.packets - before.packets;
        let delta_bytes = now.bytes.saturating_sub(before.bytes);
        let mut site = self.decoder.decode(&key);
        let sample = self.latest.get(&key).copied();
        // A key whose routing state was ambiguous (bridged, loopback,
        // hairpin) counts two hooks' drops together; the latest sample's
        // stack walk says which these are, and they are reported as that
        // hook's site.
        let skey = if netdrop_common::hook::from_stack(key.hook) {
            let h = sample.map_or(key.hook, |s| s.hook);
            site.hook = hook_from_kernel(h);
            DropKey { hook: h, ..key }
        } else {
            key
        };
        self.sites.entry(key).or_default().counters = now;
        let total = {
            let s = self.sites.entry(skey).or_default();
            s.total.packets += delta;
            s.total.bytes += delta_bytes;
            s.total
        };
        let flow = sample.and_then(|s| Flow::from_hdr(&s.outer));
        let inner = sample.and_then(|s| Flow::from_hdr(&s.inner));
        let bridged = match &sample {
            Some(s) if site.bridged => {
                let (physdev_in, physdev_out) = self.decoder.bridge_ports(key.netns, s);
                Some(BridgePorts {
                    physdev_in,
                    physdev_out,
                })
            }
            _ => None,
        };
        let attribution = match (&flow, &sample) {
            (Some(f), Some(s)) if site.netfilter => self
                .packet_for(ni, &site, f, s, bridged.clone())
                .and_then(|pkt| self.attribute(ni, skey, f, pkt, delta)),
            _ => None,
        };
        let node = self.nodes[ni].label.clone();
        let mut r = Record {
            kind: Kind::Drop,
            node: node.clone(),
            hook: site.hook,
            reason: Some(site.reason.clone()),
            location: Some(site.location.clone()),
            in_iface: site.in_iface.clone(),
            out_iface: site.out_iface.clone(),
            bridged: site.bridged,
            physdev_in: bridged.as_ref().and_then(|b| b.physdev_in.clone()),
            physdev_out: bridged.as_ref().and_then(|b| b.physdev_out.clone()),
            proto: site.proto.clone(),
            inner,
            vxlan: site.vxlan,
            vni: sample.filter(|s| s.inner.family != 0).map(|s| s.vni),
            packets: total.packets,
            bytes: total.bytes,
            new_packets: delta,
            evidence: Some(Evidence::Kernel),
            ..Record::default()
        };
        if let Some(f) = &flow {
            r.set_flow(f);
        }
        match &attribution {
            Some((x, ev)) => {
                let e = &x.decision;
                r.table = Some(e.table.clone());
                r.chain = Some(e.chain.clone());
                r.rule = e.rule.clone();
                r.rule_no = e.rule_no;
                r.policy = e.policy;
                r.verdict = Some(e.verdict);
                r.reject_with = e.reject_with.clone();
                r.owner = Some(e.owner);
                r.leftover = e.leftover;
                r.service = e.service.clone();
                r.explanation = Some(match &bridged {
                    Some(b) => explain::bridged(&x.explanation, site.in_iface.as_deref(), b),
                    None => x.explanation.clone(),
                });
                r.fix = Some(x.fix.clone());
                r.assumptions = e.assumptions.clone();
                r.unmodelled = e.unmodelled;
                r.evidence = Some(*ev);
            }
            None if site.netfilter => {
                r.explanation = Some(explain::unattributed(
                    &node,
                    site.hook,
                    &site.location,
                    flow.is_some(),
                ));
                if self.sites.get(&skey).is_none_or(|s| s.printed.is_none()) {
                    self.shared
                        .metrics
                        .attribution_failures
                        .get_or_create(&NodeLabels { node: node.clone() })
                        .inc();
                }
            }
            None => {
                let facts = explain::kernel::KernelFacts {
                    ip_forward: explain::kernel::needs_ip_forward(&site.reason)
                        .then(|| self.nodes[ni].ip_forward())
                        .flatten(),
                };
                let (why, fix) =
                    explain::kernel::explain(&site.reason, &site, flow.as_ref(), facts);
                r.explanation = Some(why);
                r.fix = fix;
            }
        }
        // Metrics: the labels of the rule that owns the drop.
        let labels = DropLabels {
            node: node.clone(),
            reason: site.reason.clone(),
            hook: r.hook.map(|h| h.as_str().to_owned()).unwrap_or_default(),
            table: r.table.clone().unwrap_or_default(),
            chain: r.chain.clone().unwrap_or_default(),
            verdict: r.verdict.unwrap_or(Verdict::Drop).as_str().to_owned(),
            owner: match r.owner {
                Some(o) => o.as_str(),
                None if site.netfilter => "unknown",
                None => "kernel",
            }
            .to_owned(),
        };
        let m = &self.shared.metrics;
        m.drops.get_or_create(&labels).inc_by(delta);
        m.drop_bytes.get_or_create(&labels).inc_by(delta_bytes);
        if site.vxlan {
            m.vxlan_drops
                .get_or_create(&VxlanDropLabels {
                    node: node.clone(),
                    peer: flow.as_ref().map(|f| f.src.to_string()).unwrap_or_default(),
                    reason: site.reason.clone(),
                    hook: labels.hook.clone(),
                })
                .inc_by(delta);
        }
        if let (Some(explanation), Some(fix)) = (&r.explanation, &r.fix) {
            m.drop_site_info
                .get_or_create(&SiteInfoLabels {
                    node: node.clone(),
                    hook: labels.hook.clone(),
                    table: labels.table.clone(),
                    chain: labels.chain.clone(),
                    rule: r.rule.clone().unwrap_or_else(|| "policy".into()),
                    verdict: labels.verdict.clone(),
                    owner: labels.owner.clone(),
                    leftover: r.leftover.to_string(),
                    explanation: explanation.clone(),
                    fix: fix.clone(),
                })
                .set(1);
        }
        if let Ok(mut list) = self.shared.explanations.lock() {
            list.retain(|x| {
                !(x.node == r.node
                    && x.hook == r.hook
                    && x.table == r.table
                    && x.chain == r.chain
                    && x.rule == r.rule
                    && x.reason == r.reason
                    && x.in_iface == r.in_iface
                    && x.out_iface == r.out_iface)
            });
            list.push(r.clone());
        }
        // Print the first drop of a site in full; then summaries, rate-limited.
        let s = self.sites.entry(skey).or_default();
        let first = s.printed.is_none();
        if s.printed.is_none_or(|t| t.elapsed() >= self.summary_every) {
            r.new_packets = total.packets - s.printed_packets;
            self.printer.record(&r, first);
            s.printed = Some(Instant::now());
            s.printed_packets = total.packets;
        }
        s.labels = Some(labels);
        s.last = Some(r);
    }

    /// Prints a last summary of every site that grew since it was printed.
    fn flush(&mut self) {
        for s in self.sites.values_mut() {
            let (Some(r), true) = (&mut s.last, s.total.packets > s.printed_packets) else {
                continue;
            };
            r.packets = s.total.packets;
            r.bytes = s.total.bytes;
            r.new_packets = s.total.packets - s.printed_packets;
            self.printer.record(r, false);
            s.printed_packets = s.total.packets;
        }
    }

    /// Series every node has from the start, so dashboards and alerts see
    /// a 0 rather than nothing.
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
        m.attribution_failures.get_or_create(&labels).inc_by(0);
    }

    fn kernel_stats(&mut self, datapath: &Datapath) {
        let Ok(stats) = datapath.stats() else { return };
        let m = &self.shared.metrics;
        for (i, c) in [
            (drop_stat::LOST, &m.samples_lost),
            (drop_stat::SUPPRESSED, &m.samples_suppressed),
            (drop_stat::FILTERED, &m.drops_filtered),
        ] {
            let i = i as usize;
            c.inc_by(stats[i].saturating_sub(self.stats_prev[i]));
        }
        self.stats_prev = stats;

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

    fn observers(&mut self, ni: usize) {
        let node = self.nodes[ni].label.clone();
        let Some(obs) = self.nodes[ni].observers.as_mut() else {
            return;
        };
        let m = &self.shared.metrics;
        if let Ok(c) = obs.counters() {
            for r in 0..role::COUNT {
                let Some((iface, _)) = obs.ifaces.by_role(r).cloned() else {
                    continue;
                };
                for d in [direction::INGRESS, direction::EGRESS] {
                    let now = c[r as usize][d as usize];
                    let prev = self.obs_prev.insert((ni, r, d), now).unwrap_or_default();
                    let labels = IfaceLabels {
                        node: node.clone(),
                        iface: iface.clone(),
                        role: role_name(r).into(),
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
        let underlay = obs.ifaces.underlay.as_ref().map(|u| u.0.clone());
        let total: u64 = self
            .obs_prev
            .get(&(ni, role::UNDERLAY, direction::EGRESS))
            .map_or(0, |c| c.unnat_packets);
        let samples = obs.egress_samples();
        for s in samples {
            let Some(flow) = Flow::from_hdr(&s.flow) else {
                continue;
            };
            // Each pod→destination pair once in full; the count goes on in metrics.
            if !self.egress_seen.insert((ni, flow.src, flow.dst)) {
                continue;
            }
            let mut r = self.egress_record(ni, &node, underlay.as_deref(), &flow, total);
            r.new_packets = total;
            self.printer.record(&r, true);
            self.egress_printed.insert(ni, (Instant::now(), total));
        }
        // Summaries of ongoing un-NATed egress.
        if let Some((t, printed)) = self.egress_printed.get(&ni).copied()
            && total > printed
            && t.elapsed() >= self.summary_every
        {
            let r = Record {
                kind: Kind::Egress,
                node: node.clone(),
                out_iface: underlay,
                packets: total,
                new_packets: total - printed,
                evidence: Some(Evidence::Kernel),
                ..Record::default()
            };
            self.printer.record(&r, false);
            self.egress_printed.insert(ni, (Instant::now(), total));
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
        let pod = self.cluster.pod_cidr_of(flow.src);
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
        r
    }

    /// Static findings of a node's current rules: new ones are printed, and
    /// the gauge follows the current set.
    fn findings(&mut self, ni: usize) {
        let node = &self.nodes[ni];
        let Some(rules) = &node.rules else { return };
        if self.cluster.pod_cidrs.is_empty() {
            return;
        }
        let facts = node.facts();
        let all = check_node(rules.current.all().map(|(_, rs)| rs), &self.cluster, &facts);
        let labels: Vec<FindingLabels> = all
            .iter()
            .map(|f| FindingLabels {
                node: node.label.clone(),
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
                node: node.label.clone(),
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
                assumptions: f.assumptions,
                unmodelled: f.unmodelled,
                ..Record::default()
            };
            self.printer.record(&r, true);
        }
    }
}
