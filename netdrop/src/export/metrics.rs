//! Prometheus metrics (OpenMetrics text, prometheus-client). Labels are
//! bounded: nodes, reasons, hooks, tables, chains, owners — never addresses
//! or ports of pods. The one exception is the VXLAN peer, a node address,
//! bounded by the cluster's size.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use netdrop_model::Verdict;

use super::record::{Record, SiteKey};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub node: String,
    pub reason: String,
    pub hook: String,
    pub table: String,
    pub chain: String,
    pub verdict: String,
    pub owner: String,
}

/// A workload at one end of dropped packets (`--metrics-workload-labels`):
/// namespaces and workloads are few; pods and addresses never labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadDropLabels {
    pub node: String,
    /// `source` or `destination`.
    pub end: String,
    pub namespace: String,
    /// `deployment/web`; empty for a pod no known controller owns.
    pub workload: String,
    pub hook: String,
    pub table: String,
    pub chain: String,
    pub owner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VxlanDropLabels {
    pub node: String,
    /// The node that sent the dropped VXLAN packet.
    pub peer: String,
    pub reason: String,
    pub hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IfaceLabels {
    pub node: String,
    pub iface: String,
    pub role: String,
    pub direction: String,
}

/// A device a node's observers are attached to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    pub node: String,
    pub iface: String,
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EgressLabels {
    pub node: String,
    pub iface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub node: String,
    pub peer: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub node: String,
    pub finding: String,
    pub severity: String,
    pub owner: String,
    pub chain: String,
}

/// One series per rule (or policy) that dropped pod traffic: what it is,
/// whose, and the fix. Bounded by the rules that drop.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteInfoLabels {
    pub node: String,
    pub hook: String,
    pub table: String,
    pub chain: String,
    pub rule: String,
    pub verdict: String,
    pub owner: String,
    pub leftover: String,
    pub explanation: String,
    pub fix: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

/// One series per observed node: what netdrop runs there.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeInfoLabels {
    pub node: String,
    pub version: String,
    /// The drop probe attached (`tp_btf` or `tracepoint`).
    pub probe: String,
}

/// What an observer could not record on a node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObserverLossLabels {
    pub node: String,
    /// `egress_samples_lost`, `egress_samples_suppressed`,
    /// `vxlan_peers_uncounted`.
    pub loss: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub program: String,
}

pub struct Metrics {
    pub drops: Family<DropLabels, Counter>,
    pub drop_bytes: Family<DropLabels, Counter>,
    pub vxlan_drops: Family<VxlanDropLabels, Counter>,
    pub workload_drops: Family<WorkloadDropLabels, Counter>,
    pub unnat_egress: Family<EgressLabels, Counter>,
    pub unnat_egress_bytes: Family<EgressLabels, Counter>,
    pub iface_pod_packets: Family<IfaceLabels, Counter>,
    pub observed_devices: Family<DeviceLabels, Gauge>,
    pub iface_pod_bytes: Family<IfaceLabels, Counter>,
    pub vxlan_packets: Family<PeerLabels, Counter>,
    pub findings: Family<FindingLabels, Gauge>,
    pub node_info: Family<NodeInfoLabels, Gauge>,
    pub drop_site_info: Family<SiteInfoLabels, Gauge>,
    /// 1 for a node whose drop sites outnumber `--max-site-series`.
    pub drop_sites_capped: Family<NodeLabels, Gauge>,
    pub samples_lost: Counter,
    pub samples_suppressed: Counter,
    pub drops_filtered: Counter,
    /// Drops the kernel saw but could count at no site (site map full).
    pub drops_uncounted: Counter,
    pub program_errors: Counter,
    pub observer_losses: Family<ObserverLossLabels, Counter>,
    pub ruleset_reloads: Family<NodeLabels, Counter>,
    pub ruleset_reads: Family<NodeLabels, Counter>,
    pub attribution_failures: Family<NodeLabels, Counter>,
    /// From kernel.bpf_stats_enabled: nanoseconds and runs of each program.
    /// Seconds (the base unit), from the kernel's nanoseconds.
    pub program_run_seconds: Family<ProgramLabels, Counter<f64, AtomicU64>>,
    pub program_runs: Family<ProgramLabels, Counter>,
}

