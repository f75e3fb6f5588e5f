//! One observed node: its namespace, interface observers, and the rules in
//! force (re-read when they change, the previous snapshot kept so rule
//! counters can confirm an attribution).

use std::{collections::HashMap, net::IpAddr, time::Instant};

use netdrop_model::{Family, OwnerContext, Ruleset, check::NodeFacts};

use super::pipeline::{NodeView, RulesView};
use crate::{
    attribute::{
        nf_tables,
        reader::{self, NodeRules},
    },
    capture::observe::{NodeObservers, ObserverOptions},
    netns::Netns,
};

/// Ruleset text without counters or comments: changes only when rules do.
fn fingerprint(rules: &NodeRules) -> String {
    let mut s = String::new();
    for (b, rs) in rules.all() {
        s.push_str(&format!("{b:?}\n"));
        for t in rs.tables.values() {
            s.push_str(&t.name);
            for c in &t.chains {
                s.push_str(&format!("\n:{} {:?}", c.name, c.policy));
                for r in &c.rules {
                    s.push('\n');
                    s.push_str(&r.text);
                }
            }
        }
    }
    s
}

pub struct Rules {
    pub current: NodeRules,
    /// The snapshot before `current`: counter deltas between the two are
    /// evidence for drops seen in between.
    pub previous: Option<NodeRules>,
    pub owners: HashMap<usize, OwnerContext>,
    fingerprint: String,
    pub read_at: Instant,
    /// Bumped on every change, so caches keyed by it expire.
    pub generation: u64,
    /// The kernel's generation when these were read (taken before the
    /// read: a change during it shows at the next check).
    pub kernel_generation: Option<nf_tables::Generation>,
}

