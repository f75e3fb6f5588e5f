//! One observed node: its namespace, interface observers, and the rules in
//! force (re-read when they change, the previous snapshot kept so rule
//! counters can confirm an attribution).

use std::{collections::HashMap, net::IpAddr, time::Instant};

use netdrop_common::role;
use netdrop_model::{CounterSnapshot, Family, OwnerContext, Ruleset, check::NodeFacts};

use super::pipeline::{NodeView, RulesView};
use crate::{
    attribute::rules::{
        nf_tables,
        reader::{self, Backend, NodeRules},
    },
    capture::observe::{self, NodeObservers, ObservedIfaces, ObserverOptions},
    netns::{Netns, RouteEvents},
};

/// A hash of the rules without their counters: changes only when rules do
/// (a hash, not the text: on a 100k-rule node the text is megabytes).
fn fingerprint(rules: &NodeRules) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for (b, rs) in rules.all() {
        format!("{b:?}").hash(&mut h);
        for t in rs.tables.values() {
            t.name.hash(&mut h);
            for c in &t.chains {
                c.name.hash(&mut h);
                format!("{:?}", c.policy).hash(&mut h);
                for r in &c.rules {
                    r.text.hash(&mut h);
                }
            }
        }
    }
    h.finish()
}

/// How long after a failed read of the rules the next is tried.
const READ_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Rules {
    pub current: NodeRules,
    /// The counters of the snapshot before `current`, per ruleset (as
    /// `current.all()` lists them): their deltas are evidence for drops
    /// seen in between. Only what attribution reads is kept.
    pub previous: Option<Vec<(Backend, Family, CounterSnapshot)>>,
    /// When `previous`'s counters were read, and a later snapshot kept
    /// for when it becomes a safe baseline (see [`Baselines`]).
    pub baselines: Baselines,
    pub owners: HashMap<usize, OwnerContext>,
    pub read_at: Instant,
    /// Bumped on every change, so caches keyed by it expire.
    pub generation: u64,
    /// The kernel's generation when these were read (taken before the
    /// read: a change during it shows at the next check).
    pub kernel_generation: Option<nf_tables::Generation>,
    /// The legacy tables' content hashes then, if there are any: of the
    /// tables below [`xtables::LARGE_TABLE`], and of the larger ones.
    ///
    /// [`xtables::LARGE_TABLE`]: crate::attribute::rules::xtables::LARGE_TABLE
    pub legacy_content: [Option<u64>; 2],
}

/// One read's counters, per ruleset.
type Snapshot = Vec<(Backend, Family, CounterSnapshot)>;

/// The counter snapshots a read may compare against. Drops the kernel
/// counts in a poll happened after the previous poll started: only a
/// snapshot read before then is sure not to include them already. A read
/// made later in that poll (another hook's drop needed the rules) may, so
/// it waits here until a later poll makes it safe; until then the older
/// baseline stands (counters only grow: a longer span still shows the
/// drops).
#[derive(Default)]
pub struct Baselines {
    /// When `Rules::previous` was read.
    previous_at: Option<Instant>,
    /// A snapshot read after the last poll started, with its read time.
    pending: Option<(Instant, Snapshot)>,
}

impl Baselines {
    /// The baseline for a new read, given the outgoing rules' snapshot
    /// (`out`, read at `out_at`) and the start of the previous poll whose
    /// rules were asked for (`since`): the newest snapshot read by then,
    /// else the oldest there is. Returns it with its new `Baselines`.
    fn next(
        self,
        previous: Option<Snapshot>,
        out: Snapshot,
        out_at: Instant,
        since: Option<Instant>,
    ) -> (Option<Snapshot>, Self) {
        let mut all: Vec<(Option<Instant>, Snapshot)> = Vec::new();
        if let Some(p) = previous {
            all.push((self.previous_at, p));
        }
        if let Some((at, p)) = self.pending {
            all.push((Some(at), p));
        }
        all.push((Some(out_at), out));
        // Oldest first; a snapshot of unknown time counts as oldest.
        all.sort_by_key(|(at, _)| *at);
        let safe = |at: &Option<Instant>| match (at, since) {
            (None, _) => true,
            (Some(a), Some(s)) => *a <= s,
            (Some(_), None) => false,
        };
        let base = all.iter().rposition(|(at, _)| safe(at)).unwrap_or(0);
        let pending = all
            .iter()
            .enumerate()
            .find(|(i, (at, _))| *i > base && !safe(at))
            .map(|(i, _)| i);
        let mut chosen = None;
        let mut keep = None;
        for (i, (at, snap)) in all.into_iter().enumerate() {
            if i == base {
                chosen = Some((at, snap));
            } else if Some(i) == pending {
                keep = at.map(|a| (a, snap));
            }
        }
        let (previous_at, previous) = match chosen {
            Some((at, snap)) => (at, Some(snap)),
            None => (None, None),
        };
        (
            previous,
            Self {
                previous_at,
                pending: keep,
            },
        )
    }
}

