//! Where a walk ended, resolved against the ruleset: the hook, table, chain
//! and rule (or policy) that decided, whose it is, the Service it names, and
//! what the model had to assume. Typed data only; `netdrop`'s `explain`
//! turns it into sentences and a fix.

use serde::{Serialize, Serializer};

use crate::{
    owner::{Owner, OwnerContext, chain_owner},
    question::Assumption,
    rules::{Policy, Rule, Ruleset, Target},
    simulate::{Outcome, Packet, Step, simulate_without},
    words::{Hook, Verdict},
};

/// The rule or policy that decided a packet's fate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub hook: Hook,
    pub table: String,
    pub chain: String,
    /// Rule text as iptables-save prints it; `None` when the policy decided.
    pub rule: Option<String>,
    /// 1-based rule number in its chain (`iptables -L --line-numbers`).
    pub rule_no: Option<usize>,
    /// A native nftables rule's handle (`nft -a list`).
    pub rule_handle: Option<u64>,
    pub policy: bool,
    pub verdict: Verdict,
    pub reject_with: Option<String>,
    pub owner: crate::Owner,
    /// The owner is a CNI that does not run on this node.
    pub leftover: bool,
    /// kube-proxy `namespace/name:port` when the rule names one.
    pub service: Option<String>,
    /// The rules walked to get there.
    #[serde(serialize_with = "path_notation")]
    pub path: Vec<Step>,
    /// What the model had to assume (random branches, ipsets, unmodelled
    /// matches), typed; `explain` says them.
    #[serde(skip)]
    pub assumptions: Vec<Assumption>,
    pub unmodelled: bool,
}

/// `table/chain #n: text`, or `table/chain policy DROP`.
pub fn step_notation(s: &Step) -> String {
    match s.rule_no {
        Some(n) => format!("{}/{} #{n}: {}", s.table, s.chain, s.text),
        None => format!("{}/{} policy DROP", s.table, s.chain),
    }
}

fn path_notation<S: Serializer>(path: &[Step], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(path.iter().map(step_notation))
}

impl Decision {
    /// Resolves a (dropping) outcome of a walk through `rs`.
    pub fn of(rs: &Ruleset, owners: &OwnerContext, o: &Outcome) -> Self {
        let fallback = Step {
            hook: o.hook,
            table: "filter".into(),
            chain: o.hook.as_str().into(),
            rule_no: None,
            text: String::new(),
            line: 0,
        };
        let d = o.decider().cloned().unwrap_or(fallback);
        let rule = rule_at(rs, &d);
        let owner = match (crate::owner::table_owner(&d.table), rule) {
            // A native table's rules and policies are its agent's.
            (Some(o), _) => o,
            (None, Some(r)) => owners.rule_owner(&d.chain, r),
            (None, None) => owners.policy_owner(&d.chain, Policy::Drop),
        };
        // A drop inside a leftover agent's chain, or reached through one.
        // (A native table is its agent's as a whole: `ip calico-…` left by
        // an uninstalled CNI.)
        let leftover_owner = o
            .path
            .iter()
            .filter_map(|s| crate::owner::table_owner(&s.table).or_else(|| chain_owner(&s.chain)))
            .find(|ow| owners.is_leftover(*ow));
        Self {
            hook: o.hook,
            table: d.table.clone(),
            chain: d.chain.clone(),
            rule: d.rule_no.map(|_| d.text.clone()),
            rule_no: d.rule_no,
            rule_handle: rule.and_then(|r| r.handle),
            policy: d.rule_no.is_none(),
            verdict: o.verdict,
            reject_with: o.reject_with.clone(),
            owner: leftover_owner.unwrap_or(owner),
            leftover: leftover_owner.is_some(),
            // The deciding rule's comment, or the nearest one on the way
            // (kube-proxy's nftables mode names the Service on the map
            // element that sent the packet to its reject chain).
            // Else the chain it died in or came through: kube-proxy's
            // nftables chains carry the Service in their names.
            service: std::iter::once(&d)
                .chain(o.path.iter().rev())
                .filter_map(|s| rule_at(rs, s))
                .find_map(|r| r.comment().and_then(|c| service_of(&c)))
                .or_else(|| {
                    std::iter::once(&d)
                        .chain(o.path.iter().rev())
                        .filter(|s| crate::owner::table_owner(&s.table) == Some(Owner::KubeProxy))
                        .find_map(|s| service_of_nft_chain(&s.chain))
                }),
            path: o.path.clone(),
            assumptions: o.assumptions.clone(),
            unmodelled: o.unmodelled,
        }
    }

    /// The step that decided.
    pub fn decider(&self) -> Option<&Step> {
        self.path.last()
    }

    /// The deciding rule's target (`None` for a policy).
    pub fn target<'a>(&self, rs: &'a Ruleset) -> Option<&'a Target> {
        rule_at(rs, self.decider()?).map(|r| &r.target)
    }
}

fn rule_at<'a>(rs: &'a Ruleset, step: &Step) -> Option<&'a Rule> {
    step.rule_no.and_then(|n| {
        rs.tables
            .get(&step.table)?
            .chain(&step.chain)?
            .rules
            .get(n - 1)
    })
}

