//! Real CNI plugins (Debian's containernetworking-plugins: bridge with
//! host-local IPAM, then the firewall plugin with `ingressPolicy:
//! same-bridge`) set up two pods on two bridges of a node namespace, as a
//! container runtime would. The plugin's isolation drops traffic between
//! them: netdrop names the rule, owner cni-plugin, and a fix that — run by
//! the test — lets the next packets through.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use netdrop_tests::{Lab, Watch, field, require_root, rule_packets, total_packets, traffic};
use serde_json::{Value, json};

/// Runs CNI plugin `plugin` with `conf` on stdin, for pod namespace `pod`,
/// from the node namespace `node` (where the plugin's host side lives).
fn cni(node: &str, pod: &str, plugin: &str, conf: &Value) -> Value {
    let mut child = Command::new("ip")
        .args(["netns", "exec", node, &format!("/usr/lib/cni/{plugin}")])
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", pod)
        .env("CNI_NETNS", format!("/run/netns/{pod}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("CNI plugins (containernetworking-plugins, installed by cargo xtask setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{plugin}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A pod on bridge `bridge` with an address from `subnet`: the bridge
/// plugin, then the firewall plugin with the bridge plugin's result.
fn pod_on(node: &str, pod: &str, bridge: &str, subnet: &str, ipam_dir: &str) {
    let name = format!("net-{bridge}");
    let result = cni(
        node,
        pod,
        "bridge",
        &json!({
            "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge,
            "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": ipam_dir,
                     "routes": [{"dst": "0.0.0.0/0"}]}
        }),
    );
    cni(
        node,
        pod,
        "firewall",
        &json!({
            "cniVersion": "1.0.0", "name": name, "type": "firewall", "backend": "iptables",
            "ingressPolicy": "same-bridge", "prevResult": result
        }),
    );
}

#[test]
fn cni_firewall_plugins_bridge_isolation_is_named_and_its_fix_works() {
    require_root!();
    let mut lab = Lab::new("cni");
    let node = lab.netns("node").unwrap();
    let a = lab.netns("a").unwrap();
    let b = lab.netns("b").unwrap();
    let ipam = std::env::temp_dir().join(format!("netdrop-cni-ipam-{}", std::process::id()));
    let ipam_dir = ipam.to_str().unwrap();
    pod_on(&node, &a, "cni0", "10.224.1.0/24", ipam_dir);
    pod_on(&node, &b, "cni1", "10.224.2.0/24", ipam_dir);
    let _ = std::fs::remove_dir_all(&ipam);

    const DROP: &str = "-A CNI-ISOLATION-STAGE-2 -o cni0 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\" -j DROP";
    let mut w = Watch::start(&["--netns", &node, "--pod-cidr", "10.224.0.0/16"]).unwrap();
    let to_a = "10.224.1.2:5000".parse().unwrap();
    let isolated = |r: &Value| field(r, "rule") == DROP;
    traffic::send_udp(&b, to_a, 3, 20).unwrap();
    w.wait_for(Duration::from_secs(10), |w| {
        total_packets(&w.records(), isolated) >= 3
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{:#?}", w.records()));
    std::thread::sleep(Duration::from_millis(600));
    let rec = w.records().into_iter().rfind(|r| isolated(r)).unwrap();
    for (k, v) in [
        ("hook", "FORWARD"),
        ("chain", "CNI-ISOLATION-STAGE-2"),
        ("owner", "cni-plugin"),
        ("evidence", "counters"),
        ("in_iface", "cni1"),
        ("out_iface", "cni0"),
        ("src", "10.224.2.2"),
        ("dst", "10.224.1.2"),
    ] {
        assert_eq!(field(&rec, k), v, "{k}: {rec}");
    }
    assert_eq!(rec["packets"], 3);
    assert_eq!(
        rule_packets(&node, "filter", "CNI-ISOLATION-STAGE-2", Some(DROP)),
        3
    );
    assert!(
        field(&rec, "explanation").contains("ingressPolicy"),
        "{rec}"
    );

    // The fix's immediate part, as the operator would paste it. (A RETURN
    // for one direction alone was not enough: pod a's ICMP errors back to
    // b died in the same isolation, as this test showed.)
    let fix = field(&rec, "fix");
    let command = "iptables -I CNI-ISOLATION-STAGE-1 -i cni1 -o cni0 -s 10.224.0.0/16 -d 10.224.0.0/16 -j RETURN && iptables -I CNI-ISOLATION-STAGE-1 -i cni0 -o cni1 -s 10.224.0.0/16 -d 10.224.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN";
    assert_eq!(field(&rec, "fix_check"), "proven", "{rec}");
    assert!(fix.contains(&format!("`{command}`")), "{fix}");
    lab.exec(&node, &["sh", "-c", command]).unwrap();
    let (dropped, records) = w
        .stop_after(
            |r| field(r, "node") == node,
            || traffic::send_udp(&b, to_a, 3, 20).unwrap(),
        )
        .unwrap();
    assert_eq!(dropped, 0, "drops on the node after the fix: {records:#?}");
    assert_eq!(
        rule_packets(
            &node,
            "filter",
            "CNI-ISOLATION-STAGE-1",
            Some(
                "-A CNI-ISOLATION-STAGE-1 -s 10.224.0.0/16 -d 10.224.0.0/16 -i cni1 -o cni0 -j RETURN"
            )
        ),
        3
    );
    assert_eq!(
        rule_packets(&node, "filter", "CNI-ISOLATION-STAGE-2", Some(DROP)),
        3
    );
}
