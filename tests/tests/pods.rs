//! Pods by name from the node's own container runtime: Debian's real
//! containerd with its CRI plugin in a node namespace, pods made by CRI
//! `RunPodSandbox` on the `bridge`/`host-local` CNI plugins — as kubelet
//! makes them — and netdrop's CRI client naming each address.

use std::{process::Command, time::Duration};

use netdrop::{
    attribute::names::{PodLookup as _, cri::Cri, lookup::PodNames},
    lab::containerd::{Containerd, PodSpec},
};
use netdrop_tests::{Lab, Watch, field, ping, prom::http_get, require_root};

/// A node namespace of a new lab with containerd serving pods from
/// `subnet` (dropped in reverse: the runtime stops before the lab goes).
fn node_with_runtime(tag: &str, subnet: &str) -> (Lab, String, Containerd) {
    let mut lab = Lab::new(tag);
    let node = lab.netns("node").unwrap();
    let ctd = Containerd::start(&node, subnet).unwrap();
    (lab, node, ctd)
}

/// Waits up to 10 s for `f` to hold; fails with `what` otherwise.
fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two pings from a pod's namespace to its node (10.224.1.1), which
/// drops ICMP in these tests.
fn ping_node_from(pod_netns: &std::path::Path) {
    let _ = Command::new("nsenter")
        .arg(format!("--net={}", pod_netns.display()))
        .args(["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.224.1.1"])
        .output();
}

/// `watch` on `node`, naming pods through the runtime at `socket`.
fn watch_naming(node: &str, socket: &str) -> Watch {
    Watch::start(&[
        "--netns",
        node,
        "--pod-cidr",
        "10.224.0.0/16",
        "--cri-socket",
        socket,
        "--summary-interval",
        "1s",
    ])
    .unwrap()
}

#[test]
fn the_runtime_names_the_nodes_pods_by_address() {
    require_root!();
    let (_lab, node, mut ctd) = node_with_runtime("cri", "10.224.1.0/24");
    let web = ctd
        .run_pod(&PodSpec {
            namespace: "shop",
            name: "web-7d4b9c8f6d-x2x7q",
            labels: &[("app", "web"), ("pod-template-hash", "7d4b9c8f6d")],
        })
        .unwrap();
    ctd.run_pod(&PodSpec {
        namespace: "shop",
        name: "db-0",
        labels: &[
            ("controller-revision-hash", "db-5c9"),
            ("statefulset.kubernetes.io/pod-name", "db-0"),
        ],
    })
    .unwrap();

    let mut cri = Cri::connect(&ctd.socket).unwrap();
    assert!(cri.runtime.starts_with("containerd "), "{}", cri.runtime);
    let pods = cri.pods().unwrap();
    assert_eq!(pods.len(), 2, "{pods:?}");
    let find = |name: &str| {
        (1..=254)
            .map(|n| format!("10.224.1.{n}"))
            .find(|ip| {
                pods.get(ip.parse().unwrap())
                    .is_some_and(|p| p.name == name)
            })
            .unwrap_or_else(|| panic!("{name} not found by address: {pods:?}"))
    };
    let (web_ip, db_ip) = (find("web-7d4b9c8f6d-x2x7q"), find("db-0"));
    let web_pod = pods.get(web_ip.parse().unwrap()).unwrap();
    assert_eq!(web_pod.namespace, "shop");
    assert_eq!(web_pod.workload.as_deref(), Some("deployment/web"));
    assert_eq!(
        pods.get(db_ip.parse().unwrap())
            .unwrap()
            .workload
            .as_deref(),
        Some("statefulset/db")
    );
    // Those are the pods' real addresses: the node reaches them on cni0.
    assert!(ping(&node, &web_ip), "{web_ip}");
    assert!(ping(&node, &db_ip), "{db_ip}");

    // A pod that goes is no longer named; one that comes is.
    ctd.remove_pod(&web).unwrap();
    ctd.run_pod(&PodSpec {
        namespace: "ops",
        name: "agent-x7k2p",
        labels: &[
            ("controller-revision-hash", "6b9"),
            ("pod-template-generation", "1"),
        ],
    })
    .unwrap();
    let pods = cri.pods().unwrap();
    assert!(pods.get(web_ip.parse().unwrap()).is_none(), "{pods:?}");
    assert_eq!(pods.len(), 2, "{pods:?}");

    // containerd restarted: the client reconnects and finds the same pods.
    ctd.restart(&node).unwrap();
    let pods = cri.pods().unwrap();
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert_eq!(pods.get(db_ip.parse().unwrap()).unwrap().name, "db-0");
}