impl RulesView for Rules {
    /// Rulesets for a family, with their index into `owners`, and the
    /// previous snapshot of the same ruleset.
    fn rulesets(&self, family: Family) -> Vec<(&Ruleset, Option<&Ruleset>, &OwnerContext)> {
        let r = self;
        let v4n = r.current.v4.len();
        let (list, prev, base) = match family {
            Family::Ipv4 => (&r.current.v4, r.previous.as_ref().map(|p| &p.v4), 0),
            Family::Ipv6 => (&r.current.v6, r.previous.as_ref().map(|p| &p.v6), v4n),
        };
        list.iter()
            .enumerate()
            .filter_map(|(i, (backend, rs))| {
                let before =
                    prev.and_then(|p| p.iter().find(|(b, _)| b == backend).map(|(_, r)| r));
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
    /// The devices the observers are for, by name, with the ifindex each
    /// had when they were attached (`None`: missing then).
    devices: Vec<(String, Option<u32>)>,
    pub rules: Option<Rules>,
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
        let observers = obs.and_then(|o| match NodeObservers::attach(&netns, o) {
            Ok(obs) => Some(obs),
            Err(e) => {
                log::warn!("{label}: interface observers not attached: {e}");
                None
            }
        });
        let mut node = Self {
            devices: Vec::new(),
            obs_opts: obs.cloned(),
            netns,
            label,
            observers,
            rules: None,
            interfaces: Vec::new(),
            local_addrs: Vec::new(),
            warned: Default::default(),
            reads: 0,
            reads_published: 0,
        };
        node.refresh_addresses();
        node.devices = node.device_indexes();
        node
    }

    /// The observed roles' device names (overlay, bridge, underlay) with
    /// their ifindex now: a device recreated (flannel restarted: same name,
    /// new ifindex), appeared (cni0 with the first pod) or gone shows here.
    fn device_indexes(&self) -> Vec<(String, Option<u32>)> {
        let Some(opts) = &self.obs_opts else {
            return Vec::new();
        };
        let Ok(now) = self.netns.interfaces() else {
            return Vec::new();
        };
        let underlay = self
            .observers
            .as_ref()
            .and_then(|o| o.ifaces.underlay.as_ref().map(|u| u.0.clone()))
            .or_else(|| opts.underlay.clone());
        [
            Some(opts.overlay.clone().unwrap_or_else(|| "flannel.1".into())),
            Some(opts.bridge.clone().unwrap_or_else(|| "cni0".into())),
            underlay,
        ]
        .into_iter()
        .flatten()
        .map(|name| {
            let index = now.iter().find(|(_, n)| **n == name).map(|(i, _)| *i);
            (name, index)
        })
        .collect()
    }

    /// Re-attaches the observers when an observed device was recreated,
    /// appeared or went away; says what changed when it did.
    pub fn refresh_observers(&mut self) -> Option<String> {
        let opts = self.obs_opts.clone()?;
        let now = self.device_indexes();
        if now.is_empty() || now == self.devices {
            return None;
        }
        let what: Vec<String> = now
            .iter()
            .filter(|d| !self.devices.contains(d))
            .map(|(name, index)| {
                let before = self
                    .devices
                    .iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, i)| *i);
                match (before, index) {
                    (Some(b), Some(i)) => format!("{name} recreated (ifindex {b} → {i})"),
                    (None, Some(i)) => format!("{name} appeared (ifindex {i})"),
                    (Some(b), None) => format!("{name} gone (was ifindex {b})"),
                    (None, None) => format!("{name} still missing"),
                }
            })
            .collect();
        // The old programs go first: counters start again from zero.
        self.observers = None;
        self.observers = match NodeObservers::attach(&self.netns, &opts) {
            Ok(o) => Some(o),
            Err(e) => {
                log::warn!("{}: interface observers not attached: {e}", self.label);
                None
            }
        };
        // The underlay may have been found anew (a new VXLAN device's
        // lower device).
        self.devices = self.device_indexes();
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

    /// Re-reads the ruleset unless it was read after `since`.
    pub fn refresh_rules_since(&mut self, since: Instant) -> bool {
        if self.rules.as_ref().is_some_and(|r| r.read_at >= since) {
            return false;
        }
        self.refresh_rules()
    }

    /// Whether the rules may have changed since they were read, known
    /// cheaply: the nf_tables generation moved, or (iptables-legacy has no
    /// generation) `legacy_every` passed since the last read.
    pub fn rules_may_have_changed(&self, legacy_every: std::time::Duration) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        match (
            nf_tables::generation(self.netns.name.as_deref()),
            rules.kernel_generation,
        ) {
            (Ok(now), Some(then)) if !now.legacy_tables => now != then,
            (Ok(_), Some(_)) => rules.read_at.elapsed() >= legacy_every,
            _ => rules.read_at.elapsed() >= legacy_every,
        }
    }

    /// Re-reads the ruleset. Returns true when the rules changed (a reload).
    pub fn refresh_rules(&mut self) -> bool {
        let kernel_generation = nf_tables::generation(self.netns.name.as_deref()).ok();
        self.reads += 1;
        let read = match reader::read_live(self.netns.name.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("{}: cannot read the ruleset: {e}", self.label);
                return false;
            }
        };
        for p in &read.problems {
            if self.warned.insert(p.clone()) {
                log::warn!("{}: {p}", self.label);
            }
        }
        let fp = fingerprint(&read);
        let changed = self.rules.as_ref().is_none_or(|r| r.fingerprint != fp);
        if changed {
            self.refresh_addresses();
        }
        let owners: HashMap<usize, OwnerContext> = read
            .all()
            .enumerate()
            .map(|(i, (_, rs))| (i, OwnerContext::new(rs, Some(self.interfaces.clone()))))
            .collect();
        let generation = self
            .rules
            .as_ref()
            .map_or(0, |r| r.generation + u64::from(changed));
        let previous = self.rules.take().map(|r| r.current);
        self.rules = Some(Rules {
            current: read,
            previous,
            owners,
            fingerprint: fp,
            read_at: Instant::now(),
            generation,
            kernel_generation,
        });
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
