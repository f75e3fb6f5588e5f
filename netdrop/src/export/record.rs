//! The records netdrop reports: one per drop site (and its summaries), per
//! finding, per un-NATed egress flow. The same struct is the JSON line of
//! `--output json` (schema in the README) and the text line for people.

use std::net::IpAddr;

use netdrop_model::{Decision, Evidence, FindingId, Hook, Owner, Severity, Verdict};
use serde::Serialize;

use crate::decode::flow::Flow;

/// What a record reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A drop site (its first drop, then summaries).
    #[default]
    Drop,
    /// A static finding of the node's rules or settings.
    Finding,
    /// Pod traffic leaving the node un-NATed.
    Egress,
}

/// A drop site as `/explanations` tells them apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SiteKey {
    node: String,
    hook: Option<Hook>,
    table: Option<String>,
    chain: Option<String>,
    rule: Option<String>,
    reason: Option<String>,
    in_iface: Option<String>,
    out_iface: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Record {
    pub kind: Kind,
    pub node: String,
    pub hook: Option<Hook>,
    pub table: Option<String>,
    pub chain: Option<String>,
    /// Rule text as iptables-save prints it; null for a policy.
    pub rule: Option<String>,
    pub rule_no: Option<usize>,
    /// A native nftables rule's handle (`nft -a list`); null for iptables'.
    pub rule_handle: Option<u64>,
    pub policy: bool,
    /// DROP or REJECT (drops); ACCEPT for a finding about a rule that lets
    /// through what it should not.
    pub verdict: Option<Verdict>,
    pub reject_with: Option<String>,
    pub owner: Option<Owner>,
    pub leftover: bool,
    /// Kernel drop reason name.
    pub reason: Option<String>,
    /// Kernel function that dropped the packet.
    pub location: Option<String>,
    pub in_iface: Option<String>,
    pub out_iface: Option<String>,
    /// Bridged through `in_iface` (a bridge) and seen by iptables through
    /// br_netfilter; `physdev_in`/`physdev_out` are the bridge ports.
    pub bridged: bool,
    pub physdev_in: Option<String>,
    pub physdev_out: Option<String>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: Option<String>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// The pod flow inside a VXLAN packet.
    pub inner: Option<Flow>,
    /// The pods at the flow's ends (the inner flow's, for VXLAN), from the
    /// node's container runtime; `null` when no pod of it has the address.
    pub src_pod: Option<crate::attribute::names::PodRef>,
    pub dst_pod: Option<crate::attribute::names::PodRef>,
    pub vxlan: bool,
    pub vni: Option<u32>,
    /// kube-proxy "namespace/name:port".
    pub service: Option<String>,
    /// Packets counted at this site (or flow) since netdrop started.
    pub packets: u64,
    pub bytes: u64,
    /// Since the previous record of the same site.
    pub new_packets: u64,
    pub evidence: Option<Evidence>,
    /// Stable id of a finding.
    pub finding: Option<FindingId>,
    pub severity: Option<Severity>,
    pub explanation: Option<String>,
    pub fix: Option<String>,
    /// Whether the fix was walked on netdrop's model before it was printed.
    pub fix_check: Option<crate::explain::FixStatus>,
    pub assumptions: Vec<String>,
    pub unmodelled: bool,
    /// Netfilter dropped it (a rule or policy did, found or not).
    #[serde(skip)]
    pub netfilter: bool,
}

impl Record {
    /// Sets the pods at the flow's ends, and names them where the
    /// explanation speaks of the flow (not of a VXLAN packet between
    /// nodes: its pods are the inner flow's). Names set before are
    /// replaced (an address a new pod got).
    pub fn set_pods(
        &mut self,
        src: Option<crate::attribute::names::PodRef>,
        dst: Option<crate::attribute::names::PodRef>,
    ) {
        let before = self.flow_words();
        // A NetworkPolicy fix finds its pod by name once it has one.
        let ends = match (&self.inner, self.src, self.dst) {
            (Some(i), ..) => Some((i.src, i.dst)),
            (None, Some(s), Some(d)) => Some((s, d)),
            _ => None,
        };
        if let (Some(fix), Some((s_ip, d_ip))) = (&mut self.fix, ends) {
            let words = |ip, p: &Option<crate::attribute::names::PodRef>| {
                crate::explain::pod_policies(
                    ip,
                    p.as_ref().map(|p| (p.namespace.as_str(), p.name.as_str())),
                )
            };
            for (ip, old, new) in [(s_ip, &self.src_pod, &src), (d_ip, &self.dst_pod, &dst)] {
                let (was, now) = (words(ip, old), words(ip, new));
                if was != now {
                    *fix = fix.replacen(&was, &now, 1);
                }
            }
        }
        self.src_pod = src;
        self.dst_pod = dst;
        if self.inner.is_some() {
            return;
        }
        if let (Some(before), Some(after), Some(e)) =
            (before, self.flow_words(), &mut self.explanation)
            && before != after
        {
            *e = e.replacen(&before, &after, 1);
        }
    }