impl RulesView for Rules {
    /// Rulesets for a family, with their index into `owners`, and the
    /// previous snapshot of the same ruleset.
    fn rulesets(&self, family: Family) -> Vec<(&Ruleset, Option<&CounterSnapshot>, &OwnerContext)> {
        let r = self;
        let v4n = r.current.v4.len();
        let (list, base) = match family {
            Family::Ipv4 => (&r.current.v4, 0),
            Family::Ipv6 => (&r.current.v6, v4n),
        };
        list.iter()
            .enumerate()
            .filter_map(|(i, (backend, rs))| {
                let before = r.previous.as_ref().and_then(|p| {
                    p.iter()
                        .find(|(b, f, _)| b == backend && *f == family)
                        .map(|(_, _, c)| c)
                });
                Some((rs, before, r.owners.get(&(base + i))?))
            })
            .collect()
    }

    fn generation(&self) -> u64 {
        self.generation
    }
}

impl NodeView for Node {
    fn label(&self) -> &str {
        &self.label
    }

    fn inode(&self) -> u64 {
        self.netns.inode
    }

    fn rules_since(&mut self, since: Instant) -> Option<&dyn RulesView> {
        self.refresh_rules_since(since);
        self.rules.as_ref().map(|r| r as &dyn RulesView)
    }

    fn rules_generation(&self) -> Option<u64> {
        self.rules.as_ref().map(|r| r.generation)
    }

    fn local_addrs(&self) -> &[IpAddr] {
        &self.local_addrs
    }

    fn ip_forward(&self) -> Option<bool> {
        self.netns.ip_forward()
    }
}

pub struct Node {
    pub netns: Netns,
    pub label: String,
    pub observers: Option<NodeObservers>,
    /// How the observers were asked for (`None`: no observers).
    obs_opts: Option<ObserverOptions>,
    /// The devices last found for the observers (attached to, unless that
    /// failed): a change is a difference from these.
    found: ObservedIfaces,
    /// The namespace's link, address and route events.
    events: Option<RouteEvents>,
    /// Its nf_tables generation, asked without entering the namespace.
    generation_watch: Option<nf_tables::GenerationWatch>,
    pub rules: Option<Rules>,
    /// What the last read ruleset was, kept apart from it (a read frees
    /// the model before it makes the next): its fingerprint and generation.
    last_read: Option<(u64, u64)>,
    /// When the legacy tables' content was last compared, small tables'
    /// and large ones' (it costs a copy of them: seldom, not every check).
    legacy_checked: [Instant; 2],
    /// When a read last failed: the next is tried after
    /// [`READ_RETRY`], not at every poll.
    read_failed_at: Option<Instant>,
    pub interfaces: Vec<String>,
    pub local_addrs: Vec<IpAddr>,
    /// Ruleset problems already reported (each is logged once).
    warned: std::collections::HashSet<String>,
    /// Reads of the ruleset so far (and how many the metrics have).
    pub reads: u64,
    pub reads_published: u64,
    /// The start of the last poll that asked for the rules (drops counted
    /// after it happened after it).
    last_since: Option<Instant>,
    /// Without `--pod-cidr`: the pod CIDR last inferred for this node's
    /// findings (said in the log when it changes).
    pub pod_cidrs: Option<netdrop_model::check::PodCidrs>,
}

impl Node {
    pub fn new(netns: Netns, obs: Option<&ObserverOptions>) -> Self {
        let label = netns.label();
        // A namespace that does not exist yet: nothing to attach to.
        let obs = obs.filter(|_| netns.exists());
        // Subscribed before the devices are looked for: no change between
        // the two goes unheard.
        let events = obs.and_then(|_| match RouteEvents::open(&netns) {
            Ok(e) => Some(e),
            Err(e) => {
                log::warn!(
                    "{label}: no rtnetlink events ({e}); looking for device changes every second"
                );
                None
            }
        });
        let observers = obs.and_then(|o| match NodeObservers::attach(&netns, o) {
            Ok(obs) => Some(obs),
            Err(e) => {
                log::warn!("{label}: interface observers not attached: {e}");
                None
            }
        });
        let mut node = Self {
            found: ObservedIfaces::default(),
            events,
            generation_watch: None,
            obs_opts: obs.cloned(),
            netns,
            label,
            observers,
            rules: None,
            last_read: None,
            legacy_checked: [Instant::now(); 2],
            read_failed_at: None,
            interfaces: Vec::new(),
            local_addrs: Vec::new(),
            warned: Default::default(),
            reads: 0,
            reads_published: 0,
            last_since: None,
            pod_cidrs: None,
        };
        if node.netns.exists() {
            node.refresh_addresses();
        }
        if let Some(o) = &node.observers {
            node.found = o.ifaces.clone();
        }
        node
    }