/// A pod's dropped packets name the pod in `watch`'s records, from the
/// runtime; a new pod given the old one's address is named instead within
/// seconds; containerd restarted under a running watch still names them.
#[test]
fn watch_names_the_pod_a_drop_came_from() {
    require_root!();
    // A /30: one pod address, which the next pod gets again.
    let (lab, node, mut ctd) = node_with_runtime("crw", "10.224.1.0/30");
    let web = ctd
        .run_pod(&PodSpec {
            namespace: "shop",
            name: "web-7d4b9c8f6d-x2x7q",
            labels: &[("pod-template-hash", "7d4b9c8f6d")],
        })
        .unwrap();
    lab.iptables(&node, &["-A", "INPUT", "-p", "icmp", "-j", "DROP"])
        .unwrap();
    let mut w = watch_naming(&node, &ctd.socket);
    let ping_node = |ctd: &Containerd| {
        let netns = ctd.pod_netns();
        assert_eq!(netns.len(), 1, "{netns:?}");
        ping_node_from(&netns[0]);
    };
    let named = |w: &Watch, name: &str| {
        w.records()
            .into_iter()
            .filter(|r| field(r, "kind") == "drop" && field(r, "src") == "10.224.1.2")
            .find(|r| r["src_pod"]["name"] == name)
    };
    ping_node(&ctd);
    w.wait_for(Duration::from_secs(15), |w| {
        named(w, "web-7d4b9c8f6d-x2x7q").is_some()
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let r = named(&w, "web-7d4b9c8f6d-x2x7q").unwrap();
    assert_eq!(
        r["src_pod"],
        serde_json::json!({"namespace": "shop", "name": "web-7d4b9c8f6d-x2x7q", "workload": "deployment/web"}),
        "{r}"
    );
    assert!(r["dst_pod"].is_null(), "the node is no pod: {r}");
    assert!(
        field(&r, "explanation")
            .starts_with("icmp shop/web-7d4b9c8f6d-x2x7q (10.224.1.2) -> 10.224.1.1"),
        "{r}"
    );
    // /explanations names it too.
    let addr = w.metrics_addr().unwrap();
    let ex: serde_json::Value = serde_json::from_str(&http_get(&addr, "/explanations")).unwrap();
    assert!(
        ex.as_array()
            .unwrap()
            .iter()
            .any(|e| e["src_pod"]["name"] == "web-7d4b9c8f6d-x2x7q"),
        "{ex}"
    );

    // The address goes to a new pod: the next drops are its, with no wait
    // here (containerd's events mark the names out of date: see
    // containerds_events_tell_of_pods_that_come_and_go).
    ctd.remove_pod(&web).unwrap();
    ctd.run_pod(&PodSpec {
        namespace: "shop",
        name: "api-0",
        labels: &[],
    })
    .unwrap();
    ping_node(&ctd);
    w.wait_for(Duration::from_secs(15), |w| named(w, "api-0").is_some())
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));

    // containerd restarted under the watch: still named.
    ctd.restart(&node).unwrap();
    let before = w.records().len();
    std::thread::sleep(PodNames::FRESH);
    ping_node(&ctd);
    w.wait_for(Duration::from_secs(15), |w| {
        w.records()[before..]
            .iter()
            .any(|r| field(r, "kind") == "drop" && r["src_pod"]["name"] == "api-0")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let records = w.stop().unwrap();
    assert!(
        records
            .iter()
            .all(|r| field(r, "kind") != "drop" || !r["src_pod"].is_null()),
        "every drop of the pod named: {records:#?}"
    );
}

/// containerd's events service tells of a pod that starts or goes, as it
/// happens (its CRI has no events before 1.7).
#[test]
fn containerds_events_tell_of_pods_that_come_and_go() {
    use std::sync::atomic::Ordering;
    require_root!();
    let (_lab, node, mut ctd) = node_with_runtime("cre", "10.224.1.0/24");
    let changes = netdrop::attribute::names::containerd_events::follow(ctd.socket.clone());
    until("subscribed", || changes.live.load(Ordering::Relaxed));
    changes.dirty.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !changes.dirty.load(Ordering::Relaxed),
        "no pod changed, no event"
    );
    let pod = ctd
        .run_pod(&PodSpec {
            namespace: "shop",
            name: "web-0",
            labels: &[],
        })
        .unwrap();
    until("a new pod told", || {
        changes.dirty.swap(false, Ordering::Relaxed)
    });
    ctd.remove_pod(&pod).unwrap();
    until("a removed pod told", || {
        changes.dirty.swap(false, Ordering::Relaxed)
    });
    // containerd restarted: subscribed again.
    ctd.restart(&node).unwrap();
    until("subscribed again", || changes.live.load(Ordering::Relaxed));
}

/// The names `watch` gives follow those events: with answers standing for
/// ten minutes unless told otherwise, a pod that takes another's address
/// is named at once — only the events can have said so.
#[test]
fn names_follow_containerds_events() {
    require_root!();
    // A /30: one pod address, which the next pod gets again.
    let (_lab, _node, mut ctd) = node_with_runtime("crf", "10.224.1.0/30");
    let web = ctd
        .run_pod(&PodSpec {
            namespace: "shop",
            name: "web-0",
            labels: &[],
        })
        .unwrap();
    let ip: std::net::IpAddr = web.ip.parse().unwrap();
    let names = PodNames::start_with(vec![ctd.socket.clone()], Duration::from_secs(600));
    let name_at = || names.lookup(&[ip])[0].as_ref().map(|p| p.name.clone());
    let named = |want: &str| until(want, || name_at().as_deref() == Some(want));
    named("web-0");
    ctd.remove_pod(&web).unwrap();
    let api = ctd
        .run_pod(&PodSpec {
            namespace: "shop",
            name: "api-0",
            labels: &[],
        })
        .unwrap();
    assert_eq!(api.ip, web.ip, "host-local gave the address again");
    named("api-0");
}

/// With `--kubeconfig`, the far end of a flow — a pod on another node,
/// which this node's runtime does not know — is named from the Kubernetes
/// API, and so is a ClusterIP no rule names. The API is a stand-in server
/// (no API server runs here; see `netdrop_tests::kube_api`); the pod at
/// this end, containerd and the drops are real.
#[test]
fn the_api_names_the_pod_on_the_other_node_and_the_service() {
    require_root!();
    let api = netdrop_tests::kube_api::StandIn::start().unwrap();
    let (mut lab, node, mut ctd) = node_with_runtime("crk", "10.224.1.0/24");
    let client = ctd
        .run_pod(&PodSpec {
            namespace: "shop",
            name: "client-0",
            labels: &[
                ("controller-revision-hash", "client-5c9"),
                ("statefulset.kubernetes.io/pod-name", "client-0"),
            ],
        })
        .unwrap();
    let pod = lab.adopt_netns("client", &client.netns).unwrap();
    // The other node's pods and the Services lie beyond the underlay;
    // this node's FORWARD drops traffic to both.
    let other = lab.netns("other").unwrap();
    lab.veth(
        (&node, "eth0", Some("192.0.2.1/24")),
        (&other, "eth0", Some("192.0.2.2/24")),
    )
    .unwrap();
    lab.sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
    for net in ["10.224.2.0/24", "10.96.0.0/12"] {
        lab.ip(&node, &["route", "add", net, "via", "192.0.2.2"])
            .unwrap();
    }
    lab.iptables_all(
        &node,
        &[
            &["-A", "FORWARD", "-d", "10.224.2.5", "-j", "DROP"],
            &["-A", "FORWARD", "-d", "10.96.0.10", "-j", "DROP"],
        ],
    )
    .unwrap();
    let mut w = Watch::start(&[
        "--netns",
        &node,
        "--pod-cidr",
        "10.224.0.0/16",
        "--cri-socket",
        &ctd.socket,
        "--kubeconfig",
        api.kubeconfig(),
        "--summary-interval",
        "1s",
    ])
    .unwrap();
    let to = |dst: &str| {
        netdrop_tests::traffic::send_udp(&pod, dst.parse().unwrap(), 2, 32).unwrap();
    };
    to("10.224.2.5:8080");
    to("10.96.0.10:80");
    let drop_to = |w: &Watch, dst: &str| {
        w.records()
            .into_iter()
            .rfind(|r| field(r, "kind") == "drop" && field(r, "dst") == dst)
    };
    w.wait_for(Duration::from_secs(15), |w| {
        drop_to(w, "10.224.2.5").is_some() && drop_to(w, "10.96.0.10").is_some()
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    let records = w.stop().unwrap();
    let last_to = |dst: &str| {
        records
            .iter()
            .rfind(|r| field(r, "kind") == "drop" && field(r, "dst") == dst)
            .unwrap()
            .clone()
    };
    let r = last_to("10.224.2.5");
    assert_eq!(
        (&r["src_pod"], &r["dst_pod"]),
        (
            &serde_json::json!({"namespace": "shop", "name": "client-0", "workload": "statefulset/client"}),
            &serde_json::json!({"namespace": "shop", "name": "web-7d4b9c8f6d-x2x7q", "workload": "deployment/web"})
        ),
        "this end by containerd, the far end by the API: {r}"
    );
    let s = last_to("10.96.0.10");
    assert_eq!(field(&s, "service"), "shop/web", "{s}");
    assert!(s["dst_pod"].is_null(), "{s}");
}

/// A runtime that is gone (crashed: its socket a stale file) costs names,
/// never drops: they are recorded and explained with the pod unnamed, the
/// failure is said once however often it is retried, and when the runtime
/// comes back the next drops name the pod again (retried every 10 s).
#[test]
fn a_runtime_that_is_gone_costs_names_not_drops() {
    require_root!();
    let (lab, node, mut ctd) = node_with_runtime("crg", "10.224.1.0/30");
    ctd.run_pod(&PodSpec {
        namespace: "shop",
        name: "web-7d4b9c8f6d-x2x7q",
        labels: &[("pod-template-hash", "7d4b9c8f6d")],
    })
    .unwrap();
    lab.iptables(&node, &["-A", "INPUT", "-p", "icmp", "-j", "DROP"])
        .unwrap();
    let pod_netns = ctd.pod_netns();
    assert_eq!(pod_netns.len(), 1, "{pod_netns:?}");
    let ping_node = || ping_node_from(&pod_netns[0]);
    ctd.crash();
    // Positive control: the socket is there, and nothing answers on it.
    assert!(std::path::Path::new(&ctd.socket).exists());
    assert!(std::os::unix::net::UnixStream::connect(&ctd.socket).is_err());

    let mut w = watch_naming(&node, &ctd.socket);
    let drops = |w: &Watch| -> Vec<serde_json::Value> {
        w.records()
            .into_iter()
            .filter(|r| field(r, "kind") == "drop" && field(r, "src") == "10.224.1.2")
            .collect()
    };
    let rule = Some("-A INPUT -p icmp -j DROP");
    let before = netdrop_tests::rule_packets(&node, "filter", "INPUT", rule);
    ping_node();
    w.wait_for(Duration::from_secs(15), |w| !drops(w).is_empty())
        .unwrap_or_else(|e| panic!("{e:#}\n{}", w.stderr()));
    assert_eq!(
        netdrop_tests::rule_packets(&node, "filter", "INPUT", rule) - before,
        2,
        "the kernel dropped both"
    );
    let r = &drops(&w)[0];
    assert!(r["src_pod"].is_null(), "{r}");
    assert!(
        field(r, "explanation").starts_with("icmp 10.224.1.2 -> 10.224.1.1"),
        "{r}"
    );
    // Past the 10 s retry, drops still coming: still one warning.
    let end = std::time::Instant::now() + Duration::from_secs(12);
    while std::time::Instant::now() < end {
        ping_node();
        std::thread::sleep(Duration::from_millis(500));
    }
    let said = w.stderr().matches("pods named by address").count();
    assert_eq!(said, 1, "{}", w.stderr());
    assert!(drops(&w).iter().all(|r| r["src_pod"].is_null()));

    // Back: the next drops name the pod (the retry is every 10 s).
    ctd.restart(&node).unwrap();
    let named = |w: &Watch| {
        drops(w)
            .iter()
            .any(|r| r["src_pod"]["name"] == "web-7d4b9c8f6d-x2x7q")
    };
    let end = std::time::Instant::now() + Duration::from_secs(25);
    while !named(&w) {
        assert!(
            std::time::Instant::now() < end,
            "not named 25 s after the runtime came back: {}",
            w.stderr()
        );
        ping_node();
        std::thread::sleep(Duration::from_millis(500));
    }
    w.stop().unwrap();
}