    /// The flow as the explanation says it, with the pods named so far.
    fn flow_words(&self) -> Option<String> {
        let (Some(s), Some(d), Some(proto)) = (self.src, self.dst, self.proto.as_deref()) else {
            return None;
        };
        Some(if self.src_pod.is_none() && self.dst_pod.is_none() {
            netdrop_model::packet::flow_notation(proto, s, self.sport, d, self.dport)
        } else {
            flow_with_pods(
                proto,
                (s, self.sport, self.src_pod.as_ref()),
                (d, self.dport, self.dst_pod.as_ref()),
            )
        })
    }

    /// What makes two records the same drop site (`/explanations` keeps
    /// one entry per site): node, hook, rule and reason, devices.
    pub fn site_key(&self) -> SiteKey {
        SiteKey {
            node: self.node.clone(),
            hook: self.hook,
            table: self.table.clone(),
            chain: self.chain.clone(),
            rule: self.rule.clone(),
            reason: self.reason.clone(),
            in_iface: self.in_iface.clone(),
            out_iface: self.out_iface.clone(),
        }
    }

    /// Where the rule that dropped it is and whose it is, from the model's
    /// decision.
    pub fn set_decision(&mut self, d: &Decision) {
        self.hook = Some(d.hook);
        self.table = Some(d.table.clone());
        self.chain = Some(d.chain.clone());
        self.rule = d.rule.clone();
        self.rule_no = d.rule_no;
        self.rule_handle = d.rule_handle;
        self.policy = d.policy;
        self.verdict = Some(d.verdict);
        self.reject_with = d.reject_with.clone();
        self.owner = Some(d.owner);
        self.leftover = d.leftover;
        self.service = d.service.clone();
        self.assumptions = crate::explain::unknowns::assumptions(&d.assumptions);
        self.unmodelled = d.unmodelled;
    }
    pub fn set_flow(&mut self, f: &Flow) {
        self.src = Some(f.src);
        self.dst = Some(f.dst);
        self.proto = Some(f.proto.clone());
        self.sport = f.sport;
        self.dport = f.dport;
    }

    fn flow_text(&self) -> Option<String> {
        // Pods by name on the outer flow when it is the pods' own.
        let (sp, dp) = if self.inner.is_none() {
            (self.src_pod.as_ref(), self.dst_pod.as_ref())
        } else {
            (None, None)
        };
        Some(flow_with_pods(
            self.proto.as_deref().unwrap_or("ip"),
            (self.src?, self.sport, sp),
            (self.dst?, self.dport, dp),
        ))
    }

    /// One headline, plus why/fix lines when `detail`.
    pub fn text(&self, detail: bool) -> String {
        let mut s = format!("[{}] ", self.node);
        match self.kind {
            Kind::Finding => {
                s.push_str(&format!(
                    "FINDING {} {}",
                    self.severity.map_or("", Severity::as_str).to_uppercase(),
                    self.finding.map_or("", FindingId::as_str)
                ));
            }
            Kind::Egress => s.push_str("UN-NATED EGRESS"),
            Kind::Drop => {
                s.push_str(self.verdict.unwrap_or(Verdict::Drop).as_str());
                if let Some(r) = &self.reason {
                    s.push_str(&format!(" ({r})"));
                }
                if let Some(h) = &self.hook {
                    s.push_str(&format!(" at {h}"));
                }
            }
        }
        match (&self.table, &self.chain) {
            (Some(t), Some(c)) if self.policy => s.push_str(&format!(" {t}/{c} policy")),
            (Some(t), Some(c)) => s.push_str(&format!(
                " {t}/{c}{}",
                self.rule_no.map(|n| format!(" #{n}")).unwrap_or_default()
            )),
            _ => {}
        }
        if let Some(o) = self.owner {
            s.push_str(&format!(
                " [{}{}]",
                o.as_str(),
                if self.leftover { ", leftover" } else { "" }
            ));
        }
        if let Some(i) = &self.in_iface {
            s.push_str(&format!(" in {i}"));
        }
        if let Some(o) = &self.out_iface {
            s.push_str(&format!(" out {o}"));
        }
        if self.bridged {
            s.push_str(&format!(
                " (bridged {} -> {})",
                self.physdev_in.as_deref().unwrap_or("?"),
                self.physdev_out.as_deref().unwrap_or("?")
            ));
        }
        if let Some(f) = self.flow_text() {
            s.push_str(&format!(": {f}"));
        }
        if let Some(i) = &self.inner {
            let carried = flow_with_pods(
                &i.proto,
                (i.src, i.sport, self.src_pod.as_ref()),
                (i.dst, i.dport, self.dst_pod.as_ref()),
            );
            s.push_str(&format!(
                " (VXLAN vni {} carrying {carried})",
                self.vni.unwrap_or(0)
            ));
        }
        if let Some(svc) = &self.service {
            s.push_str(&format!(" (Service {svc})"));
        }
        if self.kind != Kind::Finding {
            s.push_str(&format!(" — {} packets", self.packets));
            if self.new_packets != self.packets {
                s.push_str(&format!(" (+{})", self.new_packets));
            }
            if let Some(e) = self.evidence {
                s.push_str(&format!(" [{}]", e.as_str()));
            }
        }
        if detail {
            if let Some(r) = &self.rule {
                s.push_str(&format!("\n    rule: {r}"));
            }
            if let Some(e) = &self.explanation {
                s.push_str(&format!("\n    why:  {e}"));
            }
            if let Some(f) = &self.fix {
                s.push_str(&format!("\n    fix:  {f}"));
            }
        }
        s
    }
}