/// What the HTTP server shares with the watch loop.
pub struct Shared {
    pub registry: Registry,
    pub metrics: Metrics,
    /// The latest explained record of every drop site, for `/explanations`.
    pub explanations: Mutex<HashMap<SiteKey, Record>>,
    /// Set once the kernel programs are attached (`/readyz`).
    pub ready: AtomicBool,
    /// Drop-site label sets per node at most (`--max-site-series`).
    pub site_limit: std::sync::atomic::AtomicUsize,
    /// Count drops by namespace and workload too
    /// (`--metrics-workload-labels`).
    pub workload_labels: AtomicBool,
    /// The drop-site label sets made so far, per node.
    site_labels: Mutex<HashMap<String, std::collections::HashSet<DropLabels>>>,
}

pub fn new_shared() -> Arc<Shared> {
    let mut registry = Registry::default();
    let m = Metrics {
        drops: Family::default(),
        drop_bytes: Family::default(),
        vxlan_drops: Family::default(),
        workload_drops: Family::default(),
        unnat_egress: Family::default(),
        unnat_egress_bytes: Family::default(),
        iface_pod_packets: Family::default(),
        observed_devices: Family::default(),
        iface_pod_bytes: Family::default(),
        vxlan_packets: Family::default(),
        findings: Family::default(),
        node_info: Family::default(),
        drop_site_info: Family::default(),
        drop_sites_capped: Family::default(),
        samples_lost: Counter::default(),
        samples_suppressed: Counter::default(),
        drops_filtered: Counter::default(),
        drops_uncounted: Counter::default(),
        program_errors: Counter::default(),
        observer_losses: Family::default(),
        ruleset_reloads: Family::default(),
        ruleset_reads: Family::default(),
        attribution_failures: Family::default(),
        program_run_seconds: Family::default(),
        program_runs: Family::default(),
    };
    let r = &mut registry;
    r.register(
        "netdrop_drops",
        "Pod packets dropped, by where they died and whose rule killed them",
        m.drops.clone(),
    );
    r.register(
        "netdrop_drop_bytes",
        "Bytes of dropped pod packets",
        m.drop_bytes.clone(),
    );
    r.register(
        "netdrop_vxlan_drops",
        "Dropped VXLAN packets between nodes, by sending node",
        m.vxlan_drops.clone(),
    );
    r.register(
        "netdrop_workload_drops",
        "Dropped pod packets by the namespace and workload at either end (--metrics-workload-labels): a site's drops of each poll go to the pods of its latest sample",
        m.workload_drops.clone(),
    );
    r.register(
        "netdrop_unnat_egress_packets",
        "Pod packets leaving the node without source NAT",
        m.unnat_egress.clone(),
    );
    r.register(
        "netdrop_unnat_egress_bytes",
        "Bytes of pod packets leaving the node without source NAT",
        m.unnat_egress_bytes.clone(),
    );
    r.register(
        "netdrop_iface_pod_packets",
        "Pod packets seen on the observed devices",
        m.iface_pod_packets.clone(),
    );
    r.register(
        "netdrop_observed_devices",
        "Devices the observers are attached to now (1 each), by role",
        m.observed_devices.clone(),
    );
    r.register(
        "netdrop_iface_pod_bytes",
        "Pod bytes seen on the observed devices",
        m.iface_pod_bytes.clone(),
    );
    r.register(
        "netdrop_vxlan_packets",
        "VXLAN packets on the underlay, by peer node",
        m.vxlan_packets.clone(),
    );
    r.register(
        "netdrop_findings",
        "Current static findings (1 per finding)",
        m.findings.clone(),
    );
    r.register(
        "netdrop_node",
        "Nodes netdrop observes (1 per node), with its version and drop probe",
        m.node_info.clone(),
    );
    r.register(
        "netdrop_drop_site_info",
        "Rules that dropped pod traffic, with explanation and fix",
        m.drop_site_info.clone(),
    );
    r.register(
        "netdrop_samples_lost",
        "Drop samples lost because the ring buffer was full",
        m.samples_lost.clone(),
    );
    r.register(
        "netdrop_samples_suppressed",
        "Drop samples not sent because of the rate limit (counts stay exact)",
        m.samples_suppressed.clone(),
    );
    r.register(
        "netdrop_drops_filtered",
        "Drops ignored because no pod address was involved",
        m.drops_filtered.clone(),
    );
    r.register(
        "netdrop_drops_uncounted",
        "Pod packet drops the kernel saw but could count at no drop site (its site map was full)",
        m.drops_uncounted.clone(),
    );
    r.register(
        "netdrop_program_errors",
        "Drops netdrop's kernel program could not handle (counted, never silent)",
        m.program_errors.clone(),
    );
    r.register(
        "netdrop_observer_losses",
        "What the interface observers could not record: un-NATed egress samples lost or held back, VXLAN packets not counted per peer",
        m.observer_losses.clone(),
    );
    r.register(
        "netdrop_ruleset_reloads",
        "Times a node's changed ruleset was re-read",
        m.ruleset_reloads.clone(),
    );
    r.register(
        "netdrop_drop_sites_capped",
        "1 when a node has more drop sites than --max-site-series: the rest are counted with table, chain and owner \"other\"",
        m.drop_sites_capped.clone(),
    );
    r.register(
        "netdrop_ruleset_reads",
        "Times a node's ruleset was read: when the kernel says it changed, every 10 s with iptables-legacy tables, and for the rule counters of new drops",
        m.ruleset_reads.clone(),
    );
    r.register(
        "netdrop_attribution_failures",
        "Drop sites netdrop could not attribute to a rule",
        m.attribution_failures.clone(),
    );
    r.register(
        "netdrop_program_run_time_seconds",
        "Kernel time spent in netdrop's programs (kernel.bpf_stats_enabled=1)",
        m.program_run_seconds.clone(),
    );
    r.register(
        "netdrop_program_runs",
        "Runs of netdrop's programs (kernel.bpf_stats_enabled=1)",
        m.program_runs.clone(),
    );
    Arc::new(Shared {
        registry,
        metrics: m,
        explanations: Mutex::new(HashMap::new()),
        ready: AtomicBool::new(false),
        site_limit: std::sync::atomic::AtomicUsize::new(usize::MAX),
        workload_labels: AtomicBool::new(false),
        site_labels: Mutex::new(HashMap::new()),
    })
}