    /// The devices the observers are for, by name, with their ifindex (the
    /// configured overlay and bridge even when missing: `None`).
    fn devices_of(ifaces: &ObservedIfaces, opts: &ObserverOptions) -> Vec<(String, Option<u32>)> {
        let named = |want: &Option<String>, default: &str, found: &Option<(String, u32)>| {
            (
                want.clone().unwrap_or_else(|| default.to_owned()),
                found.as_ref().map(|f| f.1),
            )
        };
        let mut out = vec![
            named(&opts.overlay, "flannel.1", &ifaces.overlay),
            named(&opts.bridge, "cni0", &ifaces.bridge),
        ];
        out.extend(
            ifaces
                .slots()
                .filter(|(slot, _)| *slot >= role::UNDERLAY)
                .map(|(_, (n, i))| (n.clone(), Some(*i))),
        );
        out
    }

    /// Re-attaches the observers when an observed device was recreated,
    /// appeared or went away, or the default route moved to another
    /// device; says what changed when it did. Looks only when rtnetlink
    /// reported a change in the node's namespace (every call when no event
    /// socket could be opened).
    pub fn refresh_observers(&mut self) -> Option<String> {
        let opts = self.obs_opts.clone()?;
        if let Some(events) = &self.events
            && !events.changed()
        {
            return None;
        }
        self.refresh_addresses();
        let (found, _) = observe::discover(&self.netns, &opts).ok()?;
        if found == self.found {
            return None;
        }
        let before = Self::devices_of(&self.found, &opts);
        let now = Self::devices_of(&found, &opts);
        let mut what: Vec<String> = now
            .iter()
            .filter(|d| !before.contains(d))
            .map(|(name, index)| {
                let before = before.iter().find(|(n, _)| n == name).and_then(|(_, i)| *i);
                match (before, index) {
                    (Some(b), Some(i)) => format!("{name} recreated (ifindex {b} → {i})"),
                    (None, Some(i)) => format!("{name} appeared (ifindex {i})"),
                    (Some(b), None) => format!("{name} gone (was ifindex {b})"),
                    (None, None) => format!("{name} still missing"),
                }
            })
            .collect();
        what.extend(
            before
                .iter()
                .filter(|(n, i)| i.is_some() && !now.iter().any(|(m, _)| m == n))
                .map(|(n, i)| {
                    format!(
                        "{n} no longer an underlay (ifindex {})",
                        i.unwrap_or_default()
                    )
                }),
        );
        if what.is_empty() {
            what.push("the node network changed".to_owned());
        }
        // The old programs go first: counters start again from zero.
        self.observers = None;
        self.observers = match NodeObservers::attach_found(&self.netns, found.clone(), &opts) {
            Ok(o) => Some(o),
            Err(e) => {
                log::warn!("{}: interface observers not attached: {e}", self.label);
                None
            }
        };
        self.found = found;
        Some(what.join(", "))
    }