/// A flow in words with its pods by name: `udp shop/web-0
/// (10.224.1.2:5000) -> 10.224.2.2:9000` (an end without a pod as
/// [`netdrop_model::packet::flow_notation`] writes it).
pub fn flow_with_pods(
    proto: &str,
    (src, sport, src_pod): (
        IpAddr,
        Option<u16>,
        Option<&crate::attribute::names::PodRef>,
    ),
    (dst, dport, dst_pod): (
        IpAddr,
        Option<u16>,
        Option<&crate::attribute::names::PodRef>,
    ),
) -> String {
    let end = |a: IpAddr, port: Option<u16>, pod: Option<&crate::attribute::names::PodRef>| {
        let at = match (a, port) {
            (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
            (a, Some(p)) => format!("{a}:{p}"),
            (a, None) => a.to_string(),
        };
        match pod {
            Some(p) => format!("{}/{} ({at})", p.namespace, p.name),
            None => at,
        }
    };
    format!(
        "{proto} {} -> {}",
        end(src, sport, src_pod),
        end(dst, dport, dst_pod)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::names::PodRef;

    #[test]
    fn pods_are_named_in_the_flow_and_its_explanation() {
        let pod = |ns: &str, name: &str| PodRef {
            namespace: ns.into(),
            name: name.into(),
            uid: String::new(),
            workload: None,
        };
        let mut r = Record {
            src: "10.224.1.2".parse().ok(),
            dst: "10.224.2.2".parse().ok(),
            proto: Some("udp".into()),
            sport: Some(5000),
            dport: Some(9000),
            explanation: Some(
                "udp 10.224.1.2:5000 -> 10.224.2.2:9000 in flannel.1 out cni0 reaches the end"
                    .into(),
            ),
            ..Record::default()
        };
        r.set_pods(Some(pod("shop", "web-0")), None);
        assert_eq!(
            r.explanation.as_deref(),
            Some(
                "udp shop/web-0 (10.224.1.2:5000) -> 10.224.2.2:9000 in flannel.1 out cni0 reaches the end"
            )
        );
        assert!(
            r.text(false)
                .contains(": udp shop/web-0 (10.224.1.2:5000) -> 10.224.2.2:9000"),
            "{}",
            r.text(false)
        );
        // A Service the destination is (from a kube-proxy rule or the API).
        r.service = Some("shop/db".into());
        assert!(
            r.text(false)
                .contains("-> 10.224.2.2:9000 (Service shop/db) — "),
            "{}",
            r.text(false)
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["src_pod"],
            serde_json::json!({"namespace": "shop", "name": "web-0", "workload": null})
        );
        assert!(v["dst_pod"].is_null());
    }

    /// A NetworkPolicy fix written before the pod had a name finds it by
    /// name once it has one, and follows a new pod at the address.
    #[test]
    fn a_policy_fix_names_its_pod() {
        let pod = |ns: &str, name: &str| PodRef {
            namespace: ns.into(),
            name: name.into(),
            uid: String::new(),
            workload: None,
        };
        let dst: IpAddr = "10.224.2.2".parse().unwrap();
        let mut r = Record {
            src: "10.224.1.2".parse().ok(),
            dst: Some(dst),
            proto: Some("tcp".into()),
            fix: Some(format!(
                "{} If this traffic should pass, allow it.",
                crate::explain::pod_policies(dst, None)
            )),
            ..Record::default()
        };
        r.set_pods(None, Some(pod("shop", "web-0")));
        let fix = r.fix.clone().unwrap();
        assert!(
            fix.starts_with(
                "See the policies that select pod shop/web-0: `kubectl -n shop get networkpolicy`"
            ) && !fix.contains("field-selector")
                && fix.ends_with("If this traffic should pass, allow it."),
            "{fix}"
        );
        r.set_pods(None, Some(pod("shop", "api-0")));
        let fix = r.fix.unwrap();
        assert!(
            fix.contains("pod shop/api-0") && !fix.contains("web-0"),
            "{fix}"
        );
    }
}
