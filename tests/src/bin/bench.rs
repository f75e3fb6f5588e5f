//! `cargo xtask bench`: what watching costs, beside what operators use today,
//! measured in one run on this machine and written to BENCHMARKS.md.
//! Every figure is the median of interleaved rounds, with its spread.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use netdrop::watch::pipeline::{DropPipeline, FixedNode, FixedRules, Recorded};
use netdrop::{
    capture::{KernelInfo, btf::KernelBtf, kallsyms::Kallsyms},
    decode::Decoder,
    export::metrics,
    lab::{
        Lab,
        cluster::{Cluster, POD_CIDR, Scenario},
        traffic,
    },
    netns::Netns,
};
use netdrop_common::{DropCounters, DropKey, DropSample};
use netdrop_model::{generate, parse::parse_reader};
use netdrop_tests::{Watch, netdrop_bin};

/// Rounds per figure; `NETDROP_BENCH_ROUNDS` overrides (quick looks while
/// profiling), `NETDROP_BENCH=drop,forward,model,nft,pipeline,answer,idle,soak,pod` picks
/// sections.
fn rounds() -> usize {
    std::env::var("NETDROP_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn wanted(section: &str) -> bool {
    std::env::var("NETDROP_BENCH").map_or(true, |v| v.split(',').any(|s| s == section))
}
const FLOOD: Duration = Duration::from_secs(3);

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.0}–{max:.0}")
}

/// Packets counted by the first rule of `chain` (iptables -L -v -x).
fn rule_packets(lab: &Lab, ns: &str, table: &str, chain: &str, target: &str) -> u64 {
    let out = lab
        .exec(
            ns,
            &["iptables", "-t", table, "-L", chain, "-v", "-x", "-n"],
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(target))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// (run_time_ns, run_cnt) of every loaded program by name.
fn prog_stats() -> HashMap<String, (u64, u64)> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut m = HashMap::new();
    for p in v.as_array().cloned().unwrap_or_default() {
        let name = p["name"].as_str().unwrap_or("").to_owned();
        let e = m.entry(name).or_insert((0, 0));
        e.0 += p["run_time_ns"].as_u64().unwrap_or(0);
        e.1 += p["run_cnt"].as_u64().unwrap_or(0);
    }
    m
}

fn per_event(
    before: &HashMap<String, (u64, u64)>,
    after: &HashMap<String, (u64, u64)>,
    name: &str,
) -> Option<f64> {
    let (t1, c1) = after.get(name)?;
    let (t0, c0) = before.get(name).copied().unwrap_or((0, 0));
    (c1 > &c0).then(|| (t1 - t0) as f64 / (c1 - c0) as f64)
}

/// The operator's one-liner: drops counted by reason.
const BPFTRACE_COUNTER: &str = "tracepoint:skb:kfree_skb { @[args->reason] = count(); }";
/// A program that reads the reason and does nothing: the floor of what a
/// kfree_skb program costs on this machine, as bpf_stats reports it.
const BPFTRACE_FLOOR: &str = "tracepoint:skb:kfree_skb /args->reason == 65535/ { @ = count(); }";

