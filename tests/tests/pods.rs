//! Pods by name from the node's own container runtime: Debian's real
//! containerd with its CRI plugin in a node namespace, pods made by CRI
//! `RunPodSandbox` on the `bridge`/`host-local` CNI plugins — as kubelet
//! makes them — and netdrop's CRI client naming each address.

use std::{process::Command, time::Duration};

use netdrop::{
    attribute::pods::{Cri, PodNames},
    lab::containerd::{Containerd, PodSpec},
};
use netdrop_tests::{Lab, Watch, field, prom::http_get, require_root};

fn ping(ns: &str, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", ip])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_runtime_names_the_nodes_pods_by_address() {
    require_root!();
    let mut lab = Lab::new("cri");
    let node = lab.netns("node").unwrap();
    let mut ctd = Containerd::start(&node, "10.224.1.0/24").unwrap();
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
    let mut lab = Lab::new("crw");
    let node = lab.netns("node").unwrap();
    // A /30: one pod address, which the next pod gets again.
    let mut ctd = Containerd::start(&node, "10.224.1.0/30").unwrap();
    let web = ctd
        .run_pod(&PodSpec {
            namespace: "shop",
            name: "web-7d4b9c8f6d-x2x7q",
            labels: &[("pod-template-hash", "7d4b9c8f6d")],
        })
        .unwrap();
    lab.iptables(&node, &["-A", "INPUT", "-p", "icmp", "-j", "DROP"])
        .unwrap();
    let mut w = Watch::start(&[
        "--netns",
        &node,
        "--pod-cidr",
        "10.224.0.0/16",
        "--cri-socket",
        &ctd.socket,
        "--summary-interval",
        "1s",
    ])
    .unwrap();
    let ping_node = |ctd: &Containerd| {
        let netns = ctd.pod_netns();
        assert_eq!(netns.len(), 1, "{netns:?}");
        let _ = Command::new("nsenter")
            .arg(format!("--net={}", netns[0].display()))
            .args(["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.224.1.1"])
            .output();
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

    // The address goes to a new pod: the next drops are its.
    ctd.remove_pod(&web).unwrap();
    ctd.run_pod(&PodSpec {
        namespace: "shop",
        name: "api-0",
        labels: &[],
    })
    .unwrap();
    std::thread::sleep(PodNames::FRESH);
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