    fn refresh_addresses(&mut self) {
        self.interfaces = self
            .netns
            .interfaces()
            .map(|m| m.into_values().collect())
            .unwrap_or_default();
        let mut cmd = std::process::Command::new("ip");
        if let Some(n) = &self.netns.name {
            cmd.args(["-n", n]);
        }
        self.local_addrs = cmd
            .args(["-j", "addr", "show"])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| {
                v.as_array().map(|links| {
                    links
                        .iter()
                        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
                        .filter_map(|a| a["local"].as_str()?.parse().ok())
                        .collect()
                })
            })
            .unwrap_or_default();
    }

    /// Re-reads the ruleset unless it was read after `since`: only the
    /// counters a drop needs as evidence (the tables that can drop) when
    /// nothing says the rules changed, else all of it. Returns true when
    /// the rules changed.
    pub fn refresh_rules_since(&mut self, since: Instant) -> bool {
        let changed = self.reread_since(since);
        self.last_since = Some(since);
        changed
    }

    fn reread_since(&mut self, since: Instant) -> bool {
        let Some(rules) = &mut self.rules else {
            return self.retry_due() && self.refresh_rules();
        };
        if rules.read_at >= since {
            return false;
        }
        let generation = self.generation_watch.as_ref().and_then(|w| w.read().ok());
        // nf_tables says nothing moved (iptables-legacy has no generation:
        // the fingerprint below tells).
        if generation.is_none() || generation != rules.kernel_generation {
            return self.refresh_rules();
        }
        let before: Vec<(Backend, Family, CounterSnapshot)> = rules
            .current
            .all()
            .map(|(b, rs)| (*b, rs.family, CounterSnapshot::of(rs)))
            .collect();
        self.reads += 1;
        match reader::reread_dropping_tables(self.netns.name.as_deref(), &mut rules.current) {
            Ok(()) if Some(fingerprint(&rules.current)) == self.last_read.map(|(f, _)| f) => {
                let (previous, baselines) = std::mem::take(&mut rules.baselines).next(
                    rules.previous.take(),
                    before,
                    rules.read_at,
                    self.last_since,
                );
                rules.previous = previous;
                rules.baselines = baselines;
                rules.read_at = Instant::now();
                false
            }
            // Changed after all (a legacy table), or unreadable: all of it,
            // still against the counters from before.
            _ => {
                let (old_previous, old_baselines, old_at) = (
                    rules.previous.take(),
                    std::mem::take(&mut rules.baselines),
                    rules.read_at,
                );
                let changed = self.refresh_rules();
                let since = self.last_since;
                if let Some(r) = &mut self.rules {
                    let (previous, baselines) =
                        old_baselines.next(old_previous, before, old_at, since);
                    r.previous = previous;
                    r.baselines = baselines;
                }
                changed
            }
        }
    }

    /// Whether the rules may have changed since they were read, known
    /// cheaply: the nf_tables generation moved, or the legacy tables'
    /// shape; with legacy tables, their content every `legacy_every[0]`
    /// (tables below [`xtables::LARGE_TABLE`]) and `legacy_every[1]` (the
    /// larger ones): a same-size edit moves nothing else. Without a
    /// generation at all, every `legacy_every[0]`.
    ///
    /// [`xtables::LARGE_TABLE`]: crate::attribute::rules::xtables::LARGE_TABLE
    pub fn rules_may_have_changed(&mut self, legacy_every: [std::time::Duration; 2]) -> bool {
        let Some(rules) = &self.rules else {
            return self.retry_due();
        };
        let now = match &self.generation_watch {
            Some(w) => w.read(),
            None => nf_tables::generation(self.netns.name.as_deref()),
        };
        match (now, rules.kernel_generation) {
            (Ok(now), Some(then)) if now != then => true,
            (Ok(now), Some(_)) if now.legacy_tables => {
                for large in [false, true] {
                    let i = usize::from(large);
                    if self.legacy_checked[i].elapsed() < legacy_every[i] {
                        continue;
                    }
                    self.legacy_checked[i] = Instant::now();
                    let content = self
                        .generation_watch
                        .as_ref()
                        .and_then(|w| w.legacy_content(large).ok());
                    if content.is_none() || content != rules.legacy_content[i] {
                        return true;
                    }
                }
                false
            }
            (Ok(_), Some(_)) => false,
            _ => rules.read_at.elapsed() >= legacy_every[0],
        }
    }

    /// Whether a node without rules should try to read them now (not
    /// within [`READ_RETRY`] of a failed read).
    fn retry_due(&self) -> bool {
        self.read_failed_at
            .is_none_or(|t| t.elapsed() >= READ_RETRY)
    }

    /// Re-reads the ruleset. Returns true when the rules changed (a reload).
    ///
    /// The model read before is freed first, keeping only its counters
    /// (evidence for drops counted since): a kube-proxy node's model is
    /// tens of MiB and, with the kernel's generation moved, out of date. A
    /// failed read leaves the node without rules until one succeeds.
    pub fn refresh_rules(&mut self) -> bool {
        // Opened anew with each read: a legacy table family that appeared
        // (its proc file) is then watched too.
        self.generation_watch = nf_tables::GenerationWatch::open(self.netns.name.as_deref()).ok();
        let kernel_generation = self.generation_watch.as_ref().and_then(|w| w.read().ok());
        self.reads += 1;
        let since = self.last_since;
        let (previous, baselines) = match self.rules.take() {
            Some(r) => {
                let out: Snapshot = r
                    .current
                    .all()
                    .map(|(b, rs)| (*b, rs.family, CounterSnapshot::of(rs)))
                    .collect();
                r.baselines.next(r.previous, out, r.read_at, since)
            }
            None => (None, Baselines::default()),
        };
        crate::preflight::release_freed_memory();
        // Taken before the read (a change during it shows at the next
        // check) and after the old model is freed (a large table's copy
        // need not sit on top of it).
        let legacy_content =
            [false, true].map(|large| match (&self.generation_watch, kernel_generation) {
                (Some(w), Some(g)) if g.legacy_tables => w.legacy_content(large).ok(),
                _ => None,
            });
        self.legacy_checked = [Instant::now(); 2];
        let read = match reader::read_live(self.netns.name.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                // Said once per distinct error, tried again every
                // READ_RETRY (iptables-save missing, a namespace going).
                let said = format!("cannot read the ruleset: {e}");
                if self.warned.insert(said.clone()) {
                    log::warn!(
                        "{}: {said} (trying again every {} s)",
                        self.label,
                        READ_RETRY.as_secs()
                    );
                }
                self.read_failed_at = Some(Instant::now());
                return false;
            }
        };
        self.read_failed_at = None;
        for p in &read.problems {
            if self.warned.insert(p.clone()) {
                log::warn!("{}: {p}", self.label);
            }
        }
        let fp = fingerprint(&read);
        let changed = self.last_read.is_none_or(|(f, _)| f != fp);
        if changed {
            self.refresh_addresses();
        }
        let owners: HashMap<usize, OwnerContext> = read
            .all()
            .enumerate()
            .map(|(i, (_, rs))| (i, OwnerContext::new(rs, Some(self.interfaces.clone()))))
            .collect();
        let generation = self.last_read.map_or(0, |(_, g)| g + u64::from(changed));
        self.last_read = Some((fp, generation));
        self.rules = Some(Rules {
            current: read,
            previous,
            baselines,
            owners,
            read_at: Instant::now(),
            generation,
            kernel_generation,
            legacy_content,
        });
        // A read's text and parse are freed by now: give the memory back
        // rather than keep a 100k-rule read's peak for the process's life.
        crate::preflight::release_freed_memory();
        changed
    }

    pub fn facts(&self) -> NodeFacts {
        let split = self
            .rules
            .as_ref()
            .is_some_and(|r| r.current.split_backends());
        self.netns.facts(split).unwrap_or_else(|e| {
            log::warn!("{}: cannot read the node's sysctls: {e}", self.label);
            NodeFacts {
                interfaces: Some(self.interfaces.clone()),
                split_backends: split,
                ..NodeFacts::default()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Snapshots told apart by their INPUT policy's counter.
    fn snap(packets: u64) -> Snapshot {
        let rs = netdrop_model::parse::parse_ruleset(&format!(
            "*filter\n:INPUT ACCEPT [{packets}:0]\nCOMMIT\n"
        ))
        .unwrap();
        vec![(Backend::Nft, Family::Ipv4, CounterSnapshot::of(&rs))]
    }

    /// A read made after the last poll started may already hold drops
    /// counted next: it is not the baseline until a later poll makes it
    /// safe; the older one stands meanwhile.
    #[test]
    fn a_baseline_is_a_snapshot_read_before_the_poll_that_counted() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (old, late) = (snap(1), snap(2));
        // Previous read at 0; the outgoing one at 300, after the last
        // poll started (200): the old baseline stands, the late one waits.
        let b = Baselines {
            previous_at: Some(at(0)),
            pending: None,
        };
        let (prev, b) = b.next(Some(old.clone()), late.clone(), at(300), Some(at(200)));
        assert_eq!(prev.as_ref(), Some(&old));
        assert_eq!(b.previous_at, Some(at(0)));
        assert_eq!(b.pending.as_ref().map(|p| p.0), Some(at(300)));
        // The next poll started at 500: the late read (300) is safe now;
        // the outgoing one (600) waits in turn.
        let newest = snap(3);
        let (prev, b) = b.next(prev, newest, at(600), Some(at(500)));
        assert_eq!(prev.as_ref(), Some(&late));
        assert_eq!(b.previous_at, Some(at(300)));
        assert_eq!(b.pending.as_ref().map(|p| p.0), Some(at(600)));
    }

    /// A read before the last poll started is the baseline at once; with
    /// no poll yet, the oldest snapshot there is.
    #[test]
    fn a_safe_read_is_the_baseline_at_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (old, out) = (snap(1), snap(2));
        let b = Baselines {
            previous_at: Some(at(0)),
            pending: None,
        };
        let (prev, b) = b.next(Some(old.clone()), out.clone(), at(100), Some(at(200)));
        assert_eq!(prev.as_ref(), Some(&out));
        assert!(b.pending.is_none());
        let (prev, _) = Baselines::default().next(None, out.clone(), at(100), None);
        assert_eq!(prev.as_ref(), Some(&out), "the first read is the only one");
    }
}