fn bpftrace(script: &str) -> Child {
    let child = Command::new("bpftrace")
        .args(["-e", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bpftrace (cargo xtask setup installs it)");
    std::thread::sleep(Duration::from_secs(3));
    child
}

/// Empty programs on netdrop's hooks (`netdrop::BENCH_FLOOR_OBJECT`),
/// attached while alive: what bpf_stats charges any program run there.
struct Floor(aya::Ebpf);

const FLOOR_TP_BTF: &str = "floor_kfree_skb";
const FLOOR_TC: &str = "floor_tc";

impl Floor {
    fn load() -> anyhow::Result<Self> {
        Ok(Self(
            aya::Ebpf::load(netdrop::BENCH_FLOOR_OBJECT).context("loading the floor programs")?,
        ))
    }

    /// An empty `tp_btf/kfree_skb` program, like netdrop's drop probe.
    fn kfree_skb() -> anyhow::Result<Self> {
        let mut f = Self::load()?;
        let btf = aya::Btf::from_sys_fs()?;
        let p: &mut aya::programs::BtfTracePoint =
            f.0.program_mut(FLOOR_TP_BTF)
                .context("no floor tp_btf program")?
                .try_into()?;
        p.load("kfree_skb", &btf)?;
        p.attach()?;
        Ok(f)
    }

    /// An empty TC program on both directions of `ifaces` in each of the
    /// namespaces `nodes`, attached the way netdrop attaches its observers.
    fn tc(nodes: &[&str], ifaces: &[&str]) -> anyhow::Result<Self> {
        use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, tc::TcAttachOptions};
        let mut f = Self::load()?;
        let p: &mut SchedClassifier =
            f.0.program_mut(FLOOR_TC)
                .context("no floor TC program")?
                .try_into()?;
        p.load()?;
        for ns in nodes {
            Netns::named(ns)?.run_in(|| -> anyhow::Result<()> {
                for iface in ifaces {
                    for kind in [TcAttachType::Ingress, TcAttachType::Egress] {
                        p.attach_with_options(
                            iface,
                            kind,
                            TcAttachOptions::TcxOrder(LinkOrder::default()),
                        )?;
                    }
                }
                Ok(())
            })??;
        }
        Ok(f)
    }
}

struct Report(String);

/// Table rows: packets per second per configuration and the share kept.
fn rate_rows(
    r: &mut Report,
    configs: &[&str],
    pps: &HashMap<&str, Vec<f64>>,
    base: f64,
) -> anyhow::Result<()> {
    for cfg in configs {
        let m = median(&mut pps[cfg].clone());
        writeln!(
            r.0,
            "| {cfg} | {m:.0} | {} | {:.1} % |",
            spread(&pps[cfg]),
            100.0 * m / base
        )?;
    }
    Ok(())
}

/// Table rows: nanoseconds per run of each program.
fn cost_rows(r: &mut Report, cost: &HashMap<&str, Vec<f64>>) -> anyhow::Result<()> {
    let mut names: Vec<&&str> = cost.keys().collect();
    names.sort();
    for name in names {
        let v = &cost[*name];
        writeln!(
            r.0,
            "| {name} | {:.0} | {} |",
            median(&mut v.clone()),
            spread(v)
        )?;
    }
    Ok(())
}

/// A pod namespace and a node namespace on one veth; the node drops UDP
/// to port 9 in INPUT.
fn drop_pair(prefix: &str) -> anyhow::Result<(Lab, String, String)> {
    let mut lab = Lab::new(prefix);
    let pod = lab.netns("pod")?;
    let node = lab.netns("node")?;
    lab.veth(
        (&pod, "eth0", Some("10.224.7.2/24")),
        (&node, "cni0", Some("10.224.7.1/24")),
    )?;
    lab.iptables(
        &node,
        &["-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP"],
    )?;
    Ok((lab, pod, node))
}

/// An empty program on netdrop's own hook.
const FLOOR_DROP: &str = "empty tp_btf/kfree_skb program (floor)";

/// netdrop with the build for kernels that cannot cast to `void`.
const PROBE_READ_WATCH: &str = "netdrop watch --drop-probe tp-btf-probe-read";

fn drop_flood(r: &mut Report) -> anyhow::Result<()> {
    let (lab, pod, node) = drop_pair("bf")?;
    let dst: SocketAddr = "10.224.7.1:9".parse()?;
    let configs = [
        "nothing attached",
        "netdrop watch",
        PROBE_READ_WATCH,
        "iptables LOG rule",
        "bpftrace kfree_skb counter",
        "bpftrace program that does nothing (floor)",
        FLOOR_DROP,
    ];
    let mut pps: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut cost: HashMap<&str, Vec<f64>> = HashMap::new();
    // LOG in a namespace logs only with nf_log_all_netns; restore it after.
    let old_log =
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_log_all_netns").unwrap_or_default();
    for _ in 0..rounds() {
        for cfg in configs {
            let mut watch = None;
            let mut bt = None;
            let floor = (cfg == FLOOR_DROP).then(Floor::kfree_skb).transpose()?;
            match cfg {
                "netdrop watch" => {
                    watch = Some(Watch::start(&["--netns", &node, "--pod-cidr", POD_CIDR])?)
                }
                PROBE_READ_WATCH => {
                    watch = Some(Watch::start(&[
                        "--netns",
                        &node,
                        "--pod-cidr",
                        POD_CIDR,
                        "--drop-probe",
                        "tp-btf-probe-read",
                    ])?)
                }
                "iptables LOG rule" => {
                    let _ = std::fs::write("/proc/sys/net/netfilter/nf_log_all_netns", "1");
                    lab.iptables(
                        &node,
                        &[
                            "-I",
                            "INPUT",
                            "-p",
                            "udp",
                            "--dport",
                            "9",
                            "-j",
                            "LOG",
                            "--log-prefix",
                            "netdrop-bench ",
                        ],
                    )?;
                }
                "bpftrace kfree_skb counter" => bt = Some(bpftrace(BPFTRACE_COUNTER)),
                "bpftrace program that does nothing (floor)" => bt = Some(bpftrace(BPFTRACE_FLOOR)),
                _ => {}
            }
            let s0 = prog_stats();
            let c0 = rule_packets(&lab, &node, "filter", "INPUT", "DROP");
            let t = Instant::now();
            traffic::flood_udp(&pod, dst, FLOOD, 18)?;
            let secs = t.elapsed().as_secs_f64();
            let c1 = rule_packets(&lab, &node, "filter", "INPUT", "DROP");
            let s1 = prog_stats();
            pps.entry(cfg).or_default().push((c1 - c0) as f64 / secs);
            if let Some(ns) = per_event(&s0, &s1, "netdrop_kfree_skb_btf") {
                cost.entry("netdrop_kfree_skb_btf (netdrop)")
                    .or_default()
                    .push(ns);
            }
            if let Some(ns) = per_event(&s0, &s1, FLOOR_TP_BTF) {
                cost.entry(FLOOR_DROP).or_default().push(ns);
            }
            drop(floor);
            if let Some(ns) = per_event(&s0, &s1, "netdrop_kfree_skb_btf_probe_read") {
                cost.entry(
                    "netdrop_kfree_skb_btf_probe_read (netdrop, kernels that cannot cast to void)",
                )
                .or_default()
                .push(ns);
            }
            if let Some(mut b) = bt {
                let _ = b.kill();
                let _ = b.wait();
                // bpftrace names its program after the probe.
                let ns = per_event(&s0, &s1, "kfree_skb")
                    .context("bpftrace's program did not run (is tracefs mounted?)")?;
                cost.entry(cfg).or_default().push(ns);
                let _ = b.wait();
            }
            if cfg == "iptables LOG rule" {
                lab.iptables(&node, &["-D", "INPUT", "1"])?;
            }
            if let Some(w) = watch {
                w.stop()?;
            }
        }
    }
    let _ = std::fs::write("/proc/sys/net/netfilter/nf_log_all_netns", old_log.trim());
    bridged_drop_cost(&mut cost)?;
    let mut base = pps["nothing attached"].clone();
    let base = median(&mut base);
    writeln!(
        r.0,
        "## 1. Drop flood\n\nUDP from a pod namespace into `-A INPUT -p udp --dport 9 -j DROP` on the node namespace, {} s per run, {} interleaved rounds. Packets per second counted by the DROP rule's own counter.\n\n| attached | pps (median) | spread | kept vs nothing |\n|---|---|---|---|",
        FLOOD.as_secs(),
        rounds()
    )?;
    rate_rows(r, &configs, &pps, base)?;
    writeln!(
        r.0,
        "\n## 2. Kernel cost per event (kernel.bpf_stats_enabled=1, same floods)\n\n| program | ns/event (median) | spread |\n|---|---|---|"
    )?;
    cost_rows(r, &cost)?;
    Ok(())
}

/// The drop program on bridged drops (two pods on one `cni0`, br_netfilter
/// on, FORWARD DROP): the extra br_netfilter reads on every drop, and the
/// stack walk on sampled ones.
fn bridged_drop_cost(cost: &mut HashMap<&str, Vec<f64>>) -> anyhow::Result<()> {
    let mut lab = Lab::new("bb");
    let node = lab.netns("node")?;
    let a = lab.netns("a")?;
    let b = lab.netns("b")?;
    lab.bridge(&node, "cni0", None)?;
    for (pod, port, addr) in [
        (&a, "veth-a", "10.224.7.2/24"),
        (&b, "veth-b", "10.224.7.3/24"),
    ] {
        lab.bridge_port((&node, "cni0", port), (pod, addr))?;
    }
    lab.sysctl(&node, "net.bridge.bridge-nf-call-iptables", "1")?;
    lab.iptables(
        &node,
        &["-A", "FORWARD", "-p", "udp", "--dport", "9", "-j", "DROP"],
    )?;
    for _ in 0..rounds() {
        let watch = Watch::start(&["--netns", &node, "--pod-cidr", POD_CIDR])?;
        let s0 = prog_stats();
        traffic::flood_udp(&a, "10.224.7.3:9".parse()?, FLOOD, 18)?;
        let s1 = prog_stats();
        watch.stop()?;
        if let Some(ns) = per_event(&s0, &s1, "netdrop_kfree_skb_btf") {
            cost.entry("netdrop_kfree_skb_btf (netdrop), bridged FORWARD drops")
                .or_default()
                .push(ns);
        }
    }
    Ok(())
}

/// Empty TC programs where the observers go (both nodes).
const FLOOR_OBSERVERS: &str = "empty TC program where the observers go (floor)";

fn forwarding_flood(r: &mut Report) -> anyhow::Result<()> {
    let c = Cluster::build("bv", Scenario::Healthy)?;
    c.lab.iptables(
        &c.pod2,
        &["-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP"],
    )?;
    let dst: SocketAddr = "10.224.2.2:9".parse()?;
    let configs = [
        "nothing attached",
        "netdrop watch --no-observers",
        "netdrop watch (observers on flannel.1, cni0, eth0)",
        FLOOR_OBSERVERS,
    ];
    let mut pps: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut cost: HashMap<&str, Vec<f64>> = HashMap::new();
    for _ in 0..rounds() {
        for cfg in configs {
            let mut args = vec![
                "--netns",
                &c.node1,
                "--netns",
                &c.node2,
                "--pod-cidr",
                POD_CIDR,
            ];
            if cfg.contains("no-observers") {
                args.push("--no-observers");
            }
            let watch = (cfg.starts_with("netdrop"))
                .then(|| Watch::start(&args))
                .transpose()?;
            let floor = (cfg == FLOOR_OBSERVERS)
                .then(|| Floor::tc(&[&c.node1, &c.node2], &["flannel.1", "cni0", "eth0"]))
                .transpose()?;
            let s0 = prog_stats();
            let c0 = rule_packets(&c.lab, &c.pod2, "filter", "INPUT", "DROP");
            let t = Instant::now();
            traffic::flood_udp(&c.pod1, dst, FLOOD, 18)?;
            let secs = t.elapsed().as_secs_f64();
            let c1 = rule_packets(&c.lab, &c.pod2, "filter", "INPUT", "DROP");
            let s1 = prog_stats();
            pps.entry(cfg).or_default().push((c1 - c0) as f64 / secs);
            for p in ["netdrop_tc_ingress", "netdrop_tc_egress"] {
                if let Some(ns) = per_event(&s0, &s1, p) {
                    cost.entry(p).or_default().push(ns);
                }
            }
            if let Some(ns) = per_event(&s0, &s1, FLOOR_TC) {
                cost.entry(FLOOR_OBSERVERS).or_default().push(ns);
            }
            drop(floor);
            if let Some(w) = watch {
                w.stop()?;
            }
        }
    }
    let mut base = pps["nothing attached"].clone();
    let base = median(&mut base);
    writeln!(
        r.0,
        "\n## 3. Forwarding flood pod → pod across VXLAN\n\nUDP from pod1 (node1) to pod2 (node2) through flannel.1/VXLAN, counted by a DROP rule inside pod2.\n\n| attached | pps (median) | spread | kept |\n|---|---|---|---|"
    )?;
    rate_rows(r, &configs, &pps, base)?;
    writeln!(
        r.0,
        "\n| observer program | ns/packet (median) | spread |\n|---|---|---|"
    )?;
    cost_rows(r, &cost)?;
    Ok(())
}

/// Wall time (ms) and peak RSS (MiB) of a command, through GNU time: a
/// direct child would report at least this (large) process's RSS, which it
/// holds until exec.
fn measure(cmd: &mut Command) -> anyhow::Result<(f64, f64)> {
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "netdrop-bench %M"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    let t = Instant::now();
    let out = timed
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let err = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("netdrop-bench "))
        .with_context(|| format!("no GNU time output (apt-get install time): {err}"))?
        .trim()
        .parse()?;
    Ok((ms, kib / 1024.0))
}

