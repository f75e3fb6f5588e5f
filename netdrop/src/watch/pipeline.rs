//! The drop pipeline: the kernel's exact counts and rate-limited samples →
//! decoded drop sites → attribution to a rule → explanation → records and
//! metric updates. It does no I/O of its own: kernel events come through
//! [`DropEvents`] (the live datapath, or a recording), a node's rules and
//! facts through [`NodeView`]; so `watch`, the unit tests (fed with
//! recorded events) and the benchmark run this same code.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use netdrop_common::{DropCounters, DropKey, DropSample};
use netdrop_model::{
    BridgePorts, CounterSnapshot, Evidence, Family, OwnerContext, Packet, Ruleset, attribute,
};
use netdrop_model::{check::Cluster, rules::CtState};

use crate::{
    attribute::names::PodLookup,
    capture::Datapath,
    decode::{Decoder, DropSite, flow::Flow, hook_from_kernel},
    explain::{self, Explanation},
    export::{
        metrics::{Shared, SiteSeries},
        record::{Kind, Record},
    },
};

/// Every drop site's counters at one moment.
pub type Counts = Vec<(DropKey, DropCounters)>;

/// Where kernel drop events come from.
pub trait DropEvents {
    /// The samples taken since the last call.
    fn samples(&mut self) -> Vec<DropSample>;
    /// Every drop site's counters, as of now (exact).
    fn counts(&mut self) -> anyhow::Result<Counts>;
}

impl DropEvents for Datapath {
    fn samples(&mut self) -> Vec<DropSample> {
        Datapath::samples(self)
    }

    fn counts(&mut self) -> anyhow::Result<Counts> {
        Ok(self.drops()?)
    }
}

/// The rules in force on a node as the pipeline uses them: every ruleset
/// (per family and backend), the snapshot before it (whose counters make
/// evidence), their owners, and a generation that changes with them.
pub trait RulesView {
    /// Rulesets of a family: (now, before, owners).
    fn rulesets(&self, family: Family) -> Vec<(&Ruleset, Option<&CounterSnapshot>, &OwnerContext)>;
    /// Changes whenever the rules do (attribution caches are keyed by it).
    fn generation(&self) -> u64;
}

/// What the pipeline asks of an observed node.
pub trait NodeView {
    fn label(&self) -> &str;
    /// Inode of its network namespace (the kernel's key for it).
    fn inode(&self) -> u64;
    /// The rules in force, read after `since` (re-read if they are older:
    /// their counters must include the drops being attributed).
    fn rules_since(&mut self, since: Instant) -> Option<&dyn RulesView>;
    /// The generation of the rules last read, without reading them.
    fn rules_generation(&self) -> Option<u64>;
    /// The node's addresses (`addrtype LOCAL`).
    fn local_addrs(&self) -> &[IpAddr];
    /// `net.ipv4.ip_forward`, for kernel drop reasons that hinge on it.
    fn ip_forward(&self) -> Option<bool>;
}

/// An attribution (or the knowledge that none was found).
type Attributed = Option<(Explanation, Evidence)>;

/// How long a new drop site waits for its first sample before it is
/// reported without one.
const SAMPLE_GRACE: Duration = Duration::from_secs(1);

/// The rule a site's samples name: table, chain and rule text (`None` for
/// the chain's policy).
type RuleId = (String, String, Option<String>);

/// A drop site as records report it: the drops of one kernel key (its hook
/// told by the samples for an ambiguous key) that one rule dropped, or
/// none. The kernel cannot tell rules apart (every rule of a hook frees the
/// packet from the same code), so two rules dropping at one key are two
/// sites, and the key's exact count is split between them by the samples.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SiteId {
    key: DropKey,
    rule: Option<RuleId>,
}

/// What the pipeline remembers about one drop site.
#[derive(Default)]
struct Site {
    /// Its kernel key, with the hook told.
    key: DropKey,
    /// What this site's records report: the drops credited to it.
    total: DropCounters,
    printed: Option<Instant>,
    /// Packets as of the last printed record (summaries report the growth).
    printed_packets: u64,
    /// The latest record of the site.
    last: Option<Record>,
    /// Its latest sample and that sample's arrival number.
    sample: Option<(DropSample, u64)>,
    /// What `last` was built from: the sample (its arrival number) and the
    /// rules generation. While both hold, a poll only counts.
    built: Option<(Option<u64>, Option<u64>)>,
    series: Option<SiteSeries>,
    /// The words its info series was last set with.
    info: Option<(String, String)>,
}

impl Site {
    /// A summary of the growth since the site was last printed, if any.
    fn summary(&mut self) -> Option<Report> {
        let (Some(r), true) = (&mut self.last, self.total.packets > self.printed_packets) else {
            return None;
        };
        r.packets = self.total.packets;
        r.bytes = self.total.bytes;
        r.new_packets = self.total.packets - self.printed_packets;
        self.printed = Some(Instant::now());
        self.printed_packets = self.total.packets;
        Some(Report {
            record: r.clone(),
            detail: false,
        })
    }
}

/// The attributions of one key's flows under one rules generation, so a
/// flow seen before costs a lookup, not a walk.
#[derive(Default)]
struct FlowCache {
    generation: Option<u64>,
    /// Each flow's attribution and the site it names.
    flows: HashMap<Flow, (Attributed, usize)>,
}

/// At most this many flows are remembered per key (a scan of many ports
/// must not grow memory without bound).
const MAX_CACHED_FLOWS: usize = 256;

/// A sample's attribution: its site, and what building its record needs.
struct Attributing {
    attributed: Attributed,
    fresh: bool,
    /// The key decoded with its hook told, if the attribution did it.
    decoded: Option<DropSite>,
    site: usize,
}

/// The samples of one poll that name the same site.
struct Group {
    site: usize,
    /// Samples in it (the weight of its share of the key's drops).
    samples: u64,
    /// Their sizes (the weight of its share of the key's bytes).
    bytes: u64,
    /// The latest of them, with its arrival number.
    sample: Option<(DropSample, u64)>,
    attributed: Attributed,
    fresh: bool,
    /// The key decoded with its hook told, if the attribution did it.
    decoded: Option<DropSite>,
}

/// A record to print: `detail` for the first of a site (rule, why, fix).
pub struct Report {
    pub record: Record,
    pub detail: bool,
}

