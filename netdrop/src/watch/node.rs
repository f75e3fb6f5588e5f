//! One observed node: its namespace, interface observers, and the rules in
//! force (re-read when they change, the previous snapshot kept so rule
//! counters can confirm an attribution).

use std::{collections::HashMap, net::IpAddr, time::Instant};

use netdrop_common::role;
use netdrop_model::{CounterSnapshot, Family, OwnerContext, Ruleset, check::NodeFacts};

use super::pipeline::{NodeView, RulesView};
use crate::{
    attribute::{
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
    /// [`xtables::LARGE_TABLE`]: crate::attribute::xtables::LARGE_TABLE
    pub legacy_content: [Option<u64>; 2],
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
                rules.previous = Some(before);
                rules.read_at = Instant::now();
                false
            }
            // Changed after all (a legacy table), or unreadable: all of it,
            // still against the counters from before.
            _ => {
                let changed = self.refresh_rules();
                if let Some(r) = &mut self.rules {
                    r.previous = Some(before);
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
    /// [`xtables::LARGE_TABLE`]: crate::attribute::xtables::LARGE_TABLE
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
        let previous: Option<Vec<(Backend, Family, CounterSnapshot)>> =
            self.rules.take().map(|r| {
                r.current
                    .all()
                    .map(|(b, rs)| (*b, rs.family, CounterSnapshot::of(rs)))
                    .collect()
            });
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