/// The series a site beyond `--max-site-series` counts in: its node, hook,
/// reason and verdict, and nothing that grows with the ruleset.
fn other_of(l: &DropLabels) -> DropLabels {
    DropLabels {
        table: "other".into(),
        chain: "other".into(),
        owner: "other".into(),
        ..l.clone()
    }
}

impl DropLabels {
    /// The labels of a drop record: where it died and whose rule killed it
    /// (`unknown` for a netfilter drop no rule was found for, `kernel` for
    /// a drop no rule was involved in).
    pub fn of(r: &Record) -> Self {
        Self {
            node: r.node.clone(),
            reason: r.reason.clone().unwrap_or_default(),
            hook: r.hook.map(|h| h.as_str()).unwrap_or_default().to_owned(),
            table: r.table.clone().unwrap_or_default(),
            chain: r.chain.clone().unwrap_or_default(),
            verdict: r.verdict.unwrap_or(Verdict::Drop).as_str().to_owned(),
            owner: match r.owner {
                Some(o) => o.as_str(),
                None if r.netfilter => "unknown",
                None => "kernel",
            }
            .to_owned(),
        }
    }
}

/// A drop site's series, made once per site and rule (label sets are long:
/// building and hashing them on every poll is what a busy site must not pay).
#[derive(Clone)]
pub struct SiteSeries {
    labels: DropLabels,
    /// Counted in the node's `other` series (over `--max-site-series`).
    other: bool,
    drops: Counter,
    bytes: Counter,
    vxlan: Option<(String, Counter)>,
    /// The workloads at its ends, as of its record (when counted).
    workloads: Vec<Counter>,
}