pub struct DropPipeline {
    decoder: Decoder,
    cluster: Cluster,
    shared: Arc<Shared>,
    summary_every: Duration,
    /// The kernel's counters of each key, as of the last poll.
    kernel: HashMap<DropKey, DropCounters>,
    /// Every site, by index (`site_ids` finds them): the hot paths carry
    /// an index, not a key of strings.
    sites: Vec<Site>,
    site_ids: HashMap<SiteId, usize>,
    /// Sites whose growth is not printed yet (their summary was not due):
    /// printed once it is, drops or not.
    pending: HashSet<usize>,
    /// The site of each key's latest sample: where its drops go in a poll
    /// without samples.
    current: HashMap<DropKey, usize>,
    /// Attributions per key (with its hook told) and flow.
    flows: HashMap<DropKey, FlowCache>,
    /// The samples of this poll per key, numbered in arrival order.
    polled: HashMap<DropKey, Vec<(DropSample, u64)>>,
    samples_read: u64,
    /// New sites counted before their first sample was read (the kernel
    /// counts, then samples), since when: reported once it arrives.
    awaiting_sample: HashMap<DropKey, Instant>,
    /// The last poll before exit: report every site, sample or not.
    closing: bool,
    /// Start of the current poll, before its counts are read: rules read
    /// after it have counters that include every drop it counts.
    counted_at: Instant,
    /// Names the pods at a drop's ends (`None`: by address only).
    pods: Option<Box<dyn PodLookup>>,
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

/// The pods at `r`'s ends, by name (the inner flow's for VXLAN), and the
/// Service its destination is, when no rule named one.
fn name_pods(pods: Option<&dyn PodLookup>, r: &mut Record) {
    let Some(pods) = pods else { return };
    let (src, dst) = match (&r.inner, r.src, r.dst) {
        (Some(i), ..) => (i.src, i.dst),
        (None, Some(s), Some(d)) => (s, d),
        _ => return,
    };
    let mut names = pods.lookup(&[src, dst]).into_iter();
    // An end the runtime does not name now keeps the name it had (no
    // answer is no proof the pod went).
    let s = names.next().flatten().or_else(|| r.src_pod.clone());
    let d = names.next().flatten().or_else(|| r.dst_pod.clone());
    // A ClusterIP not DNATed yet (no kube-proxy rule named it).
    if r.service.is_none() && d.is_none() {
        r.service = pods.service(dst);
    }
    if s != r.src_pod || d != r.dst_pod {
        r.set_pods(s, d);
    }
}

/// Splits `total` into shares proportional to `weights` (largest
/// remainders first), so the shares add up to `total` exactly.
fn split(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if sum == 0 {
        // No weights to go by: equal shares.
        return if weights.is_empty() {
            Vec::new()
        } else {
            split(total, &vec![1; weights.len()])
        };
    }
    let mut shares: Vec<(u64, u128, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let exact = u128::from(total) * u128::from(w);
            ((exact / sum) as u64, exact % sum, i)
        })
        .collect();
    let mut left = total - shares.iter().map(|s| s.0).sum::<u64>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| shares[b].1.cmp(&shares[a].1).then(a.cmp(&b)));
    for i in order {
        if left == 0 {
            break;
        }
        shares[i].0 += 1;
        left -= 1;
    }
    shares.sort_by_key(|s| s.2);
    shares.into_iter().map(|s| s.0).collect()
}

impl DropPipeline {
    pub fn new(
        decoder: Decoder,
        cluster: Cluster,
        shared: Arc<Shared>,
        summary_every: Duration,
    ) -> Self {
        Self {
            decoder,
            cluster,
            shared,
            summary_every,
            kernel: HashMap::new(),
            sites: Vec::new(),
            site_ids: HashMap::new(),
            pending: HashSet::new(),
            current: HashMap::new(),
            flows: HashMap::new(),
            polled: HashMap::new(),
            samples_read: 0,
            awaiting_sample: HashMap::new(),
            closing: false,
            counted_at: Instant::now(),
            pods: None,
        }
    }

    /// Drops name their pods through `pods` (before a site's record is
    /// kept, exported or printed: every copy of it carries the names).
    pub fn with_pods(mut self, pods: Option<Box<dyn PodLookup>>) -> Self {
        self.pods = pods;
        self
    }

    /// The pods at a record's ends, by name (the inner flow's for VXLAN).
    pub fn name_pods(&self, r: &mut Record) {
        name_pods(self.pods.as_deref(), r);
    }