fn model_scale(r: &mut Report) -> anyhow::Result<()> {
    writeln!(
        r.0,
        "\n## 5. Model scale: generated kube-proxy rulesets\n\nParse + index in process (`parse_reader` on the file, what `watch` and `check` do per read); the whole `netdrop explain` process (start, parse, index, owners, one walk, explanation) and its peak RSS; `iptables-restore --test` on the same file. {} rounds, medians with spread.\n\n| services × endpoints | rules | parse + index ms | `netdrop explain` ms | its peak RSS MiB | `iptables-restore --test` ms |\n|---|---|---|---|---|---|",
        rounds()
    )?;
    let mut lab = Lab::new("bm");
    let ns = lab.netns("restore")?;
    for services in [1000usize, 10_000] {
        let text = generate::kube_proxy_ruleset(services, 3);
        let rules = text.lines().filter(|l| l.starts_with("-A")).count();
        let path = std::env::temp_dir().join(format!("netdrop-bench-{services}.rules"));
        std::fs::write(&path, &text)?;
        let (mut nd, mut rss, mut ipt) = (Vec::new(), Vec::new(), Vec::new());
        let mut parse = Vec::new();
        for _ in 0..rounds() {
            let t = Instant::now();
            let file = std::fs::File::open(&path)?;
            let rs = parse_reader(std::io::BufReader::new(file))?;
            parse.push(t.elapsed().as_secs_f64() * 1000.0);
            drop(rs);
            let (ms, mib) = measure(
                Command::new(netdrop_bin())
                    .args(["explain", "--rules"])
                    .arg(&path)
                    .args([
                        "--packet",
                        &format!(
                            "PREROUTING tcp 10.224.1.2:1234 -> {}:80",
                            generate::service_ip(7)
                        ),
                    ]),
            )?;
            nd.push(ms);
            rss.push(mib);
            let (ms, _) = measure(
                Command::new("ip")
                    .args(["netns", "exec", &ns, "iptables-restore", "--test"])
                    .arg(&path),
            )?;
            ipt.push(ms);
        }
        let _ = std::fs::remove_file(&path);
        writeln!(
            r.0,
            "| {services} × 3 | {rules} | {:.0} ({}) | {:.0} ({}) | {:.0} | {:.0} ({}) |",
            median(&mut parse.clone()),
            spread(&parse),
            median(&mut nd.clone()),
            spread(&nd),
            median(&mut rss.clone()),
            median(&mut ipt.clone()),
            spread(&ipt)
        )?;
    }
    Ok(())
}