/// `ns/name:port` from a kube-proxy comment like `ns6/svc6:p80 has no endpoints`.
pub fn service_of(comment: &str) -> Option<String> {
    let first = comment.split_whitespace().next()?;
    (first.contains('/') && !first.contains("//")).then(|| first.trim_end_matches(',').to_owned())
}

/// `ns/name:port` from a chain of kube-proxy's nftables mode:
/// `{service,external,endpoint,firewall}-HASH-ns/name/proto/port`
/// (`__ip/port` after it for an endpoint).
pub fn service_of_nft_chain(chain: &str) -> Option<String> {
    let (kind, rest) = chain.split_once('-')?;
    if !matches!(kind, "service" | "external" | "endpoint" | "firewall") {
        return None;
    }
    let (hash, rest) = rest.split_once('-')?;
    if hash.len() != 8 || !hash.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let svc = rest.split("__").next()?;
    let mut parts = svc.split('/');
    let (ns, name, _proto, port) = (parts.next()?, parts.next()?, parts.next()?, parts.next());
    if ns.is_empty() || name.is_empty() || parts.next().is_some() {
        return None;
    }
    Some(match port {
        Some(p) if !p.is_empty() => format!("{ns}/{name}:{p}"),
        _ => format!("{ns}/{name}"),
    })
}

/// If removing the deciding rule lets the packet through on every branch,
/// the accepting rule it shadows (the first one after it, in the same chain,
/// on the accepted path).
pub fn shadowed_accept(rs: &Ruleset, p: &Packet, d: &Step) -> Option<Step> {
    let n = d.rule_no?;
    let outcomes = simulate_without(rs, p, &d.table, &d.chain, n - 1);
    let accept = outcomes
        .iter()
        .find(|o| o.verdict == Verdict::Accept && o.assumptions.is_empty())?;
    if !outcomes.iter().all(|o| o.verdict == Verdict::Accept) {
        return None;
    }
    // Numbers are the real ones: nothing was removed, only skipped.
    accept
        .path
        .iter()
        .find(|s| s.table == d.table && s.chain == d.chain && s.rule_no.is_some_and(|m| m > n))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_ruleset;

    #[test]
    fn kube_proxy_nft_chains_name_their_service() {
        for (chain, want) in [
            ("firewall-HVFWP5L3-ns5/svc5/tcp/p80", Some("ns5/svc5:p80")),
            (
                "endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80",
                Some("ns5/svc5:p80"),
            ),
            (
                "external-42NFTM6N-kube-system/kube-dns/udp/dns",
                Some("kube-system/kube-dns:dns"),
            ),
            ("service-ULMVA6XW-ns1/svc1/tcp/", Some("ns1/svc1")),
            ("services", None),
            ("service-endpoints-check", None),
            ("filter-forward", None),
            ("firewall-check", None),
        ] {
            assert_eq!(service_of_nft_chain(chain).as_deref(), want, "{chain}");
        }
    }

    #[test]
    fn a_decision_names_rule_owner_service_and_leftover() {
        let rs = parse_ruleset(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:cali-FORWARD - [0:0]\n\
             -A FORWARD -j cali-FORWARD\n-A FORWARD -j KUBE-SERVICES\n\
             -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"kube-system/dns:dns-tcp has no endpoints\" -m tcp --dport 53 -j REJECT --reject-with icmp-port-unreachable\n\
             -A cali-FORWARD -d 10.224.2.0/24 -j DROP\nCOMMIT\n",
        )
        .unwrap();
        let owners = OwnerContext::new(&rs, Some(vec!["eth0".into()]));
        let mut p = Packet::new(
            Hook::Forward,
            6,
            "10.224.1.2".parse().unwrap(),
            "10.96.0.10".parse().unwrap(),
        );
        p.dport = Some(53);
        let o = crate::simulate(&rs, &p).remove(0);
        let d = Decision::of(&rs, &owners, &o);
        assert_eq!(d.verdict, Verdict::Reject);
        assert_eq!(
            (d.table.as_str(), d.chain.as_str(), d.rule_no),
            ("filter", "KUBE-SERVICES", Some(1))
        );
        assert_eq!(d.owner, crate::Owner::KubeProxy);
        assert_eq!(d.service.as_deref(), Some("kube-system/dns:dns-tcp"));
        assert!(!d.leftover);
        assert_eq!(
            serde_json::to_value(&d).unwrap()["path"][1],
            "filter/KUBE-SERVICES #1: -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"kube-system/dns:dns-tcp has no endpoints\" -m tcp --dport 53 -j REJECT --reject-with icmp-port-unreachable"
        );

        p.dst = "10.224.2.5".parse().unwrap();
        let o = crate::simulate(&rs, &p).remove(0);
        let d = Decision::of(&rs, &owners, &o);
        assert_eq!((d.owner, d.leftover), (crate::Owner::Calico, true));
        assert_eq!(d.path.len(), 2);
    }
}