impl SiteSeries {
    /// Counts `packets` and `bytes` more drops at the site.
    pub fn count(&self, packets: u64, bytes: u64) {
        self.drops.inc_by(packets);
        self.bytes.inc_by(bytes);
        if let Some((_, c)) = &self.vxlan {
            c.inc_by(packets);
        }
        for c in &self.workloads {
            c.inc_by(packets);
        }
    }
}

impl Shared {
    /// The series a drop record counts in: `old` (the site's, from before)
    /// while its labels hold, else made anew.
    pub fn site_series(&self, r: &Record, old: Option<SiteSeries>) -> SiteSeries {
        let m = &self.metrics;
        let labels = DropLabels::of(r);
        let mut series = match old {
            Some(s) if s.labels == labels || (s.other && s.labels == other_of(&labels)) => s,
            _ => {
                let (labels, other) = self.bounded(labels);
                SiteSeries {
                    drops: m.drops.get_or_create(&labels).clone(),
                    bytes: m.drop_bytes.get_or_create(&labels).clone(),
                    labels,
                    other,
                    vxlan: None,
                    workloads: Vec::new(),
                }
            }
        };
        // VXLAN drops by sending node (the outer source).
        let peer = r
            .vxlan
            .then(|| r.src.map(|a| a.to_string()).unwrap_or_default());
        if series.vxlan.as_ref().map(|(p, _)| p) != peer.as_ref() {
            series.vxlan = peer.map(|peer| {
                let c = m
                    .vxlan_drops
                    .get_or_create(&VxlanDropLabels {
                        node: r.node.clone(),
                        peer: peer.clone(),
                        reason: series.labels.reason.clone(),
                        hook: series.labels.hook.clone(),
                    })
                    .clone();
                (peer, c)
            });
        }
        series.workloads = if self.workload_labels.load(Ordering::Relaxed) {
            [("source", &r.src_pod), ("destination", &r.dst_pod)]
                .into_iter()
                .filter_map(|(end, p)| {
                    let p = p.as_ref()?;
                    Some(
                        m.workload_drops
                            .get_or_create(&WorkloadDropLabels {
                                node: series.labels.node.clone(),
                                end: end.into(),
                                namespace: p.namespace.clone(),
                                workload: p.workload.clone().unwrap_or_default(),
                                hook: series.labels.hook.clone(),
                                table: series.labels.table.clone(),
                                chain: series.labels.chain.clone(),
                                owner: series.labels.owner.clone(),
                            })
                            .clone(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        series
    }

    /// `labels` if the node may have one more drop-site series, else its
    /// `other` series (said once per node, in the log and the metrics).
    fn bounded(&self, labels: DropLabels) -> (DropLabels, bool) {
        let limit = self.site_limit.load(Ordering::Relaxed);
        let Ok(mut all) = self.site_labels.lock() else {
            return (labels, false);
        };
        let node = all.entry(labels.node.clone()).or_default();
        if node.contains(&labels) || node.len() < limit {
            node.insert(labels.clone());
            return (labels, false);
        }
        let capped = self.metrics.drop_sites_capped.get_or_create(&NodeLabels {
            node: labels.node.clone(),
        });
        if capped.get() == 0 {
            capped.set(1);
            log::warn!(
                "{}: more than {limit} drop sites (--max-site-series): the rest are counted in series with table, chain and owner \"other\"; records and /explanations still name every site",
                labels.node
            );
        }
        (other_of(&labels), true)
    }

    /// The info series of the rule behind a drop record: what it is,
    /// whose, the explanation of the site (`explanation` must not name the
    /// packet's addresses or ports: labels stay bounded) and the fix. Set
    /// when a site's words are new.
    pub fn site_info(&self, r: &Record, series: &SiteSeries, explanation: &str, fix: &str) {
        // Over the limit: no series per rule either.
        if series.other {
            return;
        }
        let l = &series.labels;
        self.metrics
            .drop_site_info
            .get_or_create(&SiteInfoLabels {
                node: r.node.clone(),
                hook: l.hook.clone(),
                table: l.table.clone(),
                chain: l.chain.clone(),
                rule: r.rule.clone().unwrap_or_else(|| "policy".into()),
                verdict: l.verdict.clone(),
                owner: l.owner.clone(),
                leftover: r.leftover.to_string(),
                explanation: explanation.to_owned(),
                fix: fix.to_owned(),
            })
            .set(1);
    }

    /// Makes `r` its site's entry in `/explanations`.
    pub fn explain_site(&self, r: &Record) {
        if let Ok(mut sites) = self.explanations.lock() {
            sites.insert(r.site_key(), r.clone());
        }
    }

    /// A netfilter drop site no rule could be matched to.
    pub fn attribution_failure(&self, node: &str) {
        self.metrics
            .attribution_failures
            .get_or_create(&NodeLabels {
                node: node.to_owned(),
            })
            .inc();
    }
}

/// Serves `/metrics` (OpenMetrics), `/explanations` (JSON), `/healthz`
/// (the process answers) and `/readyz` (its kernel programs are attached).
pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::{Router, http::header, response::IntoResponse, routing::get};
    let metrics = {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &shared.registry) {
                    Ok(()) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }
    };
    // /explanations names pods, addresses, rules and the commands that
    // would open them: served to clients on the node itself only (as
    // deployed, the endpoint listens on every address of a host-network
    // pod); /metrics carries none of that.
    let explanations = {
        let shared = shared.clone();
        move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>| {
            let shared = shared.clone();
            async move {
                if !explanations_allowed(peer.ip()) {
                    return (axum::http::StatusCode::FORBIDDEN, EXPLANATIONS_LOCAL_ONLY)
                        .into_response();
                }
                let list: Vec<Record> = shared
                    .explanations
                    .lock()
                    .map(|l| l.values().cloned().collect())
                    .unwrap_or_default();
                axum::Json(list).into_response()
            }
        }
    };
    let ready = {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move {
                if shared.ready.load(Ordering::Relaxed) {
                    (axum::http::StatusCode::OK, "ready\n")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                }
            }
        }
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/explanations", get(explanations))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            // Out of descriptors, say: the listener stays, the next
            // connection may be served.
            Err(e) => {
                log::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    tower::ServiceExt::oneshot(app.clone(), req)
                },
            );
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REQUEST_HEAD_TIMEOUT)
                .max_buf_size(MAX_REQUEST_HEAD)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                log::debug!("metrics endpoint: {peer}: {e}");
            }
        });
    }
}