/// Section 6: native nftables at kube-proxy scale: `netdrop check --netns`
/// on a node holding a generated kube-proxy nftables-mode ruleset, against
/// `nft -c -f` of the same file in the same run.
fn nft_scale(r: &mut Report) -> anyhow::Result<()> {
    writeln!(
        r.0,
        "\n## 6. Native nftables scale: kube-proxy's nftables mode\n\n`netdrop check --netns` on a node namespace holding a generated kube-proxy nftables-mode ruleset (`generate::kube_proxy_nft_ruleset`: the `service-ips` map, a service chain choosing an endpoint by `numgen`, a DNAT chain per endpoint), the whole process: the table's sets, chains and rules read over netlink and decoded (no nft run), index, owners, every probe walk, and its peak RSS; for scale, `nft -j list ruleset` of the same table (what netdrop ran before it read netlink itself) and `nft -c -f` of the same file (nft checking its own input), in the same run. {} rounds, medians with spread.\n\n| services × endpoints | rules | `netdrop check --netns` ms | its peak RSS MiB | `nft -j list ruleset` ms | its RSS MiB | `nft -c -f` ms | check / `nft -c -f` |\n|---|---|---|---|---|---|---|---|",
        rounds()
    )?;
    let mut lab = Lab::new("bn");
    for services in [2000usize, 10_000] {
        let ns = lab.netns(&format!("n{services}"))?;
        let text = generate::kube_proxy_nft_ruleset(services, 3);
        let rules = text.lines().filter(|l| l.starts_with("add rule")).count();
        let path = std::env::temp_dir().join(format!("netdrop-bench-{services}.nft"));
        std::fs::write(&path, &text)?;
        let path_s = path.to_str().context("temp path")?;
        let load = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", path_s])
            .output()?;
        anyhow::ensure!(load.status.success(), "nft -f: {:?}", load);
        let check = || {
            let mut c = Command::new(netdrop_bin());
            c.args([
                "check",
                "--netns",
                &ns,
                "--pod-cidr",
                POD_CIDR,
                "--output",
                "json",
            ]);
            c
        };
        // Once for its answer: the table read, no error.
        let out = check().output()?;
        anyhow::ensure!(
            matches!(out.status.code(), Some(0 | 3)),
            "netdrop check: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (mut nd, mut rss, mut nft) = (Vec::new(), Vec::new(), Vec::new());
        let (mut list, mut list_rss) = (Vec::new(), Vec::new());
        for _ in 0..rounds() {
            let (ms, mib) = measure(&mut check())?;
            nd.push(ms);
            rss.push(mib);
            let (ms, mib) = measure(
                Command::new("ip").args(["netns", "exec", &ns, "nft", "-j", "list", "ruleset"]),
            )?;
            list.push(ms);
            list_rss.push(mib);
            let (ms, _) = measure(
                Command::new("ip").args(["netns", "exec", &ns, "nft", "-c", "-f", path_s]),
            )?;
            nft.push(ms);
        }
        let _ = std::fs::remove_file(&path);
        let (nd_m, nft_m) = (median(&mut nd.clone()), median(&mut nft.clone()));
        writeln!(
            r.0,
            "| {services} × 3 | {rules} | {nd_m:.0} ({}) | {:.0} | {:.0} ({}) | {:.0} | {nft_m:.0} ({}) | {:.2} |",
            spread(&nd),
            median(&mut rss.clone()),
            median(&mut list.clone()),
            spread(&list),
            median(&mut list_rss.clone()),
            spread(&nft),
            nd_m / nft_m
        )?;
    }
    Ok(())
}

/// Section 4: the userspace path a drop sample takes in `watch`, on one
/// core: decode the kernel key, decode the flow, attribute it through the
/// model (a walk for a new flow, the cache for a known one), count it in
/// the Prometheus family of its rule.
/// The production drop pipeline (`watch::pipeline::DropPipeline`, as
/// `watch` runs it) fed with recorded kernel events through a node whose
/// rules are a 10k-Service kube-proxy model.
fn pipeline(r: &mut Report) -> anyhow::Result<()> {
    let btf = KernelBtf::load(std::path::Path::new("/sys/kernel/btf/vmlinux"))?;
    let reasons = btf.enum_values("skb_drop_reason", "SKB_DROP_REASON_")?;
    let nf_drop = reasons
        .iter()
        .find(|(_, n)| n.as_str() == "NETFILTER_DROP")
        .map(|(v, _)| *v)
        .context("NETFILTER_DROP in the kernel's skb_drop_reason")?;
    let own = Netns::own()?;
    let text = generate::kube_proxy_ruleset(10_000, 3);
    let rules = text.lines().filter(|l| l.starts_with("-A")).count();
    let mut nodes = [FixedNode {
        label: own.label(),
        inode: own.inode,
        rules: FixedRules::parse(&[("", &text)])?,
        local_addrs: Vec::new(),
    }];
    // Drop sites (kernel keys) per poll, and polls per round.
    let sites: usize = std::env::var("NETDROP_BENCH_SITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    const POLLS: usize = 20;
    let key = |i: usize| DropKey {
        location: 0xffff_ffff_8100_0000 + i as u64,
        netns: own.inode as u32,
        reason: nf_drop,
        hook: netdrop_common::hook::FORWARD,
        family: 4,
        l4proto: 6,
        flags: netdrop_common::flags::SRC_POD,
        ..DropKey::default()
    };
    // A sample of site `i` in poll `p`: a flow to one of the 10k services,
    // a new one every poll (so every site is attributed anew: cold).
    let sample = |i: usize, p: usize| {
        let mut s = DropSample {
            key: key(i),
            hook: netdrop_common::hook::FORWARD,
            ..DropSample::default()
        };
        s.outer.family = 4;
        s.outer.proto = 6;
        s.outer.src[..4].copy_from_slice(&[10, 224, 1, 2]);
        s.outer.dst[..4].copy_from_slice(&generate::service_ip((p * sites + i) % 10_000).octets());
        s.outer.sport = 10_000 + p as u16;
        s.outer.dport = 80;
        s
    };
    let counts = |p: usize| -> Vec<(DropKey, DropCounters)> {
        (0..sites)
            .map(|i| {
                let n = p as u64 + 1;
                (
                    key(i),
                    DropCounters {
                        packets: n,
                        bytes: n * 60,
                    },
                )
            })
            .collect()
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut resampled = Vec::new();
    let mut attributed = 0;
    let mut record_sites = 0;
    for _ in 0..rounds() {
        let mut pipe = DropPipeline::new(
            Decoder::new(
                KernelInfo {
                    drop_reasons: reasons.clone(),
                    kallsyms: Kallsyms::load()?,
                    nf_tables_frees_own: netdrop::capture::kernel_at_least(6, 7),
                },
                vec![own.clone()],
            ),
            netdrop_model::check::Cluster::new(vec![POD_CIDR.parse()?]),
            metrics::new_shared(),
            // watch's default --summary-interval
            Duration::from_secs(5),
        );
        // Cold: every site has a new flow in every poll.
        let mut ev = Recorded::default();
        for p in 0..POLLS {
            ev.push((0..sites).map(|i| sample(i, p)).collect(), counts(p));
        }
        let t = Instant::now();
        while !ev.is_empty() {
            std::hint::black_box(pipe.poll(&mut ev, &mut nodes)?);
        }
        cold.push((POLLS * sites) as f64 / t.elapsed().as_secs_f64());
        // Sites whose latest record names a rule or policy (`flush` returns
        // every site's latest record).
        let flushed = pipe.flush();
        record_sites = flushed.len();
        attributed = flushed
            .iter()
            .filter(|r| r.record.rule.is_some() || r.record.policy)
            .count();
        // Warm: the sites keep dropping the same flows (no new sample).
        for p in POLLS..2 * POLLS {
            ev.push(Vec::new(), counts(p));
        }
        let t = Instant::now();
        while !ev.is_empty() {
            std::hint::black_box(pipe.poll(&mut ev, &mut nodes)?);
        }
        warm.push((POLLS * sites) as f64 / t.elapsed().as_secs_f64());
        // Resampled: the kernel keeps sampling a steady drop: a new sample
        // of the flow each site already has. The attribution comes from the
        // cache; the record, its labels and its `/explanations` entry are
        // built anew.
        for p in 2 * POLLS..3 * POLLS {
            ev.push(
                (0..sites).map(|i| sample(i, POLLS - 1)).collect(),
                counts(p),
            );
        }
        let t = Instant::now();
        while !ev.is_empty() {
            std::hint::black_box(pipe.poll(&mut ev, &mut nodes)?);
        }
        resampled.push((POLLS * sites) as f64 / t.elapsed().as_secs_f64());
    }
    writeln!(
        r.0,
        "\n## 4. Userspace pipeline\n\nDrop sites per second on one core through the production pipeline (`watch::pipeline::DropPipeline`, the code `watch` runs: decode → attribution → explanation → record → metrics and `/explanations`), fed with recorded kernel events: {sites} drop sites per poll, {POLLS} polls, through a {rules}-rule kube-proxy model (10k services × 3 endpoints; the {sites} kernel keys became {record_sites} record sites, one per rule their samples named, {attributed} of them attributed to a rule or policy). Cold: every site's sample is a new flow to another service in every poll, so every site is walked through its hook's tables and explained anew. Warm: the sites keep counting with no new sample: the record stands and only its counts move (metric handles kept per site; summaries are due every 5 s, `watch`'s default, so none falls in the measured polls). Resampled: a new sample of the flow each site already has: the attribution from the cache, the record rebuilt.\n\n| | sites/s (median) | spread | µs/site |\n|---|---|---|---|\n| cold (new flow per site and poll) | {:.0} | {} | {:.1} |\n| resampled (new sample, known flow) | {:.0} | {} | {:.1} |\n| warm (known flows, no new sample) | {:.0} | {} | {:.1} |",
        median(&mut cold.clone()),
        spread(&cold),
        1e6 / median(&mut cold.clone()),
        median(&mut resampled.clone()),
        spread(&resampled),
        1e6 / median(&mut resampled.clone()),
        median(&mut warm.clone()),
        spread(&warm),
        1e6 / median(&mut warm.clone()),
    )?;
    Ok(())
}

fn time_to_answer(r: &mut Report) -> anyhow::Result<()> {
    let (_lab, pod, node) = drop_pair("bt")?;
    let mut ms = Vec::new();
    for _ in 0..rounds() {
        let mut w = Watch::start(&["--netns", &node, "--pod-cidr", POD_CIDR])?;
        let t = Instant::now();
        traffic::send_udp(&pod, "10.224.7.1:9".parse()?, 1, 18)?;
        w.wait_for(Duration::from_secs(10), |w| {
            w.records()
                .iter()
                .any(|r| r["kind"] == "drop" && r["fix"].is_string())
        })?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        w.stop()?;
    }
    writeln!(
        r.0,
        "\n## 7. Time to answer\n\nFrom the first dropped packet to its explained record on stdout (poll interval 250 ms).\n\n| ms (median) | spread |\n|---|---|\n| {:.0} | {} |",
        median(&mut ms.clone()),
        spread(&ms)
    )?;
    Ok(())
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis: utime is the 14th
    // field of the line, stime the 15th.
    let rest = stat.rsplit(')').next().context("stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Section 8: what an idle `watch` costs on a node holding a large
/// kube-proxy ruleset (iptables-nft, and iptables-legacy), against one
/// `iptables-save -c` of it; then how long a rule change takes to be in
/// its model.
fn idle_cost(r: &mut Report) -> anyhow::Result<()> {
    const IDLE: Duration = Duration::from_secs(40);
    writeln!(
        r.0,
        "\n## 8. Idle cost at scale\n\n`netdrop watch` on a node namespace holding a generated kube-proxy ruleset (`generate::kube_proxy_ruleset`, loaded with `iptables-nft-restore`, or `iptables-legacy-restore`), no traffic: its CPU time over {} idle seconds after a 5 s warm-up, its resident memory then and its peak since start (VmHWM: start-up and the first read included); against the CPU time of one `iptables-save -c` of the same ruleset (what netdrop ran every 10 s before it read rules only on a change), in the same run. Then one rule is inserted into `filter` INPUT (`iptables -I`) and the time from that command's return to netdrop's next completed read (`netdrop_ruleset_reads_total` polled every 20 ms) is the time to the new model. {} rounds, medians with spread.\n\n| backend | services × endpoints | rules | idle CPU s / 40 s | RSS MiB | peak MiB | one `iptables-save -c` CPU s | idle / one save | change → model ms |\n|---|---|---|---|---|---|---|---|---|",
        IDLE.as_secs(),
        rounds()
    )?;
    let mut lab = Lab::new("bi");
    for (backend, services) in [("nft", 1000usize), ("nft", 10_000), ("legacy", 10_000)] {
        let ns = lab.netns(&format!("i{backend}{services}"))?;
        let text = generate::kube_proxy_ruleset(services, 3);
        let rules = text.lines().filter(|l| l.starts_with("-A")).count();
        let (restore, save_prog, iptables) = match backend {
            "legacy" => (
                "iptables-legacy-restore",
                "iptables-legacy-save",
                "iptables-legacy",
            ),
            _ => ("iptables-nft-restore", "iptables-nft-save", "iptables-nft"),
        };
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, restore])
            .stdin(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        std::io::Write::write_all(&mut stdin, text.as_bytes())?;
        drop(stdin);
        anyhow::ensure!(child.wait()?.success(), "{restore} failed");
        let (mut idle, mut rss, mut peak, mut save, mut change) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds() {
            let out = Command::new("/usr/bin/time")
                .args([
                    "-f",
                    "netdrop-bench %U %S",
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    save_prog,
                    "-c",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            let cpu: f64 = err
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("netdrop-bench "))
                .context("GNU time output")?
                .split_whitespace()
                .filter_map(|x| x.parse::<f64>().ok())
                .sum();
            save.push(cpu);
            let mut w = Watch::start(&["--netns", &ns, "--pod-cidr", POD_CIDR])?;
            std::thread::sleep(Duration::from_secs(5));
            let before = cpu_seconds(w.pid())?;
            std::thread::sleep(IDLE);
            idle.push(cpu_seconds(w.pid())? - before);
            rss.push(w.memory_kib("VmRSS:").context("VmRSS")? as f64 / 1024.0);
            peak.push(w.memory_kib("VmHWM:").context("VmHWM")? as f64 / 1024.0);
            let reads = |w: &Watch| {
                w.metric("netdrop_ruleset_reads_total", &[("node", &ns)])
                    .unwrap_or(0)
            };
            let reads_before = reads(&w);
            let rule = ["-s", "203.0.113.77/32", "-j", "DROP"];
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, iptables, "-I", "INPUT"])
                .args(rule)
                .output()?;
            anyhow::ensure!(out.status.success(), "{iptables} -I: {out:?}");
            let t = Instant::now();
            w.wait_for(Duration::from_secs(60), |w| reads(w) > reads_before)?;
            change.push(t.elapsed().as_secs_f64() * 1000.0);
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, iptables, "-D", "INPUT"])
                .args(rule)
                .output()?;
            anyhow::ensure!(out.status.success(), "{iptables} -D: {out:?}");
            w.stop()?;
        }
        let (i, sv) = (median(&mut idle.clone()), median(&mut save.clone()));
        let spread2 = |v: &[f64]| {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{min:.2}–{max:.2}")
        };
        writeln!(
            r.0,
            "| {iptables} | {services} × 3 | {rules} | {i:.2} ({}) | {:.0} | {:.0} | {sv:.2} ({}) | {:.2} | {:.0} ({}) |",
            spread2(&idle),
            median(&mut rss.clone()),
            median(&mut peak.clone()),
            spread2(&save),
            i / sv,
            median(&mut change.clone()),
            spread(&change),
        )?;
    }
    Ok(())
}

/// Section 9: the soak test (`tests/tests/soak.rs`) for 10 minutes at
/// 10,000 Services, through cargo, on the release netdrop; its summary.
fn soak(r: &mut Report) -> anyhow::Result<()> {
    let seconds = std::env::var("NETDROP_SOAK_SECONDS").unwrap_or_else(|_| "600".into());
    let services = std::env::var("NETDROP_SOAK_SERVICES").unwrap_or_else(|_| "10000".into());
    let out = Command::new("cargo")
        .args([
            "test",
            "--release",
            "--package",
            "netdrop-tests",
            "--test",
            "soak",
            "--",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NETDROP_SOAK_SECONDS", &seconds)
        .env("NETDROP_SOAK_SERVICES", &services)
        .stderr(Stdio::inherit())
        .output()
        .context("running the soak test")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        // After the harness's "test NAME ... " on the same line.
        .find_map(|l| l.split_once("soak: ").map(|(_, s)| s))
        .context("the soak test printed no summary")?;
    writeln!(
        r.0,
        "\n## 9. Soak: a node that lives\n\n`tests/tests/soak.rs` for {seconds} s on a node holding a generated kube-proxy ruleset of {services} Services: a flood of pod packets dropped by a rule in `raw`; kube-proxy-like churn (its `filter` and `nat` tables restored whole with `iptables-nft-restore` every 2 s, or back to back when a restore takes longer, alternating between two rulesets one Service apart); `flannel.1` and `cni0` deleted and made again, and a second node namespace removed and re-added, every 30 s; Prometheus scraping every second. It passed: {}.\n\n{summary}.",
        if out.status.success() {
            "netdrop's count of the rule equals the rule's own counter, median RSS in the last quarter within 10 % of the second quarter's, the observers back on every recreated device, nothing attached after SIGTERM"
        } else {
            "**no** (see the test's output)"
        }
    )?;
    anyhow::ensure!(out.status.success(), "the soak test failed: {summary}");
    Ok(())
}

/// The DaemonSet's pod (the image `cargo xtask image` built, run through a
/// node's containerd CRI with the manifest's settings, memory limit
/// included) on a node holding a 10k-Service kube-proxy ruleset, iptables
/// mode (restored whole with `iptables-nft-restore`) and nftables mode
/// (`nft -f`), alternating between two rulesets one Service apart every
/// 3 s for 45 s (three restores at least): its cgroup's memory peak
/// against the manifest's limit.
fn pod_at_scale(r: &mut Report) -> anyhow::Result<()> {
    use netdrop::lab::containerd::Containerd;
    let archive = std::path::Path::new("target/image/netdrop.oci.tar");
    anyhow::ensure!(
        archive.exists(),
        "{} is missing: cargo xtask image builds it",
        archive.display()
    );
    let services = 10_000usize;
    writeln!(
        r.0,
        "\n## 10. The DaemonSet's pod at scale\n\nThe image `cargo xtask image` builds, run as the DaemonSet's pod through a node namespace's containerd (CRI, host network, the manifest's settings read from `netdrop.yaml`: its memory limit is the container's cgroup's), on a node holding a generated {services}-Service × 3 kube-proxy ruleset, restored whole every 3 s (or back to back when a load takes longer) for 45 s and at least three restores, alternating with one a Service larger (kube-proxy's churn). The cgroup's memory peak (cgroup v1 `memory.max_usage_in_bytes` here; v2 `memory.peak`) covers start-up, the first read and every re-read. One run per mode.\n\n| mode | rules | restores | peak MiB | limit MiB | limit hit | running after |\n|---|---|---|---|---|---|---|"
    )?;
    let mut lab = Lab::new("bpod");
    for mode in ["iptables", "nftables"] {
        let ns = lab.netns(&format!("p{}", &mode[..3]))?;
        let mut rt = Containerd::start(&ns, "10.224.9.0/24")?;
        let m = netdrop_tests::manifest::from_manifest(&ns, rt.socket_dir());
        rt.import_image(archive, &m.spec.image)?;
        let texts: Vec<String> = [services, services + 1]
            .iter()
            .map(|n| match mode {
                "iptables" => generate::kube_proxy_ruleset(*n, 3),
                _ => generate::kube_proxy_nft_ruleset(*n, 3),
            })
            .collect();
        let rules = match mode {
            "iptables" => texts[0].lines().filter(|l| l.starts_with("-A")).count(),
            _ => texts[0]
                .lines()
                .filter(|l| l.starts_with("add rule"))
                .count(),
        };
        let load = |text: &str| -> anyhow::Result<()> {
            let (prog, args): (&str, Vec<&str>) = match mode {
                "iptables" => ("iptables-nft-restore", vec![]),
                // A whole table replaced: flushed, then loaded.
                _ => ("nft", vec!["-f", "-"]),
            };
            let mut child = Command::new("ip")
                .args(["netns", "exec", &ns, prog])
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()?;
            let mut stdin = child.stdin.take().context("stdin")?;
            if mode == "nftables" {
                std::io::Write::write_all(
                    &mut stdin,
                    b"table ip kube-proxy\ndelete table ip kube-proxy\n",
                )?;
            }
            std::io::Write::write_all(&mut stdin, text.as_bytes())?;
            drop(stdin);
            anyhow::ensure!(child.wait()?.success(), "{prog} failed");
            Ok(())
        };
        load(&texts[0])?;
        let pod = rt.run_host_pod(&m.spec)?;
        let addr = format!("127.0.0.1:{}", m.port);
        let ready_by = Instant::now() + Duration::from_secs(120);
        loop {
            let a = addr.clone();
            let ok = Netns::named(&ns)?
                .run_in(move || netdrop_tests::prom::status(&a, "/readyz"))?
                == Some(200);
            if ok {
                break;
            }
            anyhow::ensure!(
                Instant::now() < ready_by,
                "the pod was not ready within 120 s"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let pid = rt.container_pid(&pod.container)?;
        // 45 s, and at least three restores (nft takes tens of seconds
        // to load a 10k-Service table here), at most 4 minutes.
        let start = Instant::now();
        let mut restores = 0;
        while (start.elapsed() < Duration::from_secs(45) || restores < 3)
            && start.elapsed() < Duration::from_secs(240)
        {
            load(&texts[(restores + 1) % 2])?;
            restores += 1;
            std::thread::sleep(Duration::from_secs(3));
        }
        let (limit, peak, hits) = netdrop_tests::cgroup_memory(pid)?;
        let running = rt.container_state(&pod.container)?.0;
        writeln!(
            r.0,
            "| {mode} ({}) | {rules} | {restores} | {:.0} | {:.0} | {hits} | {} |",
            if mode == "iptables" {
                "iptables-nft"
            } else {
                "kube-proxy nftables mode"
            },
            peak as f64 / (1 << 20) as f64,
            limit as f64 / (1 << 20) as f64,
            if running { "yes" } else { "no" },
        )?;
        rt.delete_host_pod(&pod, m.grace)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "BENCHMARKS.md".into());
    let old_stats = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .unwrap_or_else(|_| "0".into());
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("enabling kernel.bpf_stats_enabled")?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut r = Report(format!(
        "# netdrop benchmarks\n\nWritten by `cargo xtask bench` on {date}: kernel {}, {} CPUs ({cpu}), release build. Every figure is the median of {} interleaved rounds, with min–max as spread. Traffic runs between network namespaces on this machine; sender and kernel share its {} cores, so absolute rates are the machine's, and the ratios are the point.\n\n",
        kernel.trim(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        rounds(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    ));
    let result = (|| -> anyhow::Result<()> {
        eprintln!("bench: drop flood");
        if wanted("drop") {
            drop_flood(&mut r)?;
        }
        eprintln!("bench: forwarding flood");
        if wanted("forward") {
            forwarding_flood(&mut r)?;
        }
        eprintln!("bench: userspace pipeline");
        if wanted("pipeline") {
            pipeline(&mut r)?;
        }
        eprintln!("bench: model scale");
        if wanted("model") {
            model_scale(&mut r)?;
        }
        eprintln!("bench: native nftables scale");
        if wanted("nft") {
            nft_scale(&mut r)?;
        }
        eprintln!("bench: time to answer");
        if wanted("answer") {
            time_to_answer(&mut r)?;
        }
        eprintln!("bench: idle cost at scale");
        if wanted("idle") {
            idle_cost(&mut r)?;
        }
        eprintln!("bench: soak");
        if wanted("soak") {
            soak(&mut r)?;
        }
        eprintln!("bench: the DaemonSet's pod at scale");
        if wanted("pod") {
            pod_at_scale(&mut r)?;
        }
        Ok(())
    })();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", old_stats.trim());
    // A failed section is said (and makes the run fail) after the figures
    // of the others are written: a 10-minute soak that fails must not take
    // them along.
    if let Err(e) = &result {
        writeln!(r.0, "\n**The run failed**: {e:#}")?;
    }
    // The hand-written reading of the figures (from "## Reading" on) is
    // kept across runs; the figures above it are replaced.
    if let Ok(old) = std::fs::read_to_string(&out)
        && let Some(at) = old.find("\n## Reading")
    {
        r.0.push_str(&old[at..]);
    }
    std::fs::write(&out, &r.0)?;
    eprintln!("bench: wrote {out}");
    result
}
