//! deploy/: the Grafana dashboard, the Prometheus alerts and scrape config,
//! the DaemonSet. Each is checked by the tool that consumes it (a JSON schema
//! made from Grafana's own types, promtool, the Kubernetes OpenAPI schema),
//! the dashboard's every query runs on real data, and the DaemonSet's
//! capability list is the one netdrop is run with here.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use netdrop_tests::{
    Lab, Watch, netdrop_bin,
    prom::{Prometheus, free_port, status, urlencode},
    require_root, traffic,
};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Tools `cargo xtask setup` installs for these checks.
fn tool(rel: &str) -> PathBuf {
    let p = repo().join("target/tools").join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask setup`",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn ajv_validate(dashboard: &Path) -> Output {
    run(Command::new(tool("grafana/node_modules/.bin/ajv")).args([
        "validate",
        "--spec=draft7",
        "--errors=text",
        "-s",
        tool("grafana/dashboard.schema.json").to_str().unwrap(),
        "-d",
        dashboard.to_str().unwrap(),
    ]))
}

#[test]
fn dashboard_is_valid_against_grafanas_schema() {
    let dashboard = repo().join("deploy/grafana/netdrop.json");
    let out = ajv_validate(&dashboard);
    assert!(out.status.success(), "{}", text(&out));
    // The schema is strict enough to catch a misspelled panel field.
    let broken =
        std::fs::read_to_string(&dashboard)
            .unwrap()
            .replacen("\"gridPos\"", "\"gridpos\"", 1);
    let broken = netdrop_tests::TempPath::file("broken-dashboard.json", &broken);
    let out = ajv_validate(&broken.0);
    assert!(!out.status.success(), "a misspelled field passed");
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    let out = run(Command::new("promtool")
        .args(["check", "rules", "alerts.yaml"])
        .current_dir(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(Command::new("promtool")
        .args(["test", "rules", "alerts_test.yaml"])
        .current_dir(&dir));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));
}

/// The lines of the top-level `kubernetes_sd_configs:` block of a scrape job.
fn sd_block(config: &str) -> (usize, usize) {
    let lines: Vec<&str> = config.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "kubernetes_sd_configs:")
        .expect("scrape.yaml discovers netdrop pods with kubernetes_sd_configs");
    let indent = lines[start].len() - lines[start].trim_start().len();
    let end = lines[start + 1..]
        .iter()
        .position(|l| !l.trim().is_empty() && l.len() - l.trim_start().len() <= indent)
        .map_or(lines.len(), |i| start + 1 + i);
    (start, end)
}

#[test]
fn scrape_config_is_a_valid_prometheus_config_for_the_daemonset() {
    let dir = repo().join("deploy/prometheus");
    let config = std::fs::read_to_string(dir.join("scrape.yaml")).unwrap();
    let manifest = std::fs::read_to_string(repo().join("deploy/kubernetes/netdrop.yaml")).unwrap();
    // It selects what the DaemonSet creates: its namespace, pod label and
    // port name.
    let (start, end) = sd_block(&config);
    let sd: Vec<&str> = config.lines().collect::<Vec<_>>()[start..end].to_vec();
    let sd = sd.join("\n");
    assert!(sd.contains("names: [netdrop]") && manifest.contains("namespace: netdrop"));
    assert!(
        sd.contains("label: app.kubernetes.io/name=netdrop")
            && manifest.contains("app.kubernetes.io/name: netdrop")
    );
    assert!(config.contains("regex: metrics") && manifest.contains("- name: metrics"));
    // Debian's promtool is built without Kubernetes service discovery: it
    // checks the rest (relabelling, rule files) with static targets in its
    // place.
    let lines: Vec<&str> = config.lines().collect();
    let indent = " ".repeat(lines[start].len() - lines[start].trim_start().len());
    let mut checked: Vec<String> = lines[..start].iter().map(|l| l.to_string()).collect();
    checked.push(format!("{indent}static_configs:"));
    checked.push(format!("{indent}  - targets: ['node-1:9595']"));
    checked.extend(lines[end..].iter().map(|l| l.to_string()));
    std::fs::write(dir.join(".scrape-checked.yaml"), checked.join("\n")).unwrap();
    let out = run(Command::new("promtool")
        .args(["check", "config", ".scrape-checked.yaml"])
        .current_dir(&dir));
    let _ = std::fs::remove_file(dir.join(".scrape-checked.yaml"));
    assert!(out.status.success(), "{}", text(&out));
}

fn k8s_validate(path: &Path) -> Output {
    run(Command::new(tool("kvenv/bin/kubernetes-validate"))
        .args(["--strict", path.to_str().unwrap()]))
}

#[test]
fn kubernetes_manifests_match_the_openapi_schema() {
    let manifest = repo().join("deploy/kubernetes/netdrop.yaml");
    let out = k8s_validate(&manifest);
    assert!(out.status.success(), "{}", text(&out));
    for kind in [
        "namespace/netdrop",
        "serviceaccount/netdrop",
        "daemonset/netdrop",
    ] {
        assert!(
            text(&out).contains(&format!("passed for resource {kind}")),
            "{}",
            text(&out)
        );
    }
    // The optional API access: read-only, bound to netdrop's account.
    let api = repo().join("deploy/kubernetes/netdrop-api.yaml");
    let out = k8s_validate(&api);
    assert!(out.status.success(), "{}", text(&out));
    for kind in [
        "clusterrole/netdrop-names",
        "clusterrolebinding/netdrop-names",
    ] {
        assert!(
            text(&out).contains(&format!("passed for resource {kind}")),
            "{}",
            text(&out)
        );
    }
    let rbac = std::fs::read_to_string(&api).unwrap();
    assert!(
        rbac.contains("verbs: [get, list, watch]")
            && !rbac.contains("create")
            && !rbac.contains("update")
            && !rbac.contains("delete"),
        "{rbac}"
    );
    // Strict: a misspelled field fails.
    let broken = std::fs::read_to_string(&manifest).unwrap().replacen(
        "hostNetwork: true",
        "hostNetwerk: true",
        1,
    );
    let broken = netdrop_tests::TempPath::file("broken.yaml", &broken);
    let out = k8s_validate(&broken.0);
    assert!(!out.status.success(), "a misspelled field passed");
}

/// The DaemonSet's pod spec, read from the manifest with PyYAML (from the
/// kubernetes-validate tool `cargo xtask setup` installs).
fn daemonset_pod_spec() -> Value {
    let out = run(Command::new(tool("kvenv/bin/python")).args([
        "-c",
        "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        repo()
            .join("deploy/kubernetes/netdrop.yaml")
            .to_str()
            .unwrap(),
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let docs: Value = serde_json::from_slice(&out.stdout).unwrap();
    docs.as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet in the manifest")["spec"]["template"]["spec"]
        .clone()
}

/// What the manifest promises about the container, field by field: only
/// these rights, a read-only root, the two kernel directories read-only,
/// no API token, the node's name from the downward API. The run below
/// holds netdrop to the same.
#[test]
fn daemonset_spec_is_what_the_confined_run_reproduces() {
    let spec = daemonset_pod_spec();
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mounts: Vec<(String, bool)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_owned(),
                m["readOnly"] == true,
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            ("/sys/kernel/btf".to_owned(), true),
            ("/sys/kernel/tracing".to_owned(), true),
            ("/run/containerd".to_owned(), true)
        ]
    );
    let env = &c["env"][0];
    assert_eq!(
        (
            env["name"].as_str(),
            env["valueFrom"]["fieldRef"]["fieldPath"].as_str()
        ),
        (Some("NODE_NAME"), Some("spec.nodeName"))
    );
}

/// `capabilities.add` of the DaemonSet, as setpriv names them.
fn daemonset_capabilities() -> Vec<String> {
    daemonset_pod_spec()["containers"][0]["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_lowercase())
        .collect()
}

/// The container's arguments after `watch`, less the two the test sets
/// itself (`--output json`, a free metrics port).
fn daemonset_watch_args() -> Vec<String> {
    let spec = daemonset_pod_spec();
    let args: Vec<String> = spec["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args[0], "watch");
    args[1..]
        .iter()
        .filter(|a| !a.starts_with("--metrics-addr=") && !a.starts_with("--output="))
        .cloned()
        .collect()
}

/// Runs in namespace `ns` as the container would: a mount namespace where
/// every mount but /proc and /dev is read-only (the root, /sys and with
/// it BTF), an environment of only `PATH` and `NODE_NAME`, uid 0 with a
/// bounding set of exactly `caps` and no new privileges.
fn confined(ns: &str, caps: &[String], node_name: &str) -> Vec<String> {
    let set = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let script = format!(
        "for m in $(findmnt -rno TARGET | grep -vE '^/(proc|dev)(/|$)'); do \
           mount -o remount,bind,ro \"$m\" 2>/dev/null; done; \
         touch /netdrop-rw-check 2>/dev/null && {{ echo 'root is writable' >&2; exit 99; }}; \
         exec env -i PATH=\"$PATH\" NODE_NAME={node_name} \
           setpriv --no-new-privs --inh-caps=-all --bounding-set={set} -- \"$@\""
    );
    [
        "ip",
        "netns",
        "exec",
        ns,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What netdrop run as the manifest says does on a node whose rules live
/// in the legacy backend (as many kube-proxy nodes still do) — and what it
/// does without each right, exactly.
#[test]
fn daemonset_capabilities_are_enough_and_each_is_needed() {
    require_root!();
    let caps = daemonset_capabilities();
    assert_eq!(
        caps,
        ["bpf", "perfmon", "net_admin", "net_raw", "syslog"],
        "update this test with the manifest"
    );
    let args = daemonset_watch_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut lab = Lab::new("cap");
    let pod = lab.netns("pod").unwrap();
    let node = lab.netns("node").unwrap();
    lab.veth(
        (&pod, "eth0", Some("10.224.7.2/24")),
        (&node, "cni0", Some("10.224.7.1/24")),
    )
    .unwrap();
    const RULE: &str = "-A INPUT -p udp -m udp --dport 9 -j DROP";
    let out = lab
        .exec(
            &node,
            &[
                "iptables-legacy",
                "-A",
                "INPUT",
                "-p",
                "udp",
                "--dport",
                "9",
                "-j",
                "DROP",
            ],
        )
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let dst: SocketAddr = "10.224.7.1:9".parse().unwrap();
    let dropped =
        |w: &Watch| netdrop_tests::total_packets(&w.records(), |r| r["reason"] == "NETFILTER_DROP");

    // With exactly the manifest's rights, as the container runs: the drop,
    // its hook and the rule that killed it, under the node's name.
    let wrapper = confined(&node, &caps, "node-a");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut w = Watch::start_via(&wrapper, &args).unwrap();
    traffic::send_udp(&pod, dst, 3, 32).unwrap();
    w.wait_for(Duration::from_secs(15), |w| dropped(w) >= 3)
        .unwrap_or_else(|e| panic!("{e:#}: {:?}\n{}", w.records(), w.stderr()));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(dropped(&w), 3);
    let rec = w
        .records()
        .into_iter()
        .rfind(|r| r["kind"] == "drop")
        .unwrap();
    assert_eq!(
        (
            &rec["node"],
            &rec["hook"],
            &rec["chain"],
            &rec["rule"],
            &rec["evidence"]
        ),
        (
            &Value::from("node-a"),
            &Value::from("INPUT"),
            &Value::from("INPUT"),
            &Value::from(RULE),
            &Value::from("counters")
        ),
        "{rec}"
    );
    // Interface names come from the node's own namespace: no setns needed.
    assert_eq!(rec["in_iface"], "cni0", "{rec}");
    // Its metrics, on the node's loopback (hostNetwork), name the node too.
    let addr = w.metrics_addr().unwrap();
    let metrics = netdrop::netns::Netns::named(&node)
        .unwrap()
        .run_in(move || netdrop_tests::prom::try_get(&addr, "/metrics"))
        .unwrap()
        .expect("metrics from the node's namespace");
    let series = metrics
        .lines()
        .find(|l| l.starts_with("netdrop_drops_total{") && l.contains("chain=\"INPUT\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        series.contains("node=\"node-a\"") && series.ends_with(" 3"),
        "{series}"
    );
    let err = w.stderr();
    assert!(
        !err.to_lowercase().contains("not permitted")
            && !err.to_lowercase().contains("permission denied")
            && !err.contains("read-only"),
        "with the manifest's rights something was refused: {err}"
    );
    // ...and the fastest drop probe, not a fallback a missing right forced.
    assert!(err.contains("(drop probe tp_btf)"), "{err}");
    w.stop().unwrap();

    // Without each one: exactly what an operator would read.
    const LEGACY: &str = "the legacy iptables backend could not be read";
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let mut argv = confined(&node, &fewer, "node-a");
        argv.push(netdrop_bin().to_string_lossy().into_owned());
        argv.extend(
            [
                "watch",
                "--output",
                "json",
                "--metrics-addr",
                "127.0.0.1:0",
                "--duration",
                "6s",
            ]
            .map(String::from),
        );
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(3));
        traffic::send_udp(&pod, dst, 3, 32).unwrap();
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let drops: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|r| r["kind"] == "drop")
            .collect();
        match missing.as_str() {
            // Loading or attaching a program: one sentence, exit 1, nothing on stdout.
            cap @ ("bpf" | "perfmon" | "net_admin") => {
                assert_eq!(out.status.code(), Some(1), "without {cap}: {stderr}");
                assert_eq!(
                    stderr.trim(),
                    format!(
                        "netdrop: netdrop watch must run as root: it needs CAP_{} to load and attach its kernel programs (try: sudo netdrop watch ...)",
                        cap.to_uppercase()
                    )
                );
                assert!(stdout.is_empty(), "without {cap}: {stdout}");
            }
            // Kernel addresses hidden: the hooks cannot be told; exit 1.
            "syslog" => {
                assert_eq!(out.status.code(), Some(1), "{stderr}");
                assert!(
                    stderr.trim_end().ends_with(
                        "netdrop needs CAP_SYSLOG (or root) to find the kernel functions that tell a drop's netfilter hook"
                    ),
                    "{stderr}"
                );
                assert!(drops.is_empty(), "{drops:?}");
            }
            // The legacy ruleset cannot be read: said once, drops still
            // counted exactly, but no rule named.
            "net_raw" => {
                assert_eq!(out.status.code(), Some(0), "{stderr}");
                assert_eq!(stderr.matches(LEGACY).count(), 1, "{stderr}");
                let last = drops.last().unwrap_or_else(|| panic!("no drop: {stderr}"));
                assert_eq!(last["packets"], 3, "{last}");
                assert_eq!(
                    (&last["rule"], &last["evidence"]),
                    (&Value::Null, &Value::from("kernel")),
                    "{last}"
                );
            }
            other => panic!("a capability this test does not know: {other}"),
        }
    }
}

/// The alert rules as real Prometheus evaluates them on the demo's real
/// series: every seed's failure raises its alert (pending: their `for:`
/// is minutes; `alerts_test.yaml` covers the timing), with the labels and
/// words an operator gets; the health alerts stay quiet.
fn alerts_on_real_series(prom: &Prometheus) {
    let labels = |a: &Value, k: &str| a["labels"][k].as_str().unwrap_or("").to_owned();
    let wanted = |alerts: &[Value]| {
        let has = |name: &str, pred: &dyn Fn(&Value) -> bool| {
            alerts
                .iter()
                .any(|a| a["labels"]["alertname"] == name && pred(a))
        };
        has("NetdropPodTrafficDropped", &|a| {
            labels(a, "owner") == "docker" && labels(a, "chain") == "FORWARD"
        }) && has("NetdropPodTrafficDropped", &|a| {
            labels(a, "owner") == "distro-firewall"
        }) && has("NetdropVxlanBlocked", &|_| true)
            && has("NetdropUnnatedPodEgress", &|_| true)
            && has("NetdropFinding", &|a| {
                labels(a, "finding") == "masquerade-cidr-mismatch"
            })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut alerts = prom.alerts();
    while !wanted(&alerts) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        alerts = prom.alerts();
    }
    assert!(wanted(&alerts), "alerts: {alerts:#?}");
    for a in &alerts {
        let name = labels(a, "alertname");
        let summary = a["annotations"]["summary"].as_str().unwrap_or("");
        match name.as_str() {
            "NetdropPodTrafficDropped" => {
                assert_eq!(labels(a, "severity"), "warning");
                assert_eq!(
                    summary,
                    format!(
                        "{} rule in {}/{} ({}) drops pod traffic on {}",
                        labels(a, "owner"),
                        labels(a, "table"),
                        labels(a, "chain"),
                        labels(a, "hook"),
                        labels(a, "node")
                    )
                );
            }
            "NetdropVxlanBlocked" => {
                assert_eq!(labels(a, "severity"), "critical");
                let peer = labels(a, "peer");
                assert!(
                    peer.starts_with("192.0.2."),
                    "the sending node's underlay address: {a}"
                );
                assert_eq!(
                    summary,
                    format!("VXLAN from {peer} is dropped on {}", labels(a, "node"))
                );
            }
            "NetdropUnnatedPodEgress" => {
                assert_eq!(
                    summary,
                    format!(
                        "Pods on {} leave {} without source NAT",
                        labels(a, "node"),
                        labels(a, "iface")
                    )
                );
            }
            "NetdropFinding" => {
                assert!(
                    ["warning", "critical"].contains(&labels(a, "severity").as_str()),
                    "{a}"
                );
                assert!(summary.starts_with(&format!("netdrop finding {}", labels(a, "finding"))));
            }
            // Lost samples may happen under the demo's load; health and
            // capacity alerts must not.
            "NetdropLosingSamples" => {}
            other => panic!("alert {other} on a healthy netdrop: {a}"),
        }
    }
}

/// `netdrop demo` as a child; Ctrl-C (SIGINT) on drop, so it removes its
/// namespaces even when the test fails.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let t = Instant::now();
        while self.0.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Restores kernel.bpf_stats_enabled on drop.
struct BpfStats(String);

impl BpfStats {
    fn enable() -> Self {
        const P: &str = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(P).unwrap_or_else(|_| "0".into());
        std::fs::write(P, "1").expect("enabling kernel.bpf_stats_enabled");
        Self(old.trim().to_owned())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// Grafana's variables and macros as the dashboard's default view sets them.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$__range", "5m")
        .replace("$node", ".*")
        .replace("$owner", ".*")
}

fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().cloned().unwrap_or_default());
        } else {
            out.push(p.clone());
        }
    }
    out
}

#[test]
fn every_dashboard_query_answers_on_real_demo_data() {
    require_root!();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/netdrop.json")).unwrap(),
    )
    .unwrap();
    let _stats = BpfStats::enable();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    // Every seed scenario at once: drops of every owner, VXLAN drops (S3),
    // un-NATed egress (S4), findings, and netdrop's own health series.
    let _demo = Demo(
        Command::new(netdrop_bin())
            .args([
                "demo",
                "--duration",
                "300s",
                "--metrics-addr",
                &metrics_addr,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("netdrop demo"),
    );
    // The alert rules too, evaluated by Prometheus on the demo's series.
    let alert_rules = repo().join("deploy/prometheus/alerts.yaml");
    let prom = Prometheus::start_with_rules(&[&metrics_addr], &[&alert_rules]);

    // Wait until Prometheus holds enough of the demo for the slowest
    // panels: VXLAN drops and un-NATed egress with rates over 30 s.
    let ready = [
        "rate(netdrop_vxlan_drops_total[30s]) > 0",
        "rate(netdrop_unnat_egress_packets_total[30s]) > 0",
        "rate(netdrop_program_runs_total[30s]) > 0",
        "netdrop_drop_site_info",
    ];
    let deadline = Instant::now() + Duration::from_secs(150);
    while Instant::now() < deadline
        && !ready
            .iter()
            .all(|q| prom.query(q).is_ok_and(|r| !r.is_empty()))
    {
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(status(&metrics_addr, "/readyz"), Some(200));

    // Template variables: label_values(SELECTOR, LABEL).
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(q) = var["query"]["query"].as_str() else {
            continue;
        };
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {} is not label_values(): {q}", var["name"]));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let values = prom
            .api(&format!(
                "/api/v1/label/{}/values?match[]={}",
                label.trim(),
                urlencode(&substitute(selector.trim()))
            ))
            .unwrap_or_else(|| panic!("variable {}: {q} failed", var["name"]));
        assert!(
            !values.as_array().unwrap().is_empty(),
            "variable {} has no values: {q}",
            var["name"]
        );
    }

    // Every target of every panel: a successful, non-empty answer, above
    // zero for everything the demo feeds. Losses, failures and reloads are
    // zero on a healthy demo: their series must exist, at any value.
    let may_be_zero = [
        "netdrop_samples_lost_total",
        "netdrop_samples_suppressed_total",
        "netdrop_drops_uncounted_total",
        "netdrop_observer_losses_total",
        "netdrop_ruleset_reloads_total",
        "netdrop_attribution_failures_total",
    ];
    let mut checked = 0;
    let mut failures = Vec::new();
    for p in panels(&dashboard) {
        for t in p["targets"].as_array().unwrap() {
            let expr = substitute(t["expr"].as_str().unwrap());
            let above_zero = |r: &[Value]| {
                r.iter().any(|s| {
                    s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v > 0.0)
                })
            };
            match prom.query(&expr) {
                Ok(r) if r.is_empty() => failures.push(format!("{}: empty: {expr}", p["title"])),
                Ok(r) if !above_zero(&r) && !may_be_zero.iter().any(|m| expr.contains(m)) => {
                    failures.push(format!("{}: all zero: {expr}", p["title"]))
                }
                Ok(_) => checked += 1,
                Err(e) => failures.push(format!("{}: {e}: {expr}", p["title"])),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "panels without data:\n{}",
        failures.join("\n")
    );
    // 15 panels; the losses panel and the reload/failure panel have 4 and 2
    // targets: 19. A panel added or removed changes this on purpose.
    assert_eq!(checked, 19, "panel targets checked");

    // Labels never carry pod addresses (the README's promise), with every
    // seed's drops, explanations and fixes in the series.
    let metrics = netdrop_tests::prom::try_get(&metrics_addr, "/metrics").unwrap();
    assert!(
        metrics.contains("netdrop_drop_site_info{"),
        "info series present"
    );
    // An address in the pod CIDR that is not the CIDR itself.
    let names_a_pod = |l: &str| {
        l.match_indices("10.224.").any(|(i, _)| {
            let rest = &l[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            !(rest[..end] == *"10.224.0.0" && rest[end..].starts_with('/'))
        })
    };
    let pod_addresses: Vec<&str> = metrics.lines().filter(|l| names_a_pod(l)).collect();
    assert!(
        pod_addresses.is_empty(),
        "pod addresses in metric labels: {pod_addresses:#?}"
    );
    // Nor pod names, though the demo's workloads are labels (it runs with
    // --metrics-workload-labels).
    assert!(
        metrics.contains(r#"workload="deployment/web""#),
        "workload series present"
    );
    for pod in netdrop::lab::cluster::PODS {
        assert!(
            !metrics.contains(pod.name),
            "pod name {} in metric labels",
            pod.name
        );
    }

    alerts_on_real_series(&prom);

    // The owners the seeds blame are all on the owner panel.
    let owners: Vec<String> = prom
        .query("sum by (owner) (netdrop_drops_total)")
        .unwrap()
        .iter()
        .filter_map(|r| r["metric"]["owner"].as_str().map(str::to_owned))
        .collect();
    for o in ["docker", "calico", "distro-firewall"] {
        assert!(
            owners.iter().any(|x| x == o),
            "owner {o} missing: {owners:?}"
        );
    }
}