/// How long a client may take to send a request's head: a slow one is cut
/// off, and holds nothing (every connection is served on its own, one
/// request each).
pub const REQUEST_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The most a request's head may take (hyper's buffer; its least is 8 KiB).
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// What a client off the node gets from `/explanations`.
pub const EXPLANATIONS_LOCAL_ONLY: &str = "403: /explanations names pods, addresses and firewall rules, so it answers clients on the node itself only (curl http://127.0.0.1:PORT/explanations there, or kubectl exec into the netdrop pod); /metrics, /healthz and /readyz answer anyone\n";

/// Whether a client at `peer` may read `/explanations`: the node's own
/// loopback only (an IPv4-mapped IPv6 loopback too).
pub fn explanations_allowed(peer: std::net::IpAddr) -> bool {
    match peer {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that never finishes its request's head is cut off, one
    /// whose head is too large gets no answer but the refusal, and scrapes
    /// are served all the while (on loopback, in this process).
    #[test]
    fn slow_and_oversized_requests_are_cut_off_while_scrapes_go_on() {
        use std::{
            io::{Read as _, Write as _},
            net::TcpStream,
            time::{Duration, Instant},
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let addr = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            tokio::spawn(serve(new_shared(), l));
            a
        });
        let get = |head: &[u8]| -> String {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(head).unwrap();
            let mut out = Vec::new();
            // A refused head may be answered, then reset: what was read counts.
            let _ = s.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        };
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        // Served while the slow one hangs.
        let scrape = get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
        assert!(scrape.contains("netdrop_drops_uncounted_total"), "{scrape}");
        // The slow one is cut off: a bound that catches a server that
        // never does (the limit itself is REQUEST_HEAD_TIMEOUT).
        let started = Instant::now();
        slow.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut out = Vec::new();
        let closed = slow.read_to_end(&mut out);
        assert!(closed.is_ok(), "still open after 30 s: {closed:?}");
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(!String::from_utf8_lossy(&out).contains(" 200 "), "{out:?}");
        // Too large a head: refused, nothing served.
        let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2 * MAX_REQUEST_HEAD));
        big.extend(b"\r\n\r\n");
        let refused = get(&big);
        assert!(!refused.contains("netdrop_"), "{refused}");
        assert!(
            refused.is_empty() || refused.starts_with("HTTP/1.1 431"),
            "{refused}"
        );
        let scrape = get(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    }

    #[test]
    fn explanations_answer_the_node_itself_only() {
        for ok in ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"] {
            assert!(explanations_allowed(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "10.224.1.2",
            "192.0.2.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "0.0.0.0",
        ] {
            assert!(!explanations_allowed(no.parse().unwrap()), "{no}");
        }
    }

    fn scrape(shared: &Shared) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &shared.registry).unwrap();
        out
    }

    #[test]
    fn drop_sites_beyond_the_limit_count_in_one_other_series() {
        let shared = new_shared();
        shared.site_limit.store(2, Ordering::Relaxed);
        let record = |chain: &str| Record {
            node: "n1".into(),
            reason: Some("NETFILTER_DROP".into()),
            netfilter: true,
            table: Some("ip kube-proxy".into()),
            chain: Some(chain.into()),
            owner: Some(netdrop_model::Owner::KubeProxy),
            rule: Some("drop".into()),
            ..Record::default()
        };
        for (i, chain) in ["a", "b", "c", "d", "a"].iter().enumerate() {
            let r = record(chain);
            let s = shared.site_series(&r, None);
            s.count(10 + i as u64, 100);
            shared.site_info(&r, &s, "why", "fix");
        }
        let text = scrape(&shared);
        let drops: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("netdrop_drops_total{"))
            .collect();
        assert_eq!(drops.len(), 3, "a, b and other: {drops:#?}");
        let value = |chain: &str| {
            drops
                .iter()
                .find(|l| l.contains(&format!("chain=\"{chain}\"")))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        };
        assert_eq!(value("a"), Some(10 + 14));
        assert_eq!(value("b"), Some(11));
        assert_eq!(value("other"), Some(12 + 13), "c and d");
        let other = drops
            .iter()
            .find(|l| l.contains("chain=\"other\""))
            .unwrap();
        assert!(
            other.contains("owner=\"other\"") && other.contains("table=\"other\""),
            "{other}"
        );
        // No info series per rule beyond the limit either; the cap is said.
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("netdrop_drop_site_info{"))
                .count(),
            2
        );
        assert!(
            text.contains("netdrop_drop_sites_capped{node=\"n1\"} 1"),
            "{text}"
        );
    }
}