    /// The nodes' namespaces changed (one appeared, went or came back).
    /// What was learnt of a namespace that went is forgotten: one made
    /// anew may get its inode (and so its drops the same keys) but has its
    /// own rules, and its first drop at a site is a new site. The kernel's
    /// counts of those keys stay the baseline its new drops grow from.
    pub fn set_nodes(&mut self, nodes: Vec<crate::netns::Netns>, gone: Option<u64>) {
        self.decoder.set_nodes(nodes);
        if let Some(inode) = gone {
            let of = |k: &DropKey| u64::from(k.netns) == inode;
            self.site_ids.retain(|id, _| !of(&id.key));
            self.current.retain(|k, _| !of(k));
            self.flows.retain(|k, _| !of(k));
            self.awaiting_sample.retain(|k, _| !of(k));
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The last poll: every site is reported, sampled or not.
    pub fn closing(&mut self) {
        self.closing = true;
    }

    /// Reads what the kernel counted and sampled since the last poll and
    /// returns the records to print; metrics and `/explanations` follow.
    pub fn poll<N: NodeView>(
        &mut self,
        events: &mut impl DropEvents,
        nodes: &mut [N],
    ) -> anyhow::Result<Vec<Report>> {
        // A rule's counter confirms drops only if read after they were
        // counted (a read of the previous poll can predate some of them).
        self.counted_at = Instant::now();
        // The kernel counts a drop, then samples it: every sample read now
        // is of a drop the counts read next include.
        for s in events.samples() {
            self.samples_read += 1;
            self.polled
                .entry(s.key)
                .or_default()
                .push((s, self.samples_read));
        }
        let mut out = Vec::new();
        for (key, now) in events.counts()? {
            let Some(node) = nodes.iter_mut().find(|n| n.inode() == u64::from(key.netns)) else {
                continue;
            };
            let before = self.kernel.get(&key).copied().unwrap_or_default();
            if now.packets == before.packets {
                continue;
            }
            // The first drop of a key is always sampled, right after it is
            // counted: a read between the two sees the count alone. Wait for
            // the sample (its flow, and the hook of ambiguous keys) rather
            // than report a site without it; not forever (a full ring buffer
            // loses samples).
            let sampled = self.polled.get(&key).is_some_and(|v| !v.is_empty());
            if !self.closing && !self.current.contains_key(&key) && !sampled {
                let since = *self.awaiting_sample.entry(key).or_insert_with(Instant::now);
                if since.elapsed() < SAMPLE_GRACE {
                    continue;
                }
            }
            self.awaiting_sample.remove(&key);
            self.kernel.insert(key, now);
            // The key's sample buffer is lent and given back, to keep its
            // allocation from poll to poll.
            let samples = self
                .polled
                .get_mut(&key)
                .map(std::mem::take)
                .unwrap_or_default();
            let delta = DropCounters {
                packets: now.packets - before.packets,
                bytes: now.bytes.saturating_sub(before.bytes),
            };
            self.count_key(node, key, delta, &samples, &mut out);
            if let Some(v) = self.polled.get_mut(&key) {
                *v = samples;
            }
        }
        // Samples of keys that did not grow are of drops counted before.
        for v in self.polled.values_mut() {
            v.clear();
        }
        // Growth held back by the summary interval, now due.
        let summary_every = self.summary_every;
        let due: Vec<usize> = self
            .pending
            .iter()
            .copied()
            .filter(|&i| {
                self.sites[i]
                    .printed
                    .is_none_or(|t| t.elapsed() >= summary_every)
            })
            .collect();
        for i in due {
            self.pending.remove(&i);
            out.extend(self.sites[i].summary());
        }
        Ok(out)
    }

    /// A last summary of every site that grew since it was printed.
    pub fn flush(&mut self) -> Vec<Report> {
        self.pending.clear();
        self.sites.iter_mut().filter_map(Site::summary).collect()
    }

    fn packet_for(
        node: &impl NodeView,
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
        p.local_addrs = Some(node.local_addrs().to_vec());
        p.bridged = bridged;
        Some(p)
    }

    /// The key with the hook a sample tells: a key whose routing state was
    /// ambiguous (bridged, loopback, hairpin) counts two hooks' drops
    /// together, and each sample's stack walk says which it is.
    fn told(key: DropKey, sample: Option<&DropSample>) -> DropKey {
        use netdrop_common::flags;
        // Which end is a pod only filters in the kernel; a site is where
        // and why packets died, so pod→pod and outside→pod drops at one
        // rule are one site (records could not tell them apart).
        let pods = flags::SRC_POD | flags::DST_POD | flags::INNER_SRC_POD | flags::INNER_DST_POD;
        let key = DropKey {
            flags: key.flags & !pods,
            ..key
        };
        match sample {
            Some(s) if netdrop_common::hook::from_stack(key.hook) => DropKey {
                hook: s.hook,
                ..key
            },
            _ => key,
        }
    }

    fn decode(&mut self, key: &DropKey, skey: &DropKey) -> DropSite {
        let mut site = self.decoder.decode(key);
        if skey.hook != key.hook {
            site.hook = hook_from_kernel(skey.hook);
        }
        site
    }

    fn bridge_ports(&mut self, site: &DropSite, sample: &DropSample) -> Option<BridgePorts> {
        if !site.bridged {
            return None;
        }
        let (physdev_in, physdev_out) = self.decoder.bridge_ports(sample.key.netns, sample);
        Some(BridgePorts {
            physdev_in,
            physdev_out,
        })
    }

    /// A sample's attribution: cached per (key, rules generation, flow),
    /// else walked through every ruleset of the flow's family, a
    /// counter-confirmed answer preferred. `drops`: how many drops of this
    /// flow the kernel counted at least (its counter must have grown so).
    fn attribute(
        &mut self,
        node: &mut impl NodeView,
        key: DropKey,
        skey: DropKey,
        sample: &DropSample,
        drops: u64,
    ) -> Attributing {
        let unattributed = |me: &mut Self, decoded: Option<DropSite>| Attributing {
            attributed: None,
            fresh: false,
            decoded,
            site: me.site_index(SiteId {
                key: skey,
                rule: None,
            }),
        };
        let Some(flow) = Flow::from_hdr(&sample.outer) else {
            return unattributed(self, None);
        };
        if let Some(c) = self.flows.get(&skey)
            && c.generation.is_some()
            && c.generation == node.rules_generation()
            && let Some((a, site)) = c.flows.get(&flow)
        {
            return Attributing {
                attributed: a.clone(),
                fresh: false,
                decoded: None,
                site: *site,
            };
        }
        let site = self.decode(&key, &skey);
        if !site.netfilter {
            return unattributed(self, Some(site));
        }
        let bridged = self.bridge_ports(&site, sample);
        let Some(pkt) = Self::packet_for(node, &site, &flow, sample, bridged) else {
            return unattributed(self, Some(site));
        };
        // The rules in force now, read after these drops were counted (so
        // their counters include them), unless a read of this poll already is.
        let Some(rules) = node.rules_since(self.counted_at) else {
            return unattributed(self, Some(site));
        };
        let generation = rules.generation();
        let mut found = None;
        for (after, before, owners) in rules.rulesets(Family::of(flow.src)) {
            if let Some(a) = attribute(before, after, owners, &pkt, drops, site.engine) {
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
        let index = self.site_index(SiteId {
            key: skey,
            rule: found.as_ref().map(|(x, _)| {
                (
                    x.decision.table.clone(),
                    x.decision.chain.clone(),
                    x.decision.rule.clone(),
                )
            }),
        });
        let cache = self.flows.entry(skey).or_default();
        if cache.generation != Some(generation) || cache.flows.len() >= MAX_CACHED_FLOWS {
            cache.flows.clear();
            cache.generation = Some(generation);
        }
        cache.flows.insert(flow, (found.clone(), index));
        Attributing {
            attributed: found,
            fresh: true,
            decoded: Some(site),
            site: index,
        }
    }

    /// The index of site `id`, added if new.
    fn site_index(&mut self, id: SiteId) -> usize {
        if let Some(&i) = self.site_ids.get(&id) {
            return i;
        }
        self.sites.push(Site {
            key: id.key,
            ..Site::default()
        });
        self.site_ids.insert(id, self.sites.len() - 1);
        self.sites.len() - 1
    }

    /// The drops a key counted in this poll, credited to the sites its
    /// samples name (in proportion to their samples: exact while every
    /// drop is sampled, i.e. below `--sample-rate`); without samples, to
    /// the site of its latest one.
    fn count_key(
        &mut self,
        node: &mut impl NodeView,
        key: DropKey,
        delta: DropCounters,
        samples: &[(DropSample, u64)],
        out: &mut Vec<Report>,
    ) {
        let generation = node.rules_generation();
        let current = self.current.get(&key).copied();
        if samples.is_empty() {
            // Unchanged sample and rules: the site's record stands.
            if let Some(i) = current
                && self.sites[i].built == Some((self.sites[i].sample.map(|x| x.1), generation))
                && self.sites[i].last.is_some()
            {
                out.extend(self.report(node, i, delta, None));
                return;
            }
        }
        let latest: Vec<(DropSample, u64)>;
        let samples = if samples.is_empty() {
            latest = current
                .and_then(|i| self.sites[i].sample)
                .into_iter()
                .collect();
            &latest[..]
        } else {
            samples
        };
        // One sample (the common case): its site takes every drop.
        if let [(s, no)] = samples {
            let a = self.attribute(node, key, Self::told(key, Some(s)), s, delta.packets);
            self.current.insert(key, a.site);
            let g = Group {
                site: a.site,
                samples: 1,
                bytes: u64::from(s.len),
                sample: Some((*s, *no)),
                attributed: a.attributed,
                fresh: a.fresh,
                decoded: a.decoded,
            };
            out.extend(self.report(node, g.site, delta, Some(g)));
            return;
        }
        // Samples per flow: one flow in the poll takes every drop of the
        // key (the rule's counter must show them all); else each flow at
        // least its samples.
        let per_flow: HashMap<Option<Flow>, u64> = if samples.len() > 1 {
            let mut m = HashMap::new();
            for (s, _) in samples {
                *m.entry(Flow::from_hdr(&s.outer)).or_default() += 1;
            }
            m
        } else {
            HashMap::new()
        };
        let mut groups: Vec<Group> = Vec::with_capacity(1);
        for (s, no) in samples {
            let skey = Self::told(key, Some(s));
            let drops = match per_flow.len() {
                0 | 1 => delta.packets,
                _ => per_flow
                    .get(&Flow::from_hdr(&s.outer))
                    .copied()
                    .unwrap_or(1),
            };
            let Attributing {
                attributed,
                fresh,
                decoded,
                site,
            } = self.attribute(node, key, skey, s, drops);
            match groups.iter_mut().find(|g| g.site == site) {
                Some(g) => {
                    g.samples += 1;
                    g.bytes += u64::from(s.len);
                    g.sample = Some((*s, *no));
                    g.attributed = attributed;
                    g.fresh |= fresh;
                    g.decoded = decoded.or(g.decoded.take());
                }
                None => groups.push(Group {
                    site,
                    samples: 1,
                    bytes: u64::from(s.len),
                    sample: Some((*s, *no)),
                    attributed,
                    fresh,
                    decoded,
                }),
            }
        }
        if groups.is_empty() {
            // Never sampled (the ring buffer lost it): the key alone.
            let site = self.site_index(SiteId { key, rule: None });
            groups.push(Group {
                site,
                samples: 1,
                bytes: 1,
                sample: None,
                attributed: None,
                fresh: false,
                decoded: None,
            });
        }
        let shares: Vec<DropCounters> = if groups.len() == 1 {
            vec![delta]
        } else {
            let weights: Vec<u64> = groups.iter().map(|g| g.samples).collect();
            let packets = split(delta.packets, &weights);
            // Bytes by the sampled packets' sizes (by count if none has one).
            let byte_weights: Vec<u64> = if groups.iter().all(|g| g.bytes > 0) {
                groups.iter().map(|g| g.bytes).collect()
            } else {
                weights
            };
            let bytes = split(delta.bytes, &byte_weights);
            packets
                .into_iter()
                .zip(bytes)
                .map(|(packets, bytes)| DropCounters { packets, bytes })
                .collect()
        };
        if let Some(g) = groups.last() {
            self.current.insert(key, g.site);
        }
        for (g, share) in groups.into_iter().zip(shares) {
            out.extend(self.report(node, g.site, share, Some(g)));
        }
    }

    /// Credits `delta` to site `id` and builds its record (from `group`'s
    /// sample and attribution when given, else the site's own); returns it
    /// when it is due for printing.
    fn report(
        &mut self,
        node: &mut impl NodeView,
        i: usize,
        delta: DropCounters,
        group: Option<Group>,
    ) -> Option<Report> {
        let summary_every = self.summary_every;
        let s = &mut self.sites[i];
        s.total.packets += delta.packets;
        s.total.bytes += delta.bytes;
        let total = s.total;
        if let Some((smp, no)) = group.as_ref().and_then(|g| g.sample) {
            s.sample = Some((smp, no));
        }
        // A site that keeps dropping with no new sample and unchanged rules:
        // the record stands, only its counts move.
        let built = Some((s.sample.map(|x| x.1), node.rules_generation()));
        if s.built == built
            && let (Some(r), Some(series)) = (&mut s.last, &s.series)
        {
            series.count(delta.packets, delta.bytes);
            r.packets = total.packets;
            r.bytes = total.bytes;
            let due = s.printed.is_none_or(|t| t.elapsed() >= summary_every);
            if !due {
                self.pending.insert(i);
                return None;
            }
            // Names asked again with each summary: ones the runtime did
            // not give in time before (it was slow or away), and a new pod
            // at an address (the runtime answers from its index, read
            // again only when pods changed).
            name_pods(self.pods.as_deref(), r);
            self.pending.remove(&i);
            r.new_packets = total.packets - s.printed_packets;
            s.printed = Some(Instant::now());
            s.printed_packets = total.packets;
            self.shared.explain_site(r);
            return Some(Report {
                record: r.clone(),
                detail: false,
            });
        }
        let sample = s.sample.map(|x| x.0);
        let skey = s.key;
        let (attribution, fresh, decoded) = match group {
            Some(g) => (g.attributed, g.fresh, g.decoded),
            // Rules changed since the record was built: the site's rule
            // stands (a rule that changed starts a site of its own with the
            // next sample), its words are re-derived.
            None => match &sample {
                Some(smp) => {
                    let a = self.attribute(node, smp.key, skey, smp, delta.packets);
                    (a.attributed, a.fresh, a.decoded)
                }
                None => (None, false, None),
            },
        };
        let key = sample.map_or(skey, |x| x.key);
        let site = match decoded {
            Some(d) => d,
            None => self.decode(&key, &skey),
        };
        let flow = sample.and_then(|s| Flow::from_hdr(&s.outer));
        let bridged = sample.and_then(|smp| self.bridge_ports(&site, &smp));
        let mut r = Record {
            kind: Kind::Drop,
            node: node.label().to_owned(),
            hook: site.hook,
            reason: Some(site.reason.clone()),
            location: Some(site.location.clone()),
            in_iface: site.in_iface.clone(),
            out_iface: site.out_iface.clone(),
            bridged: site.bridged,
            physdev_in: bridged.as_ref().and_then(|b| b.physdev_in.clone()),
            physdev_out: bridged.as_ref().and_then(|b| b.physdev_out.clone()),
            proto: site.proto.clone(),
            inner: sample.and_then(|s| Flow::from_hdr(&s.inner)),
            vxlan: site.vxlan,
            vni: sample.filter(|s| s.inner.family != 0).map(|s| s.vni),
            packets: total.packets,
            bytes: total.bytes,
            new_packets: delta.packets,
            evidence: Some(Evidence::Kernel),
            netfilter: site.netfilter,
            ..Record::default()
        };
        if let Some(f) = &flow {
            r.set_flow(f);
        }
        let first = self.sites[i].printed.is_none();
        // The words of the site for its info series: no addresses or ports.
        let mut site_words = None;
        match &attribution {
            Some((x, evidence)) => {
                site_words = Some((x.site_explanation.clone(), x.site_fix.clone()));
                r.set_decision(&x.decision);
                r.explanation = Some(match &bridged {
                    Some(b) => explain::bridged(&x.explanation, site.in_iface.as_deref(), b),
                    None => x.explanation.clone(),
                });
                r.fix = Some(x.fix.clone());
                r.fix_check = Some(x.fix_check);
                r.evidence = Some(*evidence);
            }
            None if site.netfilter => {
                r.explanation = Some(explain::unattributed(
                    &r.node,
                    site.hook,
                    &site.location,
                    site.engine,
                    flow.is_some(),
                ));
                if first {
                    self.shared.attribution_failure(&r.node);
                }
            }
            None => {
                let facts = explain::kernel::KernelFacts {
                    ip_forward: explain::kernel::needs_ip_forward(&site.reason)
                        .then(|| node.ip_forward())
                        .flatten(),
                };
                let (why, fix) =
                    explain::kernel::explain(&site.reason, &site, flow.as_ref(), facts);
                if first
                    && let (why, Some(fix)) =
                        explain::kernel::explain(&site.reason, &site, None, facts)
                {
                    site_words = Some((why, fix));
                }
                r.explanation = Some(why);
                r.fix = fix;
            }
        }
        self.name_pods(&mut r);
        let s = &mut self.sites[i];
        let series = self.shared.site_series(&r, s.series.take());
        series.count(delta.packets, delta.bytes);
        if (fresh || first)
            && let Some(words) = site_words
            && s.info.as_ref() != Some(&words)
        {
            self.shared.site_info(&r, &series, &words.0, &words.1);
            s.info = Some(words);
        }
        self.shared.explain_site(&r);
        s.series = Some(series);
        // What this record was built from (the generation after any read
        // the attribution made).
        s.built = Some((s.sample.map(|x| x.1), node.rules_generation()));
        // The first drop of a site is printed in full; then summaries,
        // rate-limited.
        let report = s
            .printed
            .is_none_or(|t| t.elapsed() >= summary_every)
            .then(|| {
                r.new_packets = total.packets - s.printed_packets;
                s.printed = Some(Instant::now());
                s.printed_packets = total.packets;
                Report {
                    record: r.clone(),
                    detail: first,
                }
            });
        s.last = Some(r);
        if report.is_some() {
            self.pending.remove(&i);
        } else {
            self.pending.insert(i);
        }
        report
    }
}

/// A recording of kernel events, replayed one poll at a time (tests and the
/// benchmark feed the pipeline with it).
#[cfg(feature = "lab")]
#[derive(Default)]
pub struct Recorded {
    polls: std::collections::VecDeque<(Vec<DropSample>, Counts)>,
}

#[cfg(feature = "lab")]
impl Recorded {
    /// Adds a poll: the samples taken since the previous one, and the
    /// counters of the sites as of it.
    pub fn push(&mut self, samples: Vec<DropSample>, counts: Counts) {
        self.polls.push_back((samples, counts));
    }

    pub fn is_empty(&self) -> bool {
        self.polls.is_empty()
    }
}

#[cfg(feature = "lab")]
impl DropEvents for Recorded {
    fn samples(&mut self) -> Vec<DropSample> {
        self.polls
            .front_mut()
            .map(|p| std::mem::take(&mut p.0))
            .unwrap_or_default()
    }

    fn counts(&mut self) -> anyhow::Result<Counts> {
        Ok(self.polls.pop_front().map(|p| p.1).unwrap_or_default())
    }
}

/// A node whose rules are given, not read (tests and the benchmark).
#[cfg(feature = "lab")]
pub struct FixedNode {
    pub label: String,
    pub inode: u64,
    pub rules: FixedRules,
    pub local_addrs: Vec<IpAddr>,
}

/// Rulesets given as text, with the snapshot before them.
#[cfg(feature = "lab")]
pub struct FixedRules {
    sets: Vec<(Ruleset, Option<CounterSnapshot>, OwnerContext)>,
    pub generation: u64,
}

#[cfg(feature = "lab")]
impl FixedRules {
    /// `(before, now)` pairs of iptables-save dumps (`before` may be empty:
    /// no counter evidence then).
    pub fn parse(pairs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut sets = Vec::new();
        for (before, now) in pairs {
            let now = netdrop_model::parse_ruleset(now)?;
            let before = (!before.is_empty())
                .then(|| netdrop_model::parse_ruleset(before))
                .transpose()?
                .map(|b| CounterSnapshot::of(&b));
            let owners = OwnerContext::new(&now, None);
            sets.push((now, before, owners));
        }
        Ok(Self {
            sets,
            generation: 0,
        })
    }
}

#[cfg(feature = "lab")]
impl RulesView for FixedRules {
    fn rulesets(&self, family: Family) -> Vec<(&Ruleset, Option<&CounterSnapshot>, &OwnerContext)> {
        self.sets
            .iter()
            .filter(|(rs, ..)| rs.family == family)
            .map(|(rs, before, owners)| (rs, before.as_ref(), owners))
            .collect()
    }

    fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(feature = "lab")]
impl NodeView for FixedNode {
    fn label(&self) -> &str {
        &self.label
    }

    fn inode(&self) -> u64 {
        self.inode
    }

    fn rules_since(&mut self, _since: Instant) -> Option<&dyn RulesView> {
        Some(&self.rules)
    }

    fn rules_generation(&self) -> Option<u64> {
        Some(self.rules.generation)
    }

    fn local_addrs(&self) -> &[IpAddr] {
        &self.local_addrs
    }

    fn ip_forward(&self) -> Option<bool> {
        Some(true)
    }
}

#[cfg(all(test, feature = "lab"))]
mod tests {
    use netdrop_common::{FlowHdr, flags, hook};
    use netdrop_model::{Owner, Verdict};

    use super::*;
    use crate::{
        capture::{KernelInfo, kallsyms::Kallsyms},
        export::metrics::{DropLabels, NodeLabels, new_shared},
        netns::Netns,
    };

    const NODE: u64 = 4242;
    const NETFILTER_DROP: u32 = 77;
    const NO_SOCKET: u32 = 3;

    fn pipeline(shared: Arc<Shared>) -> DropPipeline {
        pipeline_every(shared, Duration::ZERO)
    }

    fn pipeline_every(shared: Arc<Shared>, summary_every: Duration) -> DropPipeline {
        let kernel = KernelInfo {
            drop_reasons: [
                (NETFILTER_DROP, "NETFILTER_DROP".to_owned()),
                (NO_SOCKET, "NO_SOCKET".to_owned()),
            ]
            .into(),
            kallsyms: Kallsyms::parse("ffffffff81000000 T nf_hook_slow\n").unwrap(),
            nf_tables_frees_own: false,
        };
        // A namespace that does not exist: devices have no names.
        let ns = Netns {
            name: Some("n1".into()),
            node_name: None,
            inode: NODE,
            path: "/nonexistent/netns".into(),
        };
        DropPipeline::new(
            Decoder::new(kernel, vec![ns]),
            Cluster::new(vec!["10.224.0.0/16".parse().unwrap()]),
            shared,
            summary_every,
        )
    }

    fn node(before: &str, now: &str) -> FixedNode {
        FixedNode {
            label: "n1".into(),
            inode: NODE,
            rules: FixedRules::parse(&[(before, now)]).unwrap(),
            local_addrs: vec!["10.224.7.1".parse().unwrap()],
        }
    }

    fn key(reason: u32, h: u8) -> DropKey {
        DropKey {
            location: 0xffff_ffff_8100_0010,
            netns: NODE as u32,
            reason,
            hook: h,
            l4proto: 17,
            family: 4,
            flags: flags::SRC_POD | flags::DST_POD,
            ..DropKey::default()
        }
    }

    fn sample(key: DropKey, h: u8, dport: u16) -> DropSample {
        let mut outer = FlowHdr {
            sport: 5000,
            dport,
            family: 4,
            proto: 17,
            ..FlowHdr::default()
        };
        outer.src[..4].copy_from_slice(&[10, 224, 7, 2]);
        outer.dst[..4].copy_from_slice(&[10, 224, 7, 1]);
        DropSample {
            key,
            outer,
            hook: h,
            ..DropSample::default()
        }
    }

    fn counters(packets: u64) -> DropCounters {
        DropCounters {
            packets,
            bytes: packets * 100,
        }
    }

    fn drops_metric(shared: &Shared, reason: &str, owner: &str) -> u64 {
        let labels = DropLabels {
            node: "n1".into(),
            reason: reason.into(),
            hook: if owner == "kernel" { "" } else { "INPUT" }.into(),
            table: if owner == "kernel" { "" } else { "filter" }.into(),
            chain: if owner == "kernel" { "" } else { "INPUT" }.into(),
            verdict: "DROP".into(),
            owner: owner.into(),
        };
        shared.metrics.drops.get_or_create(&labels).get()
    }

    const BEFORE: &str =
        "*filter\n:INPUT ACCEPT [0:0]\n[0:0] -A INPUT -p udp -m udp --dport 9999 -j DROP\nCOMMIT\n";
    const AFTER: &str = "*filter\n:INPUT ACCEPT [0:0]\n[3:300] -A INPUT -p udp -m udp --dport 9999 -j DROP\nCOMMIT\n";

    #[test]
    fn a_recorded_drop_is_attributed_by_counters_then_summarised() {
        let shared = new_shared();
        let mut p = pipeline(shared.clone());
        let mut nodes = [node(BEFORE, AFTER)];
        let k = key(NETFILTER_DROP, hook::INPUT);
        let mut ev = Recorded::default();
        ev.push(vec![sample(k, hook::INPUT, 9999)], vec![(k, counters(3))]);
        ev.push(vec![], vec![(k, counters(5))]);
        ev.push(vec![], vec![(k, counters(5))]);

        let first = p.poll(&mut ev, &mut nodes).unwrap();
        assert_eq!(first.len(), 1);
        let r = &first[0].record;
        assert!(first[0].detail, "the first record of a site is in full");
        assert_eq!(
            r.rule.as_deref(),
            Some("-A INPUT -p udp -m udp --dport 9999 -j DROP")
        );
        assert_eq!(r.evidence, Some(Evidence::Counters));
        assert_eq!(
            (r.owner, r.verdict),
            (Some(Owner::Custom), Some(Verdict::Drop))
        );
        assert_eq!((r.packets, r.bytes, r.new_packets), (3, 300, 3));
        assert_eq!(r.dport, Some(9999));
        assert!(
            r.fix
                .as_deref()
                .unwrap()
                .contains("iptables -t filter -D INPUT 1")
        );
        assert_eq!(drops_metric(&shared, "NETFILTER_DROP", "custom"), 3);

        let second = p.poll(&mut ev, &mut nodes).unwrap();
        assert_eq!(second.len(), 1);
        assert!(!second[0].detail);
        assert_eq!(
            (second[0].record.packets, second[0].record.new_packets),
            (5, 2)
        );
        assert_eq!(second[0].record.rule, r.rule, "same site, same rule");
        assert_eq!(drops_metric(&shared, "NETFILTER_DROP", "custom"), 5);
        let explanations: Vec<Record> = shared
            .explanations
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        assert_eq!(explanations.len(), 1, "one /explanations entry per site");
        assert_eq!(explanations[0].packets, 5);

        assert!(
            p.poll(&mut ev, &mut nodes).unwrap().is_empty(),
            "no growth, no record"
        );
        assert!(p.flush().is_empty(), "everything printed");

        // Another flow at the same site: a new record, the same info series,
        // and no pod address or port in any label.
        let mut other = sample(k, hook::INPUT, 9999);
        other.outer.sport = 6000;
        other.outer.src[3] = 9;
        ev.push(vec![other], vec![(k, counters(6))]);
        let third = p.poll(&mut ev, &mut nodes).unwrap();
        assert_eq!(third[0].record.src, Some("10.224.7.9".parse().unwrap()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &shared.registry).unwrap();
        let info: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("netdrop_drop_site_info{"))
            .collect();
        assert_eq!(info.len(), 1, "one info series per rule: {info:#?}");
        assert!(info[0].contains("udp traffic"), "{}", info[0]);
        for addr in ["10.224.7.2", "10.224.7.9", "10.224.7.1", ":5000", ":6000"] {
            assert!(!text.contains(addr), "{addr} in the metrics:\n{text}");
        }
    }

    /// The pod both naming tests find at the sample's source address.
    fn web_pod() -> crate::attribute::names::PodRef {
        crate::attribute::names::PodRef {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "u1".into(),
            workload: Some("statefulset/web".into()),
        }
    }

    /// The pods are named before the site's record is kept: its summaries
    /// and its `/explanations` entry name them too, never by address only.
    #[test]
    fn a_drops_pods_are_named_in_every_copy_of_its_record() {
        use crate::attribute::names::{PodIndex, PodRef};
        let shared = new_shared();
        let web = web_pod();
        /// The runtime's index as it is at each call.
        struct Live(Arc<std::sync::Mutex<PodIndex>>);
        impl PodLookup for Live {
            fn lookup(&self, ips: &[std::net::IpAddr]) -> Vec<Option<PodRef>> {
                self.0.lock().unwrap().lookup(ips)
            }
        }
        let index: PodIndex = [("10.224.7.2".parse().unwrap(), web.clone())]
            .into_iter()
            .collect();
        let index = Arc::new(std::sync::Mutex::new(index));
        shared
            .workload_labels
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut p = pipeline(shared.clone()).with_pods(Some(Box::new(Live(index.clone()))));
        let mut nodes = [node(BEFORE, AFTER)];
        let k = key(NETFILTER_DROP, hook::INPUT);
        let mut ev = Recorded::default();
        ev.push(vec![sample(k, hook::INPUT, 9999)], vec![(k, counters(3))]);
        ev.push(vec![], vec![(k, counters(5))]);
        ev.push(vec![], vec![(k, counters(6))]);
        let explained = |shared: &Shared| {
            let sites = shared.explanations.lock().unwrap();
            assert_eq!(sites.len(), 1);
            sites.values().next().unwrap().clone()
        };

        let first = p.poll(&mut ev, &mut nodes).unwrap();
        let r = &first[0].record;
        assert_eq!(r.src_pod.as_ref(), Some(&web));
        assert_eq!(r.dst_pod, None, "the node's own address is no pod");
        let why = r.explanation.as_deref().unwrap();
        assert!(
            why.starts_with("udp shop/web-0 (10.224.7.2:5000) -> 10.224.7.1:9999"),
            "{why}"
        );
        assert_eq!(explained(&shared).src_pod.as_ref(), Some(&web));

        std::thread::sleep(Duration::from_millis(20));
        let second = p.poll(&mut ev, &mut nodes).unwrap();
        assert!(!second[0].detail);
        assert_eq!(second[0].record.src_pod.as_ref(), Some(&web));
        let e = explained(&shared);
        assert_eq!(e.src_pod.as_ref(), Some(&web), "a summary keeps the names");
        assert!(e.explanation.unwrap().contains("shop/web-0"));

        // --metrics-workload-labels: the workload counts every drop; no
        // pod name or address is a label.
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &shared.registry).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("netdrop_workload_drops_total{"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.contains(r#"end="source""#)
                && line.contains(r#"namespace="shop""#)
                && line.contains(r#"workload="statefulset/web""#)
                && line.ends_with(" 5"),
            "{line}"
        );
        let workload_lines: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("netdrop_workload_drops_total{"))
            .collect();
        assert_eq!(workload_lines.len(), 1, "the node is no pod: {text}");
        assert!(
            !text.contains("web-0") && !text.contains("10.224.7.2"),
            "{text}"
        );

        // The address goes to a new pod: the site's next summary (no new
        // sample) names it, in its words too.
        let api = PodRef {
            name: "api-0".into(),
            uid: "u2".into(),
            workload: Some("statefulset/api".into()),
            ..web.clone()
        };
        *index.lock().unwrap() = [("10.224.7.2".parse().unwrap(), api.clone())]
            .into_iter()
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        let third = p.poll(&mut ev, &mut nodes).unwrap();
        let r = &third[0].record;
        assert!(!third[0].detail);
        assert_eq!(r.src_pod.as_ref(), Some(&api));
        let why = r.explanation.as_deref().unwrap();
        assert!(
            why.starts_with("udp shop/api-0 (10.224.7.2:5000) -> 10.224.7.1:9999"),
            "{why}"
        );
        assert_eq!(explained(&shared).src_pod.as_ref(), Some(&api));
    }

    /// Without `--metrics-workload-labels`, named pods make no workload
    /// series.
    #[test]
    fn workload_series_only_when_asked() {
        use crate::attribute::names::PodIndex;
        let shared = new_shared();
        let web = web_pod();
        let index: PodIndex = [("10.224.7.2".parse().unwrap(), web)].into_iter().collect();
        let mut p = pipeline(shared.clone()).with_pods(Some(Box::new(index)));
        let mut nodes = [node(BEFORE, AFTER)];
        let k = key(NETFILTER_DROP, hook::INPUT);
        let mut ev = Recorded::default();
        ev.push(vec![sample(k, hook::INPUT, 9999)], vec![(k, counters(3))]);
        let out = p.poll(&mut ev, &mut nodes).unwrap();
        assert!(out[0].record.src_pod.is_some());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &shared.registry).unwrap();
        assert!(!text.contains("netdrop_workload_drops_total{"), "{text}");
    }

    /// A fix for a protocol without ports names addresses: the record
    /// keeps them, the info series says `<source>`/`<destination>`.
    #[test]
    fn an_icmp_sites_info_series_names_no_address() {
        let shared = new_shared();
        let mut p = pipeline(shared.clone());
        let rules = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p icmp -j DROP\nCOMMIT\n";
        let mut nodes = [node("", rules)];
        let mut k = key(NETFILTER_DROP, hook::INPUT);
        k.l4proto = 1;
        let mut s = sample(k, hook::INPUT, 0);
        s.outer.proto = 1;
        // From another node: not a pod, so the fix names its address.
        s.outer.src[..4].copy_from_slice(&[192, 0, 2, 7]);
        let mut ev = Recorded::default();
        ev.push(vec![s], vec![(k, counters(1))]);
        let out = p.poll(&mut ev, &mut nodes).unwrap();
        let fix = out[0].record.fix.clone().unwrap();
        assert!(fix.contains("-s 192.0.2.7 -p icmp"), "{fix}");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &shared.registry).unwrap();
        assert!(text.contains("-s <source> -p icmp"), "{text}");

        assert!(!text.contains("192.0.2.7"), "{text}");
    }

    #[test]
    fn a_site_without_a_sample_waits_then_is_reported_unattributed_at_the_end() {
        let shared = new_shared();
        let mut p = pipeline(shared.clone());
        let mut nodes = [node(BEFORE, AFTER)];
        let k = key(NETFILTER_DROP, hook::INPUT);
        let mut ev = Recorded::default();
        ev.push(vec![], vec![(k, counters(2))]);
        ev.push(vec![], vec![(k, counters(2))]);
        assert!(
            p.poll(&mut ev, &mut nodes).unwrap().is_empty(),
            "a new site waits for its sample"
        );
        p.closing();
        let last = p.poll(&mut ev, &mut nodes).unwrap();
        assert_eq!(last.len(), 1);
        let r = &last[0].record;
        assert_eq!(r.evidence, Some(Evidence::Kernel));
        assert!(
            r.explanation
                .as_deref()
                .unwrap()
                .contains("(no packet sample yet)"),
            "{r:?}"
        );
        assert_eq!(
            shared
                .metrics
                .attribution_failures
                .get_or_create(&NodeLabels { node: "n1".into() })
                .get(),
            1
        );
        let labels = DropLabels {
            node: "n1".into(),
            reason: "NETFILTER_DROP".into(),
            hook: "INPUT".into(),
            table: String::new(),
            chain: String::new(),
            verdict: "DROP".into(),
            owner: "unknown".into(),
        };
        assert_eq!(shared.metrics.drops.get_or_create(&labels).get(), 2);
    }

    #[test]
    fn a_kernel_reason_drop_is_explained_without_rules() {
        let shared = new_shared();
        let mut p = pipeline(shared.clone());
        let mut nodes = [node(BEFORE, AFTER)];
        let k = key(NO_SOCKET, hook::UNKNOWN);
        let mut ev = Recorded::default();
        ev.push(vec![sample(k, hook::UNKNOWN, 7777)], vec![(k, counters(4))]);
        let out = p.poll(&mut ev, &mut nodes).unwrap();
        let r = &out[0].record;
        assert_eq!(r.reason.as_deref(), Some("NO_SOCKET"));
        assert_eq!(
            (r.evidence, r.owner, r.rule.as_deref()),
            (Some(Evidence::Kernel), None, None)
        );
        assert!(r.explanation.is_some() && r.fix.is_some(), "{r:?}");
        assert_eq!(drops_metric(&shared, "NO_SOCKET", "kernel"), 4);
    }

    /// A bridged key counts FORWARD and POSTROUTING drops together; each
    /// sample's hook credits the growth to its own site.
    #[test]
    fn an_ambiguous_keys_drops_are_split_by_the_samples_hook() {
        let shared = new_shared();
        let mut p = pipeline(shared.clone());
        let rules = "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n*mangle\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -p udp -m udp --dport 9999 -j DROP\nCOMMIT\n";
        let mut nodes = [node("", rules)];
        let mut k = key(NETFILTER_DROP, hook::BRIDGED);
        k.flags |= flags::BRIDGED;
        let mut ev = Recorded::default();
        ev.push(vec![sample(k, hook::FORWARD, 9999)], vec![(k, counters(2))]);
        ev.push(
            vec![sample(k, hook::POSTROUTING, 9999)],
            vec![(k, counters(5))],
        );
        let a = p.poll(&mut ev, &mut nodes).unwrap();
        let b = p.poll(&mut ev, &mut nodes).unwrap();
        assert!(a[0].detail && b[0].detail, "each hook is a site of its own");
        let (a, b) = (&a[0].record, &b[0].record);
        assert_eq!(
            (a.hook, a.chain.as_deref(), a.packets),
            (Some(netdrop_model::Hook::Forward), Some("FORWARD"), 2)
        );
        assert!(a.policy);
        assert_eq!(
            (b.hook, b.table.as_deref(), b.packets),
            (Some(netdrop_model::Hook::Postrouting), Some("mangle"), 3)
        );
        assert_eq!(
            a.evidence,
            Some(Evidence::Simulated),
            "no snapshot before: the model's word"
        );
    }

    /// Two rules dropping at one kernel key (same hook, reason and
    /// devices): two sites, each with its own drops, as their counters say.
    #[test]
    fn two_rules_at_one_key_are_two_sites_with_their_own_counts() {
        let shared = new_shared();
        let mut p = pipeline(shared.clone());
        let rules = |a: u64, b: u64| {
            format!(
                "*filter\n:INPUT ACCEPT [0:0]\n[{a}:0] -A INPUT -p udp -m udp --dport 9001 -j DROP\n[{b}:0] -A INPUT -p udp -m udp --dport 9002 -j DROP\nCOMMIT\n"
            )
        };
        let mut nodes = [node(&rules(0, 0), &rules(3, 2))];
        let k = key(NETFILTER_DROP, hook::INPUT);
        let mut ev = Recorded::default();
        let mut samples = vec![sample(k, hook::INPUT, 9001); 3];
        samples.extend(vec![sample(k, hook::INPUT, 9002); 2]);
        ev.push(samples, vec![(k, counters(5))]);
        ev.push(vec![], vec![(k, counters(6))]);
        let out = p.poll(&mut ev, &mut nodes).unwrap();
        let got: Vec<(Option<usize>, u64, u64, Option<Evidence>)> = out
            .iter()
            .map(|r| {
                (
                    r.record.rule_no,
                    r.record.packets,
                    r.record.bytes,
                    r.record.evidence,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Some(1), 3, 300, Some(Evidence::Counters)),
                (Some(2), 2, 200, Some(Evidence::Counters))
            ]
        );
        assert!(out.iter().all(|r| r.detail));
        // A poll without samples: the key's drops go to its latest sample's site.
        let out = p.poll(&mut ev, &mut nodes).unwrap();
        assert_eq!(
            (
                out[0].record.rule_no,
                out[0].record.packets,
                out[0].record.new_packets
            ),
            (Some(2), 3, 1)
        );
        assert_eq!(drops_metric(&shared, "NETFILTER_DROP", "custom"), 6);
    }

    #[test]
    fn pod_to_pod_and_outside_to_pod_drops_at_one_rule_are_one_site() {
        // The kernel keeps them apart (which end is a pod); a record could
        // not, so the site's count is theirs together.
        let shared = new_shared();
        let mut p = pipeline(shared.clone());
        let rules = |a: u64| {
            format!(
                "*filter\n:INPUT ACCEPT [0:0]\n[{a}:0] -A INPUT -p udp -m udp --dport 9001 -j DROP\nCOMMIT\n"
            )
        };
        let mut nodes = [node(&rules(0), &rules(5))];
        let both = key(NETFILTER_DROP, hook::INPUT);
        let dst_only = DropKey {
            flags: flags::DST_POD,
            ..both
        };
        let mut ev = Recorded::default();
        ev.push(
            vec![
                sample(both, hook::INPUT, 9001),
                sample(both, hook::INPUT, 9001),
                sample(dst_only, hook::INPUT, 9001),
            ],
            vec![(both, counters(2)), (dst_only, counters(3))],
        );
        let out = p.poll(&mut ev, &mut nodes).unwrap();
        let last = out.last().unwrap();
        assert_eq!((last.record.rule_no, last.record.packets), (Some(1), 5));
        assert_eq!(drops_metric(&shared, "NETFILTER_DROP", "custom"), 5);
    }

    #[test]
    fn split_shares_add_up_and_follow_the_weights() {
        assert_eq!(split(10, &[3, 2]), [6, 4]);
        assert_eq!(split(5, &[1, 1, 1]), [2, 2, 1]);
        assert_eq!(split(0, &[4, 1]), [0, 0]);
        assert_eq!(split(7, &[0]), [7]);
        assert_eq!(split(7, &[0, 0]), [4, 3]);
        assert_eq!(
            split(u64::MAX, &[u64::MAX, 1]).iter().sum::<u64>(),
            u64::MAX
        );
    }

    /// Growth inside the summary interval is printed once the interval is
    /// over, whether or not the site drops again.
    #[test]
    fn held_back_growth_is_summarised_when_due_without_new_drops() {
        let mut p = pipeline_every(new_shared(), Duration::from_millis(200));
        let mut nodes = [node(BEFORE, AFTER)];
        let k = key(NETFILTER_DROP, hook::INPUT);
        let mut ev = Recorded::default();
        ev.push(vec![sample(k, hook::INPUT, 9999)], vec![(k, counters(3))]);
        ev.push(vec![], vec![(k, counters(5))]);
        ev.push(vec![], vec![(k, counters(5))]);
        ev.push(vec![], vec![(k, counters(5))]);
        assert_eq!(p.poll(&mut ev, &mut nodes).unwrap().len(), 1);
        assert!(
            p.poll(&mut ev, &mut nodes).unwrap().is_empty(),
            "not due yet"
        );
        std::thread::sleep(Duration::from_millis(250));
        let due = p.poll(&mut ev, &mut nodes).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].record.packets, due[0].record.new_packets), (5, 2));
        assert!(!due[0].detail);
        assert!(p.poll(&mut ev, &mut nodes).unwrap().is_empty());
        assert!(p.flush().is_empty(), "nothing left to print");
    }
}
